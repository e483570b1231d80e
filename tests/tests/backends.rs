//! `cbrnet-routed --backend host-gw|vxlan|auto` in labs whose nodes sit on one or more underlay
//! segments: the path chosen per peer, the VXLAN device and its FDB and neighbour entries, and
//! what is repaired, cleared and refused.

use cbrnet_tests::lab::{Lab, StoreKind, VXLAN_DEV};
use serde_json::json;
use std::time::Duration;

/// A lab of `nodes` nodes over `segments` segments with `backend`, every daemon started.
fn lab(tag: &str, segments: usize, nodes: usize, backend: Option<&str>) -> Lab {
    let mut lab = Lab::new(tag, StoreKind::File);
    lab.segments = segments;
    lab.backend = backend.map(str::to_string);
    for _ in 0..nodes {
        lab.add_node();
    }
    for i in 0..nodes {
        lab.start(i);
    }
    lab
}

fn converge(lab: &Lab) {
    lab.converge(Duration::from_secs(10));
}

/// `bridge fdb show dev cbrnet.vxlan` and `ip neigh show dev cbrnet.vxlan` of node `i`.
fn fdb(lab: &Lab, i: usize) -> String {
    lab.nodes[i]
        .node
        .ns
        .ok(&["bridge", "fdb", "show", "dev", VXLAN_DEV])
}

fn neigh(lab: &Lab, i: usize) -> String {
    lab.nodes[i]
        .node
        .ns
        .ok(&["ip", "neigh", "show", "dev", VXLAN_DEV])
}

/// Node `j`'s VTEP MAC, as its lease publishes it.
fn vtep_of(lab: &Lab, j: usize) -> String {
    let name = &lab.nodes[j].name;
    lab.leases()
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["nodeName"] == name.as_str())
        .and_then(|l| l["vtepMAC"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("{name} publishes no VTEP MAC"))
}

fn assert_all_reach(lab: &Lab) {
    assert_eq!(lab.unreachable_pairs_df(), Vec::<(String, String, &str)>::new());
}

#[test]
fn auto_reaches_every_pod_directly_on_a_segment_and_through_vxlan_across() {
    let mut lab = lab("bk-auto", 2, 4, Some("auto"));
    for i in 0..4 {
        lab.add_pod(i);
    }
    converge(&lab);
    assert_all_reach(&lab);
    // the pods' MTU leaves room for the encapsulation
    assert_eq!(lab.pod_mtu(0), 1450);
    // node 0 reaches node 2 (segment 0) directly, nodes 1 and 3 through VXLAN
    lab.wait_for(Duration::from_secs(3), |l| {
        l.metric(0, "cbrnet_peers{path=\"vxlan\",family=\"ipv4\"}") == 2.0
    });
    assert_eq!(
        lab.metric(0, "cbrnet_peers{path=\"direct\",family=\"ipv4\"}"),
        1.0
    );
    assert_eq!(lab.metric(0, "cbrnet_peers{path=\"vxlan\",family=\"ipv4\"}"), 2.0);
    assert_eq!(lab.metric(0, "cbrnet_peers_unroutable"), 0.0);
    // exactly one FDB entry and one permanent neighbour per VXLAN peer
    let (f, n) = (fdb(&lab, 0), neigh(&lab, 0));
    for j in [1, 3] {
        let mac = vtep_of(&lab, j);
        let subnet = lab.nodes[j].subnet().unwrap();
        let hop = subnet.split('/').next().unwrap();
        assert!(
            f.contains(&format!("{mac} dst {} self permanent", lab.nodes[j].ip)),
            "{f}"
        );
        assert!(n.contains(&format!("{hop} lladdr {mac} PERMANENT")), "{n}");
    }
    assert_eq!(f.lines().filter(|l| l.contains("permanent")).count(), 2, "{f}");
    assert_eq!(n.lines().count(), 2, "{n}");
    // the device: our VNI and port, the node IP, no learning, TX checksum offload off
    let d = lab.nodes[0].node.ns.ok(&["ip", "-d", "link", "show", VXLAN_DEV]);
    for want in [
        "vxlan id 1 ",
        "local 192.168.50.10 ",
        "dstport 8472 ",
        "nolearning",
        "mtu 1450",
    ] {
        assert!(d.contains(want), "{want} not in {d}");
    }
    let k = lab.nodes[0].node.ns.ok(&["ethtool", "-k", VXLAN_DEV]);
    assert!(k.contains("tx-checksumming: off"), "{k}");
    // `leases` run on the node says how it reaches each peer
    let sf = lab.nodes[0].node.subnet_file();
    let table = lab.routed_cli(&["leases", "--subnet-file", sf.to_str().unwrap()]);
    let path_of = |node: &str| {
        table
            .lines()
            .find(|l| l.contains(&format!(" {node} ")))
            .and_then(|l| l.split_whitespace().last())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        [
            path_of("node-0"),
            path_of("node-1"),
            path_of("node-2"),
            path_of("node-3")
        ],
        ["self", "vxlan", "direct", "vxlan"],
        "{table}"
    );
    let j = lab.routed_cli(&["leases", "--json", "--subnet-file", sf.to_str().unwrap()]);
    assert!(j.contains("\"path\":\"vxlan\""), "{j}");
}

