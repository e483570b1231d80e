//! The host-gw routes: one `SUBNET via NODE_IP` per other node's lease, marked with our own route
//! protocol number so that we only ever touch routes we made.

use crate::error::{Result, RoutedError};
use cbrnet_bridge::error::{errno, ESRCH};
use cbrnet_ipam::cluster::Lease;
use futures::TryStreamExt;
use ipnetwork::IpNetwork;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::route::{RouteAttribute, RouteProtocol};
use rtnetlink::{Handle, RouteMessageBuilder};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};

/// `proto 157` in `ip route`: cbrnet's routes (listed in README; unassigned in iproute2's rt_protos).
pub const ROUTE_PROTOCOL: u8 = 157;

/// What the routes should be: subnet → gateway (the node's IP).
pub type Want = BTreeMap<IpNetwork, IpAddr>;

/// A lease we cannot route.
#[derive(Debug, PartialEq)]
pub struct Skipped {
    pub lease: Lease,
    pub why: String,
}

/// Pure: the routes the live leases call for, seen from node `me` whose addresses (with their
/// prefixes) are `local`. Host-gw needs the other node on one of our own L2 networks, at an
/// address that is a neighbour: not our own, not a network's or broadcast address.
pub fn want<'a>(
    leases: impl IntoIterator<Item = &'a Lease>,
    me: &str,
    local: &[IpNetwork],
) -> (Want, Vec<Skipped>) {
    let mut want = Want::new();
    let mut skipped = Vec::new();
    for l in leases.into_iter().filter(|l| l.node_name != me) {
        let why = match (l.subnet, l.node_ip) {
            (IpNetwork::V4(_), IpAddr::V4(ip)) => {
                let on = local.iter().find(|n| n.contains(l.node_ip));
                if local.iter().any(|n| n.ip() == l.node_ip) {
                    Some(format!("node IP {ip} is this node's own address"))
                } else if let Some(IpNetwork::V4(n)) = on {
                    if n.prefix() < 31 && (ip == n.network() || ip == n.broadcast()) {
                        Some(format!("node IP {ip} is the network or broadcast address of {n}"))
                    } else if local
                        .iter()
                        .any(|n| n.contains(l.subnet.network()) && n.prefix() <= l.subnet.prefix())
                    {
                        Some("the subnet is one of our own networks".into())
                    } else {
                        None
                    }
                } else {
                    Some(format!("node IP {ip} is not on a directly connected network"))
                }
            }
            _ => Some("only IPv4 is routed".into()),
        };
        match why {
            Some(why) => skipped.push(Skipped {
                lease: l.clone(),
                why,
            }),
            None => {
                want.insert(l.subnet, l.node_ip);
            }
        }
    }
    (want, skipped)
}

/// Our routes as the kernel has them: destination → gateway.
pub type Ours = HashMap<IpNetwork, Option<IpAddr>>;

/// What to do to get from what is installed to what is wanted.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Add or replace.
    pub put: Vec<(IpNetwork, IpAddr)>,
    pub delete: Vec<IpNetwork>,
    /// Wanted, but a route of another protocol holds the destination: left alone.
    pub conflicts: Vec<(IpNetwork, IpAddr)>,
}

/// Pure, and linear in the routes: the plan from `ours` to `want`. A destination that a route of
/// another protocol holds (`foreign`) is never added (an add with replace would overwrite it);
/// one of ours already there is kept up to date.
pub fn plan(want: &Want, ours: &Ours, foreign: &HashSet<IpNetwork>) -> Plan {
    let mut p = Plan::default();
    for (dst, gw) in want {
        match ours.get(dst) {
            Some(g) if *g == Some(*gw) => {}
            Some(_) => p.put.push((*dst, *gw)),
            None if foreign.contains(dst) => p.conflicts.push((*dst, *gw)),
            None => p.put.push((*dst, *gw)),
        }
    }
    p.delete = ours.keys().filter(|d| !want.contains_key(*d)).copied().collect();
    p.delete.sort();
    p
}

/// Our IPv4 networks: every address with its prefix.
pub async fn connected(h: &Handle) -> Result<Vec<IpNetwork>> {
    Ok(connected_links(h).await?.into_iter().map(|(n, _)| n).collect())
}

/// Our IPv4 networks with the link each is on.
pub async fn connected_links(h: &Handle) -> Result<Vec<(IpNetwork, u32)>> {
    let mut s = h.address().get().execute();
    let mut out = Vec::new();
    while let Some(m) = s
        .try_next()
        .await
        .map_err(|e| RoutedError::Netlink("listing addresses".into(), e))?
    {
        for a in &m.attributes {
            if let AddressAttribute::Address(IpAddr::V4(ip)) = a {
                if let Ok(n) = IpNetwork::new(IpAddr::V4(*ip), m.header.prefix_len) {
                    out.push((n, m.header.index));
                }
            }
        }
    }
    Ok(out)
}

