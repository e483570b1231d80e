//! The route daemon under faults, on a namespace lab: bad records, foreign routes, drift of the
//! node's set-up, clocks, a second daemon under a live node's name, bad flags, a closed stderr,
//! vanished pods. Each case asserts that the other nodes keep converging and that the fault is
//! repaired or refused.

use cbrnet_tests::lab::{Lab, StoreKind};
use cbrnet_tests::{bin, routed, Netns};
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::Duration;

fn lab_of(tag: &str, nodes: usize, store: StoreKind) -> Lab {
    let mut lab = Lab::new(tag, store);
    for _ in 0..nodes {
        let i = lab.add_node();
        lab.start(i);
    }
    lab
}

fn lease(subnet: &str, node: &str, ip: &str) -> Vec<u8> {
    json!({"subnet": subnet, "nodeName": node, "nodeIP": ip, "expires": 4_000_000_000u64})
        .to_string()
        .into_bytes()
}

fn all_converge(lab: &Lab) {
    for i in 0..lab.nodes.len() {
        assert!(
            lab.wait_for(Duration::from_secs(5), |l| l.routes_complete(i)),
            "node {i} does not converge: {}\n{}",
            lab.nodes[i].route_table(),
            lab.nodes[i].log()
        );
    }
}

/// Every kind of bad record at once; the cluster goes on as if they were not there.
fn bad_records_never_stop_the_others(tag: &str, kind: StoreKind) {
    let mut lab = lab_of(tag, 2, kind);
    let node0_ip = lab.nodes[0].ip.clone();
    lab.put_raw("10.244.200.0-24", b"{ this is not json");
    // a record under the key of another subnet: it names node 0's subnet, to steal its route
    let stolen = lab.nodes[0].subnet().unwrap();
    lab.put_raw("10.244.201.0-24", &lease(&stolen, "thief", "192.168.50.77"));
    lab.put_raw(
        "10.244.202.7-24",
        &lease("10.244.202.0/24", "hostbits", "192.168.50.78"),
    );
    lab.put_raw("10.99.0.0-24", &lease("10.99.0.0/24", "outside", "192.168.50.79"));
    lab.put_raw(
        "10.244.204.0-24",
        &lease("10.244.204.0/24", "net", "192.168.50.0"),
    );
    lab.put_raw(
        "10.244.205.0-24",
        &lease("10.244.205.0/24", "bcast", "192.168.50.255"),
    );
    lab.put_raw("10.244.206.0-24", &lease("10.244.206.0/24", "loop", "127.0.0.1"));
    lab.put_raw("10.244.207.0-24", &lease("10.244.207.0/24", "ghost", &node0_ip));
    lab.put_raw(
        "10.244.208.0-23",
        &lease("10.244.208.0/23", "wide", "192.168.50.80"),
    );
    let mut expected = 9;
    if kind == StoreKind::File {
        let dir = lab.store_dir();
        std::fs::write(dir.join("README"), "stray").unwrap();
        std::fs::create_dir(dir.join("10.244.210.0-24")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.join("10.244.211.0-24")).unwrap();
        expected += 3;
    }
    // a node that joins now gets a subnet at once, and not one of the blocked ones
    let i = lab.add_node();
    lab.start(i);
    all_converge(&lab);
    // A few resyncs. To the other nodes, the lease at node 0's address is a second subnet of
    // node 0's.
    std::thread::sleep(Duration::from_millis(2500));
    for n in 0..3 {
        let table = lab.nodes[n].route_table();
        let want = if n == 0 { 2 } else { 3 };
        assert_eq!(
            table.lines().count(),
            want,
            "node {n} routes a bad record: {table}"
        );
        assert!(
            !table.contains("192.168.50.77"),
            "node {n} rerouted a stolen subnet: {table}"
        );
    }
    assert_eq!(lab.metric(0, "cbrnet_lease_records_invalid"), expected as f64);
    let log = lab.nodes[0].log();
    for key in [
        "10.244.200.0-24",
        "10.244.201.0-24",
        "10.99.0.0-24",
        "10.244.206.0-24",
    ] {
        assert_eq!(
            log.matches(&format!("skipped: store entry {key}")).count()
                + log.matches(&format!("skipped: lease {key}")).count(),
            1,
            "{key} not logged exactly once:\n{log}"
        );
    }
    assert_eq!(log.matches("node IP 192.168.50.255").count(), 1, "{log}");
    assert!(log.contains("this node's own address"), "{log}");
}

#[test]
fn bad_records_never_stop_the_others_file() {
    bad_records_never_stop_the_others("badrec", StoreKind::File);
}

#[test]
fn bad_records_never_stop_the_others_etcd() {
    bad_records_never_stop_the_others("badrece", StoreKind::Etcd);
}

