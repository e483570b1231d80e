//! The `ipam` section of a network config, and the addresses a runtime asks for.

use super::error::IpamError;
use super::range::Range;
use crate::subnet_file::{self, SubnetFile};
use cni_spec::Route;
use ipnetwork::IpNetwork;
use serde::Deserialize;
use serde_json::Value;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// On tmpfs: cleared at boot, when every pod is gone too.
pub const DEFAULT_DATA_DIR: &str = "/run/cbrnet/ipam";
/// How long a reservation whose pod is gone is kept before reclaim may take it.
pub const DEFAULT_RECLAIM_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RangeConf {
    subnet: IpNetwork,
    range_start: Option<IpAddr>,
    range_end: Option<IpAddr>,
    gateway: Option<IpAddr>,
}

/// The `ipam` keys, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpamConf {
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    pub subnet: Option<IpNetwork>,
    pub subnet_file: Option<PathBuf>,
    pub range_start: Option<IpAddr>,
    pub range_end: Option<IpAddr>,
    pub gateway: Option<IpAddr>,
    ranges: Option<Vec<Vec<RangeConf>>>,
    pub routes: Option<Vec<Route>>,
    pub data_dir: Option<PathBuf>,
    /// `"60s"`, `"5m"`...; `"0"` turns reclaim off.
    pub reclaim_after: Option<String>,
}

/// What an ADD allocates from: one range set per address wanted (e.g. one IPv4, one IPv6), plus
/// the routes to hand back.
#[derive(Debug, Clone)]
pub struct Pools {
    pub range_sets: Vec<Vec<Range>>,
    pub routes: Vec<Route>,
    /// Present when the ranges came from the subnet file.
    pub subnet_file: Option<SubnetFile>,
}

impl Pools {
    /// May `ip` be handed out from one of these ranges?
    pub fn usable(&self, ip: IpAddr) -> bool {
        self.range_sets.iter().flatten().any(|r| r.usable(ip))
    }
}

impl IpamConf {
    pub fn from_value(ipam: &Value) -> Result<IpamConf, IpamError> {
        IpamConf::deserialize(ipam).map_err(|e| IpamError::Config(e.to_string()))
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.as_deref().unwrap_or(Path::new(DEFAULT_DATA_DIR))
    }

    pub fn subnet_file_path(&self) -> &Path {
        self.subnet_file
            .as_deref()
            .unwrap_or(Path::new(subnet_file::DEFAULT_PATH))
    }

    /// How old a reservation of a vanished pod must be before it is reclaimed; `None`: never.
    pub fn reclaim_after(&self) -> Result<Option<std::time::Duration>, IpamError> {
        match &self.reclaim_after {
            None => Ok(Some(DEFAULT_RECLAIM_AFTER)),
            Some(s) => {
                let d =
                    crate::duration::parse(s).map_err(|e| IpamError::Config(format!("reclaimAfter: {e}")))?;
                Ok((!d.is_zero()).then_some(d))
            }
        }
    }

    /// Does this config take its subnet from the subnet file?
    pub fn uses_subnet_file(&self) -> bool {
        self.subnet.is_none() && self.ranges.is_none()
    }

    /// Checks everything that can be checked without touching the node.
    pub fn validate(&self) -> Result<(), IpamError> {
        self.reclaim_after()?;
        if self.subnet.is_some() && self.ranges.is_some() {
            return Err(IpamError::Config("give either subnet or ranges, not both".into()));
        }
        if self.uses_subnet_file() {
            if self.range_start.is_some() || self.range_end.is_some() || self.gateway.is_some() {
                return Err(IpamError::Config(
                    "rangeStart, rangeEnd and gateway need subnet (the subnet file gives its own)".into(),
                ));
            }
            return Ok(());
        }
        self.range_sets(None).map(|_| ())
    }

    fn range_sets(&self, file: Option<&SubnetFile>) -> Result<Vec<Vec<Range>>, IpamError> {
        // One address of each family the node has a subnet of.
        if let Some(f) = file {
            return f
                .families()
                .into_iter()
                .map(|fam| {
                    let r = Range::new(fam.subnet, None, None, Some(fam.gateway)).map_err(|e| {
                        subnet_file::SubnetFileError::Invalid(
                            self.subnet_file_path().to_owned(),
                            e.to_string(),
                        )
                    })?;
                    Ok(vec![r])
                })
                .collect();
        }
        if let Some(subnet) = self.subnet {
            return Ok(vec![vec![Range::new(
                subnet,
                self.range_start,
                self.range_end,
                self.gateway,
            )?]]);
        }
        let sets = self.ranges.as_deref().unwrap_or_default();
        if sets.is_empty() || sets.iter().any(|s| s.is_empty()) {
            return Err(IpamError::Config(
                "ranges must be a non-empty list of non-empty lists".into(),
            ));
        }
        let sets: Vec<Vec<Range>> = sets
            .iter()
            .map(|set| {
                set.iter()
                    .map(|r| Range::new(r.subnet, r.range_start, r.range_end, r.gateway))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<_, _>>()?;
        // Ranges must not overlap anywhere, or one address could be handed out twice.
        let all: Vec<&Range> = sets.iter().flatten().collect();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                if a.contains(b.start) || a.contains(b.end) || b.contains(a.start) {
                    return Err(IpamError::Config(format!(
                        "ranges in {} and {} overlap",
                        a.subnet, b.subnet
                    )));
                }
            }
        }
        Ok(sets)
    }

