//! Times `cbrnet` against the reference `bridge` + `host-local` plugins, call by call.
//!
//! ```text
//! cargo build --release --workspace && ./target/release/cni-bench [--pods N]
//! ```
//!
//! Each plugin gets a node namespace of its own and N pod namespaces; ADDs and then DELs are
//! interleaved as a runtime would make them, and every call is timed from spawn to exit.

use cbrnet_tests::{Call, Netns, Node, REFERENCE_CNI_DIR};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WARMUP: usize = 2;

/// The nodes' temporary directories, for the panic hook to remove.
static NODE_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// One plugin set-up under test: its node, config and binary.
struct Plugin {
    name: &'static str,
    node: Node,
    conf: Value,
    bin: PathBuf,
    cni_path: String,
    add: Vec<Duration>,
    del: Vec<Duration>,
}

impl Plugin {
    /// Runs one call in this plugin's node, insists it succeeds, and returns how long it took.
    fn call(&self, command: &str, id: &str, pod: &Netns) -> Duration {
        let call = Call {
            plugin: self.bin.clone(),
            command,
            container_id: id,
            netns: pod.path(),
            ifname: "eth0",
            args: "",
            cni_path: self.cni_path.clone(),
            extra_env: Vec::new(),
        };
        let start = Instant::now();
        let out = call.run(&self.node.ns, &self.conf);
        let took = start.elapsed();
        out.expect_ok();
        took
    }
}

fn main() {
    let n = parse_pods();
    // The release profile aborts on panic, so the guards' Drop would never run: clean up here.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        hook(info);
        remove_our_namespaces();
        for dir in NODE_DIRS.lock().map(|d| d.clone()).unwrap_or_default() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }));

    // `cbrnet_tests::bin_dir` expects a test's `deps/` layout; we sit next to the plugins.
    let exe = std::env::current_exe().expect("current exe");
    let our_dir = exe.parent().expect("binary dir").to_path_buf();
    assert!(
        our_dir.join("cbrnet").is_file(),
        "build first: cargo build --release --workspace"
    );

    let node = new_node("bench-cbr");
    let conf = node.conf("1.1.0", "10.244.40.0/24");
    let cbrnet = Plugin {
        name: "cbrnet",
        node,
        conf,
        bin: our_dir.join("cbrnet"),
        cni_path: our_dir.display().to_string(),
        add: Vec::new(),
        del: Vec::new(),
    };
    let node = new_node("bench-ref");
    let conf = json!({
        "cniVersion": "1.0.0", "name": "refnet", "type": "bridge", "bridge": "cbr0",
        "isGateway": true, "isDefaultGateway": true, "hairpinMode": true,
        "ipam": { "type": "host-local", "subnet": "10.244.41.0/24", "dataDir": node.dir.path().join("hl") },
    });
    let reference = Plugin {
        name: "reference",
        node,
        conf,
        bin: PathBuf::from(REFERENCE_CNI_DIR).join("bridge"),
        cni_path: REFERENCE_CNI_DIR.to_string(),
        add: Vec::new(),
        del: Vec::new(),
    };
    let mut plugins = [cbrnet, reference];

    // Warm-up: bring binaries into the page cache and create the bridges; not counted.
    for p in &plugins {
        let pod = Netns::new("bench-warm");
        for _ in 0..WARMUP {
            p.call("ADD", "warmup", &pod);
            p.call("DEL", "warmup", &pod);
        }
    }

    let pods: Vec<[Netns; 2]> = (0..n)
        .map(|_| [Netns::new("bench-pod"), Netns::new("bench-pod")])
        .collect();
    let ids: Vec<String> = (0..n).map(|i| format!("bench-{i}")).collect();
    for (i, pod) in pods.iter().enumerate() {
        for (p, ns) in plugins.iter_mut().zip(pod) {
            let t = p.call("ADD", &ids[i], ns);
            p.add.push(t);
        }
    }
    for (i, pod) in pods.iter().enumerate() {
        for (p, ns) in plugins.iter_mut().zip(pod) {
            let t = p.call("DEL", &ids[i], ns);
            p.del.push(t);
        }
    }

    // Nothing may be left behind.
    for p in &plugins {
        assert_eq!(p.node.veths(), Vec::<String>::new(), "{}: veths left", p.name);
    }
    assert_eq!(
        plugins[0].node.reservations("testnet"),
        [],
        "cbrnet: reservations left"
    );

    report(&plugins, n);
}

fn new_node(tag: &str) -> Node {
    let node = Node::new(tag);
    if let Ok(mut dirs) = NODE_DIRS.lock() {
        dirs.push(node.dir.path().to_path_buf());
    }
    node
}

fn parse_pods() -> usize {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => 100,
        [flag, v] if flag == "--pods" => match v.parse() {
            Ok(n) if n > 0 => n,
            _ => usage(),
        },
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: cni-bench [--pods N]   (N > 0, default 100)");
    std::process::exit(2)
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

fn report(plugins: &[Plugin; 2], n: usize) {
    let kernel = command_out("uname", &["-r"]);
    let cpus = std::thread::available_parallelism().map_or(0, |c| c.get());
    println!("kernel {kernel}, nproc {cpus}, {n} pods per plugin");
    println!("warm-up: {WARMUP} ADD/DEL pairs per plugin before timing (not counted)\n");
    println!("| plugin | op | median ms | p90 ms | mean ms | N |");
    println!("|---|---|---:|---:|---:|---:|");
    for p in plugins {
        for (op, samples) in [("ADD", &p.add), ("DEL", &p.del)] {
            let (med, p90, mean) = stats(samples);
            println!(
                "| {} | {op} | {med:.3} | {p90:.3} | {mean:.3} | {} |",
                p.name,
                samples.len()
            );
        }
    }
    let ratio = |a: &[Duration], b: &[Duration]| stats(a).0 / stats(b).0;
    let (c, r) = (&plugins[0], &plugins[1]);
    println!("\ncbrnet/reference median ADD: {:.3}", ratio(&c.add, &r.add));
    println!("cbrnet/reference median DEL: {:.3}", ratio(&c.del, &r.del));
}

fn command_out(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Deletes every namespace this process made (the harness names them `cbt-<tag>-<pid>-<n>`).
fn remove_our_namespaces() {
    let mark = format!("-{}-", std::process::id());
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("cbt-bench-") && name.contains(&mark) {
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
        }
    }
}