#[test]
fn a_foreign_route_on_a_peers_prefix_is_left_alone_until_it_goes() {
    let mut lab = lab_of("foreign", 1, StoreKind::File);
    // node 1 will get the next subnet; someone has a route there already
    let next = "10.244.1.0/24";
    lab.nodes[0].node.ns.ok(&[
        "ip",
        "route",
        "add",
        next,
        "via",
        "192.168.50.99",
        "proto",
        "static",
    ]);
    let i = lab.add_node();
    lab.start(i);
    assert_eq!(lab.nodes[i].subnet().unwrap(), next);
    std::thread::sleep(Duration::from_millis(2500));
    let r = lab.nodes[0].node.ns.ok(&["ip", "route", "show", next]);
    assert!(
        r.contains("via 192.168.50.99") && r.contains("proto static"),
        "{r}"
    );
    assert_eq!(lab.metric(0, "cbrnet_route_conflicts"), 1.0);
    assert_eq!(lab.nodes[0].log().matches("route conflict").count(), 1);
    // it goes: ours comes in at once
    lab.nodes[0].node.ns.ok(&["ip", "route", "del", next]);
    let took = lab.wait_routes(0, Duration::from_millis(900), |t| {
        t.contains(&format!("{next} via 192.168.50.11"))
    });
    assert!(took.is_some(), "{}", lab.nodes[0].route_table());
}

