//! Masquerading: pod traffic leaving the cluster CIDR is masqueraded (each family's), by an
//! nftables `inet` table of its own (one per network for the plugin's `ipMasq`, `cbrnet_routed`
//! for the daemon's `--ip-masq`).
//! nftables has no rtnetlink; we drive `nft` with one atomic transaction that replaces the table,
//! so concurrent ADDs and repeats converge on the same single rule.

use crate::error::{BridgeError, Result};
use ipnetwork::IpNetwork;
use std::io::Write;
use std::process::{Command, Stdio};

/// The table for a network: nft identifiers allow letters, digits and `_`.
pub fn table_name(network: &str) -> String {
    let clean: String = network
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("cbrnet_{clean}")
}

/// One family's masquerade: traffic from `subnet` to anywhere outside `cluster`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Masq {
    pub subnet: IpNetwork,
    pub cluster: IpNetwork,
}

/// The transaction that replaces the table with one rule per family, in one `inet` table.
/// Declaring a table first makes its delete succeed whether or not it existed; the `ip` table of
/// the same name that earlier versions made goes in the same transaction.
pub fn script(t: &str, masq: &[Masq]) -> String {
    let rules: String = masq.iter().map(|m| format!("    {}\n", rule(m))).collect();
    format!(
        "table ip {t} {{}}\ndelete table ip {t}\ntable inet {t} {{}}\ndelete table inet {t}\n\
         table inet {t} {{\n  chain postrouting {{\n    \
         type nat hook postrouting priority srcnat; policy accept;\n{rules}  }}\n}}\n"
    )
}

/// A rule as `nft list` prints it.
fn rule(m: &Masq) -> String {
    let f = if m.subnet.is_ipv4() { "ip" } else { "ip6" };
    format!("{f} saddr {} {f} daddr != {} masquerade", m.subnet, m.cluster)
}

/// Runs `nft` with `args` and `stdin`; its stdout.
fn nft(args: &[&str], stdin: &str) -> Result<String> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| BridgeError::Masq(format!("running nft: {e}")))?;
    child
        .stdin
        .take()
        .expect("nft's stdin is piped above")
        .write_all(stdin.as_bytes())
        .map_err(|e| BridgeError::Masq(format!("writing to nft: {e}")))?;
    let out = child
        .wait_with_output()
        .map_err(|e| BridgeError::Masq(format!("running nft: {e}")))?;
    if !out.status.success() {
        return Err(BridgeError::Masq(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Is table `table` there with exactly its rules, one per family? (A missing table is
/// `Ok(false)`.)
pub fn is_in_place(table: &str, masq: &[Masq]) -> Result<bool> {
    match nft(&["list", "table", "inet", table], "") {
        Ok(listing) => {
            let mut rules: Vec<&str> = listing
                .lines()
                .map(str::trim)
                .filter(|l| l.contains("masquerade"))
                .collect();
            let mut want: Vec<String> = masq.iter().map(rule).collect();
            rules.sort_unstable();
            want.sort_unstable();
            Ok(rules == want)
        }
        Err(BridgeError::Masq(m)) if m.contains("No such file") => Ok(false),
        Err(e) => Err(e),
    }
}

/// Replaces table `table` with a rule per family masquerading its subnet → outside its cluster
/// CIDR.
pub fn ensure(table: &str, masq: &[Masq]) -> Result<()> {
    if masq.is_empty() {
        return Err(BridgeError::Masq("nothing to masquerade".into()));
    }
    for m in masq {
        if m.subnet.is_ipv4() != m.cluster.is_ipv4() {
            return Err(BridgeError::Masq(format!(
                "subnet {} and cluster CIDR {} are of different families",
                m.subnet, m.cluster
            )));
        }
    }
    nft(&["-f", "-"], &script(table, masq)).map(|_| ())
}

#[cfg(test)]
mod tests {
    #[test]
    fn script_replaces_the_table_atomically() {
        let m = |s: &str, c: &str| super::Masq {
            subnet: s.parse().unwrap(),
            cluster: c.parse().unwrap(),
        };
        let s = super::script(
            &super::table_name("k8s-pod.net"),
            &[
                m("10.244.1.0/24", "10.244.0.0/16"),
                m("fd00:10:244:1::/64", "fd00:10:244::/56"),
            ],
        );
        assert!(s.starts_with(
            "table ip cbrnet_k8s_pod_net {}\ndelete table ip cbrnet_k8s_pod_net\n\
             table inet cbrnet_k8s_pod_net {}\ndelete table inet cbrnet_k8s_pod_net\n"
        ));
        assert!(s.contains("ip saddr 10.244.1.0/24 ip daddr != 10.244.0.0/16 masquerade"));
        assert!(s.contains("ip6 saddr fd00:10:244:1::/64 ip6 daddr != fd00:10:244::/56 masquerade"));
    }
}
