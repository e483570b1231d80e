//! `cbrnet-routed doctor` on labs of namespaces: each check in its ok state and in a failing
//! state built on purpose, read from its JSON; the exit codes.

use cbrnet_tests::lab::{Lab, StoreKind};
use serde_json::Value;

/// The check called `name` in doctor's answer.
fn check<'a>(checks: &'a [Value], name: &str) -> &'a Value {
    checks
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {checks:#?}"))
}

#[test]
fn a_healthy_node_is_all_ok() {
    let mut lab = Lab::new("dr-ok", StoreKind::File);
    for i in 0..2 {
        lab.add_node();
        lab.start(i);
    }
    lab.add_pod(0);
    assert!(
        lab.wait_for(std::time::Duration::from_secs(10), |l| l.routes_complete(0)
            && l.routes_complete(1))
    );
    let (code, checks, stderr) = lab.doctor(0, &["--probe"]);
    for c in &checks {
        eprintln!("{} {} {} {}", c["status"], c["check"], c["found"], c["fix"]);
    }
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(check(&checks, "daemon")["status"], "ok");
}
