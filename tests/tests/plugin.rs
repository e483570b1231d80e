//! `cbrnet` end to end: real namespaces, real veths, real traffic.

use cbrnet_tests::{result_ip, Call, Netns, Node};
use serde_json::{json, Value};

const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

fn with_prev(conf: &Value, prev: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = prev.clone();
    c
}

#[test]
fn add_check_del_in_every_version_and_pods_talk() {
    for (i, v) in VERSIONS.iter().enumerate() {
        let node = Node::new("ver");
        let subnet = format!("10.244.{}.0/24", 10 + i);
        let conf = node.conf(v, &subnet);
        let pods = [Netns::new("ver-pod"), Netns::new("ver-pod")];
        let ids = ["pod-a", "pod-b"];
        let mut results = Vec::new();
        for (p, id) in pods.iter().zip(ids) {
            let r = Call::new("ADD", id, p.path(), "eth0")
                .run(&node.ns, &conf)
                .expect_ok();
            assert_eq!(r["cniVersion"], *v);
            // bridge, host veth, pod interface; ips point at the pod interface
            let ifs = r["interfaces"].as_array().unwrap();
            assert_eq!(ifs.len(), 3);
            assert_eq!(ifs[0]["name"], "cbr0");
            assert_eq!(ifs[2]["name"], "eth0");
            assert_eq!(ifs[2]["sandbox"], p.path());
            assert_eq!(r["ips"][0]["interface"], 2);
            let gw = format!("10.244.{}.1", 10 + i);
            assert_eq!(r["ips"][0]["gateway"], gw.as_str());
            if v.starts_with('0') {
                assert_eq!(r["ips"][0]["version"], "4", "{v} results carry ips[].version");
                assert!(ifs[2].get("mtu").is_none(), "{v} results have no interface mtu");
            } else {
                assert!(
                    r["ips"][0].get("version").is_none(),
                    "{v} results have no ips[].version"
                );
            }
            // the pod really has it
            let addr = p.ok(&["ip", "-o", "-4", "addr", "show", "dev", "eth0"]);
            assert!(addr.contains(r["ips"][0]["address"].as_str().unwrap()), "{addr}");
            assert!(p
                .ok(&["ip", "route", "show", "default"])
                .contains(&format!("via {gw}")));
            results.push(r);
        }
        let (a, b) = (result_ip(&results[0]), result_ip(&results[1]));
        assert_ne!(a, b);
        assert!(pods[0].can_ping(&b), "{v}: pod a cannot reach pod b");
        assert!(pods[1].can_ping(&a), "{v}: pod b cannot reach pod a");
        assert!(
            pods[0].can_ping(&format!("10.244.{}.1", 10 + i)),
            "{v}: pod a cannot reach the gateway"
        );

        if v != &"0.3.0" && v != &"0.3.1" {
            for ((p, id), r) in pods.iter().zip(ids).zip(&results) {
                Call::new("CHECK", id, p.path(), "eth0")
                    .run(&node.ns, &with_prev(&conf, r))
                    .expect_ok();
            }
        } else {
            let out = Call::new("CHECK", ids[0], pods[0].path(), "eth0")
                .run(&node.ns, &with_prev(&conf, &results[0]));
            assert!(!out.ok);
            assert_eq!(out.code(), 1, "CHECK is not in {v}");
        }
        for (p, id) in pods.iter().zip(ids) {
            Call::new("DEL", id, p.path(), "eth0")
                .run(&node.ns, &conf)
                .expect_ok();
            assert_eq!(p.links(), ["lo"], "{v}: eth0 left in the pod");
        }
        assert!(node.veths().is_empty(), "{v}: veths left: {:?}", node.veths());
        assert!(node.reservations("testnet").is_empty());
    }
}

