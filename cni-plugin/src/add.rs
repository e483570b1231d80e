//! ADD: judge everything that can be judged without touching the node, reserve the addresses,
//! plan, apply the plan while recording what was done, and undo exactly that if any step fails.

use crate::config::Loaded;
use crate::error::{ErrorList, PluginError, Result};
use crate::ipam::Ipam;
use crate::netns::NetNs;
use crate::plan::{self, AddPlan};
use crate::{pod, veth};
use cbrnet_bridge::{bridge, forwarding, masq, Nl};
use cni_spec::{CniResult, Env};
use serde_json::Value;

/// What an ADD changed that belongs to this attachment alone, for its undo. The bridge, its
/// addresses, forwarding and the masquerade table are shared by every pod and stay.
#[derive(Debug, Default)]
pub struct Done {
    /// The host end of the veth pair this ADD created.
    pub veth: Option<String>,
}

/// Lets the crash test stop the plugin at a named point of ADD (`CBRNET_TEST_STOP_AT`), so it can
/// kill it there and show that DEL cleans up.
fn stop_point(name: &str) {
    if std::env::var_os("CBRNET_TEST_STOP_AT").is_some_and(|v| v == name) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
    }
}

pub async fn add(l: &Loaded, env: &Env, stdin: &[u8]) -> Result<Value> {
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
    let host = Nl::connect()?;

    let reservation = ipam.add(l, env, stdin)?;
    stop_point("reserved");
    let mut done = Done::default();
    let out = match plan::plan(l, env, &reservation.granted) {
        Ok(p) => apply(&p, &host, &pod_ns, &home, &mut done).await,
        Err(e) => Err(e),
    };
    match out {
        Ok(result) => Ok(match prev {
            Some(prev) => plan::chain(prev, result),
            None => result,
        }
        .to_value(l.version)),
        Err(error) => {
            let mut undo = ErrorList::default();
            if let Some(name) = &done.veth {
                undo.keep(veth::delete(&host, name).await);
            }
            ipam.undo(&reservation, l, env, stdin, &mut undo);
            if undo.is_empty() {
                return Err(error);
            }
            for e in &undo.0 {
                tracing::error!(container = %env.container_id, "undoing the failed ADD: {e}");
            }
            Err(PluginError::AddAndUndo {
                error: Box::new(error),
                undo,
            })
        }
    }
}

/// Carries out the plan: bridge, veth, pod side, masquerading. Records in `done` what the undo
/// must take back.
async fn apply(p: &AddPlan, host: &Nl, pod_ns: &NetNs, home: &NetNs, done: &mut Done) -> Result<CniResult> {
    let br = bridge::ensure(host, &p.bridge).await?;
    for (gw, subnet) in &p.gateways {
        bridge::ensure_address(host, &br, *gw, *subnet).await?;
    }
    if let Some(v6) = p.forwarding {
        forwarding::enable(v6)?;
    }
    let mtu = p.veth.mtu.unwrap_or(br.mtu);
    veth::create(host, &p.veth, mtu, br.index, pod_ns.fd()).await?;
    done.veth = Some(p.veth.host_name.clone());
    stop_point("veth");
    if p.hairpin {
        veth::set_hairpin(host, &p.veth.host_name, true).await?;
    }
    let pod = pod_ns.run_in(home, Nl::connect)??;
    pod::configure(&pod, &p.veth.pod_ifname, &p.ips, &p.routes).await?;
    if let Some(m) = &p.masq {
        masq::ensure(&m.table, m.subnet, m.cluster)?;
    }
    Ok(p.result(&br))
}
