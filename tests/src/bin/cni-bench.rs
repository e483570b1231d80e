//! Times `cbrnet` against the floor (`cni-floor`: the same kernel work by the smallest process
//! that can do it) and the reference `bridge` + `host-local` plugins, call by call.
//!
//! ```text
//! cargo build --release --workspace && cargo static-cbrnet && cargo static-cbrnet-ipam \
//!   && ./target/release/cni-bench [--pods 100] [--prefill 900] [--concurrent 200] [--gap-ms 0]
//! ```
//!
//! 1. Quiet node: each plugin gets a node namespace of its own and N pod namespaces; ADDs, then
//!    DELs, interleaved across the plugins as a runtime would make them, each timed from spawn
//!    to exit.
//! 2. Busy node: the cbrnet and floor nodes get `--prefill` pods first (a node with ~1,000 pods,
//!    within a bridge's 1,023 ports), then the same again, call by call beside a fresh node of
//!    each with no pods, so that busy/quiet also comes from one round.
//! 3. Concurrency: `--concurrent` ADDs at once on a fresh node, wall time from the first spawn to
//!    the last exit, for cbrnet and the floor.
//!
//! `--gap-ms N` pauses N ms after each call of rounds 1 and 2 (calls otherwise come back to back,
//! with the kernel's structures of the last call still warm in the CPU caches).
//!
//! `--dual` runs instead one round on quiet nodes of IPv4 pods against dual-stack pods: cbrnet
//! with a subnet file of one family and one of two (as `cbrnet-routed` writes them), and the
//! floor with one address and with one of each family (and once more without the dual-stack
//! pod's link-local address, to tell what that costs the kernel), interleaved as in round 1.

use cbrnet_tests::{Call, CniOut, Netns, Node, REFERENCE_CNI_DIR};
use serde_json::{json, Value};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const WARMUP: usize = 2;

/// One plugin set-up under test: its node, config and binary.
struct Plugin {
    name: &'static str,
    node: Node,
    conf: Value,
    bin: PathBuf,
    cni_path: String,
    /// The floor takes its address from CNI_ARGS: the i-th pod's, in this /22.
    floor_net: Option<Ipv4Addr>,
    /// A dual-stack floor's IPv6 addresses: the i-th pod's, in this /64.
    floor_net6: Option<Ipv6Addr>,
    /// More of the floor's CNI_ARGS (`;LL6=0`: no link-local address in a dual-stack pod).
    floor_extra: &'static str,
}

impl Plugin {
    fn args(&self, i: usize) -> String {
        let Some(net) = self.floor_net else {
            return String::new();
        };
        let ip = Ipv4Addr::from(u32::from(net) + 2 + i as u32);
        let mut args = format!("IP={ip}/22;GW={}", Ipv4Addr::from(u32::from(net) + 1));
        if let Some(net6) = self.floor_net6 {
            let ip6 = Ipv6Addr::from(u128::from(net6) + 2 + i as u128);
            args += &format!(";IP6={ip6}/64;GW6={}", Ipv6Addr::from(u128::from(net6) + 1));
        }
        args + self.floor_extra
    }

    fn call(&self, command: &str, id: &str, i: usize, pod: &Netns) -> CniOut {
        let args = self.args(i);
        let call = Call {
            plugin: self.bin.clone(),
            command,
            container_id: id,
            netns: pod.path(),
            ifname: "eth0",
            args: &args,
            cni_path: self.cni_path.clone(),
            extra_env: Vec::new(),
        };
        call.run(&self.node.ns, &self.conf)
    }

    /// Runs one call, insists it succeeds, and returns how long it took.
    fn timed(&self, command: &str, id: &str, i: usize, pod: &Netns) -> Duration {
        let start = Instant::now();
        let out = self.call(command, id, i, pod);
        let took = start.elapsed();
        if !out.ok {
            panic!("{} {command} {id}: {} {}", self.name, out.json, out.stderr);
        }
        took
    }
}

