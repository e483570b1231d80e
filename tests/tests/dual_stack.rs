//! Dual-stack and IPv6-only clusters: one lease per node with a subnet of each family, a gateway
//! of each on the bridge, and pods reaching each other on every address they have, on every
//! backend, over an underlay with IPv6 and over one without it.

use cbrnet_tests::lab::{IpFamily, Lab, StoreKind, VXLAN_DEV};
use std::time::Duration;

/// A lab over `segments` segments with pods of `family` and `backend`, no node yet.
fn lab(tag: &str, kind: StoreKind, family: IpFamily, segments: usize, backend: &str) -> Lab {
    let mut lab = Lab::new(tag, kind);
    lab.set_family(family);
    lab.segments = segments;
    lab.backend = Some(backend.into());
    lab
}

/// Adds `nodes` nodes, starts them, adds a pod to each and waits for every route.
fn up(lab: &mut Lab, nodes: usize) {
    for _ in 0..nodes {
        lab.add_node();
    }
    for i in 0..nodes {
        lab.start(i);
    }
    for i in 0..nodes {
        lab.add_pod(i);
    }
    lab.converge(Duration::from_secs(10));
}

fn assert_all_reach(lab: &Lab) {
    assert_eq!(lab.unreachable_pairs(), Vec::<(String, String)>::new());
}

/// Node `i`'s subnet file, parsed.
fn subnet_file(lab: &Lab, i: usize) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(lab.nodes[i].node.subnet_file()).unwrap()).unwrap()
}

/// The addresses on node `i`'s bridge (`ip -o addr show dev cbr0`).
fn bridge_addrs(lab: &Lab, i: usize) -> String {
    lab.nodes[i]
        .node
        .ns
        .ok(&["ip", "-o", "addr", "show", "dev", "cbr0"])
}

/// Every pod has an address of each family, the subnet file both subnets, the bridge both
/// gateways (the IPv6 one usable at once: not tentative), the lease both subnets.
fn assert_two_families(lab: &Lab) {
    for (i, n) in lab.nodes.iter().enumerate() {
        let f = subnet_file(lab, i);
        let (s4, s6) = (f["subnet"].as_str().unwrap(), f["ipv6Subnet"].as_str().unwrap());
        assert!(s4.starts_with("10.244.") && s6.starts_with("fd00:10:244:"), "{f}");
        assert_eq!(f["ipv6ClusterCIDR"], "fd00:10:244::/56");
        let gw6 = f["ipv6Gateway"].as_str().unwrap();
        let br = bridge_addrs(lab, i);
        assert!(br.contains(&format!("{gw6}/64")), "{br}");
        assert!(
            !br.lines()
                .any(|l| l.contains("scope global") && l.contains("tentative")),
            "{br}"
        );
        for (_, id, _) in &n.pods {
            let addrs = &n.pod_addrs[id];
            assert_eq!(addrs.len(), 2, "{id}: {addrs:?}");
        }
    }
    let leases = lab.leases();
    let leases = leases.as_array().unwrap();
    assert_eq!(leases.len(), lab.nodes.len());
    for l in leases {
        assert!(l["ipv6Subnet"].as_str().is_some(), "{l}");
    }
}

#[test]
fn dual_stack_pods_reach_each_other_on_both_families_directly() {
    let mut lab = lab("ds-hgw", StoreKind::File, IpFamily::Dual, 1, "host-gw");
    up(&mut lab, 3);
    assert_two_families(&lab);
    assert_all_reach(&lab);
    // each family through the peer's node IP of that family
    let t = lab.nodes[0].route_table();
    for n in &lab.nodes[1..] {
        let s = n.subnets();
        assert!(t.contains(&format!("{} via {} dev eth0", s[0], n.ip)), "{t}");
        assert!(
            t.contains(&format!("{} via {} dev eth0", s[1], n.ip6.as_deref().unwrap())),
            "{t}"
        );
    }
    // metrics per family
    assert!(lab.wait_for(Duration::from_secs(3), |l| {
        l.metric(0, "cbrnet_routes_installed{family=\"ipv6\"}") == 2.0
    }));
    for f in ["ipv4", "ipv6"] {
        assert_eq!(lab.metric(0, &format!("cbrnet_leases{{family=\"{f}\"}}")), 3.0);
        assert_eq!(
            lab.metric(0, &format!("cbrnet_peers{{path=\"direct\",family=\"{f}\"}}")),
            2.0
        );
    }
    // forwarding of both families, and router advertisements still taken on the underlay
    let ns = &lab.nodes[0].node.ns;
    assert_eq!(
        ns.ok(&["sysctl", "-n", "net.ipv6.conf.all.forwarding"]).trim(),
        "1"
    );
    assert_eq!(ns.ok(&["sysctl", "-n", "net.ipv4.ip_forward"]).trim(), "1");
    assert_eq!(
        ns.ok(&["sysctl", "-n", "net.ipv6.conf.eth0.accept_ra"]).trim(),
        "2"
    );
    // a route of each family deleted by hand comes back
    let s = lab.nodes[1].subnets();
    ns.ok(&["ip", "-6", "route", "del", &s[1]]);
    assert!(
        lab.wait_routes(0, Duration::from_secs(5), |_| lab.routes_complete(0))
            .is_some(),
        "{}",
        lab.nodes[0].route_table()
    );
    // the bridge's IPv6 gateway flushed by hand comes back
    ns.ok(&["ip", "-6", "addr", "flush", "dev", "cbr0", "scope", "global"]);
    let gw6 = subnet_file(&lab, 0)["ipv6Gateway"].as_str().unwrap().to_string();
    assert!(lab.wait_for(Duration::from_secs(5), |l| bridge_addrs(l, 0).contains(&gw6)));
    assert_all_reach(&lab);
}

