//! The node bridge (`cbr0`): created once, shared by every pod, carrying the gateway address.

use crate::error::{errno, BridgeError, Result, EADDRNOTAVAIL, EEXIST};
use crate::netlink::{self, Nl};
use futures::TryStreamExt;
use ipnetwork::IpNetwork;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{InfoKind, LinkFlags};
use netlink_packet_route::AddressFamily;
use rtnetlink::{LinkBridge, LinkUnspec};
use std::net::IpAddr;

/// What the bridge should look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub name: String,
    /// MTU given to a bridge we create (an existing bridge keeps its own).
    pub mtu: u32,
    /// MAC given to a bridge we create; see [`crate::mac::for_bridge`].
    pub mac: [u8; 6],
    pub promisc: bool,
}

/// The bridge as the kernel has it.
#[derive(Debug, Clone)]
pub struct Bridge {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
    pub mtu: u32,
    /// This call created it.
    pub created: bool,
    /// Its primary IPv4 address as found (`None`: none, or not looked at).
    pub ipv4: Option<IpNetwork>,
}

/// The bridge, if it is there and as `spec` wants it (up, promiscuous if asked): the common case,
/// answered by six ioctls, with no netlink socket. That the link is a bridge shows when a port is
/// added to it; `is_bridge` says so for the error.
pub fn found(spec: &Spec) -> Result<Option<Bridge>> {
    let Some(p) = crate::probe::probe(&spec.name)? else {
        return Ok(None);
    };
    Ok((p.up && (p.promisc || !spec.promisc)).then(|| Bridge {
        name: spec.name.clone(),
        index: p.index,
        mac: p.mac,
        mtu: p.mtu,
        created: false,
        ipv4: p
            .ipv4
            .and_then(|(a, len)| IpNetwork::new(IpAddr::V4(a), len).ok()),
    }))
}

/// Makes sure the bridge exists, is a bridge and is up; tolerates a concurrent ADD creating it
/// first.
pub async fn ensure(nl: &Nl, spec: &Spec) -> Result<Bridge> {
    if let Some(b) = found(spec)? {
        return Ok(b);
    }
    let name = spec.name.as_str();
    let mut created = false;
    let link = match nl.link(name).await? {
        Some(l) => l,
        None => {
            // Without multicast snooping: with it, every port that comes up re-arms the snooping
            // timers of every other port (the kernel's port state selection), so each pod start
            // costs more the more pods the node has; and with no querier on the bridge it would
            // not restrict multicast to listeners anyway. A bridge found is left as it is.
            let msg = LinkBridge::new(name)
                .mtu(spec.mtu)
                .address(spec.mac.to_vec())
                .promiscuous(spec.promisc)
                .mcast_snooping(false)
                .build();
            match nl.handle.link().add(msg).execute().await {
                Ok(()) => created = true,
                Err(e) if errno(&e) == Some(EEXIST) => {}
                Err(e) => return Err(BridgeError::Netlink(format!("creating bridge {name}"), e)),
            }
            nl.link(name)
                .await?
                .ok_or_else(|| BridgeError::NotABridge(name.into()))?
        }
    };
    if netlink::kind(&link) != Some(&InfoKind::Bridge) {
        return Err(BridgeError::NotABridge(name.into()));
    }
    let index = link.header.index;
    let promisc_on = link.header.flags.contains(LinkFlags::Promisc);
    if !created && (!netlink::is_up(&link) || (spec.promisc && !promisc_on)) {
        let mut m = LinkUnspec::new_with_index(index).up();
        if spec.promisc {
            m = m.promiscuous(true);
        }
        nl.handle
            .link()
            .set(m.build())
            .execute()
            .await
            .map_err(BridgeError::netlink(format!("setting {name} up")))?;
    }
    Ok(Bridge {
        name: name.into(),
        index,
        mac: netlink::mac(&link).unwrap_or(spec.mac),
        mtu: netlink::mtu(&link).unwrap_or(spec.mtu),
        created,
        ipv4: None,
    })
}

/// Does the bridge's primary address, as the probe found it, show that it has the gateway?
/// (`false` may still mean it has it: as another address, or not probed.)
pub fn has_gateway(bridge: &Bridge, gateway: IpAddr, subnet: IpNetwork) -> bool {
    bridge
        .ipv4
        .is_some_and(|a| a.ip() == gateway && a.prefix() == subnet.prefix())
}

/// The request that puts `gateway` (with the subnet's prefix) on the bridge, for a
/// [`crate::batch::Batch`] (with [`crate::batch::CREATE`]; EEXIST means it was there).
pub fn address_message(bridge: &Bridge, gateway: IpAddr, subnet: IpNetwork) -> AddressMessage {
    gateway_message(bridge.index, gateway, subnet.prefix())
}

