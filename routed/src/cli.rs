//! The command line: flags are a contract with users and scripts.

use clap::{Args, Parser, Subcommand};
use ipnetwork::IpNetwork;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "cbrnet-routed",
    version,
    about = "cbrnet's per-node subnet lease and host-gw route daemon",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: Option<RunArgs>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the cluster's leases.
    Leases(LeasesArgs),
    /// Give this node's lease back (decommissioning the node).
    Release(ReleaseArgs),
}

#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// The lease store: file:DIR or etcd:http://HOST:PORT[,...].
    #[arg(long)]
    pub store: String,
    /// Key prefix of the leases in etcd.
    #[arg(long, default_value = "/cbrnet/subnets/")]
    pub etcd_prefix: String,
}

#[derive(Args, Debug)]
pub struct LeasesArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ReleaseArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[arg(long)]
    pub node_name: String,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// This node's name: a restarted node gets its subnet back by name.
    #[arg(long)]
    pub node_name: String,
    /// This node's address on the network it shares with the other nodes.
    #[arg(long)]
    pub node_ip: IpAddr,
    /// The cluster's pod CIDR, carved into node subnets.
    #[arg(long)]
    pub cluster_cidr: IpNetwork,
    /// The lease store: file:DIR or etcd:http://HOST:PORT[,...].
    #[arg(long)]
    pub store: String,
    /// Key prefix of the leases in etcd.
    #[arg(long, default_value = "/cbrnet/subnets/")]
    pub etcd_prefix: String,
    /// Prefix length of each node's subnet.
    #[arg(long, default_value_t = 24)]
    pub subnet_len: u8,
    /// First subnet that may be leased (default: the cluster CIDR's first).
    #[arg(long)]
    pub first_subnet: Option<IpNetwork>,
    /// Last subnet that may be leased (default: the cluster CIDR's last).
    #[arg(long)]
    pub last_subnet: Option<IpNetwork>,
    /// Lease lifetime; renewed at half-life.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub lease_ttl: Duration,
    /// Where the node's subnet is published for cbrnet-ipam.
    #[arg(long, default_value = "/run/cbrnet/subnet.json")]
    pub subnet_file: PathBuf,
    /// The node bridge that carries the gateway address.
    #[arg(long, default_value = "cbr0")]
    pub bridge: String,
    /// MTU published in the subnet file (and used if the bridge is created here).
    #[arg(long)]
    pub mtu: Option<u32>,
    /// Masquerade pod traffic leaving the cluster CIDR (nftables table cbrnet_routed).
    #[arg(long)]
    pub ip_masq: bool,
    /// Where /healthz and /metrics are served.
    #[arg(long, default_value = "127.0.0.1:9473")]
    pub metrics_addr: SocketAddr,
    /// Full resync period.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub resync_interval: Duration,
}

/// `500ms`, `10s`, `5m`, `24h` (or plain seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 10s, 5m, 24h"))?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("1d").is_err());
    }

    #[test]
    fn flags_parse() {
        let c = Cli::try_parse_from([
            "cbrnet-routed",
            "--node-name",
            "n1",
            "--node-ip",
            "192.168.1.2",
            "--cluster-cidr",
            "10.244.0.0/16",
            "--store",
            "file:/tmp/x",
            "--ip-masq",
        ])
        .unwrap();
        let r = c.run.unwrap();
        assert_eq!(r.subnet_len, 24);
        assert!(r.ip_masq);
        assert_eq!(r.resync_interval, Duration::from_secs(10));
        let c = Cli::try_parse_from(["cbrnet-routed", "leases", "--store", "file:/tmp/x", "--json"]).unwrap();
        assert!(matches!(
            c.command,
            Some(Command::Leases(LeasesArgs { json: true, .. }))
        ));
    }
}