#[test]
fn dual_stack_over_vxlan_and_auto_across_segments_etcd() {
    for (tag, backend) in [("ds-vx", "vxlan"), ("ds-auto", "auto")] {
        let mut lab = lab(tag, StoreKind::Etcd, IpFamily::Dual, 2, backend);
        up(&mut lab, 3);
        assert_two_families(&lab);
        assert_all_reach(&lab);
        // node 1 is across: each of its subnets through the device, one FDB entry (outer IPv4),
        // a neighbour entry per family
        let n1 = &lab.nodes[1];
        let ns = &lab.nodes[0].node.ns;
        let neigh = ns.ok(&["ip", "neigh", "show", "dev", VXLAN_DEV]);
        let neigh6 = ns.ok(&["ip", "-6", "neigh", "show", "dev", VXLAN_DEV]);
        for s in n1.subnets() {
            let hop = s.split('/').next().unwrap();
            assert!(
                neigh.contains(&format!("{hop} lladdr")) || neigh6.contains(&format!("{hop} lladdr")),
                "{backend}: {hop}: {neigh}{neigh6}"
            );
        }
        let fdb = ns.ok(&["bridge", "fdb", "show", "dev", VXLAN_DEV]);
        assert!(fdb.contains(&format!("dst {} self permanent", n1.ip)), "{fdb}");
        // the device carries the network address of each subnet of this node
        let dev = ns.ok(&["ip", "-o", "addr", "show", "dev", VXLAN_DEV]);
        for s in lab.nodes[0].subnets() {
            let net = s.split('/').next().unwrap();
            assert!(dev.contains(&format!("{net}/")), "{dev}");
        }
    }
}

#[test]
fn dual_stack_pods_over_an_ipv4_only_underlay_use_vxlan_for_ipv6() {
    let mut lab = lab("ds-v4ul", StoreKind::File, IpFamily::Dual, 1, "auto");
    lab.underlay_v4_only = true;
    up(&mut lab, 3);
    assert_two_families(&lab);
    assert_all_reach(&lab);
    // IPv4 directly, IPv6 inside IPv4 through the device
    let t = lab.nodes[0].route_table();
    for n in &lab.nodes[1..] {
        let s = n.subnets();
        assert!(t.contains(&format!("{} via {} dev eth0", s[0], n.ip)), "{t}");
        let net6 = s[1].split('/').next().unwrap();
        assert!(t.contains(&format!("{} via {net6} dev {VXLAN_DEV}", s[1])), "{t}");
    }
    assert!(lab.wait_for(Duration::from_secs(3), |l| {
        l.metric(0, "cbrnet_peers{path=\"vxlan\",family=\"ipv6\"}") == 2.0
    }));
    assert_eq!(
        lab.metric(0, "cbrnet_peers{path=\"direct\",family=\"ipv4\"}"),
        2.0
    );
    // `leases` on a node says how each family of each peer is reached
    let leases = lab.nodes[0].node.ns.ok(&[
        cbrnet_tests::bin("cbrnet-routed").to_str().unwrap(),
        "leases",
        "--store",
        &lab.store,
        "--subnet-file",
        lab.nodes[0].node.subnet_file().to_str().unwrap(),
    ]);
    assert_eq!(leases.matches(" direct,vxlan").count(), 2, "{leases}");
}

