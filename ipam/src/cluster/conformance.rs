//! What every `LeaseStore` must do, as tests each backend runs against itself.

use super::lease::{acquire, live, release, renew, LeaseConfig};
use super::record::Versioned;
use super::store::LeaseStore;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

pub fn cfg(cidr: &str, len: u8) -> LeaseConfig {
    LeaseConfig::new(cidr.parse().unwrap(), len, Duration::from_secs(60)).unwrap()
}

/// A node gets its subnet back by name with its new IP; renew bumps the version; a stale version
/// cannot release; the right one can. Returns the other node's lease, still held.
pub async fn same_node_gets_its_subnet_back<S: LeaseStore>(s: &S) -> Versioned {
    let c = cfg("10.244.0.0/16", 24);
    let a = acquire(s, &c, "a", "192.168.1.1".parse().unwrap()).await.unwrap();
    let b = acquire(s, &c, "b", "192.168.1.2".parse().unwrap()).await.unwrap();
    assert_ne!(a.lease.subnet, b.lease.subnet);
    // restart with a new IP: same subnet, IP follows
    let a2 = acquire(s, &c, "a", "192.168.1.9".parse().unwrap()).await.unwrap();
    assert_eq!(a2.lease.subnet, a.lease.subnet);
    assert_eq!(a2.lease.node_ip.to_string(), "192.168.1.9");
    let a3 = renew(s, &c, &a2, a2.lease.node_ip).await.unwrap();
    assert!(a3.version > a2.version);
    assert!(!release(s, &a2).await.unwrap(), "a stale version must not delete");
    assert!(release(s, &a3).await.unwrap());
    assert_eq!(live(s).await.unwrap(), vec![b.lease.clone()]);
    b
}

/// 32 nodes acquiring at once get 32 distinct subnets.
pub async fn many_nodes_at_once_get_distinct_subnets<S: LeaseStore + 'static>(s: Arc<S>) {
    let c = Arc::new(cfg("10.244.0.0/16", 24));
    let hs: Vec<_> = (0..32)
        .map(|i| {
            let (s, c) = (s.clone(), c.clone());
            tokio::spawn(async move {
                let ip = format!("192.168.0.{}", i + 1).parse().unwrap();
                acquire(&*s, &c, &format!("n{i}"), ip).await.unwrap()
            })
        })
        .collect();
    let mut subnets = HashSet::new();
    for h in hs {
        assert!(subnets.insert(h.await.unwrap().lease.subnet));
    }
    assert_eq!(live(&*s).await.unwrap().len(), 32);
}
