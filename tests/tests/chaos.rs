//! `cbrnet-lab chaos` for a minute per store: faults drawn from a fixed seed (the same faults in
//! every run; peers routed directly) and from a fresh one (new faults each run, the report names
//! the seed to replay; peers through the VXLAN device).
//! Any broken promise (safety, liveness, an exit, a leak) fails the test with the report.

use cbrnet_tests::chaos::{self, rng, Config};
use cbrnet_tests::lab::StoreKind;
use std::time::Duration;

/// One run at a time: each brings up five daemons (and three etcd members), and the runs judge
/// convergence against bounds that assume the machine is theirs.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(tag: &str, store: StoreKind, members: usize, backend: Option<&str>, seed: u64) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let cfg = Config {
        nodes: 5,
        pods: 2,
        duration: Duration::from_secs(60),
        seed,
        store,
        etcd_members: members,
        lease_ttl: 4,
        backend: backend.map(str::to_owned),
        tag: tag.into(),
    };
    let report = chaos::run(&cfg);
    report.print(&cfg);
    assert!(
        report.violations.is_empty(),
        "seed {}: {} violations; replay: {}",
        cfg.seed,
        report.violations.len(),
        cfg.replay()
    );
    // A run that injected nothing or checked nothing proves nothing.
    assert!(report.rounds >= 3, "{} rounds", report.rounds);
    assert!(report.checks > 100, "{} checks", report.checks);
}

#[test]
fn file_store_under_faults_of_a_fixed_seed() {
    run("chf1", StoreKind::File, 0, None, 3);
}

#[test]
fn file_store_over_vxlan_under_faults_of_a_fresh_seed() {
    run("chf2", StoreKind::File, 0, Some("vxlan"), rng::fresh_seed());
}

#[test]
fn etcd_of_three_members_under_faults_of_a_fixed_seed() {
    run("che1", StoreKind::Etcd, 3, None, 2);
}

#[test]
fn etcd_of_three_members_over_vxlan_under_faults_of_a_fresh_seed() {
    run("che2", StoreKind::Etcd, 3, Some("vxlan"), rng::fresh_seed());
}
