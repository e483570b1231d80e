//! Our routes, whatever the path: one per other node's subnet, `SUBNET via NODE_IP` (direct) or
//! `SUBNET via SUBNET_ADDRESS dev cbrnet.vxlan onlink` (VXLAN), marked with our own route protocol
//! number so that we only ever touch routes we made.

use crate::error::{Result, RoutedError};
use cbrnet_bridge::error::{errno, ESRCH};
use futures::TryStreamExt;
use ipnetwork::IpNetwork;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::route::{RouteAttribute, RouteProtocol};
use rtnetlink::{Handle, RouteMessageBuilder};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `proto 157` in `ip route`: cbrnet's routes (listed in README; unassigned in iproute2's rt_protos).
pub const ROUTE_PROTOCOL: u8 = 157;

/// The next hop of one of our routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    /// The peer's node IP (direct), or the address of its subnet that its VTEP answers for
    /// (through VXLAN).
    pub gw: IpAddr,
    /// Through the VXLAN device, on-link; else through the underlay link the gateway is on.
    pub vxlan: bool,
}

/// What the routes should be: subnet → next hop.
pub type Want = BTreeMap<IpNetwork, Hop>;

/// Our routes as the kernel has them: destination → gateway.
pub type Ours = HashMap<IpNetwork, Option<IpAddr>>;

/// What to do to get from what is installed to what is wanted.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Add or replace.
    pub put: Vec<(IpNetwork, Hop)>,
    pub delete: Vec<IpNetwork>,
    /// Wanted, but a route of another protocol holds the destination: left alone.
    pub conflicts: Vec<(IpNetwork, Hop)>,
}

/// Pure, and linear in the routes: the plan from `ours` to `want`. A destination that a route of
/// another protocol holds (`foreign`) is never added (an add with replace would overwrite it);
/// one of ours already there is kept up to date.
pub fn plan(want: &Want, ours: &Ours, foreign: &HashSet<IpNetwork>) -> Plan {
    let mut p = Plan {
        put: Vec::with_capacity(want.len().saturating_sub(ours.len())),
        ..Plan::default()
    };
    for (dst, hop) in want {
        match ours.get(dst) {
            Some(g) if *g == Some(hop.gw) => {}
            Some(_) => p.put.push((*dst, *hop)),
            None if foreign.contains(dst) => p.conflicts.push((*dst, *hop)),
            None => p.put.push((*dst, *hop)),
        }
    }
    p.delete = ours.keys().filter(|d| !want.contains_key(*d)).copied().collect();
    p.delete.sort();
    p
}

/// Our networks: every address with its prefix (IPv6 link-local ones excepted: no node IP or
/// pod subnet is one).
pub async fn connected(h: &Handle) -> Result<Vec<IpNetwork>> {
    Ok(connected_links(h).await?.into_iter().map(|(n, _)| n).collect())
}

/// Our networks with the link each is on.
pub async fn connected_links(h: &Handle) -> Result<Vec<(IpNetwork, u32)>> {
    let mut s = h.address().get().execute();
    let mut out = Vec::new();
    while let Some(m) = s
        .try_next()
        .await
        .map_err(|e| RoutedError::Netlink("listing addresses".into(), e))?
    {
        for a in &m.attributes {
            let ip = match a {
                AddressAttribute::Address(IpAddr::V6(v6)) if v6.is_unicast_link_local() => continue,
                AddressAttribute::Address(ip) => *ip,
                _ => continue,
            };
            if let Ok(n) = IpNetwork::new(ip, m.header.prefix_len) {
                out.push((n, m.header.index));
            }
        }
    }
    Ok(out)
}

/// The names of the links among `links` (as [`connected_links`] gives them) that carry one of
/// `ips`, each once; a link that goes meanwhile is left out.
pub async fn link_names(h: &Handle, links: &[(IpNetwork, u32)], ips: &[IpAddr]) -> Vec<String> {
    let mut indexes: Vec<u32> = links
        .iter()
        .filter(|(n, _)| ips.contains(&n.ip()))
        .map(|(_, i)| *i)
        .collect();
    indexes.sort_unstable();
    indexes.dedup();
    let mut names = Vec::new();
    for i in indexes {
        let mut s = h.link().get().match_index(i).execute();
        if let Ok(Some(l)) = s.try_next().await {
            names.extend(l.attributes.iter().find_map(|a| match a {
                netlink_packet_route::link::LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            }));
        }
    }
    names
}

