//! The lab with an underlay of several segments, routed to each other by the underlay namespace:
//! its topology, direct routes within a segment, and (with the daemon's `--backend`) every pod
//! reaching every other across segments.

use cbrnet_tests::bin;
use cbrnet_tests::lab::{route_path, Lab, StoreKind};
use std::process::Command;
use std::time::Duration;

fn lab_of(tag: &str, kind: StoreKind, segments: usize, nodes: usize, backend: Option<&str>) -> Lab {
    let mut lab = Lab::new(tag, kind);
    lab.segments = segments;
    lab.backend = backend.map(str::to_owned);
    for _ in 0..nodes {
        let i = lab.add_node();
        lab.start(i);
    }
    lab
}

#[test]
fn two_segments_route_directly_within_a_segment() {
    let mut lab = lab_of("seg2", StoreKind::File, 2, 4, None);
    let ips: Vec<&str> = lab.nodes.iter().map(|n| n.ip.as_str()).collect();
    assert_eq!(
        ips,
        ["192.168.50.10", "192.168.51.11", "192.168.50.12", "192.168.51.13"]
    );
    assert_eq!(
        (0..4).map(|i| lab.segment_of(i)).collect::<Vec<_>>(),
        [0, 1, 0, 1]
    );
    // The underlay routes between segments; a node knows the underlay's segments and no more.
    assert!(lab.nodes[1].node.ns.can_ping(&lab.nodes[0].ip));
    assert!(lab.nodes[0].node.ns.can_ping(&lab.nodes[3].ip));
    let main = lab.nodes[1].node.ns.ok(&["ip", "route", "show"]);
    assert!(!main.contains("default"), "{main}");
    assert!(
        main.contains("192.168.48.0/20 via 192.168.51.1 dev eth0"),
        "{main}"
    );

    for i in 0..4 {
        lab.add_pod(i);
    }
    for i in 0..4 {
        let j = (i + 2) % 4;
        assert_eq!(lab.expected_path(i, j), "direct");
        assert_eq!(lab.expected_path(i, (i + 1) % 4), "vxlan");
        let want = format!("{} via {} ", lab.nodes[j].subnet().unwrap(), lab.nodes[j].ip);
        let done = lab.wait_routes(i, Duration::from_secs(5), |t| t.contains(&want));
        assert!(
            done.is_some(),
            "node {i}: no {want:?}:\n{}\n{}",
            lab.nodes[i].route_table(),
            lab.nodes[i].log()
        );
        // Whatever routes the daemon has across segments (none before VXLAN), none takes a path
        // the lab does not expect.
        for r in lab.nodes[i].route_table().lines() {
            let dst = r.split_whitespace().next().unwrap_or_default();
            let k = (0..4).find(|k| lab.nodes[*k].subnet().as_deref() == Some(dst));
            let k = k.unwrap_or_else(|| panic!("node {i}: a route to no node's subnet: {r}"));
            assert_eq!(route_path(r), lab.expected_path(i, k), "node {i}: {r}");
        }
        let (pod, _, _) = &lab.nodes[i].pods[0];
        let peer = &lab.nodes[j].pods[0].2;
        assert!(pod.can_ping(peer), "node {i}'s pod cannot reach {peer}");
        let size = lab.pod_mtu(i) - 28;
        assert!(
            pod.can_ping_df(peer, size),
            "node {i}'s pod: DF ping of {size} bytes to {peer}"
        );
    }
}

#[test]
fn nodes_off_the_first_segment_reach_etcd_through_the_router() {
    // `start` waits for each node's lease: node 1 holds one only if it reached etcd on ul0.
    let lab = lab_of("seg-etcd", StoreKind::Etcd, 2, 2, None);
    assert_eq!(lab.segment_of(1), 1);
    assert_eq!(lab.leases().as_array().unwrap().len(), 2);
}

#[test]
fn expected_paths_follow_the_backend_and_the_segments() {
    let mut lab = Lab::new("seg-path", StoreKind::File);
    lab.segments = 3;
    for (backend, same, across) in [
        (None, "direct", "vxlan"),
        (Some("auto"), "direct", "vxlan"),
        (Some("host-gw"), "direct", "direct"),
        (Some("vxlan"), "vxlan", "vxlan"),
    ] {
        lab.backend = backend.map(str::to_owned);
        assert_eq!(lab.expected_path(1, 4), same, "{backend:?}");
        assert_eq!(lab.expected_path(1, 2), across, "{backend:?}");
    }
    assert_eq!(
        route_path("10.244.3.0/24 via 10.244.3.0 dev cbrnet.vxlan proto 157 onlink"),
        "vxlan"
    );
    assert_eq!(
        route_path("10.244.1.0/24 via 192.168.50.11 dev eth0 proto 157"),
        "direct"
    );
}

#[test]
fn lab_segment_and_backend_flags_are_judged_up_front() {
    for args in [
        &["--segments", "0"][..],
        &["--segments", "17"],
        &["--backend", "bgp"],
    ] {
        let out = Command::new(bin("cbrnet-lab")).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let help = Command::new(bin("cbrnet-lab")).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    for word in ["--segments", "--backend", "host-gw", "vxlan", "auto"] {
        assert!(text.contains(word), "--help does not mention {word}:\n{text}");
    }
}
