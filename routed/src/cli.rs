//! The command line: flags are a contract with users and scripts. Everything is judged before
//! anything is opened, created or written; an error retrying cannot fix names its flag and exits
//! with status 2.

use crate::backend::Mode;
use cbrnet_ipam::cluster::lease::LeaseConfig;
use cbrnet_ipam::cluster::record::MAX_NODE_NAME;
use cbrnet_ipam::cluster::store::etcd_auth::EtcdAuth;
use cbrnet_ipam::cluster::store::StoreSpec;
use clap::{Args, Parser, Subcommand};
use ipnetwork::IpNetwork;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "cbrnet-routed",
    version,
    about = "cbrnet's per-node subnet lease and route daemon (host-gw, VXLAN)",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: Option<RunArgs>,
    /// The daemon's etcd TLS and user. Beside `run`, not in it: clap cannot tell whether an
    /// optional flattened group was given when it holds a flattened group itself.
    #[command(flatten)]
    pub etcd_auth: EtcdAuthArgs,
}

impl Cli {
    /// The command line with `doctor`'s `--node-name` defaulting to the host name, the name the
    /// unit gives the daemon (`CBRNET_NODE_NAME=%H`): doctor given the settings file alone then
    /// checks the node the daemon runs as.
    pub fn command_on_host(host: Option<String>) -> clap::Command {
        let cmd = <Cli as clap::CommandFactory>::command();
        match host {
            Some(h) => cmd.mut_subcommand("doctor", |d| {
                d.mut_arg("node_name", |a| a.default_value(h).required(false))
            }),
            None => cmd,
        }
    }

    /// Parses the process's arguments (and environment) as [`Cli::command_on_host`] takes
    /// them; a usage error exits with status 2.
    pub fn parse_on_host() -> Cli {
        let mut cmd = Cli::command_on_host(host_name());
        let m = cmd.get_matches_mut();
        Cli::from_matches(&m).unwrap_or_else(|e| e.format(&mut cmd).exit())
    }

    /// The parsed command line. With a subcommand the daemon's own flags are not taken: given
    /// on the command line clap refuses them, and what the environment gives them (a sourced
    /// settings file without `CBRNET_NODE_NAME`, say) is the subcommand's, which must not fail
    /// on the daemon's required `--node-name`.
    pub fn from_matches(m: &clap::ArgMatches) -> Result<Cli, clap::Error> {
        use clap::FromArgMatches;
        if m.subcommand().is_none() {
            return Cli::from_arg_matches(m);
        }
        Ok(Cli {
            command: Some(Command::from_arg_matches(m)?),
            run: None,
            etcd_auth: EtcdAuthArgs::from_arg_matches(m)?,
        })
    }
}

/// The kernel's host name (what systemd's `%H` is), if it has one.
pub fn host_name() -> Option<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    Some(h.trim().to_string()).filter(|h| !h.is_empty())
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the cluster's leases.
    Leases(LeasesArgs),
    /// Give this node's lease back (decommissioning the node).
    Release(ReleaseArgs),
    /// Install the CNI plugins and the network config (for package scripts and init containers).
    InstallCni(InstallCniArgs),
    /// Check this node against what the daemon should have made of it, and say what to fix.
    Doctor(Box<DoctorArgs>),
}

/// `doctor`: the daemon's own flags (and environment), and how to report.
#[derive(Args, Debug)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub etcd_auth: EtcdAuthArgs,
    /// A JSON list of {check, status, found, fix} instead of lines.
    #[arg(long)]
    pub json: bool,
    /// Also send ICMP echoes to every peer's gateway (at most 1 s per peer, 64 peers at a time).
    #[arg(long)]
    pub probe: bool,
    /// Where container runtimes look for CNI plugins (repeat the flag for several).
    #[arg(long = "cni-bin-dir", default_values = ["/opt/cni/bin", "/usr/lib/cni"])]
    pub cni_bin_dirs: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct InstallCniArgs {
    /// Where the runtime looks for CNI plugins.
    #[arg(long, default_value = "/opt/cni/bin")]
    pub bin_dir: PathBuf,
    /// Where the runtime looks for network configs.
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub conf_dir: PathBuf,
    /// Where `cbrnet` and `cbrnet-ipam` are taken from (default: next to this program, then
    /// /usr/lib/cni).
    #[arg(long)]
    pub from: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// The lease store: file:/DIR or etcd:http://HOST:PORT[,...].
    #[arg(long, value_parser = parse_store)]
    pub store: StoreSpec,
    /// Key prefix of the leases in etcd.
    #[arg(long, default_value = "/cbrnet/subnets/")]
    pub etcd_prefix: String,
    #[command(flatten)]
    pub etcd_auth: EtcdAuthArgs,
}