#[test]
fn drift_of_the_node_set_up_is_repaired() {
    let mut lab = Lab::new("drift", StoreKind::File);
    lab.add_node();
    lab.add_node();
    lab.nodes[0].flags = vec!["--ip-masq".into()];
    lab.start(0);
    lab.start(1);
    let ns = &lab.nodes[0].node.ns;
    let subnet = lab.nodes[0].subnet().unwrap();
    let gw = subnet.replace(".0/24", ".1/24");
    let has_gw = |l: &Lab| {
        l.nodes[0]
            .node
            .ns
            .run(&["ip", "-4", "addr", "show", "dev", "cbr0"])
            .stdout
            .windows(gw.len())
            .any(|w| w == gw.as_bytes())
    };
    // events: well under a second
    ns.ok(&["ip", "link", "del", "cbr0"]);
    assert!(
        lab.wait_for(Duration::from_millis(900), has_gw),
        "bridge not back"
    );
    ns.ok(&["ip", "addr", "flush", "dev", "cbr0"]);
    assert!(
        lab.wait_for(Duration::from_millis(900), has_gw),
        "gateway not back"
    );
    ns.ok(&["ip", "addr", "add", "10.244.99.1/24", "dev", "cbr0"]);
    let stale_gone = |l: &Lab| {
        !l.nodes[0]
            .node
            .ns
            .ok(&["ip", "-4", "addr", "show", "dev", "cbr0"])
            .contains("10.244.99.1")
    };
    assert!(
        lab.wait_for(Duration::from_millis(900), stale_gone),
        "stale gateway stays"
    );
    // the resync catches the rest
    std::fs::remove_file(lab.nodes[0].node.subnet_file()).unwrap();
    ns.ok(&["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
    ns.ok(&["nft", "delete", "table", "inet", "cbrnet_routed"]);
    let repaired = |l: &Lab| {
        let ns = &l.nodes[0].node.ns;
        l.nodes[0].subnet().is_some()
            && ns.ok(&["sysctl", "-n", "net.ipv4.ip_forward"]).trim() == "1"
            && ns
                .run(&["nft", "list", "table", "inet", "cbrnet_routed"])
                .status
                .success()
    };
    assert!(
        lab.wait_for(Duration::from_secs(3), repaired),
        "{}",
        lab.nodes[0].log()
    );
    // (counted once the repair is done, just after what it repaired shows)
    let counted = |l: &Lab| l.metric(0, "cbrnet_node_repairs_total") >= 6.0;
    assert!(
        lab.wait_for(Duration::from_secs(2), counted),
        "{}",
        lab.nodes[0].log()
    );
    // node 1 never noticed
    assert!(lab.routes_complete(1));
}

#[test]
fn a_node_reasserts_its_own_lease_and_nobody_takes_it_meanwhile() {
    let mut lab = lab_of("clock", 2, StoreKind::File);
    let subnet = lab.nodes[1].subnet().unwrap();
    let key = subnet.replace('/', "-");
    // its record looks expired (a clock jumped somewhere), then a node joins
    lab.put_raw(
        &key,
        &json!({"subnet": subnet, "nodeName": "node-1", "nodeIP": "192.168.50.11", "expires": 1})
            .to_string()
            .into_bytes(),
    );
    let i = lab.add_node();
    lab.start(i);
    assert_ne!(
        lab.nodes[i].subnet().unwrap(),
        subnet,
        "the newcomer took a live node's subnet"
    );
    let renewed = |l: &Lab| {
        l.leases()
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["nodeName"] == "node-1" && x["expired"] == false && x["subnet"] == subnet.as_str())
    };
    assert!(
        lab.wait_for(Duration::from_secs(3), renewed),
        "{}",
        lab.nodes[1].log()
    );
    // node 0 leaves, so a subnet below node 1's is free; then node 1's record vanishes: the
    // record comes back within a resync, for the same subnet (its pods live there)
    lab.stop(0);
    lab.routed_cli(&["release", "--node-name", "node-0"]);
    std::fs::remove_file(lab.store_dir().join(&key)).unwrap();
    assert!(
        lab.wait_for(Duration::from_secs(3), renewed),
        "{}",
        lab.nodes[1].log()
    );
    assert!(lab.nodes[1].log().contains("re-asserting"));
    assert_eq!(lab.nodes[1].subnet().unwrap(), subnet);
    // its record is overwritten by something that is no lease: it keeps the subnet, says so
    // once, and writes the record again once the entry is gone
    lab.put_raw(&key, b"{not json");
    lab.expect_logged(1, Duration::from_secs(3), "is not a valid lease");
    std::thread::sleep(Duration::from_millis(2500)); // a few resyncs
    let log = lab.nodes[1].log();
    assert_eq!(log.matches("is not a valid lease").count(), 1, "{log}");
    assert_eq!(lab.nodes[1].subnet().unwrap(), subnet);
    std::fs::remove_file(lab.store_dir().join(&key)).unwrap();
    assert!(
        lab.wait_for(Duration::from_secs(3), renewed),
        "{}",
        lab.nodes[1].log()
    );
    lab.start(0);
    all_converge(&lab);
}

fn one_node_name_one_daemon(tag: &str, kind: StoreKind) {
    let mut lab = Lab::new(tag, kind);
    for _ in 0..3 {
        lab.add_node();
    }
    lab.nodes[0].flags = vec!["--lease-ttl".into(), "3s".into()];
    lab.start(0);
    lab.start(1);
    let subnet = lab.nodes[0].subnet().unwrap();
    let via_0 = format!("{subnet} via {}", lab.nodes[0].ip);
    assert!(lab
        .wait_routes(1, Duration::from_secs(2), |t| t.contains(&via_0))
        .is_some());
    // another machine starts a daemon under node 0's name
    lab.nodes[2].name = "node-0".into();
    lab.nodes[2].flags = vec!["--lease-ttl".into(), "3s".into()];
    lab.spawn(2);
    std::thread::sleep(Duration::from_secs(2));
    assert!(lab.nodes[2].subnet().is_none(), "the impostor set up a subnet");
    assert!(
        lab.nodes[2].log().contains("held by another live cbrnet-routed"),
        "{}",
        lab.nodes[2].log()
    );
    assert!(lab.nodes[1].route_table().contains(&via_0), "node 0 was rerouted");
    // node 0's daemon dies: after the grace the other daemon takes the name, and the routes move
    let mut d = lab.nodes[0].daemon.take().unwrap();
    d.kill().unwrap();
    d.wait().unwrap();
    let via_2 = format!("{subnet} via {}", lab.nodes[2].ip);
    let took = lab.wait_routes(1, Duration::from_secs(12), |t| t.contains(&via_2));
    assert!(
        took.is_some(),
        "{}\n{}",
        lab.nodes[1].route_table(),
        lab.nodes[2].log()
    );
    // (its record moves first, its node's set-up follows)
    let published = |l: &Lab| l.nodes[2].subnet().as_deref() == Some(subnet.as_str());
    assert!(
        lab.wait_for(Duration::from_secs(5), published),
        "{}",
        lab.nodes[2].log()
    );
}

#[test]
fn one_node_name_one_daemon_file() {
    one_node_name_one_daemon("onename", StoreKind::File);
}

#[test]
fn one_node_name_one_daemon_etcd() {
    one_node_name_one_daemon("onenamee", StoreKind::Etcd);
}

/// A daemon stopped past its TTL whose name another daemon took meanwhile says it is not fine
/// once it runs again, for as long as the other holds the name (its set-up still succeeds).
#[test]
fn a_daemon_whose_name_was_taken_over_is_unhealthy() {
    let mut lab = Lab::new("takenover", StoreKind::File);
    for _ in 0..3 {
        lab.add_node();
    }
    for i in 0..2 {
        lab.nodes[i].flags = vec!["--lease-ttl".into(), "3s".into()];
        lab.start(i);
    }
    assert!(lab.wait_for(Duration::from_secs(5), |l| l.http_get(0, "/healthz").0 == 200));
    let subnet = lab.nodes[0].subnet().unwrap();
    let pid = nix::unistd::Pid::from_raw(lab.nodes[0].daemon.as_ref().unwrap().id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    // another machine's daemon takes node 0's name once its lease has gone unrenewed
    lab.nodes[2].name = "node-0".into();
    lab.nodes[2].flags = vec!["--lease-ttl".into(), "3s".into()];
    lab.spawn(2);
    let via_2 = format!("{subnet} via {}", lab.nodes[2].ip);
    assert!(
        lab.wait_routes(1, Duration::from_secs(15), |t| t.contains(&via_2))
            .is_some(),
        "{}\n{}",
        lab.nodes[1].route_table(),
        lab.nodes[2].log()
    );
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let taken = |l: &Lab| {
        let (status, body) = l.http_get(0, "/healthz");
        status == 503 && body.contains("held by another")
    };
    assert!(
        lab.wait_for(Duration::from_secs(5), taken),
        "{:?}\n{}",
        lab.http_get(0, "/healthz"),
        lab.nodes[0].log()
    );
    // it stays so across its renewals and set-ups
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        taken(&lab),
        "{:?}\n{}",
        lab.http_get(0, "/healthz"),
        lab.nodes[0].log()
    );
}

#[test]
fn a_second_daemon_on_the_same_node_waits_for_the_first() {
    let mut lab = lab_of("twice", 1, StoreKind::File);
    let mut first = cbrnet_tests::KillOnDrop(lab.nodes[0].daemon.take().unwrap());
    lab.spawn(0);
    std::thread::sleep(Duration::from_millis(1500));
    let log = lab.nodes[0].log();
    assert!(log.contains("another cbrnet-routed runs on this node"), "{log}");
    // the first stops: the second takes over the node, with the same subnet
    let before = lab.nodes[0].subnet().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    first.0.wait().unwrap();
    assert!(lab.wait_for(Duration::from_secs(5), |l| l.nodes[0]
        .log()
        .matches("lease held")
        .count()
        == 2));
    assert_eq!(lab.nodes[0].subnet().unwrap(), before);
}

#[test]
fn errors_that_retrying_cannot_fix_exit_2_and_write_nothing() {
    let ns = Netns::new("badflags");
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let subnet_file = dir.path().join("run").join("subnet.json");
    let base = |extra: &[&str]| -> Vec<String> {
        let mut v = cbrnet_tests::node_flags(&subnet_file);
        if !extra.contains(&"--store") {
            v.extend(["--store".to_string(), format!("file:{}", store.display())]);
        }
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    for (extra, flag) in [
        (&["--store", "file:relative/dir"][..], "--store"),
        (&["--store", "etcd:10.0.0.1:2379"][..], "--store"),
        (&["--store", "zookeeper:x"][..], "--store"),
        (&["--first-subnet", "10.245.0.0/24"][..], "--first-subnet"),
        (&["--last-subnet", "10.244.0.0/25"][..], "--last-subnet"),
        (&["--resync-interval", "0"][..], "--resync-interval"),
        (
            &["--resync-interval", "99999999999999999999h"][..],
            "--resync-interval",
        ),
        (&["--lease-ttl", "9999999999999999999h"][..], "--lease-ttl"),
        (&["--subnet-len", "33"][..], "--subnet-len"),
        (&["--node-ip", "127.0.0.1"][..], "--node-ip"),
    ] {
        let args = base(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, err) = routed(&ns, &args);
        assert_eq!(code, 2, "{extra:?}: {err}");
        assert!(
            err.contains(flag),
            "{extra:?}: the error does not name {flag}: {err}"
        );
        assert!(
            !store.exists() && !subnet_file.exists(),
            "{extra:?} wrote something"
        );
    }
    // reading commands never create a store
    for cmd in [&["leases"][..], &["release", "--node-name", "n1"][..]] {
        let mut args: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
        args.extend(["--store".into(), format!("file:{}", store.display())]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, err) = routed(&ns, &args);
        assert_eq!(code, 1, "{cmd:?}: {err}");
        assert!(err.contains("no lease store"), "{err}");
        assert!(!store.exists(), "{cmd:?} created the store");
    }
}

#[test]
fn a_missing_node_ip_is_reported_until_it_appears() {
    let mut lab = Lab::new("noip", StoreKind::File);
    let i = lab.add_node();
    lab.nodes[i].ip = "192.168.50.200".into();
    lab.spawn(i);
    lab.expect_logged(i, Duration::from_secs(5), "on no local interface");
    let (status, body) = lab.http_get(i, "/healthz");
    assert_eq!(status, 503);
    assert!(body.contains("--node-ip"), "{body}");
    assert!(lab.nodes[i].subnet().is_none());
    lab.nodes[i]
        .node
        .ns
        .ok(&["ip", "addr", "add", "192.168.50.200/24", "dev", "eth0"]);
    assert!(lab.wait_for(Duration::from_secs(5), |l| l.nodes[i].subnet().is_some()));
    assert!(lab.wait_for(Duration::from_secs(3), |l| l.http_get(i, "/healthz").0 == 200));
}

/// etcd forgets a record one TTL after its last renewal: a node down longer than that comes back
/// to the subnet it last published (its bridge, file and pods still name it), not to the lowest
/// free one.
#[test]
fn a_node_down_longer_than_its_ttl_comes_back_to_its_subnet() {
    let mut lab = Lab::new("ttlback", StoreKind::Etcd);
    for i in 0..3 {
        lab.add_node();
        lab.nodes[i].flags = vec!["--lease-ttl".into(), "3s".into()];
        lab.start(i);
    }
    let sub: Vec<String> = (0..3).map(|i| lab.nodes[i].subnet().unwrap()).collect();
    // node 0 is decommissioned: the lowest subnet is free; node 2 goes down past its TTL
    lab.stop(0);
    lab.routed_cli(&["release", "--node-name", "node-0"]);
    lab.stop(2);
    assert!(
        lab.wait_for(Duration::from_secs(10), |l| {
            let leases = l.leases();
            leases.as_array().unwrap().len() == 1
        }),
        "etcd kept the records: {}",
        lab.leases()
    );
    lab.start(2);
    assert_eq!(lab.nodes[2].subnet().unwrap(), sub[2], "{}", lab.nodes[2].log());
    let held: Vec<String> = lab
        .leases()
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["subnet"].as_str().unwrap().to_string())
        .collect();
    assert!(held.contains(&sub[2]) && !held.contains(&sub[0]), "{held:?}");
}

/// `release` of a node whose daemon still runs does not pretend: the daemon writes the lease
/// back at once, and `release` says so and exits non-zero.
#[test]
fn releasing_a_running_node_says_its_daemon_wrote_the_lease_back() {
    let lab = lab_of("relrun", 2, StoreKind::File);
    let sub = lab.nodes[1].subnet().unwrap();
    let (code, err) = routed(
        &lab.nodes[0].node.ns,
        &["release", "--node-name", "node-1", "--store", &lab.store],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("still running") && err.contains(&sub), "{err}");
    assert!(lab.leases().to_string().contains(&sub));
    // stopped first, it is released
    let mut lab = lab;
    lab.stop(1);
    lab.routed_cli(&["release", "--node-name", "node-1"]);
    assert!(!lab.leases().to_string().contains(&sub));
}

/// Our nexthop objects are numbered by their gateway's address: an id another program's
/// nexthop holds is never taken over; the peer behind it is routed without a nexthop object.
#[test]
fn a_foreign_nexthop_with_our_id_is_left_alone() {
    let mut lab = Lab::new("nhforeign", StoreKind::File);
    lab.add_node();
    lab.add_node();
    let peer_ip: std::net::Ipv4Addr = lab.nodes[1].ip.parse().unwrap();
    let id = u32::from(peer_ip).to_string();
    let ns = &lab.nodes[0].node.ns;
    ns.ok(&[
        "ip",
        "nexthop",
        "add",
        "id",
        &id,
        "via",
        "192.168.50.99",
        "dev",
        "eth0",
    ]);
    lab.start(0);
    lab.start(1);
    let sub1 = lab.nodes[1].subnet().unwrap();
    assert!(
        lab.wait_routes(0, Duration::from_secs(3), |t| t
            .contains(&format!("{sub1} via {peer_ip}")))
            .is_some(),
        "{}\n{}",
        lab.nodes[0].route_table(),
        lab.nodes[0].log()
    );
    let nh = lab.nodes[0].node.ns.ok(&["ip", "nexthop", "show", "id", &id]);
    assert!(
        nh.contains("via 192.168.50.99") && !nh.contains("proto 157"),
        "{nh}"
    );
    assert!(
        lab.nodes[0].log().contains("is another program's"),
        "{}",
        lab.nodes[0].log()
    );
}

/// A nexthop of ours the daemon did not make itself (another process of ours, here made by hand
/// with our protocol while the daemon is stopped) is taken back, not judged another program's.
#[test]
fn a_nexthop_of_ours_made_meanwhile_is_taken_back() {
    let mut lab = Lab::new("nhours", StoreKind::File);
    for _ in 0..3 {
        lab.add_node();
    }
    lab.start(0);
    lab.start(1);
    let sub1 = lab.nodes[1].subnet().unwrap();
    let ip1 = lab.nodes[1].ip.clone();
    assert!(
        lab.wait_routes(0, Duration::from_secs(5), |t| t
            .contains(&format!("{sub1} via {ip1}")))
            .is_some(),
        "{}",
        lab.nodes[0].log()
    );
    lab.freeze(0);
    let ip2: std::net::Ipv4Addr = lab.nodes[2].ip.parse().unwrap();
    let id = u32::from(ip2).to_string();
    lab.nodes[0].node.ns.ok(&[
        "ip",
        "nexthop",
        "add",
        "id",
        &id,
        "via",
        &ip2.to_string(),
        "dev",
        "eth0",
        "proto",
        "157",
    ]);
    lab.start(2);
    lab.thaw(0);
    let sub2 = lab.nodes[2].subnet().unwrap();
    assert!(
        lab.wait_for(Duration::from_secs(5), |l| l.nodes[0]
            .route_table_raw()
            .lines()
            .any(
                |l| l.starts_with(&format!("{sub2} ")) && l.contains(&format!("nhid {id}"))
            )),
        "{}\n{}",
        lab.nodes[0].route_table_raw(),
        lab.nodes[0].log()
    );
    assert!(
        !lab.nodes[0].log().contains("is another program's"),
        "{}",
        lab.nodes[0].log()
    );
}

/// A restarted daemon recognises the nexthops of its last run as its own, and a nexthop no route
/// goes through any more (its peer released) is deleted.
#[test]
fn our_nexthops_are_kept_across_a_restart_and_go_with_their_peer() {
    let mut lab = Lab::new("nhstale", StoreKind::File);
    lab.add_node();
    lab.add_node();
    lab.start(0);
    lab.start(1);
    let ip1: std::net::Ipv4Addr = lab.nodes[1].ip.parse().unwrap();
    let id = u32::from(ip1).to_string();
    let sub1 = lab.nodes[1].subnet().unwrap();
    let through = |lab: &Lab| {
        lab.nodes[0]
            .route_table_raw()
            .lines()
            .any(|l| l.starts_with(&format!("{sub1} ")) && l.contains(&format!("nhid {id}")))
    };
    assert!(
        lab.wait_for(Duration::from_secs(5), through),
        "{}",
        lab.nodes[0].route_table_raw()
    );
    lab.stop(0);
    lab.start(0);
    assert!(
        lab.wait_for(Duration::from_secs(5), through),
        "{}",
        lab.nodes[0].route_table_raw()
    );
    assert!(
        !lab.nodes[0].log().contains("is another program's"),
        "{}",
        lab.nodes[0].log()
    );
    // the peer goes: its route and then its nexthop
    lab.stop(1);
    lab.routed_cli(&["release", "--node-name", "node-1"]);
    let ns = &lab.nodes[0].node.ns;
    assert!(
        lab.wait_for(Duration::from_secs(5), |_| !ns
            .ok(&["ip", "nexthop", "show"])
            .contains(&format!("id {id} "))),
        "{}\n{}",
        ns.ok(&["ip", "nexthop", "show"]),
        lab.nodes[0].log()
    );
}

/// A set-up that keeps failing (the bridge's name taken by a link that is no bridge) makes the
/// node unhealthy with the reason, until the set-up succeeds.
#[test]
fn a_failing_set_up_is_reported_until_it_succeeds() {
    let mut lab = Lab::new("setupfail", StoreKind::File);
    let i = lab.add_node();
    lab.nodes[i].node.ns.add_veth("cbr0", "cbr0-peer");
    lab.spawn(i);
    lab.expect_logged(
        i,
        Duration::from_secs(5),
        "setting the node up: cbr0 exists and is not a bridge",
    );
    assert!(
        lab.wait_for(Duration::from_secs(5), |l| l
            .http_get(i, "/healthz")
            .1
            .contains("set-up fails")),
        "{}\n{}",
        lab.http_get(i, "/healthz").1,
        lab.nodes[i].log()
    );
    assert_eq!(lab.http_get(i, "/healthz").0, 503);
    lab.nodes[i].node.ns.ok(&["ip", "link", "del", "cbr0"]);
    assert!(
        lab.wait_for(Duration::from_secs(10), |l| l.http_get(i, "/healthz").0 == 200),
        "{}\n{}",
        lab.http_get(i, "/healthz").1,
        lab.nodes[i].log()
    );
    let d = lab.nodes[i].node.ns.ok(&["ip", "-d", "link", "show", "cbr0"]);
    assert!(d.contains("bridge"), "{d}");
}

#[test]
fn a_closed_stderr_never_kills_the_daemon() {
    let lab = Lab::new("nostderr", StoreKind::File);
    let mut lab = lab;
    let i = lab.add_node();
    let n = &lab.nodes[i];
    let mut cmd = Command::new(bin("cbrnet-routed"));
    cmd.args([
        "--node-name",
        &n.name,
        "--node-ip",
        &n.ip,
        "--cluster-cidr",
        "10.244.0.0/16",
    ])
    .args(["--store", &lab.store, "--resync-interval", "200ms"])
    .arg("--subnet-file")
    .arg(n.node.subnet_file())
    .arg("--cni-conf-dir")
    .arg(n.node.dir.path())
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    n.node.ns.enter(&mut cmd);
    // SAFETY: close(2) is async-signal-safe; the child has no other use for fd 2.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            nix::libc::close(2);
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    cbrnet_tests::register_daemon(child.id());
    lab.nodes[i].daemon = Some(child);
    assert!(lab.wait_for(Duration::from_secs(10), |l| l.nodes[i].subnet().is_some()));
    // it keeps logging (routes, resyncs) into the void, and lives on
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        lab.nodes[i]
            .daemon
            .as_mut()
            .unwrap()
            .try_wait()
            .unwrap()
            .is_none(),
        "the daemon died"
    );
    assert_eq!(lab.http_get(i, "/healthz").0, 200);
}

