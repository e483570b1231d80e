//! `routed-bench`: how fast `cbrnet-routed` turns leases into routes, with each store.
//!
//! 1. Latency: in a 2-node lab, a new lease is written to the store (as another node's daemon
//!    would) and we time until node 0's kernel announces the route (RTM_NEWROUTE, proto 157).
//! 2. Scale: N leases already in the store, each of another node; we start one node's daemon and
//!    time until its kernel holds all N routes, then read its peak RSS, the CPU a resync with
//!    nothing to do costs, and how often the idle daemon wakes.
//!
//! routed-bench [--store file|etcd|both] [--rounds 20] [--leases 5000,20000 (default); any list]

use cbrnet_ipam::cluster::record::{unix_now, Lease};
use cbrnet_ipam::cluster::store::LeaseStore;
use cbrnet_tests::lab::{Lab, StoreKind};
use futures::StreamExt;
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteProtocol};
use netlink_packet_route::RouteNetlinkMessage;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn lease(subnet: &str, node: String, ip: Ipv4Addr) -> Lease {
    Lease {
        subnet: subnet.parse().unwrap(),
        node_name: node,
        node_ip: IpAddr::V4(ip),
        expires: unix_now() + 3600,
        holder: None,
        vtep_mac: None,
    }
}

fn stats(mut v: Vec<Duration>) -> String {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "median {:.1} ms, p90 {:.1} ms, max {:.1} ms (n={})",
        ms(v[v.len() / 2]),
        ms(v[v.len() * 9 / 10]),
        ms(*v.last().unwrap()),
        v.len()
    )
}

fn latency(kind: StoreKind, rounds: usize) -> Vec<Duration> {
    let mut lab = Lab::new("rbl", kind);
    for _ in 0..2 {
        let i = lab.add_node();
        lab.start(i);
    }
    let store = lab.store.clone();
    lab.nodes[0].node.ns.block_on(0, || async move {
        let s = cbrnet_tests::lab::open_store(&store).await;
        let (conn, _, mut events) =
            rtnetlink::new_multicast_connection(&[rtnetlink::MulticastGroup::Ipv4Route]).unwrap();
        tokio::spawn(conn);
        let mut out = Vec::new();
        for k in 0..rounds {
            let net = Ipv4Addr::new(10, 244, 100 + k as u8, 0);
            let l = lease(
                &format!("{net}/24"),
                format!("bench-{k}"),
                Ipv4Addr::new(192, 168, 50, 100 + k as u8),
            );
            let t0 = Instant::now();
            s.create(&l, Duration::from_secs(3600))
                .await
                .unwrap()
                .expect("fresh key");
            let wait = async {
                while let Some((m, _)) = events.next().await {
                    if let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r)) = m.payload {
                        let dst = r.attributes.iter().any(
                            |a| matches!(a, RouteAttribute::Destination(RouteAddress::Inet(d)) if *d == net),
                        );
                        if dst && r.header.protocol == RouteProtocol::Other(157) {
                            return;
                        }
                    }
                }
            };
            tokio::time::timeout(Duration::from_secs(10), wait)
                .await
                .expect("route within 10 s");
            out.push(t0.elapsed());
        }
        out
    })
}