/// How to authenticate to etcd: TLS files and an etcd user. A password is only ever read from a
/// file (a flag would show it in `ps`). The files are read again when they change.
#[derive(Args, Debug, Clone, Default)]
pub struct EtcdAuthArgs {
    /// The CA that signs etcd's server certificate (PEM); without it, https:// uses the
    /// system's CAs.
    #[arg(long, env = "CBRNET_ETCD_CA_FILE")]
    pub etcd_ca_file: Option<PathBuf>,
    /// The client certificate etcd asks for (PEM), with --etcd-key-file.
    #[arg(long, env = "CBRNET_ETCD_CERT_FILE")]
    pub etcd_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM), readable by root only.
    #[arg(long, env = "CBRNET_ETCD_KEY_FILE")]
    pub etcd_key_file: Option<PathBuf>,
    /// The etcd user, with --etcd-password-file.
    #[arg(long, env = "CBRNET_ETCD_USERNAME")]
    pub etcd_username: Option<String>,
    /// A file whose first line is the etcd user's password.
    #[arg(long, env = "CBRNET_ETCD_PASSWORD_FILE")]
    pub etcd_password_file: Option<PathBuf>,
}

impl EtcdAuthArgs {
    /// Judges the flags against the store: each file given must be readable now, a certificate
    /// comes with its key and a user with its password; TLS files need https:// endpoints.
    pub fn validate(&self, store: &StoreSpec) -> Result<EtcdAuth, String> {
        let auth = EtcdAuth {
            ca_file: self.etcd_ca_file.clone(),
            cert_file: self.etcd_cert_file.clone(),
            key_file: self.etcd_key_file.clone(),
            username: self.etcd_username.clone(),
            password_file: self.etcd_password_file.clone(),
        };
        for (flag, path) in auth.files() {
            std::fs::File::open(path)
                .and_then(|mut f| std::io::Read::read(&mut f, &mut [0u8; 1]))
                .map_err(|e| format!("{flag} {}: {e}", path.display()))?;
        }
        let pairs = [
            (
                "--etcd-cert-file",
                auth.cert_file.is_some(),
                "--etcd-key-file",
                auth.key_file.is_some(),
            ),
            (
                "--etcd-username",
                auth.username.is_some(),
                "--etcd-password-file",
                auth.password_file.is_some(),
            ),
        ];
        for (a, has_a, b, has_b) in pairs {
            match (has_a, has_b) {
                (true, false) => return Err(format!("{a} needs {b}")),
                (false, true) => return Err(format!("{b} needs {a}")),
                _ => {}
            }
        }
        if auth.username.as_deref() == Some("") {
            return Err("--etcd-username: empty".into());
        }
        if let StoreSpec::Etcd(eps) = store {
            if auth.has_tls_files() && !eps.iter().all(|e| e.starts_with("https://")) {
                return Err(format!(
                    "--etcd-ca-file/--etcd-cert-file/--etcd-key-file: the endpoints of --store ({}) are not https://",
                    eps.join(",")
                ));
            }
        }
        Ok(auth)
    }

    /// What is allowed but unsafe or unused, said at start.
    pub fn warnings(&self, store: &StoreSpec) -> Vec<String> {
        use std::os::unix::fs::PermissionsExt;
        let mut out = Vec::new();
        let given =
            self.etcd_ca_file.is_some() || self.etcd_cert_file.is_some() || self.etcd_username.is_some();
        match store {
            StoreSpec::File(_) if given => {
                out.push("--etcd-* flags are not used with a file: store".to_string());
            }
            StoreSpec::Etcd(eps) if self.etcd_username.is_some() && !eps[0].starts_with("https://") => {
                out.push(
                    "--etcd-username over http://: the password crosses the network in clear text".into(),
                );
            }
            _ => {}
        }
        for (flag, path) in [
            ("--etcd-key-file", &self.etcd_key_file),
            ("--etcd-password-file", &self.etcd_password_file),
        ] {
            let Some(path) = path else { continue };
            if let Ok(m) = std::fs::metadata(path) {
                let mode = m.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    out.push(format!(
                        "{flag} {} is readable by group or others (mode {mode:04o}): a secret should be 0600 or 0400",
                        path.display()
                    ));
                }
            }
        }
        out
    }
}