struct Args {
    pods: usize,
    prefill: usize,
    concurrent: usize,
    /// Keep the IPAM state (cbrnet's reservations, host-local's) in the nodes' temp dirs on disk
    /// instead of on tmpfs.
    disk: bool,
    /// A pause after each timed call of rounds 1 and 2, as between pod starts on a real node: the
    /// kernel's structures of the last call are no longer warm in the CPU caches.
    gap: Duration,
    /// IPv4 pods against dual-stack pods, instead of the three rounds.
    dual: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        pods: 100,
        prefill: 900,
        concurrent: 200,
        disk: false,
        gap: Duration::ZERO,
        dual: false,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--disk" {
            a.disk = true;
            continue;
        }
        if flag == "--dual" {
            a.dual = true;
            continue;
        }
        let v: usize = it.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| usage());
        match flag.as_str() {
            "--pods" if v > 0 => a.pods = v,
            "--prefill" => a.prefill = v,
            "--concurrent" if v > 0 => a.concurrent = v,
            "--gap-ms" => a.gap = Duration::from_millis(v as u64),
            _ => usage(),
        }
    }
    // --dual makes no busy node: --prefill does not count there.
    let prefill = if a.dual { 0 } else { a.prefill };
    if a.pods + prefill > 1000 || a.concurrent > 1000 {
        eprintln!("a bridge takes 1,023 ports: keep --pods + --prefill and --concurrent under 1,000");
        std::process::exit(2);
    }
    a
}

fn usage() -> ! {
    eprintln!("usage: cni-bench [--pods N] [--prefill N] [--concurrent N] [--gap-ms N] [--disk] [--dual]");
    std::process::exit(2)
}

