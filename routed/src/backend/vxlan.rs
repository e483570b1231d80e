//! The VXLAN path: one VXLAN device per node (`cbrnet.vxlan`: local address the node IP, no
//! multicast group, no learning), and per peer reached through it an FDB entry (the peer's VTEP
//! MAC → its node IP), a permanent neighbour entry (its subnet's network address → its VTEP MAC)
//! and the route `SUBNET via SUBNET_ADDRESS dev cbrnet.vxlan onlink`. Nothing is learnt or
//! flooded: every entry is written from the store, so the device is quiet and needs no multicast
//! in the underlay.
//!
//! Ours and not ours: the device is ours if it is a VXLAN device of our VNI; a device of our name
//! that is anything else is left alone and reported. On our device, neighbour entries of ours
//! carry our protocol number; FDB entries of ours are the permanent ones of a locally administered
//! unicast MAC (every VTEP MAC is one: [`Lease::vtep_mac`](cbrnet_ipam::cluster::Lease::vtep_mac)).

use super::routes::ROUTE_PROTOCOL;
use super::VxPeer;
use crate::error::{Result, RoutedError};
use cbrnet_bridge::error::{errno, EEXIST};
use cbrnet_bridge::{ethtool, mac, netlink, Nl};
use cbrnet_ipam::cluster::Lease;
use futures::{StreamExt, TryStreamExt};
use ipnetwork::IpNetwork;
use netlink_packet_route::link::{InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::RouteProtocol;
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec, LinkVxlan};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The node's VXLAN device.
pub const DEVICE: &str = "cbrnet.vxlan";
/// Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14) headers.
pub const OVERHEAD_V4: u32 = 50;
/// The same with an outer IPv6 header (40).
pub const OVERHEAD_V6: u32 = 70;
/// The encapsulation's cost with outer addresses of `local`'s family.
pub fn overhead(local: IpAddr) -> u32 {
    if local.is_ipv4() {
        OVERHEAD_V4
    } else {
        OVERHEAD_V6
    }
}

/// The device's MTU over an underlay link of MTU `underlay` with outer address `local`: less
/// the encapsulation, and never below the smallest MTU a link may have (IPv4's 68, IPv6's 1280
/// when it carries IPv6 pods).
pub fn device_mtu(underlay: u32, local: IpAddr, ipv6_pods: bool) -> u32 {
    let floor = if ipv6_pods { 1280 } else { 68 };
    underlay.saturating_sub(overhead(local)).max(floor)
}

/// Requests in flight at once (see the daemon's route requests).
const IN_FLIGHT: usize = 64;
const ENOENT: i32 = nix::errno::Errno::ENOENT as i32;

/// The VTEP MAC a lease publishes: `Ok(None)` if none, `Err(why)` if it is no locally
/// administered unicast MAC (cbrnet derives them so: anything else is a hand edit or garbage).
pub fn vtep_of(l: &Lease) -> std::result::Result<Option<[u8; 6]>, String> {
    let Some(s) = &l.vtep_mac else {
        return Ok(None);
    };
    match mac::parse(s) {
        None => Err(format!("VTEP MAC {s:?} is not a MAC (aa:bb:cc:dd:ee:ff)")),
        Some(m) if m == [0; 6] => Err(format!("VTEP MAC {s} is zero")),
        Some(m) if m[0] & 1 != 0 => Err(format!("VTEP MAC {s} is a multicast address")),
        Some(m) if !is_vtep_mac(&m) => Err(format!("VTEP MAC {s} is not locally administered")),
        Some(m) => Ok(Some(m)),
    }
}

/// This node's VTEP MAC: derived from its name, so the same across restarts and reboots, and
/// locally administered unicast like every VTEP MAC a lease may publish.
pub fn vtep_mac(node_name: &str) -> [u8; 6] {
    mac::from_hash(mac::fnv1a(&["cbrnet-vtep", node_name]))
}

/// What the device should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub vni: u32,
    pub port: u16,
    /// The node IP: the outer source address (its family is the underlay's).
    pub local: IpAddr,
    pub mac: [u8; 6],
    pub mtu: u32,
    /// The network address of each of this node's subnets, given to the device as a /32 (/128):
    /// traffic the node itself sends through the device leaves from an address of its own
    /// subnet, which every peer routes back through VXLAN.
    pub addresses: Vec<IpAddr>,
    /// The cluster CIDRs: any other address of them on the device is stale (a subnet held
    /// before).
    pub cluster_cidrs: Vec<IpNetwork>,
    pub tx_csum_offload: bool,
}

