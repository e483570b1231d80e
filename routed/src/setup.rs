//! The node's set-up, reconciled: the bridge with the gateway of the held subnet (and no stale
//! gateway of a subnet the node no longer holds), IPv4 forwarding, the masquerade table and the
//! subnet file. Run at start, on every resync, and on link and address events that touch the
//! bridge; each piece found drifted is put back and reported.

use crate::cli::Config;
use crate::error::{Result, RoutedError};
use cbrnet_bridge::{bridge, forwarding, mac, masq, Nl};
use cbrnet_ipam::cluster::Lease;
use cbrnet_ipam::SubnetFile;
use ipnetwork::IpNetwork;

/// The nftables table of `--ip-masq`.
pub const MASQ_TABLE: &str = "cbrnet_routed";

/// Makes the node match `lease`, with pods of MTU `mtu` (`None`: the plugin's default); returns
/// what had drifted and was put back. The subnet file comes last: the plugin may add pods as soon
/// as it exists, so it only ever names a set-up node.
pub async fn reconcile(nl: &Nl, cfg: &Config, lease: &Lease, mtu: Option<u32>) -> Result<Vec<String>> {
    let args = &cfg.args;
    let gw = lease.gateway();
    let mut repaired = Vec::new();
    let spec = bridge::Spec {
        name: args.bridge.clone(),
        mtu: mtu.unwrap_or(1500),
        mac: mac::for_bridge(Some(gw), &args.bridge),
        promisc: false,
    };
    let br = bridge::ensure(nl, &spec).await?;
    if br.created {
        repaired.push(format!("bridge {} was missing", args.bridge));
    }
    if bridge::ensure_address(nl, &br, gw, lease.subnet).await? {
        repaired.push(format!(
            "gateway {gw}/{} was not on {}",
            lease.subnet.prefix(),
            args.bridge
        ));
    }
    // Addresses of the cluster CIDR other than our gateway: the gateway of a subnet we held
    // before, or one put there by hand. Pods of that subnet can no longer be served here.
    let want = IpNetwork::new(gw, lease.subnet.prefix()).map_err(|e| RoutedError::Config(e.to_string()))?;
    for a in bridge::ipv4_addresses(nl, br.index).await? {
        if a != want && cfg.cluster_cidr.contains(a.ip()) {
            bridge::remove_address(nl, br.index, a).await?;
            repaired.push(format!("stale address {a} removed from {}", args.bridge));
        }
    }
    if forwarding::enable(false)? {
        repaired.push("IPv4 forwarding was off".into());
    }
    let rules = [masq::Masq {
        subnet: lease.subnet,
        cluster: cfg.cluster_cidr,
    }];
    if args.ip_masq && !masq::is_in_place(MASQ_TABLE, &rules)? {
        masq::ensure(MASQ_TABLE, &rules)?;
        repaired.push(format!("masquerade table {MASQ_TABLE} was missing or changed"));
    }
    let file = SubnetFile {
        subnet: lease.subnet,
        gateway: gw,
        cluster_cidr: Some(cfg.cluster_cidr),
        mtu,
        ipv6_subnet: None,
        ipv6_gateway: None,
        ipv6_cluster_cidr: None,
    };
    let written = file
        .write(&args.subnet_file)
        .map_err(|e| RoutedError::Io(format!("writing {}", args.subnet_file.display()), e))?;
    if written {
        repaired.push(format!(
            "subnet file {} was missing or stale",
            args.subnet_file.display()
        ));
    }
    Ok(repaired)
}
