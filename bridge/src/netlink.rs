//! One rtnetlink socket per namespace, and the link queries every step needs.

use crate::error::{errno, BridgeError, Result, ENODEV};
use futures::TryStreamExt;
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::Handle;

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
        tokio::spawn(conn);
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
