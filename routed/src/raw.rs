//! The rtnetlink requests that the rtnetlink crate lacks, or makes costly at scale, spoken over a
//! plain netlink socket with fixed headers and a few attributes each:
//!
//! - Nexthop objects (Linux 5.3+): one per peer node, and routes that point at it by id. The
//!   kernel then shares one next hop among all routes through a node instead of building one per
//!   route, whose cost grows with the number of distinct gateways (tens of thousands of nodes take
//!   seconds to route without them, a fraction of a second with them). netlink-packet-route has no
//!   nexthop messages. Many requests go out in one write; their acknowledgements are read back by
//!   sequence number.
//! - The dump of our routes that every resync makes: the kernel filters it by protocol (strict
//!   checking), and only the three attributes we need are read from each message, without
//!   building a message object per route.

use crate::backend::routes::ROUTE_PROTOCOL;
use crate::error::{Result, RoutedError};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RT_TABLE_MAIN: u8 = 254;
const RTA_DST: u16 = 1;
const RTA_GATEWAY: u16 = 5;
const RTA_TABLE: u16 = 15;
const RTA_NH_ID: u16 = 30;
const RTA_VIA: u16 = 18;
const RTMSG: usize = 12;
const RTM_NEWNEXTHOP: u16 = 104;
const RTM_DELNEXTHOP: u16 = 105;
const RTM_GETNEXTHOP: u16 = 106;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NHA_ID: u16 = 1;
const NHA_OIF: u16 = 5;
const NHA_GATEWAY: u16 = 6;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
pub(crate) use cbrnet_bridge::batch::HEADER;
/// Requests per write: each acknowledgement takes about a kilobyte of the socket's receive buffer
/// (the default holds some 200), and one that does not fit is lost (ENOBUFS).
const BATCH: usize = 64;
const NHMSG: usize = 8;

/// The id of the nexthop of peer `gw`: its address, which no other peer has (0, "pick one", is
/// not a unicast address).
pub fn id(gw: Ipv4Addr) -> u32 {
    u32::from(gw)
}

/// A nexthop of ours, as the kernel has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nexthop {
    pub gateway: Ipv4Addr,
    pub oif: u32,
    /// The gateway is taken as on the link without a route to it (the VXLAN device's hops).
    pub onlink: bool,
}

/// RTNH_F_ONLINK, in an nhmsg's flags.
const RTNH_F_ONLINK: u32 = 4;

/// A netlink socket for these requests.
pub struct Raw {
    socket: Socket,
    seq: u32,
}

fn attr(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value);
    buf.resize(buf.len() + (4 - len % 4) % 4, 0);
}