fn main() {
    let a = parse_args();
    if let Err(e) = cbrnet_tests::tear_down_on_signals() {
        panic!("handling signals: {e}");
    }
    // `cbrnet_tests::bin_dir` expects a test's `deps/` layout; we sit next to the plugins.
    let exe = std::env::current_exe().expect("current exe");
    let our_dir = exe.parent().expect("binary dir").to_path_buf();
    assert!(
        our_dir.join("cbrnet").is_file() && our_dir.join("cni-floor").is_file(),
        "build first: cargo build --release --workspace"
    );
    // The plugin as shipped (`cargo static-cbrnet`, into target/plugin/), else the release build.
    let shipped = our_dir
        .parent()
        .map(|t| t.join("plugin"))
        .filter(|d| d.join("cbrnet").is_file());
    if shipped.is_none() {
        eprintln!("no target/plugin/cbrnet (cargo static-cbrnet): timing the release build instead");
    }
    let plugin_dir = shipped.unwrap_or_else(|| our_dir.clone());
    // A node keeps IPAM state on tmpfs (cbrnet's default dataDir is under /run): so does the
    // bench, for both IPAMs, unless told --disk or no tmpfs is at hand.
    let state = (!a.disk)
        .then(|| {
            tempfile::Builder::new()
                .prefix("cni-bench-")
                .tempdir_in("/dev/shm")
                .ok()
        })
        .flatten()
        .filter(|d| {
            nix::sys::statfs::statfs(d.path())
                .is_ok_and(|f| f.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
        });
    let data_dir = |node: &Node, name: &str| match &state {
        Some(d) => d.path().join(name),
        None => node.dir.path().join(name),
    };
    let cbrnet = |tag: &str| {
        let node = Node::new(tag);
        let mut conf = node.conf("1.0.0", "10.244.44.0/22");
        conf["ipam"]["dataDir"] = json!(data_dir(&node, tag));
        Plugin {
            name: "cbrnet",
            node,
            conf,
            bin: plugin_dir.join("cbrnet"),
            cni_path: plugin_dir.display().to_string(),
            floor_net: None,
            floor_net6: None,
            floor_extra: "",
        }
    };
    let floor = |tag: &str| {
        let node = Node::new(tag);
        // The floor does not make the bridge: the node has it, with the gateway and without
        // multicast snooping, as cbrnet's has after its first ADD.
        node.ns.ok(&[
            "ip",
            "link",
            "add",
            "cbr0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        node.ns.ok(&["ip", "link", "set", "cbr0", "up"]);
        node.ns
            .ok(&["ip", "addr", "add", "10.244.48.1/22", "dev", "cbr0"]);
        Plugin {
            name: "floor",
            node,
            conf: json!({"cniVersion": "1.0.0", "name": "floornet", "type": "cni-floor"}),
            bin: our_dir.join("cni-floor"),
            cni_path: our_dir.display().to_string(),
            floor_net: Some(Ipv4Addr::new(10, 244, 48, 0)),
            floor_net6: None,
            floor_extra: "",
        }
    };
    println!(
        "kernel {}, nproc {}, IPAM state on {}, cbrnet {} ({})",
        command_out("uname", &["-r"]),
        std::thread::available_parallelism().map_or(0, |c| c.get()),
        if state.is_some() {
            "tmpfs (/dev/shm)"
        } else {
            "disk (the nodes' temp dirs)"
        },
        command_out(
            "file",
            &["-b", plugin_dir.join("cbrnet").to_str().unwrap_or_default()]
        )
        .split(',')
        .take(2)
        .collect::<String>(),
        plugin_dir.join("cbrnet").display()
    );

    // Warm-up: the page cache, the bridges; not counted.
    let warm_up = |p: &Plugin| {
        let pod = Netns::new("bench-warm");
        for _ in 0..WARMUP {
            p.timed("ADD", "warmup", 999, &pod);
            p.timed("DEL", "warmup", 999, &pod);
        }
    };
    if a.dual {
        return dual(&a, cbrnet, floor, warm_up);
    }
    let reference = {
        let node = Node::new("bench-ref");
        let conf = json!({
            "cniVersion": "1.0.0", "name": "refnet", "type": "bridge", "bridge": "cbr0",
            "isGateway": true, "isDefaultGateway": true, "hairpinMode": true,
            "ipam": { "type": "host-local", "subnet": "10.244.52.0/22", "dataDir": data_dir(&node, "hl") },
        });
        Plugin {
            name: "reference",
            node,
            conf,
            bin: PathBuf::from(REFERENCE_CNI_DIR).join("bridge"),
            cni_path: REFERENCE_CNI_DIR.to_string(),
            floor_net: None,
            floor_net6: None,
            floor_extra: "",
        }
    };
    let plugins = [cbrnet("bench-cbr"), floor("bench-floor"), reference];
    plugins.iter().for_each(warm_up);

    println!(
        "\n1. a quiet node: {} pods each, ADDs then DELs, interleaved\n",
        a.pods
    );
    let quiet = round(&plugins.iter().collect::<Vec<_>>(), a.pods, 0, "q", a.gap);
    table(&quiet);

    println!(
        "\n2. a node with {} pods already: {} more each, call by call beside a node of each with none\n",
        a.prefill, a.pods
    );
    let busy_plugins = &plugins[..2];
    let prefill: Vec<Vec<Netns>> = busy_plugins
        .iter()
        .map(|_| (0..a.prefill).map(|_| Netns::new("bench-fill")).collect())
        .collect();
    for (p, pods) in busy_plugins.iter().zip(&prefill) {
        for (i, pod) in pods.iter().enumerate() {
            p.timed("ADD", &format!("fill-{i}"), a.pods + i, pod);
        }
    }
    // A node of each with no pods, timed call by call beside the busy ones: busy/quiet from one
    // round does not depend on how the machine's speed drifted since round 1.
    let mut beside = [cbrnet("bench-cbr0"), floor("bench-floor0")];
    beside[0].name = "cbrnet, 0 pods";
    beside[1].name = "floor, 0 pods";
    beside.iter().for_each(warm_up);
    let busy = round(
        &busy_plugins.iter().chain(&beside).collect::<Vec<_>>(),
        a.pods,
        0,
        "b",
        a.gap,
    );
    table(&busy);

    println!("\n3. {} ADDs at once on a fresh node\n", a.concurrent);
    let mut walls = Vec::new();
    for p in [cbrnet("bench-ccbr"), floor("bench-cfloor")] {
        let pods: Vec<Netns> = (0..a.concurrent).map(|_| Netns::new("bench-conc")).collect();
        let t = Instant::now();
        std::thread::scope(|s| {
            let p = &p;
            let hs: Vec<_> = pods
                .iter()
                .enumerate()
                .map(|(i, pod)| s.spawn(move || p.call("ADD", &format!("conc-{i}"), i, pod)))
                .collect();
            for h in hs {
                let out = h.join().expect("a call thread");
                assert!(out.ok, "{} concurrent ADD: {} {}", p.name, out.json, out.stderr);
            }
        });
        let wall = t.elapsed();
        println!(
            "| {} | {} ADDs | {:.0} ms wall |",
            p.name,
            a.concurrent,
            wall.as_secs_f64() * 1e3
        );
        walls.push(wall);
    }

    let med = |r: &[Row], name: &str, op: &str| {
        r.iter()
            .find(|x| x.plugin == name && x.op == op)
            .map_or(f64::NAN, |x| x.median)
    };
    println!("\nratios (medians):");
    println!(
        "  ADD cbrnet/floor, quiet: {:.2} (target <= 1.5)",
        med(&quiet, "cbrnet", "ADD") / med(&quiet, "floor", "ADD")
    );
    println!(
        "  ADD cbrnet/reference, quiet: {:.2} (target <= 0.25)",
        med(&quiet, "cbrnet", "ADD") / med(&quiet, "reference", "ADD")
    );
    println!(
        "  ADD cbrnet busy/quiet: {:.2} (target <= 1.2); the floor's: {:.2}; busy cbrnet/floor: {:.2}",
        med(&busy, "cbrnet", "ADD") / med(&quiet, "cbrnet", "ADD"),
        med(&busy, "floor", "ADD") / med(&quiet, "floor", "ADD"),
        med(&busy, "cbrnet", "ADD") / med(&busy, "floor", "ADD")
    );
    println!(
        "  ADD busy/quiet in round 2 (beside a node with 0 pods): cbrnet {:.2} (target <= 1.2), floor {:.2}",
        med(&busy, "cbrnet", "ADD") / med(&busy, "cbrnet, 0 pods", "ADD"),
        med(&busy, "floor", "ADD") / med(&busy, "floor, 0 pods", "ADD")
    );
    println!(
        "  DEL cbrnet/floor, quiet: {:.2}, busy: {:.2} (target <= 1.1)",
        med(&quiet, "cbrnet", "DEL") / med(&quiet, "floor", "DEL"),
        med(&busy, "cbrnet", "DEL") / med(&busy, "floor", "DEL")
    );
    println!(
        "  {} concurrent ADDs cbrnet/floor wall: {:.2} (target <= 1.5)",
        a.concurrent,
        walls[0].as_secs_f64() / walls[1].as_secs_f64()
    );

    // Nothing may be left behind by the timed rounds.
    assert_eq!(
        cbrnet_tests::reservations_in(&data_dir(&plugins[0].node, "bench-cbr").join("testnet")).len(),
        a.prefill,
        "cbrnet: reservations"
    );
}

/// `--dual`: IPv4 pods against dual-stack pods on quiet nodes, cbrnet and the floor, in one
/// interleaved round; then every address of both families must be free again.
fn dual(
    a: &Args,
    cbrnet: impl Fn(&str) -> Plugin,
    floor: impl Fn(&str) -> Plugin,
    warm_up: impl Fn(&Plugin),
) {
    // cbrnet takes its subnets from a subnet file of one family or of two, as cbrnet-routed
    // writes it for an IPv4 or a dual-stack cluster.
    let with_file = |tag: &str, name: &'static str, dual6: bool| {
        let mut p = cbrnet(tag);
        p.name = name;
        let v4 = ("10.244.44.0/22", "10.244.0.0/16");
        let v6 = ("fd00:10:244:2c::/64", "fd00:10:244::/56");
        let path = p.node.subnet_file();
        let families = [v4, v6];
        cbrnet_tests::write_subnet_file(&path, &families[..if dual6 { 2 } else { 1 }]);
        let data = p.conf["ipam"]["dataDir"].clone();
        p.conf["ipam"] = json!({"type": "cbrnet-ipam", "subnetFile": path, "dataDir": data});
        p
    };
    let floor_of = |tag: &str, name: &'static str, v6: bool, extra: &'static str| {
        let mut p = floor(tag);
        p.name = name;
        if v6 {
            // The gateway as cbrnet-routed puts it on the bridge: without duplicate address
            // detection.
            p.node.ns.ok(&[
                "ip",
                "addr",
                "add",
                "fd00:10:244:30::1/64",
                "dev",
                "cbr0",
                "nodad",
            ]);
            p.floor_net6 = Some("fd00:10:244:30::".parse().expect("a literal address"));
        }
        p.floor_extra = extra;
        p
    };
    // Five plugins: 120 pods take each of their orders once.
    let plugins = [
        with_file("bench-cbr4", "cbrnet, IPv4", false),
        with_file("bench-cbr46", "cbrnet, dual", true),
        floor_of("bench-floor4", "floor, IPv4", false, ""),
        floor_of("bench-floor46", "floor, dual", true, ""),
        // what the pod's link-local address costs the kernel
        floor_of("bench-floor46n", "floor, dual, no pod link-local", true, ";LL6=0"),
    ];
    plugins.iter().for_each(warm_up);
    println!(
        "\nquiet nodes: {} IPv4 pods and {} dual-stack pods each, ADDs then DELs, interleaved\n",
        a.pods, a.pods
    );
    let rows = round(&plugins.iter().collect::<Vec<_>>(), a.pods, 0, "d", a.gap);
    table(&rows);
    let med = |name: &str, op: &str| {
        rows.iter()
            .find(|x| x.plugin == name && x.op == op)
            .map_or(f64::NAN, |x| x.median)
    };
    println!("\nratios (medians):");
    for op in ["ADD", "DEL"] {
        println!(
            "  {op} dual/IPv4: cbrnet {:.2}{}, floor {:.2}; cbrnet/floor: IPv4 {:.2}, dual {:.2}",
            med("cbrnet, dual", op) / med("cbrnet, IPv4", op),
            if op == "ADD" { " (target <= 1.2)" } else { "" },
            med("floor, dual", op) / med("floor, IPv4", op),
            med("cbrnet, IPv4", op) / med("floor, IPv4", op),
            med("cbrnet, dual", op) / med("floor, dual", op),
        );
    }
    println!(
        "  ADD floor, dual without the pod's link-local / IPv4: {:.2}",
        med("floor, dual, no pod link-local", "ADD") / med("floor, IPv4", "ADD")
    );
    // DEL gave back every address, of both families.
    for p in &plugins[..2] {
        let dir = std::path::PathBuf::from(p.conf["ipam"]["dataDir"].as_str().unwrap_or_default());
        let left = cbrnet_tests::reservations_in(&dir.join("testnet"));
        assert_eq!(
            left,
            Vec::<(String, String)>::new(),
            "{}: reservations left",
            p.name
        );
    }
}

struct Row {
    plugin: &'static str,
    op: &'static str,
    median: f64,
    p90: f64,
    mean: f64,
    n: usize,
}

/// The `i`-th (modulo `len`!) of the orders of `0..len`, in lexicographic order.
fn nth_order(len: usize, i: usize) -> Vec<usize> {
    let factorial = |k: usize| (1..=k).product::<usize>();
    let mut rest = i % factorial(len);
    let mut pool: Vec<usize> = (0..len).collect();
    let mut order = Vec::with_capacity(len);
    for k in (0..len).rev() {
        order.push(pool.remove(rest / factorial(k)));
        rest %= factorial(k);
    }
    order
}

/// N pods per plugin: every ADD (interleaved across plugins), then every DEL, with `gap` after
/// each call; the rows.
fn round(plugins: &[&Plugin], n: usize, first: usize, tag: &str, gap: Duration) -> Vec<Row> {
    // pods[i][k]: pod i of plugin k.
    let pods: Vec<Vec<Netns>> = (0..n)
        .map(|_| plugins.iter().map(|_| Netns::new("bench-pod")).collect())
        .collect();
    // For each op, pod i of every plugin before pod i + 1 of any, in the i-th of all the orders
    // of the plugins in turn: a call leaves work behind in the kernel (timers, the new links'
    // first packets) that slows whichever call comes next, so each plugin must come after each
    // other one equally often. (A rotation of one order would not do: it keeps every plugin's
    // predecessor.)
    let timed = |op: &str| -> Vec<Vec<Duration>> {
        let mut out = vec![Vec::new(); plugins.len()];
        for (i, pods) in pods.iter().enumerate() {
            for k in nth_order(plugins.len(), i) {
                out[k].push(plugins[k].timed(op, &format!("{tag}-{i}"), first + i, &pods[k]));
                if !gap.is_zero() {
                    std::thread::sleep(gap);
                }
            }
        }
        out
    };
    let add = timed("ADD");
    let del = timed("DEL");
    let mut rows = Vec::new();
    for (k, p) in plugins.iter().enumerate() {
        for (op, samples) in [("ADD", &add[k]), ("DEL", &del[k])] {
            let (median, p90, mean) = stats(samples);
            rows.push(Row {
                plugin: p.name,
                op,
                median,
                p90,
                mean,
                n: samples.len(),
            });
        }
    }
    rows
}

fn table(rows: &[Row]) {
    println!("| plugin | op | median ms | p90 ms | mean ms | N |");
    println!("|---|---|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {:.3} | {:.3} | {:.3} | {} |",
            r.plugin, r.op, r.median, r.p90, r.mean, r.n
        );
    }
}

/// Median, p90 (nearest rank) and mean, in milliseconds.
fn stats(samples: &[Duration]) -> (f64, f64, f64) {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let len = ms.len();
    let median = if len % 2 == 1 {
        ms[len / 2]
    } else {
        (ms[len / 2 - 1] + ms[len / 2]) / 2.0
    };
    let p90 = ms[(len * 9).div_ceil(10) - 1];
    (median, p90, ms.iter().sum::<f64>() / len as f64)
}

fn command_out(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::nth_order;
    use std::collections::{HashMap, HashSet};

    #[test]
    fn every_plugin_follows_every_other_equally_often() {
        for len in 1..=4 {
            let fact: usize = (1..=len).product();
            let orders: Vec<Vec<usize>> = (0..fact).map(|i| nth_order(len, i)).collect();
            let distinct: HashSet<_> = orders.iter().collect();
            assert_eq!(distinct.len(), fact, "{len}: every order once");
            assert_eq!(nth_order(len, fact), orders[0], "{len}: then again");
            let mut follows: HashMap<(usize, usize), usize> = HashMap::new();
            for o in &orders {
                for w in o.windows(2) {
                    *follows.entry((w[0], w[1])).or_default() += 1;
                }
            }
            let counts: HashSet<usize> = follows.values().copied().collect();
            assert!(counts.len() <= 1, "{len}: {follows:?}");
            assert_eq!(follows.len(), len * (len - 1), "{len}: every pair");
        }
        assert_eq!(nth_order(3, 0), [0, 1, 2]);
        assert_eq!(nth_order(3, 5), [2, 1, 0]);
    }
}
