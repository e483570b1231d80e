//! The bridge's pod ports: the host ends of the pods' veth pairs, named from their attachment so
//! that DEL and reclaim find them without state.

use crate::mac::fnv1a;

/// Ports a Linux bridge takes (it numbers them 1 to 1023): one per pod.
pub const MAX_PORTS: u64 = 1023;

/// The host end's name for attachment (network, container ID, ifname): `veth` + 11 hex digits of
/// a hash (15 bytes, the kernel's limit), so two attachments never collide in practice.
pub fn host_veth_name(network: &str, container_id: &str, ifname: &str) -> String {
    format!("veth{:011x}", fnv1a(&[network, container_id, ifname]) >> 20)
}

/// Is there a link called `name` in the calling thread's network namespace? An answer other than
/// "no such device" counts as yes: callers use this to decide that a pod is gone, and must not
/// decide so on an error.
pub fn exists(name: &str) -> bool {
    !matches!(
        nix::net::if_::if_nametoindex(name),
        Err(nix::errno::Errno::ENODEV)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_fit_the_kernel() {
        let n = host_veth_name("net", "c1", "eth0");
        assert_eq!(n, host_veth_name("net", "c1", "eth0"));
        assert_eq!(n.len(), 15);
        assert_ne!(n, host_veth_name("net", "c1", "eth1"));
        assert!(exists("lo"));
        assert!(!exists(&n));
    }
}
