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
