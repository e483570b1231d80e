//! What the kernel says of a link by name, through the classic interface ioctls: index, flags,
//! MTU and MAC in four system calls on one socket, with no netlink round trip. The plugin's ADD
//! asks this of the bridge on every pod start.

use crate::error::{BridgeError, Result};
use nix::libc;
use std::os::fd::{AsRawFd, OwnedFd};

/// A link as the ioctls report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub index: u32,
    pub up: bool,
    pub promisc: bool,
    pub mtu: u32,
    pub mac: [u8; 6],
    /// The primary IPv4 address and its prefix length, if the link has one.
    pub ipv4: Option<(std::net::Ipv4Addr, u8)>,
}

fn request(name: &str) -> Option<libc::ifreq> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return None;
    }
    // SAFETY: ifreq is plain old data (a name and a union of integers and byte arrays); all
    // zeroes is a valid value of every field.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in r.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Some(r)
}

/// One interface ioctl on `fd`; `Ok(false)` if there is no such link.
fn ioctl(fd: &OwnedFd, req: libc::c_ulong, r: &mut libc::ifreq) -> Result<bool> {
    // SAFETY: `r` is a valid, initialized ifreq that outlives the call; these requests read the
    // name and write only inside the struct.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, r as *mut libc::ifreq) };
    if rc == 0 {
        return Ok(true);
    }
    match nix::errno::Errno::last() {
        nix::errno::Errno::ENODEV => Ok(false),
        e => Err(BridgeError::Io(format!("ioctl {req:#x}"), e.into())),
    }
}

/// The link called `name` in the calling thread's network namespace; `None` if there is none.
pub fn probe(name: &str) -> Result<Option<Probe>> {
    let Some(mut r) = request(name) else {
        return Ok(None);
    };
    let fd = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| BridgeError::Io("a socket for interface ioctls".into(), e.into()))?;
    if !ioctl(&fd, libc::SIOCGIFINDEX, &mut r)? {
        return Ok(None);
    }
    // SAFETY (each union read): the ioctl just made wrote that member.
    let index = unsafe { r.ifr_ifru.ifru_ifindex } as u32;
    if !ioctl(&fd, libc::SIOCGIFFLAGS, &mut r)? {
        return Ok(None);
    }
    let flags = unsafe { r.ifr_ifru.ifru_flags } as libc::c_int;
    if !ioctl(&fd, libc::SIOCGIFMTU, &mut r)? {
        return Ok(None);
    }
    let mtu = unsafe { r.ifr_ifru.ifru_mtu } as u32;
    if !ioctl(&fd, libc::SIOCGIFHWADDR, &mut r)? {
        return Ok(None);
    }
    let data = unsafe { r.ifr_ifru.ifru_hwaddr }.sa_data;
    let mut mac = [0u8; 6];
    for (m, d) in mac.iter_mut().zip(data) {
        *m = d as u8;
    }
    Ok(Some(Probe {
        index,
        up: flags & libc::IFF_UP != 0,
        promisc: flags & libc::IFF_PROMISC != 0,
        mtu,
        mac,
        ipv4: primary_ipv4(&fd, &mut r)?,
    }))
}

/// SIOCGIFADDR and SIOCGIFNETMASK; `None` when the link has no IPv4 address (EADDRNOTAVAIL).
fn primary_ipv4(fd: &OwnedFd, r: &mut libc::ifreq) -> Result<Option<(std::net::Ipv4Addr, u8)>> {
    let mut get = |req| -> Result<Option<std::net::Ipv4Addr>> {
        // SAFETY: as in `ioctl`; these requests write a sockaddr_in into the union.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, r as *mut libc::ifreq) };
        if rc != 0 {
            return match nix::errno::Errno::last() {
                nix::errno::Errno::EADDRNOTAVAIL | nix::errno::Errno::ENODEV => Ok(None),
                e => Err(BridgeError::Io(format!("ioctl {req:#x}"), e.into())),
            };
        }
        // SAFETY: the ioctl just wrote an AF_INET sockaddr_in into ifru_addr; sockaddr and
        // sockaddr_in have the same size, and the address sits in bytes 2..6 of sa_data.
        let sa = unsafe { r.ifr_ifru.ifru_addr };
        if sa.sa_family != libc::AF_INET as libc::sa_family_t {
            return Ok(None);
        }
        let d = sa.sa_data;
        Ok(Some(std::net::Ipv4Addr::new(
            d[2] as u8, d[3] as u8, d[4] as u8, d[5] as u8,
        )))
    };
    let Some(addr) = get(libc::SIOCGIFADDR)? else {
        return Ok(None);
    };
    let Some(mask) = get(libc::SIOCGIFNETMASK)? else {
        return Ok(None);
    };
    Ok(Some((addr, u32::from(mask).count_ones() as u8)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_found_and_nothing_else_invented() {
        let lo = probe("lo").unwrap().expect("lo");
        assert!(lo.up && lo.index > 0 && lo.mtu > 0);
        assert_eq!(lo.ipv4, Some((std::net::Ipv4Addr::LOCALHOST, 8)));
        assert_eq!(probe("no-such-link0").unwrap(), None);
        assert_eq!(probe("").unwrap(), None);
        assert_eq!(probe("sixteen-bytes-xx").unwrap(), None);
    }
}