#[test]
fn vxlan_takes_every_peer_through_the_device() {
    let mut lab = lab("bk-vx", 2, 3, Some("vxlan"));
    for i in 0..3 {
        lab.add_pod(i);
    }
    converge(&lab);
    assert_all_reach(&lab);
    assert_eq!(lab.metric(0, "cbrnet_peers{path=\"vxlan\",family=\"ipv4\"}"), 2.0);
}

#[test]
fn host_gw_reports_a_peer_it_cannot_route() {
    let mut lab = lab("bk-hgw", 2, 3, Some("host-gw"));
    for i in 0..3 {
        lab.add_pod(i);
    }
    // node 0 and 2 share segment 0; node 1 is beyond the router
    assert!(lab
        .wait_routes(0, Duration::from_secs(5), |t| t
            .contains(&lab.nodes[2].subnet().unwrap()))
        .is_some());
    assert!(lab.nodes[0].pods[0].0.can_ping(&lab.nodes[2].pods[0].2));
    assert!(
        lab.wait_for(Duration::from_secs(3), |l| l.metric(0, "cbrnet_peers_unroutable")
            == 1.0)
    );
    assert!(!lab.nodes[0].node.ns.links().iter().any(|l| l == VXLAN_DEV));
    // this node's backend is why: not healthy, and /healthz says which peer and what to do
    let (status, body) = lab.http_get(0, "/healthz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("1 peer(s) cannot be reached with --backend host-gw") && body.contains("node-1"),
        "{body}"
    );
    let log = lab.nodes[0].log();
    assert_eq!(
        log.matches("not on a directly connected network (--backend host-gw)")
            .count(),
        1,
        "logged once:\n{log}"
    );
    // host-gw nodes publish no VTEP MAC
    assert!(lab
        .leases()
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l.get("vtepMAC").is_none_or(|v| v.is_null())));
}

#[test]
fn auto_switches_a_peers_path_when_an_underlay_address_comes_and_goes() {
    let lab = lab("bk-switch", 2, 2, Some("auto"));
    converge(&lab);
    let subnet = lab.nodes[1].subnet().unwrap();
    let ns = &lab.nodes[0].node.ns;
    // node 0 gets an address on node 1's segment: node 1 is on-link now
    ns.ok(&["ip", "addr", "add", "192.168.51.200/24", "dev", "eth0"]);
    let direct = format!("{subnet} via {}", lab.nodes[1].ip);
    assert!(
        lab.wait_routes(0, Duration::from_secs(2), |t| t.contains(&direct))
            .is_some(),
        "{}",
        lab.nodes[0].route_table()
    );
    // its FDB and neighbour entries went with the VXLAN path
    assert!(
        lab.wait_for(Duration::from_secs(2), |l| !fdb(l, 0).contains("permanent")),
        "{}",
        fdb(&lab, 0)
    );
    assert_eq!(neigh(&lab, 0), "");
    ns.ok(&["ip", "addr", "del", "192.168.51.200/24", "dev", "eth0"]);
    assert!(
        lab.wait_routes(0, Duration::from_secs(2), |_| lab.routes_complete(0))
            .is_some(),
        "{}",
        lab.nodes[0].route_table()
    );
}

