//! ADD, DEL, CHECK, GC and STATUS.

use crate::bridge::{self, Bridge};
use crate::config::{self, format_mac, Loaded};
use crate::error::{PluginError, Result};
use crate::ipam::{Ipam, Lease};
use crate::netns::NetNs;
use crate::nl::{self, Nl};
use crate::{masq, pod, veth};
use cni_spec::{env::Command, CniError, CniResult, Env, Interface, IpConfig, Route};
use ipnetwork::IpNetwork;
use serde_json::Value;
use std::net::IpAddr;

/// Entry point for every command but VERSION (answered by the skel).
pub fn run(env: &Env, stdin: &[u8]) -> std::result::Result<Option<Value>, CniError> {
    let l = config::load(stdin)?;
    l.version.allows(env.command)?;
    crate::logging::init(l.conf.log_file.as_deref());
    tracing::debug!(command = env.command.as_str(), container = %env.container_id, ifname = %env.ifname, netns = %env.netns, "start");
    let out = match env.command {
        Command::Add => add(&l, env, stdin).map(Some),
        Command::Del => del(&l, env, stdin).map(|_| None),
        Command::Check => check(&l, env, stdin).map(|_| None),
        Command::Gc => gc(&l, env, stdin).map(|_| None),
        Command::Status => status(&l, env, stdin).map(|_| None),
        Command::Version => unreachable!("answered by the skel"),
    };
    match out {
        Ok(v) => Ok(v),
        Err(e) => {
            tracing::error!(command = env.command.as_str(), container = %env.container_id, "{e}");
            Err(e.into())
        }
    }
}

/// One current-thread runtime per invocation: rtnetlink is async, the plugin needs no threads.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("building a current-thread runtime")
        .block_on(f)
}

/// Lets the crash test stop the plugin at a named point of ADD (`CBRNET_TEST_STOP_AT`), so it can
/// kill it there and show that DEL cleans up.
fn stop_point(name: &str) {
    if std::env::var_os("CBRNET_TEST_STOP_AT").is_some_and(|v| v == name) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
    }
}

fn pod_mac(l: &Loaded, ips: &[IpConfig], env: &Env) -> [u8; 6] {
    if let Some(m) = l.pod_mac {
        return m;
    }
    // 0a:58 + the IPv4 address: a pod that comes back with the same address keeps its MAC, so
    // its neighbours' ARP entries stay right.
    match ips.iter().find_map(|c| match c.address.ip() {
        IpAddr::V4(v4) => Some(v4.octets()),
        _ => None,
    }) {
        Some(o) => [0x0a, 0x58, o[0], o[1], o[2], o[3]],
        None => bridge::mac_from_hash(nl::fnv1a(&[
            &l.conf.base.name,
            &env.container_id,
            &env.ifname,
            "pod",
        ])),
    }
}

fn add(l: &Loaded, env: &Env, stdin: &[u8]) -> Result<Value> {
    // Everything that can be judged without changing the node is judged first.
    let prev = l
        .conf
        .base
        .prev_result
        .as_ref()
        .map(CniResult::from_value)
        .transpose()?;
    let pod_ns = NetNs::open(&env.netns)?;
    let home = NetNs::current()?;
    let ipam = Ipam::new(l, env)?;

    let lease = ipam.add(l, env, stdin)?;
    stop_point("reserved");
    let mut created = false;
    let out = block_on(wire(l, env, &pod_ns, &home, &lease, &mut created));
    match out {
        Ok(mut result) => {
            if let Some(prev) = prev {
                result = chain(prev, result);
            }
            Ok(result.to_value(l.version))
        }
        Err(e) => {
            if created {
                let host = veth::host_name(&l.conf.base.name, &env.container_id, &env.ifname);
                if let Err(e) = block_on(async { veth::delete(&Nl::connect()?, &host).await }) {
                    tracing::warn!("undoing veth {host}: {e}");
                }
            }
            ipam.undo(&lease, l, env, stdin);
            Err(e)
        }
    }
}

