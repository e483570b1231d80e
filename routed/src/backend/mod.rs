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
use ipnetwork::{IpNetwork, Ipv6Network};
use routes::{Hop, Want};
use std::collections::HashMap;
use std::net::IpAddr;

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

/// An address family, as metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    pub fn of(n: &IpNetwork) -> Family {
        if n.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
}

/// One subnet of a peer reached through VXLAN: its FDB entry (VTEP MAC → node IP, one per peer
/// whatever its families) and its neighbour entry (the subnet's network address → VTEP MAC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxPeer {
    pub subnet: IpNetwork,
    /// The outer destination: the peer's node IP of the underlay's family.
    pub node_ip: IpAddr,
    pub mac: [u8; 6],
}

impl VxPeer {
    /// The address the route to the peer's subnet goes through, and its neighbour entry names:
    /// its subnet's network address, which no pod has.
    pub fn hop(&self) -> IpAddr {
        self.subnet.network()
    }
}

/// Everything the backend should have in the kernel, and why some peers have nothing.
#[derive(Debug, Default, PartialEq)]
pub struct Desired {
    pub routes: Want,
    pub vxlan: Vec<VxPeer>,
    /// Peers' subnets per path and family.
    pub counts: HashMap<(Path, Family), usize>,
    /// One line per peer subnet that cannot be reached, or whose record has a part that cannot
    /// be used.
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
    /// The family of the VXLAN device's outer addresses (this node's `nodeIP`).
    pub underlay: Family,
    /// The cluster has IPv6 pods: peers' IPv6 subnets are routed.
    pub ipv6: bool,
}

/// Pure: the path to each subnet of each peer among `leases` (live and valid), and what that
/// path needs.
pub fn choose<'a>(leases: impl IntoIterator<Item = &'a Lease>, me: &Local) -> Desired {
    let mut d = Desired::default();
    let (own, mut peers): (Vec<&Lease>, Vec<&Lease>) =
        leases.into_iter().partition(|l| l.node_name == me.node_name);
    // In subnet order, so that which of two peers publishing one VTEP MAC (or naming one IPv6
    // subnet) wins does not depend on the order the store lists them in.
    peers.sort_by_key(|l| l.subnet);
    // Records under different keys can name one IPv6 subnet (nodes of different configurations,
    // or a hand edit): it stays this node's if ours, else goes to the first peer naming it.
    let mut v6_named: HashMap<Ipv6Network, &str> = own
        .iter()
        .filter_map(|l| Some((l.ipv6_subnet?, me.node_name)))
        .collect();
    let mut macs: HashMap<[u8; 6], &str> = me.own_vtep.map(|m| (m, me.node_name)).into_iter().collect();
    for l in peers {
        let vx = vxlan_of(l, me, &macs);
        let mut took_vxlan = None;
        let mut here = false;
        let subnets = std::iter::once(l.subnet).chain(
            l.ipv6_subnet
                .filter(|_| me.ipv6 && l.subnet.is_ipv4())
                .map(IpNetwork::V6),
        );
        for subnet in subnets {
            if let IpNetwork::V6(v6) = subnet {
                match v6_named.get(&v6) {
                    Some(first) => {
                        *d.counts.entry((Path::Unroutable, Family::V6)).or_default() += 1;
                        d.problems.push(format!(
                            "lease {subnet} of node {}: unroutable: node {first}'s lease names it too",
                            l.node_name
                        ));
                        continue;
                    }
                    None => {
                        v6_named.insert(v6, &l.node_name);
                    }
                }
            }
            let (path, hop, why) = path_of(l, subnet, me, &vx);
            *d.counts.entry((path, Family::of(&subnet))).or_default() += 1;
            if path == Path::Unroutable && me.mode == Mode::HostGw && hostgw::off_link(l, me.networks) {
                here = true;
            }
            if let Some(hop) = hop {
                d.routes.insert(subnet, hop);
            }
            if let (Path::Vxlan, Ok((mac, node_ip))) = (path, &vx) {
                d.vxlan.push(VxPeer {
                    subnet,
                    node_ip: *node_ip,
                    mac: *mac,
                });
                took_vxlan = Some(*mac);
            }
            // A subnet reached despite a VTEP MAC that cannot be used is reported too.
            if let Some(why) = why {
                let what = match path {
                    Path::Unroutable => "unroutable",
                    _ => "not reached through VXLAN",
                };
                d.problems
                    .push(format!("lease {subnet} of node {}: {what}: {why}", l.node_name));
            }
        }
        if here {
            d.unroutable_here.push(l.node_name.clone());
        }
        if let Some(mac) = took_vxlan {
            macs.insert(mac, &l.node_name);
        }
    }
    d
}