/// Adds or replaces `dst via gw` (`replaces`: a route of ours to `dst` is there), through the
/// nexthop object `nh` when there is one; without one, a VXLAN hop goes out of `vxlan_dev`
/// on-link. An IPv4 destination may have an IPv6 gateway (RTA_VIA); the kernel takes no IPv4
/// gateway for an IPv6 destination.
pub async fn put(
    h: &Handle,
    dst: IpNetwork,
    hop: Hop,
    nh: Option<u32>,
    vxlan_dev: Option<u32>,
    replaces: bool,
) -> Result<()> {
    let gw = hop.gw;
    // IPv6 refuses an on-link gateway that a route through another device covers, and the
    // route being replaced covers it (its gateway is an address of the destination): that one
    // goes first.
    if replaces && hop.vxlan && dst.is_ipv6() {
        remove(h, dst).await?;
    }
    let dev = match (hop.vxlan, nh, vxlan_dev) {
        (true, None, None) => {
            return Err(RoutedError::Config(format!(
                "{dst} via {gw}: the VXLAN device is not there"
            )))
        }
        (true, None, Some(dev)) => Some(dev),
        _ => None,
    };
    let proto = RouteProtocol::Other(ROUTE_PROTOCOL);
    let mut msg = match (dst.network(), gw) {
        (IpAddr::V4(net), gw) => {
            let b = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(net, dst.prefix())
                .protocol(proto);
            match (nh, gw) {
                (Some(_), _) => b.build(),
                (None, IpAddr::V4(g)) => b.gateway(g).build(),
                (None, IpAddr::V6(g)) => b.via(g).build(),
            }
        }
        (IpAddr::V6(net), IpAddr::V6(g)) => {
            let b = RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(net, dst.prefix())
                .protocol(proto);
            match nh {
                Some(_) => b.build(),
                None => b.gateway(g).build(),
            }
        }
        (IpAddr::V6(_), IpAddr::V4(_)) => {
            return Err(RoutedError::Config(format!(
                "{dst} via {gw}: the kernel routes no IPv6 prefix via an IPv4 next hop"
            )))
        }
    };
    if let Some(id) = nh {
        msg.attributes.push(RouteAttribute::NhId(id));
    }
    if let Some(dev) = dev {
        msg.attributes.push(RouteAttribute::Oif(dev));
        msg.header.flags |= netlink_packet_route::route::RouteFlags::Onlink;
    }
    h.route()
        .add(msg)
        .replace()
        .execute()
        .await
        .map_err(|e| RoutedError::Netlink(format!("route {dst} via {gw}"), e))
}

/// Deletes our route to `dst`; already gone is fine.
pub async fn remove(h: &Handle, dst: IpNetwork) -> Result<()> {
    let proto = RouteProtocol::Other(ROUTE_PROTOCOL);
    let msg = match dst.network() {
        IpAddr::V4(net) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(net, dst.prefix())
            .protocol(proto)
            .build(),
        IpAddr::V6(net) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(net, dst.prefix())
            .protocol(proto)
            .build(),
    };
    match h.route().del(msg).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(ESRCH) => Ok(()),
        Err(e) => Err(RoutedError::Netlink(format!("deleting route {dst}"), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            w.insert(
                net(d),
                Hop {
                    gw: ip(g),
                    vxlan: false,
                },
            );
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
        let hop = |g: &str| Hop {
            gw: ip(g),
            vxlan: false,
        };
        assert_eq!(p.put, [(net("10.244.3.0/24"), hop("192.168.1.3"))]);
        assert_eq!(p.delete, [net("10.244.4.0/24")]);
        assert_eq!(p.conflicts, [(net("10.244.5.0/24"), hop("192.168.1.5"))]);
    }
}
