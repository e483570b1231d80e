//! One rtnetlink socket per namespace, and the link queries every step needs.

use crate::error::{errno, BridgeError, Result, ENODEV};
use futures::TryStreamExt;
use netlink_packet_route::address::AddressMessage;
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::{AddressMessageBuilder, Handle};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An rtnetlink socket bound to the namespace it was opened in.
pub struct Nl {
    pub handle: Handle,
}

impl Nl {
    /// Opens a socket in the calling thread's current namespace. Must run inside a tokio runtime
    /// (the socket's connection task is spawned on it).
    pub fn connect() -> Result<Nl> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(BridgeError::io("opening a netlink socket"))?;
        tokio::spawn(Eager(conn));
        Ok(Nl { handle })
    }

    /// The link called `name`, if there is one.
    pub async fn link(&self, name: &str) -> Result<Option<LinkMessage>> {
        let mut s = self.handle.link().get().match_name(name.to_string()).execute();
        match s.try_next().await {
            Ok(m) => Ok(m),
            Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
            Err(e) => Err(BridgeError::Netlink(format!("looking up link {name}"), e)),
        }
    }
}

/// The message that adds `ip`/`prefix` to link `index` (or, sent as a delete, removes it).
pub fn address_message(index: u32, ip: IpAddr, prefix: u8) -> AddressMessage {
    match ip {
        IpAddr::V4(a) => AddressMessageBuilder::<Ipv4Addr>::new()
            .index(index)
            .address(a, prefix)
            .build(),
        IpAddr::V6(a) => AddressMessageBuilder::<Ipv6Addr>::new()
            .index(index)
            .address(a, prefix)
            .build(),
    }
}

pub fn mac(l: &LinkMessage) -> Option<[u8; 6]> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(m) => m.as_slice().try_into().ok(),
        _ => None,
    })
}

pub fn mtu(l: &LinkMessage) -> Option<u32> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(m) => Some(*m),
        _ => None,
    })
}

pub fn controller(l: &LinkMessage) -> Option<u32> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::Controller(m) => Some(*m),
        _ => None,
    })
}

pub fn kind(l: &LinkMessage) -> Option<&InfoKind> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k),
            _ => None,
        }),
        _ => None,
    })
}

pub fn is_up(l: &LinkMessage) -> bool {
    l.header.flags.contains(LinkFlags::Up)
}

/// Polls a netlink connection until it has sent every request queued on it. The connection
/// writes one request per poll; requests made together would otherwise go out one round trip
/// apart, where the kernel could take them all at once (it answers a socket's requests in
/// order).
struct Eager<C>(C);

/// Polls per wake-up: more than the requests a command makes at once.
const EAGER_POLLS: usize = 8;

impl<C: std::future::Future + Unpin> std::future::Future for Eager<C> {
    type Output = C::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<C::Output> {
        for _ in 0..EAGER_POLLS {
            if let std::task::Poll::Ready(v) = std::pin::Pin::new(&mut self.0).poll(cx) {
                return std::task::Poll::Ready(v);
            }
        }
        std::task::Poll::Pending
    }
}