/// The network work of ADD: bridge, veth, pod addresses and routes.
async fn wire(
    l: &Loaded,
    env: &Env,
    pod_ns: &NetNs,
    home: &NetNs,
    lease: &Lease,
    created: &mut bool,
) -> Result<CniResult> {
    let c = &l.conf;
    let ips = &lease.result.ips;
    if ips.is_empty() {
        return Err(CniError::invalid_config("IPAM returned no address").into());
    }
    let gateways: Vec<(IpAddr, IpNetwork)> = ips
        .iter()
        .filter_map(|ip| Some((ip.gateway?, ip.address)))
        .collect();
    let file_mtu = lease.subnet_file.as_ref().and_then(|f| f.mtu);
    let cluster = c
        .cluster_cidr
        .or(lease.subnet_file.as_ref().and_then(|f| f.cluster_cidr));
    if c.ip_masq && cluster.is_none() {
        return Err(
            CniError::invalid_config("ipMasq needs clusterCIDR (in the config or the subnet file)").into(),
        );
    }

    let host = Nl::connect()?;
    let v4_gw = gateways.iter().map(|g| g.0).find(IpAddr::is_ipv4);
    let br: Bridge = bridge::ensure(
        &host,
        &c.bridge,
        c.mtu.or(file_mtu).unwrap_or(1500),
        bridge::stable_mac(v4_gw, &c.bridge),
        c.promisc_mode,
    )
    .await?;
    if c.is_gateway {
        for (gw, subnet) in &gateways {
            bridge::ensure_address(&host, &br, *gw, *subnet).await?;
        }
        crate::forwarding::enable(gateways.iter().any(|g| g.0.is_ipv6()))?;
    }

    let mtu = c.mtu.or(file_mtu).unwrap_or(br.mtu);
    let host_name = veth::host_name(&c.base.name, &env.container_id, &env.ifname);
    let host_mac = bridge::mac_from_hash(nl::fnv1a(&[&c.base.name, &env.container_id, &env.ifname, "host"]));
    let pod_mac = pod_mac(l, ips, env);
    veth::create(
        &host,
        &veth::Pair {
            host_name: &host_name,
            host_mac,
            pod_ifname: &env.ifname,
            pod_mac,
            pod_ns_fd: pod_ns.fd(),
            mtu,
            bridge_index: br.index,
        },
    )
    .await?;
    *created = true;
    stop_point("veth");
    if c.hairpin_mode {
        veth::set_hairpin(&host, &host_name, true).await?;
    }

    let mut routes: Vec<Route> = lease.result.routes.clone();
    if c.is_default_gateway {
        for (gw, _) in &gateways {
            let any: IpNetwork = if gw.is_ipv4() { "0.0.0.0/0" } else { "::/0" }
                .parse()
                .expect("valid");
            if !routes.iter().any(|r| r.dst == any) {
                routes.push(Route::new(any, Some(*gw)));
            }
        }
    }
    let pod = pod_ns.run_in(home, Nl::connect)??;
    pod::configure(&pod, &env.ifname, ips, &routes).await?;

    if c.ip_masq {
        let subnet = gateways
            .iter()
            .map(|g| g.1)
            .find(IpNetwork::is_ipv4)
            .expect("an IPv4 gateway");
        let subnet = IpNetwork::new(subnet.network(), subnet.prefix()).expect("valid");
        masq::ensure(
            &masq::table_name(&c.base.name),
            subnet,
            cluster.expect("checked above"),
        )?;
    }

    Ok(CniResult {
        interfaces: vec![
            Interface {
                name: br.name.clone(),
                mac: format_mac(&br.mac),
                ..Default::default()
            },
            Interface {
                name: host_name,
                mac: format_mac(&host_mac),
                mtu: Some(mtu),
                ..Default::default()
            },
            Interface {
                name: env.ifname.clone(),
                mac: format_mac(&pod_mac),
                mtu: Some(mtu),
                sandbox: env.netns.clone(),
                ..Default::default()
            },
        ],
        ips: ips
            .iter()
            .map(|ip| IpConfig {
                interface: Some(2),
                ..ip.clone()
            })
            .collect(),
        routes,
        dns: c.dns.clone().unwrap_or_else(|| lease.result.dns.clone()),
    })
}

