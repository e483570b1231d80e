//! The kernel's link, address, route and neighbour (FDB and ARP) events, read from a plain netlink socket in the daemon's
//! loop and reduced to what a reconcile needs. Reading them where they are used (no task that
//! parses and queues full messages ahead of the loop) keeps memory flat while the daemon installs
//! tens of thousands of routes, each of which the kernel also announces; when the socket's buffer
//! overflows the kernel drops events, which is reported as [`Event::Lost`] so that the caller
//! checks everything instead of trusting what it last saw.

use crate::error::{Result, RoutedError};
use crate::raw::{messages, parse_route, u16_at, u32_at};
use ipnetwork::IpNetwork;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_NEWNEIGH: u16 = 28;
const RTM_DELNEIGH: u16 = 29;
const RTM_DELNEXTHOP: u16 = 105;
const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_NEIGH: u32 = 3;
const RTNLGRP_IPV4_IFADDR: u32 = 5;
const RTNLGRP_IPV4_ROUTE: u32 = 7;
const RTNLGRP_IPV6_IFADDR: u32 = 9;
const RTNLGRP_IPV6_ROUTE: u32 = 11;
const RTNLGRP_NEXTHOP: u32 = 32;
const NHMSG: usize = 8;
const NHA_ID: u16 = 1;
const IFINFOMSG: usize = 16;
const IFLA_IFNAME: u16 = 3;
const NDMSG: usize = 12;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const AF_BRIDGE: u8 = 7;

/// What happened, as far as the daemon cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A route of the main table (either family) went: its protocol and destination.
    RouteGone(u8, IpNetwork),
    /// A route of the main table was added or replaced: protocol, destination, gateway
    /// (through a nexthop: the address its id stands for).
    RouteNew(u8, IpNetwork, Option<std::net::IpAddr>),
    /// A nexthop object went (and with it, silently, every route through it).
    NexthopGone(u32),
    /// A link appeared, changed or went (`name` when the kernel said it).
    Link { index: u32, name: Option<String> },
    /// An address was added to or removed from link `index`.
    Address { index: u32 },
    /// An FDB or neighbour entry of link `index` was added, changed or deleted.
    Neigh { index: u32, deleted: bool, entry: Neigh },
    /// The kernel dropped events: anything may have changed.
    Lost,
}

/// An FDB or neighbour entry, as far as an event tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Neigh {
    /// MAC → remote address.
    Fdb { mac: [u8; 6], dst: Option<IpAddr> },
    /// Address (either family) → MAC.
    Ip { ip: IpAddr, mac: Option<[u8; 6]> },
}

/// A socket subscribed to link, address, route (both families), neighbour and nexthop events of the calling
/// thread's network namespace.
pub struct Events {
    fd: AsyncFd<Socket>,
    buf: Vec<u8>,
}

impl Events {
    pub fn open() -> Result<Events> {
        let io = |e| RoutedError::Io("netlink events".into(), e);
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(io)?;
        socket.bind_auto().map_err(io)?;
        for g in [
            RTNLGRP_LINK,
            RTNLGRP_IPV4_IFADDR,
            RTNLGRP_IPV4_ROUTE,
            RTNLGRP_IPV6_IFADDR,
            RTNLGRP_IPV6_ROUTE,
            RTNLGRP_NEIGH,
        ] {
            socket.add_membership(g).map_err(io)?;
        }
        // A kernel without nexthop objects has no such group: their events cannot happen there.
        let _ = socket.add_membership(RTNLGRP_NEXTHOP);
        socket.set_non_blocking(true).map_err(io)?;
        // SAFETY: the socket owns its descriptor, keeps it open until it is dropped (with the
        // AsyncFd that owns it) and returns the same one from every as_raw_fd.
        let fd = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
            .map_err(|e| io(e.into()))?;
        Ok(Events {
            fd,
            buf: vec![0u8; 1 << 16],
        })
    }

    /// Waits for events, then returns all that are queued (at least one).
    pub async fn next(&mut self) -> Result<Vec<Event>> {
        let io = |e| RoutedError::Io("netlink events".into(), e);
        loop {
            let mut guard = self.fd.readable().await.map_err(io)?;
            let mut out = Vec::new();
            loop {
                match guard.get_inner().recv(&mut &mut self.buf[..], 0) {
                    Ok(n) => parse(&self.buf[..n], &mut out),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        guard.clear_ready();
                        break;
                    }
                    Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                        if out.last() != Some(&Event::Lost) {
                            out.push(Event::Lost);
                        }
                    }
                    Err(e) => return Err(io(e)),
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
        }
    }
}

