//! `cbrnet-routed` in a lab of nodes: leases, host-gw routes, pods talking across nodes.

use cbrnet_tests::lab::Lab;
use std::time::Duration;

fn lab_of(tag: &str, nodes: usize, store: Option<String>) -> Lab {
    let mut lab = Lab::new(tag, store);
    for _ in 0..nodes {
        let i = lab.add_node();
        lab.start(i);
    }
    lab
}

#[test]
fn three_nodes_file_store_every_pod_reaches_every_pod() {
    let mut lab = lab_of("lab3", 3, None);
    for i in 0..3 {
        lab.add_pod(i);
        lab.add_pod(i);
    }
    for i in 0..3 {
        assert!(
            lab.wait_routes(i, Duration::from_secs(5), |_| lab.routes_complete(i))
                .is_some(),
            "node {i}: {}",
            lab.nodes[i].route_table()
        );
    }
    assert_eq!(lab.unreachable_pairs(), Vec::<(String, String)>::new());
    let leases = lab.leases();
    assert_eq!(leases.as_array().unwrap().len(), 3);
    let subnets: std::collections::HashSet<_> = lab.nodes.iter().map(|n| n.subnet().unwrap()).collect();
    assert_eq!(subnets.len(), 3);
}
