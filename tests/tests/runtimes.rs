//! cbrnet under real runtimes from Debian's packages, each in namespaces of the test's own (see
//! `cbrnet_tests::runtime`): containerd 1.6 through `ctr run --cni`, and podman 4.3 through its
//! CNI backend. Containers get addresses, reach each other, and give the addresses back when they
//! go; and nothing is left behind. On a dual-stack network, one address of each family, each
//! reaching the other containers.

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

/// Kills the task of a `ctr run --rm` (its `sleep` ignores SIGTERM) and waits for ctr, which
/// returns after its DEL and the container's removal.
fn kill_run_rm(ctrd: &Containerd, id: &str) {
    ctrd.kill(id);
    let st = ctrd.sb.wait_exit(&format!("ctr-{id}"), Duration::from_secs(30));
    assert_eq!(
        st.code(),
        Some(137),
        "{id}: {}",
        ctrd.sb.log(&format!("ctr-{id}"))
    );
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
        kill_run_rm(&ctrd, id);
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

/// A dual-stack container's two addresses (IPv4, IPv6) as reserved for `owner`, after checking
/// that `eth0` (`ip -o addr show dev eth0` in the container: `addrs`) carries both.
fn both_families(sb: &Sandbox, owner: &str, addrs: &str) -> (String, String) {
    let ips = sb.reserved_all(owner);
    let reservations = sb.node.reservations(NETWORK);
    let [v4, v6] = ips.as_slice() else {
        panic!("{owner}: not one address of each family: {reservations:?}");
    };
    assert!(!v4.contains(':') && v6.contains(':'), "{owner}: {ips:?}");
    assert!(addrs.contains(&format!("inet {v4}/24")), "{owner}: {addrs}");
    assert!(
        addrs.contains(&format!("inet6 {v6}/64 scope global")),
        "{owner}: {addrs}"
    );
    // usable at once: no duplicate address detection on an address unique by allocation
    assert!(
        !addrs
            .lines()
            .any(|l| l.contains("scope global") && l.contains("tentative")),
        "{owner}: {addrs}"
    );
    (v4.clone(), v6.clone())
}

/// Containers "a" and "b" (addresses `ips`: IPv4, IPv6) ping each other on both families;
/// `exec_ok` runs a command in a container.
fn ping_both_families(ips: &[(String, String)], exec_ok: impl Fn(&str, &[&str]) -> String) {
    for (from, to) in [("a", &ips[1]), ("b", &ips[0])] {
        exec_ok(from, &ping(&to.0));
        exec_ok(from, &ping(&to.1));
    }
}

/// Once the two dual-stack containers are gone: their DELs gave back the addresses of both
/// families, and nothing else was called.
fn gave_both_back(sb: &Sandbox) {
    nothing_held(sb);
    only_adds_and_dels(sb, 2);
}

#[test]
fn containerd_containers_of_a_dual_stack_network_reach_each_other_on_both_families() {
    let t = Instant::now();
    let ctrd = Containerd::start("ctrd-ds");
    // no subnet in the config: both families from the node's subnet file, as on a node of a
    // dual-stack cluster
    let file = ctrd.sb.node.subnet_file();
    cbrnet_tests::write_subnet_file(
        &file,
        &[
            ("10.244.83.0/24", "10.244.0.0/16"),
            ("fd00:10:244:53::/64", "fd00:10:244::/56"),
        ],
    );
    ctrd.sb
        .install_network(&ctrd.sb.network_with(json!({"subnetFile": file})));
    ctrd.import(&BusyboxImage::build(&ctrd.sb.dir().join("image")));
    for id in ["a", "b"] {
        ctrd.run_rm(id, &["sleep", "600"]);
    }
    let mut ips = Vec::new();
    for id in ["a", "b"] {
        ctrd.wait_running(id);
        let addrs = ctrd.exec_ok(id, &["ip", "-o", "addr", "show", "dev", "eth0"]);
        let owner = format!("{} eth0", Containerd::cni_id(id));
        ips.push(both_families(&ctrd.sb, &owner, &addrs));
        // a default route of each family, via the bridge's gateways
        let routes = ctrd.exec_ok(id, &["ip", "-6", "route", "show", "default"]);
        assert!(routes.contains("via fd00:10:244:53::1"), "{id}: {routes}");
    }
    ping_both_families(&ips, |id, argv| ctrd.exec_ok(id, argv));
    assert_eq!(ctrd.sb.node.reservations(NETWORK).len(), 4);
    for id in ["a", "b"] {
        kill_run_rm(&ctrd, id);
    }
    gave_both_back(&ctrd.sb);
    assert_eq!(ctrd.close(), Vec::<String>::new(), "left behind");
    eprintln!("containerd dual-stack test: {:?}", t.elapsed());
}

#[test]
fn podman_containers_of_a_dual_stack_network_reach_each_other_on_both_families() {
    let t = Instant::now();
    let podman = Podman::new("podman-ds");
    // both families in the conflist: one range set each
    let ranges = json!([[{"subnet": "10.244.84.0/24"}], [{"subnet": "fd00:10:244:54::/64"}]]);
    podman
        .sb
        .install_network(&podman.sb.network_with(json!({"ranges": ranges})));
    podman.import(&BusyboxImage::build(&podman.sb.dir().join("image")));
    let mut ips = Vec::new();
    for name in ["a", "b"] {
        let id = podman.run_detached(name, &["sleep", "600"]);
        let addrs = podman.exec_ok(name, &["ip", "-o", "addr", "show", "dev", "eth0"]);
        let (v4, v6) = both_families(&podman.sb, &format!("{id} eth0"), &addrs);
        // podman took both from the plugin's result
        assert_eq!((podman.ip(name), podman.ip6(name)), (v4.clone(), v6.clone()));
        ips.push((v4, v6));
    }
    ping_both_families(&ips, |name, argv| podman.exec_ok(name, argv));
    assert_eq!(podman.sb.node.reservations(NETWORK).len(), 4);
    podman.ok(&["rm", "--force", "--time", "0", "a", "b"]);
    assert_eq!(podman.ok(&["ps", "--all", "--quiet"]).trim(), "");
    gave_both_back(&podman.sb);
    assert_eq!(podman.close(), Vec::<String>::new(), "left behind");
    eprintln!("podman dual-stack test: {:?}", t.elapsed());
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
