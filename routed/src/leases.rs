//! `cbrnet-routed leases`: the cluster's leases as a table, or JSON for scripts; run on a node,
//! with how that node reaches each peer, as its kernel has it.

use crate::backend::routes::Ours;
use cbrnet_ipam::cluster::record::{unix_now, Listing};
use ipnetwork::IpNetwork;
use serde_json::json;
use std::collections::HashMap;

/// How the node reaches each subnet, from its subnet and its routes of ours: `self`, `direct`
/// (a route via another address), `vxlan` (a route via the subnet's own network address, which
/// only the VXLAN device's routes have), `unroutable` (no route of ours).
pub fn paths(
    own: &[IpNetwork],
    ours: &Ours,
    subnets: impl IntoIterator<Item = IpNetwork>,
) -> HashMap<IpNetwork, &'static str> {
    subnets
        .into_iter()
        .map(|s| {
            let path = match ours.get(&s) {
                _ if own.contains(&s) => "self",
                Some(Some(gw)) if *gw == s.network() => "vxlan",
                Some(_) => "direct",
                None => "unroutable",
            };
            (s, path)
        })
        .collect()
}

/// The leases as a table (or JSON), and a line per store entry that is no valid lease (for
/// stderr: scripts read the JSON). With `paths` (run on a node), a column of how the node reaches
/// each live lease's subnet.
pub fn render(
    listing: &Listing,
    as_json: bool,
    paths: Option<&HashMap<IpNetwork, &'static str>>,
) -> (String, String) {
    let mut problems = String::new();
    for i in &listing.invalid {
        problems += &format!(
            "cbrnet-routed: not a valid lease: store entry {}: {}\n",
            i.key, i.why
        );
    }
    (leases(&listing.leases, as_json, paths), problems)
}

fn leases(
    leases: &[cbrnet_ipam::cluster::Versioned],
    as_json: bool,
    paths: Option<&HashMap<IpNetwork, &'static str>>,
) -> String {
    let now = unix_now();
    // An expired lease is nobody's to reach. A lease of two families whose subnets are reached
    // differently shows both (`direct,vxlan`: IPv4 directly, IPv6 through VXLAN).
    let path = |l: &cbrnet_ipam::cluster::Lease| match paths {
        Some(_) if l.expired(now) => Some("-".to_string()),
        Some(p) => {
            let mut each: Vec<&str> = l
                .subnets()
                .iter()
                .map(|s| p.get(s).copied().unwrap_or("unroutable"))
                .collect();
            each.dedup();
            Some(each.join(","))
        }
        None => None,
    };
    if as_json {
        let v: Vec<_> = leases
            .iter()
            .map(|v| {
                let mut j = json!({
                    "subnet": v.lease.subnet, "nodeName": v.lease.node_name, "nodeIP": v.lease.node_ip,
                    "expires": v.lease.expires, "expired": v.lease.expired(now),
                    "holder": v.lease.holder, "vtepMAC": v.lease.vtep_mac,
                    "ipv6Subnet": v.lease.ipv6_subnet, "nodeIPv6": v.lease.node_ip_v6,
                    "subnets": subnets(&v.lease),
                });
                if let Some(p) = path(&v.lease) {
                    j["path"] = p.into();
                }
                j
            })
            .collect();
        return serde_json::Value::Array(v).to_string() + "\n";
    }
    let head = format!(
        "{:<20} {:<24} {:<16} {:<12}",
        "SUBNET", "NODE", "NODE-IP", "EXPIRES"
    );
    let mut out = match paths {
        Some(_) => format!("{head} PATH\n"),
        None => format!("{}\n", head.trim_end()),
    };
    for v in leases {
        let l = &v.lease;
        let left = if l.expired(now) {
            "expired".to_string()
        } else {
            human(l.expires.saturating_sub(now))
        };
        let row = format!(
            "{:<20} {:<24} {:<16} {:<12}",
            subnets(l).join(","),
            l.node_name,
            std::iter::once(l.node_ip.to_string())
                .chain(l.node_ip_v6.map(|ip| ip.to_string()))
                .collect::<Vec<_>>()
                .join(","),
            left
        );
        out += &match path(l) {
            Some(p) => format!("{row} {p}\n"),
            None => format!("{}\n", row.trim_end()),
        };
    }
    out
}

/// Every subnet of a lease, its first family's first.
fn subnets(l: &cbrnet_ipam::cluster::Lease) -> Vec<String> {
    std::iter::once(l.subnet.to_string())
        .chain(l.ipv6_subnet.map(|n| n.to_string()))
        .collect()
}