/// Adds or replaces `dst via gw`, through the nexthop object `nh` when there is one.
pub async fn put(h: &Handle, dst: IpNetwork, gw: IpAddr, nh: Option<u32>) -> Result<()> {
    let (IpAddr::V4(net), IpAddr::V4(gw4)) = (dst.network(), gw) else {
        return Err(RoutedError::Config(format!(
            "{dst} via {gw}: only IPv4 is routed"
        )));
    };
    let b = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(net, dst.prefix())
        .protocol(RouteProtocol::Other(ROUTE_PROTOCOL));
    let msg = match nh {
        Some(id) => {
            let mut m = b.build();
            m.attributes.push(RouteAttribute::NhId(id));
            m
        }
        None => b.gateway(gw4).build(),
    };
    h.route()
        .add(msg)
        .replace()
        .execute()
        .await
        .map_err(|e| RoutedError::Netlink(format!("route {dst} via {gw}"), e))
}

/// Deletes our route to `dst`; already gone is fine.
pub async fn remove(h: &Handle, dst: IpNetwork) -> Result<()> {
    let IpAddr::V4(net) = dst.network() else {
        return Ok(());
    };
    let msg = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(net, dst.prefix())
        .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
        .build();
    match h.route().del(msg).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(ESRCH) => Ok(()),
        Err(e) => Err(RoutedError::Netlink(format!("deleting route {dst}"), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(subnet: &str, node: &str, ip: &str) -> Lease {
        Lease {
            subnet: subnet.parse().unwrap(),
            node_name: node.into(),
            node_ip: ip.parse().unwrap(),
            expires: u64::MAX,
            holder: None,
        }
    }

    #[test]
    fn want_skips_self_and_what_is_no_neighbour() {
        let leases = [
            lease("10.244.1.0/24", "me", "192.168.1.1"),
            lease("10.244.2.0/24", "b", "192.168.1.2"),
            lease("10.244.3.0/24", "c", "172.16.0.3"),
            lease("10.244.4.0/24", "d", "192.168.1.0"),
            lease("10.244.5.0/24", "e", "192.168.1.255"),
            lease("10.244.6.0/24", "f", "192.168.1.1"),
            lease("192.168.1.0/24", "g", "192.168.1.7"),
        ];
        let (w, skipped) = want(&leases, "me", &["192.168.1.1/24".parse().unwrap()]);
        assert_eq!(w.len(), 1);
        assert_eq!(w[&"10.244.2.0/24".parse().unwrap()].to_string(), "192.168.1.2");
        let why: Vec<&str> = skipped.iter().map(|s| s.why.as_str()).collect();
        assert_eq!(
            why,
            [
                "node IP 172.16.0.3 is not on a directly connected network",
                "node IP 192.168.1.0 is the network or broadcast address of 192.168.1.1/24",
                "node IP 192.168.1.255 is the network or broadcast address of 192.168.1.1/24",
                "node IP 192.168.1.1 is this node's own address",
                "the subnet is one of our own networks",
            ]
        );
    }

    #[test]
    fn plan_adds_replaces_deletes_and_leaves_foreign_routes_alone() {
        let net = |s: &str| s.parse::<IpNetwork>().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut w = Want::new();
        for (d, g) in [
            ("10.244.2.0/24", "192.168.1.2"),
            ("10.244.3.0/24", "192.168.1.3"),
            ("10.244.5.0/24", "192.168.1.5"),
            ("10.244.6.0/24", "192.168.1.6"),
        ] {
            w.insert(net(d), ip(g));
        }
        let ours: Ours = [
            ("10.244.2.0/24", "192.168.1.2"),
            ("10.244.3.0/24", "192.168.1.9"),
            ("10.244.4.0/24", "192.168.1.4"),
            ("10.244.6.0/24", "192.168.1.6"),
        ]
        .iter()
        .map(|(d, g)| (net(d), Some(ip(g))))
        .collect();
        // 5 is held by someone else's route; so is 6, but ours was there first
        let foreign = [net("10.244.5.0/24"), net("10.244.6.0/24")].into();
        let p = plan(&w, &ours, &foreign);
        assert_eq!(p.put, [(net("10.244.3.0/24"), ip("192.168.1.3"))]);
        assert_eq!(p.delete, [net("10.244.4.0/24")]);
        assert_eq!(p.conflicts, [(net("10.244.5.0/24"), ip("192.168.1.5"))]);
    }
}