/// The VXLAN attributes of a link, if it is a VXLAN device.
fn vxlan_info(l: &LinkMessage) -> Option<&[InfoVxlan]> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Data(InfoData::Vxlan(v)) => Some(v.as_slice()),
            _ => None,
        }),
        _ => None,
    })
}

/// The device as found: VNI, port, local address, learning.
#[derive(Debug, PartialEq, Eq)]
struct Found {
    vni: Option<u32>,
    port: Option<u16>,
    local: Option<IpAddr>,
    learning: bool,
}

fn found(l: &LinkMessage) -> Option<Found> {
    let info = vxlan_info(l)?;
    let mut f = Found {
        vni: None,
        port: None,
        local: None,
        learning: false,
    };
    for i in info {
        match i {
            InfoVxlan::Id(v) => f.vni = Some(*v),
            InfoVxlan::Port(p) => f.port = Some(*p),
            InfoVxlan::Local(a) => f.local = Some(IpAddr::V4(*a)),
            InfoVxlan::Local6(a) => f.local = Some(IpAddr::V6(*a)),
            InfoVxlan::Learning(b) => f.learning = *b,
            _ => {}
        }
    }
    Some(f)
}

/// Why a device of our name is not ours, if it is not.
fn foreign(l: &LinkMessage, vni: u32) -> Option<String> {
    if netlink::kind(l) != Some(&InfoKind::Vxlan) {
        let kind = netlink::kind(l).map_or("unknown".to_string(), |k| format!("{k:?}").to_lowercase());
        return Some(format!(
            "{DEVICE} exists and is a {kind} device, not cbrnet's VXLAN device: it is left alone \
             (remove or rename it, or run --backend host-gw)"
        ));
    }
    match found(l).and_then(|f| f.vni) {
        Some(v) if v == vni => None,
        v => Some(format!(
            "{DEVICE} exists with VNI {}, not --vxlan-vni {vni}: it is left alone (if it is cbrnet's \
             from an earlier --vxlan-vni, delete it: ip link del {DEVICE})",
            v.map_or("unknown".into(), |v| v.to_string())
        )),
    }
}

