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
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_found_and_nothing_else_invented() {
        let lo = probe("lo").unwrap().expect("lo");
        assert!(lo.up && lo.index > 0 && lo.mtu > 0);
        assert_eq!(probe("no-such-link0").unwrap(), None);
        assert_eq!(probe("").unwrap(), None);
        assert_eq!(probe("sixteen-bytes-xx").unwrap(), None);
    }
}