/// What `scale` measured.
struct Scale {
    fill: Duration,
    converge: Duration,
    peak_rss_kib: u64,
    rss_kib: u64,
    /// CPU per resync with nothing to do (everything the daemon did in 30 s of 1 s resyncs,
    /// divided by 30; the full read of the store every 5 minutes is `full_read`).
    noop_resync_cpu: Duration,
    /// One listing of the whole store, as the daemon's full read every 5 minutes does it.
    full_read: Duration,
    /// Voluntary context switches (sleeps ended) per second at the default resync interval
    /// (10 s), idle.
    idle_wakeups: f64,
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// CPU time of all the process's threads (ns, from schedstat) and how often they went to sleep.
fn cpu_and_switches(pid: u32) -> (u64, u64) {
    let mut cpu = 0;
    let mut switches = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let p = t.path();
        if let Ok(s) = std::fs::read_to_string(p.join("schedstat")) {
            cpu += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
        if let Ok(s) = std::fs::read_to_string(p.join("status")) {
            for l in s.lines().filter(|l| l.starts_with("voluntary_ctxt_switches")) {
                switches += l
                    .split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    (cpu, switches)
}

/// `n` leases of `n` nodes, each with its own address (the kernel's worst case): fill the store,
/// start one daemon, time until it has every route, then what a resync with nothing to do costs,
/// and how often the daemon wakes when idle.
fn scale(kind: StoreKind, n: usize) -> Scale {
    let mut lab = Lab::new("rbs", kind);
    lab.cluster_cidr = "10.0.0.0/8".into();
    let i = lab.add_node();
    // Up to 65k nodes: they sit in 100.64.0.0/10, on the node's link.
    lab.nodes[i]
        .node
        .ns
        .ok(&["ip", "addr", "add", "100.64.0.1/10", "dev", "eth0"]);
    let store = lab.store.clone();
    let t_fill = Instant::now();
    let full_read = lab.nodes[i].node.ns.block_on(0, || async move {
        let s = cbrnet_tests::lab::open_store(&store).await;
        let s = &s;
        futures::stream::iter(0..n as u32)
            .map(|k| async move {
                let net = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 0, 0)) + (k << 8));
                let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 2)) + k);
                s.create(
                    &lease(&format!("{net}/24"), format!("bench-{k}"), ip),
                    Duration::from_secs(3600),
                )
                .await
                .unwrap()
                .expect("fresh key");
            })
            .buffer_unordered(64)
            .collect::<Vec<()>>()
            .await;
        // What the daemon's full read of the store (every 5 minutes) costs: one listing.
        let t = Instant::now();
        let listing = s.list().await.unwrap();
        assert_eq!(listing.leases.len(), n);
        t.elapsed()
    });
    let fill = t_fill.elapsed() - full_read;
    let t0 = Instant::now();
    lab.start(i);
    // The daemon's own count: listing 65k routes with `ip` would load the machine it measures.
    while lab.metric(i, "cbrnet_routes_installed") < n as f64 {
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "only {} routes after 600 s",
            lab.metric(i, "cbrnet_routes_installed")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let converge = t0.elapsed();
    let kernel = lab.nodes[i]
        .node
        .ns
        .ok(&["ip", "route", "show", "proto", "157"])
        .lines()
        .count();
    assert_eq!(kernel, n, "the kernel has {kernel} routes of ours");
    let pid = lab.nodes[i].daemon.as_ref().unwrap().id();
    let peak_rss_kib = status_kib(pid, "VmHWM:");
    std::thread::sleep(Duration::from_secs(3));
    let (c0, _) = cpu_and_switches(pid);
    std::thread::sleep(Duration::from_secs(30));
    let (c1, _) = cpu_and_switches(pid);
    let noop_resync_cpu = Duration::from_nanos((c1 - c0) / 30);
    let rss_kib = status_kib(pid, "VmRSS:");
    // Idle at the default resync interval: a restart finds every route in place.
    lab.stop(i);
    lab.resync_interval = "10s".into();
    lab.start(i);
    while lab.metric(i, "cbrnet_routes_installed") < n as f64 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = lab.nodes[i].daemon.as_ref().unwrap().id();
    std::thread::sleep(Duration::from_secs(5));
    let (_, s0) = cpu_and_switches(pid);
    std::thread::sleep(Duration::from_secs(30));
    let (_, s1) = cpu_and_switches(pid);
    Scale {
        fill,
        full_read,
        converge,
        peak_rss_kib,
        rss_kib,
        noop_resync_cpu,
        idle_wakeups: (s1 - s0) as f64 / 30.0,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        hook(info);
        cbrnet_tests::tear_down();
    }));
    let which = arg(&args, "--store", "both".to_string());
    let rounds: usize = arg(&args, "--rounds", 20);
    let sizes: Vec<usize> = arg(&args, "--leases", "5000,20000".to_string())
        .split(',')
        .map(|n| n.trim().parse().expect("--leases N[,N...]"))
        .collect();
    let kinds: Vec<(&str, StoreKind)> = [("file", StoreKind::File), ("etcd", StoreKind::Etcd)]
        .into_iter()
        .filter(|(name, _)| which == "both" || which == *name)
        .collect();
    println!(
        "kernel {}, {} cores",
        String::from_utf8_lossy(
            &std::process::Command::new("uname")
                .arg("-r")
                .output()
                .unwrap()
                .stdout
        )
        .trim(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    for (name, kind) in &kinds {
        println!(
            "{name}: new lease -> route on another node: {}",
            stats(latency(*kind, rounds))
        );
    }
    for (name, kind) in &kinds {
        for n in &sizes {
            let s = scale(*kind, *n);
            println!(
                "{name}: {n} leases -> {n} routes in {:.2} s from daemon start (store filled in {:.1} s); \
                 peak RSS {:.1} MiB, RSS after {:.1} MiB; no-op resync {:.1} ms CPU; \
                 idle: {:.2} wakeups/s; full store read (every 5 min) {:.0} ms",
                s.converge.as_secs_f64(),
                s.fill.as_secs_f64(),
                s.peak_rss_kib as f64 / 1024.0,
                s.rss_kib as f64 / 1024.0,
                s.noop_resync_cpu.as_secs_f64() * 1e3,
                s.idle_wakeups,
                s.full_read.as_secs_f64() * 1e3
            );
        }
    }
}
