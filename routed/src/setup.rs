//! The node's set-up, reconciled: the bridge with the gateway of the held subnet (and no stale
//! gateway of a subnet the node no longer holds), forwarding of each family (and the underlay's
//! router advertisements), the masquerade table and the
//! subnet file. Run at start, on every resync, and on link and address events that touch the
//! bridge; each piece found drifted is put back and reported.

use crate::cli::Config;
use crate::error::{Result, RoutedError};
use cbrnet_bridge::{bridge, forwarding, mac, masq, Nl};
use cbrnet_ipam::cluster::record::gateway_of;
use cbrnet_ipam::cluster::Lease;
use cbrnet_ipam::SubnetFile;
use ipnetwork::IpNetwork;

/// The nftables table of `--ip-masq`.
pub const MASQ_TABLE: &str = "cbrnet_routed";

/// The subnets of `lease` this node serves: its first family's, and its IPv6 one when the
/// cluster has IPv6 pods.
pub fn served(cfg: &Config, lease: &Lease) -> Vec<IpNetwork> {
    lease
        .subnets()
        .into_iter()
        .filter(|s| cfg.cluster_cidr_of(s.is_ipv4()).is_some())
        .collect()
}

/// The bridge's gateway of each subnet: its first address, with the subnet's prefix.
pub fn gateways(subnets: &[IpNetwork]) -> Vec<IpNetwork> {
    subnets
        .iter()
        .filter_map(|s| IpNetwork::new(gateway_of(*s), s.prefix()).ok())
        .collect()
}

/// Is `a`, on the bridge, the gateway of a subnet of the cluster that is not `want`'s (a
/// subnet held before, or one put there by hand)?
pub fn is_stale(cfg: &Config, want: &[IpNetwork], a: &IpNetwork) -> bool {
    !want.contains(a) && cfg.cluster_cidrs().any(|c| c.contains(a.ip()))
}

/// `--ip-masq`'s rules: each served subnet masqueraded outside its family's cluster CIDR.
pub fn masq_rules(cfg: &Config, subnets: &[IpNetwork]) -> Vec<masq::Masq> {
    subnets
        .iter()
        .filter_map(|s| {
            cfg.cluster_cidr_of(s.is_ipv4())
                .map(|cluster| masq::Masq { subnet: *s, cluster })
        })
        .collect()
}

/// The subnet file of a node holding `lease`: its first family's subnet in `subnet` (what a
/// plugin of an earlier version reads), the IPv6 one it serves beside it.
pub fn subnet_file(cfg: &Config, lease: &Lease, mtu: Option<u32>) -> SubnetFile {
    let v6_subnet = served(cfg, lease).get(1).copied();
    SubnetFile {
        subnet: lease.subnet,
        gateway: lease.gateway(),
        cluster_cidr: cfg.cluster_cidr_of(lease.subnet.is_ipv4()),
        mtu,
        ipv6_subnet: v6_subnet,
        ipv6_gateway: v6_subnet.map(gateway_of),
        ipv6_cluster_cidr: v6_subnet.and_then(|_| cfg.cluster_cidr_of(false)),
    }
}

/// Makes the node match `lease`, with pods of MTU `mtu` (`None`: the plugin's default); returns
/// what had drifted and was put back. `underlay` names the links of the node IPs. The subnet
/// file comes last: the plugin may add pods as soon as it exists, so it only ever names a
/// set-up node.
pub async fn reconcile(
    nl: &Nl,
    cfg: &Config,
    lease: &Lease,
    mtu: Option<u32>,
    underlay: &[String],
) -> Result<Vec<String>> {
    let args = &cfg.args;
    let subnets = served(cfg, lease);
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
    for s in &subnets {
        let g = gateway_of(*s);
        if bridge::ensure_address(nl, &br, g, *s).await? {
            repaired.push(format!("gateway {g}/{} was not on {}", s.prefix(), args.bridge));
        }
    }
    // Pods of a subnet whose gateway is stale can no longer be served here.
    let want = gateways(&subnets);
    for a in bridge::addresses(nl, br.index).await? {
        if is_stale(cfg, &want, &a) {
            bridge::remove_address(nl, br.index, a).await?;
            repaired.push(format!("stale address {a} removed from {}", args.bridge));
        }
    }
    let v4 = cfg.cluster_cidr_of(true).is_some();
    let v6 = cfg.cluster_cidr_of(false).is_some();
    // Before forwarding goes on: a forwarding link with accept_ra 1 drops the node's router
    // advertisements.
    if v6 {
        for link in underlay {
            if forwarding::keep_router_advertisements(link)? {
                repaired.push(format!(
                    "accept_ra of {link} was 1 (router advertisements ignored once forwarding): set to 2"
                ));
            }
        }
    }
    if forwarding::enable_families(v4, v6)? {
        repaired.push("forwarding was off".into());
    }
    let rules = masq_rules(cfg, &subnets);
    if args.ip_masq && !masq::is_in_place(MASQ_TABLE, &rules)? {
        masq::ensure(MASQ_TABLE, &rules)?;
        repaired.push(format!("masquerade table {MASQ_TABLE} was missing or changed"));
    }
    let file = subnet_file(cfg, lease, mtu);
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
