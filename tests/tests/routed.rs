//! `cbrnet-routed` in a lab of nodes: leases, host-gw routes, pods talking across nodes.

use cbrnet_tests::lab::{Lab, StoreKind};
use std::time::Duration;

fn lab_of(tag: &str, nodes: usize, store: StoreKind) -> Lab {
    let mut lab = Lab::new(tag, store);
    for _ in 0..nodes {
        let i = lab.add_node();
        lab.start(i);
    }
    lab
}

/// The reference lab: 3 nodes, 2 pods each; every pod reaches every other pod.
fn three_nodes_every_pod_reaches_every_pod(tag: &str, kind: StoreKind) {
    let mut lab = lab_of(tag, 3, kind);
    for i in 0..3 {
        lab.add_pod(i);
        lab.add_pod(i);
    }
    for i in 0..3 {
        let done = lab.wait_routes(i, Duration::from_secs(5), |_| lab.routes_complete(i));
        assert!(
            done.is_some(),
            "node {i}: {}\n{}",
            lab.nodes[i].route_table(),
            lab.nodes[i].log()
        );
    }
    assert_eq!(lab.unreachable_pairs(), Vec::<(String, String)>::new());
    assert_eq!(lab.leases().as_array().unwrap().len(), 3);
    let subnets: std::collections::HashSet<_> = lab.nodes.iter().map(|n| n.subnet().unwrap()).collect();
    assert_eq!(subnets.len(), 3);
}

#[test]
fn three_nodes_file_store_every_pod_reaches_every_pod() {
    three_nodes_every_pod_reaches_every_pod("lab3", StoreKind::File);
}

#[test]
fn three_nodes_etcd_store_every_pod_reaches_every_pod() {
    three_nodes_every_pod_reaches_every_pod("etcd3", StoreKind::Etcd);
}

#[test]
fn a_node_joins_and_leaves() {
    let mut lab = lab_of("join", 2, StoreKind::File);
    let p0 = lab.add_pod(0);
    // joins: the others have its route within 2 s
    let i = lab.add_node();
    lab.start(i);
    let subnet = lab.nodes[i].subnet().unwrap();
    let want = format!("{subnet} via {}", lab.nodes[i].ip);
    for j in 0..2 {
        let took = lab.wait_routes(j, Duration::from_secs(2), |t| t.contains(&want));
        assert!(
            took.is_some(),
            "node {j} has no route to the new node: {}",
            lab.nodes[j].route_table()
        );
    }
    let p2 = lab.add_pod(i);
    assert!(lab.nodes[2].pods[0].0.can_ping(&p0));
    assert!(lab.nodes[0].pods[0].0.can_ping(&p2));

    // leaves (decommissioned: daemon stopped, lease released): its route is gone everywhere
    lab.stop(i);
    let name = lab.nodes[i].name.clone();
    lab.routed_cli(&["release", "--node-name", &name]);
    for j in 0..2 {
        assert!(
            lab.wait_routes(j, Duration::from_secs(3), |t| !t.contains(&subnet))
                .is_some(),
            "node {j} still routes the released subnet: {}",
            lab.nodes[j].route_table()
        );
    }
    assert_eq!(lab.leases().as_array().unwrap().len(), 2);
}

#[test]
fn an_expired_lease_loses_its_routes_and_its_subnet() {
    let mut lab = Lab::new("expire", StoreKind::File);
    for _ in 0..2 {
        lab.add_node();
    }
    lab.nodes[1].flags = vec!["--lease-ttl".into(), "3s".into()];
    lab.start(0);
    lab.start(1);
    let subnet = lab.nodes[1].subnet().unwrap();
    assert!(lab
        .wait_routes(0, Duration::from_secs(2), |t| t.contains(&subnet))
        .is_some());
    // node 1 dies without releasing; nobody renews its lease
    let mut d = lab.nodes[1].daemon.take().unwrap();
    d.kill().unwrap();
    d.wait().unwrap();
    assert!(
        lab.wait_routes(0, Duration::from_secs(6), |t| !t.contains(&subnet))
            .is_some(),
        "the expired lease's route stayed: {}",
        lab.nodes[0].route_table()
    );
    let leases = lab.leases();
    assert!(leases
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["nodeName"] == "node-1" && l["expired"] == true));
}

