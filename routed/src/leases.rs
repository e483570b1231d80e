//! `cbrnet-routed leases`: the cluster's leases as a table, or JSON for scripts.

use cbrnet_ipam::cluster::record::{unix_now, Listing};
use serde_json::json;

/// The leases as a table (or JSON), and a line per store entry that is no valid lease (for
/// stderr: scripts read the JSON).
pub fn render(listing: &Listing, as_json: bool) -> (String, String) {
    let mut problems = String::new();
    for i in &listing.invalid {
        problems += &format!(
            "cbrnet-routed: not a valid lease: store entry {}: {}\n",
            i.key, i.why
        );
    }
    (leases(&listing.leases, as_json), problems)
}

fn leases(leases: &[cbrnet_ipam::cluster::Versioned], as_json: bool) -> String {
    let now = unix_now();
    if as_json {
        let v: Vec<_> = leases
            .iter()
            .map(|v| {
                json!({
                    "subnet": v.lease.subnet, "nodeName": v.lease.node_name, "nodeIP": v.lease.node_ip,
                    "expires": v.lease.expires, "expired": v.lease.expired(now),
                    "holder": v.lease.holder,
                })
            })
            .collect();
        return serde_json::Value::Array(v).to_string() + "\n";
    }
    let mut out = format!(
        "{:<20} {:<24} {:<16} {}\n",
        "SUBNET", "NODE", "NODE-IP", "EXPIRES"
    );
    for v in leases {
        let l = &v.lease;
        let left = if l.expired(now) {
            "expired".to_string()
        } else {
            human(l.expires.saturating_sub(now))
        };
        out += &format!(
            "{:<20} {:<24} {:<16} {}\n",
            l.subnet.to_string(),
            l.node_name,
            l.node_ip.to_string(),
            left
        );
    }
    out
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
                },
                version: 1,
            }],
            invalid: vec![Invalid {
                key: "junk".into(),
                subnet: None,
                why: "the key names no subnet".into(),
            }],
        };
        let (t, problems) = render(&listing, false);
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
        let (j, _) = render(&listing, true);
        let j: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(j[0]["nodeIP"], "192.168.1.2");
        assert_eq!(j[0]["expired"], false);
        assert_eq!(j[0]["holder"], "m:netns:1");
    }
}