/// One message: header, `nhmsg` (with `nh_flags`), attributes.
fn message(kind: u16, flags: u16, seq: u32, nh_flags: u32, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut m = vec![0u8; HEADER];
    // Only a new nexthop carries our protocol: the kernel answers a dump whose header names one
    // with nothing, and refuses a delete's with EINVAL.
    let protocol = if kind == RTM_NEWNEXTHOP { ROUTE_PROTOCOL } else { 0 };
    m.extend_from_slice(&[AF_INET, 0, protocol, 0]);
    m.extend_from_slice(&nh_flags.to_ne_bytes());
    for (k, v) in attrs {
        attr(&mut m, *k, v);
    }
    let len = m.len() as u32;
    m[0..4].copy_from_slice(&len.to_ne_bytes());
    m[4..6].copy_from_slice(&kind.to_ne_bytes());
    m[6..8].copy_from_slice(&flags.to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    m
}

pub(crate) use cbrnet_bridge::batch::{messages, u16_at, u32_at};

/// A nexthop message's protocol and attributes, if it is one of ours with a gateway.
fn parse_nexthop(payload: &[u8]) -> Option<(u32, Nexthop)> {
    if payload.get(2) != Some(&ROUTE_PROTOCOL) {
        return None;
    }
    let onlink = u32_at(payload, 4)? & RTNH_F_ONLINK != 0;
    let (mut id, mut gw, mut oif) = (None, None, None);
    let mut at = NHMSG;
    while let (Some(len), Some(kind)) = (u16_at(payload, at), u16_at(payload, at + 2)) {
        let len = len as usize;
        if len < 4 || at + len > payload.len() {
            break;
        }
        let v = &payload[at + 4..at + len];
        match kind {
            NHA_ID => id = u32_at(v, 0),
            NHA_OIF => oif = u32_at(v, 0),
            NHA_GATEWAY if v.len() == 4 => gw = Some(Ipv4Addr::new(v[0], v[1], v[2], v[3])),
            _ => {}
        }
        at += (len + 3) & !3;
    }
    Some((
        id?,
        Nexthop {
            gateway: gw?,
            oif: oif?,
            onlink,
        },
    ))
}

/// A route message of the main table, of either family: (protocol, destination, gateway; a
/// nexthop object's id reads as the IPv4 address it is made from).
pub(crate) fn parse_route(p: &[u8]) -> Option<(u8, ipnetwork::IpNetwork, Option<std::net::IpAddr>)> {
    use std::net::{IpAddr, Ipv6Addr};
    let (family, dst_len, table, protocol) = (*p.first()?, *p.get(1)?, *p.get(4)?, *p.get(5)?);
    let addr = |v: &[u8]| -> Option<IpAddr> {
        match v.len() {
            4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(v).ok()?))),
            16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(v).ok()?))),
            _ => None,
        }
    };
    let mut dst = match family {
        AF_INET => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        AF_INET6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let (mut gw, mut table32) = (None, None);
    let mut at = RTMSG;
    while let (Some(len), Some(kind)) = (u16_at(p, at), u16_at(p, at + 2)) {
        let len = len as usize;
        if len < 4 || at + len > p.len() {
            break;
        }
        let v = &p[at + 4..at + len];
        match kind {
            RTA_DST => {
                if let Some(a) = addr(v).filter(|a| a.is_ipv4() == dst.is_ipv4()) {
                    dst = a;
                }
            }
            RTA_GATEWAY => gw = addr(v),
            // struct rtvia: a 16-bit family, then the address.
            RTA_VIA if v.len() > 2 => gw = addr(&v[2..]),
            RTA_NH_ID => gw = u32_at(v, 0).map(|id| IpAddr::V4(Ipv4Addr::from(id))),
            RTA_TABLE => table32 = u32_at(v, 0),
            _ => {}
        }
        at += (len + 3) & !3;
    }
    if table32.unwrap_or(u32::from(table)) != u32::from(RT_TABLE_MAIN) {
        return None;
    }
    let dst = ipnetwork::IpNetwork::new(dst, dst_len).ok()?;
    Some((protocol, dst, gw))
}

impl Raw {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> Result<Raw> {
        let io = |e| RoutedError::Io("a netlink socket".into(), e);
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(io)?;
        socket.bind_auto().map_err(io)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(io)?;
        // Without it, the kernel ignores the dump filters and sends every route.
        let _ = socket.set_netlink_get_strict_chk(true);
        Ok(Raw { socket, seq: 0 })
    }

    /// Our routes in the main table: destination → gateway (through a nexthop of ours, the
    /// gateway its id stands for).
    pub fn our_routes(&mut self) -> Result<crate::backend::routes::Ours> {
        let mut out = crate::backend::routes::Ours::new();
        self.dump_routes(ROUTE_PROTOCOL, |proto, dst, gw| {
            if proto == ROUTE_PROTOCOL {
                out.insert(dst, gw);
            }
        })?;
        Ok(out)
    }

    /// The destinations that routes of other protocols hold in the main table.
    pub fn foreign_destinations(&mut self) -> Result<std::collections::HashSet<ipnetwork::IpNetwork>> {
        let mut out = std::collections::HashSet::new();
        self.dump_routes(0, |proto, dst, _| {
            if proto != ROUTE_PROTOCOL {
                out.insert(dst);
            }
        })?;
        Ok(out)
    }

    /// Dumps the main table's IPv4 routes of `protocol` (0: all; a kernel without strict
    /// checking sends all anyway) into `each(protocol, destination, gateway)`.
    fn dump_routes(
        &mut self,
        protocol: u8,
        mut each: impl FnMut(u8, ipnetwork::IpNetwork, Option<std::net::IpAddr>),
    ) -> Result<()> {
        for family in [AF_INET, AF_INET6] {
            self.dump_family(family, protocol, &mut each)?;
        }
        Ok(())
    }