#[test]
fn the_daemon_reclaims_addresses_of_pods_that_vanished() {
    let mut lab = lab_of("bgreclaim", 1, StoreKind::File);
    lab.add_pod(0);
    lab.add_pod(0);
    // one pod's namespace goes away without DEL (its runtime never calls DEL)
    let (gone, _, _) = lab.nodes[0].pods.remove(0);
    drop(gone);
    let reserved = |l: &Lab| l.nodes[0].node.reservations("labnet").len();
    assert!(
        lab.wait_for(Duration::from_secs(8), |l| reserved(l) == 1),
        "{}",
        lab.nodes[0].log()
    );
    let counted = |l: &Lab| l.metric(0, "cbrnet_addresses_reclaimed_total") == 1.0;
    assert!(lab.wait_for(Duration::from_secs(2), counted));
    assert!(lab.nodes[0].log().contains("its pod is gone"));
}

#[test]
fn a_plugin_holding_the_ipam_lock_never_stalls_the_daemon() {
    let mut lab = lab_of("stucklock", 2, StoreKind::File);
    lab.add_pod(0);
    let subnet = lab.nodes[1].subnet().unwrap();
    assert!(lab.wait_for(Duration::from_secs(3), |l| l.routes_complete(0)));
    // What a plugin stopped in the middle of an ADD holds: the network's lock, for as long as
    // it pleases.
    let lock = std::fs::File::options()
        .write(true)
        .open(lab.nodes[0].node.data_dir().join("labnet").join("lock"))
        .unwrap();
    let held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).unwrap();
    // resyncs pass, each with a reclaim sweep that must not wait for the lock
    std::thread::sleep(Duration::from_millis(2500));
    lab.nodes[0].node.ns.ok(&["ip", "route", "del", &subnet]);
    assert!(
        lab.wait_for(Duration::from_secs(1), |l| l.routes_complete(0)),
        "the route was not restored within 1 s while the lock was held:\n{}",
        lab.nodes[0].log()
    );
    assert_eq!(lab.http_get(0, "/healthz").0, 200);
    drop(held);
}

