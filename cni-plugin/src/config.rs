//! The `cbrnet` network configuration.

use crate::error::Result;
use cni_spec::{env::validate_ifname, CniError, Dns, NetConfBase, Version};
use ipnetwork::IpNetwork;
use serde::Deserialize;
use serde_json::Value;
use std::path::PathBuf;

pub const IN_PROCESS_IPAM: &str = "cbrnet-ipam";

fn yes() -> bool {
    true
}
fn default_bridge() -> String {
    "cbr0".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RuntimeConfig {
    #[serde(default)]
    pub mac: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    #[serde(flatten)]
    pub base: NetConfBase,
    #[serde(default = "default_bridge")]
    pub bridge: String,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default = "yes")]
    pub hairpin_mode: bool,
    #[serde(default)]
    pub promisc_mode: bool,
    /// Give the pod interface an IPv6 link-local address even when the pod has no IPv6 address.
    #[serde(rename = "ipv6LinkLocal", default)]
    pub ipv6_link_local: bool,
    #[serde(default = "yes")]
    pub is_gateway: bool,
    #[serde(default = "yes")]
    pub is_default_gateway: bool,
    #[serde(default)]
    pub ip_masq: bool,
    #[serde(rename = "clusterCIDR", default)]
    pub cluster_cidr: Option<IpNetwork>,
    #[serde(default)]
    pub ipam: Value,
    #[serde(default)]
    pub dns: Option<Dns>,
    #[serde(default)]
    pub log_file: Option<PathBuf>,
    /// What goes to `logFile`: error, warn, info (default), debug, trace.
    #[serde(default)]
    pub log_level: Option<String>,
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
}

/// A parsed, validated config: everything an ADD needs to know before it touches the node.
pub struct Loaded {
    pub conf: NetConf,
    pub raw: Value,
    pub version: Version,
    pub ipam_type: String,
    /// The `ipam` section, parsed and validated, when it is served in-process.
    pub in_process_ipam: Option<cbrnet_ipam::IpamConf>,
    pub pod_mac: Option<[u8; 6]>,
    pub log_level: tracing::level_filters::LevelFilter,
}

