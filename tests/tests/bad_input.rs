//! Bad input is refused with the spec's error code, a non-zero exit, and nothing changed on the
//! node: no link, no data directory, no reservation.

use cbrnet_tests::{Call, Netns, Node};
use serde_json::{json, Value};

struct Case {
    name: &'static str,
    conf: Value,
    command: &'static str,
    container_id: &'static str,
    netns: Option<String>,
    ifname: &'static str,
    args: &'static str,
    code: u64,
}

#[test]
fn each_bad_input_gets_its_code_and_changes_nothing() {
    let pod = Netns::new("bad-pod");
    let not_a_netns = tempfile::NamedTempFile::new().unwrap();
    let node = Node::new("bad");
    let good = node.conf("1.0.0", "10.244.30.0/24");
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let ipam_with = |k: &str, v: Value| {
        let mut c = good.clone();
        c["ipam"][k] = v;
        c
    };
    let case = |name, conf, code| Case {
        name,
        conf,
        command: "ADD",
        container_id: "c1",
        netns: None,
        ifname: "eth0",
        args: "",
        code,
    };
    let cases = vec![
        case("unsupported cniVersion", with("cniVersion", json!("0.2.0")), 1),
        case(
            "no ipam",
            {
                let mut c = good.clone();
                c.as_object_mut().unwrap().remove("ipam");
                c
            },
            7,
        ),
        case(
            "rangeStart outside subnet",
            ipam_with("rangeStart", json!("10.9.9.9")),
            7,
        ),
        case(
            "subnet and ranges both",
            ipam_with("ranges", json!([[{"subnet": "10.244.31.0/24"}]])),
            7,
        ),
        case(
            "network name escapes data dir",
            with("name", json!("../../etc")),
            7,
        ),
        case("mtu of the wrong type", with("mtu", json!("big")), 7),
        case("mtu out of range", with("mtu", json!(20)), 7),
        case(
            "bridge name too long",
            with("bridge", json!("a-very-long-bridge")),
            7,
        ),
        case(
            "multicast runtimeConfig.mac",
            with("runtimeConfig", json!({"mac": "01:00:5e:00:00:01"})),
            7,
        ),
        case(
            "ipam plugin not in CNI_PATH",
            ipam_with("type", json!("no-such-ipam")),
            7,
        ),
        case("ipMasq without clusterCIDR", with("ipMasq", json!(true)), 7),
        case(
            "reclaimAfter that is no duration",
            ipam_with("reclaimAfter", json!("soon")),
            7,
        ),
        Case {
            netns: Some(String::new()),
            ..case("no CNI_NETNS", good.clone(), 4)
        },
        Case {
            netns: Some("/run/netns/cbt-does-not-exist".into()),
            ..case("missing netns", good.clone(), 3)
        },
        Case {
            netns: Some(not_a_netns.path().display().to_string()),
            ..case("netns path is not a namespace", good.clone(), 4)
        },
        Case {
            netns: Some(format!("/proc/{}/ns/uts", std::process::id())),
            ..case("netns path is a namespace of another kind", good.clone(), 4)
        },
        Case {
            netns: Some(node.ns.path()),
            ..case("netns is the plugin's own (the node's)", good.clone(), 4)
        },
        Case {
            netns: Some("/proc/self/ns/net".into()),
            ..case("netns is the plugin's own, by /proc/self", good.clone(), 4)
        },
        Case {
            ifname: "sixteen-bytes-xx",
            ..case("ifname over 15 bytes", good.clone(), 4)
        },
        Case {
            ifname: "a/b",
            ..case("ifname with /", good.clone(), 4)
        },
        Case {
            ifname: "",
            ..case("empty ifname", good.clone(), 4)
        },
        Case {
            container_id: "../../x",
            ..case("container ID with ..", good.clone(), 4)
        },
        Case {
            container_id: "",
            ..case("empty container ID", good.clone(), 4)
        },
        Case {
            command: "FROB",
            ..case("unknown command", good.clone(), 4)
        },
        Case {
            args: "IP=10.99.0.5",
            ..case("requested IP outside the subnet", good.clone(), 101)
        },
        Case {
            args: "IP=not-an-ip",
            ..case("requested IP not an address", good.clone(), 7)
        },
        Case {
            command: "CHECK",
            ..case("CHECK without prevResult", good.clone(), 7)
        },
    ];
    for c in cases {
        let netns = c.netns.clone().unwrap_or_else(|| pod.path());
        let mut call = Call::new(c.command, c.container_id, netns, c.ifname);
        call.args = c.args;
        let out = call.run(&node.ns, &c.conf);
        assert!(!out.ok, "{}: succeeded", c.name);
        assert_eq!(out.code(), c.code, "{}: {}", c.name, out.json);
        assert!(
            out.json["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "{}: no msg",
            c.name
        );
        assert!(out.json["cniVersion"].is_string(), "{}: no cniVersion", c.name);
        assert_eq!(node.ns.links(), ["lo"], "{}: left a link", c.name);
        assert_eq!(pod.links(), ["lo"], "{}: left a link in the pod", c.name);
        assert!(
            node.reservations("testnet").is_empty(),
            "{}: left a reservation",
            c.name
        );
        assert!(
            !node.data_dir().exists(),
            "{}: created the data directory",
            c.name
        );
    }
    // Every case was refused before the data directory was even made.
    assert!(
        !node.data_dir().exists(),
        "a refused ADD created the data directory"
    );
}

#[test]
fn not_json_is_a_decode_error() {
    let node = Node::new("bad-json");
    let pod = Netns::new("bad-json-pod");
    let call = Call::new("ADD", "c1", pod.path(), "eth0");
    let mut cmd = call.command(&node.ns);
    let mut child = cmd.spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"{not json").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["code"], 6);
    assert_eq!(node.ns.links(), ["lo"]);
}

