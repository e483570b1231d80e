//! `skel::run` as a plugin binary meets it: a process of its own (it exits), started the way a
//! runtime starts a plugin. Each test runs this test binary again as the plugin, with
//! `SKEL_CHILD` naming what the handler does, and `SKEL_CLOSE_STDOUT` closing descriptor 1 just
//! before `skel::run` (a Rust binary's own start-up has reopened it already by then; the plugins
//! start from C's `main` and rely on `skel::run` for that).

use cni_spec::skel::{self, About};
use serde_json::{json, Value};
use std::process::{Command, Output, Stdio};

const ABOUT: About = About {
    name: "skel-test",
    version: "0",
};

/// In the child: runs `skel::run` with the handler `SKEL_CHILD` names, and never returns.
fn child() {
    let Ok(what) = std::env::var("SKEL_CHILD") else {
        return;
    };
    if std::env::var_os("SKEL_CLOSE_STDOUT").is_some() {
        // SAFETY: closes descriptor 1, which nothing in this process holds as an owned handle
        // (std's stdout writes to whatever descriptor 1 is).
        unsafe { nix::libc::close(1) };
    }
    skel::run(&ABOUT, |_, _| match what.as_str() {
        "panic" => panic!("boom at the handler"),
        // Opens a file before printing the result: with stdout closed by the caller, the file
        // would get descriptor 1, and the result would land in it.
        file => {
            std::fs::write(file, b"data").map_err(|e| cni_spec::CniError::new(5, e.to_string()))?;
            let f = std::fs::OpenOptions::new()
                .append(true)
                .open(file)
                .map_err(|e| cni_spec::CniError::new(5, e.to_string()))?;
            std::mem::forget(f);
            Ok(Some(json!({"cniVersion": "1.1.0"})))
        }
    })
}

/// This binary run again as the plugin, for the test `name`, with ADD's environment.
fn plugin(name: &str, what: &str, close_stdout: bool) -> Output {
    let mut cmd = Command::new(std::env::current_exe().expect("the test binary's path"));
    cmd.args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env("SKEL_CHILD", what)
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "skel-test")
        .env("CNI_NETNS", "/proc/self/ns/net")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/nonexistent")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if close_stdout {
        cmd.env("SKEL_CLOSE_STDOUT", "1");
    }
    cmd.output().expect("running the test binary as the plugin")
}

#[test]
fn a_panic_in_a_command_is_cni_error_999_on_stdout() {
    child();
    let out = plugin("a_panic_in_a_command_is_cni_error_999_on_stdout", "panic", false);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // The harness's own "test ... " has no newline before it.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = stdout
        .rfind("{\"cniVersion\"")
        .map_or("", |at| stdout[at..].trim());
    let err: Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("no error JSON on stdout ({e}): {stdout}"));
    assert_eq!(err["code"], json!(skel::PANIC), "{err}");
    assert!(
        err["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("boom at the handler"),
        "{err}"
    );
}

#[test]
fn a_closed_stdout_is_not_reused_by_the_files_a_command_opens() {
    child();
    let file = std::env::temp_dir().join(format!("cni-spec-skel-{}", std::process::id()));
    let name = "a_closed_stdout_is_not_reused_by_the_files_a_command_opens";
    let out = plugin(name, file.to_str().expect("a UTF-8 temp path"), true);
    let written = std::fs::read(&file);
    let _ = std::fs::remove_file(&file);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        written.expect("the file the command wrote"),
        b"data",
        "the result went into the command's file"
    );
    // And with stdout open, the same command prints its result there.
    let out = plugin(name, file.to_str().expect("a UTF-8 temp path"), false);
    let _ = std::fs::remove_file(&file);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"cniVersion\":\"1.1.0\""),
        "{out:?}"
    );
}