#[test]
fn an_ipv6_only_cluster_reaches_every_pod() {
    let mut lab = lab("v6only", StoreKind::File, IpFamily::V6, 2, "auto");
    up(&mut lab, 3);
    assert_all_reach(&lab);
    let f = subnet_file(&lab, 0);
    assert!(f["subnet"].as_str().unwrap().starts_with("fd00:10:244:"), "{f}");
    assert!(f.get("ipv6Subnet").is_none(), "{f}");
    // the lease names the IPv6 node IP; the VXLAN device's outer address is IPv6 (MTU - 70)
    let l = lab.leases();
    assert!(l[0]["nodeIP"].as_str().unwrap().starts_with("fd50:"), "{l}");
    let d = lab.nodes[0].node.ns.ok(&["ip", "-d", "link", "show", VXLAN_DEV]);
    assert!(d.contains("mtu 1430") && d.contains("local fd50:"), "{d}");
    assert_eq!(f["mtu"], 1430);
    // IPv4 forwarding is left as it was: the node routes no IPv4 pods
    let ns = &lab.nodes[0].node.ns;
    assert_eq!(ns.ok(&["sysctl", "-n", "net.ipv4.ip_forward"]).trim(), "0");
}

#[test]
fn an_older_single_family_lease_is_routed_for_the_family_it_has() {
    let mut lab = lab("ds-old", StoreKind::File, IpFamily::Dual, 1, "auto");
    up(&mut lab, 2);
    // a node of an earlier version (or a hand edit): IPv4 only, on the segment
    let exp = cbrnet_ipam::cluster::record::unix_now() + 3600;
    let old =
        format!(r#"{{"subnet":"10.244.9.0/24","nodeName":"old","nodeIP":"192.168.50.99","expires":{exp}}}"#);
    lab.put_raw("10.244.9.0-24", old.as_bytes());
    assert!(
        lab.wait_routes(0, Duration::from_secs(5), |t| t
            .contains("10.244.9.0/24 via 192.168.50.99"))
            .is_some(),
        "{}",
        lab.nodes[0].route_table()
    );
    assert!(lab.wait_for(Duration::from_secs(3), |l| {
        l.metric(0, "cbrnet_leases{family=\"ipv4\"}") == 3.0
    }));
    assert_eq!(lab.metric(0, "cbrnet_leases{family=\"ipv6\"}"), 2.0);
    assert_eq!(lab.metric(0, "cbrnet_peers_unroutable"), 0.0);
    assert_eq!(lab.http_get(0, "/healthz").0, 200);
    assert!(!lab.nodes[0].route_table().contains("fd00:10:244:9"));
    assert_all_reach(&lab);
    // a live node's record edited by hand down to one family: its daemon writes both back, the
    // same subnets, and its peer routes both again
    let (s4, s6) = {
        let s = lab.nodes[1].subnets();
        (s[0].clone(), s[1].clone())
    };
    let key = s4.replace('/', "-");
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(lab.store_dir().join(&key)).unwrap()).unwrap();
    let mut one = rec["lease"].clone();
    one.as_object_mut().unwrap().remove("ipv6Subnet");
    lab.put_raw(&key, one.to_string().as_bytes());
    assert!(
        lab.wait_for(Duration::from_secs(10), |l| {
            let r: serde_json::Value =
                serde_json::from_slice(&std::fs::read(l.store_dir().join(&key)).unwrap_or_default())
                    .unwrap_or_default();
            r["lease"]["ipv6Subnet"] == s6.as_str()
        }),
        "{}",
        lab.nodes[1].log()
    );
    assert_eq!(lab.nodes[1].subnets(), [s4, s6]);
    assert!(
        lab.wait_routes(0, Duration::from_secs(5), |_| lab.routes_complete(0))
            .is_some(),
        "{}",
        lab.nodes[0].route_table()
    );
    assert_eq!(lab.http_get(1, "/healthz").0, 200);
    assert_all_reach(&lab);
}