#[derive(Args, Debug)]
pub struct LeasesArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// This node's subnet file: where it is readable (on a node), a PATH column says how this
    /// node reaches each peer (direct, vxlan, unroutable), read from its routes.
    #[arg(long, env = "CBRNET_SUBNET_FILE", default_value = "/run/cbrnet/subnet.json")]
    pub subnet_file: PathBuf,
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
    #[arg(long, env = "CBRNET_NODE_NAME")]
    pub node_name: String,
    /// This node's addresses on the network it shares with the other nodes: one of each family
    /// at most, comma-separated (192.168.56.11,fd00:56::11).
    #[arg(long, env = "CBRNET_NODE_IP", value_delimiter = ',', required = true)]
    pub node_ip: Vec<IpAddr>,
    /// The cluster's pod CIDRs, carved into node subnets: one of each family at most,
    /// comma-separated (10.244.0.0/16,fd00:10:244::/56).
    #[arg(long, env = "CBRNET_CLUSTER_CIDR", value_delimiter = ',', required = true)]
    pub cluster_cidr: Vec<IpNetwork>,
    /// The lease store: file:/DIR or etcd:http://HOST:PORT[,...].
    #[arg(long, env = "CBRNET_STORE", value_parser = parse_store)]
    pub store: StoreSpec,
    /// Key prefix of the leases in etcd.
    #[arg(long, env = "CBRNET_ETCD_PREFIX", default_value = "/cbrnet/subnets/")]
    pub etcd_prefix: String,
    /// Prefix length of each node's IPv4 subnet.
    #[arg(long, env = "CBRNET_SUBNET_LEN", default_value_t = 24)]
    pub subnet_len: u8,
    /// Prefix length of each node's IPv6 subnet.
    #[arg(long, env = "CBRNET_SUBNET_LEN_V6", default_value_t = 64)]
    pub subnet_len_v6: u8,
    /// First subnet that may be leased, one per family at most (default: each cluster CIDR's
    /// first).
    #[arg(long, env = "CBRNET_FIRST_SUBNET", value_delimiter = ',')]
    pub first_subnet: Vec<IpNetwork>,
    /// Last subnet that may be leased, one per family at most (default: each cluster CIDR's last).
    #[arg(long, env = "CBRNET_LAST_SUBNET", value_delimiter = ',')]
    pub last_subnet: Vec<IpNetwork>,
    /// Lease lifetime; renewed every third of it (at most every 5m).
    #[arg(long, env = "CBRNET_LEASE_TTL", default_value = "24h", value_parser = parse_duration)]
    pub lease_ttl: Duration,
    /// Where the node's subnet is published for cbrnet-ipam.
    #[arg(long, env = "CBRNET_SUBNET_FILE", default_value = "/run/cbrnet/subnet.json")]
    pub subnet_file: PathBuf,
    /// The node bridge that carries the gateway address.
    #[arg(long, env = "CBRNET_BRIDGE", default_value = "cbr0")]
    pub bridge: String,
    /// MTU published in the subnet file (and used if the bridge is created here).
    #[arg(long, env = "CBRNET_MTU")]
    pub mtu: Option<u32>,
    /// Masquerade pod traffic leaving the cluster CIDR (nftables table cbrnet_routed).
    #[arg(long, env = "CBRNET_IP_MASQ")]
    pub ip_masq: bool,
    /// Where /healthz and /metrics are served.
    #[arg(long, env = "CBRNET_METRICS_ADDR", default_value = "127.0.0.1:9473")]
    pub metrics_addr: SocketAddr,
    /// Full resync period.
    #[arg(long, env = "CBRNET_RESYNC_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub resync_interval: Duration,
    /// The CNI config directory: addresses of vanished pods of its cbrnet networks are reclaimed.
    #[arg(long, env = "CBRNET_CNI_CONF_DIR", default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// How other nodes' pod subnets are reached: host-gw (directly, every node on one of this
    /// node's networks), vxlan (through the VXLAN device), auto (directly where the peer is on one
    /// of this node's networks, VXLAN elsewhere).
    #[arg(long, env = "CBRNET_BACKEND", value_enum, default_value = "auto")]
    pub backend: Mode,
    /// The VXLAN network identifier of the cluster (vxlan and auto).
    #[arg(long, env = "CBRNET_VXLAN_VNI", default_value_t = 1)]
    pub vxlan_vni: u32,
    /// The UDP port of VXLAN traffic (8472: the kernel's and flannel's).
    #[arg(long, env = "CBRNET_VXLAN_PORT", default_value_t = 8472)]
    pub vxlan_port: u16,
    /// TX checksum offload on the VXLAN device: on|off. Off by default: with it on, some kernels
    /// and NICs send encapsulated packets with bad checksums (dropped, retransmitted late).
    #[arg(long, env = "CBRNET_VXLAN_TX_CSUM_OFFLOAD", default_value = "off", value_parser = parse_on_off,
          action = clap::ArgAction::Set)]
    pub vxlan_tx_csum_offload: bool,
}

/// `on` or `off`.
fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{s:?} is neither on nor off")),
    }
}

