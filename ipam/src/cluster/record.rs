//! A lease as the store keeps it: one record per subnet, under the subnet's key. Every record read
//! from a store is hostile until [`parse`] (and, against the cluster's configuration,
//! [`crate::cluster::lease::LeaseConfig::check`]) has judged it; one that fails is reported as
//! [`Invalid`] and never stops the handling of the others.

use ipnetwork::{IpNetwork, Ipv6Network};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{SystemTime, UNIX_EPOCH};

/// A node's subnet, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    /// The node's subnet of the cluster's first family (IPv4 in a dual-stack cluster): the
    /// record's key.
    pub subnet: IpNetwork,
    /// A dual-stack cluster's IPv6 subnet of the node. Records of single-family clusters, and
    /// of versions before dual-stack, have none.
    #[serde(rename = "ipv6Subnet", default, skip_serializing_if = "Option::is_none")]
    pub ipv6_subnet: Option<Ipv6Network>,
    pub node_name: String,
    /// The node's address: its IPv4 one when it has one of each family.
    #[serde(rename = "nodeIP")]
    pub node_ip: IpAddr,
    /// The node's IPv6 address when it has one of each family.
    #[serde(rename = "nodeIPv6", default, skip_serializing_if = "Option::is_none")]
    pub node_ip_v6: Option<Ipv6Addr>,
    /// Unix seconds after which the lease is free again.
    pub expires: u64,
    /// Which daemon instance holds it (see `holder` in `cbrnet-routed`): a daemon started under a
    /// node name that another, live one holds must not take that node's subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// The MAC of the node's VXLAN device (`cbrnet-routed --backend vxlan|auto`), as written: a
    /// value that is no MAC, or no string, leaves the lease valid (the daemon judges it, and
    /// does not reach the node through VXLAN). Records of nodes without a VXLAN device, and of
    /// versions before it, have none.
    #[serde(
        rename = "vtepMAC",
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "any_as_text"
    )]
    pub vtep_mac: Option<String>,
}

/// Any JSON value: a string as it is, anything else as its JSON text (judged later), so that a
/// bad optional field never makes the whole record unreadable.
fn any_as_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s),
        v => Some(v.to_string()),
    })
}

impl Lease {
    pub fn expired(&self, now: u64) -> bool {
        self.expires <= now
    }
    /// The gateway of the subnet: its first address (on the node's bridge).
    pub fn gateway(&self) -> IpAddr {
        gateway_of(self.subnet)
    }

    /// Every subnet of the lease: the first family's, then the IPv6 one of a dual-stack lease.
    pub fn subnets(&self) -> Vec<IpNetwork> {
        std::iter::once(self.subnet)
            .chain(self.ipv6_subnet.map(IpNetwork::V6))
            .collect()
    }
}

/// The gateway of a node subnet: its first address (on the node's bridge).
pub fn gateway_of(subnet: IpNetwork) -> IpAddr {
    match subnet {
        IpNetwork::V4(n) => IpAddr::V4(Ipv4Addr::from(u32::from(n.network()).wrapping_add(1))),
        IpNetwork::V6(n) => IpAddr::V6(u128::from(n.network()).wrapping_add(1).into()),
    }
}

/// The store key of a subnet: `10.244.3.0-24` (a `/` cannot be in a file name).
pub fn subnet_key(subnet: IpNetwork) -> String {
    format!("{}-{}", subnet.network(), subnet.prefix())
}

/// The subnet a key names, if it is a key we would have written (canonical: the network
/// address as the standard library prints it, no host bits).
pub fn parse_key(key: &str) -> Option<IpNetwork> {
    let (ip, len) = key.rsplit_once('-')?;
    let ip: IpAddr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let net = IpNetwork::new(ip, len).ok()?;
    (subnet_key(net) == key && net.network() == net.ip()).then_some(net)
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A lease and the store's version of it (for compare-and-swap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub lease: Lease,
    pub version: u64,
}

/// A store entry that is not a valid lease record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The entry's key (file name, or etcd key without the prefix).
    pub key: String,
    /// The subnet its key names, if it names one: that subnet stays blocked for new leases.
    pub subnet: Option<IpNetwork>,
    pub why: String,
}

