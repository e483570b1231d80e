//! cbrnet under real runtimes from Debian's packages, each in namespaces of the test's own (see
//! `cbrnet_tests::runtime`): containerd 1.6 through `ctr run --cni`, and podman 4.3 through its
//! CNI backend. Containers get addresses, reach each other, and give the addresses back when they
//! go; and nothing is left behind.

use cbrnet_tests::runtime::{poll_until, BusyboxImage, Containerd, Podman, Sandbox, NETWORK};
use serde_json::json;
use std::time::{Duration, Instant};

const PING: &[&str] = &["ping", "-c", "2", "-i", "0.2", "-W", "2"];

fn ping(to: &str) -> Vec<&str> {
    let mut v = PING.to_vec();
    v.push(to);
    v
}

/// Once containers are gone: no reservation, no host veth, and whatever the runtime logged from
/// the plugin holds no error.
fn nothing_held(sb: &Sandbox) {
    assert_eq!(sb.node.reservations(NETWORK), vec![], "addresses still reserved");
    assert_eq!(sb.node.veths(), Vec::<String>::new(), "host veths left");
    let log = sb.cbrnet_log();
    assert!(!log.contains(" ERROR "), "the plugin logged errors: {log}");
}

/// Nothing but its ADDs and DELs, once each per container: no warnings, no retries.
fn only_adds_and_dels(sb: &Sandbox, containers: usize) {
    let log = sb.cbrnet_log();
    assert!(!log.contains(" WARN "), "{log}");
    assert_eq!(log.matches("command=\"ADD\"").count(), containers, "{log}");
    assert_eq!(log.matches("command=\"DEL\"").count(), containers, "{log}");
}