fn human(secs: u64) -> String {
    match secs {
        s if s >= 3600 => format!("in {}h{:02}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("in {}m{:02}s", s / 60, s % 60),
        s => format!("in {s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cbrnet_ipam::cluster::record::Invalid;
    use cbrnet_ipam::cluster::{Lease, Versioned};

    #[test]
    fn table_json_and_invalid_entries() {
        let listing = Listing {
            leases: vec![Versioned {
                lease: Lease {
                    subnet: "10.244.3.0/24".parse().unwrap(),
                    node_name: "node-a".into(),
                    node_ip: "192.168.1.2".parse().unwrap(),
                    expires: unix_now() + 7200,
                    holder: Some("m:netns:1".into()),
                    vtep_mac: None,
                    ipv6_subnet: None,
                    node_ip_v6: None,
                },
                version: 1,
            }],
            invalid: vec![Invalid {
                key: "junk".into(),
                subnet: None,
                why: "the key names no subnet".into(),
            }],
        };
        let (t, problems) = render(&listing, false, None);
        assert!(
            t.lines()
                .nth(1)
                .unwrap()
                .starts_with("10.244.3.0/24        node-a"),
            "{t}"
        );
        assert!(t.contains("in 1h59m") || t.contains("in 2h00m"), "{t}");
        assert!(
            problems.contains("store entry junk: the key names no subnet"),
            "{problems}"
        );
        let (j, _) = render(&listing, true, None);
        let j: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(j[0]["nodeIP"], "192.168.1.2");
        assert_eq!(j[0]["expired"], false);
        assert_eq!(j[0]["holder"], "m:netns:1");
        assert!(j[0].get("path").is_none());
        // on a node: a column of paths
        let net = |s: &str| s.parse::<IpNetwork>().unwrap();
        let mut ours = Ours::new();
        let p = paths(&[], &ours, [net("10.244.3.0/24")]);
        assert_eq!(p[&net("10.244.3.0/24")], "unroutable");
        ours.insert(net("10.244.3.0/24"), Some("10.244.3.0".parse().unwrap()));
        let p = paths(&[], &ours, [net("10.244.3.0/24")]);
        assert_eq!(p[&net("10.244.3.0/24")], "vxlan");
        let (t, _) = render(&listing, false, Some(&p));
        assert!(t.lines().next().unwrap().ends_with(" PATH"), "{t}");
        assert!(t.lines().nth(1).unwrap().ends_with(" vxlan"), "{t}");
        let (j, _) = render(&listing, true, Some(&p));
        let j: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(j[0]["path"], "vxlan");
        ours.insert(net("10.244.3.0/24"), Some("192.168.1.2".parse().unwrap()));
        assert_eq!(
            paths(&[], &ours, [net("10.244.3.0/24")])[&net("10.244.3.0/24")],
            "direct"
        );
        let own = [net("10.244.3.0/24")];
        assert_eq!(
            paths(&own, &ours, [net("10.244.3.0/24")])[&net("10.244.3.0/24")],
            "self"
        );
        // a dual-stack lease shows both subnets and both node IPs
        let mut dual = listing.clone();
        dual.leases[0].lease.ipv6_subnet = Some("fd00:10:244:3::/64".parse().unwrap());
        dual.leases[0].lease.node_ip_v6 = Some("fd00:56::2".parse().unwrap());
        let (t, _) = render(&dual, false, None);
        let row = t.lines().nth(1).unwrap();
        assert!(
            row.starts_with("10.244.3.0/24,fd00:10:244:3::/64 node-a")
                && row.contains(" 192.168.1.2,fd00:56::2 "),
            "{t}"
        );
        let (j, _) = render(&dual, true, None);
        let j: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(j[0]["ipv6Subnet"], "fd00:10:244:3::/64");
        assert_eq!(j[0]["nodeIPv6"], "fd00:56::2");
        assert_eq!(
            j[0]["subnets"],
            serde_json::json!(["10.244.3.0/24", "fd00:10:244:3::/64"])
        );
        // on a node: IPv4 directly, IPv6 through VXLAN
        ours.insert(
            net("fd00:10:244:3::/64"),
            Some("fd00:10:244:3::".parse().unwrap()),
        );
        let p = paths(&[], &ours, dual.leases[0].lease.subnets());
        let (t, _) = render(&dual, false, Some(&p));
        assert!(t.lines().nth(1).unwrap().ends_with(" direct,vxlan"), "{t}");
    }
}