/// Everything a store holds: the records that parse as leases, and the entries that do not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub leases: Vec<Versioned>,
    pub invalid: Vec<Invalid>,
}

/// The longest node name a record may carry (a DNS name's limit).
pub const MAX_NODE_NAME: usize = 253;

/// Parses the lease JSON found under `key`: the record must be a lease, name the subnet its key
/// names, and carry a node name and IP that can be routed to.
pub fn parse(key: &str, bytes: &[u8]) -> Result<Lease, Invalid> {
    let subnet = parse_key(key);
    let bad = |why: String| Invalid {
        key: key.to_string(),
        subnet,
        why,
    };
    let Some(key_subnet) = subnet else {
        return Err(bad("the key names no subnet".into()));
    };
    let lease: Lease = serde_json::from_slice(bytes).map_err(|e| bad(format!("not a lease: {e}")))?;
    if lease.subnet != key_subnet {
        return Err(bad(format!(
            "the record names {} under the key of {key_subnet}",
            lease.subnet
        )));
    }
    check_fields(&lease).map_err(bad)?;
    Ok(lease)
}

/// What a lease must be, whatever the cluster's configuration: canonical subnets (an IPv6 one
/// beside an IPv4 one, never two of a family), a node name, and node IPs that can be routed to
/// (an IPv6 one beside an IPv4 one).
pub fn check_fields(l: &Lease) -> Result<(), String> {
    if l.subnet.network() != l.subnet.ip() {
        return Err(format!("subnet {} has host bits set", l.subnet));
    }
    if let Some(v6) = l.ipv6_subnet {
        if !l.subnet.is_ipv4() {
            return Err(format!("ipv6Subnet {v6} beside the IPv6 subnet {}", l.subnet));
        }
        if v6.network() != v6.ip() {
            return Err(format!("ipv6Subnet {v6} has host bits set"));
        }
    }
    if l.node_name.is_empty()
        || l.node_name.len() > MAX_NODE_NAME
        || l.node_name.chars().any(char::is_control)
    {
        return Err(format!("node name {:?} is not a name", l.node_name));
    }
    if !routable(l.node_ip) {
        return Err(format!("node IP {} is not a unicast address", l.node_ip));
    }
    if let Some(v6) = l.node_ip_v6 {
        if !l.node_ip.is_ipv4() {
            return Err(format!("nodeIPv6 {v6} beside the IPv6 node IP {}", l.node_ip));
        }
        if !routable(IpAddr::V6(v6)) {
            return Err(format!("nodeIPv6 {v6} is not a unicast address"));
        }
    }
    Ok(())
}