#[test]
fn an_ipv6_subnet_another_record_names_is_not_taken_back() {
    let mut lab = lab("ds-named", StoreKind::File, IpFamily::Dual, 1, "auto");
    up(&mut lab, 2);
    let (s4, s6) = {
        let s = lab.nodes[1].subnets();
        (s[0].clone(), s[1].clone())
    };
    let key = s4.replace('/', "-");
    let read = |l: &Lab, key: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(l.store_dir().join(key)).unwrap_or_default())
            .unwrap_or_default()
    };
    // node 1 stops; meanwhile its record loses its IPv6 subnet and another record names it
    lab.stop(1);
    let mut one = read(&lab, &key)["lease"].clone();
    one.as_object_mut().unwrap().remove("ipv6Subnet");
    lab.put_raw(&key, one.to_string().as_bytes());
    let exp = cbrnet_ipam::cluster::record::unix_now() + 3600;
    let other = format!(
        r#"{{"subnet":"10.244.20.0/24","ipv6Subnet":"{s6}","nodeName":"other","nodeIP":"192.168.50.98","expires":{exp}}}"#
    );
    lab.put_raw("10.244.20.0-24", other.as_bytes());
    // back, it takes its IPv4 subnet alone, says why, and serves IPv4 only
    lab.spawn(1);
    let why = format!("this node holds no IPv6 subnet: {s6}");
    lab.expect_logged(1, Duration::from_secs(10), &why);
    let (code, body) = lab.http_get(1, "/healthz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains(&why), "{body}");
    std::thread::sleep(Duration::from_secs(3)); // two renewals
    let rec = read(&lab, &key);
    assert_eq!(rec["lease"]["nodeName"], "node-1", "{rec}");
    assert!(rec["lease"]["ipv6Subnet"].is_null(), "{rec}");
    assert_eq!(lab.nodes[1].subnets(), std::slice::from_ref(&s4));
    assert_eq!(
        lab.nodes[1].log().matches(&why).count(),
        1,
        "{}",
        lab.nodes[1].log()
    );
    // node 0 routes that IPv6 subnet once, to the record that names it, and says so of none
    assert_eq!(read(&lab, "10.244.20.0-24")["lease"]["ipv6Subnet"], s6.as_str());
    // the other record goes: node 1 adds its IPv6 subnet, and every pod reaches every other
    std::fs::remove_file(lab.store_dir().join("10.244.20.0-24")).unwrap();
    assert!(
        lab.wait_for(Duration::from_secs(10), |l| read(l, &key)["lease"]["ipv6Subnet"]
            == s6.as_str()),
        "{}",
        lab.nodes[1].log()
    );
    lab.expect_logged(1, Duration::from_secs(5), "holds a subnet of each family again");
    assert!(lab.wait_for(Duration::from_secs(5), |l| l.http_get(1, "/healthz").0 == 200));
    assert!(lab.wait_for(Duration::from_secs(5), |l| l.nodes[1].subnets()
        == [s4.clone(), s6.clone()]));
    lab.converge(Duration::from_secs(10));
    assert_all_reach(&lab);
}

#[test]
fn an_ipv6_cidr_too_small_for_the_nodes_is_said_and_the_others_keep_working() {
    // two /64s in the /63: the third node finds no slot with both families
    let mut lab = lab("ds-full", StoreKind::File, IpFamily::Dual, 1, "auto");
    lab.cluster_cidr = "10.244.0.0/16,fd00:10:244::/63".into();
    up(&mut lab, 2);
    let i = lab.add_node();
    lab.spawn(i);
    lab.expect_logged(
        i,
        Duration::from_secs(10),
        "cluster CIDR fd00:10:244::/63 is full",
    );
    let (code, body) = lab.http_get(i, "/healthz");
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("no lease: cluster CIDR fd00:10:244::/63 is full"),
        "{body}"
    );
    assert_eq!(lab.metric(i, "cbrnet_store_up"), 1.0);
    assert!(lab.nodes[i].subnet().is_none());
    // said once, not at every retry
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        lab.nodes[i].log().matches("is full").count(),
        1,
        "{}",
        lab.nodes[i].log()
    );
    assert_eq!(lab.leases().as_array().unwrap().len(), 2);
    assert_all_reach(&lab);
}

#[test]
fn an_ipv6_node_ip_that_goes_and_comes_back() {
    let mut lab = lab("ds-ipgo", StoreKind::File, IpFamily::Dual, 1, "auto");
    up(&mut lab, 3);
    let ip6 = lab.nodes[1].ip6.clone().unwrap();
    let ns1 = &lab.nodes[1].node.ns;
    ns1.ok(&["ip", "addr", "del", &format!("{ip6}/64"), "dev", "eth0"]);
    // node 1 says its node IP is gone; its IPv6 routes to the others, whose next hops the kernel
    // took away with the address, go through VXLAN (IPv6 inside IPv4) meanwhile
    assert!(lab.wait_for(Duration::from_secs(5), |l| l.http_get(1, "/healthz").0 == 503));
    assert!(lab.http_get(1, "/healthz").1.contains("--node-ip"));
    let others6: Vec<String> = [0, 2]
        .iter()
        .map(|j| lab.nodes[*j].subnets()[1].clone())
        .collect();
    assert!(
        lab.wait_routes(1, Duration::from_secs(5), |t| others6.iter().all(|s| t.contains(
            &format!("{s} via {} dev {VXLAN_DEV}", s.split('/').next().unwrap())
        )))
        .is_some(),
        "{}\n{}",
        lab.nodes[1].route_table(),
        lab.nodes[1].log()
    );
    // IPv4 is untouched
    let t = lab.nodes[1].route_table();
    assert!(
        t.contains(&format!("{} via {}", lab.nodes[0].subnets()[0], lab.nodes[0].ip)),
        "{t}"
    );
    // back: every path as before, every pod reaching every address
    let ns1 = &lab.nodes[1].node.ns;
    ns1.ok(&["ip", "addr", "add", &format!("{ip6}/64"), "dev", "eth0", "nodad"]);
    assert!(lab.wait_for(Duration::from_secs(5), |l| l.http_get(1, "/healthz").0 == 200));
    lab.converge(Duration::from_secs(10));
    assert_all_reach(&lab);
}