#[test]
fn entries_and_device_deleted_by_hand_come_back() {
    let mut lab = lab("bk-heal", 2, 2, Some("vxlan"));
    lab.add_pod(0);
    lab.add_pod(1);
    converge(&lab);
    let subnet = lab.nodes[1].subnet().unwrap();
    let hop = subnet.split('/').next().unwrap().to_string();
    let mac = vtep_of(&lab, 1);
    let ns_name = lab.nodes[0].node.ns.name.clone();
    let ns = || &lab.nodes[0].node.ns;
    let whole = |l: &Lab| {
        l.routes_complete(0)
            && fdb(l, 0).contains(&format!("{mac} dst"))
            && neigh(l, 0).contains(&format!("{hop} lladdr {mac}"))
    };
    for (what, cmd) in [
        (
            "FDB entry",
            vec!["bridge", "fdb", "del", mac.as_str(), "dev", VXLAN_DEV],
        ),
        (
            "neighbour",
            vec!["ip", "neigh", "del", hop.as_str(), "dev", VXLAN_DEV],
        ),
        ("route", vec!["ip", "route", "del", subnet.as_str()]),
        ("device", vec!["ip", "link", "del", VXLAN_DEV]),
    ] {
        ns().ok(&cmd);
        assert!(
            lab.wait_for(Duration::from_secs(1), whole),
            "{what} not restored within 1 s in {ns_name}:\n{}\n{}\n{}",
            lab.nodes[0].route_table(),
            fdb(&lab, 0),
            neigh(&lab, 0)
        );
    }
    // a neighbour entry changed by hand is put back too
    ns().ok(&[
        "ip",
        "neigh",
        "replace",
        &hop,
        "lladdr",
        "0e:00:00:00:00:99",
        "dev",
        VXLAN_DEV,
        "nud",
        "permanent",
    ]);
    assert!(lab.wait_for(Duration::from_secs(1), whole), "{}", neigh(&lab, 0));
    assert!(lab.nodes[0].pods[0].0.can_ping(&lab.nodes[1].pods[0].2));
    // foreign entries on the device are left alone
    ns().ok(&[
        "bridge",
        "fdb",
        "append",
        "00:00:00:00:00:00",
        "dev",
        VXLAN_DEV,
        "dst",
        "192.168.51.250",
    ]);
    ns().ok(&[
        "ip",
        "neigh",
        "add",
        "10.244.250.1",
        "lladdr",
        "02:00:00:00:00:01",
        "dev",
        VXLAN_DEV,
    ]);
    std::thread::sleep(Duration::from_millis(1500)); // a resync
    assert!(
        fdb(&lab, 0).contains("00:00:00:00:00:00 dst 192.168.51.250"),
        "{}",
        fdb(&lab, 0)
    );
    assert!(neigh(&lab, 0).contains("10.244.250.1 lladdr 02:00:00:00:00:01"));
}

#[test]
fn a_peer_that_leaves_or_moves_is_cleared_and_followed() {
    let mut lab = lab("bk-leave", 2, 3, Some("vxlan"));
    converge(&lab);
    let mac1 = vtep_of(&lab, 1);
    let mac2 = vtep_of(&lab, 2);
    // node 1 changes its node IP: the FDB entry follows
    lab.stop(1);
    let ns1 = &lab.nodes[1].node.ns;
    ns1.ok(&["ip", "addr", "del", "192.168.51.11/24", "dev", "eth0"]);
    ns1.ok(&["ip", "addr", "add", "192.168.51.77/24", "dev", "eth0"]);
    // the underlay route went with the old address
    ns1.ok(&["ip", "route", "add", "192.168.48.0/20", "via", "192.168.51.1"]);
    lab.nodes[1].ip = "192.168.51.77".into();
    lab.start(1);
    assert!(
        lab.wait_for(Duration::from_secs(3), |l| fdb(l, 0)
            .contains(&format!("{mac1} dst 192.168.51.77 "))),
        "{}",
        fdb(&lab, 0)
    );
    lab.add_pod(0);
    lab.add_pod(1);
    converge(&lab);
    assert!(lab.nodes[0].pods[0].0.can_ping(&lab.nodes[1].pods[0].2));
    // node 2 is decommissioned: its route, FDB and neighbour entries go everywhere
    let subnet2 = lab.nodes[2].subnet().unwrap();
    let hop2 = subnet2.split('/').next().unwrap().to_string();
    lab.stop(2);
    let name = lab.nodes[2].name.clone();
    lab.routed_cli(&["release", "--node-name", &name]);
    for i in [0, 1] {
        assert!(
            lab.wait_for(Duration::from_secs(3), |l| {
                !l.nodes[i].route_table().contains(&subnet2)
                    && !fdb(l, i).contains(&mac2)
                    && !neigh(l, i).contains(&format!("{hop2} "))
            }),
            "node {i} still has node 2:\n{}\n{}\n{}",
            lab.nodes[i].route_table(),
            fdb(&lab, i),
            neigh(&lab, i)
        );
    }
}

