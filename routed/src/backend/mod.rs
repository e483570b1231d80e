//! How this node reaches every other node's pod subnet. The daemon hands [`choose`] the live
//! leases and this node's networks; it answers with the path of each peer and the state that
//! path needs: a route per peer ([`routes`]), and for peers reached through VXLAN the FDB and
//! neighbour entries of the node's VXLAN device ([`vxlan`]). Direct peers ([`hostgw`]) need only
//! their route.
//!
//! - `host-gw`: every peer directly, and a peer off this node's networks is unroutable;
//! - `vxlan`: every peer through VXLAN (one whose lease has no VTEP MAC, written by an older
//!   cbrnet or a host-gw node, directly if it is on-link);
//! - `auto`: directly where the peer's node IP is on one of this node's networks, else VXLAN.

pub mod hostgw;
pub mod routes;
pub mod vxlan;

use cbrnet_ipam::cluster::Lease;
use ipnetwork::IpNetwork;
use routes::{Hop, Want};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

/// `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    #[value(name = "host-gw")]
    HostGw,
    Vxlan,
    Auto,
}

impl Mode {
    /// Does the node run a VXLAN device (and publish its VTEP MAC)?
    pub fn uses_vxlan(self) -> bool {
        self != Mode::HostGw
    }
}

/// How this node reaches a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Path {
    Direct,
    Vxlan,
    Unroutable,
}

impl Path {
    pub const ALL: [Path; 3] = [Path::Direct, Path::Vxlan, Path::Unroutable];

    pub fn as_str(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Vxlan => "vxlan",
            Path::Unroutable => "unroutable",
        }
    }
}

/// A peer reached through VXLAN: its FDB entry (VTEP MAC → node IP) and its neighbour entry (its
/// subnet's network address → VTEP MAC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxPeer {
    pub subnet: IpNetwork,
    pub node_ip: Ipv4Addr,
    pub mac: [u8; 6],
}

impl VxPeer {
    /// The address the route to the peer's subnet goes through, and its neighbour entry names:
    /// its subnet's network address, which no pod has.
    pub fn hop(&self) -> Ipv4Addr {
        match self.subnet.network() {
            IpAddr::V4(a) => a,
            // `choose` only makes VxPeers of IPv4 subnets.
            IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        }
    }
}

/// Everything the backend should have in the kernel, and why some peers have nothing.
#[derive(Debug, Default, PartialEq)]
pub struct Desired {
    pub routes: Want,
    pub vxlan: Vec<VxPeer>,
    /// Peers per path.
    pub counts: HashMap<Path, usize>,
    /// One line per peer that cannot be reached, or whose record has a part that cannot be used.
    pub problems: Vec<String>,
    /// The peers (node names) unroutable because of this node's backend (host-gw, and the peer
    /// on none of this node's networks), not because of their records.
    pub unroutable_here: Vec<String>,
}

/// What [`choose`] needs to know of this node.
pub struct Local<'a> {
    pub mode: Mode,
    pub node_name: &'a str,
    /// Every address of this node, with its prefix.
    pub networks: &'a [IpNetwork],
    /// The VXLAN device cannot carry traffic now (not ours, or not there).
    pub vxlan_down: bool,
    /// This node's own VTEP MAC, which no peer may publish.
    pub own_vtep: Option<[u8; 6]>,
}