/// The events of one datagram; messages of no interest are skipped.
fn parse(buf: &[u8], out: &mut Vec<Event>) {
    for (kind, _, p) in messages(buf) {
        match kind {
            RTM_DELROUTE => {
                if let Some((protocol, dst, _)) = parse_route(p) {
                    out.push(Event::RouteGone(protocol, dst));
                }
            }
            RTM_NEWROUTE => {
                if let Some((protocol, dst, gw)) = parse_route(p) {
                    out.push(Event::RouteNew(protocol, dst, gw));
                }
            }
            RTM_DELNEXTHOP => {
                if let Some(id) = nexthop_id(p) {
                    out.push(Event::NexthopGone(id));
                }
            }
            RTM_NEWLINK | RTM_DELLINK => {
                if let Some(index) = u32_at(p, 4) {
                    out.push(Event::Link {
                        index,
                        name: link_name(p),
                    });
                }
            }
            RTM_NEWNEIGH | RTM_DELNEIGH => {
                if let Some(e) = neigh(p, kind == RTM_DELNEIGH) {
                    out.push(e);
                }
            }
            RTM_NEWADDR | RTM_DELADDR => {
                if let Some(index) = u32_at(p, 4) {
                    out.push(Event::Address { index });
                }
            }
            _ => {}
        }
    }
}

/// The value of the first attribute of type `kind` after a message's fixed part of `fixed`
/// bytes; `None` if there is none or the attributes are malformed.
fn attribute(p: &[u8], fixed: usize, kind: u16) -> Option<&[u8]> {
    let mut at = fixed;
    while let (Some(len), Some(k)) = (u16_at(p, at), u16_at(p, at + 2)) {
        let len = len as usize;
        if len < 4 || at + len > p.len() {
            return None;
        }
        if k == kind {
            return Some(&p[at + 4..at + len]);
        }
        at += (len + 3) & !3;
    }
    None
}

/// An ndmsg payload of an FDB or neighbour entry.
fn neigh(p: &[u8], deleted: bool) -> Option<Event> {
    let index = u32_at(p, 4)?;
    let mac = attribute(p, NDMSG, NDA_LLADDR).and_then(|v| <[u8; 6]>::try_from(v).ok());
    let ip = attribute(p, NDMSG, NDA_DST).and_then(|v| match v.len() {
        4 => <[u8; 4]>::try_from(v).ok().map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        16 => <[u8; 16]>::try_from(v)
            .ok()
            .map(|a| IpAddr::V6(Ipv6Addr::from(a))),
        _ => None,
    });
    let entry = match *p.first()? {
        AF_BRIDGE => Neigh::Fdb { mac: mac?, dst: ip },
        AF_INET | AF_INET6 => Neigh::Ip { ip: ip?, mac },
        _ => return None,
    };
    Some(Event::Neigh {
        index,
        deleted,
        entry,
    })
}

/// NHA_ID of an nhmsg payload.
fn nexthop_id(p: &[u8]) -> Option<u32> {
    u32_at(attribute(p, NHMSG, NHA_ID)?, 0)
}

