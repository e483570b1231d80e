//! IPAM for `cbrnet`: `cbrnet-ipam` in-process (no exec on the ADD path), anything else
//! delegated to its binary in CNI_PATH as the spec says.

use crate::config::Loaded;
use crate::error::{ErrorList, PluginError, Result};
use crate::plan::Granted;
use cbrnet_bridge::port;
use cbrnet_ipam::node::allocator::Network;
use cbrnet_ipam::node::config::requested_ips;
use cbrnet_ipam::node::reservations::Adding;
use cbrnet_ipam::{IpamConf, Owner};
use cni_spec::{env::Command, CniError, CniResult, Env};
use serde_json::Value;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Stdio;

pub enum Ipam<'a> {
    InProcess(&'a IpamConf),
    Delegated(PathBuf),
}

/// What IPAM gave an ADD, and what it takes to give it back if the ADD fails later.
pub struct Reservation {
    pub granted: Granted,
    /// In-process: the addresses this ADD reserved (not those the attachment already held).
    new: Vec<IpAddr>,
    /// In-process with reclaim on: marks the ADD as running until the reservation is dropped.
    _adding: Option<Adding>,
}

impl Ipam<'_> {
    pub fn new<'a>(l: &'a Loaded, env: &Env) -> Result<Ipam<'a>> {
        if let Some(c) = &l.in_process_ipam {
            return Ok(Ipam::InProcess(c));
        }
        env.path
            .iter()
            .map(|d| d.join(&l.ipam_type))
            .find(|p| p.is_file())
            .map(Ipam::Delegated)
            .ok_or_else(|| {
                CniError::invalid_config(format!("IPAM plugin {:?} is not in CNI_PATH", l.ipam_type)).into()
            })
    }

    pub fn add(&self, l: &Loaded, env: &Env, stdin: &[u8]) -> Result<Reservation> {
        match self {
            Ipam::InProcess(c) => {
                let net = net(c, l);
                // A pod is gone when the host end of its veth pair is.
                let is_gone =
                    |o: &Owner| !port::exists(&port::host_veth_name(net.name, &o.container_id, &o.ifname));
                let requested = requested_ips(&l.raw, &env.args)?;
                let (a, pools, adding) = net.add(&owner(env), &requested, Some(&is_gone))?;
                for r in &a.reclaimed {
                    tracing::warn!(
                        network = net.name,
                        "reclaimed {} of {}: its pod is gone",
                        r.ip,
                        r.owner
                    );
                }
                let result = CniResult {
                    ips: a.ips,
                    routes: c.routes.clone().unwrap_or_default(),
                    ..Default::default()
                };
                Ok(Reservation {
                    granted: Granted {
                        result,
                        subnet_file: pools.subnet_file,
                    },
                    new: a.new,
                    _adding: adding,
                })
            }
            Ipam::Delegated(p) => {
                let out = exec(p, Command::Add, env, stdin)?
                    .ok_or_else(|| CniError::decode(format!("{} returned no result", p.display())))?;
                Ok(Reservation {
                    granted: Granted {
                        result: CniResult::from_value(&out)?,
                        subnet_file: None,
                    },
                    new: Vec::new(),
                    _adding: None,
                })
            }
        }
    }

    /// Takes back what a failed ADD reserved, going on past each failure.
    pub fn undo(&self, r: &Reservation, l: &Loaded, env: &Env, stdin: &[u8], errors: &mut ErrorList) {
        match self {
            Ipam::InProcess(c) => {
                errors.keep(net(c, l).undo(&owner(env), &r.new).map_err(PluginError::from));
            }
            Ipam::Delegated(p) => {
                errors.keep(exec(p, Command::Del, env, stdin));
            }
        }
    }

    pub fn del(&self, l: &Loaded, env: &Env, stdin: &[u8]) -> Result<()> {
        match self {
            Ipam::InProcess(c) => {
                let released = net(c, l).release(&owner(env))?;
                tracing::debug!(?released, "released");
                Ok(())
            }
            Ipam::Delegated(p) => exec(p, Command::Del, env, stdin).map(|_| ()),
        }
    }

    pub fn check(&self, l: &Loaded, env: &Env, stdin: &[u8], ips: &[IpAddr]) -> Result<()> {
        match self {
            Ipam::InProcess(c) => Ok(net(c, l).check(&owner(env), ips)?),
            Ipam::Delegated(p) => exec(p, Command::Check, env, stdin).map(|_| ()),
        }
    }

    pub fn gc(&self, l: &Loaded, env: &Env, stdin: &[u8]) -> Result<()> {
        match self {
            Ipam::InProcess(c) => {
                for (ip, owner) in net(c, l).gc(&cni_spec::valid_attachments(&l.raw)?)? {
                    tracing::info!("gc released {ip} of {owner}");
                }
                Ok(())
            }
            Ipam::Delegated(p) => exec(p, Command::Gc, env, stdin).map(|_| ()),
        }
    }

    pub fn status(&self, l: &Loaded, env: &Env, stdin: &[u8]) -> Result<()> {
        match self {
            Ipam::InProcess(c) => Ok(net(c, l).status()?),
            Ipam::Delegated(p) => exec(p, Command::Status, env, stdin).map(|_| ()),
        }
    }
}

fn net<'a>(c: &'a IpamConf, l: &'a Loaded) -> Network<'a> {
    Network {
        conf: c,
        name: &l.conf.base.name,
    }
}

fn owner(env: &Env) -> Owner {
    Owner::new(&env.container_id, &env.ifname)
}

/// Runs a delegated plugin as the spec says: our environment with CNI_COMMAND set, the network
/// config on stdin. Its CNI error, if any, is passed through unchanged.
pub fn exec(plugin: &std::path::Path, cmd: Command, env: &Env, stdin: &[u8]) -> Result<Option<Value>> {
    let what = format!("running {} {}", plugin.display(), cmd.as_str());
    let mut child = std::process::Command::new(plugin)
        .env("CNI_COMMAND", cmd.as_str())
        .env("CNI_CONTAINERID", &env.container_id)
        .env("CNI_IFNAME", &env.ifname)
        .env("CNI_NETNS", &env.netns)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(PluginError::io(what.clone()))?;
    child
        .stdin
        .take()
        .expect("the plugin's stdin is piped above")
        .write_all(stdin)
        .map_err(PluginError::io(what.clone()))?;
    let out = child.wait_with_output().map_err(PluginError::io(what.clone()))?;
    let doc: Option<Value> = if out.stdout.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(
            serde_json::from_slice(&out.stdout)
                .map_err(|e| CniError::decode(format!("{what}: bad output: {e}")))?,
        )
    };
    if out.status.success() {
        return Ok(doc);
    }
    let err = doc.as_ref().and_then(|d| {
        Some(
            CniError::new(d.get("code")?.as_u64()? as u32, d.get("msg")?.as_str()?)
                .with_details(d.get("details").and_then(Value::as_str).unwrap_or_default()),
        )
    });
    Err(err
        .unwrap_or_else(|| CniError::new(CniError::IO, format!("{what}: exited with {}", out.status)))
        .into())
}