/// The device, as `spec` wants it: the link index and what had drifted; `Ok(Err(why))` if a
/// device of our name is not ours (left as it is).
pub async fn ensure(nl: &Nl, spec: &Spec) -> Result<std::result::Result<(u32, Vec<String>), String>> {
    let mut repaired = Vec::new();
    let mut link = nl.link(DEVICE).await?;
    if let Some(l) = &link {
        if let Some(why) = foreign(l, spec.vni) {
            return Ok(Err(why));
        }
        let f = found(l);
        let want = Found {
            vni: Some(spec.vni),
            port: Some(spec.port),
            local: Some(spec.local),
            learning: false,
        };
        // What the kernel does not change on a live device: made again (its entries and routes
        // go with it and are put back by the caller).
        if f.as_ref() != Some(&want) {
            repaired.push(format!(
                "{DEVICE} had {f:?} instead of port {}, local {}, no learning: made again",
                spec.port, spec.local
            ));
            delete(nl, l.header.index).await?;
            link = None;
        }
    }
    let l = match link {
        Some(l) => l,
        None => {
            let msg = LinkVxlan::new(DEVICE, spec.vni).port(spec.port);
            let msg = match spec.local {
                IpAddr::V4(a) => msg.local(a),
                IpAddr::V6(a) => msg.local6(a),
            };
            let msg = msg
                .learning(false)
                .mtu(spec.mtu)
                .address(spec.mac.to_vec())
                .up()
                .build();
            match nl.handle.link().add(msg).execute().await {
                Ok(()) => {
                    if repaired.is_empty() {
                        repaired.push(format!("{DEVICE} was missing"));
                    }
                }
                Err(e) if errno(&e) == Some(EEXIST) => {}
                Err(e) => return Err(RoutedError::Netlink(format!("creating {DEVICE}"), e)),
            }
            match nl.link(DEVICE).await? {
                Some(l) if foreign(&l, spec.vni).is_none() => l,
                Some(l) => return Ok(Err(foreign(&l, spec.vni).unwrap_or_default())),
                None => return Err(RoutedError::Config(format!("{DEVICE} vanished as it was made"))),
            }
        }
    };
    let index = l.header.index;
    let mut set = LinkUnspec::new_with_index(index);
    let mut changes = Vec::new();
    if netlink::mac(&l) != Some(spec.mac) {
        set = set.address(spec.mac.to_vec());
        changes.push(format!("MAC {}", mac::format(&spec.mac)));
    }
    if netlink::mtu(&l) != Some(spec.mtu) {
        set = set.mtu(spec.mtu);
        changes.push(format!("MTU {}", spec.mtu));
    }
    if !netlink::is_up(&l) {
        set = set.up();
        changes.push("up".into());
    }
    if !changes.is_empty() {
        nl.handle
            .link()
            .set(set.build())
            .execute()
            .await
            .map_err(|e| RoutedError::Netlink(format!("setting {DEVICE} {}", changes.join(", ")), e))?;
        repaired.push(format!("{DEVICE} set to {}", changes.join(", ")));
    }
    let have = cbrnet_bridge::bridge::addresses(nl, index).await?;
    let (missing, stale) = address_drift(spec, &have);
    for a in &stale {
        cbrnet_bridge::bridge::remove_address(nl, index, *a).await?;
        repaired.push(format!("stale address {a} removed from {DEVICE}"));
    }
    for w in &missing {
        let mut req = nl.handle.address().add(index, w.ip(), w.prefix());
        *req.message_mut() = cbrnet_bridge::bridge::gateway_message(index, w.ip(), w.prefix());
        match req.execute().await {
            Ok(()) => repaired.push(format!("address {w} was not on {DEVICE}")),
            Err(e) if errno(&e) == Some(EEXIST) => {}
            Err(e) => return Err(RoutedError::Netlink(format!("adding {w} to {DEVICE}"), e)),
        }
    }
    let offload = ethtool::set_tx_checksum(DEVICE, spec.tx_csum_offload)
        .map_err(|e| RoutedError::Io(format!("setting TX checksum offload of {DEVICE}"), e))?;
    if offload {
        repaired.push(format!(
            "TX checksum offload of {DEVICE} was {}",
            if spec.tx_csum_offload { "off" } else { "on" }
        ));
    }
    Ok(Ok((index, repaired)))
}

/// The device's addresses against `spec`: each of `spec.addresses` as a host address (/32,
/// /128), and no other in the cluster's CIDRs. What is missing, and what is stale.
pub fn address_drift(spec: &Spec, have: &[IpNetwork]) -> (Vec<IpNetwork>, Vec<IpNetwork>) {
    let want: Vec<IpNetwork> = spec
        .addresses
        .iter()
        .filter_map(|a| IpNetwork::new(*a, if a.is_ipv4() { 32 } else { 128 }).ok())
        .collect();
    let missing = want.iter().filter(|w| !have.contains(w)).copied().collect();
    let stale = have
        .iter()
        .filter(|a| !want.contains(a) && spec.cluster_cidrs.iter().any(|c| c.contains(a.ip())))
        .copied()
        .collect();
    (missing, stale)
}

/// How the device `l` differs from `spec`, without changing it (`doctor`): `Err(why)` if it is not
/// ours; else each difference in words (none: as the daemon makes it). Its address and offload
/// are not judged here.
pub fn drift(l: &LinkMessage, spec: &Spec) -> std::result::Result<Vec<String>, String> {
    if let Some(why) = foreign(l, spec.vni) {
        return Err(why);
    }
    let mut out = Vec::new();
    if let Some(f) = found(l) {
        if f.port != Some(spec.port) {
            out.push(format!(
                "UDP port {}, not --vxlan-port {}",
                f.port.map_or("unknown".into(), |p| p.to_string()),
                spec.port
            ));
        }
        if f.local != Some(spec.local) {
            out.push(format!(
                "local address {}, not the node IP {}",
                f.local.map_or("none".into(), |a| a.to_string()),
                spec.local
            ));
        }
        if f.learning {
            out.push("learning on".into());
        }
    }
    if netlink::mac(l) != Some(spec.mac) {
        out.push(format!(
            "MAC {}, not {}",
            netlink::mac(l).map_or("none".into(), |m| mac::format(&m)),
            mac::format(&spec.mac)
        ));
    }
    if netlink::mtu(l) != Some(spec.mtu) {
        out.push(format!(
            "MTU {}, not {}",
            netlink::mtu(l).map_or("unknown".into(), |m| m.to_string()),
            spec.mtu
        ));
    }
    if !netlink::is_up(l) {
        out.push("down".into());
    }
    Ok(out)
}

