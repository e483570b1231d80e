//! The node bridge (`cbr0`): created once, shared by every pod, carrying the gateway address.

use crate::error::{errno, PluginError, Result};
use crate::nl::{self, Nl};
use ipnetwork::IpNetwork;
use netlink_packet_route::link::InfoKind;
use rtnetlink::{LinkBridge, LinkUnspec};
use std::net::IpAddr;

pub struct Bridge {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
    pub mtu: u32,
}

/// A stable MAC for the bridge: without one, a Linux bridge takes the lowest MAC of its ports and
/// changes it as pods come and go, which breaks every pod's ARP entry for the gateway.
/// `0a:58` + the IPv4 gateway, as pods get `0a:58` + their IPv4 address.
pub fn stable_mac(gateway: Option<IpAddr>, name: &str) -> [u8; 6] {
    match gateway {
        Some(IpAddr::V4(v4)) => {
            let o = v4.octets();
            [0x0a, 0x58, o[0], o[1], o[2], o[3]]
        }
        _ => mac_from_hash(nl::fnv1a(&["bridge", name])),
    }
}

/// A locally administered unicast MAC from a hash.
pub fn mac_from_hash(h: u64) -> [u8; 6] {
    let b = h.to_be_bytes();
    [(b[0] & 0xfc) | 0x02, b[1], b[2], b[3], b[4], b[5]]
}

/// Makes sure `name` exists, is a bridge and is up; tolerates a concurrent ADD creating it first.
pub async fn ensure(nl: &Nl, name: &str, mtu: u32, mac: [u8; 6], promisc: bool) -> Result<Bridge> {
    let mut created = false;
    let link = match nl.link(name).await? {
        Some(l) => l,
        None => {
            let msg = LinkBridge::new(name)
                .mtu(mtu)
                .address(mac.to_vec())
                .promiscuous(promisc)
                .build();
            match nl.handle.link().add(msg).execute().await {
                Ok(()) => created = true,
                Err(e) if errno(&e) == Some(nl::EEXIST) => {}
                Err(e) => return Err(PluginError::Netlink(format!("creating bridge {name}"), e)),
            }
            nl.link(name)
                .await?
                .ok_or_else(|| PluginError::NotABridge(name.into()))?
        }
    };
    if nl::kind(&link) != Some(&InfoKind::Bridge) {
        return Err(PluginError::NotABridge(name.into()));
    }
    let index = link.header.index;
    let promisc_on = link
        .header
        .flags
        .contains(netlink_packet_route::link::LinkFlags::Promisc);
    if !created && (!nl::is_up(&link) || (promisc && !promisc_on)) {
        let mut m = LinkUnspec::new_with_index(index).up();
        if promisc {
            m = m.promiscuous(true);
        }
        nl.handle
            .link()
            .set(m.build())
            .execute()
            .await
            .map_err(PluginError::netlink(format!("setting {name} up")))?;
    }
    Ok(Bridge {
        name: name.into(),
        index,
        mac: nl::mac(&link).unwrap_or(mac),
        mtu: nl::mtu(&link).unwrap_or(mtu),
    })
}

/// Puts the gateway address (with the subnet's prefix) on the bridge; already there is fine.
pub async fn ensure_address(nl: &Nl, bridge: &Bridge, gateway: IpAddr, subnet: IpNetwork) -> Result<()> {
    match nl
        .handle
        .address()
        .add(bridge.index, gateway, subnet.prefix())
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(nl::EEXIST) => Ok(()),
        Err(e) => Err(PluginError::Netlink(
            format!("adding {gateway}/{} to {}", subnet.prefix(), bridge.name),
            e,
        )),
    }
}
