//! The pod side: addresses and routes on the pod interface, through a socket in the pod namespace.

use crate::error::{PluginError, Result};
use crate::netns::NetNs;
use crate::plan::VethPlan;
use crate::veth;
use cbrnet_bridge::batch::{Batch, Sock, CHANGE, CREATE};
use cbrnet_bridge::error::{errno, EEXIST};
use cbrnet_bridge::netlink;
use cbrnet_bridge::Nl;
use cni_spec::{IpConfig, Route};
use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressFlags};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteMetric, RouteScope};
use netlink_packet_route::AddressFamily;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::{LinkUnspec, RouteMessageBuilder};
use std::net::IpAddr;

/// Opens a netlink socket in the pod (`pod`, left again for `home` at once) and finds the index
/// of `ifname` there, by ioctl: no round trip.
pub fn enter(pod: &NetNs, home: &NetNs, ifname: &str) -> Result<(Sock, u32)> {
    pod.run_in(home, || {
        let sock = Sock::open()?;
        let index = nix::net::if_::if_nametoindex(ifname)
            .map_err(|_| PluginError::Check(format!("{ifname} vanished from the pod")))?;
        Ok((sock, index))
    })?
}

/// Brings the pod interface (link `index`) up and adds every address, then every route, in one
/// batch: the kernel takes a socket's requests in order, so the link is up and its addresses are
/// there before the routes that need them. Unless the plan keeps it, IPv6 address generation is
/// turned off first, while the link is still down.
pub fn configure(sock: &Sock, v: &VethPlan, index: u32, ips: &[IpConfig], routes: &[Route]) -> Result<()> {
    let ifname = &v.pod_ifname;
    let mut b = Batch::default();
    if !v.pod_link_local {
        b.push(ifname.as_str(), veth::no_link_local(ifname), CHANGE);
    }
    let up = LinkUnspec::new_with_index(index).up().build();
    b.push(
        format!("setting {ifname} up"),
        RouteNetlinkMessage::SetLink(up),
        CHANGE,
    );
    for ip in ips {
        let mut m = netlink::address_message(index, ip.address.ip(), ip.address.prefix());
        if ip.address.is_ipv6() {
            // The address is ours by allocation: waiting for DAD only delays the pod.
            m.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        let what = format!("adding {} to {ifname}", ip.address);
        b.push(what, RouteNetlinkMessage::NewAddress(m), CREATE);
    }
    for r in routes {
        let what = format!("adding route {} in the pod", r.dst);
        b.push(
            what,
            RouteNetlinkMessage::NewRoute(route_message(r, index)?),
            CREATE,
        );
    }
    let mut answers = b.send(sock)?.into_iter();
    if !v.pod_link_local {
        if let Some((_, a)) = answers.next() {
            veth::no_link_local_answer(ifname, a)?;
        }
    }
    // Up, the addresses, then the routes; a route that exists already is fine.
    for (i, (what, a)) in answers.enumerate() {
        match a {
            Ok(()) => {}
            Err(e) if i > ips.len() && errno(&e) == Some(EEXIST) => {}
            Err(e) => return Err(PluginError::Netlink(what, e)),
        }
    }
    Ok(())
}

fn route_message(r: &Route, oif: u32) -> Result<RouteMessage> {
    let bad = |e: String| PluginError::Check(format!("route {}: {e}", r.dst));
    let mut b = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(r.dst.network(), r.dst.prefix())
        .map_err(|e| bad(e.to_string()))?;
    if let Some(gw) = r.gw {
        b = b.gateway(gw).map_err(|e| bad(e.to_string()))?;
    }
    b = b.output_interface(oif);
    if r.gw.is_none() {
        b = b.scope(RouteScope::Link);
    }
    if let Some(p) = r.priority {
        b = b.priority(p);
    }
    if let Some(t) = r.table {
        b = b.table_id(t);
    }
    if let Some(s) = r.scope {
        b = b.scope(RouteScope::from(s));
    }
    let mut m = b.build();
    let mut metrics = Vec::new();
    if let Some(mtu) = r.mtu {
        metrics.push(RouteMetric::Mtu(mtu));
    }
    if let Some(a) = r.advmss {
        metrics.push(RouteMetric::Advmss(a));
    }
    if !metrics.is_empty() {
        m.attributes.push(RouteAttribute::Metrics(metrics));
    }
    Ok(m)
}

/// CHECK, pod side: the interface exists (with the MAC the result gave, if any), carries every
/// address and has every route.
pub async fn check(
    nl: &Nl,
    ifname: &str,
    mac: Option<[u8; 6]>,
    ips: &[IpConfig],
    routes: &[Route],
) -> Result<()> {
    let fail = |m: String| Err(PluginError::Check(m));
    let Some(link) = nl.link(ifname).await? else {
        return fail(format!("{ifname} is not in the pod namespace"));
    };
    if mac.is_some() && netlink::mac(&link) != mac {
        return fail(format!("{ifname} has another MAC than the result says"));
    }
    let index = link.header.index;
    let addrs: Vec<(IpAddr, u8)> = nl
        .handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .map_ok(|m| {
            let ip = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            (ip, m.header.prefix_len)
        })
        .try_filter_map(|(ip, len)| async move { Ok(ip.map(|ip| (ip, len))) })
        .try_collect()
        .await
        .map_err(PluginError::netlink("listing pod addresses"))?;
    for ip in ips {
        if !addrs.contains(&(ip.address.ip(), ip.address.prefix())) {
            return fail(format!("{ifname} lacks address {}", ip.address));
        }
    }
    let mut have: Vec<RouteMessage> = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut q = RouteMessageBuilder::<IpAddr>::new().build();
        q.header.address_family = family;
        let mut s = nl.handle.route().get(q).execute();
        while let Some(m) = s
            .try_next()
            .await
            .map_err(PluginError::netlink("listing pod routes"))?
        {
            have.push(m);
        }
    }
    for r in routes {
        let found = have.iter().any(|m| {
            let dst = m.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(d) => addr(d),
                _ => None,
            });
            let gw = m.attributes.iter().find_map(|a| match a {
                RouteAttribute::Gateway(g) => addr(g),
                _ => None,
            });
            let dst_ok = match dst {
                Some(d) => d == r.dst.network() && m.header.destination_prefix_length == r.dst.prefix(),
                None => {
                    r.dst.prefix() == 0
                        && m.header.destination_prefix_length == 0
                        && r.dst.is_ipv4() == (m.header.address_family == AddressFamily::Inet)
                }
            };
            dst_ok && (r.gw.is_none() || gw == r.gw)
        });
        if !found {
            return fail(format!(
                "the pod lacks route {}{}",
                r.dst,
                r.gw.map(|g| format!(" via {g}")).unwrap_or_default()
            ));
        }
    }
    Ok(())
}

fn addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
        RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
        _ => None,
    }
}