/// IFLA_IFNAME of an ifinfomsg payload.
fn link_name(p: &[u8]) -> Option<String> {
    let v = attribute(p, IFINFOMSG, IFLA_IFNAME)?;
    let v = v.split(|b| *b == 0).next().unwrap_or(v);
    std::str::from_utf8(v).ok().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::HEADER;

    fn msg(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut m = vec![0u8; HEADER];
        m.extend_from_slice(payload);
        let len = m.len() as u32;
        m[0..4].copy_from_slice(&len.to_ne_bytes());
        m[4..6].copy_from_slice(&kind.to_ne_bytes());
        m.resize(m.len().next_multiple_of(4), 0);
        m
    }

    fn with_attr(mut p: Vec<u8>, kind: u16, v: &[u8]) -> Vec<u8> {
        let len = 4 + v.len();
        p.extend_from_slice(&(len as u16).to_ne_bytes());
        p.extend_from_slice(&kind.to_ne_bytes());
        p.extend_from_slice(v);
        p.resize(p.len().next_multiple_of(4), 0);
        p
    }

    #[test]
    fn events_are_reduced_to_what_a_reconcile_needs() {
        let mut link = vec![0u8; IFINFOMSG];
        link[4..8].copy_from_slice(&7u32.to_ne_bytes());
        let link = with_attr(link, IFLA_IFNAME, b"cbr0\0");
        let mut addr = vec![2u8, 24, 0, 0];
        addr.extend_from_slice(&9u32.to_ne_bytes());
        let route = with_attr(vec![2, 24, 0, 0, 254, 157, 0, 1, 0, 0, 0, 0], 1, &[10, 244, 3, 0]);
        let mut buf = msg(RTM_NEWLINK, &link);
        buf.extend(msg(RTM_DELADDR, &addr));
        buf.extend(msg(RTM_DELROUTE, &route));
        buf.extend(msg(RTM_NEWROUTE, &route));
        let nh = with_attr(vec![2u8, 0, 0, 0, 0, 0, 0, 0], NHA_ID, &77u32.to_ne_bytes());
        buf.extend(msg(RTM_DELNEXTHOP, &nh));
        let mut fdb = vec![AF_BRIDGE, 0, 0, 0];
        fdb.extend_from_slice(&5u32.to_ne_bytes());
        fdb.extend_from_slice(&[0x80, 0, 0x02, 0]);
        let fdb = with_attr(
            with_attr(fdb, NDA_LLADDR, &[0x0e, 0, 0, 0, 0, 2]),
            NDA_DST,
            &[172, 16, 0, 2],
        );
        buf.extend(msg(RTM_NEWNEIGH, &fdb));
        let mut arp = vec![AF_INET, 0, 0, 0];
        arp.extend_from_slice(&5u32.to_ne_bytes());
        arp.extend_from_slice(&[0x80, 0, 0, 0]);
        let arp = with_attr(arp, NDA_DST, &[10, 244, 2, 0]);
        buf.extend(msg(RTM_DELNEIGH, &arp));
        // an IPv6 neighbour; one without an address is of no interest
        let mut v6 = vec![10u8, 0, 0, 0];
        v6.extend_from_slice(&5u32.to_ne_bytes());
        v6.extend_from_slice(&[0x80, 0, 0, 0]);
        buf.extend(msg(RTM_NEWNEIGH, &v6));
        let v6 = with_attr(
            v6,
            NDA_DST,
            &"fd00:10:244:2::".parse::<Ipv6Addr>().unwrap().octets(),
        );
        buf.extend(msg(RTM_NEWNEIGH, &v6));
        let route6 = with_attr(
            vec![10, 64, 0, 0, 254, 157, 0, 1, 0, 0, 0, 0],
            1,
            &"fd00:10:244:3::".parse::<Ipv6Addr>().unwrap().octets(),
        );
        buf.extend(msg(RTM_DELROUTE, &route6));
        // a truncated message and one of no interest change nothing
        buf.extend(msg(RTM_DELLINK, &[0u8; 3]));
        buf.extend(msg(RTM_DELNEXTHOP, &[0u8; 3]));
        buf.extend(msg(30, &route));
        let mut out = Vec::new();
        parse(&buf, &mut out);
        assert_eq!(
            out,
            [
                Event::Link {
                    index: 7,
                    name: Some("cbr0".into())
                },
                Event::Address { index: 9 },
                Event::RouteGone(157, "10.244.3.0/24".parse().unwrap()),
                Event::RouteNew(157, "10.244.3.0/24".parse().unwrap(), None),
                Event::NexthopGone(77),
                Event::Neigh {
                    index: 5,
                    deleted: false,
                    entry: Neigh::Fdb {
                        mac: [0x0e, 0, 0, 0, 0, 2],
                        dst: Some(IpAddr::V4(Ipv4Addr::new(172, 16, 0, 2)))
                    }
                },
                Event::Neigh {
                    index: 5,
                    deleted: true,
                    entry: Neigh::Ip {
                        ip: IpAddr::V4(Ipv4Addr::new(10, 244, 2, 0)),
                        mac: None
                    }
                },
                Event::Neigh {
                    index: 5,
                    deleted: false,
                    entry: Neigh::Ip {
                        ip: "fd00:10:244:2::".parse().unwrap(),
                        mac: None
                    }
                },
                Event::RouteGone(157, "fd00:10:244:3::/64".parse().unwrap()),
            ]
        );
        // a name attribute that claims more than the message has
        let mut bad = vec![0u8; IFINFOMSG];
        bad.extend_from_slice(&[40, 0, 3, 0, b'x', 0, 0, 0]);
        assert_eq!(link_name(&bad), None);
    }
}