/// The peer's node IPs: `nodeIP`, then `nodeIPv6`.
fn node_ips(l: &Lease) -> impl Iterator<Item = IpAddr> + '_ {
    std::iter::once(l.node_ip).chain(l.node_ip_v6.map(IpAddr::V6))
}

/// The peer's node IP of a family, if it has one.
fn node_ip_of(l: &Lease, f: Family) -> Option<IpAddr> {
    node_ips(l).find(|ip| Family::of(&IpNetwork::from(*ip)) == f)
}

/// Can the peer be reached through VXLAN: its VTEP MAC and outer address, or why not and
/// whether that is its record's fault. `macs` holds the VTEP MACs taken by the peers chosen
/// before it.
fn vxlan_of(
    l: &Lease,
    me: &Local,
    macs: &HashMap<[u8; 6], &str>,
) -> std::result::Result<([u8; 6], IpAddr), (String, bool)> {
    let mac = match vxlan::vtep_of(l) {
        Ok(None) => {
            return Err((
                "its lease has no VTEP MAC (its node runs --backend host-gw, or a cbrnet without VXLAN)"
                    .into(),
                false,
            ))
        }
        Err(why) => return Err((why, true)),
        Ok(Some(mac)) => mac,
    };
    let Some(outer) = node_ip_of(l, me.underlay) else {
        return Err((
            format!(
                "it has no node IP of the underlay's family ({}), which VXLAN needs",
                me.underlay.as_str()
            ),
            true,
        ));
    };
    match (macs.get(&mac), me.vxlan_down) {
        (Some(other), _) => Err((
            format!(
                "its VTEP MAC {} is also node {other}'s",
                cbrnet_bridge::mac::format(&mac)
            ),
            true,
        )),
        // Why is logged once, and given by /healthz, on its own.
        (None, true) => Err(("the VXLAN device cannot be used".into(), false)),
        (None, false) => Ok((mac, outer)),
    }
}

/// The direct next hop of one of the peer's subnets: its node IP of the subnet's family, or for
/// an IPv4 subnet its IPv6 node IP (the kernel routes IPv4 via IPv6, never the reverse), on one
/// of this node's networks; `Err` says why not.
fn direct_hop(l: &Lease, subnet: IpNetwork, local: &[IpNetwork]) -> std::result::Result<IpAddr, String> {
    let f = Family::of(&subnet);
    let same = node_ip_of(l, f);
    let first = match same {
        Some(ip) => hostgw::judge(ip, local).map(|()| ip),
        None => Err(format!(
            "the peer has no {} node IP for its {} subnet",
            f.as_str(),
            f.as_str()
        )),
    };
    match (first, f, node_ip_of(l, Family::V6)) {
        (Ok(ip), _, _) => Ok(ip),
        (Err(why), Family::V4, Some(v6)) => hostgw::judge(v6, local).map(|()| v6).map_err(|_| why),
        (Err(why), _, _) => Err(why),
    }
}