/// Appends our result to a previous plugin's (conflist chaining), renumbering our interfaces.
fn chain(mut prev: CniResult, ours: CniResult) -> CniResult {
    let base = prev.interfaces.len();
    prev.interfaces.extend(ours.interfaces);
    prev.ips.extend(ours.ips.into_iter().map(|ip| IpConfig {
        interface: ip.interface.map(|i| i + base),
        ..ip
    }));
    for r in ours.routes {
        if !prev.routes.contains(&r) {
            prev.routes.push(r);
        }
    }
    if prev.dns.is_empty() {
        prev.dns = ours.dns;
    }
    prev
}

/// DEL: best effort and idempotent. The pair goes by its host end (no need to enter the pod; if
/// the pod namespace is gone, so is the pair), and the addresses are always released.
fn del(l: &Loaded, env: &Env, stdin: &[u8]) -> Result<()> {
    let host_name = veth::host_name(&l.conf.base.name, &env.container_id, &env.ifname);
    let link_result = block_on(async { veth::delete(&Nl::connect()?, &host_name).await });
    let ipam_result = Ipam::new(l, env).and_then(|ipam| ipam.del(l, env, stdin));
    match link_result {
        Ok(gone) => tracing::debug!(host_name, deleted = gone, "veth"),
        Err(e) => return ipam_result.and(Err(e)),
    }
    ipam_result
}

fn check(l: &Loaded, env: &Env, stdin: &[u8]) -> Result<()> {
    let prev = l
        .conf
        .base
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::invalid_config("CHECK needs prevResult"))
        .and_then(CniResult::from_value)?;
    let pod_idx = prev
        .interfaces
        .iter()
        .position(|i| i.name == env.ifname && !i.sandbox.is_empty())
        .ok_or_else(|| PluginError::Check(format!("prevResult has no sandbox interface {}", env.ifname)))?;
    let ips: Vec<IpConfig> = prev
        .ips
        .iter()
        .filter(|ip| ip.interface == Some(pod_idx))
        .cloned()
        .collect();
    let ipam = Ipam::new(l, env)?;
    ipam.check(
        l,
        env,
        stdin,
        &ips.iter().map(|c| c.address.ip()).collect::<Vec<_>>(),
    )?;
    let pod_ns = NetNs::open(&env.netns)?;
    let home = NetNs::current()?;
    let mac = config::parse_mac(&prev.interfaces[pod_idx].mac);
    block_on(async {
        let host = Nl::connect()?;
        let br = host
            .link(&l.conf.bridge)
            .await?
            .ok_or_else(|| PluginError::Check(format!("bridge {} is missing", l.conf.bridge)))?;
        let host_name = veth::host_name(&l.conf.base.name, &env.container_id, &env.ifname);
        let port = host
            .link(&host_name)
            .await?
            .ok_or_else(|| PluginError::Check(format!("host veth {host_name} is missing")))?;
        if nl::controller(&port) != Some(br.header.index) {
            return Err(PluginError::Check(format!(
                "{host_name} is not a port of {}",
                l.conf.bridge
            )));
        }
        let pod = pod_ns.run_in(&home, Nl::connect)??;
        pod::check(&pod, &env.ifname, mac, &ips, &prev.routes).await
    })
}

fn gc(l: &Loaded, env: &Env, stdin: &[u8]) -> Result<()> {
    Ipam::new(l, env)?.gc(l, env, stdin)
}

fn status(l: &Loaded, env: &Env, stdin: &[u8]) -> Result<()> {
    Ipam::new(l, env)?.status(l, env, stdin)
}