/// A store as `--store` names it.
pub fn store_flag(s: &StoreSpec) -> String {
    match s {
        StoreSpec::File(dir) => format!("file:{}", dir.display()),
        StoreSpec::Etcd(eps) => format!("etcd:{}", eps.join(",")),
    }
}

fn parse_store(s: &str) -> Result<StoreSpec, String> {
    s.parse()
        .map_err(|e: cbrnet_ipam::cluster::ClusterError| e.to_string())
}

/// `500ms`, `10s`, `5m`, `24h` (or plain seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    cbrnet_ipam::duration::parse(s)
}

/// The daemon's configuration, judged.
#[derive(Debug, Clone)]
pub struct Config {
    pub args: RunArgs,
    /// The node IP its lease publishes as `nodeIP`: the IPv4 one when it has one. The VXLAN
    /// device's outer address.
    pub node_ip: IpAddr,
    /// The node's IPv6 address beside an IPv4 `node_ip` (the lease's `nodeIPv6`).
    pub node_ip_v6: Option<Ipv6Addr>,
    pub leases: LeaseConfig,
    /// The etcd TLS files and user ([`Config::with_etcd_auth`]).
    pub etcd_auth: EtcdAuth,
    /// What is unsafe or unused in them, said at start.
    pub etcd_auth_warnings: Vec<String>,
}

/// A list flag's values as it takes them: comma-separated.
fn list<T: std::fmt::Display>(values: impl IntoIterator<Item = T>) -> String {
    values
        .into_iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// At most one value of each family in `values` (a list flag); the IPv4 one first.
fn one_per_family<T: Copy>(
    values: &[T],
    is_v4: impl Fn(&T) -> bool,
    show: impl Fn(&T) -> String,
) -> Result<(Option<T>, Option<T>), String> {
    let (v4, v6): (Vec<&T>, Vec<&T>) = values.iter().partition(|v| is_v4(v));
    for same in [&v4, &v6] {
        if same.len() > 1 {
            let all: Vec<String> = same.iter().map(|v| show(v)).collect();
            return Err(format!(
                "{} are of one family: one of each at most",
                all.join(" and ")
            ));
        }
    }
    Ok((v4.first().copied().copied(), v6.first().copied().copied()))
}

impl RunArgs {
    /// Judges every flag; the error names the flag.
    pub fn validate(self) -> Result<Config, String> {
        let flag = |f: &str, m: String| format!("--{f}: {m}");
        let name = &self.node_name;
        if name.is_empty()
            || name.len() > MAX_NODE_NAME
            || name.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(flag(
                "node-name",
                format!("{name:?} is not a node name (1-{MAX_NODE_NAME} bytes, no spaces)"),
            ));
        }
        let (ip4, ip6) = one_per_family(&self.node_ip, IpAddr::is_ipv4, IpAddr::to_string)
            .map_err(|e| flag("node-ip", e))?;
        for ip in ip4.iter().chain(&ip6) {
            let bad = match ip {
                IpAddr::V4(a) => {
                    a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.is_broadcast()
                }
                // A link-local address names no node beyond its link, and a mapped one is IPv4's.
                IpAddr::V6(a) => {
                    a.is_unspecified()
                        || a.is_loopback()
                        || a.is_multicast()
                        || a.is_unicast_link_local()
                        || a.to_ipv4_mapped().is_some()
                }
            };
            if bad {
                return Err(flag(
                    "node-ip",
                    format!("{ip} is not a unicast address a peer can reach"),
                ));
            }
        }
        let (cidr4, cidr6) = one_per_family(&self.cluster_cidr, IpNetwork::is_ipv4, IpNetwork::to_string)
            .map_err(|e| flag("cluster-cidr", e))?;
        let node_ip = ip4
            .or(ip6)
            .ok_or_else(|| flag("node-ip", "no address given".into()))?;
        let node_ip_v6 = match (ip4, ip6) {
            (Some(_), Some(IpAddr::V6(a))) => Some(a),
            _ => None,
        };
        let lease_cfg = |cidr: IpNetwork| {
            let len = if cidr.is_ipv4() {
                self.subnet_len
            } else {
                self.subnet_len_v6
            };
            (cidr, len)
        };
        let mut cidrs = cidr4.into_iter().chain(cidr6).map(lease_cfg);
        let Some((first_cidr, first_len)) = cidrs.next() else {
            return Err(flag("cluster-cidr", "no CIDR given".into()));
        };
        let len_flags = if first_cidr.is_ipv4() {
            "cluster-cidr/--subnet-len/--lease-ttl"
        } else {
            "cluster-cidr/--subnet-len-v6/--lease-ttl"
        };
        let mut leases = LeaseConfig::new(first_cidr, first_len, self.lease_ttl)
            .map_err(|e| flag(len_flags, e.to_string()))?;
        if let Some((cidr, len)) = cidrs.next() {
            leases = leases
                .with_family(cidr, len)
                .map_err(|e| flag("cluster-cidr/--subnet-len-v6", e.to_string()))?;
        }
        let (first4, first6) = one_per_family(&self.first_subnet, IpNetwork::is_ipv4, IpNetwork::to_string)
            .map_err(|e| flag("first-subnet", e))?;
        let (last4, last6) = one_per_family(&self.last_subnet, IpNetwork::is_ipv4, IpNetwork::to_string)
            .map_err(|e| flag("last-subnet", e))?;
        for (first, last) in [(first4, last4), (first6, last6)] {
            leases = leases
                .with_range(first, last)
                .map_err(|e| flag("first-subnet/--last-subnet", e.to_string()))?;
        }
        // The kernel routes an IPv4 prefix via an IPv6 next hop, never the reverse: IPv6 pods
        // on nodes without IPv6 addresses are reached through VXLAN (IPv6 inside IPv4) only.
        if cidr6.is_some() && ip6.is_none() && self.backend == Mode::HostGw {
            return Err(flag(
                "node-ip",
                "IPv6 pods with --backend host-gw need an IPv6 node IP too: the kernel takes no IPv4 \
                 next hop for an IPv6 route (give --node-ip an address of each family, or use \
                 --backend auto or vxlan, which carries IPv6 pods inside IPv4)"
                    .into(),
            ));
        }
        if self.resync_interval.is_zero() {
            return Err(flag("resync-interval", "must be more than 0".into()));
        }
        // 24 bits; 0 is valid for the kernel but reads as "unset" in many tools.
        if !(1..=0xff_ffff).contains(&self.vxlan_vni) {
            return Err(flag(
                "vxlan-vni",
                format!("{} is out of range (1-16777215)", self.vxlan_vni),
            ));
        }
        if self.vxlan_port == 0 {
            return Err(flag("vxlan-port", "must be a UDP port (1-65535)".into()));
        }
        if let Some(mtu) = self.mtu {
            if !(68..=65535).contains(&mtu) {
                return Err(flag("mtu", format!("{mtu} is out of range (68-65535)")));
            }
        }
        cni_spec::env::validate_ifname(&self.bridge)
            .map_err(|e| flag("bridge", e.msg.replace("CNI_IFNAME ", "")))?;
        if !self.subnet_file.is_absolute() || self.subnet_file.file_name().is_none() {
            return Err(flag(
                "subnet-file",
                format!("{} is not an absolute file path", self.subnet_file.display()),
            ));
        }
        Ok(Config {
            etcd_auth: EtcdAuth::default(),
            etcd_auth_warnings: Vec::new(),
            node_ip,
            node_ip_v6,
            leases,
            args: self,
        })
    }
}