    fn dump_family(
        &mut self,
        family: u8,
        protocol: u8,
        each: &mut impl FnMut(u8, ipnetwork::IpNetwork, Option<std::net::IpAddr>),
    ) -> Result<()> {
        let seq = self.next_seq();
        // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
        let mut req = vec![0u8; HEADER];
        req.extend_from_slice(&[family, 0, 0, 0, RT_TABLE_MAIN, protocol, 0, 0, 0, 0, 0, 0]);
        let len = req.len() as u32;
        req[0..4].copy_from_slice(&len.to_ne_bytes());
        req[4..6].copy_from_slice(&RTM_GETROUTE.to_ne_bytes());
        req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        req[8..12].copy_from_slice(&seq.to_ne_bytes());
        let what = "listing routes";
        self.socket
            .send(&req, 0)
            .map_err(|e| RoutedError::Io(what.into(), e))?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = self
                .socket
                .recv(&mut &mut buf[..], 0)
                .map_err(|e| RoutedError::Io(what.into(), e))?;
            for (kind, s, payload) in messages(&buf[..n]) {
                if s != seq {
                    continue;
                }
                match kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let errno = u32_at(payload, 0).map_or(0, |e| (e as i32).wrapping_neg());
                        return Err(RoutedError::Io(
                            what.into(),
                            std::io::Error::from_raw_os_error(errno),
                        ));
                    }
                    RTM_NEWROUTE => {
                        if let Some((proto, dst, gw)) = parse_route(payload) {
                            each(proto, dst, gw);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends the requests, [`BATCH`] in one write, and reads an acknowledgement for each: the
    /// errno of each failed one, by sequence number.
    fn exchange(&mut self, msgs: &[(u32, Vec<u8>)]) -> Result<HashMap<u32, i32>> {
        let io = |e| RoutedError::Io("nexthop request".into(), e);
        let mut failed = HashMap::new();
        let mut buf = vec![0u8; 1 << 16];
        for chunk in msgs.chunks(BATCH) {
            let batch: Vec<u8> = chunk.iter().flat_map(|(_, m)| m.iter().copied()).collect();
            self.socket.send(&batch, 0).map_err(io)?;
            let mut waiting: HashSet<u32> = chunk.iter().map(|(s, _)| *s).collect();
            while !waiting.is_empty() {
                let n = self.socket.recv(&mut &mut buf[..], 0).map_err(io)?;
                for (kind, seq, payload) in messages(&buf[..n]) {
                    if kind == NLMSG_ERROR && waiting.remove(&seq) {
                        let errno = u32_at(payload, 0).map_or(0, |e| (e as i32).wrapping_neg());
                        if errno != 0 {
                            failed.insert(seq, errno);
                        }
                    }
                }
            }
        }
        Ok(failed)
    }

    /// Does this kernel have nexthop objects? (A dump answers; older kernels refuse the type.)
    pub fn supported(&mut self) -> bool {
        self.dump().is_ok()
    }

    /// Our nexthops: id → nexthop.
    pub fn dump(&mut self) -> Result<HashMap<u32, Nexthop>> {
        let seq = self.next_seq();
        let req = message(RTM_GETNEXTHOP, NLM_F_REQUEST | NLM_F_DUMP, seq, 0, &[]);
        self.socket
            .send(&req, 0)
            .map_err(|e| RoutedError::Io("listing nexthops".into(), e))?;
        let mut out = HashMap::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = self
                .socket
                .recv(&mut &mut buf[..], 0)
                .map_err(|e| RoutedError::Io("listing nexthops".into(), e))?;
            for (kind, s, payload) in messages(&buf[..n]) {
                if s != seq {
                    continue;
                }
                match kind {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let errno = u32_at(payload, 0).map_or(0, |e| (e as i32).wrapping_neg());
                        return Err(RoutedError::Io(
                            "listing nexthops".into(),
                            std::io::Error::from_raw_os_error(errno),
                        ));
                    }
                    RTM_NEWNEXTHOP => {
                        if let Some((id, nh)) = parse_nexthop(payload) {
                            out.insert(id, nh);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Creates the nexthops, replacing those of ours (`ours(id)`) only: an id another program's
    /// nexthop holds is never taken over (the kernel refuses it with EEXIST). Returns those the
    /// kernel refused, with their errno.
    pub fn put(&mut self, nhs: &[Nexthop], ours: impl Fn(u32) -> bool) -> Result<Vec<(Nexthop, i32)>> {
        let msgs: Vec<(u32, Vec<u8>)> = nhs
            .iter()
            .map(|nh| {
                let seq = self.next_seq();
                let how = if ours(id(nh.gateway)) {
                    NLM_F_REPLACE
                } else {
                    NLM_F_EXCL
                };
                let m = message(
                    RTM_NEWNEXTHOP,
                    NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | how,
                    seq,
                    if nh.onlink { RTNH_F_ONLINK } else { 0 },
                    &[
                        (NHA_ID, &id(nh.gateway).to_ne_bytes()),
                        (NHA_OIF, &nh.oif.to_ne_bytes()),
                        (NHA_GATEWAY, &nh.gateway.octets()),
                    ],
                );
                (seq, m)
            })
            .collect();
        let failed = self.exchange(&msgs)?;
        Ok(nhs
            .iter()
            .zip(&msgs)
            .filter_map(|(nh, (s, _))| failed.get(s).map(|e| (*nh, *e)))
            .collect())
    }

    /// Deletes nexthops by id (those gone already are fine).
    pub fn delete(&mut self, ids: &[u32]) -> Result<()> {
        let msgs: Vec<(u32, Vec<u8>)> = ids
            .iter()
            .map(|i| {
                let seq = self.next_seq();
                (
                    seq,
                    message(
                        RTM_DELNEXTHOP,
                        NLM_F_REQUEST | NLM_F_ACK,
                        seq,
                        0,
                        &[(NHA_ID, &i.to_ne_bytes())],
                    ),
                )
            })
            .collect();
        self.exchange(&msgs).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_messages_parse_to_protocol_destination_and_gateway() {
        let mut p = vec![AF_INET, 24, 0, 0, RT_TABLE_MAIN, ROUTE_PROTOCOL, 0, 1, 0, 0, 0, 0];
        attr(&mut p, RTA_TABLE, &254u32.to_ne_bytes());
        attr(&mut p, RTA_DST, &[10, 244, 3, 0]);
        attr(
            &mut p,
            RTA_NH_ID,
            &u32::from(Ipv4Addr::new(192, 168, 1, 3)).to_ne_bytes(),
        );
        assert_eq!(
            parse_route(&p),
            Some((
                ROUTE_PROTOCOL,
                "10.244.3.0/24".parse().unwrap(),
                Some("192.168.1.3".parse().unwrap())
            ))
        );
        // another protocol's route carries its protocol; another table's is skipped
        let mut other = p.clone();
        other[5] = 4;
        assert_eq!(parse_route(&other).map(|r| r.0), Some(4));
        let mut q = vec![AF_INET, 24, 0, 0, 252, ROUTE_PROTOCOL, 0, 1, 0, 0, 0, 0];
        attr(&mut q, RTA_DST, &[10, 244, 3, 0]);
        assert_eq!(parse_route(&q), None);
        assert_eq!(parse_route(&p[..5]), None);
    }

    #[test]
    fn messages_encode_and_parse_back() {
        let m = message(
            RTM_NEWNEXTHOP,
            NLM_F_REQUEST,
            7,
            RTNH_F_ONLINK,
            &[
                (NHA_ID, &9u32.to_ne_bytes()),
                (NHA_OIF, &3u32.to_ne_bytes()),
                (NHA_GATEWAY, &[192, 168, 1, 2]),
            ],
        );
        assert_eq!(m.len(), HEADER + NHMSG + 3 * 8);
        let parsed = messages(&m);
        assert_eq!(parsed.len(), 1);
        let (kind, seq, payload) = parsed[0];
        assert_eq!((kind, seq), (RTM_NEWNEXTHOP, 7));
        assert_eq!(
            parse_nexthop(payload),
            Some((
                9,
                Nexthop {
                    gateway: Ipv4Addr::new(192, 168, 1, 2),
                    oif: 3,
                    onlink: true,
                }
            ))
        );
        // truncated input is not a message
        assert!(messages(&m[..m.len() - 1]).is_empty());
        assert_eq!(id(Ipv4Addr::new(10, 0, 0, 1)), 0x0a00_0001);
    }
}