pub fn load(stdin: &[u8]) -> Result<Loaded> {
    let (conf, raw): (NetConf, Value) = cni_spec::parse_conf(stdin)?;
    let version = Version::parse(&conf.base.cni_version)?;
    let invalid = |m: String| CniError::invalid_config(m);
    cbrnet_ipam::node::reservations::validate_network_name(&conf.base.name)?;
    validate_ifname(&conf.bridge).map_err(|e| invalid(e.msg.replace("CNI_IFNAME", "bridge")))?;
    if let Some(mtu) = conf.mtu {
        if !(68..=65535).contains(&mtu) {
            return Err(invalid(format!("mtu {mtu} is out of range (68-65535)")).into());
        }
    }
    let ipam_type = conf
        .ipam
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if ipam_type.is_empty() || ipam_type.contains('/') {
        return Err(invalid("ipam.type must name an IPAM plugin".into()).into());
    }
    let in_process_ipam = if ipam_type == IN_PROCESS_IPAM {
        let ipam = cbrnet_ipam::IpamConf::from_value(&conf.ipam)?;
        ipam.validate()?;
        Some(ipam)
    } else {
        None
    };
    let cluster_from_file = in_process_ipam.as_ref().is_some_and(|i| i.uses_subnet_file());
    // The subnet file may still bring clusterCIDR; ADD checks again once it has read it.
    if conf.ip_masq && conf.cluster_cidr.is_none() && !cluster_from_file {
        return Err(invalid("ipMasq needs clusterCIDR".into()).into());
    }
    let pod_mac = match &conf.runtime_config.mac {
        Some(m) => Some(
            cbrnet_bridge::mac::parse_unicast(m)
                .ok_or_else(|| invalid(format!("runtimeConfig.mac {m:?} is not a unicast MAC")))?,
        ),
        None => None,
    };
    let log_level = match &conf.log_level {
        None => tracing::level_filters::LevelFilter::INFO,
        Some(l) => crate::logging::parse_level(l)
            .ok_or_else(|| invalid(format!("logLevel {l:?} is not error, warn, info, debug or trace")))?,
    };
    Ok(Loaded {
        log_level,
        conf,
        raw,
        version,
        ipam_type,
        in_process_ipam,
        pod_mac,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A valid config with `extra` keys merged in.
    fn conf(extra: Value) -> Vec<u8> {
        let mut c = json!({
            "cniVersion": "1.0.0", "name": "n", "type": "cbrnet",
            "ipam": {"type": "cbrnet-ipam", "subnet": "10.1.0.0/24"},
        });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c.to_string().into_bytes()
    }

    #[test]
    fn defaults() {
        let l = load(&conf(json!({}))).unwrap();
        assert_eq!(l.conf.bridge, "cbr0");
        assert!(l.conf.hairpin_mode && l.conf.is_gateway && l.conf.is_default_gateway);
        assert!(!l.conf.ip_masq && !l.conf.promisc_mode);
        assert_eq!(l.pod_mac, None);
    }

    #[test]
    fn rejects() {
        let code = |s: &[u8]| cni_spec::CniError::from(load(s).err().unwrap()).code;
        assert_eq!(code(b"{"), 6);
        assert_eq!(code(&conf(json!({"cniVersion": "9.9.9"}))), 1);
        assert_eq!(code(&conf(json!({"ipam": null}))), 7);
        assert_eq!(code(&conf(json!({"name": "../x"}))), 7);
        assert_eq!(code(&conf(json!({"bridge": "waytoolongbridgename"}))), 7);
        assert_eq!(code(&conf(json!({"mtu": 67}))), 7);
        let ipam = json!({"type": "cbrnet-ipam", "subnet": "10.0.0.0/24", "rangeStart": "10.9.0.1"});
        assert_eq!(code(&conf(json!({ "ipam": ipam }))), 7);
        for mac in [
            "01:00:00:00:00:01",
            "00:00:00:00:00:00",
            "0a:58:0a",
            "zz:58:0a:f4:01:05",
        ] {
            assert_eq!(code(&conf(json!({"runtimeConfig": {"mac": mac}}))), 7, "{mac}");
        }
        let ok = load(&conf(json!({"runtimeConfig": {"mac": "0a:58:0a:f4:01:05"}}))).unwrap();
        assert_eq!(ok.pod_mac, Some([0x0a, 0x58, 0x0a, 0xf4, 1, 5]));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// A JSON value of any shape, a few levels deep.
        fn any_json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                "[a-z0-9./:-]{0,20}".prop_map(Value::from),
            ];
            leaf.prop_recursive(3, 16, 4, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                    proptest::collection::btree_map("[a-zA-Z]{1,8}", inner, 0..4)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        const KEYS: [&str; 15] = [
            "cniVersion",
            "name",
            "type",
            "bridge",
            "mtu",
            "hairpinMode",
            "promiscMode",
            "ipv6LinkLocal",
            "isGateway",
            "isDefaultGateway",
            "ipMasq",
            "clusterCIDR",
            "ipam",
            "dns",
            "runtimeConfig",
        ];

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]
            // Any bytes: a config or a CNI error, never a panic.
            #[test]
            fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
                let _ = load(&bytes);
            }

            // A valid config with any of its keys replaced by any JSON: a config or an error
            // with a code, never a panic.
            #[test]
            fn any_value_under_any_key_never_panics(key in 0usize..KEYS.len(), v in any_json()) {
                let mut c: Value = serde_json::from_slice(&conf(json!({}))).unwrap();
                c[KEYS[key]] = v;
                if let Err(e) = load(c.to_string().as_bytes()) {
                    prop_assert!(cni_spec::CniError::from(e).code != 0);
                }
            }
        }
    }
}