#[test]
fn an_existing_non_bridge_cbr0_is_refused_and_everything_undone() {
    let node = Node::new("notbr");
    node.ns.add_veth("cbr0", "notbr-peer");
    let pod = Netns::new("notbr-pod");
    let conf = node.conf("1.0.0", "10.244.32.0/24");
    let out = Call::new("ADD", "c1", pod.path(), "eth0").run(&node.ns, &conf);
    assert_eq!(out.code(), 111, "{}", out.json);
    assert!(
        node.reservations("testnet").is_empty(),
        "the address was not released"
    );
    assert!(node.veths().is_empty());
    assert_eq!(pod.links(), ["lo"]);
}

/// Makes the network's lock file a directory, so that every IPAM operation on it fails.
fn break_ipam_lock(node: &Node) -> std::path::PathBuf {
    let lock = node.data_dir().join("testnet").join("lock");
    std::fs::remove_file(&lock).unwrap();
    std::fs::create_dir(&lock).unwrap();
    lock
}

#[test]
fn del_goes_on_past_a_failed_release_and_reports_it() {
    let node = Node::new("delfail");
    let conf = node.conf("1.1.0", "10.244.33.0/24");
    let pod = Netns::new("delfail-pod");
    Call::new("ADD", "c1", pod.path(), "eth0")
        .run(&node.ns, &conf)
        .expect_ok();
    let lock = break_ipam_lock(&node);
    let out = Call::new("DEL", "c1", pod.path(), "eth0").run(&node.ns, &conf);
    assert_eq!(out.code(), 5, "{}", out.json);
    assert!(out.json["msg"].as_str().unwrap().contains("lock"), "{}", out.json);
    // the release failed, the veth went anyway
    assert!(node.veths().is_empty());
    assert_eq!(pod.links(), ["lo"]);
    assert_eq!(node.reservations("testnet").len(), 1);
    // once the store is readable again, a repeated DEL releases the address
    std::fs::remove_dir(&lock).unwrap();
    Call::new("DEL", "c1", pod.path(), "eth0")
        .run(&node.ns, &conf)
        .expect_ok();
    assert!(node.reservations("testnet").is_empty());
}

#[test]
fn a_failed_add_whose_undo_fails_reports_both() {
    let node = Node::new("undofail");
    // the ADD will fail at the bridge: cbr0 exists and is not one
    node.ns.add_veth("cbr0", "undofail-peer");
    let conf = node.conf("1.1.0", "10.244.34.0/24");
    let pod = Netns::new("undofail-pod");
    let child = Call::new("ADD", "c1", pod.path(), "eth0").start_stopped_at(&node.ns, &conf, "reserved");
    // while it is stopped with the address reserved, its undo is made to fail
    let lock = break_ipam_lock(&node);
    let out = child.resume();
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["code"], 111, "the ADD's own error comes first: {v}");
    let details = v["details"].as_str().unwrap();
    assert!(details.contains("undo failed") && details.contains("lock"), "{v}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("undoing the failed ADD"), "{stderr}");
    // the runtime's DEL, once the store works again, leaves nothing
    std::fs::remove_dir(&lock).unwrap();
    Call::new("DEL", "c1", pod.path(), "eth0")
        .run(&node.ns, &conf)
        .expect_ok();
    assert!(node.reservations("testnet").is_empty());
    assert!(node.veths().is_empty());
}

/// A config that takes its subnet from `file`.
fn from_subnet_file(node: &Node, file: &std::path::Path) -> Value {
    json!({
        "cniVersion": "1.1.0", "name": "testnet", "type": "cbrnet",
        "ipam": {"type": "cbrnet-ipam", "subnetFile": file, "dataDir": node.data_dir()},
    })
}