/// Deletes our device, if there is one of our VNI (a node that now runs host-gw); its FDB and
/// neighbour entries and the routes through it go with it. Whether there was one.
pub async fn remove(nl: &Nl, vni: u32) -> Result<bool> {
    match nl.link(DEVICE).await? {
        Some(l) if foreign(&l, vni).is_none() => {
            delete(nl, l.header.index).await?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

async fn delete(nl: &Nl, index: u32) -> Result<()> {
    match nl.handle.link().del(index).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(cbrnet_bridge::error::ENODEV) => Ok(()),
        Err(e) => Err(RoutedError::Netlink(format!("deleting {DEVICE}"), e)),
    }
}

/// Our FDB and neighbour entries on the device, as the kernel has them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Entries {
    /// VTEP MAC → node IP.
    pub fdb: HashMap<[u8; 6], IpAddr>,
    /// Hop address (of either family) → VTEP MAC.
    pub neigh: HashMap<IpAddr, [u8; 6]>,
}

fn lladdr(m: &NeighbourMessage) -> Option<[u8; 6]> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(v) => v.as_slice().try_into().ok(),
        _ => None,
    })
}

/// NDA_DST. netlink-packet-route decodes it by the message's family, so an FDB entry's (family
/// AF_BRIDGE) comes as raw bytes, told apart by their length.
fn dst(m: &NeighbourMessage) -> Option<IpAddr> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => Some(IpAddr::V4(*v)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v)) => Some(IpAddr::V6(*v)),
        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => match b.len() {
            4 => <[u8; 4]>::try_from(b.as_slice())
                .ok()
                .map(|a| IpAddr::V4(Ipv4Addr::from(a))),
            16 => <[u8; 16]>::try_from(b.as_slice())
                .ok()
                .map(|a| IpAddr::V6(Ipv6Addr::from(a))),
            _ => None,
        },
        _ => None,
    })
}

/// Is `mac` one a VTEP may have (locally administered unicast, not zero)?
pub fn is_vtep_mac(mac: &[u8; 6]) -> bool {
    mac[0] & 1 == 0 && mac[0] & 2 != 0
}

/// Reads our entries on link `index`.
pub async fn dump(h: &Handle, index: u32) -> Result<Entries> {
    let mut out = Entries::default();
    let mut req = h.neighbours().get().set_address_family(AddressFamily::Bridge);
    req.message_mut().header.ifindex = index;
    let mut s = req.execute();
    while let Some(m) = s
        .try_next()
        .await
        .map_err(|e| RoutedError::Netlink(format!("listing the FDB of {DEVICE}"), e))?
    {
        if m.header.ifindex != index || m.header.state != NeighbourState::Permanent {
            continue;
        }
        if let (Some(mac), Some(ip)) = (lladdr(&m), dst(&m)) {
            if is_vtep_mac(&mac) {
                out.fdb.insert(mac, ip);
            }
        }
    }
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut req = h.neighbours().get().set_address_family(family);
        req.message_mut().header.ifindex = index;
        let mut s = req.execute();
        while let Some(m) = s
            .try_next()
            .await
            .map_err(|e| RoutedError::Netlink(format!("listing the neighbours of {DEVICE}"), e))?
        {
            let ours = m.attributes.iter().any(
                |a| matches!(a, NeighbourAttribute::Protocol(RouteProtocol::Other(p)) if *p == ROUTE_PROTOCOL),
            );
            if m.header.ifindex != index || !ours {
                continue;
            }
            if let (Some(ip), Some(mac)) = (dst(&m), lladdr(&m)) {
                out.neigh.insert(ip, mac);
            }
        }
    }
    Ok(out)
}

/// What to change to get from `have` to the entries `peers` need.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub fdb_put: Vec<([u8; 6], IpAddr)>,
    pub neigh_put: Vec<(IpAddr, [u8; 6])>,
    pub fdb_delete: Vec<[u8; 6]>,
    pub neigh_delete: Vec<IpAddr>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.fdb_put.is_empty()
            && self.neigh_put.is_empty()
            && self.fdb_delete.is_empty()
            && self.neigh_delete.is_empty()
    }
}

