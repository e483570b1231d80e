//! cbrnet next to the reference plugins (Debian's containernetworking-plugins): the reference
//! `bridge` with `cbrnet-ipam`, and `cbrnet` with `host-local`.

use cbrnet_tests::{result_ip, Call, Netns, Node, REFERENCE_CNI_DIR};
use serde_json::json;
use std::path::Path;

#[test]
fn reference_bridge_with_cbrnet_ipam() {
    let node = Node::new("refbr");
    let conf = json!({
        "cniVersion": "1.0.0", "name": "testnet", "type": "bridge", "bridge": "cbr0",
        "isGateway": true, "isDefaultGateway": true,
        "ipam": {"type": "cbrnet-ipam", "subnet": "10.244.60.0/24", "dataDir": node.data_dir()},
    });
    let pods = [Netns::new("refbr-pod"), Netns::new("refbr-pod")];
    let mut ips = Vec::new();
    for (i, p) in pods.iter().enumerate() {
        let mut c = Call::new("ADD", ["a", "b"][i], p.path(), "eth0");
        c.plugin = Path::new(REFERENCE_CNI_DIR).join("bridge");
        let r = c.run(&node.ns, &conf).expect_ok();
        ips.push(result_ip(&r));
        // CHECK goes through the bridge into cbrnet-ipam's CHECK
        let mut with_prev = conf.clone();
        with_prev["prevResult"] = r;
        let mut c = Call::new("CHECK", ["a", "b"][i], p.path(), "eth0");
        c.plugin = Path::new(REFERENCE_CNI_DIR).join("bridge");
        c.run(&node.ns, &with_prev).expect_ok();
    }
    assert_eq!(node.reservations("testnet").len(), 2);
    assert!(pods[0].can_ping(&ips[1]));
    assert!(pods[1].can_ping("10.244.60.1"));
    for (i, p) in pods.iter().enumerate() {
        let mut c = Call::new("DEL", ["a", "b"][i], p.path(), "eth0");
        c.plugin = Path::new(REFERENCE_CNI_DIR).join("bridge");
        c.run(&node.ns, &conf).expect_ok();
    }
    assert!(node.reservations("testnet").is_empty());
}

#[test]
fn cbrnet_with_host_local() {
    let node = Node::new("hl");
    let hl_dir = node.dir.path().join("host-local");
    let conf = json!({
        "cniVersion": "1.0.0", "name": "testnet", "type": "cbrnet",
        "ipam": {"type": "host-local", "subnet": "10.244.61.0/24", "dataDir": hl_dir},
    });
    let pods = [Netns::new("hl-pod"), Netns::new("hl-pod")];
    let mut ips = Vec::new();
    for (i, p) in pods.iter().enumerate() {
        let r = Call::new("ADD", ["a", "b"][i], p.path(), "eth0")
            .run(&node.ns, &conf)
            .expect_ok();
        ips.push(result_ip(&r));
    }
    assert!(pods[0].can_ping(&ips[1]));
    assert!(pods[1].can_ping(&ips[0]));
    let held = |ip: &str| hl_dir.join("testnet").join(ip).exists();
    assert!(held(&ips[0]) && held(&ips[1]));
    // a failing ADD after host-local gave an address hands it back (IPAM DEL)
    let busy = Netns::new("hl-busy");
    busy.ok(&[
        "ip",
        "link",
        "add",
        "eth0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0-peer",
    ]);
    let out = Call::new("ADD", "c", busy.path(), "eth0").run(&node.ns, &conf);
    assert_eq!(out.code(), 112, "{}", out.json);
    let files: Vec<_> = std::fs::read_dir(hl_dir.join("testnet"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
        .collect();
    assert_eq!(
        files.len(),
        2,
        "host-local still holds the failed ADD's address: {files:?}"
    );
    for (i, p) in pods.iter().enumerate() {
        Call::new("DEL", ["a", "b"][i], p.path(), "eth0")
            .run(&node.ns, &conf)
            .expect_ok();
    }
    assert!(!held(&ips[0]) && !held(&ips[1]));
    assert!(node.veths().is_empty());
}