/// The path to one subnet of a peer, its route's next hop, and what is wrong if anything is:
/// why it is unroutable, or why a VTEP MAC it publishes cannot be used.
fn path_of(
    l: &Lease,
    subnet: IpNetwork,
    me: &Local,
    vx: &std::result::Result<([u8; 6], IpAddr), (String, bool)>,
) -> (Path, Option<Hop>, Option<String>) {
    let local = me.networks;
    if let Some(ip) = node_ips(l).find(|ip| local.iter().any(|n| n.ip() == *ip)) {
        return (
            Path::Unroutable,
            None,
            Some(format!("node IP {ip} is this node's own address")),
        );
    }
    if local
        .iter()
        .any(|n| n.contains(subnet.network()) && n.prefix() <= subnet.prefix())
    {
        return (
            Path::Unroutable,
            None,
            Some("the subnet is one of our own networks".into()),
        );
    }
    let direct = direct_hop(l, subnet, local);
    let direct_path = |gw: IpAddr| Some(Hop { gw, vxlan: false });
    if me.mode == Mode::HostGw || (me.mode == Mode::Auto && direct.is_ok()) {
        return match direct {
            Ok(gw) => (Path::Direct, direct_path(gw), None),
            Err(why) => (Path::Unroutable, None, Some(format!("{why} (--backend host-gw)"))),
        };
    }
    // Through VXLAN, if the peer can be reached that way; else directly if it is on-link. A peer
    // without a VTEP MAC, or while our device is down, is no problem of its record; a VTEP MAC
    // that cannot be used is, even where the peer is reached directly.
    let (why, the_record) = match vx {
        Ok(_) => {
            let hop = Hop {
                gw: subnet.network(),
                vxlan: true,
            };
            return (Path::Vxlan, Some(hop), None);
        }
        Err((why, the_record)) => (why, *the_record),
    };
    match direct {
        Ok(gw) => (Path::Direct, direct_path(gw), the_record.then(|| why.clone())),
        Err(not_direct) => (Path::Unroutable, None, Some(format!("{not_direct}, and {why}"))),
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
            underlay: Family::V4,
            ipv6: true,
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
        assert_eq!(
            (
                d.counts[&(Path::Direct, Family::V4)],
                d.counts[&(Path::Unroutable, Family::V4)]
            ),
            (1, 5)
        );
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
        assert_eq!(d.counts[&(Path::Unroutable, Family::V4)], 1);
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
        assert_eq!(d.counts[&(Path::Unroutable, Family::V4)], 6);
    }

    fn dual(subnet: &str, node: &str, ip: &str, v6: (&str, Option<&str>), mac: Option<&str>) -> Lease {
        Lease {
            ipv6_subnet: Some(v6.0.parse().unwrap()),
            node_ip_v6: v6.1.map(|a| a.parse().unwrap()),
            ..lease(subnet, node, ip, mac)
        }
    }

    /// Next hop and VXLAN flag per subnet.
    fn hops(d: &Desired) -> Vec<(String, String, bool)> {
        d.routes
            .iter()
            .map(|(n, h)| (n.to_string(), h.gw.to_string(), h.vxlan))
            .collect()
    }

    fn row(n: &str, gw: &str, vx: bool) -> (String, String, bool) {
        (n.into(), gw.into(), vx)
    }

    #[test]
    fn each_family_takes_its_own_path() {
        let n: Vec<IpNetwork> = vec!["192.168.1.1/24".parse().unwrap(), "fd00:1::1/64".parse().unwrap()];
        let leases = [
            // both node IPs on-link: each family directly through its own
            dual(
                "10.244.2.0/24",
                "b",
                "192.168.1.2",
                ("fd00:10:244:2::/64", Some("fd00:1::2")),
                Some("0e:00:00:00:00:02"),
            ),
            // an IPv4-only underlay peer: IPv6 cannot go via an IPv4 next hop, so through VXLAN
            dual(
                "10.244.3.0/24",
                "c",
                "192.168.1.3",
                ("fd00:10:244:3::/64", None),
                Some("0e:00:00:00:00:03"),
            ),
            // an older peer: no IPv6 subnet, routed on the family it has
            lease("10.244.4.0/24", "d", "192.168.1.4", Some("0e:00:00:00:00:04")),
        ];
        let d = choose(&leases, &local(Mode::Auto, &n, false));
        assert_eq!(
            hops(&d),
            [
                row("10.244.2.0/24", "192.168.1.2", false),
                row("10.244.3.0/24", "192.168.1.3", false),
                row("10.244.4.0/24", "192.168.1.4", false),
                row("fd00:10:244:2::/64", "fd00:1::2", false),
                row("fd00:10:244:3::/64", "fd00:10:244:3::", true),
            ]
        );
        // one FDB entry's worth: the IPv6 subnet of c, outer IPv4
        assert_eq!(d.vxlan.len(), 1);
        assert_eq!(d.vxlan[0].node_ip.to_string(), "192.168.1.3");
        assert_eq!(d.counts[&(Path::Direct, Family::V4)], 3);
        assert_eq!(d.counts[&(Path::Direct, Family::V6)], 1);
        assert_eq!(d.counts[&(Path::Vxlan, Family::V6)], 1);
        assert!(d.problems.is_empty(), "{:?}", d.problems);
        // host-gw: c's IPv6 subnet has no way
        let d = choose(&leases, &local(Mode::HostGw, &n, false));
        assert_eq!(d.routes.len(), 4);
        assert_eq!(d.counts[&(Path::Unroutable, Family::V6)], 1);
        assert!(
            d.problems[0].contains("fd00:10:244:3::/64 of node c: unroutable: the peer has no ipv6 node IP"),
            "{:?}",
            d.problems
        );
        // a cluster without IPv6 pods routes no IPv6 subnet, whatever the records hold
        let mut me = local(Mode::Auto, &n, false);
        me.ipv6 = false;
        assert!(choose(&leases, &me).routes.keys().all(IpNetwork::is_ipv4));
    }

    #[test]
    fn an_ipv6_subnet_named_twice_is_routed_once() {
        let n: Vec<IpNetwork> = vec!["192.168.1.1/24".parse().unwrap(), "fd00:1::1/64".parse().unwrap()];
        let mut leases = vec![
            dual(
                "10.244.1.0/24",
                "me",
                "192.168.1.1",
                ("fd00:10:244:1::/64", Some("fd00:1::1")),
                None,
            ),
            // names this node's IPv6 subnet
            dual(
                "10.244.2.0/24",
                "b",
                "192.168.1.2",
                ("fd00:10:244:1::/64", Some("fd00:1::2")),
                None,
            ),
            dual(
                "10.244.3.0/24",
                "c",
                "192.168.1.3",
                ("fd00:10:244:3::/64", Some("fd00:1::3")),
                None,
            ),
            // names c's
            dual(
                "10.244.4.0/24",
                "d",
                "192.168.1.4",
                ("fd00:10:244:3::/64", Some("fd00:1::4")),
                None,
            ),
        ];
        for _ in 0..2 {
            let d = choose(&leases, &local(Mode::Auto, &n, false));
            assert_eq!(
                hops(&d),
                [
                    row("10.244.2.0/24", "192.168.1.2", false),
                    row("10.244.3.0/24", "192.168.1.3", false),
                    row("10.244.4.0/24", "192.168.1.4", false),
                    row("fd00:10:244:3::/64", "fd00:1::3", false),
                ]
            );
            assert_eq!(
                d.problems,
                [
                    "lease fd00:10:244:1::/64 of node b: unroutable: node me's lease names it too",
                    "lease fd00:10:244:3::/64 of node d: unroutable: node c's lease names it too",
                ]
            );
            assert_eq!(d.counts[&(Path::Unroutable, Family::V6)], 2);
            assert_eq!(d.counts[&(Path::Direct, Family::V6)], 1);
            // whatever order the store lists them in
            leases.reverse();
        }
    }

    #[test]
    fn ipv6_only_clusters_and_ipv6_only_underlays() {
        let n: Vec<IpNetwork> = vec!["fd00:1::1/64".parse().unwrap()];
        let mut me = local(Mode::Auto, &n, false);
        me.underlay = Family::V6;
        let leases = [
            lease("fd00:10:244:2::/64", "b", "fd00:1::2", Some("0e:00:00:00:00:02")),
            lease("fd00:10:244:3::/64", "c", "fd00:2::3", Some("0e:00:00:00:00:03")),
            // IPv4 pods on an IPv6-only underlay: IPv4 via an IPv6 next hop
            lease("10.244.4.0/24", "d", "fd00:1::4", None),
        ];
        let d = choose(&leases, &me);
        assert_eq!(
            hops(&d),
            [
                row("10.244.4.0/24", "fd00:1::4", false),
                row("fd00:10:244:2::/64", "fd00:1::2", false),
                row("fd00:10:244:3::/64", "fd00:10:244:3::", true),
            ]
        );
        assert_eq!(d.vxlan[0].node_ip.to_string(), "fd00:2::3");
        // an IPv4 underlay cannot carry a peer that has only an IPv6 node IP through VXLAN
        me.underlay = Family::V4;
        let d = choose(&leases[1..2], &me);
        assert!(d.routes.is_empty());
        assert!(
            d.problems[0].contains("no node IP of the underlay's family (ipv4)"),
            "{:?}",
            d.problems
        );
    }
}