#[test]
fn del_is_idempotent_and_always_releases() {
    let node = Node::new("del");
    let conf = node.conf("1.1.0", "10.244.20.0/24");
    let pod = Netns::new("del-pod");
    Call::new("ADD", "c1", pod.path(), "eth0")
        .run(&node.ns, &conf)
        .expect_ok();
    // twice
    for _ in 0..2 {
        Call::new("DEL", "c1", pod.path(), "eth0")
            .run(&node.ns, &conf)
            .expect_ok();
    }
    assert!(node.reservations("testnet").is_empty() && node.veths().is_empty());

    // without CNI_NETNS: the pair still goes (by its host end) and the address is released
    Call::new("ADD", "c2", pod.path(), "eth0")
        .run(&node.ns, &conf)
        .expect_ok();
    Call::new("DEL", "c2", "", "eth0")
        .run(&node.ns, &conf)
        .expect_ok();
    assert!(node.reservations("testnet").is_empty() && node.veths().is_empty());
    assert_eq!(pod.links(), ["lo"]);

    // after the pod namespace was deleted
    let gone = Netns::new("del-gone");
    let path = gone.path();
    Call::new("ADD", "c3", path.as_str(), "eth0")
        .run(&node.ns, &conf)
        .expect_ok();
    assert_eq!(node.reservations("testnet").len(), 1);
    drop(gone);
    Call::new("DEL", "c3", path.as_str(), "eth0")
        .run(&node.ns, &conf)
        .expect_ok();
    assert!(node.reservations("testnet").is_empty() && node.veths().is_empty());

    // a DEL for something never added
    Call::new("DEL", "never", path.as_str(), "eth0")
        .run(&node.ns, &conf)
        .expect_ok();
}

#[test]
fn gc_releases_what_is_not_valid() {
    let node = Node::new("gc");
    let conf = node.conf("1.1.0", "10.244.21.0/24");
    let pods: Vec<Netns> = (0..3).map(|_| Netns::new("gc-pod")).collect();
    for (i, p) in pods.iter().enumerate() {
        Call::new("ADD", &format!("c{i}"), p.path(), "eth0")
            .run(&node.ns, &conf)
            .expect_ok();
    }
    assert_eq!(node.reservations("testnet").len(), 3);
    // without the list of valid attachments, GC is refused and frees nothing
    let out = Call::new("GC", "dummy", "dummy", "dummy").run(&node.ns, &conf);
    assert_eq!(out.code(), 7, "{}", out.json);
    assert_eq!(node.reservations("testnet").len(), 3);
    // what does not belong in the network's directory goes too
    let dir = node.data_dir().join("testnet");
    std::os::unix::fs::symlink("not an owner", dir.join("10.244.21.200")).unwrap();
    std::fs::write(dir.join("stray"), "x").unwrap();
    std::fs::create_dir(dir.join("stray-dir")).unwrap();
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "c1", "ifname": "eth0"}]);
    Call::new("GC", "dummy", "dummy", "dummy")
        .run(&node.ns, &gc)
        .expect_ok();
    let left = node.reservations("testnet");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].1, "c1 eth0");
    for gone in ["10.244.21.200", "stray", "stray-dir"] {
        assert!(
            std::fs::symlink_metadata(dir.join(gone)).is_err(),
            "{gone} is still there"
        );
    }
    // the older key name works too
    let mut gc = conf.clone();
    gc["cni.dev/attachments"] = json!([]);
    Call::new("GC", "", "", "").run(&node.ns, &gc).expect_ok();
    assert!(node.reservations("testnet").is_empty());
    // GC is 1.1.0
    let out = Call::new("GC", "", "", "").run(&node.ns, &node.conf("1.0.0", "10.244.21.0/24"));
    assert_eq!(out.code(), 1);
}

#[test]
fn subnet_file_status_and_add() {
    let node = Node::new("status");
    let conf = json!({
        "cniVersion": "1.1.0", "name": "testnet", "type": "cbrnet",
        "ipam": {"type": "cbrnet-ipam", "subnetFile": node.subnet_file(), "dataDir": node.data_dir()},
    });
    let pod = Netns::new("status-pod");
    let out = Call::new("STATUS", "", "", "").run(&node.ns, &conf);
    assert!(!out.ok);
    assert_eq!(out.code(), 50, "{}", out.json);
    let out = Call::new("ADD", "c1", pod.path(), "eth0").run(&node.ns, &conf);
    assert_eq!(out.code(), 11, "{}", out.json);
    assert!(
        out.json["msg"].as_str().unwrap().contains("no pod subnet"),
        "{}",
        out.json
    );
    assert!(node.veths().is_empty() && !node.ns.links().contains(&"cbr0".to_string()));

    std::fs::write(
        node.subnet_file(),
        r#"{"subnet":"10.244.22.0/24","gateway":"10.244.22.1","clusterCIDR":"10.244.0.0/16","mtu":1400}"#,
    )
    .unwrap();
    Call::new("STATUS", "", "", "").run(&node.ns, &conf).expect_ok();
    let r = Call::new("ADD", "c1", pod.path(), "eth0")
        .run(&node.ns, &conf)
        .expect_ok();
    assert!(result_ip(&r).starts_with("10.244.22."));
    assert_eq!(r["interfaces"][2]["mtu"], 1400, "the subnet file's mtu applies");
    assert!(pod.ok(&["ip", "link", "show", "eth0"]).contains("mtu 1400"));
    Call::new("DEL", "c1", pod.path(), "eth0")
        .run(&node.ns, &conf)
        .expect_ok();
}

