//! Cluster-level subnet leases: each node holds one subnet of the cluster CIDR.
//!
//! The store decides every conflict by an atomic create-if-absent or compare-and-swap on one key
//! per subnet, so two nodes can never hold the same subnet, however many acquire at once; the
//! logic here only proposes.

use super::error::ClusterError;
use super::record::{unix_now, Lease, Versioned};
use super::store::LeaseStore;
use ipnetwork::{IpNetwork, Ipv4Network};
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// How the cluster CIDR is carved.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub cluster_cidr: Ipv4Network,
    pub subnet_len: u8,
    pub first: Option<Ipv4Network>,
    pub last: Option<Ipv4Network>,
    pub ttl: Duration,
}

impl LeaseConfig {
    pub fn new(cluster_cidr: IpNetwork, subnet_len: u8, ttl: Duration) -> Result<LeaseConfig, ClusterError> {
        let IpNetwork::V4(cidr) = cluster_cidr else {
            return Err(ClusterError::Config("the cluster CIDR must be IPv4".into()));
        };
        let cidr = Ipv4Network::new(cidr.network(), cidr.prefix()).expect("valid");
        if subnet_len < cidr.prefix() || subnet_len > 30 {
            return Err(ClusterError::Config(format!(
                "subnet length /{subnet_len} must be between the cluster CIDR's /{} and /30",
                cidr.prefix()
            )));
        }
        if ttl.as_secs() < 2 {
            return Err(ClusterError::Config("the lease TTL must be at least 2s".into()));
        }
        Ok(LeaseConfig {
            cluster_cidr: cidr,
            subnet_len,
            first: None,
            last: None,
            ttl,
        })
    }

    /// Every subnet a lease may take, in order.
    pub fn subnets(&self) -> impl Iterator<Item = IpNetwork> + '_ {
        let step = 1u64 << (32 - self.subnet_len);
        let start = u32::from(self.first.map_or(self.cluster_cidr.network(), |f| f.network())) as u64;
        let last_net = u32::from(self.cluster_cidr.broadcast()) as u64 + 1 - step;
        let end = self
            .last
            .map_or(last_net, |l| u32::from(l.network()) as u64)
            .min(last_net);
        let len = self.subnet_len;
        (0..)
            .map(move |i| start + i * step)
            .take_while(move |a| *a <= end)
            .map(move |a| IpNetwork::V4(Ipv4Network::new(Ipv4Addr::from(a as u32), len).expect("valid")))
    }

    pub fn holds(&self, subnet: IpNetwork) -> bool {
        subnet.prefix() == self.subnet_len
            && self.cluster_cidr.contains(match subnet.network() {
                IpAddr::V4(v) => v,
                IpAddr::V6(_) => return false,
            })
    }

    fn full(&self) -> ClusterError {
        ClusterError::ClusterFull(self.cluster_cidr.to_string(), self.subnet_len)
    }
}

fn overlaps(a: IpNetwork, b: IpNetwork) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

/// Gets this node a lease: the one it held (same node name) if any, refreshed with its current IP
/// and a new expiry; otherwise the first free subnet. Lost races are retried from a fresh list.
pub async fn acquire<S: LeaseStore>(
    store: &S,
    cfg: &LeaseConfig,
    node_name: &str,
    node_ip: IpAddr,
) -> Result<Versioned, ClusterError> {
    for _ in 0..1000 {
        let now = unix_now();
        let all = store.list().await?;
        let fresh = |subnet| Lease {
            subnet,
            node_name: node_name.to_string(),
            node_ip,
            expires: now + cfg.ttl.as_secs(),
        };
        if let Some(mine) = all
            .iter()
            .find(|v| v.lease.node_name == node_name && cfg.holds(v.lease.subnet))
        {
            let l = fresh(mine.lease.subnet);
            match store.update(&l, mine.version, cfg.ttl).await? {
                Some(version) => return Ok(Versioned { lease: l, version }),
                None => continue,
            }
        }
        let live: Vec<&Lease> = all.iter().map(|v| &v.lease).filter(|l| !l.expired(now)).collect();
        let taken: HashSet<IpNetwork> = live.iter().map(|l| l.subnet).collect();
        // Leases of another size (a misconfigured node) still block what they overlap.
        let odd: Vec<IpNetwork> = live
            .iter()
            .map(|l| l.subnet)
            .filter(|s| s.prefix() != cfg.subnet_len)
            .collect();
        let Some(free) = cfg
            .subnets()
            .find(|s| !taken.contains(s) && !odd.iter().any(|o| overlaps(*o, *s)))
        else {
            return Err(cfg.full());
        };
        let l = fresh(free);
        // An expired lease still sitting on the key is replaced by compare-and-swap.
        let res = match all.iter().find(|v| v.lease.subnet == free) {
            Some(old) => store.update(&l, old.version, cfg.ttl).await?,
            None => store.create(&l, cfg.ttl).await?,
        };
        if let Some(version) = res {
            return Ok(Versioned { lease: l, version });
        }
    }
    Err(ClusterError::Store(
        "could not acquire a lease: too much contention".into(),
    ))
}

/// Renews a held lease (with the node's current IP). If the lease was lost meanwhile (it expired
/// and another node took it), acquires again.
pub async fn renew<S: LeaseStore>(
    store: &S,
    cfg: &LeaseConfig,
    held: &Versioned,
    node_ip: IpAddr,
) -> Result<Versioned, ClusterError> {
    let l = Lease {
        node_ip,
        expires: unix_now() + cfg.ttl.as_secs(),
        ..held.lease.clone()
    };
    match store.update(&l, held.version, cfg.ttl).await? {
        Some(version) => Ok(Versioned { lease: l, version }),
        None => acquire(store, cfg, &held.lease.node_name, node_ip).await,
    }
}

/// Gives the subnet back (node decommissioned). `Ok(false)` if it was no longer ours.
pub async fn release<S: LeaseStore>(store: &S, held: &Versioned) -> Result<bool, ClusterError> {
    store.delete(held.lease.subnet, held.version).await
}

/// The leases in force now.
pub async fn live<S: LeaseStore>(store: &S) -> Result<Vec<Lease>, ClusterError> {
    let now = unix_now();
    Ok(store
        .list()
        .await?
        .into_iter()
        .map(|v| v.lease)
        .filter(|l| !l.expired(now))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carves_in_order_within_bounds() {
        let mut c = LeaseConfig::new("10.244.0.0/16".parse().unwrap(), 24, Duration::from_secs(60)).unwrap();
        let v: Vec<_> = c.subnets().collect();
        assert_eq!(v.len(), 256);
        assert_eq!(v[0].to_string(), "10.244.0.0/24");
        assert_eq!(v[255].to_string(), "10.244.255.0/24");
        c.first = Some("10.244.10.0/24".parse().unwrap());
        c.last = Some("10.244.12.0/24".parse().unwrap());
        let v: Vec<String> = c.subnets().map(|s| s.to_string()).collect();
        assert_eq!(v, ["10.244.10.0/24", "10.244.11.0/24", "10.244.12.0/24"]);
        assert!(LeaseConfig::new("10.244.0.0/16".parse().unwrap(), 8, Duration::from_secs(60)).is_err());
        assert_eq!(
            crate::cluster::record::subnet_key("10.244.3.0/24".parse().unwrap()),
            "10.244.3.0-24"
        );
    }
}