#[test]
fn leases_without_or_with_a_bad_vtep_mac_are_routed_as_far_as_they_can_be() {
    let lab = lab("bk-vtep", 2, 1, Some("auto"));
    let lease = |subnet: &str, node: &str, ip: &str, mac: Option<&str>| {
        let mut l = json!({
            "subnet": subnet, "nodeName": node, "nodeIP": ip, "expires": u64::MAX / 2,
        });
        if let Some(m) = mac {
            l["vtepMAC"] = m.into();
        }
        l.to_string()
    };
    // an older node on node 0's segment: routed directly; one across: unroutable
    lab.put_raw(
        "10.244.100.0-24",
        lease("10.244.100.0/24", "old-near", "192.168.50.100", None).as_bytes(),
    );
    lab.put_raw(
        "10.244.101.0-24",
        lease("10.244.101.0/24", "old-far", "192.168.51.101", None).as_bytes(),
    );
    // garbage VTEP MACs across segments: unroutable, each reported
    for (k, mac) in [
        (102, "01:00:5e:00:00:01"),
        (103, "00:00:00:00:00:00"),
        (104, "nonsense"),
    ] {
        lab.put_raw(
            &format!("10.244.{k}.0-24"),
            lease(
                &format!("10.244.{k}.0/24"),
                &format!("bad-{k}"),
                &format!("192.168.51.{k}"),
                Some(mac),
            )
            .as_bytes(),
        );
    }
    // and a good one across: through VXLAN
    lab.put_raw(
        "10.244.105.0-24",
        lease(
            "10.244.105.0/24",
            "good",
            "192.168.51.105",
            Some("0e:00:00:00:01:05"),
        )
        .as_bytes(),
    );
    assert!(
        lab.wait_for(Duration::from_secs(5), |l| {
            l.metric(0, "cbrnet_peers_unroutable") == 4.0
                && l.metric(0, "cbrnet_peers{path=\"direct\",family=\"ipv4\"}") == 1.0
                && l.metric(0, "cbrnet_peers{path=\"vxlan\",family=\"ipv4\"}") == 1.0
        }),
        "{}\n{}",
        lab.http_get(0, "/metrics").1,
        lab.nodes[0].log()
    );
    let t = lab.nodes[0].route_table();
    assert!(t.contains("10.244.100.0/24 via 192.168.50.100 dev eth0"), "{t}");
    assert!(
        t.contains("10.244.105.0/24 via 10.244.105.0 dev cbrnet.vxlan"),
        "{t}"
    );
    for s in ["10.244.101.0", "10.244.102.0", "10.244.103.0", "10.244.104.0"] {
        assert!(!t.contains(s), "{t}");
    }
    std::thread::sleep(Duration::from_millis(1500)); // resyncs log nothing new
    let log = lab.nodes[0].log();
    for why in [
        "old-far: unroutable: node IP 192.168.51.101 is not on a directly connected network, and its lease has no VTEP MAC",
        "bad-102: unroutable: node IP 192.168.51.102 is not on a directly connected network, and VTEP MAC 01:00:5e:00:00:01 is a multicast address",
        "bad-103: unroutable: node IP 192.168.51.103 is not on a directly connected network, and VTEP MAC 00:00:00:00:00:00 is zero",
        "bad-104: unroutable: node IP 192.168.51.104 is not on a directly connected network, and VTEP MAC \"nonsense\" is not a MAC",
    ] {
        assert_eq!(log.matches(why).count(), 1, "{why}, once, in:\n{log}");
    }
    // a healthy node: the others are the peers' problems
    assert_eq!(lab.http_get(0, "/healthz").0, 200);
}

