//! Many plugin processes at once on one node.

use cbrnet_tests::{bin, result_ip, Call, Netns, Node};
use serde_json::json;
use std::collections::HashSet;

#[test]
fn sixty_four_concurrent_adds_then_dels() {
    const N: usize = 64;
    let node = Node::new("conc");
    let conf = node.conf("1.1.0", "10.244.50.0/24");
    let pods: Vec<Netns> = (0..N).map(|_| Netns::new("conc-pod")).collect();
    let ids: Vec<String> = (0..N).map(|i| format!("pod-{i}")).collect();
    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = pods
            .iter()
            .zip(&ids)
            .map(|(p, id)| {
                let (node, conf) = (&node, &conf);
                s.spawn(move || Call::new("ADD", id, p.path(), "eth0").run(&node.ns, conf))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ips: Vec<String> = results.into_iter().map(|r| result_ip(&r.expect_ok())).collect();
    let distinct: HashSet<&String> = ips.iter().collect();
    assert_eq!(distinct.len(), N, "duplicate addresses: {ips:?}");
    assert_eq!(node.reservations("testnet").len(), N);
    assert_eq!(node.veths().len(), N);
    // they are real: the first pod reaches the last
    assert!(pods[0].can_ping(&ips[N - 1]));

    std::thread::scope(|s| {
        for (p, id) in pods.iter().zip(&ids) {
            let (node, conf) = (&node, &conf);
            s.spawn(move || {
                Call::new("DEL", id, p.path(), "eth0")
                    .run(&node.ns, conf)
                    .expect_ok()
            });
        }
    });
    assert!(node.reservations("testnet").is_empty());
    assert!(node.veths().is_empty());
}

#[test]
fn the_pool_fills_exactly_then_names_the_subnet() {
    // A /26 has 64 addresses: minus network, broadcast and gateway, 61 to hand out. The
    // standalone IPAM plugin allocates without touching namespaces, so this needs no pods.
    let node = Node::new("fill");
    let conf = json!({
        "cniVersion": "1.1.0", "name": "fillnet", "type": "bridge",
        "ipam": {"type": "cbrnet-ipam", "subnet": "10.244.51.0/26", "dataDir": node.data_dir()},
    });
    let ipam = |cmd, id: &str| {
        let mut c = Call::new(cmd, id, "/dev/null-unused", "eth0");
        c.plugin = bin("cbrnet-ipam");
        c.run(&node.ns, &conf)
    };
    let ids: Vec<String> = (0..61).map(|i| format!("c{i}")).collect();
    let got: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = ids.iter().map(|id| s.spawn(move || ipam("ADD", id))).collect();
        hs.into_iter()
            .map(|h| result_ip(&h.join().unwrap().expect_ok()))
            .collect()
    });
    let distinct: HashSet<&String> = got.iter().collect();
    assert_eq!(distinct.len(), 61);
    assert!(!distinct.contains(&"10.244.51.0".to_string()));
    assert!(!distinct.contains(&"10.244.51.1".to_string()));
    assert!(!distinct.contains(&"10.244.51.63".to_string()));
    let full = ipam("ADD", "one-too-many");
    assert_eq!(full.code(), 100, "{}", full.json);
    assert!(
        full.json["msg"].as_str().unwrap().contains("10.244.51.0/26"),
        "{}",
        full.json
    );
    // one goes, and exactly that one comes back
    ipam("DEL", "c7").expect_ok();
    let again = result_ip(&ipam("ADD", "newcomer").expect_ok());
    assert_eq!(again, got[7]);
}
