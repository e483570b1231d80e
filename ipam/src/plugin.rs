//! The standalone `cbrnet-ipam` CNI IPAM plugin: the same allocator as `cbrnet` uses in-process,
//! for other main plugins (e.g. the reference `bridge`).

use crate::allocator::{self, Owner};
use crate::config::{requested_ips, IpamConf};
use crate::reservations::Store;
use cni_spec::{env::Command, CniError, CniResult, Env, NetConfBase, Version};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashSet;

#[derive(Deserialize)]
struct Conf {
    #[serde(flatten)]
    base: NetConfBase,
    #[serde(default)]
    ipam: Value,
}

pub fn handle(env: &Env, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    let (conf, raw): (Conf, Value) = cni_spec::parse_conf(stdin)?;
    let version = Version::parse(&conf.base.cni_version)?;
    let ipam = IpamConf::from_value(&conf.ipam)?;
    ipam.validate()?;
    crate::reservations::validate_network_name(&conf.base.name)?;
    let owner = Owner::new(&env.container_id, &env.ifname);
    match env.command {
        Command::Add => {
            let requested = requested_ips(&raw, &env.args)?;
            let pools = ipam.pools()?;
            let store = Store::open(ipam.data_dir(), &conf.base.name)?;
            let ips = allocator::allocate(&store, &pools, &owner, &requested)?.ips;
            let result = CniResult {
                ips,
                routes: pools.routes,
                ..Default::default()
            };
            Ok(Some(result.to_value(version)))
        }
        Command::Del => {
            if let Some(store) = Store::open_existing(ipam.data_dir(), &conf.base.name)? {
                allocator::release(&store, &owner)?;
            }
            Ok(None)
        }
        Command::Check => {
            if !version.has_check() {
                return Err(CniError::incompatible(format!(
                    "config version {version} does not allow CHECK"
                )));
            }
            let prev = conf
                .base
                .prev_result
                .as_ref()
                .map(CniResult::from_value)
                .transpose()?
                .unwrap_or_default();
            let ips: Vec<_> = prev.ips.iter().map(|c| c.address.ip()).collect();
            let store = Store::open_existing(ipam.data_dir(), &conf.base.name)?
                .ok_or_else(|| CniError::from(crate::IpamError::NotReserved(owner.to_string())))?;
            allocator::check(&store, &owner, &ips)?;
            Ok(None)
        }
        Command::Gc => {
            if !version.has_gc_status() {
                return Err(CniError::incompatible(format!(
                    "config version {version} does not allow GC"
                )));
            }
            let valid: HashSet<Owner> = cni_spec::valid_attachments(&raw)?
                .into_iter()
                .map(|a| Owner::new(&a.container_id, &a.ifname))
                .collect();
            if let Some(store) = Store::open_existing(ipam.data_dir(), &conf.base.name)? {
                allocator::gc(&store, &valid)?;
            }
            Ok(None)
        }
        Command::Status => {
            if !version.has_gc_status() {
                return Err(CniError::incompatible(format!(
                    "config version {version} does not allow STATUS"
                )));
            }
            status(&ipam)?;
            Ok(None)
        }
        Command::Version => unreachable!("answered by skel"),
    }
}

/// STATUS: can an ADD get an address now? Without a subnet, no (code 50).
pub fn status(ipam: &IpamConf) -> Result<(), CniError> {
    ipam.pools().map(|_| ()).map_err(|e| {
        let e = CniError::from(e);
        CniError::new(CniError::NOT_AVAILABLE, e.msg).with_details(e.details)
    })
}