impl Config {
    /// Every node IP: the lease's `nodeIP`, then its `nodeIPv6`.
    pub fn node_ips(&self) -> Vec<IpAddr> {
        std::iter::once(self.node_ip)
            .chain(self.node_ip_v6.map(IpAddr::V6))
            .collect()
    }

    /// The node IP of a family, if the node has one.
    pub fn node_ip_of(&self, v4: bool) -> Option<IpAddr> {
        self.node_ips().into_iter().find(|ip| ip.is_ipv4() == v4)
    }

    /// The cluster CIDRs: the records' family first.
    pub fn cluster_cidrs(&self) -> impl Iterator<Item = IpNetwork> + '_ {
        self.leases.pools.iter().map(|p| p.cidr)
    }

    /// The cluster CIDR of a family, if the cluster has one.
    pub fn cluster_cidr_of(&self, v4: bool) -> Option<IpNetwork> {
        self.cluster_cidrs().find(|c| c.is_ipv4() == v4)
    }

    /// Adds the etcd TLS files and user, judged against the store; the error names the flag.
    pub fn with_etcd_auth(mut self, a: &EtcdAuthArgs) -> Result<Config, String> {
        self.etcd_auth = a.validate(&self.args.store)?;
        self.etcd_auth_warnings = a.warnings(&self.args.store);
        Ok(self)
    }

    /// What this configuration runs with, as the daemon publishes it for `doctor`.
    pub fn settings(&self) -> crate::instance::Settings {
        let a = &self.args;
        crate::instance::Settings {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").into(),
            node_name: a.node_name.clone(),
            node_ip: list(self.node_ips()),
            cluster_cidr: list(self.cluster_cidrs()),
            store: store_flag(&a.store),
            etcd_prefix: a.etcd_prefix.clone(),
            subnet_len: a.subnet_len,
            subnet_len_v6: a.subnet_len_v6,
            subnet_file: a.subnet_file.clone(),
            bridge: a.bridge.clone(),
            mtu: a.mtu,
            ip_masq: a.ip_masq,
            metrics_addr: a.metrics_addr.to_string(),
            backend: clap::ValueEnum::to_possible_value(&a.backend)
                .map_or_else(|| format!("{:?}", a.backend), |v| v.get_name().to_string()),
            vxlan_vni: a.vxlan_vni,
            vxlan_port: a.vxlan_port,
            cni_conf_dir: a.cni_conf_dir.clone(),
        }
    }

    /// What is allowed but will not work as the operator may expect, said once at start.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = self.etcd_auth_warnings.clone();
        // The network and broadcast addresses and the gateway are no pod's.
        let pods = (1u64 << (32 - u32::from(self.args.subnet_len.min(32)))).saturating_sub(3);
        // An IPv6 subnet always has more addresses than a bridge has ports: a limit of the bridge,
        // not of the subnet the operator chose.
        if pods > cbrnet_bridge::port::MAX_PORTS && self.cluster_cidr_of(true).is_some() {
            out.push(format!(
                "--subnet-len {}: a node subnet has room for {pods} pods, but the node bridge takes at most \
                 {} ports; ADDs past that fail with error 115 (bridge full). Use /22 or longer.",
                self.args.subnet_len,
                cbrnet_bridge::port::MAX_PORTS
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(extra: &[&str]) -> Result<Config, String> {
        let mut argv = vec!["cbrnet-routed", "--node-name", "n1"];
        if !extra.contains(&"--node-ip") {
            argv.extend(["--node-ip", "192.168.1.2"]);
        }
        if !extra.contains(&"--cluster-cidr") {
            argv.extend(["--cluster-cidr", "10.244.0.0/16"]);
        }
        if !extra.contains(&"--store") {
            argv.extend(["--store", "file:/tmp/x"]);
        }
        argv.extend_from_slice(extra);
        let c = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        c.run.unwrap().validate()?.with_etcd_auth(&c.etcd_auth)
    }

    #[test]
    fn flags_parse() {
        let c = run(&["--ip-masq"]).unwrap();
        assert_eq!(c.args.subnet_len, 24);
        assert!(c.args.ip_masq);
        assert_eq!(c.args.resync_interval, Duration::from_secs(10));
        assert_eq!(c.args.cni_conf_dir, PathBuf::from("/etc/cni/net.d"));
        assert_eq!(c.args.backend, Mode::Auto);
        assert_eq!((c.args.vxlan_vni, c.args.vxlan_port), (1, 8472));
        assert!(!c.args.vxlan_tx_csum_offload);
        let c = run(&[
            "--backend",
            "host-gw",
            "--vxlan-vni",
            "42",
            "--vxlan-port",
            "4789",
            "--vxlan-tx-csum-offload",
            "on",
        ])
        .unwrap();
        assert_eq!(c.args.backend, Mode::HostGw);
        assert_eq!((c.args.vxlan_vni, c.args.vxlan_port), (42, 4789));
        assert!(c.args.vxlan_tx_csum_offload);
        assert_eq!(
            run(&["--backend", "host-gw"]).unwrap().settings().backend,
            "host-gw"
        );
        // The daemon's flags but its node name.
        let bare = [
            "cbrnet-routed",
            "--node-ip",
            "192.168.1.2",
            "--cluster-cidr",
            "10.244.0.0/16",
            "--store",
            "file:/tmp/x",
        ];
        let args = [
            &["cbrnet-routed", "doctor", "--node-name", "n1"],
            &bare[1..],
            &["--json", "--probe"],
        ]
        .concat();
        let c = Cli::try_parse_from(args).unwrap();
        let Some(Command::Doctor(d)) = c.command else {
            panic!("doctor is a subcommand")
        };
        assert!(d.json && d.probe);
        // Without --node-name (nor CBRNET_NODE_NAME), doctor takes the host name, as the unit
        // gives the daemon; the daemon itself still needs one.
        let on_host = |args: &[&str]| {
            let m = Cli::command_on_host(Some("host-7".into())).try_get_matches_from(args)?;
            Cli::from_matches(&m)
        };
        if std::env::var_os("CBRNET_NODE_NAME").is_none() {
            let doctor: Vec<&str> = [&bare[..1], &["doctor"], &bare[1..]].concat();
            let Some(Command::Doctor(d)) = on_host(&doctor).unwrap().command else {
                panic!("doctor is a subcommand")
            };
            assert_eq!(d.run.node_name, "host-7");
            let named: Vec<&str> = [&doctor[..], &["--node-name", "n2"]].concat();
            let Some(Command::Doctor(d)) = on_host(&named).unwrap().command else {
                panic!("doctor is a subcommand")
            };
            assert_eq!(d.run.node_name, "n2");
            let e = on_host(&bare).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument, "{e}");
        }
        assert_eq!(
            d.cni_bin_dirs,
            [PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
        let c = Cli::try_parse_from(["cbrnet-routed", "leases", "--store", "file:/tmp/x", "--json"]).unwrap();
        assert!(matches!(
            c.command,
            Some(Command::Leases(LeasesArgs { json: true, .. }))
        ));
    }

    #[test]
    fn etcd_tls_and_user_flags_are_judged_at_start() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let f = |name: &str, mode: u32| {
            let p = d.path().join(name);
            std::fs::write(&p, "x\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p.to_str().unwrap().to_string()
        };
        let (ca, cert, key, pw) = (f("ca", 0o644), f("crt", 0o644), f("key", 0o600), f("pw", 0o600));
        let loose = f("loose.key", 0o640);
        let missing = d.path().join("missing").to_str().unwrap().to_string();
        let https = ["--store", "etcd:https://e1:2379,https://e2:2379"];
        let ok = |extra: &[&str]| run(&[&https[..], extra].concat());
        let c = ok(&[
            "--etcd-ca-file",
            &ca,
            "--etcd-cert-file",
            &cert,
            "--etcd-key-file",
            &key,
            "--etcd-username",
            "cbrnet",
            "--etcd-password-file",
            &pw,
        ])
        .unwrap();
        assert_eq!(c.etcd_auth.username.as_deref(), Some("cbrnet"));
        assert_eq!(c.etcd_auth.key_file, Some(PathBuf::from(&key)));
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
        // a key others may read is warned about
        let c = ok(&["--etcd-cert-file", &cert, "--etcd-key-file", &loose]).unwrap();
        let w = c.warnings();
        assert!(
            w.len() == 1 && w[0].contains("--etcd-key-file") && w[0].contains("0640"),
            "{w:?}"
        );
        for (extra, names) in [
            (vec!["--etcd-ca-file", missing.as_str()], "--etcd-ca-file"),
            (
                vec!["--etcd-cert-file", &cert],
                "--etcd-cert-file needs --etcd-key-file",
            ),
            (
                vec!["--etcd-key-file", &key],
                "--etcd-key-file needs --etcd-cert-file",
            ),
            (
                vec!["--etcd-cert-file", &cert, "--etcd-key-file", &missing],
                "--etcd-key-file",
            ),
            (
                vec!["--etcd-username", "u"],
                "--etcd-username needs --etcd-password-file",
            ),
            (
                vec!["--etcd-password-file", &pw],
                "--etcd-password-file needs --etcd-username",
            ),
            (
                vec!["--etcd-username", "u", "--etcd-password-file", &missing],
                "--etcd-password-file",
            ),
        ] {
            let e = ok(&extra).unwrap_err();
            assert!(e.contains(names), "{extra:?}: {e}");
        }
        // TLS files with plain endpoints: a contradiction
        let e = run(&["--store", "etcd:http://e1:2379", "--etcd-ca-file", &ca]).unwrap_err();
        assert!(e.contains("--etcd-ca-file") && e.contains("not https://"), "{e}");
        // a password over plain http is warned about
        let c = run(&[
            "--store",
            "etcd:http://e1:2379",
            "--etcd-username",
            "u",
            "--etcd-password-file",
            &pw,
        ])
        .unwrap();
        assert!(c.warnings().iter().any(|w| w.contains("clear text")));
        // no flag takes a password itself
        assert!(run(&["--etcd-password", "x"]).is_err());
    }

    #[test]
    fn one_address_and_one_cidr_of_each_family() {
        let c = run(&[
            "--node-ip",
            "fd00:56::11,192.168.56.11",
            "--cluster-cidr",
            "fd00:10:244::/56,10.244.0.0/16",
            "--first-subnet",
            "fd00:10:244:5::/64",
            "--first-subnet",
            "10.244.5.0/24",
            "--last-subnet",
            "10.244.9.0/24,fd00:10:244:9::/64",
        ])
        .unwrap();
        assert_eq!(c.node_ip.to_string(), "192.168.56.11");
        assert_eq!(c.node_ip_v6.unwrap().to_string(), "fd00:56::11");
        assert_eq!(c.cluster_cidr_of(true).unwrap().to_string(), "10.244.0.0/16");
        assert_eq!(c.cluster_cidr_of(false).unwrap().to_string(), "fd00:10:244::/56");
        let v6 = c.leases.ipv6().unwrap();
        assert_eq!(v6.subnet_len, 64);
        assert_eq!(
            (v6.first.unwrap().to_string(), v6.last.unwrap().to_string()),
            ("fd00:10:244:5::/64".into(), "fd00:10:244:9::/64".into())
        );
        assert_eq!(c.leases.primary().first.unwrap().to_string(), "10.244.5.0/24");
        // IPv6 only: the IPv6 address is the lease's nodeIP
        let c = run(&["--node-ip", "fd00:56::11", "--cluster-cidr", "fd00:10:244::/56"]).unwrap();
        assert_eq!(
            (c.node_ip.to_string(), c.node_ip_v6),
            ("fd00:56::11".into(), None)
        );
        assert!(c.leases.primary().cidr.is_ipv6());
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
        // IPv4 pods over an IPv6-only underlay, and dual-stack pods over IPv4 with VXLAN
        assert!(run(&["--node-ip", "fd00:56::11"]).is_ok());
        assert!(run(&["--cluster-cidr", "10.244.0.0/16,fd00:10:244::/56"]).is_ok());
    }

    #[test]
    fn a_subnet_larger_than_a_bridge_is_warned_about() {
        assert_eq!(run(&[]).unwrap().warnings(), Vec::<String>::new());
        // A /22 is 1,021 pods: within the 1,023 ports.
        assert!(run(&["--subnet-len", "22"]).unwrap().warnings().is_empty());
        let w = run(&["--subnet-len", "21"]).unwrap().warnings();
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("2045 pods") && w[0].contains("1023 ports"), "{w:?}");
    }

    #[test]
    fn each_bad_flag_is_named() {
        for (args, names) in [
            (&["--store", "file:relative"][..], "--store"),
            (&["--store", "etcd:10.0.0.1:2379"][..], "--store"),
            (&["--first-subnet", "10.245.0.0/24"][..], "--first-subnet"),
            (
                &["--last-subnet", "10.244.1.0/25"][..],
                "--first-subnet/--last-subnet",
            ),
            (&["--subnet-len", "8"][..], "--subnet-len"),
            (&["--resync-interval", "0"][..], "--resync-interval"),
            (
                &["--resync-interval", "99999999999999999999h"][..],
                "--resync-interval",
            ),
            (&["--lease-ttl", "18446744073709551615h"][..], "--lease-ttl"),
            (&["--lease-ttl", "1s"][..], "--lease-ttl"),
            (&["--node-ip", "127.0.0.1"][..], "--node-ip"),
            (&["--node-ip", "ff02::1"][..], "--node-ip"),
            (&["--node-name", ""][..], "--node-name"),
            (&["--mtu", "20"][..], "--mtu"),
            (&["--bridge", "a-very-long-bridge"][..], "--bridge"),
            (&["--subnet-file", "rel.json"][..], "--subnet-file"),
            (&["--backend", "ipip"][..], "--backend"),
            (&["--vxlan-vni", "0"][..], "--vxlan-vni"),
            (&["--vxlan-vni", "16777216"][..], "--vxlan-vni"),
            (&["--vxlan-port", "0"][..], "--vxlan-port"),
            (&["--vxlan-port", "65536"][..], "--vxlan-port"),
            (&["--vxlan-tx-csum-offload", "yes"][..], "--vxlan-tx-csum-offload"),
            (&["--cluster-cidr", "10.244.1.0/16"][..], "--cluster-cidr"),
            (
                &["--cluster-cidr", "10.244.0.0/16,10.245.0.0/16"][..],
                "--cluster-cidr",
            ),
            (
                &["--cluster-cidr", "fd00:10:244::/56,fd00:10:245::/56"][..],
                "--cluster-cidr",
            ),
            (&["--node-ip", "192.168.1.2,192.168.1.3"][..], "--node-ip"),
            (&["--node-ip", "fe80::1"][..], "--node-ip"),
            (&["--node-ip", "::ffff:192.168.1.2"][..], "--node-ip"),
            (
                &["--cluster-cidr", "fd00:10:244::/56", "--subnet-len-v6", "121"][..],
                "--subnet-len-v6",
            ),
            (
                &["--first-subnet", "10.244.5.0/24,10.244.6.0/24"][..],
                "--first-subnet",
            ),
            (
                &[
                    "--cluster-cidr",
                    "10.244.0.0/16",
                    "--first-subnet",
                    "fd00:10:244:5::/64",
                ][..],
                "--first-subnet/--last-subnet",
            ),
            // the kernel routes no IPv6 prefix via an IPv4 next hop
            (
                &[
                    "--cluster-cidr",
                    "10.244.0.0/16,fd00:10:244::/56",
                    "--backend",
                    "host-gw",
                ][..],
                "--node-ip",
            ),
        ] {
            let e = run(args).unwrap_err();
            assert!(e.contains(names), "{args:?}: {e}");
        }
    }
}