#[test]
fn a_foreign_device_of_our_name_is_reported_and_left_alone() {
    let mut lab = Lab::new("bk-foreign", StoreKind::File);
    lab.segments = 2;
    lab.backend = Some("auto".into());
    for _ in 0..3 {
        lab.add_node();
    }
    // node 0's name is taken by a bridge; node 2's by a VXLAN device of another VNI
    lab.nodes[0]
        .node
        .ns
        .ok(&["ip", "link", "add", VXLAN_DEV, "type", "bridge"]);
    lab.nodes[2].node.ns.ok(&[
        "ip", "link", "add", VXLAN_DEV, "type", "vxlan", "id", "77", "dstport", "4789",
    ]);
    for i in 0..3 {
        lab.start(i);
    }
    for (i, why) in [(0, "is a bridge device"), (2, "with VNI 77, not --vxlan-vni 1")] {
        assert!(
            lab.wait_for(Duration::from_secs(3), |l| l.http_get(i, "/healthz").0 == 503),
            "node {i} healthy"
        );
        let (_, body) = lab.http_get(i, "/healthz");
        assert!(body.contains(why), "{body}");
        std::thread::sleep(Duration::from_millis(1500)); // resyncs: reported once
        let log = lab.nodes[i].log();
        assert_eq!(log.matches(why).count(), 1, "{log}");
        assert!(lab.nodes[i].node.ns.links().iter().any(|l| l == VXLAN_DEV));
    }
    let d = lab.nodes[2].node.ns.ok(&["ip", "-d", "link", "show", VXLAN_DEV]);
    assert!(d.contains("vxlan id 77"), "{d}");
    // node 0 still reaches node 2 directly (same segment); node 1, across, is unroutable
    assert!(lab
        .wait_routes(0, Duration::from_secs(3), |t| t
            .contains(&lab.nodes[2].subnet().unwrap()))
        .is_some());
    assert_eq!(lab.metric(0, "cbrnet_peers_unroutable"), 1.0);
    // the device removed: node 0 makes its own and reaches node 1
    lab.nodes[0].node.ns.ok(&["ip", "link", "del", VXLAN_DEV]);
    assert!(
        lab.wait_for(Duration::from_secs(3), |l| l.http_get(0, "/healthz").0 == 200),
        "{}",
        lab.nodes[0].log()
    );
    let sub1 = lab.nodes[1].subnet().unwrap();
    assert!(lab
        .wait_routes(0, Duration::from_secs(3), |t| t.contains(&format!("{sub1} via")))
        .is_some());
}

#[test]
fn a_node_restarted_with_another_backend_leaves_nothing_of_the_old_one() {
    let mut lab = lab("bk-switchbe", 1, 2, Some("vxlan"));
    lab.add_pod(0);
    lab.add_pod(1);
    converge(&lab);
    // restarted as it was: it finds every entry and route in place and writes nothing
    lab.stop(0);
    lab.start(0);
    std::thread::sleep(Duration::from_millis(1500)); // resyncs
    let log = lab.nodes[0].log();
    let after = log.rsplit("lease held").next().unwrap();
    assert!(
        !after.contains("VXLAN peers:") && !after.contains("route installed"),
        "{log}"
    );
    // vxlan → auto (one segment: the peer is on-link): its FDB and neighbour entries go, the
    // device stays
    lab.stop(0);
    lab.nodes[0].flags = vec!["--backend".into(), "auto".into()];
    lab.start(0);
    let sub1 = lab.nodes[1].subnet().unwrap();
    let direct = format!("{sub1} via {}", lab.nodes[1].ip);
    assert!(
        lab.wait_for(Duration::from_secs(3), |l| {
            l.nodes[0].route_table().contains(&direct)
                && !fdb(l, 0).contains("permanent")
                && neigh(l, 0).is_empty()
        }),
        "{}\n{}\n{}",
        lab.nodes[0].route_table(),
        fdb(&lab, 0),
        neigh(&lab, 0)
    );
    // auto → host-gw: the device goes, the route stays direct
    lab.stop(0);
    lab.nodes[0].flags = vec!["--backend".into(), "host-gw".into()];
    lab.start(0);
    assert!(
        lab.wait_routes(0, Duration::from_secs(3), |t| t.contains(&direct))
            .is_some(),
        "{}",
        lab.nodes[0].route_table()
    );
    assert!(!lab.nodes[0].node.ns.links().iter().any(|l| l == VXLAN_DEV));
    let nh = lab.nodes[0]
        .node
        .ns
        .ok(&["ip", "nexthop", "show", "proto", "157"]);
    assert!(!nh.contains(VXLAN_DEV), "{nh}");
    // node 1 (vxlan) sees no VTEP MAC for node 0 any more: it reaches it directly
    let sub0 = lab.nodes[0].subnet().unwrap();
    let direct0 = format!("{sub0} via {}", lab.nodes[0].ip);
    assert!(
        lab.wait_routes(1, Duration::from_secs(3), |t| t.contains(&direct0))
            .is_some(),
        "{}",
        lab.nodes[1].route_table()
    );
    assert!(lab.nodes[0].pods[0].0.can_ping(&lab.nodes[1].pods[0].2));
    assert!(lab.nodes[1].pods[0].0.can_ping(&lab.nodes[0].pods[0].2));
    // host-gw → vxlan again: back through the device, no direct route left
    lab.stop(0);
    lab.nodes[0].flags = vec!["--backend".into(), "vxlan".into()];
    lab.start(0);
    converge(&lab);
    assert!(!lab.nodes[0].route_table().contains(&direct));
    assert!(lab.nodes[0].pods[0].0.can_ping(&lab.nodes[1].pods[0].2));
}