    /// Resolves the pools for an ADD, reading the subnet file when the config names no subnet.
    pub fn pools(&self) -> Result<Pools, IpamError> {
        let file = if self.uses_subnet_file() {
            Some(SubnetFile::read(self.subnet_file_path())?)
        } else {
            None
        };
        let range_sets = self.range_sets(file.as_ref())?;
        let routes = match &self.routes {
            Some(r) => r.clone(),
            // The default route of each family we hand out, via that family's gateway.
            None => {
                let mut routes = Vec::new();
                cni_spec::add_default_routes(&mut routes, range_sets.iter().map(|set| set[0].gateway));
                routes
            }
        };
        Ok(Pools {
            range_sets,
            routes,
            subnet_file: file,
        })
    }
}

/// Addresses the runtime asked for: `CNI_ARGS` `IP=` (comma-separated), `args.cni.ips` and the
/// `ips` capability in `runtimeConfig`. Prefix lengths, where given, are dropped: the range decides.
pub fn requested_ips(conf: &Value, cni_args: &str) -> Result<Vec<IpAddr>, IpamError> {
    let mut out = Vec::new();
    let mut push = |s: &str| -> Result<(), IpamError> {
        let s = s.trim();
        let ip = s.split('/').next().unwrap_or(s);
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| IpamError::Config(format!("requested IP {s:?} is not an address")))?;
        if !out.contains(&ip) {
            out.push(ip);
        }
        Ok(())
    };
    if let Some(v) = cni_spec::env::cni_arg(cni_args, "IP") {
        for s in v.split(',').filter(|s| !s.is_empty()) {
            push(s)?;
        }
    }
    for list in [conf.pointer("/args/cni/ips"), conf.pointer("/runtimeConfig/ips")]
        .into_iter()
        .flatten()
    {
        let list = list
            .as_array()
            .ok_or_else(|| IpamError::Config("ips must be a list".into()))?;
        for s in list {
            push(
                s.as_str()
                    .ok_or_else(|| IpamError::Config("ips must be strings".into()))?,
            )?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reclaim_is_on_after_a_minute_unless_told_otherwise() {
        let conf = |extra: serde_json::Value| {
            let mut v = json!({"type":"cbrnet-ipam","subnet":"10.1.0.0/24"});
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            IpamConf::from_value(&v).unwrap()
        };
        let secs = |s: u64| Some(std::time::Duration::from_secs(s));
        assert_eq!(conf(json!({})).reclaim_after().unwrap(), secs(60));
        assert_eq!(
            conf(json!({"reclaimAfter": "5m"})).reclaim_after().unwrap(),
            secs(300)
        );
        assert_eq!(conf(json!({"reclaimAfter": "0"})).reclaim_after().unwrap(), None);
        assert!(conf(json!({"reclaimAfter": "soon"})).reclaim_after().is_err());
    }

    #[test]
    fn subnet_form_and_ranges_form() {
        let c = IpamConf::from_value(
            &json!({"type":"cbrnet-ipam","subnet":"10.1.0.0/24","rangeStart":"10.1.0.10"}),
        )
        .unwrap();
        c.validate().unwrap();
        let p = c.pools().unwrap();
        assert_eq!(p.range_sets[0][0].start.to_string(), "10.1.0.10");
        assert_eq!(p.routes[0].dst.to_string(), "0.0.0.0/0");
        let c =
            IpamConf::from_value(&json!({"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"fd00::/120"}]]}))
                .unwrap();
        assert_eq!(c.pools().unwrap().range_sets.len(), 2);
        assert_eq!(c.pools().unwrap().routes.len(), 2);
        let c =
            IpamConf::from_value(&json!({"ranges":[[{"subnet":"10.1.0.0/24"},{"subnet":"10.1.0.128/25"}]]}))
                .unwrap();
        assert!(c.validate().is_err());
    }

    #[test]
    fn missing_subnet_file_is_no_subnet() {
        let c = IpamConf::from_value(&json!({"subnetFile":"/nonexistent/cbrnet/subnet.json"})).unwrap();
        c.validate().unwrap();
        assert!(matches!(
            c.pools(),
            Err(IpamError::SubnetFile(subnet_file::SubnetFileError::Missing(_)))
        ));
    }

    #[test]
    fn requested_from_all_sources() {
        let conf = json!({"args":{"cni":{"ips":["10.1.0.7"]}},"runtimeConfig":{"ips":["10.1.0.8/24"]}});
        let ips = requested_ips(&conf, "IgnoreUnknown=1;IP=10.1.0.6,fd00::6").unwrap();
        assert_eq!(
            ips.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
            ["10.1.0.6", "fd00::6", "10.1.0.7", "10.1.0.8"]
        );
    }
}