/// Pure: the plan from `have` to what `peers` need.
pub fn plan(peers: &[VxPeer], have: &Entries) -> Plan {
    let mut p = Plan::default();
    let mut fdb = HashMap::with_capacity(peers.len());
    let mut neigh = HashMap::with_capacity(peers.len());
    for peer in peers {
        // A dual-stack peer has one entry per subnet and one FDB entry.
        if fdb.insert(peer.mac, peer.node_ip).is_none() && have.fdb.get(&peer.mac) != Some(&peer.node_ip) {
            p.fdb_put.push((peer.mac, peer.node_ip));
        }
        neigh.insert(peer.hop(), peer.mac);
        if have.neigh.get(&peer.hop()) != Some(&peer.mac) {
            p.neigh_put.push((peer.hop(), peer.mac));
        }
    }
    p.fdb_delete = have
        .fdb
        .keys()
        .filter(|m| !fdb.contains_key(*m))
        .copied()
        .collect();
    p.neigh_delete = have
        .neigh
        .keys()
        .filter(|a| !neigh.contains_key(*a))
        .copied()
        .collect();
    p.fdb_delete.sort();
    p.neigh_delete.sort();
    p
}

/// Writes the FDB and neighbour entries of `plan` (`delete`: its deletions; else its puts),
/// many requests in flight; `have` follows what succeeded. The first error, after trying all.
pub async fn apply(h: &Handle, index: u32, plan: &Plan, delete: bool, have: &mut Entries) -> Result<()> {
    /// One request, and what it leaves in the kernel once it succeeded.
    #[derive(Clone, Copy)]
    enum Op {
        Fdb([u8; 6], Option<IpAddr>),
        Neigh(IpAddr, Option<[u8; 6]>),
    }
    // Made one by one as requests go out, not gathered: a cluster's worth is tens of thousands.
    let ops: Box<dyn Iterator<Item = Op> + '_> = match delete {
        true => Box::new(
            plan.fdb_delete
                .iter()
                .map(|m| Op::Fdb(*m, None))
                .chain(plan.neigh_delete.iter().map(|a| Op::Neigh(*a, None))),
        ),
        false => Box::new(
            plan.fdb_put
                .iter()
                .map(|(m, a)| Op::Fdb(*m, Some(*a)))
                .chain(plan.neigh_put.iter().map(|(a, m)| Op::Neigh(*a, Some(*m)))),
        ),
    };
    let mut done = futures::stream::iter(ops)
        .map(|op| {
            let h = h.clone();
            async move {
                let r = match op {
                    Op::Fdb(mac, Some(ip)) => fdb_put(&h, index, mac, ip).await,
                    Op::Fdb(mac, None) => fdb_del(&h, index, mac).await,
                    Op::Neigh(ip, Some(mac)) => neigh_put(&h, index, ip, mac).await,
                    Op::Neigh(ip, None) => neigh_del(&h, index, ip).await,
                };
                (op, r)
            }
        })
        .buffer_unordered(IN_FLIGHT);
    let mut first_error = None;
    while let Some((op, r)) = done.next().await {
        if let Err(e) = r {
            first_error.get_or_insert(e);
            continue;
        }
        match op {
            Op::Fdb(mac, Some(ip)) => {
                have.fdb.insert(mac, ip);
            }
            Op::Fdb(mac, None) => {
                have.fdb.remove(&mac);
            }
            Op::Neigh(ip, Some(mac)) => {
                have.neigh.insert(ip, mac);
            }
            Op::Neigh(ip, None) => {
                have.neigh.remove(&ip);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

async fn fdb_put(h: &Handle, index: u32, mac: [u8; 6], node_ip: IpAddr) -> Result<()> {
    h.neighbours()
        .add_bridge(index, &mac)
        .destination(node_ip)
        .flags(NeighbourFlags::Own)
        .replace()
        .execute()
        .await
        .map_err(|e| {
            RoutedError::Netlink(
                format!("FDB entry {} dst {node_ip} on {DEVICE}", mac::format(&mac)),
                e,
            )
        })
}

async fn fdb_del(h: &Handle, index: u32, mac: [u8; 6]) -> Result<()> {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = index;
    m.header.flags = NeighbourFlags::Own;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    match h.neighbours().del(m).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(ENOENT) => Ok(()),
        Err(e) => Err(RoutedError::Netlink(
            format!("deleting FDB entry {} on {DEVICE}", mac::format(&mac)),
            e,
        )),
    }
}

async fn neigh_put(h: &Handle, index: u32, ip: IpAddr, mac: [u8; 6]) -> Result<()> {
    let mut req = h
        .neighbours()
        .add(index, ip)
        .link_layer_address(&mac)
        .state(NeighbourState::Permanent)
        .replace();
    req.message_mut()
        .attributes
        .push(NeighbourAttribute::Protocol(RouteProtocol::Other(ROUTE_PROTOCOL)));
    req.execute().await.map_err(|e| {
        RoutedError::Netlink(
            format!("neighbour {ip} lladdr {} on {DEVICE}", mac::format(&mac)),
            e,
        )
    })
}

async fn neigh_del(h: &Handle, index: u32, ip: IpAddr) -> Result<()> {
    let mut m = NeighbourMessage::default();
    m.header.ifindex = index;
    let (family, dst) = match ip {
        IpAddr::V4(a) => (AddressFamily::Inet, NeighbourAddress::Inet(a)),
        IpAddr::V6(a) => (AddressFamily::Inet6, NeighbourAddress::Inet6(a)),
    };
    m.header.family = family;
    m.attributes.push(NeighbourAttribute::Destination(dst));
    match h.neighbours().del(m).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(ENOENT) => Ok(()),
        Err(e) => Err(RoutedError::Netlink(
            format!("deleting neighbour {ip} on {DEVICE}"),
            e,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_device_carries_each_served_network_address_and_no_other_of_the_cluster() {
        let net = |n: &str| n.parse::<IpNetwork>().unwrap();
        let spec = Spec {
            vni: 1,
            port: 8472,
            local: "192.168.1.2".parse().unwrap(),
            mac: [0x0e, 0, 0, 0, 0, 2],
            mtu: 1450,
            addresses: vec!["10.244.3.0".parse().unwrap(), "fd00:10:244:3::".parse().unwrap()],
            cluster_cidrs: vec![net("10.244.0.0/16"), net("fd00:10:244::/56")],
            tx_csum_offload: false,
        };
        // one held before, one outside the cluster (left alone), the IPv4 one in place
        let have = [net("10.244.9.0/32"), net("172.16.0.1/32"), net("10.244.3.0/32")];
        let (missing, stale) = address_drift(&spec, &have);
        assert_eq!(missing, [net("fd00:10:244:3::/128")]);
        assert_eq!(stale, [net("10.244.9.0/32")]);
        let all = [net("10.244.3.0/32"), net("fd00:10:244:3::/128")];
        assert_eq!(address_drift(&spec, &all), (vec![], vec![]));
    }

    #[test]
    fn published_vtep_macs_are_judged() {
        let mut l = Lease {
            subnet: "10.244.3.0/24".parse().unwrap(),
            node_name: "n".into(),
            node_ip: "192.168.1.2".parse().unwrap(),
            expires: 1,
            holder: None,
            vtep_mac: None,
            ipv6_subnet: None,
            node_ip_v6: None,
        };
        assert_eq!(vtep_of(&l), Ok(None));
        for (v, why) in [
            ("5", "is not a MAC"),
            ("{\"a\":1}", "is not a MAC"),
            ("0e:00:00:00:00", "is not a MAC"),
            ("0e:00:00:00:00:0g", "is not a MAC"),
            ("0e:00:00:00:00:00:00", "is not a MAC"),
            ("00:00:00:00:00:00", "is zero"),
            ("0f:00:00:00:00:01", "is a multicast address"),
            ("00:16:3e:00:00:01", "is not locally administered"),
        ] {
            l.vtep_mac = Some(v.into());
            let e = vtep_of(&l).unwrap_err();
            assert!(e.contains(why), "{v}: {e}");
        }
        l.vtep_mac = Some("0E:11:22:33:44:55".into());
        assert_eq!(vtep_of(&l), Ok(Some([0x0e, 0x11, 0x22, 0x33, 0x44, 0x55])));
    }

    #[test]
    fn fdb_and_neighbour_destinations_are_read_in_either_form() {
        use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
        use netlink_packet_route::RouteNetlinkMessage;
        // An FDB entry as the kernel sends it, parsed back as the dump parses it.
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = 7;
        m.header.state = NeighbourState::Permanent;
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(vec![0x0e, 0, 0, 0, 0, 2]));
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                Ipv4Addr::new(172, 16, 0, 2),
            )));
        let mut msg = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::from(RouteNetlinkMessage::NewNeighbour(m)),
        );
        msg.finalize();
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut buf);
        let back = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf).unwrap();
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(back)) = back.payload else {
            panic!("not a neighbour message");
        };
        assert!(back
            .attributes
            .iter()
            .any(|a| matches!(a, NeighbourAttribute::Destination(NeighbourAddress::Other(_)))));
        assert_eq!(dst(&back), Some(IpAddr::V4(Ipv4Addr::new(172, 16, 0, 2))));
        assert_eq!(lladdr(&back), Some([0x0e, 0, 0, 0, 0, 2]));
    }

    #[test]
    fn vtep_macs_are_stable_and_valid() {
        let a = vtep_mac("node-1");
        assert_eq!(a, vtep_mac("node-1"));
        assert_ne!(a, vtep_mac("node-2"));
        assert!(is_vtep_mac(&a));
        assert!(!is_vtep_mac(&[0x01, 0, 0, 0, 0, 1]));
        assert!(!is_vtep_mac(&[0x00, 0x11, 0, 0, 0, 1]));
    }

    #[test]
    fn plan_puts_what_differs_and_deletes_what_no_peer_needs() {
        let peer = |n: u8, ip: &str| VxPeer {
            subnet: format!("10.244.{n}.0/24").parse().unwrap(),
            node_ip: ip.parse().unwrap(),
            mac: [0x0e, 0, 0, 0, 0, n],
        };
        let peers = [
            peer(2, "172.16.0.2"),
            peer(3, "172.16.0.3"),
            peer(4, "172.16.0.4"),
        ];
        let mut have = Entries::default();
        // 2 right; 3 with a stale node IP and a neighbour missing; 9 gone from the store
        have.fdb
            .insert([0x0e, 0, 0, 0, 0, 2], "172.16.0.2".parse().unwrap());
        have.neigh
            .insert("10.244.2.0".parse().unwrap(), [0x0e, 0, 0, 0, 0, 2]);
        have.fdb
            .insert([0x0e, 0, 0, 0, 0, 3], "172.16.0.99".parse().unwrap());
        have.fdb
            .insert([0x0e, 0, 0, 0, 0, 9], "172.16.0.9".parse().unwrap());
        have.neigh
            .insert("10.244.9.0".parse().unwrap(), [0x0e, 0, 0, 0, 0, 9]);
        let mut p = plan(&peers, &have);
        p.fdb_put.sort();
        p.neigh_put.sort();
        assert_eq!(
            p.fdb_put,
            [
                ([0x0e, 0, 0, 0, 0, 3], "172.16.0.3".parse().unwrap()),
                ([0x0e, 0, 0, 0, 0, 4], "172.16.0.4".parse().unwrap())
            ]
        );
        assert_eq!(
            p.neigh_put,
            [
                ("10.244.3.0".parse().unwrap(), [0x0e, 0, 0, 0, 0, 3]),
                ("10.244.4.0".parse().unwrap(), [0x0e, 0, 0, 0, 0, 4])
            ]
        );
        assert_eq!(p.fdb_delete, [[0x0e, 0, 0, 0, 0, 9]]);
        assert_eq!(p.neigh_delete, ["10.244.9.0".parse::<IpAddr>().unwrap()]);
        let done = Entries {
            fdb: peers.iter().map(|p| (p.mac, p.node_ip)).collect(),
            neigh: peers.iter().map(|p| (p.hop(), p.mac)).collect(),
        };
        assert!(plan(&peers, &done).is_empty());
        // a dual-stack peer: one FDB entry, a neighbour entry per family
        let v6 = VxPeer {
            subnet: "fd00:10:244:2::/64".parse().unwrap(),
            ..peers[0]
        };
        let p = plan(&[peers[0], v6], &Entries::default());
        assert_eq!(p.fdb_put.len(), 1);
        assert_eq!(
            p.neigh_put.iter().map(|(a, _)| a.to_string()).collect::<Vec<_>>(),
            ["10.244.2.0", "fd00:10:244:2::"]
        );
    }
}
