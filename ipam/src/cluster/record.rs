//! A lease as the store keeps it: one record per subnet, under the subnet's key.

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{SystemTime, UNIX_EPOCH};

/// A node's subnet, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    pub subnet: IpNetwork,
    pub node_name: String,
    #[serde(rename = "nodeIP")]
    pub node_ip: IpAddr,
    /// Unix seconds after which the lease is free again.
    pub expires: u64,
}

impl Lease {
    pub fn expired(&self, now: u64) -> bool {
        self.expires <= now
    }
    /// The gateway of the subnet: its first address (on the node's bridge).
    pub fn gateway(&self) -> IpAddr {
        match self.subnet {
            IpNetwork::V4(n) => IpAddr::V4(Ipv4Addr::from(u32::from(n.network()).wrapping_add(1))),
            IpNetwork::V6(n) => IpAddr::V6(u128::from(n.network()).wrapping_add(1).into()),
        }
    }
}

/// The store key of a subnet: `10.244.3.0-24` (a `/` cannot be in a file name).
pub fn subnet_key(subnet: IpNetwork) -> String {
    format!("{}-{}", subnet.network(), subnet.prefix())
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A lease and the store's version of it (for compare-and-swap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub lease: Lease,
    pub version: u64,
}
