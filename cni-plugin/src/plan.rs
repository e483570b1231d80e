//! ADD, worked out before anything is done: the bridge, the veth pair, the pod's addresses and
//! routes, masquerading and the result, all derived from the config, the environment and what
//! IPAM gave. Pure, so that every config key's effect is tested without namespaces; `add` carries
//! the plan out.

use crate::config::Loaded;
use crate::error::Result;
use crate::veth;
use cbrnet_bridge::{bridge, mac, masq};
use cbrnet_ipam::SubnetFile;
use cni_spec::{CniError, CniResult, Dns, Env, Interface, IpConfig, Route};
use ipnetwork::IpNetwork;
use std::net::IpAddr;

/// The MTU of a bridge cbrnet creates when neither the config nor the subnet file gives one.
pub const DEFAULT_MTU: u32 = 1500;

/// What IPAM gave an ADD.
#[derive(Debug, Clone, Default)]
pub struct Granted {
    pub result: CniResult,
    /// The node's subnet file, when the addresses came from it.
    pub subnet_file: Option<SubnetFile>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AddPlan {
    pub bridge: bridge::Spec,
    /// Addresses to put on the bridge (`isGateway`): each gateway with its subnet's prefix.
    pub gateways: Vec<(IpAddr, IpNetwork)>,
    /// Turn IP forwarding on (`isGateway`); `Some(true)` for IPv6 too.
    pub forwarding: Option<bool>,
    pub veth: VethPlan,
    pub hairpin: bool,
    /// The pod's addresses, and its routes (IPAM's, plus the default routes of `isDefaultGateway`).
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub masq: Option<MasqPlan>,
    pub dns: Dns,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VethPlan {
    pub host_name: String,
    pub host_mac: [u8; 6],
    pub pod_ifname: String,
    pub pod_mac: [u8; 6],
    /// `None`: the bridge's MTU.
    pub mtu: Option<u32>,
    /// The pod's namespace path, for the result.
    pub sandbox: String,
    /// Whether the pod interface gets the kernel's IPv6 link-local address: with an IPv6 address
    /// or `ipv6LinkLocal`. An IPv4 pod without one sends no IPv6 multicast, which the bridge would
    /// flood to every other pod.
    pub pod_link_local: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MasqPlan {
    pub table: String,
    /// One per family.
    pub rules: Vec<masq::Masq>,
}

/// Works out the ADD of attachment `env` on network `l` with the addresses in `got`.
pub fn plan(l: &Loaded, env: &Env, got: &Granted) -> Result<AddPlan> {
    let c = &l.conf;
    let ips = &got.result.ips;
    if ips.is_empty() {
        return Err(CniError::invalid_config("IPAM returned no address").into());
    }
    let file = got.subnet_file.as_ref();
    let gateways: Vec<(IpAddr, IpNetwork)> = ips
        .iter()
        .filter_map(|ip| Some((ip.gateway?, ip.address)))
        .collect();
    let v4_gateway = gateways.iter().map(|g| g.0).find(IpAddr::is_ipv4);
    let mtu = c.mtu.or(file.and_then(|f| f.mtu));

    let mut routes = got.result.routes.clone();
    if c.is_default_gateway {
        cni_spec::add_default_routes(&mut routes, gateways.iter().map(|g| g.0));
    }

    // One rule per family the pod has an address and a cluster CIDR of: the config's
    // `clusterCIDR` for its family, the subnet file's for each of its families.
    let masq = if c.ip_masq {
        let file_cidrs: Vec<IpNetwork> = file
            .map(|f| f.families().iter().filter_map(|fam| fam.cluster_cidr).collect())
            .unwrap_or_default();
        let mut rules: Vec<masq::Masq> = Vec::new();
        for ip in ips {
            let a = ip.address;
            let cluster = c
                .cluster_cidr
                .filter(|cc| cc.is_ipv4() == a.is_ipv4())
                .or_else(|| file_cidrs.iter().copied().find(|cc| cc.is_ipv4() == a.is_ipv4()));
            let Some(cluster) = cluster else { continue };
            let subnet = IpNetwork::new(a.network(), a.prefix())
                .map_err(|e| CniError::invalid_config(format!("IPAM address {a}: {e}")))?;
            if !rules.iter().any(|r| r.subnet == subnet) {
                rules.push(masq::Masq { subnet, cluster });
            }
        }
        if rules.is_empty() {
            return Err(CniError::invalid_config(
                "ipMasq needs a clusterCIDR (in the config or the subnet file) of the family of one of \
                 the pod's addresses",
            )
            .into());
        }
        Some(MasqPlan {
            table: masq::table_name(&c.base.name),
            rules,
        })
    } else {
        None
    };

    let attachment = [c.base.name.as_str(), &env.container_id, &env.ifname];
    let pod_mac = l.pod_mac.unwrap_or_else(|| {
        match ips.iter().find_map(|c| match c.address.ip() {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        }) {
            Some(v4) => mac::from_ipv4(v4),
            None => mac::from_hash(mac::fnv1a(&[attachment[0], attachment[1], attachment[2], "pod"])),
        }
    });
    Ok(AddPlan {
        bridge: bridge::Spec {
            name: c.bridge.clone(),
            mtu: mtu.unwrap_or(DEFAULT_MTU),
            mac: mac::for_bridge(v4_gateway, &c.bridge),
            promisc: c.promisc_mode,
        },
        gateways: if c.is_gateway {
            gateways.clone()
        } else {
            Vec::new()
        },
        forwarding: c.is_gateway.then(|| gateways.iter().any(|g| g.0.is_ipv6())),
        veth: VethPlan {
            host_name: veth::host_name(attachment[0], attachment[1], attachment[2]),
            host_mac: mac::from_hash(mac::fnv1a(&[attachment[0], attachment[1], attachment[2], "host"])),
            pod_ifname: env.ifname.clone(),
            pod_mac,
            mtu,
            sandbox: env.netns.clone(),
            pod_link_local: c.ipv6_link_local || ips.iter().any(|ip| ip.address.is_ipv6()),
        },
        hairpin: c.hairpin_mode,
        ips: ips.clone(),
        routes,
        masq,
        dns: c.dns.clone().unwrap_or_else(|| got.result.dns.clone()),
    })
}

impl AddPlan {
    /// The result of the carried-out plan, given the bridge as the kernel has it.
    pub fn result(&self, bridge: &bridge::Bridge) -> CniResult {
        let mtu = self.veth.mtu.unwrap_or(bridge.mtu);
        CniResult {
            interfaces: vec![
                Interface {
                    name: bridge.name.clone(),
                    mac: mac::format(&bridge.mac),
                    ..Default::default()
                },
                Interface {
                    name: self.veth.host_name.clone(),
                    mac: mac::format(&self.veth.host_mac),
                    mtu: Some(mtu),
                    ..Default::default()
                },
                Interface {
                    name: self.veth.pod_ifname.clone(),
                    mac: mac::format(&self.veth.pod_mac),
                    mtu: Some(mtu),
                    sandbox: self.veth.sandbox.clone(),
                    ..Default::default()
                },
            ],
            ips: self
                .ips
                .iter()
                .map(|ip| IpConfig {
                    interface: Some(2),
                    ..ip.clone()
                })
                .collect(),
            routes: self.routes.clone(),
            dns: self.dns.clone(),
        }
    }
}

/// Appends our result to a previous plugin's (conflist chaining), renumbering our interfaces.
pub fn chain(mut prev: CniResult, ours: CniResult) -> CniResult {
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

#[cfg(test)]
mod tests {
    use super::*;
    use cni_spec::env::Command;
    use serde_json::{json, Value};

    fn loaded(extra: Value) -> Loaded {
        let mut c = json!({
            "cniVersion": "1.1.0", "name": "net1", "type": "cbrnet",
            "ipam": {"type": "cbrnet-ipam", "subnet": "10.1.0.0/24"},
        });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        crate::config::load(c.to_string().as_bytes()).unwrap()
    }

    fn env() -> Env {
        Env {
            command: Command::Add,
            container_id: "c1".into(),
            netns: "/run/netns/p1".into(),
            ifname: "eth0".into(),
            args: String::new(),
            path: Vec::new(),
        }
    }

    fn ip(addr: &str, gw: Option<&str>) -> IpConfig {
        IpConfig {
            address: addr.parse().unwrap(),
            gateway: gw.map(|g| g.parse().unwrap()),
            interface: None,
        }
    }

    fn granted(ips: Vec<IpConfig>) -> Granted {
        Granted {
            result: CniResult {
                ips,
                ..Default::default()
            },
            subnet_file: None,
        }
    }

    fn v4() -> Granted {
        granted(vec![ip("10.1.0.5/24", Some("10.1.0.1"))])
    }

    /// The bridge as the kernel reports it.
    fn cbr0(mtu: u32) -> bridge::Bridge {
        bridge::Bridge {
            name: "cbr0".into(),
            index: 3,
            mac: [0x0a, 0x58, 10, 1, 0, 1],
            mtu,
            created: false,
            ipv4: None,
        }
    }

    fn plan_of(extra: Value, got: &Granted) -> Result<AddPlan> {
        plan(&loaded(extra), &env(), got)
    }

    fn code(r: Result<AddPlan>) -> u32 {
        CniError::from(r.unwrap_err()).code
    }

    #[test]
    fn defaults_make_a_gateway_bridge_and_a_default_route() {
        let p = plan_of(json!({}), &v4()).unwrap();
        assert_eq!(p.bridge.name, "cbr0");
        assert_eq!(
            p.bridge.mac,
            [0x0a, 0x58, 10, 1, 0, 1],
            "0a:58 + the IPv4 gateway"
        );
        assert_eq!(p.bridge.mtu, DEFAULT_MTU);
        assert!(!p.bridge.promisc);
        assert_eq!(
            p.gateways,
            [("10.1.0.1".parse().unwrap(), "10.1.0.5/24".parse().unwrap())]
        );
        assert_eq!(p.forwarding, Some(false));
        assert!(p.hairpin);
        assert_eq!(
            p.veth.pod_mac,
            [0x0a, 0x58, 10, 1, 0, 5],
            "0a:58 + the pod's IPv4 address"
        );
        assert_eq!(p.veth.host_name, veth::host_name("net1", "c1", "eth0"));
        assert_eq!(p.veth.mtu, None, "the bridge's");
        assert_eq!(p.veth.sandbox, "/run/netns/p1");
        assert_eq!(
            p.routes,
            [Route::new(
                "0.0.0.0/0".parse().unwrap(),
                Some("10.1.0.1".parse().unwrap())
            )]
        );
        assert_eq!(p.masq, None);
        // the same attachment always gets the same names and MACs
        assert_eq!(plan_of(json!({}), &v4()).unwrap(), p);
    }

    #[test]
    fn ipv6_link_local_only_with_an_ipv6_address_or_the_key() {
        assert!(!plan_of(json!({}), &v4()).unwrap().veth.pod_link_local);
        assert!(
            plan_of(json!({"ipv6LinkLocal": true}), &v4())
                .unwrap()
                .veth
                .pod_link_local
        );
        let v6 = granted(vec![ip("fd00::5/64", Some("fd00::1"))]);
        assert!(plan_of(json!({}), &v6).unwrap().veth.pod_link_local);
        let bad = json!({"cniVersion": "1.1.0", "name": "n", "type": "cbrnet", "ipv6LinkLocal": "yes"});
        let e = crate::config::load(bad.to_string().as_bytes()).err().unwrap();
        assert_eq!(CniError::from(e).code, 7);
    }

    #[test]
    fn bridge_promisc_and_hairpin_keys() {
        let p = plan_of(
            json!({"bridge": "br-pods", "promiscMode": true, "hairpinMode": false}),
            &v4(),
        )
        .unwrap();
        assert_eq!(p.bridge.name, "br-pods");
        assert!(p.bridge.promisc);
        assert!(!p.hairpin);
    }

    #[test]
    fn mtu_comes_from_the_config_then_the_subnet_file_then_the_bridge() {
        let mut got = v4();
        got.subnet_file = Some(SubnetFile {
            subnet: "10.1.0.0/24".parse().unwrap(),
            gateway: "10.1.0.1".parse().unwrap(),
            cluster_cidr: Some("10.0.0.0/8".parse().unwrap()),
            mtu: Some(1450),
            ipv6_subnet: None,
            ipv6_gateway: None,
            ipv6_cluster_cidr: None,
        });
        let p = plan_of(json!({"mtu": 9000}), &got).unwrap();
        assert_eq!((p.bridge.mtu, p.veth.mtu), (9000, Some(9000)));
        let p = plan_of(json!({}), &got).unwrap();
        assert_eq!((p.bridge.mtu, p.veth.mtu), (1450, Some(1450)));
        let p = plan_of(json!({}), &v4()).unwrap();
        assert_eq!((p.bridge.mtu, p.veth.mtu), (DEFAULT_MTU, None));
        assert_eq!(p.result(&cbr0(1400)).interfaces[2].mtu, Some(1400));
    }

    #[test]
    fn is_gateway_off_leaves_the_bridge_without_address_or_forwarding() {
        let p = plan_of(json!({"isGateway": false}), &v4()).unwrap();
        assert!(p.gateways.is_empty());
        assert_eq!(p.forwarding, None);
        // the pod still gets its default route via IPAM's gateway
        assert_eq!(p.routes.len(), 1);
    }

    #[test]
    fn is_default_gateway_off_keeps_only_ipam_routes() {
        let mut got = v4();
        got.result.routes = vec![Route::new(
            "10.0.0.0/8".parse().unwrap(),
            Some("10.1.0.1".parse().unwrap()),
        )];
        let p = plan_of(json!({"isDefaultGateway": false}), &got).unwrap();
        assert_eq!(p.routes, got.result.routes);
        let p = plan_of(json!({}), &got).unwrap();
        assert_eq!(p.routes.len(), 2);
        assert_eq!(p.routes[0], got.result.routes[0], "IPAM's routes come first");
    }

    #[test]
    fn dual_stack_gets_a_default_route_per_family_and_v6_forwarding() {
        let got = granted(vec![
            ip("10.1.0.5/24", Some("10.1.0.1")),
            ip("fd00::5/64", Some("fd00::1")),
        ]);
        let p = plan_of(json!({}), &got).unwrap();
        let dsts: Vec<String> = p.routes.iter().map(|r| r.dst.to_string()).collect();
        assert_eq!(dsts, ["0.0.0.0/0", "::/0"]);
        assert_eq!(p.forwarding, Some(true));
        assert_eq!(p.gateways.len(), 2);
        // IPv6 only: no IPv4 to derive MACs from, so they are hashed (and stable)
        let got = granted(vec![ip("fd00::5/64", Some("fd00::1"))]);
        let p = plan_of(json!({}), &got).unwrap();
        assert_eq!(p.veth.pod_mac[0] & 3, 2, "locally administered unicast");
        assert_eq!(p.bridge.mac, mac::for_bridge(None, "cbr0"));
    }

    #[test]
    fn runtime_config_mac_sets_the_pod_mac() {
        let p = plan_of(json!({"runtimeConfig": {"mac": "02:aa:bb:cc:dd:ee"}}), &v4()).unwrap();
        assert_eq!(p.veth.pod_mac, [2, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]);
    }

    #[test]
    fn dns_from_the_config_wins_over_ipam() {
        let mut got = v4();
        got.result.dns.nameservers = vec!["10.1.0.10".into()];
        assert_eq!(plan_of(json!({}), &got).unwrap().dns.nameservers, ["10.1.0.10"]);
        let p = plan_of(json!({"dns": {"nameservers": ["1.1.1.1"]}}), &got).unwrap();
        assert_eq!(p.dns.nameservers, ["1.1.1.1"]);
    }

    #[test]
    fn ip_masq_needs_a_cluster_cidr_of_an_address_family() {
        let p = plan_of(json!({"ipMasq": true, "clusterCIDR": "10.0.0.0/8"}), &v4()).unwrap();
        assert_eq!(
            p.masq,
            Some(MasqPlan {
                table: "cbrnet_net1".into(),
                rules: vec![masq::Masq {
                    subnet: "10.1.0.0/24".parse().unwrap(),
                    cluster: "10.0.0.0/8".parse().unwrap(),
                }],
            })
        );
        // the cluster CIDR may come from the subnet file
        let mut got = v4();
        got.subnet_file = Some(SubnetFile {
            subnet: "10.1.0.0/24".parse().unwrap(),
            gateway: "10.1.0.1".parse().unwrap(),
            cluster_cidr: Some("10.0.0.0/8".parse().unwrap()),
            mtu: None,
            ipv6_subnet: None,
            ipv6_gateway: None,
            ipv6_cluster_cidr: None,
        });
        let ipam_file = json!({"type": "cbrnet-ipam", "subnetFile": "/nonexistent"});
        let p = plan_of(json!({"ipMasq": true, "ipam": ipam_file}), &got).unwrap();
        assert_eq!(p.masq.unwrap().rules[0].cluster.to_string(), "10.0.0.0/8");
        // a dual-stack pod of a dual-stack file: a rule per family
        let mut dual = granted(vec![
            ip("10.1.0.5/24", Some("10.1.0.1")),
            ip("fd00:1::5/64", Some("fd00:1::1")),
        ]);
        let mut f = got.subnet_file.clone().unwrap();
        f.ipv6_subnet = Some("fd00:1::/64".parse().unwrap());
        f.ipv6_gateway = Some("fd00:1::1".parse().unwrap());
        f.ipv6_cluster_cidr = Some("fd00::/48".parse().unwrap());
        dual.subnet_file = Some(f);
        let p = plan_of(json!({"ipMasq": true, "ipam": ipam_file}), &dual).unwrap();
        let rules: Vec<String> = p
            .masq
            .unwrap()
            .rules
            .iter()
            .map(|r| format!("{} {}", r.subnet, r.cluster))
            .collect();
        assert_eq!(rules, ["10.1.0.0/24 10.0.0.0/8", "fd00:1::/64 fd00::/48"]);
        // without one, or with only IPv6, or without a gateway: a clean error, no panic
        assert_eq!(
            code(plan_of(json!({"ipMasq": true, "ipam": ipam_file}), &v4())),
            7
        );
        let v6 = granted(vec![ip("fd00::5/64", Some("fd00::1"))]);
        assert_eq!(
            code(plan_of(json!({"ipMasq": true, "clusterCIDR": "10.0.0.0/8"}), &v6)),
            7
        );
        assert_eq!(
            code(plan_of(json!({"ipMasq": true, "clusterCIDR": "fd00::/8"}), &v4())),
            7
        );
        let no_gw = granted(vec![ip("10.1.0.5/24", None)]);
        let p = plan_of(json!({"ipMasq": true, "clusterCIDR": "10.0.0.0/8"}), &no_gw).unwrap();
        assert_eq!(p.masq.unwrap().rules[0].subnet.to_string(), "10.1.0.0/24");
    }

    #[test]
    fn no_address_is_an_error() {
        assert_eq!(code(plan_of(json!({}), &granted(vec![]))), 7);
    }

    #[test]
    fn result_puts_the_addresses_on_the_pod_interface_and_chains() {
        let p = plan_of(json!({}), &v4()).unwrap();
        let r = p.result(&cbr0(1500));
        let names: Vec<&str> = r.interfaces.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["cbr0", p.veth.host_name.as_str(), "eth0"]);
        assert_eq!(r.interfaces[0].mac, "0a:58:0a:01:00:01", "the bridge's own MAC");
        assert_eq!(r.interfaces[2].sandbox, "/run/netns/p1");
        assert_eq!(r.ips[0].interface, Some(2));
        let prev = CniResult {
            interfaces: vec![Interface {
                name: "other".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let c = chain(prev, r);
        assert_eq!(c.interfaces.len(), 4);
        assert_eq!(c.ips[0].interface, Some(3));
    }
}
