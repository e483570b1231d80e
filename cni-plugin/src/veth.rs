//! The veth pair that connects a pod to the bridge.

use crate::error::{PluginError, Result};
use crate::plan::VethPlan;
use cbrnet_bridge::bridge::Bridge;
use cbrnet_bridge::error::{errno, EEXIST, ENODEV};
use cbrnet_bridge::Nl;
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoBridgePort, InfoData, InfoKind, InfoPortData,
    InfoPortKind, InfoVeth, LinkAttribute,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::{LinkMessageBuilder, LinkUnspec};
use std::os::fd::RawFd;

/// What the kernel says when a bridge has no port number left (it numbers ports 1 to 1023).
const EXFULL: i32 = nix::errno::Errno::EXFULL as i32;
/// What the kernel says to an IPv6 setting when it has no IPv6.
const EAFNOSUPPORT: i32 = nix::errno::Errno::EAFNOSUPPORT as i32;

pub use cbrnet_bridge::port::host_veth_name as host_name;

/// The request that creates the pair (with `batch::CREATE`): the pod end is born in the pod namespace
/// under its final name (no rename, no move), the host end is born attached to the bridge, down
/// ([`host_up`] follows, after the pod side). The pod end is brought up from inside the pod (the
/// kernel refuses IFF_UP for a peer created in another namespace).
pub fn pair(p: &VethPlan, mtu: u32, bridge: &Bridge, pod_ns_fd: RawFd) -> RouteNetlinkMessage {
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
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    RouteNetlinkMessage::NewLink(msg)
}

/// What the kernel's answer to [`pair`] means.
pub fn pair_answer(
    p: &VethPlan,
    bridge: &Bridge,
    answer: std::result::Result<(), rtnetlink::Error>,
) -> Result<()> {
    match answer {
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

/// The request (with `batch::CHANGE`) that turns off IPv6 address generation on link `name`: no
/// link-local address, so no duplicate address detection, multicast listener reports or router
/// solicitations from it, which the bridge would flood to every pod. It must reach the kernel
/// while the link is down: the address is made when the link goes up.
pub fn no_link_local(name: &str) -> RouteNetlinkMessage {
    let mut m = LinkUnspec::new_with_name(name).build();
    m.attributes
        .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![
            AfSpecInet6::AddrGenMode(In6AddrGenMode::None),
        ])]));
    RouteNetlinkMessage::SetLink(m)
}

/// What the kernel's answer to [`no_link_local`] means: a kernel without IPv6 refuses it with
/// EAFNOSUPPORT, and then there is no address to keep from being made.
pub fn no_link_local_answer(name: &str, answer: std::result::Result<(), rtnetlink::Error>) -> Result<()> {
    match answer {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(EAFNOSUPPORT) => Ok(()),
        Err(e) => Err(PluginError::Netlink(
            format!("turning off IPv6 link-local on {name}"),
            e,
        )),
    }
}

/// The request (with `batch::CHANGE`) that brings the host end up, with hairpin mode if asked (a pod
/// reaching itself through a service address that NATs back to it). The host end is a bridge
/// port and carries no address: [`no_link_local`] goes before it.
pub fn host_up(host_name: &str, hairpin: bool) -> RouteNetlinkMessage {
    let mut b = LinkUnspec::new_with_name(host_name).up();
    if hairpin {
        b = b
            .set_port_kind(InfoPortKind::Bridge)
            .set_port_data(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(true)]));
    }
    // RTM_NEWLINK on an existing link: the kernel takes port settings only there.
    RouteNetlinkMessage::NewLink(b.build())
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
