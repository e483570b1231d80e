//! `cbrnet-lab`: a whole cluster on this machine. Nodes are network namespaces on an underlay
//! bridge, each running `cbrnet-routed` on the embedded file store (or a real etcd), with pods
//! added through the `cbrnet` binary; every pod pings every other pod. Everything it makes is
//! removed when it ends.
//!
//! cbrnet-lab [--nodes 3] [--pods 2] [--store file|etcd] [--hold]

use cbrnet_tests::lab::{Lab, StoreKind};
use std::time::Duration;

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name}: bad value {v:?}")))
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("cbrnet-lab [--nodes 3] [--pods 2] [--store file|etcd] [--hold]");
        return;
    }
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        hook(info);
        cbrnet_tests::remove_my_namespaces();
    }));
    let nodes: usize = arg(&args, "--nodes", 3);
    let pods: usize = arg(&args, "--pods", 2);
    let kind = match arg(&args, "--store", "file".to_string()).as_str() {
        "file" => StoreKind::File,
        "etcd" => StoreKind::Etcd,
        other => panic!("--store {other}: file or etcd"),
    };

    let mut lab = Lab::new("lab", kind);
    println!("store: {}", lab.store);
    for _ in 0..nodes {
        let i = lab.add_node();
        lab.start(i);
        println!(
            "{:<8} ip {:<14} subnet {}",
            lab.nodes[i].name,
            lab.nodes[i].ip,
            lab.nodes[i].subnet().unwrap()
        );
    }
    for i in 0..nodes {
        for _ in 0..pods {
            let ip = lab.add_pod(i);
            println!("  pod {:<14} on {}", ip, lab.nodes[i].name);
        }
    }
    for i in 0..nodes {
        if lab
            .wait_routes(i, Duration::from_secs(10), |_| lab.routes_complete(i))
            .is_none()
        {
            eprintln!(
                "{} is missing routes:\n{}",
                lab.nodes[i].name,
                lab.nodes[i].route_table()
            );
        }
    }
    println!(
        "\nroutes on {} (proto 157 = cbrnet):\n{}",
        lab.nodes[0].name,
        lab.nodes[0].route_table()
    );
    let total = nodes * pods * (nodes * pods - 1);
    let bad = lab.unreachable_pairs();
    println!("{} of {total} pod pairs reachable (ping)", total - bad.len());
    for (a, b) in &bad {
        println!("  unreachable: {a} -> {b}");
    }
    let leases = lab.leases();
    println!("\nleases:");
    for l in leases.as_array().unwrap() {
        println!(
            "  {} -> {} ({})",
            l["subnet"].as_str().unwrap(),
            l["nodeName"].as_str().unwrap(),
            l["nodeIP"].as_str().unwrap()
        );
    }
    if args.iter().any(|a| a == "--hold") {
        println!("\nholding; namespaces: ip netns list | grep cbt-lab. Ctrl-C to tear down.");
        let (tx, rx) = std::sync::mpsc::channel();
        let _ = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::stdin().read_line(&mut s);
            let _ = tx.send(());
        });
        let _ = rx.recv();
    }
    drop(lab);
    if !bad.is_empty() {
        std::process::exit(1);
    }
}