/// Pure: the path to each peer among `leases` (live and valid), and what that path needs.
pub fn choose<'a>(leases: impl IntoIterator<Item = &'a Lease>, me: &Local) -> Desired {
    let mut d = Desired::default();
    let mut peers: Vec<&Lease> = leases
        .into_iter()
        .filter(|l| l.node_name != me.node_name)
        .collect();
    // In subnet order, so that which of two peers publishing one VTEP MAC wins does not depend
    // on the order the store lists them in.
    peers.sort_by_key(|l| l.subnet);
    let mut macs: HashMap<[u8; 6], &str> = me.own_vtep.map(|m| (m, me.node_name)).into_iter().collect();
    for l in peers {
        let (path, why) = path_of(l, me, &mut macs);
        *d.counts.entry(path).or_default() += 1;
        if path == Path::Unroutable && me.mode == Mode::HostGw && hostgw::off_link(l, me.networks) {
            d.unroutable_here.push(l.node_name.clone());
        }
        match path {
            Path::Direct => {
                d.routes.insert(
                    l.subnet,
                    Hop {
                        gw: l.node_ip,
                        vxlan: false,
                    },
                );
            }
            Path::Vxlan => {
                if let (IpAddr::V4(node_ip), Ok(Some(mac))) = (l.node_ip, vxlan::vtep_of(l)) {
                    let p = VxPeer {
                        subnet: l.subnet,
                        node_ip,
                        mac,
                    };
                    d.routes.insert(
                        l.subnet,
                        Hop {
                            gw: IpAddr::V4(p.hop()),
                            vxlan: true,
                        },
                    );
                    d.vxlan.push(p);
                }
            }
            Path::Unroutable => {}
        }
        // A peer reached despite a VTEP MAC that cannot be used is reported too.
        if let Some(why) = why {
            let what = match path {
                Path::Unroutable => "unroutable",
                _ => "not reached through VXLAN",
            };
            d.problems.push(format!(
                "lease {} of node {}: {what}: {why}",
                l.subnet, l.node_name
            ));
        }
    }
    d
}