#[test]
fn a_restart_with_a_second_cluster_cidr_follows_it_and_leaves_old_pods_alone() {
    // an IPv4 cluster whose nodes have no IPv6 underlay, turned dual-stack node by node
    let mut lab = lab("ds-grow", StoreKind::File, IpFamily::V4, 1, "auto");
    up(&mut lab, 2);
    let v4 = lab.nodes[1].subnet().unwrap();
    lab.stop(1);
    lab.family = IpFamily::Dual;
    lab.underlay_v4_only = true;
    lab.cluster_cidr = IpFamily::Dual.cluster_cidr();
    lab.start(1);
    // the same IPv4 subnet, an IPv6 one beside it, said in the log
    assert!(lab.wait_for(Duration::from_secs(5), |l| l.nodes[1].subnets().len() == 2));
    let subnets = lab.nodes[1].subnets();
    assert_eq!(subnets[0], v4);
    assert!(subnets[1].starts_with("fd00:10:244:"), "{subnets:?}");
    let log = lab.nodes[1].log();
    assert!(log.contains("subnets follow its changed configuration"), "{log}");
    // node 0, still IPv4 only, routes node 1's IPv4 subnet and ignores the other
    let via = format!("{v4} via {}", lab.nodes[1].ip);
    assert!(lab
        .wait_routes(0, Duration::from_secs(5), |t| t.contains(&via))
        .is_some());
    assert!(!lab.nodes[0].route_table().contains("fd00:"));
    // the pod made before keeps working on IPv4
    assert_all_reach(&lab);
    // node 0 follows: a new pod on each node gets both families and reaches every address
    lab.stop(0);
    lab.start(0);
    lab.add_pod(0);
    lab.add_pod(1);
    lab.converge(Duration::from_secs(10));
    assert_all_reach(&lab);
}

#[test]
fn ipv4_pods_over_ipv6_node_ips_directly_and_through_vxlan() {
    // an IPv6 underlay (the IPv4 one only reaches the store): the nodes' only node IPs are IPv6
    for (tag, backend) in [("v4o6-hgw", "host-gw"), ("v4o6-vx", "vxlan")] {
        let mut lab = lab(tag, StoreKind::File, IpFamily::Dual, 1, backend);
        lab.cluster_cidr = cbrnet_tests::lab::CLUSTER_CIDR.into();
        for i in 0..3 {
            lab.add_node();
            let ip6 = lab.nodes[i].ip6.clone().unwrap();
            lab.nodes[i].flags = vec!["--node-ip".into(), ip6];
        }
        for i in 0..3 {
            lab.start(i);
            lab.add_pod(i);
        }
        let want: Vec<String> = (1..3)
            .map(|j| {
                let n = &lab.nodes[j];
                let s = n.subnet().unwrap();
                match backend {
                    // IPv4 via an IPv6 next hop (RTA_VIA)
                    "host-gw" => format!("{s} via inet6 {} dev eth0", n.ip6.as_deref().unwrap()),
                    _ => format!("{s} via {} dev {VXLAN_DEV}", s.split('/').next().unwrap()),
                }
            })
            .collect();
        assert!(
            lab.wait_routes(0, Duration::from_secs(10), |t| want.iter().all(|w| t.contains(w)))
                .is_some(),
            "{backend}: {want:?}\n{}\n{}",
            lab.nodes[0].route_table(),
            lab.nodes[0].log()
        );
        assert_all_reach(&lab);
        if backend == "vxlan" {
            let d = lab.nodes[0].node.ns.ok(&["ip", "-d", "link", "show", VXLAN_DEV]);
            assert!(d.contains("mtu 1430") && d.contains("local fd50:"), "{d}");
        }
    }
}
