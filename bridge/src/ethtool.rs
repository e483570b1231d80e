//! The TX checksum offload setting of a link, through the SIOCETHTOOL ioctl. Some kernels and
//! NICs corrupt VXLAN-encapsulated packets with TX checksum offload on (flannel #1279), so the
//! daemon turns it off on its VXLAN device and keeps it off.
//!
//! Errors are the kernel's errno as an [`std::io::Error`] (`raw_os_error()`): ENODEV for a missing
//! link, EOPNOTSUPP for a driver that cannot change the setting, EPERM without CAP_NET_ADMIN.

use nix::libc;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// From <linux/ethtool.h>; libc does not carry the ethtool commands.
const ETHTOOL_GTXCSUM: u32 = 0x16;
const ETHTOOL_STXCSUM: u32 = 0x17;

/// `struct ethtool_value` of <linux/ethtool.h>: what GTXCSUM and STXCSUM read and write.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// Whether TX checksumming is on for the link `name` in the calling thread's network namespace.
pub fn tx_checksum(name: &str) -> io::Result<bool> {
    let fd = socket()?;
    get(&fd, name)
}

/// Turns TX checksumming of the link `name` on or off, if it is not already so; whether it
/// changed anything.
///
/// The kernel maps the legacy ETHTOOL_STXCSUM onto the feature bits (NETIF_F_HW_CSUM,
/// NETIF_F_IP_CSUM, NETIF_F_IPV6_CSUM, as far as the driver lets them change), so
/// `ethtool -k DEV` shows `tx-checksumming: off` after it; the segmentation offloads that need
/// checksumming (TSO, USO) go off with it (`off [requested on]`) and come back when it is on again.
/// A link whose setting is fixed (loopback) fails with EOPNOTSUPP.
pub fn set_tx_checksum(name: &str, on: bool) -> io::Result<bool> {
    let fd = socket()?;
    if get(&fd, name)? == on {
        return Ok(false);
    }
    ethtool(&fd, name, ETHTOOL_STXCSUM, u32::from(on))?;
    // A driver may accept the request and keep the feature (fixed by a lower device): a reconcile
    // loop would then "change" it forever, so say so instead.
    if get(&fd, name)? != on {
        return Err(io::Error::other(format!(
            "{name}: the kernel kept TX checksumming {}",
            if on { "off" } else { "on" }
        )));
    }
    Ok(true)
}

fn get(fd: &OwnedFd, name: &str) -> io::Result<bool> {
    Ok(ethtool(fd, name, ETHTOOL_GTXCSUM, 0)? != 0)
}

/// A datagram socket only for its ioctls; closed when dropped.
fn socket() -> io::Result<OwnedFd> {
    // SAFETY: plain system call with constant arguments.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just opened, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An ifreq naming `name`; kernel names are at most IFNAMSIZ - 1 bytes, NUL-free, not empty.
fn request(name: &str) -> io::Result<libc::ifreq> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a link name"),
        ));
    }
    // SAFETY: ifreq is plain old data (a name and a union of integers, byte arrays and a
    // pointer); all zeroes is a valid value of every field.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in r.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Ok(r)
}

/// One ethtool command carrying an `ethtool_value`; the value the kernel left in `data`.
fn ethtool(fd: &OwnedFd, name: &str, cmd: u32, data: u32) -> io::Result<u32> {
    let mut r = request(name)?;
    let mut v = EthtoolValue { cmd, data };
    r.ifr_ifru.ifru_data = (&mut v as *mut EthtoolValue).cast();
    // SAFETY: `r` is a valid ifreq whose ifr_data points at `v`, and both outlive the call; for
    // these two commands the kernel reads the name and reads/writes only the 8 bytes of `v`.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCETHTOOL as _, &mut r) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v.data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated_before_any_system_call() {
        for bad in [
            "",
            "sixteen-bytes-xx",
            "nul\0inside",
            "a-name-far-too-long-for-linux",
        ] {
            let e = tx_checksum(bad).expect_err(bad);
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
            let e = set_tx_checksum(bad, false).expect_err(bad);
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
        // 15 bytes is the longest name the kernel has room for.
        assert!(request("fifteen-bytes-x").is_ok());
        assert!(request("vxlan.cbr").is_ok());
    }

    #[test]
    fn layout_matches_the_kernel() {
        assert_eq!(std::mem::size_of::<EthtoolValue>(), 8);
        assert_eq!(libc::SIOCETHTOOL, 0x8946);
    }

    #[test]
    fn reads_loopback_and_reports_a_missing_link() {
        // Reads only: nothing here changes the namespace the tests run in.
        tx_checksum("lo").expect("reading lo");
        let e = tx_checksum("no-such-link0").expect_err("no such link");
        assert_eq!(e.raw_os_error(), Some(libc::ENODEV));
    }
}
