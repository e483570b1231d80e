//! One rtnetlink socket per namespace, and the few link queries every step needs.

use crate::error::{errno, PluginError, Result};
use futures::TryStreamExt;
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::Handle;

pub struct Nl {
    pub handle: Handle,
}

impl Nl {
    /// Opens a socket in the calling thread's current namespace. Must run inside the runtime.
    pub fn connect() -> Result<Nl> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(PluginError::io("opening a netlink socket"))?;
        tokio::spawn(conn);
        Ok(Nl { handle })
    }

    /// The link called `name`, if there is one.
    pub async fn link(&self, name: &str) -> Result<Option<LinkMessage>> {
        let mut s = self.handle.link().get().match_name(name.to_string()).execute();
        match s.try_next().await {
            Ok(m) => Ok(m),
            Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
            Err(e) => Err(PluginError::Netlink(format!("looking up link {name}"), e)),
        }
    }
}

/// The errnos we tolerate, as `error::errno` reports them.
pub const ENODEV: i32 = nix::errno::Errno::ENODEV as i32;
pub const EEXIST: i32 = nix::errno::Errno::EEXIST as i32;
pub const ESRCH: i32 = nix::errno::Errno::ESRCH as i32;

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

/// A stable 64-bit FNV-1a hash, for names and MACs that must come out the same in every process.
pub fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    h
}
