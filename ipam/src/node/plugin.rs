//! The standalone `cbrnet-ipam` CNI IPAM plugin: the same allocator as `cbrnet` uses in-process,
//! for other main plugins (e.g. the reference `bridge`).

use super::allocator::{Network, Owner};
use super::config::{requested_ips, IpamConf};
use cni_spec::{env::Command, CniError, CniResult, Env, NetConfBase, Version};
use serde::Deserialize;
use serde_json::Value;

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
    version.allows(env.command)?;
    let ipam = IpamConf::from_value(&conf.ipam)?;
    ipam.validate()?;
    super::reservations::validate_network_name(&conf.base.name)?;
    let net = Network {
        conf: &ipam,
        name: &conf.base.name,
    };
    let owner = Owner::new(&env.container_id, &env.ifname);
    match env.command {
        Command::Add => {
            // Reclaim needs to tell a vanished pod, which only the main plugin knows how to do.
            let (a, pools, _) = net.add(&owner, &requested_ips(&raw, &env.args)?, None)?;
            let result = CniResult {
                ips: a.ips,
                routes: pools.routes,
                ..Default::default()
            };
            return Ok(Some(result.to_value(version)));
        }
        Command::Del => {
            net.release(&owner)?;
        }
        Command::Check => {
            let prev = conf
                .base
                .prev_result
                .as_ref()
                .map(CniResult::from_value)
                .transpose()?
                .unwrap_or_default();
            let ips: Vec<_> = prev.ips.iter().map(|c| c.address.ip()).collect();
            net.check(&owner, &ips)?;
        }
        Command::Gc => {
            net.gc(&cni_spec::valid_attachments(&raw)?)?;
        }
        Command::Status => net.status()?,
        // The skel answers VERSION before it gets here; answering again costs nothing.
        Command::Version => return Ok(Some(cni_spec::version::version_info())),
    }
    Ok(None)
}