#[test]
fn a_restarted_node_keeps_its_subnet_and_pods_keep_working() {
    let mut lab = lab_of("restart", 2, StoreKind::File);
    let a = lab.add_pod(0);
    let b = lab.add_pod(1);
    assert!(lab
        .wait_routes(0, Duration::from_secs(5), |_| lab.routes_complete(0))
        .is_some());
    assert!(lab
        .wait_routes(1, Duration::from_secs(5), |_| lab.routes_complete(1))
        .is_some());
    let before = lab.nodes[0].subnet().unwrap();
    let routes_before = lab.nodes[0].route_table();
    lab.stop(0);
    // stopped: the routes stay and the pods still talk
    assert_eq!(lab.nodes[0].route_table(), routes_before);
    assert!(lab.nodes[0].pods[0].0.can_ping(&b));
    lab.start(0);
    assert_eq!(lab.nodes[0].subnet().unwrap(), before);
    assert!(lab.nodes[1].pods[0].0.can_ping(&a));
    std::thread::sleep(Duration::from_millis(1500)); // a resync or two
    assert_eq!(lab.nodes[0].route_table(), routes_before);
    // no flapping: the restarted daemon installed nothing, it found everything in place
    let log = lab.nodes[0].log();
    let after_restart = log.rsplit("lease held").next().unwrap();
    assert!(
        !after_restart.contains("route installed") && !after_restart.contains("route removed"),
        "{log}"
    );
}

#[test]
fn routes_follow_a_node_ip_change() {
    let mut lab = lab_of("ipchg", 2, StoreKind::File);
    let subnet = lab.nodes[1].subnet().unwrap();
    assert!(lab
        .wait_routes(0, Duration::from_secs(2), |t| t
            .contains(&format!("{subnet} via 192.168.50.11")))
        .is_some());
    lab.stop(1);
    let ns = &lab.nodes[1].node.ns;
    ns.ok(&["ip", "addr", "del", "192.168.50.11/24", "dev", "eth0"]);
    ns.ok(&["ip", "addr", "add", "192.168.50.77/24", "dev", "eth0"]);
    lab.nodes[1].ip = "192.168.50.77".into();
    lab.start(1);
    assert_eq!(lab.nodes[1].subnet().unwrap(), subnet);
    assert!(
        lab.wait_routes(0, Duration::from_secs(2), |t| t
            .contains(&format!("{subnet} via 192.168.50.77")))
            .is_some(),
        "{}",
        lab.nodes[0].route_table()
    );
    let a = lab.add_pod(0);
    lab.add_pod(1);
    assert!(lab.nodes[1].pods[0].0.can_ping(&a));
}

#[test]
fn a_route_deleted_by_hand_comes_back_and_foreign_routes_are_left_alone() {
    let lab = lab_of("heal", 2, StoreKind::File);
    let subnet = lab.nodes[1].subnet().unwrap();
    assert!(lab
        .wait_routes(0, Duration::from_secs(2), |t| t.contains(&subnet))
        .is_some());
    // a route we did not make, even inside the cluster CIDR, is not ours to remove
    lab.nodes[0]
        .node
        .ns
        .ok(&["ip", "route", "add", "10.244.200.0/24", "via", "192.168.50.11"]);
    lab.nodes[0].node.ns.ok(&["ip", "route", "del", &subnet]);
    let took = lab.wait_routes(0, Duration::from_secs(1), |t| t.contains(&subnet));
    assert!(
        took.is_some(),
        "not restored within 1 s: {}",
        lab.nodes[0].route_table()
    );
    std::thread::sleep(Duration::from_millis(1200)); // past a resync
    assert!(lab.nodes[0]
        .node
        .ns
        .ok(&["ip", "route", "show", "10.244.200.0/24"])
        .contains("via 192.168.50.11"));
}

#[test]
fn a_node_off_the_underlay_is_skipped_with_an_error_on_host_gw() {
    let mut lab = Lab::new("offnet", StoreKind::File);
    lab.backend = Some("host-gw".into());
    lab.add_node();
    lab.start(0);
    let i = lab.add_node();
    // this node's address is one that no other node can reach directly
    lab.nodes[i].ip = "172.31.0.5".into();
    lab.nodes[i]
        .node
        .ns
        .ok(&["ip", "addr", "add", "172.31.0.5/24", "dev", "eth0"]);
    lab.start(i);
    let subnet = lab.nodes[i].subnet().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!lab.nodes[0].route_table().contains(&subnet));
    assert!(
        lab.nodes[0].log().contains("not on a directly connected network"),
        "{}",
        lab.nodes[0].log()
    );
}