/// The path to one peer, and what is wrong with it if anything is: why it is unroutable, or why
/// a VTEP MAC it publishes cannot be used. `macs` holds the VTEP MACs taken by the peers chosen
/// before it.
fn path_of<'a>(l: &'a Lease, me: &Local, macs: &mut HashMap<[u8; 6], &'a str>) -> (Path, Option<String>) {
    let local = me.networks;
    if local.iter().any(|n| n.ip() == l.node_ip) {
        return (
            Path::Unroutable,
            Some(format!("node IP {} is this node's own address", l.node_ip)),
        );
    }
    if local
        .iter()
        .any(|n| n.contains(l.subnet.network()) && n.prefix() <= l.subnet.prefix())
    {
        return (
            Path::Unroutable,
            Some("the subnet is one of our own networks".into()),
        );
    }
    let direct = hostgw::judge(l, local);
    if me.mode == Mode::HostGw || (me.mode == Mode::Auto && direct.is_ok()) {
        return match direct {
            Ok(()) => (Path::Direct, None),
            Err(why) => (Path::Unroutable, Some(format!("{why} (--backend host-gw)"))),
        };
    }
    // Through VXLAN, if the peer can be reached that way; else directly if it is on-link. A peer
    // without a VTEP MAC, or while our device is down, is no problem of its record; a VTEP MAC
    // that cannot be used is, even where the peer is reached directly.
    let (why, the_record) = match vxlan::vtep_of(l) {
        Ok(None) => (
            "its lease has no VTEP MAC (its node runs --backend host-gw, or a cbrnet without VXLAN)"
                .to_string(),
            false,
        ),
        Err(why) => (why, true),
        Ok(Some(_)) if !l.node_ip.is_ipv4() => (format!("node IP {} is not IPv4", l.node_ip), true),
        Ok(Some(mac)) => match (macs.get(&mac), me.vxlan_down) {
            (Some(other), _) => (
                format!(
                    "its VTEP MAC {} is also node {other}'s",
                    cbrnet_bridge::mac::format(&mac)
                ),
                true,
            ),
            // Why is logged once, and given by /healthz, on its own.
            (None, true) => ("the VXLAN device cannot be used".to_string(), false),
            (None, false) => {
                macs.insert(mac, &l.node_name);
                return (Path::Vxlan, None);
            }
        },
    };
    match direct {
        Ok(()) => (Path::Direct, the_record.then_some(why)),
        Err(not_direct) => (Path::Unroutable, Some(format!("{not_direct}, and {why}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(subnet: &str, node: &str, ip: &str, mac: Option<&str>) -> Lease {
        Lease {
            subnet: subnet.parse().unwrap(),
            node_name: node.into(),
            node_ip: ip.parse().unwrap(),
            expires: u64::MAX,
            holder: None,
            vtep_mac: mac.map(str::to_string),
            ipv6_subnet: None,
            node_ip_v6: None,
        }
    }

    fn local(mode: Mode, nets: &[IpNetwork], down: bool) -> Local<'_> {
        Local {
            mode,
            node_name: "me",
            networks: nets,
            vxlan_down: down,
            own_vtep: Some([0x0e, 0, 0, 0, 0, 1]),
        }
    }

    fn nets() -> Vec<IpNetwork> {
        vec!["192.168.1.1/24".parse().unwrap()]
    }

    /// Path per subnet.
    fn paths(d: &Desired) -> Vec<(String, bool)> {
        d.routes.iter().map(|(n, h)| (n.to_string(), h.vxlan)).collect()
    }

    #[test]
    fn host_gw_skips_self_and_what_is_no_neighbour() {
        let leases = [
            lease("10.244.1.0/24", "me", "192.168.1.1", None),
            lease("10.244.2.0/24", "b", "192.168.1.2", None),
            lease("10.244.3.0/24", "c", "172.16.0.3", Some("0e:00:00:00:00:03")),
            lease("10.244.4.0/24", "d", "192.168.1.0", None),
            lease("10.244.5.0/24", "e", "192.168.1.255", None),
            lease("10.244.6.0/24", "f", "192.168.1.1", None),
            lease("192.168.1.0/24", "g", "192.168.1.7", None),
        ];
        let n = nets();
        let d = choose(&leases, &local(Mode::HostGw, &n, false));
        assert_eq!(paths(&d), [("10.244.2.0/24".to_string(), false)]);
        assert_eq!(d.routes.values().next().unwrap().gw.to_string(), "192.168.1.2");
        assert_eq!(
            d.problems,
            [
                "lease 10.244.3.0/24 of node c: unroutable: node IP 172.16.0.3 is not on a directly connected network (--backend host-gw)",
                "lease 10.244.4.0/24 of node d: unroutable: node IP 192.168.1.0 is the network or broadcast address of 192.168.1.1/24 (--backend host-gw)",
                "lease 10.244.5.0/24 of node e: unroutable: node IP 192.168.1.255 is the network or broadcast address of 192.168.1.1/24 (--backend host-gw)",
                "lease 10.244.6.0/24 of node f: unroutable: node IP 192.168.1.1 is this node's own address",
                "lease 192.168.1.0/24 of node g: unroutable: the subnet is one of our own networks",
            ]
        );
        assert_eq!((d.counts[&Path::Direct], d.counts[&Path::Unroutable]), (1, 5));
        assert!(d.vxlan.is_empty());
        // only the peer off this node's networks is this node's backend's doing
        assert_eq!(d.unroutable_here, ["c"]);
    }

    #[test]
    fn auto_is_direct_on_link_and_vxlan_across_subnets() {
        let leases = [
            lease("10.244.2.0/24", "b", "192.168.1.2", Some("0e:00:00:00:00:02")),
            lease("10.244.3.0/24", "c", "172.16.0.3", Some("0e:00:00:00:00:03")),
            // an older node across subnets: no VTEP MAC
            lease("10.244.4.0/24", "d", "172.16.0.4", None),
        ];
        let n = nets();
        let d = choose(&leases, &local(Mode::Auto, &n, false));
        assert_eq!(
            paths(&d),
            [
                ("10.244.2.0/24".to_string(), false),
                ("10.244.3.0/24".to_string(), true)
            ]
        );
        assert_eq!(
            d.routes[&"10.244.3.0/24".parse().unwrap()].gw.to_string(),
            "10.244.3.0"
        );
        assert_eq!(
            d.vxlan,
            [VxPeer {
                subnet: "10.244.3.0/24".parse().unwrap(),
                node_ip: "172.16.0.3".parse().unwrap(),
                mac: [0x0e, 0, 0, 0, 0, 3],
            }]
        );
        assert_eq!(d.problems.len(), 1);
        assert!(
            d.unroutable_here.is_empty(),
            "an older peer's record is its own problem"
        );
        assert!(d.problems[0].contains("10.244.4.0/24 of node d: unroutable: node IP 172.16.0.4 is not on a directly connected network, and its lease has no VTEP MAC"), "{:?}", d.problems);
        // the same peers once the local network covers 172.16.0.0/24 too: all direct
        let n2 = vec![n[0], "172.16.0.1/24".parse().unwrap()];
        let d = choose(&leases, &local(Mode::Auto, &n2, false));
        assert!(d.routes.values().all(|h| !h.vxlan) && d.routes.len() == 3);
    }

    #[test]
    fn vxlan_takes_every_peer_with_a_vtep_and_older_ones_on_link_directly() {
        let leases = [
            lease("10.244.2.0/24", "b", "192.168.1.2", Some("0e:00:00:00:00:02")),
            lease("10.244.3.0/24", "c", "192.168.1.3", None),
            lease("10.244.4.0/24", "d", "172.16.0.4", None),
        ];
        let n = nets();
        let d = choose(&leases, &local(Mode::Vxlan, &n, false));
        assert_eq!(
            paths(&d),
            [
                ("10.244.2.0/24".to_string(), true),
                ("10.244.3.0/24".to_string(), false)
            ]
        );
        assert_eq!(d.counts[&Path::Unroutable], 1);
        // a VXLAN device that cannot be used: on-link peers directly, the others unroutable
        let d = choose(&leases, &local(Mode::Vxlan, &n, true));
        // the device's trouble is said once by the daemon, not per peer that is reached anyway
        assert_eq!(d.problems.len(), 1, "{:?}", d.problems);
        assert_eq!(
            paths(&d),
            [
                ("10.244.2.0/24".to_string(), false),
                ("10.244.3.0/24".to_string(), false)
            ]
        );
    }

    #[test]
    fn garbage_and_duplicate_vtep_macs_are_skipped_and_reported() {
        let leases = [
            lease("10.244.2.0/24", "b", "172.16.0.2", Some("01:00:5e:00:00:01")),
            lease("10.244.3.0/24", "c", "172.16.0.3", Some("00:00:00:00:00:00")),
            lease("10.244.4.0/24", "d", "172.16.0.4", Some("not a mac")),
            lease("10.244.5.0/24", "e", "172.16.0.5", Some("0e:00:00:00:00:05")),
            lease("10.244.6.0/24", "f", "172.16.0.6", Some("0e:00:00:00:00:05")),
            lease("10.244.7.0/24", "g", "172.16.0.7", Some("00:11:22:33:44:55")),
            lease("10.244.9.0/24", "i", "172.16.0.9", Some("0e:00:00:00:00:01")),
            // on-link with a bad MAC: direct in vxlan mode, and the MAC reported
            lease("10.244.8.0/24", "h", "192.168.1.8", Some("zz")),
        ];
        let n = nets();
        let d = choose(&leases, &local(Mode::Vxlan, &n, false));
        assert_eq!(
            paths(&d),
            [
                ("10.244.5.0/24".to_string(), true),
                ("10.244.8.0/24".to_string(), false)
            ]
        );
        for (peer, why) in [
            (
                "10.244.2.0/24 of node b: unroutable",
                "VTEP MAC 01:00:5e:00:00:01 is a multicast address",
            ),
            (
                "10.244.3.0/24 of node c: unroutable",
                "VTEP MAC 00:00:00:00:00:00 is zero",
            ),
            (
                "10.244.4.0/24 of node d: unroutable",
                "VTEP MAC \"not a mac\" is not a MAC",
            ),
            (
                "10.244.6.0/24 of node f: unroutable",
                "its VTEP MAC 0e:00:00:00:00:05 is also node e's",
            ),
            (
                "10.244.7.0/24 of node g: unroutable",
                "VTEP MAC 00:11:22:33:44:55 is not locally administered",
            ),
            (
                "10.244.8.0/24 of node h: not reached through VXLAN",
                "VTEP MAC \"zz\" is not a MAC",
            ),
        ] {
            assert!(
                d.problems.iter().any(|p| p.contains(peer) && p.contains(why)),
                "{peer}: {why} not in {:#?}",
                d.problems
            );
        }
        assert_eq!(d.problems.len(), 7);
        assert_eq!(d.counts[&Path::Unroutable], 6);
    }
}
