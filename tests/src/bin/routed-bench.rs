//! `routed-bench`: how fast `cbrnet-routed` turns leases into routes, with each store.
//!
//! 1. Latency: in a 2-node lab, a new lease is written to the store (as another node's daemon
//!    would) and we time until node 0's kernel announces the route (RTM_NEWROUTE, proto 157).
//! 2. Scale: 5,000 leases already in the store; we start one node's daemon and time until its
//!    kernel holds all 5,000 routes, then read its peak RSS.
//!
//! routed-bench [--store file|etcd|both] [--rounds 20] [--leases 5000]

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

fn scale(kind: StoreKind, n: usize) -> (Duration, Duration, u64, u64) {
    let mut lab = Lab::new("rbs", kind);
    lab.cluster_cidr = "10.0.0.0/8".into();
    let i = lab.add_node();
    // 5,000 nodes need a bigger underlay than a /24: they sit in 192.168.128.0/17.
    lab.nodes[i]
        .node
        .ns
        .ok(&["ip", "addr", "add", "192.168.128.1/17", "dev", "eth0"]);
    let store = lab.store.clone();
    let t_fill = Instant::now();
    lab.nodes[i].node.ns.block_on(0, || async move {
        let s = cbrnet_tests::lab::open_store(&store).await;
        for k in 0..n as u32 {
            let net = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 0, 0)) + (k << 8));
            let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(192, 168, 128, 2)) + k);
            s.create(
                &lease(&format!("{net}/24"), format!("bench-{k}"), ip),
                Duration::from_secs(3600),
            )
            .await
            .unwrap()
            .expect("fresh key");
        }
    });
    let fill = t_fill.elapsed();
    let t0 = Instant::now();
    lab.start(i);
    loop {
        let routes = lab.nodes[i]
            .node
            .ns
            .ok(&["ip", "route", "show", "proto", "157"])
            .lines()
            .count();
        if routes >= n {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "only {routes} routes after 120 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let converge = t0.elapsed();
    let pid = lab.nodes[i].daemon.as_ref().unwrap().id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    (fill, converge, kib("VmHWM:"), kib("VmRSS:"))
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
    let n: usize = arg(&args, "--leases", 5000);
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
        let (fill, converge, hwm, rss) = scale(*kind, n);
        println!(
            "{name}: {n} leases -> {n} routes in {:.2} s from daemon start (store filled in {:.1} s); \
             daemon peak RSS {:.1} MiB, RSS after {:.1} MiB",
            converge.as_secs_f64(),
            fill.as_secs_f64(),
            hwm as f64 / 1024.0,
            rss as f64 / 1024.0
        );
    }
}
