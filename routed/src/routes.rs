//! The host-gw routes: one `SUBNET via NODE_IP` per other node's lease, marked with our own route
//! protocol number so that we only ever touch routes we made.

use crate::error::{Result, RoutedError};
use cbrnet_bridge::error::{errno, ESRCH};
use cbrnet_ipam::cluster::Lease;
use futures::TryStreamExt;
use ipnetwork::IpNetwork;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol};
use rtnetlink::{Handle, RouteMessageBuilder};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

/// `proto 157` in `ip route`: cbrnet's routes (listed in README; unassigned in iproute2's rt_protos).
pub const ROUTE_PROTOCOL: u8 = 157;

/// What the routes should be: subnet → gateway (the node's IP).
pub type Want = BTreeMap<IpNetwork, IpAddr>;

/// A lease we cannot route: host-gw needs the other node on one of our own L2 networks.
#[derive(Debug, PartialEq)]
pub struct Skipped {
    pub lease: Lease,
    pub why: String,
}

/// Pure: the routes the live leases call for, seen from node `me` with these connected networks.
pub fn want(leases: &[Lease], me: &str, connected: &[IpNetwork]) -> (Want, Vec<Skipped>) {
    let mut want = Want::new();
    let mut skipped = Vec::new();
    for l in leases.iter().filter(|l| l.node_name != me) {
        if !l.subnet.is_ipv4() || !l.node_ip.is_ipv4() {
            skipped.push(Skipped {
                lease: l.clone(),
                why: "only IPv4 is routed".into(),
            });
        } else if !connected.iter().any(|n| n.contains(l.node_ip)) {
            skipped.push(Skipped {
                lease: l.clone(),
                why: format!("node IP {} is not on a directly connected network", l.node_ip),
            });
        } else if connected
            .iter()
            .any(|n| n.contains(l.subnet.network()) && n.prefix() <= l.subnet.prefix())
        {
            skipped.push(Skipped {
                lease: l.clone(),
                why: "the subnet is one of our own networks".into(),
            });
        } else {
            want.insert(l.subnet, l.node_ip);
        }
    }
    (want, skipped)
}

/// One of our routes as the kernel has it.
#[derive(Debug, Clone)]
pub struct Have {
    pub dst: IpNetwork,
    pub gw: Option<IpAddr>,
    pub msg: RouteMessage,
}

/// Pure: what to add (or replace) and what to delete to get from `have` to `want`.
pub fn plan(want: &Want, have: &[Have]) -> (Vec<(IpNetwork, IpAddr)>, Vec<Have>) {
    let add = want
        .iter()
        .filter(|(dst, gw)| !have.iter().any(|h| h.dst == **dst && h.gw == Some(**gw)))
        .map(|(d, g)| (*d, *g))
        .collect();
    // A route whose subnet is wanted with another gateway is replaced, not deleted.
    let del = have
        .iter()
        .filter(|h| !want.contains_key(&h.dst))
        .cloned()
        .collect();
    (add, del)
}

/// Our IPv4 networks: every address with its prefix.
pub async fn connected(h: &Handle) -> Result<Vec<IpNetwork>> {
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
                    out.push(n);
                }
            }
        }
    }
    Ok(out)
}

fn v4(a: &RouteAddress) -> Option<Ipv4Addr> {
    match a {
        RouteAddress::Inet(v) => Some(*v),
        _ => None,
    }
}

/// Is this route message one of ours (main table, our protocol)?
pub fn ours(m: &RouteMessage) -> bool {
    m.header.protocol == RouteProtocol::Other(ROUTE_PROTOCOL) && m.header.table == RouteHeader::RT_TABLE_MAIN
}

/// The routes of ours in the main table.
pub async fn installed(h: &Handle) -> Result<Vec<Have>> {
    let q = RouteMessageBuilder::<Ipv4Addr>::new().build();
    let mut s = h.route().get(q).execute();
    let mut out = Vec::new();
    while let Some(m) = s
        .try_next()
        .await
        .map_err(|e| RoutedError::Netlink("listing routes".into(), e))?
    {
        if !ours(&m) {
            continue;
        }
        let dst = m.attributes.iter().find_map(|a| match a {
            RouteAttribute::Destination(d) => v4(d),
            _ => None,
        });
        let gw = m.attributes.iter().find_map(|a| match a {
            RouteAttribute::Gateway(g) => v4(g).map(IpAddr::V4),
            _ => None,
        });
        let dst = IpNetwork::new(
            IpAddr::V4(dst.unwrap_or(Ipv4Addr::UNSPECIFIED)),
            m.header.destination_prefix_length,
        )
        .expect("kernel prefix is valid");
        out.push(Have { dst, gw, msg: m });
    }
    Ok(out)
}

/// Adds or replaces `dst via gw`.
pub async fn put(h: &Handle, dst: IpNetwork, gw: IpAddr) -> Result<()> {
    let (IpAddr::V4(net), IpAddr::V4(gw4)) = (dst.network(), gw) else {
        return Err(RoutedError::Config(format!(
            "{dst} via {gw}: only IPv4 is routed"
        )));
    };
    let msg = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(net, dst.prefix())
        .gateway(gw4)
        .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
        .build();
    h.route()
        .add(msg)
        .replace()
        .execute()
        .await
        .map_err(|e| RoutedError::Netlink(format!("route {dst} via {gw}"), e))
}

pub async fn remove(h: &Handle, r: &Have) -> Result<()> {
    match h.route().del(r.msg.clone()).execute().await {
        Ok(()) => Ok(()),
        // already gone: that is what we wanted
        Err(e) if errno(&e) == Some(ESRCH) => Ok(()),
        Err(e) => Err(RoutedError::Netlink(format!("deleting route {}", r.dst), e)),
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
        }
    }

    #[test]
    fn want_skips_self_and_unreachable_nodes() {
        let leases = [
            lease("10.244.1.0/24", "me", "192.168.1.1"),
            lease("10.244.2.0/24", "b", "192.168.1.2"),
            lease("10.244.3.0/24", "c", "172.16.0.3"),
        ];
        let (w, skipped) = want(&leases, "me", &["192.168.1.1/24".parse().unwrap()]);
        assert_eq!(w.len(), 1);
        assert_eq!(w[&"10.244.2.0/24".parse().unwrap()].to_string(), "192.168.1.2");
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].why.contains("not on a directly connected network"));
    }

    #[test]
    fn plan_adds_replaces_and_deletes() {
        let mut w = Want::new();
        w.insert("10.244.2.0/24".parse().unwrap(), "192.168.1.2".parse().unwrap());
        w.insert("10.244.3.0/24".parse().unwrap(), "192.168.1.3".parse().unwrap());
        let have = |d: &str, g: &str| Have {
            dst: d.parse().unwrap(),
            gw: Some(g.parse().unwrap()),
            msg: RouteMessage::default(),
        };
        let (add, del) = plan(
            &w,
            &[
                have("10.244.2.0/24", "192.168.1.2"),
                have("10.244.3.0/24", "192.168.1.9"),
                have("10.244.4.0/24", "192.168.1.4"),
            ],
        );
        assert_eq!(
            add,
            [("10.244.3.0/24".parse().unwrap(), "192.168.1.3".parse().unwrap())]
        );
        assert_eq!(del.len(), 1);
        assert_eq!(del[0].dst.to_string(), "10.244.4.0/24");
    }
}
