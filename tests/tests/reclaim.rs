//! Addresses of pods that vanished without DEL (a reboot, a runtime that never calls DEL) come
//! back by themselves: reclaim, when the pool would otherwise be full.

use cbrnet_tests::{Call, Netns, Node};
use serde_json::{json, Value};
use std::time::Duration;

/// A /29: five addresses to hand out (.2 to .6).
fn small_pool(node: &Node, reclaim_after: &str) -> Value {
    json!({
        "cniVersion": "1.1.0", "name": "testnet", "type": "cbrnet",
        "ipam": {
            "type": "cbrnet-ipam", "subnet": "10.244.50.0/29", "dataDir": node.data_dir(),
            "reclaimAfter": reclaim_after,
        },
    })
}

/// Fills the pool with pods in namespaces of their own, and returns the namespaces.
fn fill(node: &Node, conf: &Value, tag: &str) -> Vec<Netns> {
    (0..5)
        .map(|i| {
            let pod = Netns::new(tag);
            Call::new("ADD", &format!("{tag}{i}"), pod.path(), "eth0")
                .run(&node.ns, conf)
                .expect_ok();
            pod
        })
        .collect()
}

#[test]
fn after_a_reboot_without_del_new_pods_still_get_addresses() {
    let node = Node::new("reboot");
    let conf = small_pool(&node, "1s");
    let pods = fill(&node, &conf, "old");
    let full = Call::new("ADD", "extra", Netns::new("extra").path(), "eth0").run(&node.ns, &conf);
    assert_eq!(full.code(), 100, "live pods are never reclaimed: {}", full.json);
    // the pods die with no DEL (their namespaces go, and their veths with them)
    drop(pods);
    wait_until_veths(&node, 0);
    std::thread::sleep(Duration::from_millis(1100));
    let fresh: Vec<Netns> = (0..5).map(|_| Netns::new("new")).collect();
    for (i, pod) in fresh.iter().enumerate() {
        let out = Call::new("ADD", &format!("new{i}"), pod.path(), "eth0").run(&node.ns, &conf);
        assert!(out.ok, "pod {i}: {} {}", out.json, out.stderr);
        if i == 0 {
            assert!(
                out.stderr.contains("reclaimed"),
                "the reclaim is logged: {}",
                out.stderr
            );
        }
    }
    let owners: Vec<String> = node.reservations("testnet").into_iter().map(|(_, o)| o).collect();
    assert_eq!(owners.len(), 5);
    assert!(owners.iter().all(|o| o.starts_with("new")), "{owners:?}");
}

#[test]
fn reclaim_after_zero_turns_it_off() {
    let node = Node::new("noreclaim");
    let conf = small_pool(&node, "0");
    drop(fill(&node, &conf, "gone"));
    wait_until_veths(&node, 0);
    let out = Call::new("ADD", "extra", Netns::new("extra").path(), "eth0").run(&node.ns, &conf);
    assert_eq!(out.code(), 100, "{}", out.json);
}

#[test]
fn an_add_in_progress_is_never_reclaimed() {
    let node = Node::new("inprog");
    let conf = small_pool(&node, "1s");
    let mut pods = fill(&node, &conf, "live");
    let freed = pods.pop().unwrap();
    Call::new("DEL", "live4", freed.path(), "eth0")
        .run(&node.ns, &conf)
        .expect_ok();
    // an ADD takes the one free address and stops before it creates its veth
    let slow_pod = Netns::new("slow");
    let child =
        Call::new("ADD", "slow", slow_pod.path(), "eth0").start_stopped_at(&node.ns, &conf, "reserved");
    // another pod vanishes without DEL; then every reservation is old enough
    drop(pods.pop());
    wait_until_veths(&node, 3);
    std::thread::sleep(Duration::from_millis(1100));
    // the pool is full: the vanished pod's address is reclaimed, the running ADD's is not
    let out = Call::new("ADD", "next", Netns::new("next").path(), "eth0").run(&node.ns, &conf);
    assert!(out.ok, "{} {}", out.json, out.stderr);
    let out = Call::new("ADD", "more", Netns::new("more").path(), "eth0").run(&node.ns, &conf);
    assert_eq!(
        out.code(),
        100,
        "the running ADD's address was reclaimed: {}",
        out.json
    );
    assert!(node.reservations("testnet").iter().any(|(_, o)| o == "slow eth0"));
    let out = child.resume();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(slow_pod.links().contains(&"eth0".to_string()));
}

/// A deleted namespace takes its veths with it, but the kernel does so in the background.
fn wait_until_veths(node: &Node, n: usize) {
    let t = std::time::Instant::now();
    while node.veths().len() != n {
        assert!(t.elapsed() < Duration::from_secs(10), "veths: {:?}", node.veths());
        std::thread::sleep(Duration::from_millis(20));
    }
}