#[test]
fn a_daemon_never_reclaims_the_pods_of_another_nodes_network() {
    let mut lab = lab_of("noreclaim", 2, StoreKind::File);
    lab.add_pod(0);
    lab.add_pod(0);
    let reserved = |l: &Lab| l.nodes[0].node.reservations("labnet").len();
    assert_eq!(reserved(&lab), 2);
    // Old enough to be reclaimed (the lab's reclaimAfter is 2 s) by anyone who thought them gone.
    std::thread::sleep(Duration::from_millis(2500));
    // node 1 reads node 0's network too, as a second daemon on one machine sharing a config
    // directory would; none of node 0's veths is in node 1's namespace
    let conf = serde_json::json!({
        "cniVersion": "1.1.0", "name": "labnet",
        "plugins": [{"type": "cbrnet", "ipam": lab.pod_conf(0)["ipam"]}],
    });
    let file = lab.nodes[1].node.dir.path().join("net.d/20-node0.conflist");
    std::fs::write(&file, conf.to_string()).unwrap();
    assert!(
        lab.wait_for(Duration::from_secs(10), |l| l.nodes[1]
            .log()
            .contains("reclaim leaves alone")),
        "{}",
        lab.nodes[1].log()
    );
    assert!(lab.nodes[1].log().contains("is not the one this daemon writes"));
    assert_eq!(reserved(&lab), 2, "{}", lab.nodes[1].log());
    assert!(!lab.nodes[1].log().contains("its pod is gone"));
    assert_eq!(lab.metric(1, "cbrnet_addresses_reclaimed_total"), 0.0);
    // the pods still talk across nodes
    lab.add_pod(1);
    assert!(lab.wait_for(Duration::from_secs(5), |l| l.routes_complete(0)
        && l.routes_complete(1)));
    assert_eq!(lab.unreachable_pairs(), Vec::<(String, String)>::new());
}

