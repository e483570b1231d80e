//! `cbrnet` killed in the middle of ADD: DEL then cleans up everything it had done.

use cbrnet_tests::{Call, Netns, Node};
use nix::sys::signal::Signal;

#[test]
fn killed_mid_add_then_del_cleans_up() {
    // The plugin stops itself (SIGSTOP) at the named point when CBRNET_TEST_STOP_AT says so.
    for point in ["reserved", "veth"] {
        let node = Node::new("crash");
        let conf = node.conf("1.1.0", "10.244.70.0/24");
        let pod = Netns::new("crash-pod");
        let child = Call::new("ADD", "victim", pod.path(), "eth0").start_stopped_at(&node.ns, &conf, point);

        // Half done: the address is durable; at "veth" the pair exists too.
        assert_eq!(node.reservations("testnet").len(), 1, "{point}");
        if point == "veth" {
            assert_eq!(node.veths().len(), 1);
            assert!(pod.links().contains(&"eth0".to_string()));
        }
        let status = child.kill();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(Signal::SIGKILL as i32)
        );

        // The runtime's answer to a failed ADD is DEL.
        Call::new("DEL", "victim", pod.path(), "eth0")
            .run(&node.ns, &conf)
            .expect_ok();
        assert!(node.reservations("testnet").is_empty(), "{point}: address leaked");
        assert!(node.veths().is_empty(), "{point}: veth leaked");
        assert_eq!(pod.links(), ["lo"], "{point}");
        // and the node is fine for the next pod
        let r = Call::new("ADD", "next", pod.path(), "eth0")
            .run(&node.ns, &conf)
            .expect_ok();
        assert!(pod.can_ping(r["ips"][0]["gateway"].as_str().unwrap()));
    }
}