#[test]
fn a_bad_subnet_file_is_refused_with_its_own_message_and_changes_nothing() {
    let node = Node::new("badsf");
    let pod = Netns::new("badsf-pod");
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p
    };
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let big = file("big", &" ".repeat(300 * 1024));
    let cases: Vec<(&str, std::path::PathBuf, u64, &str)> = vec![
        ("missing", dir.path().join("none"), 11, "does not exist"),
        ("a FIFO (would hang a plain read)", fifo, 7, "not a regular file"),
        ("a directory", dir.path().to_path_buf(), 7, "not a regular file"),
        ("300 KiB", big, 7, "too large"),
        ("not JSON", file("garbage", "{subnet"), 7, "subnet file"),
        (
            "gateway outside the subnet",
            file("gw", r#"{"subnet":"10.244.40.0/24","gateway":"10.244.41.1"}"#),
            7,
            "gateway",
        ),
        (
            "subnet outside clusterCIDR",
            file(
                "cidr",
                r#"{"subnet":"10.245.40.0/24","gateway":"10.245.40.1","clusterCIDR":"10.244.0.0/16"}"#,
            ),
            7,
            "clusterCIDR",
        ),
        (
            "mtu out of range",
            file(
                "mtu",
                r#"{"subnet":"10.244.40.0/24","gateway":"10.244.40.1","mtu":70000}"#,
            ),
            7,
            "mtu",
        ),
    ];
    for (name, path, code, says) in cases {
        let out = Call::new("ADD", "c1", pod.path(), "eth0").run(&node.ns, &from_subnet_file(&node, &path));
        assert_eq!(out.code(), code, "{name}: {}", out.json);
        let msg = out.json["msg"].as_str().unwrap_or_default();
        assert!(msg.contains(says), "{name}: {msg:?} does not say {says:?}");
        assert_eq!(node.ns.links(), ["lo"], "{name}: left a link");
        assert!(!node.data_dir().exists(), "{name}: touched the data directory");
    }
}

#[test]
fn failures_after_the_reservation_keep_nothing() {
    let node = Node::new("late");
    let pod = Netns::new("late-pod");
    let v6_only = json!({
        "cniVersion": "1.1.0", "name": "testnet", "type": "cbrnet", "ipMasq": true,
        "clusterCIDR": "10.244.0.0/16",
        "ipam": {"type": "cbrnet-ipam", "subnet": "fd00:44::/64", "dataDir": node.data_dir()},
    });
    let mut masq = node.conf("1.1.0", "10.244.44.0/24");
    masq["ipMasq"] = json!(true);
    masq["clusterCIDR"] = json!("10.244.0.0/16");
    let cases: Vec<(&str, Value, Option<&str>, u64)> = vec![
        ("ipMasq with only an IPv6 address", v6_only, None, 7),
        ("panic after the reservation", masq.clone(), Some("reserved"), 999),
        ("panic after the veth", masq.clone(), Some("veth"), 999),
        ("panic after the pod side", masq, Some("pod"), 999),
    ];
    for (name, conf, panic_at, code) in cases {
        let mut call = Call::new("ADD", "c1", pod.path(), "eth0");
        if let Some(p) = panic_at {
            call.extra_env.push(("CBRNET_TEST_PANIC_AT", p));
        }
        let out = call.run(&node.ns, &conf);
        assert_eq!(out.code(), code, "{name}: {} {}", out.json, out.stderr);
        if panic_at.is_some() {
            assert!(
                out.json["msg"].as_str().unwrap().contains("injected panic"),
                "{name}"
            );
        }
        assert!(
            node.reservations("testnet").is_empty(),
            "{name}: kept a reservation"
        );
        assert!(node.veths().is_empty(), "{name}: kept a veth");
        assert_eq!(pod.links(), ["lo"], "{name}: left a link in the pod");
        assert!(
            !node.ns.ok(&["nft", "list", "tables"]).contains("cbrnet"),
            "{name}: left an nftables table"
        );
    }
    // and the next ADD works
    Call::new("ADD", "c1", pod.path(), "eth0")
        .run(&node.ns, &node.conf("1.1.0", "10.244.44.0/24"))
        .expect_ok();
}

#[test]
fn a_full_bridge_is_a_clear_error_that_keeps_nothing() {
    let node = Node::new("fullbr");
    // a /22: room for more pods than a bridge has ports
    let conf = node.conf("1.0.0", "10.244.64.0/22");
    let first = Netns::new("fullbr-pod");
    Call::new("ADD", "c0", first.path(), "eth0")
        .run(&node.ns, &conf)
        .expect_ok();
    // the bridge's other 1022 ports, one `ip` process for all
    let batch: String = (1..1023)
        .map(|i| format!("link add fb{i} type veth peer name fbp{i}\nlink set fb{i} master cbr0\n"))
        .collect();
    let mut ip = std::process::Command::new("ip");
    ip.args(["-batch", "-"]).stdin(std::process::Stdio::piped());
    node.ns.enter(&mut ip);
    let mut child = ip.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), batch.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
    let pod = Netns::new("fullbr-pod");
    let out = Call::new("ADD", "c1", pod.path(), "eth0").run(&node.ns, &conf);
    assert_eq!(out.code(), 115, "{}", out.json);
    assert!(
        out.json["msg"].as_str().unwrap().contains("1023 ports"),
        "{}",
        out.json
    );
    assert_eq!(
        node.reservations("testnet").len(),
        1,
        "the failed ADD kept its address"
    );
    assert_eq!(pod.links(), ["lo"]);
}