#[test]
fn routes_come_back_when_the_interface_flaps() {
    let lab = lab_of("flap", 2, StoreKind::File);
    assert!(lab.wait_for(Duration::from_secs(2), |l| l.routes_complete(0)));
    let ns = &lab.nodes[0].node.ns;
    ns.ok(&["ip", "link", "set", "eth0", "down"]);
    // the kernel drops the routes through a link that goes down
    assert!(lab.wait_for(Duration::from_secs(2), |l| l.nodes[0].route_table().is_empty()));
    std::thread::sleep(Duration::from_millis(500));
    ns.ok(&["ip", "link", "set", "eth0", "up"]);
    assert!(
        lab.wait_for(Duration::from_millis(900), |l| l.routes_complete(0)),
        "not back within 1 s of the link coming up: {}",
        lab.nodes[0].route_table()
    );
}

/// A link is judged by what it carries, not by its name: an underlay link named like a pod's
/// port (`veth...`) that flaps gets its routes back at once, without waiting for a resync.
#[test]
fn an_underlay_named_like_a_pod_port_gets_its_routes_back_after_a_flap() {
    let mut lab = Lab::new("vethup", StoreKind::File);
    lab.resync_interval = "60s".into();
    lab.backend = Some("host-gw".into());
    for _ in 0..2 {
        lab.add_node();
    }
    let ns = &lab.nodes[0].node.ns;
    ns.ok(&["ip", "link", "set", "eth0", "down"]);
    ns.ok(&["ip", "link", "set", "eth0", "name", "vethup0"]);
    ns.ok(&["ip", "link", "set", "vethup0", "up"]);
    lab.start(0);
    lab.start(1);
    let via = format!("{} via 192.168.50.11", lab.nodes[1].subnet().unwrap());
    assert!(lab.wait_for(Duration::from_secs(3), |l| l.nodes[0]
        .route_table()
        .contains(&via)));
    let ns = &lab.nodes[0].node.ns;
    ns.ok(&["ip", "link", "set", "vethup0", "down"]);
    assert!(lab.wait_for(Duration::from_secs(2), |l| !l.nodes[0]
        .route_table()
        .contains(&via)));
    ns.ok(&["ip", "link", "set", "vethup0", "up"]);
    assert!(
        lab.wait_for(Duration::from_secs(2), |l| l.nodes[0]
            .route_table()
            .contains(&via)),
        "not back within 2 s: {}\n{}",
        lab.nodes[0].route_table(),
        lab.nodes[0].log()
    );
}