/// A dual-stack node's subnet file: each pod gets an address of each family with its gateway
/// and default route, the bridge carries both gateways, the pods reach each other on both at
/// once (no address waits for duplicate address detection), the bridge stays quiet, and CHECK
/// and DEL cover both families.
#[test]
fn a_dual_stack_subnet_file_gives_each_pod_both_families() {
    let node = Node::new("dual");
    let conf = json!({
        "cniVersion": "1.1.0", "name": "testnet", "type": "cbrnet", "ipMasq": true,
        "ipam": {"type": "cbrnet-ipam", "subnetFile": node.subnet_file(), "dataDir": node.data_dir()},
    });
    std::fs::write(
        node.subnet_file(),
        r#"{"subnet":"10.244.23.0/24","gateway":"10.244.23.1","clusterCIDR":"10.244.0.0/16",
            "ipv6Subnet":"fd00:10:244:23::/64","ipv6Gateway":"fd00:10:244:23::1",
            "ipv6ClusterCIDR":"fd00:10:244::/56"}"#,
    )
    .unwrap();
    let pods: [Netns; 2] = std::array::from_fn(|_| Netns::new("dual-pod"));
    let (mut addrs, mut results) = (Vec::new(), Vec::new());
    for (i, p) in pods.iter().enumerate() {
        let r = Call::new("ADD", &format!("c{i}"), p.path(), "eth0")
            .run(&node.ns, &conf)
            .expect_ok();
        results.push(r.clone());
        let ips: Vec<(String, String)> = r["ips"]
            .as_array()
            .unwrap()
            .iter()
            .map(|ip| {
                (
                    ip["address"].as_str().unwrap().to_string(),
                    ip["gateway"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(ips.len(), 2, "{r}");
        assert!(
            ips[0].0.starts_with("10.244.23.") && ips[0].1 == "10.244.23.1",
            "{r}"
        );
        assert!(
            ips[1].0.starts_with("fd00:10:244:23::") && ips[1].0.ends_with("/64"),
            "{r}"
        );
        assert_eq!(ips[1].1, "fd00:10:244:23::1", "{r}");
        let routes: Vec<&str> = r["routes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|rt| rt["dst"].as_str().unwrap())
            .collect();
        assert!(routes.contains(&"0.0.0.0/0") && routes.contains(&"::/0"), "{r}");
        // usable at once: never tentative
        let v6 = p.ok(&["ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global"]);
        assert!(
            v6.contains("fd00:10:244:23::") && !v6.contains("tentative"),
            "{v6}"
        );
        assert!(p
            .ok(&["ip", "-6", "route", "show", "default"])
            .contains("via fd00:10:244:23::1"));
        let host_end = r["interfaces"][1]["name"].as_str().unwrap().to_string();
        let d = node.ns.ok(&["ip", "-d", "link", "show", &host_end]);
        assert!(d.contains("addrgenmode none"), "{d}");
        addrs.push(
            ips.into_iter()
                .map(|(a, _)| a.split('/').next().unwrap().to_string())
                .collect::<Vec<_>>(),
        );
    }
    let br = node.ns.ok(&["ip", "-o", "addr", "show", "dev", "cbr0"]);
    assert!(
        br.contains("10.244.23.1/24") && br.contains("fd00:10:244:23::1/64"),
        "{br}"
    );
    assert!(node
        .ns
        .ok(&["ip", "-d", "link", "show", "cbr0"])
        .contains("mcast_snooping 0"));
    for a in &addrs[1] {
        assert!(pods[0].can_ping(a), "pod 0 cannot reach {a}");
    }
    // both gateways answer too
    assert!(pods[1].can_ping("10.244.23.1") && pods[1].can_ping("fd00:10:244:23::1"));
    let reserved = |ip: &str| {
        walk(std::path::Path::new(&node.data_dir()))
            .iter()
            .any(|f| f.ends_with(&format!("/{ip}")))
    };
    assert!(addrs.iter().flatten().all(|a| reserved(a)), "{addrs:?}");
    for (i, p) in pods.iter().enumerate() {
        Call::new("CHECK", &format!("c{i}"), p.path(), "eth0")
            .run(&node.ns, &with_prev(&conf, &results[i]))
            .expect_ok();
        Call::new("DEL", &format!("c{i}"), p.path(), "eth0")
            .run(&node.ns, &conf)
            .expect_ok();
    }
    assert!(node.veths().is_empty());
    // every reservation of both families went back
    assert!(!addrs.iter().flatten().any(|a| reserved(a)), "{addrs:?}");
}

#[test]
fn version_with_libcni_dummies() {
    let node = Node::new("version");
    let out = Call::new("VERSION", "dummy", "dummy", "dummy").run(&node.ns, &json!({"cniVersion": "1.1.0"}));
    let v = out.expect_ok();
    assert_eq!(v["cniVersion"], "1.1.0");
    assert_eq!(
        v["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
}

#[test]
fn check_notices_a_broken_pod() {
    let node = Node::new("check");
    let conf = node.conf("1.1.0", "10.244.23.0/24");
    let pod = Netns::new("check-pod");
    let r = Call::new("ADD", "c1", pod.path(), "eth0")
        .run(&node.ns, &conf)
        .expect_ok();
    let conf_prev = with_prev(&conf, &r);
    Call::new("CHECK", "c1", pod.path(), "eth0")
        .run(&node.ns, &conf_prev)
        .expect_ok();
    pod.ok(&["ip", "route", "del", "default"]);
    let out = Call::new("CHECK", "c1", pod.path(), "eth0").run(&node.ns, &conf_prev);
    assert_eq!(out.code(), 113, "{}", out.json);
    assert!(out.json["msg"].as_str().unwrap().contains("route 0.0.0.0/0"));
    pod.ok(&["ip", "addr", "flush", "dev", "eth0"]);
    let out = Call::new("CHECK", "c1", pod.path(), "eth0").run(&node.ns, &conf_prev);
    assert_eq!(out.code(), 113);
    Call::new("DEL", "c1", pod.path(), "eth0")
        .run(&node.ns, &conf)
        .expect_ok();
}

#[test]
fn requested_ip_mac_mtu_and_no_default_gateway() {
    let node = Node::new("req");
    let mut conf = node.conf("1.1.0", "10.244.24.0/24");
    conf["mtu"] = json!(1300);
    conf["isDefaultGateway"] = json!(false);
    conf["runtimeConfig"] = json!({"mac": "0a:00:00:00:00:42"});
    conf["dns"] = json!({"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]});
    let pod = Netns::new("req-pod");
    let mut call = Call::new("ADD", "c1", pod.path(), "eth0");
    call.args = "IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.244.24.77";
    let r = call.run(&node.ns, &conf).expect_ok();
    assert_eq!(result_ip(&r), "10.244.24.77");
    assert_eq!(r["interfaces"][2]["mac"], "0a:00:00:00:00:42");
    assert_eq!(r["dns"]["nameservers"][0], "10.96.0.10");
    let link = pod.ok(&["ip", "link", "show", "eth0"]);
    assert!(
        link.contains("0a:00:00:00:00:42") && link.contains("mtu 1300"),
        "{link}"
    );
    assert!(pod.ok(&["ip", "route", "show", "default"]).trim().is_empty());
    // the address is taken now
    let pod2 = Netns::new("req-pod");
    let mut call = Call::new("ADD", "c2", pod2.path(), "eth0");
    call.args = "IP=10.244.24.77";
    let out = call.run(&node.ns, &conf);
    assert_eq!(out.code(), 101, "{}", out.json);
    assert_eq!(node.reservations("testnet").len(), 1);
    assert_eq!(node.veths().len(), 1);
}

#[test]
fn repeated_add_fails_without_taking_the_first_ones_address() {
    let node = Node::new("again");
    let conf = node.conf("1.0.0", "10.244.25.0/24");
    let pod = Netns::new("again-pod");
    let r = Call::new("ADD", "c1", pod.path(), "eth0")
        .run(&node.ns, &conf)
        .expect_ok();
    let out = Call::new("ADD", "c1", pod.path(), "eth0").run(&node.ns, &conf);
    assert_eq!(out.code(), 112, "{}", out.json);
    assert_eq!(
        node.reservations("testnet"),
        [(result_ip(&r), "c1 eth0".to_string())]
    );
    assert!(pod.can_ping("10.244.25.1"));
}

#[test]
fn ip_masq_installs_one_nftables_rule() {
    let node = Node::new("masq");
    let mut conf = node.conf("1.0.0", "10.244.26.0/24");
    conf["ipMasq"] = json!(true);
    conf["clusterCIDR"] = json!("10.244.0.0/16");
    // the IPv4-only table of the same name an earlier version made goes with the first ADD
    node.ns.ok(&["nft", "add", "table", "ip", "cbrnet_testnet"]);
    node.ns.ok(&[
        "nft",
        "add chain ip cbrnet_testnet postrouting { type nat hook postrouting priority srcnat; }",
    ]);
    node.ns.ok(&[
        "nft",
        "add rule ip cbrnet_testnet postrouting ip saddr 10.244.26.0/24 masquerade",
    ]);
    let pods = [Netns::new("masq-pod"), Netns::new("masq-pod")];
    for (i, p) in pods.iter().enumerate() {
        Call::new("ADD", &format!("c{i}"), p.path(), "eth0")
            .run(&node.ns, &conf)
            .expect_ok();
    }
    assert!(!node
        .ns
        .run(&["nft", "list", "table", "ip", "cbrnet_testnet"])
        .status
        .success());
    let rules = node.ns.ok(&["nft", "list", "table", "inet", "cbrnet_testnet"]);
    assert_eq!(rules.matches("masquerade").count(), 1, "{rules}");
    assert!(
        rules.contains("ip saddr 10.244.26.0/24 ip daddr != 10.244.0.0/16 masquerade"),
        "{rules}"
    );
    // without clusterCIDR anywhere, ipMasq is a config error and nothing is left behind
    let node2 = Node::new("masq");
    let mut conf2 = node2.conf("1.0.0", "10.244.27.0/24");
    conf2["ipMasq"] = json!(true);
    let out = Call::new("ADD", "c9", pods[0].path(), "eth9").run(&node2.ns, &conf2);
    assert_eq!(out.code(), 7, "{}", out.json);
    assert!(node2.reservations("testnet").is_empty());
}

#[test]
fn chained_prev_result_is_kept() {
    let node = Node::new("chain");
    let mut conf = node.conf("1.1.0", "10.244.28.0/24");
    conf["prevResult"] = json!({
        "cniVersion": "1.1.0", "interfaces": [{"name": "dummy0"}], "ips": [],
        "dns": {"nameservers": ["1.1.1.1"]},
    });
    let pod = Netns::new("chain-pod");
    let r = Call::new("ADD", "c1", pod.path(), "eth0")
        .run(&node.ns, &conf)
        .expect_ok();
    assert_eq!(r["interfaces"].as_array().unwrap().len(), 4);
    assert_eq!(r["interfaces"][0]["name"], "dummy0");
    assert_eq!(r["ips"][0]["interface"], 3);
    assert_eq!(r["dns"]["nameservers"][0], "1.1.1.1");
}

#[test]
fn not_a_gateway_promisc_bridge_and_log_file() {
    let node = Node::new("nogw");
    let mut conf = node.conf("1.0.0", "10.244.29.0/24");
    conf["isGateway"] = json!(false);
    conf["isDefaultGateway"] = json!(false);
    conf["promiscMode"] = json!(true);
    let log = node.dir.path().join("cbrnet.log");
    conf["logFile"] = json!(log);
    let pod = Netns::new("nogw-pod");
    let r = Call::new("ADD", "c1", pod.path(), "eth0")
        .run(&node.ns, &conf)
        .expect_ok();
    assert!(
        r["interfaces"][0]["mac"].as_str().unwrap().starts_with("0a:58:"),
        "stable bridge MAC"
    );
    let br = node.ns.ok(&["ip", "-o", "addr", "show", "dev", "cbr0"]);
    assert!(
        !br.contains("10.244.29.1"),
        "isGateway false put the gateway on the bridge: {br}"
    );
    assert!(node.ns.ok(&["ip", "link", "show", "cbr0"]).contains("PROMISC"));
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("ADD") && logged.contains("c1"), "{logged}");
}

#[test]
fn stderr_stays_quiet_and_the_log_file_gets_the_configured_level() {
    let node = Node::new("logs");
    let mut conf = node.conf("1.0.0", "10.244.28.0/24");
    let log = node.dir.path().join("cbrnet.log");
    conf["logFile"] = json!(log);
    let pod = Netns::new("logs-pod");
    // a successful ADD writes nothing on stderr, which `ctr` would show on the user's terminal
    let out = Call::new("ADD", "c1", pod.path(), "eth0").run(&node.ns, &conf);
    assert!(out.ok, "{}", out.json);
    assert_eq!(out.stderr, "", "stderr is not quiet");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("command=\"ADD\"") && logged.contains("c1"),
        "{logged}"
    );
    assert!(logged.starts_with("20"), "no timestamp: {logged}");
    assert!(
        !logged.contains("DEBUG"),
        "debug lines at the default level: {logged}"
    );
    // a failed ADD is in the log file too, and on stderr as an error
    let out = Call::new("ADD", "c1", pod.path(), "eth0").run(&node.ns, &conf);
    assert_eq!(out.code(), 112);
    assert!(out.stderr.contains("ERROR"), "{}", out.stderr);
    assert!(std::fs::read_to_string(&log).unwrap().contains("ERROR"));
    // more, when asked for
    conf["logLevel"] = json!("debug");
    let mut call = Call::new("DEL", "c1", pod.path(), "eth0");
    call.extra_env.push(("CBRNET_LOG", "debug"));
    let out = call.run(&node.ns, &conf);
    assert!(out.ok && out.stderr.contains("DEBUG"), "{}", out.stderr);
    assert!(std::fs::read_to_string(&log).unwrap().contains("DEBUG"));
}

#[test]
fn run_by_hand_it_names_itself_and_the_versions_it_speaks() {
    for name in ["cbrnet", "cbrnet-ipam"] {
        let want = format!(
            "CNI {name} plugin v{}\nCNI protocol versions supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0\n",
            env!("CARGO_PKG_VERSION")
        );
        let out = std::process::Command::new(cbrnet_tests::bin(name))
            .env_clear()
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            want,
            "{name}: no CNI_COMMAND"
        );
        assert!(
            out.stdout.is_empty(),
            "{name} printed on stdout without a command"
        );
        let out = std::process::Command::new(cbrnet_tests::bin(name))
            .arg("--version")
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout), want, "{name} --version");
    }
}

#[test]
fn an_add_puts_back_the_gateway_and_forwarding_that_went_missing() {
    let node = Node::new("gwback");
    let conf = node.conf("1.0.0", "10.244.70.0/24");
    let pods = [
        Netns::new("gwback-pod"),
        Netns::new("gwback-pod"),
        Netns::new("gwback-pod"),
    ];
    let add = |i: usize| {
        Call::new("ADD", &format!("pod-{i}"), pods[i].path(), "eth0")
            .run(&node.ns, &conf)
            .expect_ok()
    };
    let gateway_on_bridge = || {
        node.ns
            .ok(&["ip", "-o", "-4", "addr", "show", "dev", "cbr0"])
            .contains("10.244.70.1/24")
    };
    add(0);
    assert!(gateway_on_bridge());
    // the gateway address flushed and forwarding turned off: the next ADD repairs both
    node.ns.ok(&["ip", "addr", "flush", "dev", "cbr0"]);
    node.ns.ok(&["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
    add(1);
    assert!(gateway_on_bridge());
    assert_eq!(node.ns.ok(&["sysctl", "-n", "net.ipv4.ip_forward"]).trim(), "1");
    // another address first on the bridge (the probe sees it, not ours): ours is added beside it
    node.ns.ok(&["ip", "addr", "flush", "dev", "cbr0"]);
    node.ns.ok(&["ip", "addr", "add", "10.99.0.1/24", "dev", "cbr0"]);
    let r = result_ip(&add(2));
    assert!(gateway_on_bridge());
    assert!(
        pods[0].can_ping(&r),
        "pods do not reach each other after the repairs"
    );
    assert!(pods[2].can_ping("10.244.70.1"));
}

/// The bridge floods IPv6 multicast (duplicate address detection, listener reports, router
/// solicitations) to every port, so each link-local address costs every pod on the node. A port
/// never gets one; an IPv4 pod only when `ipv6LinkLocal` asks; an IPv6 pod always (IPv6 needs it),
/// and IPv6 pods reach each other across ports that have none.
#[test]
fn new_pods_make_no_multicast_noise_on_the_bridge() {
    let node = Node::new("ll");
    let plain = node.conf("1.1.0", "10.244.27.0/24");
    let mut asked = plain.clone();
    asked["ipv6LinkLocal"] = json!(true);
    let v6 = json!({
        "cniVersion": "1.1.0", "name": "testnet6", "type": "cbrnet", "bridge": "cbr6",
        "ipam": {"type": "cbrnet-ipam", "subnet": "fd00:27::/64", "dataDir": node.data_dir()},
    });
    let pods: [Netns; 4] = std::array::from_fn(|_| Netns::new("ll-pod"));
    let confs = [&plain, &asked, &v6, &v6];
    let mut results = Vec::new();
    for (i, (p, c)) in pods.iter().zip(confs).enumerate() {
        let r = Call::new("ADD", &format!("c{i}"), p.path(), "eth0")
            .run(&node.ns, c)
            .expect_ok();
        results.push(r);
    }
    let link_local = |ns: &Netns, dev: &str| {
        ns.ok(&["ip", "-6", "-o", "addr", "show", "dev", dev, "scope", "link"])
            .contains("fe80::")
    };
    for (r, name) in results.iter().zip(["plain", "asked", "v6", "v6b"]) {
        let host_end = r["interfaces"][1]["name"].as_str().unwrap();
        assert!(
            !link_local(&node.ns, host_end),
            "{name}: the port has a link-local address"
        );
        let d = node.ns.ok(&["ip", "-d", "link", "show", host_end]);
        assert!(d.contains("addrgenmode none"), "{name}: {d}");
    }
    // The bridges cbrnet made do no multicast snooping, whose per-port timers every new port
    // re-arms.
    for br in ["cbr0", "cbr6"] {
        let d = node.ns.ok(&["ip", "-d", "link", "show", br]);
        assert!(d.contains("mcast_snooping 0"), "{br}: {d}");
    }
    assert!(
        !link_local(&pods[0], "eth0"),
        "an IPv4 pod got a link-local address"
    );
    assert!(pods[0]
        .ok(&["ip", "-d", "link", "show", "eth0"])
        .contains("addrgenmode none"));
    assert!(
        link_local(&pods[1], "eth0"),
        "ipv6LinkLocal gave no link-local address"
    );
    assert!(
        link_local(&pods[2], "eth0"),
        "an IPv6 pod has no link-local address"
    );
    assert!(pods[2]
        .ok(&["ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global"])
        .contains(result_ip(&results[2]).as_str()));
    // IPv4 between the first two, IPv6 between the last two (neighbour discovery through two
    // ports without link-local addresses), and the loopback's IPv6 work.
    assert!(pods[0].can_ping(&result_ip(&results[1])));
    assert!(pods[2].can_ping(&result_ip(&results[3])));
    assert!(pods[0]
        .ok(&["ip", "-6", "addr", "show", "dev", "lo"])
        .contains("::1"));
    for (i, (p, c)) in pods.iter().zip(confs).enumerate() {
        Call::new("DEL", &format!("c{i}"), p.path(), "eth0")
            .run(&node.ns, c)
            .expect_ok();
    }
    assert!(node.veths().is_empty());
}

/// Every file under `dir`, as paths.
fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}
