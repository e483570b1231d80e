//! The veth pair that connects a pod to the bridge.

use crate::error::{PluginError, Result};
use crate::plan::VethPlan;
use cbrnet_bridge::error::{errno, EEXIST, ENODEV};

/// What the kernel says when a bridge has no port number left (it numbers ports 1 to 1023).
const EXFULL: i32 = nix::errno::Errno::EXFULL as i32;
use cbrnet_bridge::bridge::Bridge;
use cbrnet_bridge::Nl;
use netlink_packet_route::link::{InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth};
use rtnetlink::{LinkMessageBuilder, LinkUnspec};
use std::os::fd::RawFd;

pub use cbrnet_bridge::port::host_veth_name as host_name;

/// Creates the pair in one request: the pod end is born in the pod namespace under its final name
/// (no rename, no move), the host end is born attached to the bridge and up. The pod end is brought
/// up from inside the pod (the kernel refuses IFF_UP for a peer created in another namespace).
pub async fn create(nl: &Nl, p: &VethPlan, mtu: u32, bridge: &Bridge, pod_ns_fd: RawFd) -> Result<()> {
    let peer = LinkUnspec::new_with_name(&p.pod_ifname)
        .mtu(mtu)
        .address(p.pod_mac.to_vec())
        .setns_by_fd(pod_ns_fd)
        .build();
    let msg = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth)
        .name(p.host_name.clone())
        .mtu(mtu)
        .address(p.host_mac.to_vec())
        .controller(bridge.index)
        .up()
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    match nl.handle.link().add(msg).execute().await {
        Ok(()) => Ok(()),
        // Either end's name is taken: the pod already has this interface (or a stale pair is
        // still there, which DEL removes).
        Err(e) if errno(&e) == Some(EEXIST) => Err(PluginError::IfnameTaken(p.pod_ifname.clone())),
        Err(e) if errno(&e) == Some(EXFULL) => Err(PluginError::BridgeFull(bridge.name.clone())),
        Err(e) => Err(PluginError::Netlink(
            format!("creating veth {} <-> {}", p.host_name, p.pod_ifname),
            e,
        )),
    }
}

/// Hairpin mode lets a pod reach itself through a service address that NATs back to it.
pub async fn set_hairpin(nl: &Nl, host_name: &str, on: bool) -> Result<()> {
    let msg = LinkUnspec::new_with_name(host_name)
        .set_port_kind(InfoPortKind::Bridge)
        .set_port_data(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(on)]))
        .build();
    nl.handle
        .link()
        .set_port(msg)
        .execute()
        .await
        .map_err(PluginError::netlink(format!(
            "setting hairpin mode on {host_name}"
        )))
}

/// Deletes the pair by its host end (the pod end goes with it). `Ok(false)` if it was not there.
pub async fn delete(nl: &Nl, host_name: &str) -> Result<bool> {
    let msg = LinkUnspec::new_with_name(host_name).build();
    match nl.handle.link().del_with_message(msg).execute().await {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(false),
        Err(e) => Err(PluginError::Netlink(format!("deleting {host_name}"), e)),
    }
}