#[test]
fn routes_the_kernel_drops_silently_come_back_without_waiting_for_a_resync() {
    // Only the kernel's events can bring them back in time: no resync comes for a minute.
    let mut lab = Lab::new("silent", StoreKind::File);
    lab.resync_interval = "60s".into();
    // host-gw: its peer's route goes with the address and stays gone (auto would route the
    // peer through VXLAN once it is no longer on-link).
    lab.backend = Some("host-gw".into());
    for _ in 0..2 {
        let i = lab.add_node();
        lab.start(i);
    }
    let subnet = lab.nodes[1].subnet().unwrap();
    let via = format!("{subnet} via 192.168.50.11");
    let back = |lab: &Lab, what: &str| {
        assert!(
            lab.wait_for(Duration::from_secs(2), |l| l.nodes[0]
                .route_table()
                .contains(&via)),
            "{what}: not back within 2 s: {}\n{}",
            lab.nodes[0].route_table(),
            lab.nodes[0].log()
        );
    };
    back(&lab, "at start");
    let ns = &lab.nodes[0].node.ns;
    // the link flaps: its routes go without a RTM_DELROUTE each
    ns.ok(&["ip", "link", "set", "eth0", "down"]);
    assert!(lab.wait_for(Duration::from_secs(2), |l| l.nodes[0].route_table().is_empty()));
    ns.ok(&["ip", "link", "set", "eth0", "up"]);
    back(&lab, "after a link flap");
    // the address the peers are reached through goes and comes back
    ns.ok(&["ip", "addr", "del", "192.168.50.10/24", "dev", "eth0"]);
    assert!(lab.wait_for(Duration::from_secs(2), |l| l.nodes[0].route_table().is_empty()));
    ns.ok(&["ip", "addr", "add", "192.168.50.10/24", "dev", "eth0"]);
    back(&lab, "after the node's address came back");
    // the nexthop object the route goes through is deleted (where the kernel has them)
    let nexthops = ns.ok(&["ip", "nexthop", "show"]);
    if let Some(id) = nexthops.split_whitespace().nth(1) {
        ns.ok(&["ip", "nexthop", "del", "id", id]);
        back(&lab, "after its nexthop was deleted");
    }
    // a route of another protocol takes the place of ours: it is left alone, and said once
    ns.ok(&[
        "ip",
        "route",
        "replace",
        &subnet,
        "via",
        "192.168.50.11",
        "proto",
        "static",
    ]);
    assert!(lab.wait_for(Duration::from_secs(2), |l| l.nodes[0]
        .log()
        .contains("held by a route of another protocol")));
    std::thread::sleep(Duration::from_millis(500));
    let shown = ns.ok(&["ip", "route", "show", &subnet]);
    assert!(shown.contains("proto static"), "{shown}");
    assert!(lab.nodes[0].route_table().is_empty());
    // and when it goes, ours comes back
    ns.ok(&["ip", "route", "del", &subnet, "proto", "static"]);
    back(&lab, "after the foreign route went");
}
