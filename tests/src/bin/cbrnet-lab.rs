//! `cbrnet-lab`: a whole cluster on this machine. Nodes are network namespaces on an underlay (one
//! bridge, or several routed segments), each running `cbrnet-routed` on the embedded file store
//! (or a real etcd), with pods added through the `cbrnet` binary; every pod pings every other pod.
//! `run` (the default) removes everything when it ends, whether it passes, fails or is
//! interrupted; `up` leaves the lab running for `status` and `down`.

use cbrnet_tests::lab::{route_path, IpFamily, Lab, StoreKind};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Where `up` records what it made, for `status` and `down` (`CBRNET_LAB_STATE` elsewhere).
const STATE: &str = "/run/cbrnet-lab/state.json";

fn state_path() -> std::path::PathBuf {
    std::env::var_os("CBRNET_LAB_STATE").map_or_else(|| STATE.into(), Into::into)
}

#[derive(Parser)]
#[command(
    name = "cbrnet-lab",
    version,
    about = "A cbrnet cluster on this machine, in network namespaces: nodes running cbrnet-routed, \
             pods added through the cbrnet CNI plugin, every pod pinging every other. Needs root; \
             touches nothing outside the namespaces it creates.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the lab, check it, print it, tear it down (the default).
    Run(RunArgs),
    /// Build the lab and leave it running (see `status`, `down`).
    Up(Shape),
    /// Show the running lab: nodes, subnets, routes, `cbrnet-routed doctor` on each node, leases
    /// and their expiry.
    Status,
    /// Remove the running lab.
    Down,
    /// Build the lab, inject faults drawn from a seed while checking the cluster's promises
    /// every 200 ms, print a report, tear it down; exit 1 on a violation (RELIABILITY.md).
    Chaos(ChaosArgs),
}

#[derive(Args, Clone)]
struct ChaosArgs {
    /// Nodes.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(2..=50))]
    nodes: u16,
    /// Pods per node.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(0..=50))]
    pods: u16,
    /// How long to inject faults (120s, 30m; a number is seconds); the last round then finishes.
    #[arg(long, default_value = "120s", value_parser = parse_secs)]
    duration: u64,
    /// The seed the faults are drawn from (printed; a random one if not given).
    #[arg(long)]
    seed: Option<u64>,
    /// Where the leases live.
    #[arg(long, value_enum, default_value_t = Store::File)]
    store: Store,
    /// etcd members (with --store etcd): 3 makes quorum loss one of the faults.
    #[arg(long, default_value_t = 1, value_parser = parse_members)]
    etcd_members: usize,
    /// The daemons' lease TTL (short, so that faults past it are quick).
    #[arg(long, default_value = "4s", value_parser = parse_secs)]
    lease_ttl: u64,
    /// The daemons' --backend (one underlay segment: auto and host-gw route every peer directly,
    /// vxlan through the VXLAN device). Not given: the daemon's default.
    #[arg(long, value_enum)]
    backend: Option<Backend>,
}

fn parse_members(s: &str) -> Result<usize, String> {
    match s {
        "1" => Ok(1),
        "3" => Ok(3),
        _ => Err("1 or 3".into()),
    }
}

/// Seconds from `120`, `120s`, `30m` or `1h`.
fn parse_secs(s: &str) -> Result<u64, String> {
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (120s, 30m)"))?;
    match unit {
        "s" => Ok(n),
        "m" => Ok(n * 60),
        "h" => Ok(n * 3600),
        _ => Err(format!("{s:?}: the unit is s, m or h")),
    }
}