/// A plain unicast address another node can route to (an IPv6 link-local one needs a link too).
fn routable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            !(ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast())
        }
        IpAddr::V6(ip) => {
            !(ip.is_unspecified()
                || ip.is_loopback()
                || ip.is_multicast()
                || ip.is_unicast_link_local()
                || ip.to_ipv4_mapped().is_some())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipnetwork::Ipv4Network;
    use proptest::prelude::*;

    fn lease() -> Lease {
        Lease {
            subnet: "10.244.3.0/24".parse().unwrap(),
            node_name: "n1".into(),
            node_ip: "192.168.1.2".parse().unwrap(),
            expires: 100,
            holder: Some("m:1".into()),
            vtep_mac: None,
            ipv6_subnet: None,
            node_ip_v6: None,
        }
    }

    #[test]
    fn keys_round_trip_and_odd_ones_are_refused() {
        for n in ["10.244.3.0/24", "fd00:10:244:3::/64", "fd00::/56"] {
            let n: IpNetwork = n.parse().unwrap();
            assert_eq!(parse_key(&subnet_key(n)), Some(n));
        }
        for bad in [
            "10.244.3.1-24",
            "10.244.3.0-33",
            "10.244.3.0",
            "010.244.3.0-24",
            "x-24",
            "fd00:0::-64",
            "fd00::1-64",
            "fd00::-129",
            ".tmp-1-2",
        ] {
            assert_eq!(parse_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn records_are_judged_one_by_one() {
        let ok = serde_json::to_vec(&lease()).unwrap();
        assert_eq!(parse("10.244.3.0-24", &ok).unwrap(), lease());
        let why = |key: &str, l: serde_json::Value| parse(key, l.to_string().as_bytes()).unwrap_err().why;
        let mut l = serde_json::to_value(lease()).unwrap();
        assert!(why("10.244.4.0-24", l.clone()).contains("under the key of"));
        l["nodeIP"] = "127.0.0.1".into();
        assert!(why("10.244.3.0-24", l.clone()).contains("not a unicast"));
        l["nodeIP"] = "192.168.1.2".into();
        l["nodeName"] = "".into();
        assert!(why("10.244.3.0-24", l.clone()).contains("not a name"));
        assert!(parse("10.244.3.0-24", b"{")
            .unwrap_err()
            .why
            .contains("not a lease"));
        let e = parse("junk", &ok).unwrap_err();
        assert_eq!(e.subnet, None);
        // a record from before `holder` and `vtepMAC` existed still parses
        let old = br#"{"subnet":"10.244.3.0/24","nodeName":"n1","nodeIP":"192.168.1.2","expires":5}"#;
        let old = parse("10.244.3.0-24", old).unwrap();
        assert_eq!((old.holder, old.vtep_mac), (None, None));
        // a VTEP MAC that is no string leaves the lease valid, and is kept as its JSON text
        let mut l = serde_json::to_value(lease()).unwrap();
        for (v, text) in [
            (serde_json::json!(5), "5"),
            (serde_json::json!({"a": 1}), "{\"a\":1}"),
            (serde_json::json!("0E:11:22:33:44:55"), "0E:11:22:33:44:55"),
        ] {
            l["vtepMAC"] = v;
            let got = parse("10.244.3.0-24", l.to_string().as_bytes()).unwrap();
            assert_eq!(got.vtep_mac.as_deref(), Some(text));
        }
        l["vtepMAC"] = serde_json::Value::Null;
        assert_eq!(
            parse("10.244.3.0-24", l.to_string().as_bytes()).unwrap().vtep_mac,
            None
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        // Arbitrary bytes under an arbitrary key never panic the parser.
        #[test]
        fn parse_never_panics(key in ".{0,24}", bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&key, &bytes);
        }

        // What parses round-trips through the store's encoding.
        #[test]
        fn valid_records_round_trip(
            a in any::<u32>(), len in 8u8..=30, ip in any::<u32>(), expires in any::<u64>(),
            name in "[a-z0-9.-]{1,40}", holder in proptest::option::of("[a-z0-9:/]{1,40}"),
            vtep_mac in proptest::option::of(".{0,20}"),
            v6 in proptest::option::of((any::<u128>(), 0u8..=128)),
            ip6 in proptest::option::of(any::<u128>()),
            v6_first in any::<bool>(),
        ) {
            let subnet = IpNetwork::V4(Ipv4Network::new(Ipv4Addr::from(a), len).unwrap());
            let subnet = IpNetwork::new(subnet.network(), len).unwrap();
            let ipv6_subnet = v6.map(|(a, len)| {
                let n = Ipv6Network::new(Ipv6Addr::from(a), len).unwrap();
                Ipv6Network::new(n.network(), len).unwrap()
            });
            let mut l = Lease {
                subnet, node_name: name, node_ip: IpAddr::V4(Ipv4Addr::from(ip)), expires, holder, vtep_mac,
                ipv6_subnet, node_ip_v6: ip6.map(Ipv6Addr::from),
            };
            // An IPv6-only record: its one subnet is the key.
            if v6_first {
                if let Some(v6) = l.ipv6_subnet.take() {
                    l.subnet = IpNetwork::V6(v6);
                }
            }
            let subnet = l.subnet;
            let key = subnet_key(subnet);
            match parse(&key, &serde_json::to_vec(&l).unwrap()) {
                Ok(back) => prop_assert_eq!(back, l),
                Err(e) => prop_assert!(check_fields(&l).is_err(), "{}", e.why),
            }
        }
    }
}