#[test]
fn containerd_containers_get_addresses_reach_each_other_and_give_them_back() {
    let t = Instant::now();
    let ctrd = Containerd::start("ctrd");
    ctrd.sb.install_network(&ctrd.sb.network("10.244.80.0/24"));
    ctrd.import(&BusyboxImage::build(&ctrd.sb.dir().join("image")));
    for id in ["a", "b"] {
        ctrd.run_rm(id, &["sleep", "600"]);
    }
    let mut ips = Vec::new();
    for id in ["a", "b"] {
        ctrd.wait_running(id);
        let owner = format!("{} eth0", Containerd::cni_id(id));
        let ip = ctrd
            .sb
            .reserved_for(&owner)
            .unwrap_or_else(|| panic!("no address for {owner}: {:?}", ctrd.sb.node.reservations(NETWORK)));
        // the container's eth0 carries the reserved address
        let addrs = ctrd.exec_ok(id, &["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
        assert!(addrs.contains(&format!("{ip}/24")), "{id}: {addrs}");
        ips.push(ip);
    }
    assert_eq!(ctrd.sb.node.veths().len(), 2);
    ctrd.exec_ok("a", &ping(&ips[1]));
    ctrd.exec_ok("b", &ping(&ips[0]));
    // a container that ends by itself: ctr calls DEL once its task has exited
    let c = ctrd.run_rm_to_end("c", &ping(&ips[0]));
    assert!(c.status.success(), "{c:?}");
    assert_eq!(ctrd.sb.node.reservations(NETWORK).len(), 2);
    for id in ["a", "b"] {
        ctrd.kill(id);
        // `ctr run --rm` returns after its DEL and the container's removal
        let st = ctrd.sb.wait_exit(&format!("ctr-{id}"), Duration::from_secs(30));
        assert_eq!(
            st.code(),
            Some(137),
            "{id}: {}",
            ctrd.sb.log(&format!("ctr-{id}"))
        );
    }
    assert_eq!(ctrd.ctr_ok(&["container", "list", "--quiet"]).trim(), "");
    nothing_held(&ctrd.sb);
    // the plugin's stderr reaches ctr's: a quiet plugin leaves the terminal alone
    for id in ["ctr-a", "ctr-b"] {
        let log = ctrd.sb.log(id);
        assert!(log.trim().is_empty(), "{id} printed: {log}");
    }
    assert!(c.stderr.is_empty(), "{}", String::from_utf8_lossy(&c.stderr));
    only_adds_and_dels(&ctrd.sb, 3);
    assert_eq!(ctrd.close(), Vec::<String>::new(), "left behind");
    eprintln!("containerd test: {:?}", t.elapsed());
}

#[test]
fn podman_containers_get_addresses_reach_each_other_and_give_them_back() {
    let t = Instant::now();
    let podman = Podman::new("podman");
    podman.sb.install_network(&podman.sb.network("10.244.81.0/24"));
    podman.import(&BusyboxImage::build(&podman.sb.dir().join("image")));
    let mut ips = Vec::new();
    for name in ["a", "b"] {
        let id = podman.run_detached(name, &["sleep", "600"]);
        let ip = podman.ip(name);
        assert_eq!(
            podman.sb.reserved_for(&format!("{id} eth0")),
            Some(ip.clone()),
            "{:?}",
            podman.sb.node.reservations(NETWORK)
        );
        let addrs = podman.exec_ok(name, &["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
        assert!(addrs.contains(&format!("{ip}/24")), "{name}: {addrs}");
        ips.push(ip);
    }
    assert_eq!(podman.sb.node.veths().len(), 2);
    podman.exec_ok("a", &ping(&ips[1]));
    podman.exec_ok("b", &ping(&ips[0]));
    // a container that ends by itself: `podman run --rm` tears its network down
    let c = podman.run_rm_to_end("c", &ping(&ips[0]));
    assert!(c.status.success(), "{c:?}");
    assert_eq!(podman.sb.node.reservations(NETWORK).len(), 2);
    // -t 0: sleep, PID 1 in its container, ignores the SIGTERM podman would wait 10 s on
    podman.ok(&["rm", "--force", "--time", "0", "a", "b"]);
    assert_eq!(podman.ok(&["ps", "--all", "--quiet"]).trim(), "");
    nothing_held(&podman.sb);
    only_adds_and_dels(&podman.sb, 3);
    // podman's own namespace files (/run/netns/netns-*) are gone too
    let netns: Vec<_> = std::fs::read_dir(podman.sb.inside("/run/netns"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(netns.is_empty(), "{netns:?}");
    assert_eq!(podman.close(), Vec::<String>::new(), "left behind");
    eprintln!("podman test: {:?}", t.elapsed());
}

/// `ctr run --detach` never calls DEL, and neither do `ctr task kill`, `task rm` or `container rm`
/// (containerd 1.6): the address stays reserved after the container is gone. cbrnet takes it back
/// when the pool runs out (`reclaimAfter`), since the container's veth is gone.
#[test]
fn an_address_ctr_leaks_with_a_detached_container_is_reclaimed_when_the_pool_runs_out() {
    let t = Instant::now();
    let ctrd = Containerd::start("ctrd-leak");
    // a /30: one address for containers
    let mut conf = ctrd.sb.network("10.244.82.0/30");
    conf["plugins"][0]["ipam"]["reclaimAfter"] = json!("1ms");
    ctrd.sb.install_network(&conf);
    ctrd.import(&BusyboxImage::build(&ctrd.sb.dir().join("image")));
    let out = ctrd.run_detached("gone", &["sleep", "600"]);
    assert!(out.status.success(), "{out:?}");
    let ip = ctrd
        .sb
        .reserved_for(&format!("{} eth0", Containerd::cni_id("gone")));
    assert_eq!(ip.as_deref(), Some("10.244.82.2"));
    ctrd.kill("gone");
    // `task delete` refuses a task that has not stopped yet: wait for it to stop
    let stopped = poll_until(Duration::from_secs(30), || {
        ctrd.ctr_ok(&["task", "list"])
            .lines()
            .any(|l| l.starts_with("gone ") && l.contains("STOPPED"))
    });
    assert!(stopped, "{}", ctrd.ctr_ok(&["task", "list"]));
    ctrd.ctr_ok(&["task", "delete", "gone"]);
    ctrd.ctr_ok(&["container", "delete", "gone"]);
    // the kernel removes the pair with the container's namespace, in the background
    let veth_gone = poll_until(Duration::from_secs(10), || ctrd.sb.node.veths().is_empty());
    assert!(veth_gone, "{:?}", ctrd.sb.node.veths());
    assert_eq!(
        ctrd.sb.node.reservations(NETWORK).len(),
        1,
        "ctr called DEL after all: the leak this test is about is gone"
    );
    let next = ctrd.run_rm_to_end("next", &["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    let stdout = String::from_utf8_lossy(&next.stdout);
    let stderr = String::from_utf8_lossy(&next.stderr);
    assert!(next.status.success(), "{stdout} {stderr}");
    assert!(stdout.contains("10.244.82.2/30"), "{stdout}");
    // the plugin says so, on ctr's stderr
    assert!(
        stderr.contains("reclaimed 10.244.82.2 of cbt-gone/eth0"),
        "{stderr}"
    );
    nothing_held(&ctrd.sb);
    assert_eq!(ctrd.close(), Vec::<String>::new(), "left behind");
    eprintln!("containerd reclaim test: {:?}", t.elapsed());
}