#[derive(Args, Clone)]
struct Shape {
    /// Nodes (network namespaces running cbrnet-routed).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=100))]
    nodes: u16,
    /// Pods per node.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(0..=100))]
    pods: u16,
    /// Where the leases live: the embedded file store, or a real etcd inside the lab.
    #[arg(long, value_enum, default_value_t = Store::File)]
    store: Store,
    /// Underlay segments: one subnet (192.168.(50+s).0/24) and bridge each, routed to each other
    /// by the underlay namespace; node i is on segment i % N.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    segments: u16,
    /// The daemons' --backend: routes via the peer's node IP (host-gw), over VXLAN (vxlan), or
    /// direct on a shared segment and VXLAN across (auto). Not given: the daemon's default.
    #[arg(long, value_enum)]
    backend: Option<Backend>,
    /// The pods' address families: IPv4 (10.244.0.0/16), IPv6 (fd00:10:244::/56) or both; the
    /// underlay has IPv6 (fd50:s::/64) too when the pods do.
    #[arg(long, value_enum, default_value_t = Family::Ipv4)]
    ip_family: Family,
}

#[derive(Clone, Copy, ValueEnum)]
enum Family {
    Ipv4,
    Ipv6,
    Dual,
}

#[derive(Args, Clone)]
struct RunArgs {
    #[command(flatten)]
    shape: Shape,
    /// Keep the lab up until Enter (or Ctrl-C), then tear it down.
    #[arg(long)]
    hold: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Store {
    File,
    Etcd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Backend {
    HostGw,
    Vxlan,
    Auto,
}

/// The flag's value as the daemon takes it.
fn backend_name(b: Backend) -> String {
    b.to_possible_value()
        .expect("no variant is skipped")
        .get_name()
        .to_owned()
}

fn fail(msg: &str) -> ! {
    eprintln!("cbrnet-lab: {msg}");
    std::process::exit(1);
}

fn main() {
    let cli = Cli::parse();
    if !nix::unistd::geteuid().is_root() {
        fail("the lab creates network namespaces: run it as root");
    }
    match cli.command {
        None => run(&cli.run),
        Some(Cmd::Run(a)) => run(&a),
        Some(Cmd::Up(shape)) => up(&shape),
        Some(Cmd::Status) => status(),
        Some(Cmd::Down) => down(),
        Some(Cmd::Chaos(a)) => chaos(&a),
    }
}

/// Builds the lab; a failure or a signal tears down what was made so far.
fn build(shape: &Shape) -> Lab {
    if let Err(e) = cbrnet_tests::tear_down_on_signals() {
        fail(&format!("handling signals: {e}"));
    }
    // A panic unwinds through the lab's guards, which remove what they made.
    let kind = match shape.store {
        Store::File => StoreKind::File,
        Store::Etcd => StoreKind::Etcd,
    };
    let mut lab = Lab::new("lab", kind);
    lab.set_family(match shape.ip_family {
        Family::Ipv4 => IpFamily::V4,
        Family::Ipv6 => IpFamily::V6,
        Family::Dual => IpFamily::Dual,
    });
    lab.segments = shape.segments.into();
    lab.backend = shape.backend.map(backend_name);
    println!("store: {}", lab.store);
    for _ in 0..shape.nodes {
        let i = lab.add_node();
        lab.start(i);
    }
    for i in 0..lab.nodes.len() {
        for _ in 0..shape.pods {
            lab.add_pod(i);
        }
    }
    // One wait for all nodes: a node that cannot complete (no route across segments without
    // VXLAN) then costs the wait once, not once per node.
    let n = lab.nodes.len();
    lab.wait_for(Duration::from_secs(10), |lab| {
        (0..n).all(|i| lab.routes_complete(i))
    });
    for i in (0..n).filter(|i| !lab.routes_complete(*i)) {
        eprintln!(
            "{} is missing routes:\n{}",
            lab.nodes[i].name,
            lab.nodes[i].route_table()
        );
    }
    lab
}

/// The nodes, their pods and routes, and the leases with their expiry.
fn print_lab(lab: &Lab) {
    for (i, n) in lab.nodes.iter().enumerate() {
        let subnets = n.subnets();
        println!(
            "\n{} ip {}{} segment {} subnet {}",
            n.name,
            n.ip,
            n.ip6.as_deref().map(|a| format!(",{a}")).unwrap_or_default(),
            lab.segment_of(i),
            if subnets.is_empty() {
                "(none)".into()
            } else {
                subnets.join(",")
            }
        );
        for (_, id, ip) in &n.pods {
            let all = n.pod_addrs.get(id).map(|a| a.join(",")).unwrap_or(ip.clone());
            println!("  pod {all:<14} {id}");
        }
        println!("  routes (proto 157 = cbrnet):");
        for r in n.route_table().lines() {
            println!("    {r} [{}]", route_path(r));
        }
    }
    println!("\nleases:\n{}", lab.routed_cli(&["leases"]));
}

fn run(a: &RunArgs) {
    let lab = build(&a.shape);
    print_lab(&lab);
    let total = lab.pod_pairs();
    let mtus: std::collections::BTreeSet<usize> = (0..lab.nodes.len())
        .filter(|i| !lab.nodes[*i].pods.is_empty())
        .map(|i| lab.pod_mtu(i))
        .collect();
    let mtus: Vec<String> = mtus.iter().map(usize::to_string).collect();
    let bad = lab.unreachable_pairs_df();
    if !mtus.is_empty() {
        println!(
            "\npod MTU {}: DF pings of MTU - 28 bytes of data (IPv6: - 48)",
            mtus.join("/")
        );
    }
    println!(
        "{} of {total} pod pairs reachable (ping and DF ping, to every address)",
        total - bad.len()
    );
    for (a, b, what) in &bad {
        let what = if *what == "df" { "DF ping" } else { "ping" };
        println!("  unreachable: {a} -> {b} ({what})");
    }
    if a.hold {
        println!("\nholding: `ip netns list | grep cbt-lab` shows the namespaces. Enter or Ctrl-C tears it all down.");
        let mut s = String::new();
        let _ = std::io::stdin().read_line(&mut s);
    }
    drop(lab);
    if !bad.is_empty() {
        std::process::exit(1);
    }
}

fn up(shape: &Shape) {
    let path = state_path();
    if path.exists() {
        fail(&format!(
            "a lab is up already ({}): `cbrnet-lab down` first",
            path.display()
        ));
    }
    let lab = build(shape);
    print_lab(&lab);
    let state = lab.state();
    let write = std::fs::create_dir_all(path.parent().unwrap_or(Path::new("/")))
        .and_then(|_| std::fs::write(&path, state.to_string()));
    if let Err(e) = write {
        // Without the state, `down` could not find the lab: take it down now.
        drop(lab);
        fail(&format!("writing {}: {e}", path.display()));
    }
    lab.keep();
    println!("\nthe lab is up: `cbrnet-lab status`, `cbrnet-lab down`");
}

fn read_state() -> Value {
    let path = state_path();
    let s =
        std::fs::read_to_string(&path).unwrap_or_else(|_| fail("no lab is up (`cbrnet-lab up` starts one)"));
    serde_json::from_str(&s).unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

fn in_ns(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip").args(["netns", "exec", ns]).args(args).output();
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
        Err(e) => format!("({e})"),
    }
}

fn status() {
    let st = read_state();
    for n in st["nodes"].as_array().into_iter().flatten() {
        let ns = n["netns"].as_str().unwrap_or_default();
        let subnet = std::fs::read_to_string(n["subnetFile"].as_str().unwrap_or_default())
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            .and_then(|v| v["subnet"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "(none)".into());
        println!(
            "{} ip {} segment {} subnet {subnet} (netns {ns}, log {})",
            n["name"].as_str().unwrap_or_default(),
            n["ip"].as_str().unwrap_or_default(),
            n["segment"].as_u64().unwrap_or_default(),
            n["log"].as_str().unwrap_or_default()
        );
        for p in n["pods"].as_array().into_iter().flatten() {
            println!(
                "  pod {:<14} {} (netns {})",
                p["ip"].as_str().unwrap_or_default(),
                p["id"].as_str().unwrap_or_default(),
                p["netns"].as_str().unwrap_or_default()
            );
        }
        println!("  routes (proto 157 = cbrnet):");
        for r in in_ns(ns, &["ip", "route", "show", "proto", "157"]).lines() {
            println!("    {} [{}]", r.trim_end(), route_path(r));
        }
        doctor(ns, &strings(&n["args"]));
    }
    if let Some(ns) = st["nodes"][0]["netns"].as_str() {
        let routed = cbrnet_tests::bin("cbrnet-routed");
        let store = st["store"].as_str().unwrap_or_default();
        let routed = routed.to_string_lossy();
        println!("\nleases:\n{}", in_ns(ns, &[&routed, "leases", "--store", store]));
    }
}

/// `cbrnet-routed doctor` on a node, with its daemon's flags: its summary and exit code, then
/// each check that is not ok.
fn doctor(ns: &str, args: &[String]) {
    let routed = cbrnet_tests::bin("cbrnet-routed");
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(&routed)
        .arg("doctor")
        .args(args)
        .arg("--json")
        .arg("--cni-bin-dir")
        .arg(cbrnet_tests::bin_dir())
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => return println!("  doctor: not run ({e})"),
    };
    let Ok(checks) = serde_json::from_slice::<Vec<Value>>(&out.stdout) else {
        return println!(
            "  doctor: no answer (exit {:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    };
    let count = |s: &str| checks.iter().filter(|c| c["status"] == s).count();
    println!(
        "  doctor: {} ok, {} warn, {} FAIL (exit {})",
        count("ok"),
        count("warn"),
        count("FAIL"),
        out.status.code().unwrap_or(-1)
    );
    for c in checks.iter().filter(|c| c["status"] != "ok") {
        println!(
            "    {} {}: {} => fix: {}",
            c["status"].as_str().unwrap_or_default(),
            c["check"].as_str().unwrap_or_default(),
            c["found"].as_str().unwrap_or_default(),
            c["fix"].as_str().unwrap_or_default()
        );
    }
}

fn down() {
    let st = read_state();
    for pid in st["pids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    for ns in strings(&st["namespaces"]) {
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    }
    for d in strings(&st["dirs"]) {
        let _ = std::fs::remove_dir_all(d);
    }
    let _ = std::fs::remove_file(state_path());
    println!("the lab is down");
}

fn chaos(a: &ChaosArgs) {
    use cbrnet_tests::chaos;
    if let Err(e) = cbrnet_tests::tear_down_on_signals() {
        fail(&format!("handling signals: {e}"));
    }
    if a.lease_ttl < 2 {
        fail("--lease-ttl must be at least 2s");
    }
    let cfg = chaos::Config {
        nodes: a.nodes.into(),
        pods: a.pods.into(),
        duration: Duration::from_secs(a.duration),
        seed: a.seed.unwrap_or_else(chaos::rng::fresh_seed),
        store: match a.store {
            Store::File => StoreKind::File,
            Store::Etcd => StoreKind::Etcd,
        },
        etcd_members: a.etcd_members,
        lease_ttl: a.lease_ttl,
        backend: a.backend.map(backend_name),
        tag: "chaos".into(),
    };
    println!("seed {} (replay: {})", cfg.seed, cfg.replay());
    // A panic of the runner unwinds through the lab's guards, which remove what they made; it
    // is a failure of the run all the same.
    let report = match std::panic::catch_unwind(|| chaos::run(&cfg)) {
        Ok(r) => r,
        Err(_) => {
            cbrnet_tests::tear_down();
            fail(&format!(
                "the chaos runner failed (seed {}); replay: {}",
                cfg.seed,
                cfg.replay()
            ));
        }
    };
    report.print(&cfg);
    if !report.violations.is_empty() {
        std::process::exit(1);
    }
}
