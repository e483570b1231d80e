//! `cbrnet-lab` as a user runs it: flags judged up front, a lab that passes, and a held lab torn
//! down by a signal, leaving no namespace, daemon or directory behind.

use cbrnet_tests::bin;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The namespaces a lab process made (`cbt-lab-<what>-<pid>-<n>`).
fn namespaces_of(pid: u32) -> Vec<String> {
    let mark = format!("-{pid}-");
    std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("cbt-lab-") && n.contains(&mark))
        .collect()
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // pid (comm) state ppid ...
            let ppid: u32 = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == pid)
                .then(|| e.file_name().to_str()?.parse().ok())
                .flatten()
        })
        .collect()
}

/// Gone, or dead and waiting to be reaped.
fn dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

#[test]
fn bad_flags_are_refused_before_anything_is_made() {
    for args in [
        &["--nodes", "0"][..],
        &["--nodes", "101"],
        &["--pods", "-1"],
        &["--store", "zookeeper"],
        &["--no-such-flag"],
    ] {
        let out = Command::new(bin("cbrnet-lab")).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("error:"), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let help = Command::new(bin("cbrnet-lab")).arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for word in [
        "--nodes", "--pods", "--store", "--hold", "up", "status", "down", "root",
    ] {
        assert!(text.contains(word), "--help does not mention {word}:\n{text}");
    }
}

/// Runs `cbrnet-lab ARGS` to its end; checks it left no namespace and succeeded; its stdout.
fn lab_run(args: &[&str]) -> String {
    let out = Command::new(bin("cbrnet-lab"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = out.id();
    let out = out.wait_with_output().unwrap();
    assert_eq!(namespaces_of(pid), Vec::<String>::new(), "namespaces left");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn a_small_lab_passes_and_leaves_nothing() {
    let text = lab_run(&["--nodes", "2", "--pods", "1"]);
    assert!(text.contains("2 of 2 pod pairs reachable"), "{text}");
    assert!(text.contains("routes (proto 157 = cbrnet)"), "{text}");
    assert!(
        text.contains("EXPIRES") && text.contains(" in 2"),
        "the leases are shown with their expiry: {text}"
    );
}

#[test]
fn a_dual_stack_lab_across_segments_passes_on_both_families() {
    let text = lab_run(&[
        "--nodes",
        "2",
        "--pods",
        "1",
        "--segments",
        "2",
        "--ip-family",
        "dual",
    ]);
    // two pods, each reaching both addresses of the other, through VXLAN (across segments)
    assert!(text.contains("4 of 4 pod pairs reachable"), "{text}");
    assert!(text.contains("fd00:10:244:"), "{text}");
    assert!(
        text.contains("dev cbrnet.vxlan") && text.contains("[vxlan]"),
        "{text}"
    );
}

#[test]
fn a_held_lab_is_torn_down_by_sigterm() {
    let mut lab = Command::new(bin("cbrnet-lab"))
        .args(["--nodes", "2", "--pods", "1", "--hold"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = lab.id();
    // Held open until the lab has exited: `wait` would close it, which is an Enter of its own.
    let _stdin = lab.stdin.take();
    let mut lines = BufReader::new(lab.stdout.take().unwrap()).lines();
    let t0 = Instant::now();
    let mut held = false;
    for line in lines.by_ref() {
        if line.unwrap().starts_with("holding:") {
            held = true;
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "no lab after 60 s");
    }
    assert!(held, "the lab ended before holding");
    assert!(!namespaces_of(pid).is_empty());
    let daemons = children_of(pid);
    assert_eq!(daemons.len(), 2, "one cbrnet-routed per node while the lab holds");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let st = lab.wait().unwrap();
    assert_eq!(st.code(), Some(128 + 15), "{st}");
    assert_eq!(namespaces_of(pid), Vec::<String>::new(), "namespaces left");
    // The daemons were killed with the lab (SIGKILL takes effect before the lab exits).
    let t0 = Instant::now();
    while !daemons.iter().all(|d| dead(*d)) && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        daemons.iter().all(|d| dead(*d)),
        "daemons {daemons:?} outlived the lab"
    );
}

/// `cbrnet-lab down` (of the lab whose state is at this path) when the test ends, pass or fail.
struct Down(std::path::PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new(bin("cbrnet-lab"))
            .arg("down")
            .env("CBRNET_LAB_STATE", &self.0)
            .output();
    }
}

/// `cbrnet-routed doctor --json` on a node of a lab that is up, with its daemon's flags.
fn doctor(node: &serde_json::Value) -> (i32, Vec<serde_json::Value>) {
    let args: Vec<&str> = node["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let out = Command::new("ip")
        .args(["netns", "exec", node["netns"].as_str().unwrap()])
        .arg(bin("cbrnet-routed"))
        .arg("doctor")
        .args(args)
        .arg("--json")
        .arg("--cni-bin-dir")
        .arg(cbrnet_tests::bin_dir())
        .output()
        .unwrap();
    let checks = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), checks)
}

/// The status of check `name`, and what it found.
fn verdict(checks: &[serde_json::Value], name: &str) -> (String, String) {
    let c = checks
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {checks:#?}"));
    (
        c["status"].as_str().unwrap().to_string(),
        c["found"].as_str().unwrap().to_string(),
    )
}

/// Waits until doctor says every check of the node is ok.
fn wait_all_ok(node: &serde_json::Value) {
    let t = Instant::now();
    loop {
        let (code, checks) = doctor(node);
        let bad: Vec<&serde_json::Value> = checks.iter().filter(|c| c["status"] != "ok").collect();
        if code == 0 && bad.is_empty() {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(15), "not repaired: {bad:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).unwrap();
}

#[test]
fn status_shows_doctor_per_node_which_names_a_node_broken_on_purpose_until_repaired() {
    use nix::sys::signal::Signal::{SIGCONT, SIGSTOP, SIGTERM};
    let dir = cbrnet_tests::temp_dir();
    let state = dir.path().join("state.json");
    let lab = |args: &[&str]| {
        Command::new(bin("cbrnet-lab"))
            .args(args)
            .env("CBRNET_LAB_STATE", &state)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let _down = Down(state.clone());
    let out = lab(&["up", "--nodes", "2", "--pods", "1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status = || String::from_utf8(lab(&["status"]).stdout).unwrap();
    let text = status();
    let summaries: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("doctor:"))
        .collect();
    assert_eq!(summaries.len(), 2, "{text}");
    assert!(
        summaries.iter().all(|l| l.ends_with("0 warn, 0 FAIL (exit 0)")),
        "{text}"
    );
    let st: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let (node, peer) = (&st["nodes"][0], &st["nodes"][1]);
    let ns = node["netns"].as_str().unwrap();
    let pid = node["pid"].as_u64().unwrap() as u32;
    let in_ns = |args: &[&str]| {
        let out = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let subnet_of = |n: &serde_json::Value| -> String {
        let f: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(n["subnetFile"].as_str().unwrap()).unwrap())
                .unwrap();
        f["subnet"].as_str().unwrap().to_string()
    };
    let (mine, theirs) = (subnet_of(node), subnet_of(peer));

    // A route deleted (the daemon frozen, so that the fault stays to be seen).
    signal(pid, SIGSTOP);
    in_ns(&["ip", "route", "del", &theirs]);
    let (code, checks) = doctor(node);
    assert_eq!(code, 1);
    let (s, found) = verdict(&checks, "peer.node-1");
    assert!(s == "FAIL" && found.contains("no route"), "{found}");
    assert!(status().contains("FAIL peer.node-1"), "status names it");
    signal(pid, SIGCONT);
    wait_all_ok(node);

    // The bridge's address flushed.
    signal(pid, SIGSTOP);
    in_ns(&["ip", "addr", "flush", "dev", "cbr0"]);
    let (code, checks) = doctor(node);
    assert_eq!(code, 1);
    let (s, found) = verdict(&checks, "bridge");
    assert!(s == "FAIL" && found.contains("no gateway"), "{found}");
    signal(pid, SIGCONT);
    wait_all_ok(node);

    // A junk reservation: an address held by a pod that never was, an hour old.
    let net: std::net::Ipv4Addr = mine.split('/').next().unwrap().parse().unwrap();
    let junk_ip = std::net::Ipv4Addr::from(u32::from(net) + 77).to_string();
    let junk = std::path::Path::new(node["dataDir"].as_str().unwrap())
        .join("labnet")
        .join(&junk_ip);
    signal(pid, SIGSTOP);
    std::os::unix::fs::symlink("junkpod eth0", &junk).unwrap();
    in_ns(&["touch", "-h", "-d", "1 hour ago", junk.to_str().unwrap()]);
    let (code, checks) = doctor(node);
    assert_eq!(code, 1);
    let (s, found) = verdict(&checks, "ipam.labnet");
    assert!(
        s == "FAIL" && found.contains(&junk_ip) && found.contains("junkpod/eth0"),
        "{found}"
    );
    signal(pid, SIGCONT);
    wait_all_ok(node);
    assert!(!junk.exists(), "reclaimed");

    // The daemon stopped; started again, it is all ok.
    signal(pid, SIGTERM);
    let t = Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}")).exists() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, checks) = doctor(node);
    assert_eq!(code, 1);
    let (s, found) = verdict(&checks, "daemon");
    assert!(s == "FAIL" && found.contains("not running"), "{found}");
    let args: Vec<&str> = node["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let again = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(bin("cbrnet-routed"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _again = cbrnet_tests::KillOnDrop(again);
    wait_all_ok(node);
}