#[test]
fn old_and_new_nodes_mixed() {
    // node 0 runs host-gw (as a cbrnet without VXLAN would: no VTEP MAC published); node 2 is on
    // its segment, node 1 across
    let mut lab = Lab::new("bk-mixed", StoreKind::File);
    lab.segments = 2;
    lab.backend = Some("auto".into());
    for _ in 0..3 {
        lab.add_node();
    }
    lab.nodes[0].flags = vec!["--backend".into(), "host-gw".into()];
    for i in 0..3 {
        lab.start(i);
        lab.add_pod(i);
    }
    let sub0 = lab.nodes[0].subnet().unwrap();
    // node 2 reaches node 0 directly; node 1 cannot reach it at all, and says so
    assert!(lab
        .wait_routes(2, Duration::from_secs(3), |t| t
            .contains(&format!("{sub0} via {}", lab.nodes[0].ip)))
        .is_some());
    assert!(
        lab.wait_for(Duration::from_secs(3), |l| l.metric(1, "cbrnet_peers_unroutable")
            == 1.0)
    );
    assert!(!lab.nodes[1].route_table().contains(&sub0));
    assert!(lab.nodes[2].pods[0].0.can_ping(&lab.nodes[0].pods[0].2));
    // the new nodes reach each other through VXLAN
    assert!(lab.nodes[1].pods[0].0.can_ping(&lab.nodes[2].pods[0].2));
}

#[test]
fn the_pod_mtu_follows_the_underlay_and_the_offload_stays_off() {
    let mut lab = lab("bk-mtu", 1, 2, Some("auto"));
    lab.add_pod(0);
    let mtu_of = |l: &Lab| l.pod_mtu_published(0);
    assert_eq!(mtu_of(&lab), Some(1450));
    let ns = &lab.nodes[0].node.ns;
    // the underlay's MTU changes: the device and the subnet file follow at once
    ns.ok(&["ip", "link", "set", "eth0", "mtu", "1400"]);
    assert!(
        lab.wait_for(Duration::from_secs(1), |l| mtu_of(l) == Some(1350)),
        "{:?}\n{}",
        mtu_of(&lab),
        lab.nodes[0].log()
    );
    let d = ns.ok(&["ip", "link", "show", VXLAN_DEV]);
    assert!(d.contains("mtu 1350"), "{d}");
    // new pods get it; the pod started before keeps its own
    lab.add_pod(0);
    let second = &lab.nodes[0].pods[1].0;
    assert!(second.ok(&["ip", "link", "show", "eth0"]).contains("mtu 1350"));
    // TX checksum offload turned on by hand is turned off again
    lab.nodes[0].node.ns.ok(&["ethtool", "-K", VXLAN_DEV, "tx", "on"]);
    assert!(
        lab.wait_for(Duration::from_secs(3), |l| l.nodes[0]
            .node
            .ns
            .ok(&["ethtool", "-k", VXLAN_DEV])
            .contains("tx-checksumming: off")),
        "offload not put back"
    );
    assert!(lab.nodes[0]
        .log()
        .contains("TX checksum offload of cbrnet.vxlan was on"));
}