/// A gateway address for link `index`: an IPv6 one without duplicate address detection, as the
/// subnet is this node's alone (leased or configured), so that pods can use it at once rather
/// than after the second or more DAD takes once the bridge has a carrier.
pub fn gateway_message(index: u32, gateway: IpAddr, prefix: u8) -> AddressMessage {
    let mut m = netlink::address_message(index, gateway, prefix);
    if gateway.is_ipv6() {
        m.attributes.push(AddressAttribute::Flags(
            netlink_packet_route::address::AddressFlags::Nodad,
        ));
    }
    m
}

/// Puts the gateway address (with the subnet's prefix) on the bridge; already there is fine.
/// `Ok(true)` if this call added it. The bridge's primary address, when the probe found it to be
/// the gateway's, costs no request.
pub async fn ensure_address(nl: &Nl, bridge: &Bridge, gateway: IpAddr, subnet: IpNetwork) -> Result<bool> {
    if has_gateway(bridge, gateway, subnet) {
        return Ok(false);
    }
    let mut req = nl.handle.address().add(bridge.index, gateway, subnet.prefix());
    *req.message_mut() = gateway_message(bridge.index, gateway, subnet.prefix());
    match req.execute().await {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(EEXIST) => Ok(false),
        Err(e) => Err(BridgeError::Netlink(
            format!("adding {gateway}/{} to {}", subnet.prefix(), bridge.name),
            e,
        )),
    }
}

/// The IPv4 addresses on link `index`, with their prefixes.
pub async fn ipv4_addresses(nl: &Nl, index: u32) -> Result<Vec<IpNetwork>> {
    Ok(addresses(nl, index)
        .await?
        .into_iter()
        .filter(IpNetwork::is_ipv4)
        .collect())
}

/// The addresses of both families on link `index`, with their prefixes.
pub async fn addresses(nl: &Nl, index: u32) -> Result<Vec<IpNetwork>> {
    Ok(addresses_with_flags(nl, index)
        .await?
        .into_iter()
        .map(|(n, _)| n)
        .collect())
}

/// The addresses on link `index` that cannot be used yet or at all: IPv6 ones still in
/// duplicate address detection (tentative) or that failed it.
pub async fn unusable_addresses(nl: &Nl, index: u32) -> Result<Vec<IpNetwork>> {
    let bad = AddressFlags::Tentative | AddressFlags::Dadfailed;
    Ok(addresses_with_flags(nl, index)
        .await?
        .into_iter()
        .filter(|(_, f)| f.intersects(bad))
        .map(|(n, _)| n)
        .collect())
}

/// Each address on link `index` with its flags (the 32-bit attribute where the kernel sends
/// it, else the header's 8 bits).
async fn addresses_with_flags(nl: &Nl, index: u32) -> Result<Vec<(IpNetwork, AddressFlags)>> {
    let mut s = nl.handle.address().get().set_link_index_filter(index).execute();
    let mut out = Vec::new();
    while let Some(m) = s.try_next().await.map_err(BridgeError::netlink(format!(
        "listing the addresses of link {index}"
    )))? {
        let flags = m
            .attributes
            .iter()
            .find_map(|a| match a {
                AddressAttribute::Flags(f) => Some(*f),
                _ => None,
            })
            .unwrap_or_else(|| AddressFlags::from_bits_retain(u32::from(m.header.flags.bits())));
        for a in &m.attributes {
            if let AddressAttribute::Address(ip) = a {
                if let Ok(n) = IpNetwork::new(*ip, m.header.prefix_len) {
                    out.push((n, flags));
                }
            }
        }
    }
    Ok(out)
}

/// Removes `addr` (with its prefix) from link `index`; already gone is fine.
pub async fn remove_address(nl: &Nl, index: u32, addr: IpNetwork) -> Result<()> {
    let mut msg = AddressMessage::default();
    msg.header.family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    msg.header.index = index;
    msg.header.prefix_len = addr.prefix();
    msg.attributes.push(AddressAttribute::Local(addr.ip()));
    msg.attributes.push(AddressAttribute::Address(addr.ip()));
    match nl.handle.address().del(msg).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(EADDRNOTAVAIL) => Ok(()),
        Err(e) => Err(BridgeError::Netlink(
            format!("removing {addr} from link {index}"),
            e,
        )),
    }
}

/// Is the link called `name` a bridge? (For the error when adding a port to it failed.)
pub async fn is_bridge(nl: &Nl, name: &str) -> Result<bool> {
    Ok(nl
        .link(name)
        .await?
        .is_some_and(|l| netlink::kind(&l) == Some(&InfoKind::Bridge)))
}
