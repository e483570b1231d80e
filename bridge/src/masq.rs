//! Masquerading: pod traffic leaving the cluster CIDR is masqueraded, by an nftables table of its
//! own (one per network for the plugin's `ipMasq`, `cbrnet_routed` for the daemon's `--ip-masq`).
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

pub fn script(t: &str, subnet: IpNetwork, cluster: IpNetwork) -> String {
    // Declaring the table first makes the delete succeed whether or not it existed.
    format!(
        "table ip {t} {{}}\ndelete table ip {t}\ntable ip {t} {{\n  chain postrouting {{\n    \
         type nat hook postrouting priority srcnat; policy accept;\n    \
         {}\n  }}\n}}\n",
        rule(subnet, cluster)
    )
}

/// The rule the table holds, as `nft list` prints it.
fn rule(subnet: IpNetwork, cluster: IpNetwork) -> String {
    format!("ip saddr {subnet} ip daddr != {cluster} masquerade")
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

/// Is table `table` there with exactly its one rule? (A missing table is `Ok(false)`.)
pub fn is_in_place(table: &str, subnet: IpNetwork, cluster: IpNetwork) -> Result<bool> {
    match nft(&["list", "table", "ip", table], "") {
        Ok(listing) => {
            let rules: Vec<&str> = listing
                .lines()
                .map(str::trim)
                .filter(|l| l.contains("masquerade"))
                .collect();
            Ok(rules == [rule(subnet, cluster).as_str()])
        }
        Err(BridgeError::Masq(m)) if m.contains("No such file") => Ok(false),
        Err(e) => Err(e),
    }
}

/// Replaces table `table` with one rule masquerading `subnet` → outside `cluster`.
pub fn ensure(table: &str, subnet: IpNetwork, cluster: IpNetwork) -> Result<()> {
    if !subnet.is_ipv4() || !cluster.is_ipv4() {
        return Err(BridgeError::Masq(
            "masquerading supports IPv4 subnets only".into(),
        ));
    }
    nft(&["-f", "-"], &script(table, subnet, cluster)).map(|_| ())
}

#[cfg(test)]
mod tests {
    #[test]
    fn script_replaces_the_table_atomically() {
        let s = super::script(
            &super::table_name("k8s-pod.net"),
            "10.244.1.0/24".parse().unwrap(),
            "10.244.0.0/16".parse().unwrap(),
        );
        assert!(s.starts_with("table ip cbrnet_k8s_pod_net {}\ndelete table ip cbrnet_k8s_pod_net\n"));
        assert!(s.contains("ip saddr 10.244.1.0/24 ip daddr != 10.244.0.0/16 masquerade"));
    }
}
