//! MACs and names that must come out the same in every process: derived from addresses or from a
//! stable hash of names, never random.

use std::net::IpAddr;

/// A stable 64-bit FNV-1a hash of `parts` (each followed by a NUL, so `["ab","c"]` and
/// `["a","bc"]` differ).
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

/// A locally administered unicast MAC from a hash.
pub fn from_hash(h: u64) -> [u8; 6] {
    let b = h.to_be_bytes();
    [(b[0] & 0xfc) | 0x02, b[1], b[2], b[3], b[4], b[5]]
}

/// `0a:58` + an IPv4 address: a link that comes back with the same address keeps its MAC, so its
/// neighbours' ARP entries stay right.
pub fn from_ipv4(ip: std::net::Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x0a, 0x58, o[0], o[1], o[2], o[3]]
}

/// A stable MAC for the bridge: without one, a Linux bridge takes the lowest MAC of its ports and
/// changes it as pods come and go, which breaks every pod's ARP entry for the gateway.
/// `0a:58` + the IPv4 gateway, as pods get `0a:58` + their IPv4 address.
pub fn for_bridge(gateway: Option<IpAddr>, name: &str) -> [u8; 6] {
    match gateway {
        Some(IpAddr::V4(v4)) => from_ipv4(v4),
        _ => from_hash(fnv1a(&["bridge", name])),
    }
}

/// `aa:bb:cc:dd:ee:ff` (hex digits of either case) → bytes, if it is a unicast MAC.
pub fn parse_unicast(s: &str) -> Option<[u8; 6]> {
    parse(s).filter(|m| m[0] & 1 == 0 && *m != [0; 6])
}

/// `aa:bb:cc:dd:ee:ff` (hex digits of either case) → bytes, whatever kind of MAC it is.
pub fn parse(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

pub fn format(m: &[u8]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_stable_and_unicast() {
        assert_eq!(
            for_bridge(Some("10.244.1.1".parse().unwrap()), "cbr0"),
            [0x0a, 0x58, 10, 244, 1, 1]
        );
        let h = for_bridge(None, "cbr0");
        assert_eq!(h, for_bridge(None, "cbr0"));
        assert_eq!(h[0] & 3, 2, "locally administered unicast");
        assert_ne!(fnv1a(&["ab", "c"]), fnv1a(&["a", "bc"]));
    }

    #[test]
    fn parses_unicast_macs_only() {
        assert_eq!(
            parse_unicast("0a:58:0a:f4:01:05"),
            Some([0x0a, 0x58, 0x0a, 0xf4, 1, 5])
        );
        for bad in [
            "01:00:00:00:00:01",
            "00:00:00:00:00:00",
            "0a:58:0a:f4:01",
            "0a:58:0a:f4:01:05:06",
            "0a:58:0a:f4:1:05",
            "0a:58:0a:f4:01:+5",
            "",
        ] {
            assert_eq!(parse_unicast(bad), None, "{bad}");
        }
        assert_eq!(format(&[0x0a, 0x58, 0, 1, 2, 255]), "0a:58:00:01:02:ff");
    }
}
