//! `cbrnet-routed doctor` on labs of namespaces: each check in its ok state and in a failing
//! state built on purpose (the node's daemon frozen with SIGSTOP while the fault is looked at, so
//! that it does not repair it first), read from doctor's JSON; then the daemon let go and the
//! node all ok again; the exit codes.

use cbrnet_tests::lab::{IpFamily, Lab, StoreKind};
use serde_json::Value;
use std::time::{Duration, Instant};

/// The check called `name` in doctor's answer.
fn check<'a>(checks: &'a [Value], name: &str) -> &'a Value {
    checks
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {checks:#?}"))
}

/// Asserts that check `name` has `status` and that what it found contains each of `words`.
fn expect(checks: &[Value], name: &str, status: &str, words: &[&str]) {
    let c = check(checks, name);
    let found = c["found"].as_str().unwrap_or_default();
    assert_eq!(c["status"], status, "{name}: {c:#}");
    for w in words {
        assert!(found.contains(w), "{name}: {w:?} not in {found:?}");
    }
    if status != "ok" {
        assert!(
            !c["fix"].as_str().unwrap_or_default().is_empty(),
            "{name} is {status} and says nothing to do: {c:#}"
        );
    }
}

/// The statuses that are not ok: (check, status).
fn not_ok(checks: &[Value]) -> Vec<(String, String)> {
    checks
        .iter()
        .filter(|c| c["status"] != "ok")
        .map(|c| {
            (
                c["check"].as_str().unwrap_or_default().to_string(),
                c["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Waits until doctor on node `i` says every check is ok and exits 0 (the daemon repairs what
/// it owns); the last answer otherwise.
fn wait_all_ok(lab: &Lab, i: usize, extra: &[&str]) {
    let t = Instant::now();
    loop {
        let (code, checks, stderr) = lab.doctor(i, extra);
        let bad = not_ok(&checks);
        if code == 0 && bad.is_empty() {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "node {i} not all ok (exit {code}): {bad:?}\n{checks:#?}\n{stderr}\n{}",
            lab.nodes[i].log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `args` with `flag`'s value replaced (or the flag added).
fn with_flag(mut args: Vec<String>, flag: &str, value: &str) -> Vec<String> {
    match args.iter().position(|a| a == flag) {
        Some(i) => args[i + 1] = value.to_string(),
        None => args.extend([flag.to_string(), value.to_string()]),
    }
    args
}

/// A lab of `n` nodes on `segments` underlay segments, each node's daemon started and every
/// node's routes complete.
fn lab(tag: &str, n: usize, segments: usize, flags: &[&str]) -> Lab {
    lab_of(tag, IpFamily::V4, n, segments, flags)
}

/// [`lab`] with pods of `family`.
fn lab_of(tag: &str, family: IpFamily, n: usize, segments: usize, flags: &[&str]) -> Lab {
    let mut lab = Lab::new(tag, StoreKind::File);
    lab.set_family(family);
    lab.segments = segments;
    for i in 0..n {
        lab.add_node();
        lab.nodes[i].flags = flags.iter().map(|f| f.to_string()).collect();
        lab.start(i);
    }
    assert!(
        lab.wait_for(Duration::from_secs(10), |l| (0..n).all(|i| l.routes_complete(i))),
        "routes incomplete"
    );
    lab
}

#[test]
fn a_healthy_node_is_all_ok_with_probe_and_says_so_in_text_too() {
    // node-1 is on another segment (VXLAN), node-2 on node-0's (direct)
    let mut lab = lab("dr-ok", 3, 2, &[]);
    lab.add_pod(0);
    lab.add_pod(1);
    let (code, checks, stderr) = lab.doctor(0, &["--probe"]);
    assert_eq!(code, 0, "{checks:#?}\n{stderr}");
    assert_eq!(not_ok(&checks), Vec::<(String, String)>::new(), "{checks:#?}");
    expect(&checks, "daemon", "ok", &["running"]);
    expect(&checks, "daemon.health", "ok", &["/healthz", "ok"]);
    expect(&checks, "daemon.flags", "ok", &["--backend auto"]);
    let subnet = lab.nodes[0].subnet().unwrap();
    expect(&checks, "lease", "ok", &[&subnet, "node-0", "left"]);
    expect(&checks, "subnet-file", "ok", &[&subnet, "mtu 1450"]);
    expect(&checks, "bridge", "ok", &["cbr0", "up", "gateway"]);
    expect(&checks, "forwarding.ipv4", "ok", &["= 1"]);
    expect(&checks, "masquerade", "ok", &["off"]);
    expect(
        &checks,
        "vxlan.device",
        "ok",
        &["VNI 1", "MTU 1450", "TX checksum offload off"],
    );
    expect(
        &checks,
        "routes",
        "ok",
        &["2 peer(s)", "node-1 vxlan", "node-2 direct", "exact"],
    );
    expect(&checks, "stale", "ok", &[]);
    expect(&checks, "mtu", "ok", &["underlay 1500", "1 pod(s) 1450"]);
    expect(&checks, "cni.config", "ok", &["labnet", "1.1.0"]);
    expect(
        &checks,
        "cni.plugins",
        "ok",
        &["cbrnet 0.1.0", "cbrnet-ipam 0.1.0"],
    );
    expect(&checks, "ipam.labnet", "ok", &["1 in use", "252 free"]);
    expect(&checks, "probe.node-1", "ok", &["(vxlan)", "3/3 answered"]);
    expect(&checks, "probe.node-2", "ok", &["(direct)", "3/3 answered"]);

    // The text: one line per check, then the summary; nothing on stderr.
    let mut cmd = std::process::Command::new(cbrnet_tests::bin("cbrnet-routed"));
    cmd.arg("doctor")
        .args(lab.daemon_args(0))
        .arg("--cni-bin-dir")
        .arg(cbrnet_tests::bin_dir());
    lab.nodes[0].node.ns.enter(&mut cmd);
    let out = cmd.output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), checks.len() - 2 + 1, "{text}");
    assert!(lines[0].starts_with("ok    daemon "), "{text}");
    assert!(lines.last().unwrap().ends_with(" ok, 0 warn, 0 FAIL"), "{text}");
}

#[test]
fn the_daemon_stopped_frozen_or_run_with_other_flags_is_named() {
    let mut lab = lab("dr-dm", 2, 1, &[]);
    // Other flags than the daemon's: a FAIL naming both values.
    let args = with_flag(lab.daemon_args(0), "--backend", "vxlan");
    let (code, checks, _) = lab.doctor_with(0, args, &[]);
    assert_eq!(code, 1);
    expect(
        &checks,
        "daemon.flags",
        "FAIL",
        &["--backend: the daemon runs with auto, this command has vxlan"],
    );
    let args = with_flag(lab.daemon_args(0), "--cluster-cidr", "10.244.0.0/15");
    let (_, checks, _) = lab.doctor_with(0, args, &[]);
    expect(
        &checks,
        "daemon.flags",
        "FAIL",
        &["--cluster-cidr: the daemon runs with 10.244.0.0/16, this command has 10.244.0.0/15"],
    );
    // A store doctor cannot read: the checks that need it say so, as warnings.
    let args = with_flag(lab.daemon_args(0), "--store", "file:/nonexistent-cbrnet-store");
    let (_, checks, _) = lab.doctor_with(0, args, &[]);
    expect(
        &checks,
        "lease",
        "warn",
        &["not checked", "/nonexistent-cbrnet-store"],
    );
    expect(&checks, "routes", "warn", &["not checked"]);
    expect(
        &checks,
        "daemon.flags",
        "FAIL",
        &["--store: the daemon runs with file:"],
    );

    // Frozen: its lock is held but /healthz does not answer, which doctor cannot judge.
    lab.freeze(0);
    let (code, checks, _) = lab.doctor(0, &[]);
    expect(&checks, "daemon", "ok", &["running"]);
    expect(&checks, "daemon.health", "warn", &["does not answer"]);
    assert_eq!(code, 0, "a warning alone fails nothing: {checks:#?}");
    lab.thaw(0);

    // Stopped: not running, exit 1.
    lab.stop(0);
    let (code, checks, _) = lab.doctor(0, &[]);
    assert_eq!(code, 1);
    expect(
        &checks,
        "daemon",
        "FAIL",
        &["not running", "nobody holds its lock"],
    );
    assert!(
        checks.iter().all(|c| c["check"] != "daemon.health"),
        "no daemon, no health to ask"
    );
    lab.start(0);
    wait_all_ok(&lab, 0, &[]);

    // A usage error: exit 2, nothing on stdout.
    let mut cmd = std::process::Command::new(cbrnet_tests::bin("cbrnet-routed"));
    cmd.arg("doctor")
        .args(with_flag(lab.daemon_args(0), "--node-ip", "127.0.0.1"));
    lab.nodes[0].node.ns.enter(&mut cmd);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--node-ip"));
}

#[test]
fn the_daemons_environment_alone_is_enough_and_the_node_name_is_the_host_name() {
    // As on a packaged node: `set -a; . /etc/default/cbrnet-routed` gives every setting but the
    // node name, which the unit sets to the host name. Here the host name is the node's, in a
    // UTS namespace of the command's own.
    let mut lab = lab("dr-env", 2, 1, &[]);
    lab.add_pod(0);
    let args = lab.daemon_args(0);
    let name = args[1].clone();
    assert_eq!(args[0], "--node-name");
    let env: Vec<(String, String)> = args[2..]
        .chunks(2)
        .map(|kv| {
            let var = kv[0].trim_start_matches("--").replace('-', "_").to_uppercase();
            (format!("CBRNET_{var}"), kv[1].clone())
        })
        .collect();
    let run = |args: &[&str]| {
        let mut cmd = std::process::Command::new("unshare");
        cmd.args(["--uts", "sh", "-c", "hostname \"$0\" && exec \"$@\"", &name])
            .arg(cbrnet_tests::bin("cbrnet-routed"))
            .args(args)
            .env_remove("CBRNET_NODE_NAME")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .envs(lab.nodes[0].env.iter().map(|(k, v)| (k, v)));
        lab.nodes[0].node.ns.enter(&mut cmd);
        cmd.output().unwrap()
    };
    let bins = cbrnet_tests::bin_dir().display().to_string();
    let out = run(&["doctor", "--json", "--probe", "--cni-bin-dir", &bins]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let checks: Vec<Value> =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("no JSON ({e}): {stderr}"));
    assert_eq!(out.status.code(), Some(0), "{checks:#?}\n{stderr}");
    assert_eq!(not_ok(&checks), Vec::<(String, String)>::new(), "{checks:#?}");
    let subnet = lab.nodes[0].subnet().unwrap();
    expect(&checks, "lease", "ok", &[&subnet, &format!("node {name}")]);
    expect(&checks, "daemon.flags", "ok", &["the same"]);
    // The other commands are not held up by the daemon's variables either.
    let store = env.iter().find(|(k, _)| k == "CBRNET_STORE").unwrap().1.clone();
    let out = run(&["leases", "--store", &store, "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&subnet));
}

#[test]
fn lease_and_subnet_file_faults_are_named() {
    let lab = lab("dr-ls", 2, 1, &[]);
    let subnet = lab.nodes[0].subnet().unwrap();
    let key = subnet.replace('/', "-");
    let record = lab.store_dir().join(&key);
    lab.freeze(0);
    // The subnet file names another subnet than the lease.
    let good = replace_in_subnet_file(
        &lab,
        (&subnet, &gateway(&subnet)),
        ("10.244.200.0/24", "10.244.200.1"),
    );
    let (code, checks, _) = lab.doctor(0, &[]);
    assert_eq!(code, 1);
    expect(
        &checks,
        "subnet-file",
        "FAIL",
        &["subnet 10.244.200.0/24", &format!("the lease {subnet}")],
    );
    std::fs::write(lab.nodes[0].node.subnet_file(), &good).unwrap();
    // The lease held by another daemon instance under this node's name.
    let mut lease: Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    let saved = lease.clone();
    lease["lease"]["holder"] = "0123abcd:netns:1".into();
    lab.put_raw(&key, lease["lease"].to_string().as_bytes());
    let (_, checks, _) = lab.doctor(0, &[]);
    expect(
        &checks,
        "lease",
        "FAIL",
        &["another daemon instance", "0123abcd:netns:1"],
    );
    lab.put_raw(&key, saved["lease"].to_string().as_bytes());
    // No lease at all.
    std::fs::remove_file(&record).unwrap();
    let (code, checks, _) = lab.doctor(0, &[]);
    assert_eq!(code, 1);
    expect(&checks, "lease", "FAIL", &["node-0 holds no lease"]);
    // The peer sees node-0 gone: no peers, no route to it.
    let (_, checks, _) = lab.doctor(1, &[]);
    expect(&checks, "routes", "ok", &["no peers"]);
    lab.thaw(0);
    wait_all_ok(&lab, 0, &[]);
    wait_all_ok(&lab, 1, &[]);
}

/// Node 0's subnet file with a (subnet, gateway) replaced by another; what it was before.
fn replace_in_subnet_file(lab: &Lab, from: (&str, &str), to: (&str, &str)) -> String {
    let file = lab.nodes[0].node.subnet_file();
    let good = std::fs::read_to_string(&file).unwrap();
    let other = good
        .replace(from.0, to.0)
        .replace(&format!("\"{}\"", from.1), &format!("\"{}\"", to.1));
    std::fs::write(&file, other).unwrap();
    good
}

/// Address `n` of an IPv4 subnet `a.b.c.0/24`.
fn address(subnet: &str, n: u8) -> String {
    let net: std::net::Ipv4Addr = subnet.split('/').next().unwrap().parse().unwrap();
    std::net::Ipv4Addr::from(u32::from(net) + u32::from(n)).to_string()
}

/// The gateway of a subnet: its first address.
fn gateway(subnet: &str) -> String {
    address(subnet, 1)
}

#[test]
fn bridge_forwarding_and_masquerade_faults_are_named() {
    let lab = lab("dr-br", 1, 1, &["--ip-masq"]);
    let ns = &lab.nodes[0].node.ns;
    let subnet = lab.nodes[0].subnet().unwrap();
    let gw = format!("{}/24", gateway(&subnet));
    let (_, checks, _) = lab.doctor(0, &[]);
    expect(
        &checks,
        "masquerade",
        "ok",
        &["table inet cbrnet_routed", &subnet],
    );
    lab.freeze(0);
    ns.ok(&["ip", "addr", "flush", "dev", "cbr0"]);
    ns.ok(&["ip", "addr", "add", "10.244.99.1/24", "dev", "cbr0"]);
    ns.ok(&["ip", "link", "set", "cbr0", "down"]);
    ns.ok(&["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
    ns.ok(&["nft", "delete", "table", "inet", "cbrnet_routed"]);
    let (code, checks, _) = lab.doctor(0, &[]);
    assert_eq!(code, 1);
    expect(
        &checks,
        "bridge",
        "FAIL",
        &[
            "down",
            &format!("no gateway {gw}"),
            "stale address 10.244.99.1/24",
        ],
    );
    expect(&checks, "forwarding.ipv4", "FAIL", &["net.ipv4.ip_forward = 0"]);
    expect(&checks, "masquerade", "FAIL", &["missing or not exactly"]);
    lab.thaw(0);
    wait_all_ok(&lab, 0, &[]);
    // A link of the bridge's name that is no bridge.
    lab.freeze(0);
    ns.ok(&["ip", "link", "del", "cbr0"]);
    ns.add_veth("cbr0", "cbr0-peer");
    let (_, checks, _) = lab.doctor(0, &[]);
    expect(&checks, "bridge", "FAIL", &["cbr0 is a veth link, not a bridge"]);
    ns.ok(&["ip", "link", "del", "cbr0"]);
    let (_, checks, _) = lab.doctor(0, &[]);
    expect(&checks, "bridge", "FAIL", &["cbr0 does not exist"]);
    lab.thaw(0);
    wait_all_ok(&lab, 0, &[]);
}

/// The first word of the line of `table` that starts with `subnet`, after `word`.
fn after(table: &str, subnet: &str, word: &str) -> String {
    let line = table
        .lines()
        .find(|l| l.starts_with(subnet))
        .unwrap_or_else(|| panic!("no {subnet} in {table}"));
    let mut w = line.split_whitespace();
    w.find(|x| *x == word);
    w.next().unwrap_or_default().to_string()
}

#[test]
fn routes_vxlan_entries_stale_and_foreign_routes_are_named_per_peer() {
    // node-1 across segments (VXLAN), node-2 on node-0's segment (direct)
    let lab = lab("dr-rt", 3, 2, &[]);
    let ns = &lab.nodes[0].node.ns;
    let (s1, s2) = (lab.nodes[1].subnet().unwrap(), lab.nodes[2].subnet().unwrap());
    let hop1 = s1.split('/').next().unwrap().to_string();
    let neigh = ns.ok(&["ip", "neigh", "show", "dev", "cbrnet.vxlan"]);
    let mac1 = after(&neigh, &format!("{hop1} "), "lladdr");
    lab.freeze(0);
    ns.ok(&["ip", "route", "del", &s2]);
    ns.ok(&[
        "bridge",
        "fdb",
        "del",
        &mac1,
        "dev",
        "cbrnet.vxlan",
        "dst",
        &lab.nodes[1].ip,
    ]);
    ns.ok(&["ip", "neigh", "del", &hop1, "dev", "cbrnet.vxlan"]);
    ns.ok(&[
        "ip",
        "route",
        "add",
        "10.244.250.0/24",
        "via",
        &lab.nodes[2].ip,
        "proto",
        "157",
    ]);
    let (code, checks, _) = lab.doctor(0, &[]);
    assert_eq!(code, 1);
    expect(
        &checks,
        "routes",
        "FAIL",
        &["2 of 2 peer(s) not right", "node-1", "node-2"],
    );
    expect(
        &checks,
        "peer.node-2",
        "FAIL",
        &[
            &s2,
            "(direct)",
            &format!("no route (want {s2} via {})", lab.nodes[2].ip),
        ],
    );
    expect(
        &checks,
        "peer.node-1",
        "FAIL",
        &[
            "(vxlan)",
            &format!("no FDB entry {mac1} -> {}", lab.nodes[1].ip),
            &format!("no neighbour entry {hop1} -> {mac1}"),
        ],
    );
    expect(&checks, "stale", "FAIL", &["route 10.244.250.0/24 via"]);
    // A route of another program on node-2's prefix keeps ours out.
    ns.ok(&[
        "ip",
        "route",
        "add",
        &s2,
        "via",
        &lab.nodes[2].ip,
        "proto",
        "static",
    ]);
    let (_, checks, _) = lab.doctor(0, &[]);
    expect(
        &checks,
        "peer.node-2",
        "FAIL",
        &[&format!("a route of another protocol holds {s2}")],
    );
    assert!(check(&checks, "peer.node-2")["fix"]
        .as_str()
        .unwrap()
        .contains(&format!("ip route del {s2}")));
    lab.thaw(0);
    // The daemon leaves the foreign route alone: doctor still names it.
    std::thread::sleep(Duration::from_millis(1500));
    let (_, checks, _) = lab.doctor(0, &[]);
    expect(&checks, "peer.node-2", "FAIL", &["another protocol"]);
    ns.ok(&["ip", "route", "del", &s2, "proto", "static"]);
    // A route of ours on a destination no lease names may wait for the daemon's full check
    // (5 minutes): removed here by hand, as the fix says, unless the daemon was first.
    let _ = ns.run(&["ip", "route", "del", "10.244.250.0/24", "proto", "157"]);
    wait_all_ok(&lab, 0, &[]);
}

#[test]
fn the_vxlan_device_and_mtus_are_checked() {
    let mut lab = lab("dr-mt", 2, 2, &[]);
    lab.add_pod(0);
    let ns = &lab.nodes[0].node.ns;
    let veth = lab.nodes[0].node.veths()[0].clone();
    let own = lab.nodes[0].subnet().unwrap().replace("/24", "/32");
    lab.freeze(0);
    ns.ok(&["ip", "link", "set", "cbrnet.vxlan", "mtu", "1400"]);
    ns.ok(&["ip", "link", "set", &veth, "mtu", "1300"]);
    ns.ok(&["ethtool", "-K", "cbrnet.vxlan", "tx", "on"]);
    ns.ok(&["ip", "addr", "del", &own, "dev", "cbrnet.vxlan"]);
    ns.ok(&["ip", "addr", "add", "10.244.250.0/32", "dev", "cbrnet.vxlan"]);
    let (code, checks, _) = lab.doctor(0, &[]);
    assert_eq!(code, 1);
    expect(
        &checks,
        "vxlan.device",
        "FAIL",
        &[
            "MTU 1400, not 1450",
            "TX checksum offload on, not --vxlan-tx-csum-offload off",
            &format!("address {own} missing"),
            "stale address 10.244.250.0/32",
        ],
    );
    expect(&checks, "mtu", "FAIL", &["cbrnet.vxlan 1400, not 1450"]);
    lab.thaw(0);
    // The device is the daemon's to put back; a pod's MTU stays as the pod was made.
    assert!(lab.wait_for(Duration::from_secs(10), |l| {
        let (_, checks, _) = l.doctor(0, &[]);
        check(&checks, "vxlan.device")["status"] == "ok"
    }));
    let (code, checks, _) = lab.doctor(0, &[]);
    assert_eq!(code, 0);
    expect(
        &checks,
        "mtu",
        "warn",
        &["1 of 1 pods' host ends not at 1450", &format!("{veth} 1300")],
    );
    ns.ok(&["ip", "link", "set", &veth, "mtu", "1450"]);
    wait_all_ok(&lab, 0, &[]);
    // The daemon on host-gw with a VXLAN device of its VNI left behind: the daemon removes it.
    let args = with_flag(lab.daemon_args(0), "--backend", "host-gw");
    let (_, checks, _) = lab.doctor_with(0, args, &[]);
    expect(
        &checks,
        "vxlan.device",
        "warn",
        &["still there on --backend host-gw"],
    );
    // A device of our name that is not ours: the daemon is unhealthy, doctor names both.
    lab.freeze(0);
    ns.ok(&["ip", "link", "del", "cbrnet.vxlan"]);
    ns.add_veth("cbrnet.vxlan", "vx-peer");
    lab.thaw(0);
    assert!(lab.wait_for(Duration::from_secs(10), |l| l.http_get(0, "/healthz").0 == 503));
    let (code, checks, _) = lab.doctor(0, &[]);
    assert_eq!(code, 1);
    expect(&checks, "vxlan.device", "FAIL", &["veth device, not cbrnet's"]);
    expect(&checks, "daemon.health", "FAIL", &["unhealthy", "cbrnet.vxlan"]);
    expect(&checks, "peer.node-1", "FAIL", &["unroutable"]);
    ns.ok(&["ip", "link", "del", "cbrnet.vxlan"]);
    wait_all_ok(&lab, 0, &[]);
}

#[test]
fn cni_config_plugins_and_ipam_are_checked() {
    let mut lab = lab("dr-cn", 1, 1, &[]);
    lab.add_pod(0);
    let conf_dir = lab.nodes[0].node.dir.path().join("net.d");
    let ours = conf_dir.join("10-labnet.conflist");
    let good = std::fs::read_to_string(&ours).unwrap();
    // Another network first: runtimes take it.
    let other = conf_dir.join("05-other.conflist");
    std::fs::write(
        &other,
        r#"{"cniVersion":"1.0.0","name":"other","plugins":[{"type":"bridge"}]}"#,
    )
    .unwrap();
    let (code, checks, _) = lab.doctor(0, &[]);
    assert_eq!(code, 0);
    expect(
        &checks,
        "cni.config",
        "warn",
        &["runtimes take", "05-other.conflist"],
    );
    std::fs::remove_file(&other).unwrap();
    // A version cbrnet does not speak.
    std::fs::write(&ours, good.replace("\"1.1.0\"", "\"9.9.9\"")).unwrap();
    let (_, checks, _) = lab.doctor(0, &[]);
    expect(&checks, "cni.config", "FAIL", &["9.9.9"]);
    // No config of cbrnet at all.
    std::fs::remove_file(&ours).unwrap();
    let (code, checks, _) = lab.doctor(0, &[]);
    assert_eq!(code, 1);
    expect(
        &checks,
        "cni.config",
        "FAIL",
        &["no network config", "uses cbrnet"],
    );
    std::fs::write(&ours, &good).unwrap();

    // Plugins: none where the runtime looks, then ones of another version.
    let bins = cbrnet_tests::temp_dir();
    let dir = bins.path().to_str().unwrap();
    let mut cmd = std::process::Command::new(cbrnet_tests::bin("cbrnet-routed"));
    cmd.arg("doctor")
        .args(lab.daemon_args(0))
        .args(["--json", "--cni-bin-dir", dir]);
    lab.nodes[0].node.ns.enter(&mut cmd);
    let run = |cmd: &mut std::process::Command| -> Vec<Value> {
        serde_json::from_slice(&cmd.output().unwrap().stdout).unwrap()
    };
    let checks = run(&mut cmd);
    expect(&checks, "cni.plugins", "FAIL", &["not both in one of", dir]);
    for p in ["cbrnet", "cbrnet-ipam"] {
        let path = bins.path().join(p);
        std::fs::write(&path, "#!/bin/sh\necho 'CNI cbrnet plugin v0.0.7'\n").unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let checks = run(&mut cmd);
    expect(
        &checks,
        "cni.plugins",
        "FAIL",
        &["cbrnet is 0.0.7, the daemon 0.1.0"],
    );

    // IPAM: an address held by a pod that is gone, fresh (waiting for reclaim), then old
    // (overdue: reclaim does not take it back while the daemon is frozen).
    let net_dir = lab.nodes[0].node.data_dir().join("labnet");
    let junk_ip = address(&lab.nodes[0].subnet().unwrap(), 77);
    let junk = net_dir.join(&junk_ip);
    lab.freeze(0);
    std::os::unix::fs::symlink("gone-pod eth0", &junk).unwrap();
    let (code, checks, _) = lab.doctor(0, &[]);
    assert_eq!(code, 0);
    expect(
        &checks,
        "ipam.labnet",
        "warn",
        &[
            "2 in use",
            "1 reserved by pods that no longer exist",
            &junk_ip,
            "gone-pod/eth0",
        ],
    );
    lab.nodes[0]
        .node
        .ns
        .ok(&["touch", "-h", "-d", "1 hour ago", junk.to_str().unwrap()]);
    let (code, checks, _) = lab.doctor(0, &[]);
    assert_eq!(code, 1);
    expect(&checks, "ipam.labnet", "FAIL", &[&junk_ip, "1h0m old"]);
    lab.thaw(0);
    wait_all_ok(&lab, 0, &[]);
    assert!(!junk.exists(), "the daemon reclaimed it");

    // A pool nearly full: a network of five addresses on the node's bridge, four held by
    // attachments whose host ends exist.
    let small = json_small_network(&lab);
    std::fs::write(conf_dir.join("20-small.conflist"), small.to_string()).unwrap();
    let small_dir = lab.nodes[0].node.data_dir().join("small");
    std::fs::create_dir_all(&small_dir).unwrap();
    for (i, ip) in ["10.99.0.2", "10.99.0.3", "10.99.0.4", "10.99.0.5", "10.99.0.6"]
        .iter()
        .enumerate()
    {
        let cid = format!("small{i}");
        std::os::unix::fs::symlink(format!("{cid} eth0"), small_dir.join(ip)).unwrap();
        let veth = cbrnet_bridge::port::host_veth_name("small", &cid, "eth0");
        lab.nodes[0].node.ns.add_veth(&veth, &format!("small-peer{i}"));
    }
    let (code, checks, _) = lab.doctor(0, &[]);
    assert_eq!(code, 0);
    expect(&checks, "ipam.small", "warn", &["5 in use, 0 free of 5 (100%)"]);
    assert!(check(&checks, "ipam.small")["fix"]
        .as_str()
        .unwrap()
        .contains("nearly full"));
}

/// A `cbrnet` network of its own subnet (10.99.0.0/29: five addresses) on the node's bridge.
fn json_small_network(lab: &Lab) -> Value {
    serde_json::json!({
        "cniVersion": "1.0.0", "name": "small",
        "plugins": [{"type": "cbrnet", "ipam": {
            "type": "cbrnet-ipam", "subnet": "10.99.0.0/29",
            "dataDir": lab.nodes[0].node.data_dir(),
        }}],
    })
}

#[test]
fn a_peer_that_does_not_answer_fails_its_probe() {
    let lab = lab("dr-pr", 2, 1, &[]);
    let (code, checks, _) = lab.doctor(0, &["--probe"]);
    assert_eq!(code, 0);
    expect(&checks, "probe.node-1", "ok", &["3/3 answered"]);
    // node-1's gateway gone (its daemon frozen, so it stays gone)
    lab.freeze(1);
    lab.nodes[1].node.ns.ok(&["ip", "addr", "flush", "dev", "cbr0"]);
    let t = Instant::now();
    let (code, checks, _) = lab.doctor(0, &["--probe"]);
    assert!(t.elapsed() < Duration::from_secs(5), "a probe is bounded");
    assert_eq!(code, 1);
    expect(
        &checks,
        "probe.node-1",
        "FAIL",
        &["no answer to 3 echoes", "100% loss"],
    );
    // and doctor on node-1 names why
    let (_, checks, _) = lab.doctor(1, &[]);
    expect(&checks, "bridge", "FAIL", &["no gateway"]);
    lab.thaw(1);
    wait_all_ok(&lab, 0, &["--probe"]);
}

/// The network address of a subnet (`fd00:10:244:2::/64` -> `fd00:10:244:2::`).
fn network(subnet: &str) -> &str {
    subnet.split('/').next().unwrap()
}

/// The gateway of an IPv6 subnet: its network address + 1.
fn gateway6(subnet: &str) -> String {
    let net: std::net::Ipv6Addr = network(subnet).parse().unwrap();
    std::net::Ipv6Addr::from(u128::from(net) + 1).to_string()
}

#[test]
fn dual_stack_checks_judge_both_families() {
    // node-1 across segments (VXLAN for both families), node-2 on node-0's segment (direct)
    let mut lab = lab_of("dr-ds", IpFamily::Dual, 3, 2, &["--ip-masq"]);
    lab.add_pod(0);
    lab.add_pod(1);
    let (s4, s6) = {
        let s = lab.nodes[0].subnets();
        (s[0].clone(), s[1].clone())
    };
    let gw6 = format!("{}/64", gateway6(&s6));
    // A fresh IPv6 underlay resolves its first neighbours slowly: the first echoes may wait.
    wait_all_ok(&lab, 0, &["--probe"]);
    let (code, checks, stderr) = lab.doctor(0, &["--probe"]);
    assert_eq!(code, 0, "{checks:#?}\n{stderr}");
    assert_eq!(not_ok(&checks), Vec::<(String, String)>::new(), "{checks:#?}");
    expect(
        &checks,
        "lease",
        "ok",
        &[&format!("{s4}, {s6} held by node node-0")],
    );
    expect(
        &checks,
        "subnet-file",
        "ok",
        &[&format!("{s6} gateway {}", gateway6(&s6))],
    );
    expect(&checks, "bridge", "ok", &[&format!("{}/24, {gw6}", gateway(&s4))]);
    expect(&checks, "forwarding.ipv4", "ok", &["= 1"]);
    expect(
        &checks,
        "forwarding.ipv6",
        "ok",
        &["net.ipv6.conf.all.forwarding = 1", "accept_ra of eth0 = 2"],
    );
    expect(
        &checks,
        "masquerade",
        "ok",
        &[&format!("{s6} masqueraded outside fd00:10:244::/56")],
    );
    expect(
        &checks,
        "routes",
        "ok",
        &["node-1 vxlan", "node-2 direct", "exact"],
    );
    let (n1s6, n2s6) = (
        lab.nodes[1].subnets()[1].clone(),
        lab.nodes[2].subnets()[1].clone(),
    );
    expect(
        &checks,
        "probe.node-1",
        "ok",
        &[&format!("{} (vxlan): 3/3 answered", gateway6(&n1s6))],
    );
    expect(
        &checks,
        "probe.node-2",
        "ok",
        &[&format!("{} (direct): 3/3 answered", gateway6(&n2s6))],
    );
    // doctor told of one family where the daemon runs with two
    let args = with_flag(lab.daemon_args(0), "--cluster-cidr", "10.244.0.0/16");
    let (_, checks, _) = lab.doctor_with(0, args, &[]);
    expect(
        &checks,
        "daemon.flags",
        "FAIL",
        &["--cluster-cidr: the daemon runs with 10.244.0.0/16,fd00:10:244::/56, this command has 10.244.0.0/16"],
    );

    // A peer's IPv6 gateway that does not answer: its IPv4 one still does.
    lab.freeze(2);
    lab.nodes[2]
        .node
        .ns
        .ok(&["ip", "-6", "addr", "flush", "dev", "cbr0", "scope", "global"]);
    let (code, checks, _) = lab.doctor(0, &["--probe"]);
    assert_eq!(code, 1);
    expect(
        &checks,
        "probe.node-2",
        "FAIL",
        &[
            "(direct): 3/3 answered",
            &format!("{} (direct): no answer", gateway6(&n2s6)),
        ],
    );
    lab.thaw(2);
    wait_all_ok(&lab, 2, &[]);

    // The IPv6 half of node-0 broken while its daemon is frozen.
    let ns = &lab.nodes[0].node.ns;
    let hop1 = network(&n1s6).to_string();
    let neigh = ns.ok(&["ip", "-6", "neigh", "show", "dev", "cbrnet.vxlan"]);
    let mac1 = after(&neigh, &format!("{hop1} "), "lladdr");
    lab.freeze(0);
    ns.ok(&["sysctl", "-qw", "net.ipv6.conf.eth0.accept_ra=1"]);
    let (code, checks, _) = lab.doctor(0, &[]);
    assert_eq!(code, 0, "a warning alone: {checks:#?}");
    expect(
        &checks,
        "forwarding.ipv6",
        "warn",
        &[
            "accept_ra of eth0 = 1",
            "router advertisements on eth0 are ignored",
        ],
    );
    // The IPv6 gateway added again by hand with duplicate address detection, made to last a
    // minute: tentative, which the daemon (adding it without) never leaves it.
    ns.ok(&["sysctl", "-qw", "net.ipv6.neigh.cbr0.retrans_time_ms=60000"]);
    ns.ok(&["ip", "addr", "del", &gw6, "dev", "cbr0"]);
    ns.ok(&["ip", "addr", "add", &gw6, "dev", "cbr0"]);
    let (code, checks, _) = lab.doctor(0, &[]);
    assert_eq!(code, 1);
    expect(
        &checks,
        "bridge",
        "FAIL",
        &[&format!(
            "gateway {gw6} is tentative or failed duplicate address detection"
        )],
    );
    ns.ok(&["sysctl", "-qw", "net.ipv6.neigh.cbr0.retrans_time_ms=1000"]);
    ns.ok(&["ip", "-6", "addr", "flush", "dev", "cbr0", "scope", "global"]);
    ns.ok(&[
        "ip",
        "addr",
        "add",
        "fd00:10:244:ff::1/64",
        "dev",
        "cbr0",
        "nodad",
    ]);
    ns.ok(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=0"]);
    ns.ok(&["nft", "flush", "chain", "inet", "cbrnet_routed", "postrouting"]);
    ns.ok(&[
        "nft",
        "add",
        "rule",
        "inet",
        "cbrnet_routed",
        "postrouting",
        "ip",
        "saddr",
        &s4,
        "ip",
        "daddr",
        "!=",
        "10.244.0.0/16",
        "masquerade",
    ]);
    ns.ok(&["ip", "-6", "route", "del", &n2s6]);
    ns.ok(&["ip", "-6", "neigh", "del", &hop1, "dev", "cbrnet.vxlan"]);
    let ip2 = lab.nodes[2].ip6.clone().unwrap();
    ns.ok(&[
        "ip",
        "-6",
        "route",
        "add",
        "fd00:10:244:fa::/64",
        "via",
        &ip2,
        "proto",
        "157",
    ]);
    let good = replace_in_subnet_file(
        &lab,
        (&s6, &gateway6(&s6)),
        ("fd00:10:244:c8::/64", "fd00:10:244:c8::1"),
    );
    let (code, checks, _) = lab.doctor(0, &[]);
    assert_eq!(code, 1);
    expect(
        &checks,
        "bridge",
        "FAIL",
        &[&format!("no gateway {gw6}"), "stale address fd00:10:244:ff::1/64"],
    );
    assert!(check(&checks, "bridge")["fix"]
        .as_str()
        .unwrap()
        .contains(&format!("ip addr add {gw6} dev cbr0 nodad")));
    expect(&checks, "forwarding.ipv4", "ok", &["= 1"]);
    expect(
        &checks,
        "forwarding.ipv6",
        "FAIL",
        &["net.ipv6.conf.all.forwarding = 0"],
    );
    expect(
        &checks,
        "masquerade",
        "FAIL",
        &["not exactly the rule of each of", &s6],
    );
    expect(
        &checks,
        "peer.node-2",
        "FAIL",
        &[&n2s6, "(direct)", &format!("no route (want {n2s6} via {ip2})")],
    );
    expect(
        &checks,
        "peer.node-1",
        "FAIL",
        &[&n1s6, "(vxlan)", &format!("no neighbour entry {hop1} -> {mac1}")],
    );
    expect(&checks, "stale", "FAIL", &["route fd00:10:244:fa::/64 via"]);
    expect(
        &checks,
        "subnet-file",
        "FAIL",
        &[&format!("ipv6Subnet fd00:10:244:c8::/64, the lease {s6}")],
    );
    std::fs::write(lab.nodes[0].node.subnet_file(), &good).unwrap();
    // A record of one family in the dual-stack cluster (a hand edit): the lease lacks IPv6.
    let key = s4.replace('/', "-");
    let saved: Value = serde_json::from_slice(&std::fs::read(lab.store_dir().join(&key)).unwrap()).unwrap();
    let mut one = saved["lease"].clone();
    one.as_object_mut().unwrap().remove("ipv6Subnet");
    lab.put_raw(&key, one.to_string().as_bytes());
    let (_, checks, _) = lab.doctor(0, &[]);
    expect(
        &checks,
        "lease",
        "FAIL",
        &["has no IPv6 subnet, though --cluster-cidr has fd00:10:244::/56"],
    );
    lab.put_raw(&key, saved["lease"].to_string().as_bytes());
    lab.thaw(0);
    // As in the IPv4 test: the stale route may wait for the daemon's full check.
    let _ = ns.run(&["ip", "-6", "route", "del", "fd00:10:244:fa::/64", "proto", "157"]);
    wait_all_ok(&lab, 0, &["--probe"]);
}

#[test]
fn an_ipv6_only_node_is_judged_on_ipv6_alone() {
    // node-1 across segments: VXLAN with IPv6 outer addresses (70 bytes)
    let mut lab = lab_of("dr-v6", IpFamily::V6, 2, 2, &[]);
    lab.add_pod(0);
    let s6 = lab.nodes[0].subnet().unwrap();
    // A fresh IPv6 underlay resolves its first neighbours slowly: the first echoes may wait.
    wait_all_ok(&lab, 0, &["--probe"]);
    let (code, checks, stderr) = lab.doctor(0, &["--probe"]);
    assert_eq!(code, 0, "{checks:#?}\n{stderr}");
    assert_eq!(not_ok(&checks), Vec::<(String, String)>::new(), "{checks:#?}");
    // IPv4 forwarding is not the node's business: the daemon leaves it as it was
    assert!(
        checks.iter().all(|c| c["check"] != "forwarding.ipv4"),
        "{checks:#?}"
    );
    expect(&checks, "forwarding.ipv6", "ok", &["= 1"]);
    expect(&checks, "lease", "ok", &[&s6]);
    expect(&checks, "bridge", "ok", &[&format!("{}/64", gateway6(&s6))]);
    expect(&checks, "vxlan.device", "ok", &["local fd50:", "MTU 1430"]);
    expect(
        &checks,
        "mtu",
        "ok",
        &["underlay 1500", "cbrnet.vxlan 1430", "1 pod(s) 1430"],
    );
    let n1s6 = lab.nodes[1].subnet().unwrap();
    expect(
        &checks,
        "probe.node-1",
        "ok",
        &[&format!("{} (vxlan): 3/3 answered", gateway6(&n1s6))],
    );
    // the device's MTU as an IPv4-outer device would have it
    lab.freeze(0);
    let ns = &lab.nodes[0].node.ns;
    ns.ok(&["ip", "link", "set", "cbrnet.vxlan", "mtu", "1450"]);
    let (code, checks, _) = lab.doctor(0, &[]);
    assert_eq!(code, 1);
    expect(
        &checks,
        "mtu",
        "FAIL",
        &["cbrnet.vxlan 1450, not 1430 (underlay less 70)"],
    );
    lab.thaw(0);
    wait_all_ok(&lab, 0, &[]);
}
