//! Which addresses of a subnet may be handed out, and in which order. Pure logic.

use super::error::IpamError;
use ipnetwork::IpNetwork;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One allocation range: a subnet, the part of it we hand out, and its gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub subnet: IpNetwork,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: IpAddr,
}

pub(crate) fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_u128(v: u128, like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(v as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

impl Range {
    /// Builds a range, filling in the defaults: start after the network address, end before the
    /// IPv4 broadcast address, gateway the first address.
    pub fn new(
        subnet: IpNetwork,
        start: Option<IpAddr>,
        end: Option<IpAddr>,
        gateway: Option<IpAddr>,
    ) -> Result<Range, IpamError> {
        let subnet = IpNetwork::new(subnet.network(), subnet.prefix())
            .map_err(|e| IpamError::Config(e.to_string()))?;
        let net = to_u128(subnet.network());
        let last = match subnet {
            IpNetwork::V4(n) => to_u128(IpAddr::V4(n.broadcast())),
            IpNetwork::V6(n) => net | (u128::MAX >> n.prefix()),
        };
        // /31 and /32 (and v6 /127, /128) have no network or broadcast address to skip.
        let tiny = last - net < 2;
        let first_usable = if tiny { net } else { net + 1 };
        let last_usable = if tiny || subnet.is_ipv6() { last } else { last - 1 };
        if first_usable > last_usable {
            return Err(IpamError::Config(format!(
                "subnet {subnet} has no usable address"
            )));
        }
        let inside = |ip: IpAddr, what: &str| -> Result<u128, IpamError> {
            let v = to_u128(ip);
            if ip.is_ipv4() != subnet.is_ipv4() || v < first_usable || v > last_usable {
                return Err(IpamError::Config(format!(
                    "{what} {ip} is not a usable address of {subnet}"
                )));
            }
            Ok(v)
        };
        let s = match start {
            Some(ip) => inside(ip, "rangeStart")?,
            None => first_usable,
        };
        let e = match end {
            Some(ip) => inside(ip, "rangeEnd")?,
            None => last_usable,
        };
        if s > e {
            return Err(IpamError::Config(format!(
                "rangeStart is after rangeEnd in {subnet}"
            )));
        }
        let gateway = match gateway {
            Some(gw) => {
                inside(gw, "gateway")?;
                gw
            }
            None => from_u128(first_usable, subnet.network()),
        };
        Ok(Range {
            subnet,
            start: from_u128(s, subnet.network()),
            end: from_u128(e, subnet.network()),
            gateway,
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let v = to_u128(ip);
        ip.is_ipv4() == self.subnet.is_ipv4() && v >= to_u128(self.start) && v <= to_u128(self.end)
    }

    /// May `ip` be handed out? In range, and not the gateway.
    pub fn usable(&self, ip: IpAddr) -> bool {
        self.contains(ip) && ip != self.gateway
    }

    /// How many addresses can be handed out.
    pub fn capacity(&self) -> u128 {
        let n = to_u128(self.end) - to_u128(self.start) + 1;
        n - u128::from(self.contains(self.gateway))
    }
}

/// The candidates of a range set in round-robin order: starting just after `last` (when `last`
/// lies in one of the ranges), going through every range in turn and wrapping around. Every
/// usable address appears exactly once.
pub fn candidates<'a>(ranges: &'a [Range], last: Option<IpAddr>) -> impl Iterator<Item = IpAddr> + 'a {
    // Position: (range index, offset within it) of the first candidate.
    let (ri, off) = last
        .and_then(|l| {
            ranges
                .iter()
                .position(|r| r.contains(l))
                .map(|i| (i, to_u128(l) - to_u128(ranges[i].start) + 1))
        })
        .unwrap_or((0, 0));
    let n = ranges.len();
    // Walk the start range from `off`, every other range whole, then the start range up to `off`.
    let steps = if n == 0 { 0 } else { n + 1 };
    (0..steps).flat_map(move |step| {
        let r = &ranges[(ri + step) % n];
        let size = to_u128(r.end) - to_u128(r.start) + 1;
        let (lo, hi) = match step {
            0 => (off.min(size), size),
            s if s == n => (0, off.min(size)),
            _ => (0, size),
        };
        let base = to_u128(r.start);
        (lo..hi)
            .map(move |o| from_u128(base + o, r.start))
            .filter(move |ip| *ip != r.gateway)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_skip_network_gateway_broadcast() {
        let r = Range::new("10.244.1.0/24".parse().unwrap(), None, None, None).unwrap();
        assert_eq!(r.start, ip("10.244.1.1"));
        assert_eq!(r.end, ip("10.244.1.254"));
        assert_eq!(r.gateway, ip("10.244.1.1"));
        let all: Vec<_> = candidates(std::slice::from_ref(&r), None).collect();
        assert_eq!(all.len(), 253);
        assert_eq!(r.capacity(), 253);
        assert_eq!(all[0], ip("10.244.1.2"));
        assert!(!all.contains(&ip("10.244.1.255")) && !all.contains(&ip("10.244.1.0")));
    }

    #[test]
    fn round_robin_starts_after_last_and_wraps() {
        let r = Range::new("10.0.0.0/29".parse().unwrap(), None, None, None).unwrap();
        let order: Vec<_> = candidates(std::slice::from_ref(&r), Some(ip("10.0.0.4"))).collect();
        assert_eq!(
            order,
            ["10.0.0.5", "10.0.0.6", "10.0.0.2", "10.0.0.3", "10.0.0.4"].map(ip)
        );
    }

    #[test]
    fn rejects_bad_ranges() {
        let n: IpNetwork = "10.0.0.0/24".parse().unwrap();
        assert!(Range::new(n, Some(ip("10.0.1.5")), None, None).is_err());
        assert!(Range::new(n, Some(ip("10.0.0.9")), Some(ip("10.0.0.5")), None).is_err());
        assert!(Range::new(n, None, Some(ip("10.0.0.255")), None).is_err());
        assert!(Range::new(n, None, None, Some(ip("fd00::1"))).is_err());
    }

    proptest! {
        // Whatever the subnet, bounds and last address, the candidates are exactly the usable
        // addresses, each once.
        #[test]
        fn candidates_are_a_permutation_of_usable(
            a in 0u32..=u32::MAX, prefix in 22u8..=32, s in 0u32..64,
            len in 0u32..2048, g in 0u32..64, last in 0u32..2048
        ) {
            let net: IpNetwork = format!("{}/{}", Ipv4Addr::from(a), prefix).parse().unwrap();
            let base = u32::from(match net.network() { IpAddr::V4(v) => v, _ => unreachable!() });
            let size = 1u64 << (32 - prefix);
            let pick = |x: u32| IpAddr::V4(Ipv4Addr::from(base + (x as u64 % size) as u32));
            let (start, end) = (pick(s), pick(s.saturating_add(len)));
            let Ok(r) = Range::new(net, Some(start), Some(end), Some(pick(g))) else { return Ok(()); };
            let got: Vec<_> = candidates(std::slice::from_ref(&r), Some(pick(last))).collect();
            let set: HashSet<_> = got.iter().copied().collect();
            prop_assert_eq!(set.len(), got.len());
            prop_assert_eq!(got.len() as u128, r.capacity());
            for ip in &got { prop_assert!(r.usable(*ip)); }
        }
    }
}