#[test]
fn healthz_metrics_and_ip_masq() {
    let mut lab = Lab::new("metrics", StoreKind::File);
    lab.add_node();
    lab.add_node();
    lab.nodes[0].flags = vec!["--ip-masq".into()];
    lab.start(0);
    lab.start(1);
    assert!(lab
        .wait_routes(0, Duration::from_secs(2), |_| lab.routes_complete(0))
        .is_some());
    let (status, body) = lab.http_get(0, "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    std::thread::sleep(Duration::from_millis(1200)); // let a resync count the routes
    let (status, m) = lab.http_get(0, "/metrics");
    assert_eq!(status, 200);
    assert!(m.contains("cbrnet_leases{family=\"ipv4\"} 2\n"), "{m}");
    assert!(m.contains("cbrnet_routes_installed{family=\"ipv4\"} 1\n"), "{m}");
    assert!(m.contains("cbrnet_store_up 1\n"), "{m}");
    assert!(m.contains("cbrnet_reconcile_errors_total 0\n"), "{m}");
    assert!(
        m.contains("# TYPE cbrnet_reconcile_duration_seconds histogram"),
        "{m}"
    );
    assert!(m.contains("cbrnet_build_info{version=\""), "{m}");
    assert_eq!(lab.http_get(0, "/nope").0, 404);
    let subnet = lab.nodes[0].subnet().unwrap();
    let nft = lab.nodes[0]
        .node
        .ns
        .ok(&["nft", "list", "table", "inet", "cbrnet_routed"]);
    assert!(
        nft.contains(&format!("ip saddr {subnet} ip daddr != 10.244.0.0/16 masquerade")),
        "{nft}"
    );
    assert!(
        lab.nodes[1]
            .node
            .ns
            .run(&["nft", "list", "table", "inet", "cbrnet_routed"])
            .status
            .code()
            != Some(0)
    );
}

#[test]
fn etcd_outage_keeps_routes_then_resyncs() {
    let mut lab = lab_of("outage", 2, StoreKind::Etcd);
    let b = lab.add_pod(1);
    lab.add_pod(0);
    assert!(lab
        .wait_routes(0, Duration::from_secs(5), |_| lab.routes_complete(0))
        .is_some());
    let routes = lab.nodes[0].route_table();
    lab.etcd.as_mut().unwrap().pause();
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(
        lab.nodes[0].route_table(),
        routes,
        "routes changed while the store was away"
    );
    assert!(lab.nodes[0].pods[0].0.can_ping(&b));
    assert_eq!(lab.http_get(0, "/healthz").0, 503, "healthy without a store");
    lab.etcd.as_mut().unwrap().resume();
    // back: healthy again, and a node that joins now is routed
    let i = lab.add_node();
    lab.start(i);
    let subnet = lab.nodes[i].subnet().unwrap();
    assert!(
        lab.wait_routes(0, Duration::from_secs(10), |t| t.contains(&subnet))
            .is_some(),
        "{}",
        lab.nodes[0].log()
    );
    assert_eq!(lab.http_get(0, "/healthz").0, 200);
}

#[test]
fn systemd_hears_ready_once_the_subnet_is_published_and_stopping_on_sigterm() {
    use std::os::unix::net::UnixDatagram;
    let mut lab = Lab::new("notify", StoreKind::File);
    let i = lab.add_node();
    let sock_path = lab.nodes[i].node.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    lab.nodes[i].env = vec![("NOTIFY_SOCKET".into(), sock_path.display().to_string())];
    lab.spawn(i);
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("READY within 20 s");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.contains("READY=1"), "{msg}");
    assert!(msg.contains("STATUS=holding 10.244."), "{msg}");
    assert!(lab.nodes[i].subnet().is_some(), "READY before the subnet file");
    lab.stop(i);
    let n = sock.recv(&mut buf).expect("STOPPING on SIGTERM");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
}
