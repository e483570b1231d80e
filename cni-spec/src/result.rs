//! Results: one in-memory type, parsed from and written as any supported version.
//!
//! 0.3.0 through 1.1.0 share a shape; they differ in `ips[].version` (present before 1.0.0) and in
//! the fields 1.1.0 added to interfaces and routes, which older versions must not see.

use crate::version::Version;
use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub socket_path: String,
    #[serde(default, rename = "pciID", skip_serializing_if = "String::is_empty")]
    pub pci_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Address with the prefix length of its subnet, e.g. `10.244.1.5/24`.
    pub address: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    pub dst: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u8>,
}

impl Route {
    pub fn new(dst: IpNetwork, gw: Option<IpAddr>) -> Route {
        Route {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

/// The default route of each gateway's family, via the first gateway of that family, unless
/// `routes` already has a route to that family's default destination. The one rule for default
/// routes, used by `cbrnet` (`isDefaultGateway`) and by `cbrnet-ipam` (no `routes` configured).
pub fn add_default_routes(routes: &mut Vec<Route>, gateways: impl IntoIterator<Item = IpAddr>) {
    for gw in gateways {
        let any = match gw {
            IpAddr::V4(_) => {
                IpNetwork::V4(Ipv4Network::new(Ipv4Addr::UNSPECIFIED, 0).expect("a /0 prefix is valid"))
            }
            IpAddr::V6(_) => {
                IpNetwork::V6(Ipv6Network::new(Ipv6Addr::UNSPECIFIED, 0).expect("a /0 prefix is valid"))
            }
        };
        if !routes.iter().any(|r| r.dst == any) {
            routes.push(Route::new(any, Some(gw)));
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        *self == Dns::default()
    }
}

impl CniResult {
    /// Parses a result of any supported version (prevResult, a delegated IPAM plugin's answer).
    /// Fields we do not know, like 0.x's `ips[].version`, are dropped: they are derived again on
    /// output.
    pub fn from_value(v: &Value) -> Result<CniResult, crate::CniError> {
        CniResult::deserialize(v)
            .map_err(|e| crate::CniError::decode(format!("cannot decode CNI result: {e}")))
    }

    /// The result as `version` spells it, with `cniVersion` set. Empty lists are left out, never
    /// written as `null`.
    pub fn to_value(&self, version: Version) -> Value {
        let mut v =
            serde_json::to_value(self).expect("a CniResult always serializes: plain structs, string keys");
        let mut each = |key: &str, f: &mut dyn FnMut(usize, &mut serde_json::Map<String, Value>)| {
            if let Some(list) = v.get_mut(key).and_then(Value::as_array_mut) {
                for (i, item) in list.iter_mut().enumerate() {
                    if let Some(o) = item.as_object_mut() {
                        f(i, o);
                    }
                }
            }
        };
        if !version.has_1_1_fields() {
            each("interfaces", &mut |_, o| {
                for k in ["mtu", "socketPath", "pciID"] {
                    o.remove(k);
                }
            });
            each("routes", &mut |_, o| {
                for k in ["mtu", "advmss", "priority", "table", "scope"] {
                    o.remove(k);
                }
            });
        }
        if version.ip_has_version_field() {
            each("ips", &mut |i, o| {
                let family = self.ips.get(i).is_some_and(|c| c.address.is_ipv4());
                o.insert("version".into(), if family { "4" } else { "6" }.into());
            });
        }
        v["cniVersion"] = version.as_str().into();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: "0a:58:0a:f4:01:05".into(),
                mtu: Some(1500),
                sandbox: "/run/netns/p".into(),
                ..Default::default()
            }],
            ips: vec![IpConfig {
                address: "10.244.1.5/24".parse().unwrap(),
                gateway: Some("10.244.1.1".parse().unwrap()),
                interface: Some(0),
            }],
            routes: vec![Route {
                priority: Some(5),
                ..Route::new("0.0.0.0/0".parse().unwrap(), None)
            }],
            dns: Dns::default(),
        }
    }

    #[test]
    fn default_routes_one_per_family_first_gateway_wins() {
        let gw = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut r = vec![Route::new("10.0.0.0/8".parse().unwrap(), None)];
        add_default_routes(&mut r, [gw("10.1.0.1"), gw("fd00::1"), gw("10.2.0.1")]);
        let dsts: Vec<String> = r.iter().map(|r| format!("{} {:?}", r.dst, r.gw)).collect();
        assert_eq!(
            dsts,
            [
                "10.0.0.0/8 None",
                "0.0.0.0/0 Some(10.1.0.1)",
                "::/0 Some(fd00::1)"
            ]
        );
        // a configured default route is kept as it is
        let mut r = vec![Route::new("0.0.0.0/0".parse().unwrap(), Some(gw("10.9.9.9")))];
        add_default_routes(&mut r, [gw("10.1.0.1")]);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].gw, Some(gw("10.9.9.9")));
    }

    #[test]
    fn old_versions_get_ip_version_and_lose_1_1_fields() {
        let v = sample().to_value(Version::V0_3_1);
        assert_eq!(v["cniVersion"], "0.3.1");
        assert_eq!(v["ips"][0]["version"], "4");
        assert!(v["interfaces"][0].get("mtu").is_none());
        assert!(v["routes"][0].get("priority").is_none());
        assert!(v.get("dns").is_none());
    }

    #[test]
    fn an_empty_result_has_no_null_lists() {
        for version in Version::ALL {
            let v = CniResult::default().to_value(version);
            assert_eq!(v, serde_json::json!({"cniVersion": version.as_str()}));
        }
    }

    #[test]
    fn v1_1_keeps_everything_and_round_trips() {
        let r = sample();
        let v = r.to_value(Version::V1_1_0);
        assert!(v["ips"][0].get("version").is_none());
        assert_eq!(v["interfaces"][0]["mtu"], 1500);
        assert_eq!(CniResult::from_value(&v).unwrap(), r);
        // a 0.4.0 document parses too
        let old = r.to_value(Version::V0_4_0);
        assert_eq!(CniResult::from_value(&old).unwrap().ips, r.ips);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn net() -> impl Strategy<Value = IpNetwork> {
            prop_oneof![
                (any::<u32>(), 0u8..=32)
                    .prop_map(|(a, p)| IpNetwork::new(Ipv4Addr::from(a).into(), p).unwrap()),
                (any::<u128>(), 0u8..=128)
                    .prop_map(|(a, p)| IpNetwork::new(Ipv6Addr::from(a).into(), p).unwrap()),
            ]
        }

        fn ip() -> impl Strategy<Value = IpAddr> {
            prop_oneof![
                any::<u32>().prop_map(|a| IpAddr::V4(a.into())),
                any::<u128>().prop_map(|a| IpAddr::V6(a.into()))
            ]
        }

        fn result() -> impl Strategy<Value = CniResult> {
            let iface = (
                "[a-z0-9]{1,15}",
                proptest::option::of(68u32..65535),
                "[a-z0-9/]{0,20}",
            )
                .prop_map(|(name, mtu, sandbox)| Interface {
                    name,
                    mtu,
                    sandbox,
                    ..Default::default()
                });
            let ipc = (net(), proptest::option::of(ip()), proptest::option::of(0usize..4)).prop_map(
                |(address, gateway, interface)| IpConfig {
                    address,
                    gateway,
                    interface,
                },
            );
            let route = (
                net(),
                proptest::option::of(ip()),
                proptest::option::of(any::<u32>()),
            )
                .prop_map(|(dst, gw, priority)| Route {
                    priority,
                    ..Route::new(dst, gw)
                });
            let dns = proptest::collection::vec("[0-9.]{1,15}", 0..3).prop_map(|nameservers| Dns {
                nameservers,
                ..Default::default()
            });
            (
                proptest::collection::vec(iface, 0..4),
                proptest::collection::vec(ipc, 0..4),
                proptest::collection::vec(route, 0..4),
                dns,
            )
                .prop_map(|(interfaces, ips, routes, dns)| CniResult {
                    interfaces,
                    ips,
                    routes,
                    dns,
                })
        }

        /// What survives writing in `v`: older versions lose the 1.1.0 fields.
        fn as_in(r: &CniResult, v: Version) -> CniResult {
            let mut r = r.clone();
            if !v.has_1_1_fields() {
                for i in &mut r.interfaces {
                    i.mtu = None;
                }
                for rt in &mut r.routes {
                    rt.priority = None;
                }
            }
            r
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]
            // Every result round-trips through every version's format, less what that version
            // cannot say.
            #[test]
            fn round_trips_in_every_version(r in result()) {
                for v in Version::ALL {
                    let back = CniResult::from_value(&r.to_value(v)).unwrap();
                    prop_assert_eq!(back, as_in(&r, v));
                }
            }

            // A result from another plugin is hostile: any JSON is parsed or refused, never a
            // panic.
            #[test]
            fn parsing_any_json_never_panics(s in "[\\[\\]{}:,\"a-z0-9. ]{0,80}") {
                if let Ok(v) = serde_json::from_str::<Value>(&s) {
                    let _ = CniResult::from_value(&v);
                }
            }
        }
    }
}
