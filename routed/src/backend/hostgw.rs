//! The direct path (host-gw): a peer on one of this node's own networks is routed `SUBNET via
//! NODE_IP`, the underlay delivering its packets as they are.

use cbrnet_ipam::cluster::Lease;
use ipnetwork::IpNetwork;
use std::net::IpAddr;

/// Can a peer's subnet be routed through its node IP `ip` as a neighbour of this node, whose
/// addresses (with their prefixes) are `local`? The IP must be on one of our networks, and not a
/// network's or broadcast address; `Err` says why not.
pub fn judge(ip: IpAddr, local: &[IpNetwork]) -> Result<(), String> {
    match local.iter().find(|n| n.contains(ip)) {
        Some(IpNetwork::V4(n)) => match ip {
            IpAddr::V4(v4) if n.prefix() < 31 && (v4 == n.network() || v4 == n.broadcast()) => {
                Err(format!("node IP {ip} is the network or broadcast address of {n}"))
            }
            _ => Ok(()),
        },
        Some(IpNetwork::V6(_)) => Ok(()),
        None => Err(format!("node IP {ip} is not on a directly connected network")),
    }
}

/// Is every node IP of `l` on none of this node's networks (`local`)? Then only another path
/// reaches it.
pub fn off_link(l: &Lease, local: &[IpNetwork]) -> bool {
    std::iter::once(l.node_ip)
        .chain(l.node_ip_v6.map(IpAddr::V6))
        .all(|ip| !local.iter().any(|n| n.contains(ip)))
}
