//! The CNI commands: dispatch, and DEL, CHECK, GC and STATUS (ADD has a module of its own).

use crate::config::{self, Loaded};
use crate::error::{ErrorList, PluginError, Result};
use crate::ipam::Ipam;
use crate::netns::NetNs;
use crate::{add, pod, veth};
use cbrnet_bridge::{mac, netlink, Nl};
use cni_spec::{env::Command, CniError, CniResult, Env, IpConfig};
use futures::FutureExt;
use serde_json::Value;
use std::panic::AssertUnwindSafe;

/// Entry point for every command but VERSION (answered by the skel).
pub fn run(env: &Env, stdin: &[u8]) -> std::result::Result<Option<Value>, CniError> {
    let l = config::load(stdin)?;
    l.version.allows(env.command)?;
    crate::logging::init(l.conf.log_file.as_deref(), l.log_level);
    tracing::info!(
        command = env.command.as_str(),
        container = %env.container_id,
        ifname = %env.ifname,
        netns = %env.netns,
        "start"
    );
    // The one runtime of the process: rtnetlink is async, the plugin needs no threads.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| CniError::new(CniError::IO, format!("starting the async runtime: {e}")))?;
    let out = rt.block_on(async {
        let cmd = async {
            match env.command {
                Command::Add => add::add(&l, env, stdin).await.map(Some),
                Command::Del => del(&l, env, stdin).await.map(|_| None),
                Command::Check => check(&l, env, stdin).await.map(|_| None),
                Command::Gc => gc(&l, env, stdin).map(|_| None),
                Command::Status => status(&l, env, stdin).map(|_| None),
                Command::Version => Ok(Some(cni_spec::version::version_info())),
            }
        };
        // A panic anywhere (ADD catches its own, to undo first) is a CNI error, not an abort.
        AssertUnwindSafe(cmd)
            .catch_unwind()
            .await
            .unwrap_or_else(|p| Err(PluginError::Panic(crate::error::panic_message(&*p))))
    });
    out.map_err(|e| {
        tracing::error!(command = env.command.as_str(), container = %env.container_id, "{e}");
        e.into()
    })
}

/// DEL: idempotent, and it goes on past each failure. The pair goes by its host end (no need to
/// enter the pod; if the pod namespace is gone, so is the pair), and the addresses are always
/// released.
async fn del(l: &Loaded, env: &Env, stdin: &[u8]) -> Result<()> {
    let mut errors = ErrorList::default();
    let host_name = veth::host_name(&l.conf.base.name, &env.container_id, &env.ifname);
    if let Some(host) = errors.keep(Nl::connect().map_err(PluginError::from)) {
        if let Some(gone) = errors.keep(veth::delete(&host, &host_name).await) {
            tracing::debug!(host_name, deleted = gone, "veth");
        }
    }
    if let Some(ipam) = errors.keep(Ipam::new(l, env)) {
        errors.keep(ipam.del(l, env, stdin));
    }
    errors.into_result()
}

async fn check(l: &Loaded, env: &Env, stdin: &[u8]) -> Result<()> {
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
    let home = NetNs::current()?;
    let pod_ns = NetNs::open_pod(&env.netns, &home)?;
    let pod_mac = mac::parse_unicast(&prev.interfaces[pod_idx].mac);
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
    if netlink::controller(&port) != Some(br.header.index) {
        return Err(PluginError::Check(format!(
            "{host_name} is not a port of {}",
            l.conf.bridge
        )));
    }
    let pod = pod_ns.run_in(&home, Nl::connect)??;
    pod::check(&pod, &env.ifname, pod_mac, &ips, &prev.routes).await
}

fn gc(l: &Loaded, env: &Env, stdin: &[u8]) -> Result<()> {
    Ipam::new(l, env)?.gc(l, env, stdin)
}

fn status(l: &Loaded, env: &Env, stdin: &[u8]) -> Result<()> {
    Ipam::new(l, env)?.status(l, env, stdin)
}
