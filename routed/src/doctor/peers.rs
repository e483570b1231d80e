//! The peers: for each, its path and whether its route (and through VXLAN its FDB and neighbour
//! entries) is exactly what the daemon's own plans call for; what of ours no lease justifies; a
//! route of another program that keeps a peer's out; and with `--probe`, an echo to each peer's
//! gateway.

use super::{probe, some, Check, Facts};
use crate::backend::{self, routes, vxlan, Desired, Path};
use crate::raw::{self, Raw};
use cbrnet_bridge::mac;
use cbrnet_ipam::cluster::record::unix_now;
use cbrnet_ipam::cluster::Lease;
use ipnetwork::IpNetwork;
use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

/// Above this many peers, the routes line gives counts instead of each peer's path.
const LIST_PEERS: usize = 16;
const RESTART: &str = "systemctl restart cbrnet-routed";

/// What the daemon should have for its peers, worked out as it works it out.
pub(crate) struct Wanted {
    pub desired: Desired,
    /// The peers: every other node's live, valid lease.
    pub peers: Vec<Lease>,
}

/// One peer's faults, worst first decides its status.
#[derive(Default)]
struct Faults {
    fail: Vec<String>,
    warn: Vec<String>,
    fix: Vec<String>,
}

/// The route, VXLAN, stale and per-peer checks; returns what is wanted (for `--probe`).
pub(crate) async fn checks(f: &Facts<'_>, out: &mut Vec<Check>) -> Option<Wanted> {
    let cfg = f.cfg;
    let listing = match &f.listing {
        Ok(l) => l,
        Err(e) => {
            out.push(Check::warn(
                "routes",
                format!("not checked: {e}"),
                "check --store and the etcd flags",
            ));
            return None;
        }
    };
    let (links, nl) = match (&f.links, &f.nl) {
        (Ok(l), Ok(nl)) => (l, nl),
        (Err(e), _) | (_, Err(e)) => {
            out.push(Check::unknown("routes", e));
            return None;
        }
    };
    let now = unix_now();
    let live: Vec<&Lease> = listing
        .leases
        .iter()
        .map(|v| &v.lease)
        .filter(|l| !l.expired(now) && cfg.leases.check(l).is_ok())
        .collect();
    // The VXLAN device as the daemon would judge it: usable if it is ours (one missing is made
    // at once, and said by vxlan.device); another's makes the peers that need it unroutable.
    let (vx_index, vxlan_down) = if cfg.args.backend.uses_vxlan() {
        match nl.link(vxlan::DEVICE).await {
            Ok(Some(l)) => {
                let spec = vxlan::Spec {
                    vni: cfg.args.vxlan_vni,
                    port: cfg.args.vxlan_port,
                    local: cfg.node_ip,
                    mac: vxlan::vtep_mac(&cfg.args.node_name),
                    mtu: 0,
                    addresses: Vec::new(),
                    cluster_cidrs: cfg.cluster_cidrs().collect(),
                    tx_csum_offload: false,
                };
                match vxlan::drift(&l, &spec) {
                    Ok(_) => (Some(l.header.index), false),
                    Err(_) => (None, true),
                }
            }
            Ok(None) => (None, false),
            Err(e) => {
                out.push(Check::unknown("routes", e));
                return None;
            }
        }
    } else {
        (None, false)
    };
    let networks: Vec<IpNetwork> = links.iter().map(|(n, _)| *n).collect();
    let me = backend::Local {
        mode: cfg.args.backend,
        node_name: &cfg.args.node_name,
        networks: &networks,
        vxlan_down,
        own_vtep: cfg
            .args
            .backend
            .uses_vxlan()
            .then(|| vxlan::vtep_mac(&cfg.args.node_name)),
        underlay: backend::Family::of(&IpNetwork::from(cfg.node_ip)),
        ipv6: cfg.cluster_cidr_of(false).is_some(),
    };
    let desired = backend::choose(live.iter().copied(), &me);
    // Peers that only a usable VXLAN device would reach are this node's problem, not theirs.
    let vx_needed: HashSet<IpNetwork> = if vxlan_down {
        let up = backend::Local {
            vxlan_down: false,
            ..me
        };
        let routed = backend::choose(live.iter().copied(), &up).routes;
        routed
            .keys()
            .filter(|s| !desired.routes.contains_key(*s))
            .copied()
            .collect()
    } else {
        HashSet::new()
    };
    let peers: Vec<Lease> = live
        .iter()
        .filter(|l| l.node_name != cfg.args.node_name)
        .map(|l| (*l).clone())
        .collect();

    let kernel = Raw::open().and_then(|mut r| {
        let ours = r.our_routes()?;
        let foreign = r.foreign_destinations()?;
        // Nexthop objects where the kernel has them.
        let nexthops = r.dump().ok();
        Ok((ours, foreign, nexthops))
    });
    let (ours, foreign, nexthops) = match kernel {
        Ok(k) => k,
        Err(e) => {
            out.push(Check::unknown("routes", e));
            return Some(Wanted { desired, peers });
        }
    };
    let plan = routes::plan(&desired.routes, &ours, &foreign);
    let (vx_have, vx_plan) = match vx_index {
        Some(index) => match vxlan::dump(&nl.handle, index).await {
            Ok(have) => {
                let p = vxlan::plan(&desired.vxlan, &have);
                (Some(have), Some(p))
            }
            Err(e) => {
                out.push(Check::unknown("vxlan.entries", e));
                (None, None)
            }
        },
        None => (None, None),
    };

    // Each peer's faults, by subnet.
    let mut faults: BTreeMap<IpNetwork, Faults> = BTreeMap::new();
    let route_fix = format!("the daemon puts its routes back at once; if it does not: {RESTART}");
    for (dst, hop) in &plan.put {
        let want = show_route(*dst, hop);
        let e = faults.entry(*dst).or_default();
        match ours.get(dst) {
            Some(gw) => e.fail.push(format!(
                "route via {}, not {want}",
                gw.map_or("nothing".into(), |g| g.to_string())
            )),
            None => e.fail.push(format!("no route (want {want})")),
        }
        e.fix.push(route_fix.clone());
    }
    for (dst, hop) in &plan.conflicts {
        let e = faults.entry(*dst).or_default();
        e.fail.push(format!(
            "a route of another protocol holds {dst}: ours ({}) cannot go in",
            show_route(*dst, hop)
        ));
        e.fix.push(format!(
            "ip route show {dst} names it; delete it if nothing needs it (ip route del {dst}): ours goes in at once"
        ));
    }
    if let (Some(p), Some(have)) = (&vx_plan, &vx_have) {
        let by_mac: BTreeMap<[u8; 6], IpNetwork> = desired.vxlan.iter().map(|v| (v.mac, v.subnet)).collect();
        let by_hop: BTreeMap<std::net::IpAddr, IpNetwork> =
            desired.vxlan.iter().map(|v| (v.hop(), v.subnet)).collect();
        let vx_fix =
            format!("the daemon puts its FDB and neighbour entries back at once; if it does not: {RESTART}");
        for (m, ip) in &p.fdb_put {
            let Some(subnet) = by_mac.get(m) else { continue };
            let e = faults.entry(*subnet).or_default();
            e.fail.push(match have.fdb.get(m) {
                Some(other) => format!("FDB entry {} -> {other}, not {ip}", mac::format(m)),
                None => format!("no FDB entry {} -> {ip} on {}", mac::format(m), vxlan::DEVICE),
            });
            e.fix.push(vx_fix.clone());
        }
        for (hop, m) in &p.neigh_put {
            let Some(subnet) = by_hop.get(hop) else { continue };
            let e = faults.entry(*subnet).or_default();
            e.fail.push(match have.neigh.get(hop) {
                Some(other) => format!(
                    "neighbour {hop} -> {}, not {}",
                    mac::format(other),
                    mac::format(m)
                ),
                None => format!(
                    "no neighbour entry {hop} -> {} on {}",
                    mac::format(m),
                    vxlan::DEVICE
                ),
            });
            e.fix.push(vx_fix.clone());
        }
    }
    let here: HashSet<&str> = desired.unroutable_here.iter().map(String::as_str).collect();
    for l in &peers {
        for subnet in crate::setup::served(cfg, l) {
            let prefix = format!("lease {subnet} of node {}: ", l.node_name);
            let Some(problem) = desired.problems.iter().find_map(|p| p.strip_prefix(&prefix)) else {
                continue;
            };
            let e = faults.entry(subnet).or_default();
            if vx_needed.contains(&subnet) {
                e.fail.push(problem.to_string());
                e.fix
                    .push(format!("see vxlan.device: {} must be cbrnet's", vxlan::DEVICE));
            } else if here.contains(l.node_name.as_str()) {
                e.fail.push(problem.to_string());
                e.fix.push(
                    "--backend auto (or vxlan) reaches peers that are not on this node's networks".into(),
                );
            } else {
                e.warn.push(problem.to_string());
                e.fix.push(format!(
                    "node {}'s lease is the problem: restart its daemon (it rewrites its lease), or fix its --node-ip",
                    l.node_name
                ));
            }
        }
    }

    // The summary, then one line per peer that is not right.
    let path_of = |subnet: &IpNetwork| path(&desired, subnet);
    let counts = Path::ALL
        .iter()
        .map(|p| {
            let n: usize = backend::Family::ALL
                .iter()
                .map(|f| desired.counts.get(&(*p, *f)).copied().unwrap_or(0))
                .sum();
            format!("{n} {}", p.as_str())
        })
        .collect::<Vec<_>>()
        .join(", ");
    // A peer's subnets the daemon routes: of the cluster's families.
    let subnets_of = |l: &Lease| crate::setup::served(cfg, l);
    let failing: Vec<&Lease> = peers
        .iter()
        .filter(|l| {
            subnets_of(l)
                .iter()
                .any(|s| faults.get(s).is_some_and(|e| !e.fail.is_empty()))
        })
        .collect();
    let what = if vx_index.is_some() {
        "route, FDB and neighbour entry"
    } else {
        "route"
    };
    let listed = if peers.len() <= LIST_PEERS {
        let each: Vec<String> = peers
            .iter()
            .map(|l| format!("{} {}", l.node_name, paths(&desired, &subnets_of(l))))
            .collect();
        format!(" ({})", each.join(", "))
    } else {
        String::new()
    };
    out.push(if peers.is_empty() {
        Check::ok("routes", "no peers: this node is the only one with a live lease")
    } else if failing.is_empty() {
        Check::ok(
            "routes",
            format!("{} peer(s): {counts}{listed}; every {what} exact", peers.len()),
        )
    } else {
        let names: Vec<&str> = failing.iter().map(|l| l.node_name.as_str()).collect();
        Check::fail(
            "routes",
            format!(
                "{} of {} peer(s) not right: {}; {counts}",
                failing.len(),
                peers.len(),
                some(&names, 10)
            ),
            "the peer.* lines say what each lacks",
        )
    });
    for l in &peers {
        // Each subnet of the peer that is not right, with its path and what it lacks.
        let mut found = Vec::new();
        let mut fix = Vec::new();
        let mut fails = false;
        for subnet in subnets_of(l) {
            let Some(e) = faults.get(&subnet) else { continue };
            fails |= !e.fail.is_empty();
            let all: Vec<String> = e.fail.iter().chain(&e.warn).cloned().collect();
            found.push(format!(
                "{subnet} ({}): {}",
                path_of(&subnet).as_str(),
                all.join("; ")
            ));
            fix.extend(
                e.fix
                    .iter()
                    .filter(|f| !fix.contains(*f))
                    .cloned()
                    .collect::<Vec<_>>(),
            );
        }
        if found.is_empty() {
            continue;
        }
        let check = format!("peer.{}", l.node_name);
        let found = format!("{} {}", l.node_name, found.join("; "));
        out.push(if fails {
            Check::fail(check, found, fix.join("; "))
        } else {
            Check::warn(check, found, fix.join("; "))
        });
    }

    // Ours that nothing justifies.
    let mut stale: Vec<String> = plan
        .delete
        .iter()
        .map(|d| {
            format!(
                "route {d} via {}",
                ours.get(d)
                    .copied()
                    .flatten()
                    .map_or("?".into(), |g| g.to_string())
            )
        })
        .collect();
    let mut by_hand: Vec<String> = plan
        .delete
        .iter()
        .take(3)
        .map(|d| format!("ip route del {d} proto {}", routes::ROUTE_PROTOCOL))
        .collect();
    if let (Some(p), Some(have)) = (&vx_plan, &vx_have) {
        for m in &p.fdb_delete {
            let ip = have.fdb.get(m).map_or("?".into(), |i| i.to_string());
            stale.push(format!("FDB entry {} -> {ip}", mac::format(m)));
            if by_hand.len() < 3 {
                by_hand.push(format!(
                    "bridge fdb del {} dev {} dst {ip}",
                    mac::format(m),
                    vxlan::DEVICE
                ));
            }
        }
        for a in &p.neigh_delete {
            stale.push(format!("neighbour entry {a}"));
            if by_hand.len() < 3 {
                by_hand.push(format!("ip neigh del {a} dev {}", vxlan::DEVICE));
            }
        }
    }
    if let Some(nhs) = &nexthops {
        let used: HashSet<u32> = desired
            .routes
            .values()
            .filter_map(|h| match h.gw {
                IpAddr::V4(g) => Some(raw::id(g)),
                IpAddr::V6(_) => None,
            })
            .collect();
        let mut unused: Vec<(&u32, &raw::Nexthop)> =
            nhs.iter().filter(|(id, _)| !used.contains(id)).collect();
        unused.sort_by_key(|(id, _)| **id);
        for (id, nh) in unused {
            stale.push(format!("nexthop {id} via {}", nh.gateway));
            if by_hand.len() < 3 {
                by_hand.push(format!("ip nexthop del id {id}"));
            }
        }
    }
    out.push(if stale.is_empty() {
        Check::ok("stale", "nothing of ours that no lease justifies")
    } else {
        Check::fail(
            "stale",
            format!(
                "{} entr{} of ours that no live lease justifies: {}",
                stale.len(),
                if stale.len() == 1 { "y" } else { "ies" },
                some(&stale, 5)
            ),
            format!(
                "the daemon removes them at its next full check (at most 5 minutes) or at once on a restart ({RESTART}); by hand: {}",
                by_hand.join("; ")
            ),
        )
    });
    Some(Wanted { desired, peers })
}

/// The path the daemon takes to one subnet of a peer.
fn path(desired: &Desired, subnet: &IpNetwork) -> Path {
    match desired.routes.get(subnet) {
        Some(h) if h.vxlan => Path::Vxlan,
        Some(_) => Path::Direct,
        None => Path::Unroutable,
    }
}

/// The paths to a peer's subnets, as `leases` shows them: `direct`, or `direct,vxlan` when its
/// families go different ways.
fn paths(desired: &Desired, subnets: &[IpNetwork]) -> String {
    let mut each: Vec<&str> = subnets.iter().map(|s| path(desired, s).as_str()).collect();
    each.dedup();
    each.join(",")
}

/// A route as `ip route` shows ours.
fn show_route(dst: IpNetwork, hop: &routes::Hop) -> String {
    if hop.vxlan {
        format!("{dst} via {} dev {} onlink", hop.gw, vxlan::DEVICE)
    } else if dst.is_ipv4() && hop.gw.is_ipv6() {
        format!("{dst} via inet6 {}", hop.gw)
    } else {
        format!("{dst} via {}", hop.gw)
    }
}

/// `--probe`: an echo to every peer's gateway, at most 1 s per peer, 64 peers at a time.
pub(crate) fn probe(f: &Facts<'_>, wanted: Option<&Wanted>) -> Vec<Check> {
    let Some(w) = wanted else {
        return vec![Check::warn(
            "probe",
            "not made: the peers are not known (see routes)",
            "check --store and the etcd flags",
        )];
    };
    if w.peers.is_empty() {
        return vec![Check::ok("probe", "no peers to probe")];
    }
    // The gateway of each subnet of each peer that the daemon serves.
    let targets: Vec<(usize, IpNetwork, IpAddr)> = w
        .peers
        .iter()
        .enumerate()
        .flat_map(|(i, l)| {
            crate::setup::served(f.cfg, l)
                .into_iter()
                .map(move |s| (i, s, cbrnet_ipam::cluster::record::gateway_of(s)))
        })
        .collect();
    let results = probe::echo_all(&targets.iter().map(|t| t.2).collect::<Vec<_>>());
    // What each echo found, by peer.
    let mut per_peer: Vec<Vec<Check>> = w.peers.iter().map(|_| Vec::new()).collect();
    for ((i, subnet, gw), r) in targets.into_iter().zip(results) {
        let (l, path) = (&w.peers[i], path(&w.desired, &subnet));
        per_peer[i].push(echo_check(f, l, gw, path, r));
    }
    w.peers
        .iter()
        .zip(per_peer)
        .map(|(l, each)| {
            // One line per peer, the worst of its families decides.
            let check = format!("probe.{}", l.node_name);
            let status = each.iter().map(|c| c.status).max().unwrap_or(super::Status::Ok);
            let found = each
                .iter()
                .map(|c| c.found.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            let mut fixes: Vec<&str> = each
                .iter()
                .filter(|c| c.status != super::Status::Ok)
                .map(|c| c.fix.as_str())
                .collect();
            fixes.dedup();
            Check {
                check,
                status,
                found,
                fix: fixes.join("; "),
            }
        })
        .collect()
}

/// What one echo to a peer's gateway found.
fn echo_check(f: &Facts<'_>, l: &Lease, gw: IpAddr, path: Path, r: Result<probe::Outcome, String>) -> Check {
    let path = path.as_str();
    let check = format!("probe.{}", l.node_name);
    match r {
        Err(e) => Check::unknown(check, format!("echo to {gw}: {e}")),
        Ok(o) if o.received == 0 => Check::fail(
            check,
            format!(
                "{gw} ({path}): no answer to {} echoes in {} ms (100% loss)",
                o.sent,
                probe::BUDGET.as_millis()
            ),
            format!(
                "see routes and peer.{}; run doctor on {} too; between nodes: ICMP, and UDP {} for VXLAN",
                l.node_name, l.node_name, f.cfg.args.vxlan_port
            ),
        ),
        Ok(o) => {
            let found = format!(
                "{gw} ({path}): {}/{} answered, {}% loss, rtt {}",
                o.received,
                o.sent,
                o.loss_percent(),
                o.rtt_text()
            );
            if o.received < o.sent {
                Check::warn(check, found, "loss on the path: the underlay, or a busy node")
            } else {
                Check::ok(check, found)
            }
        }
    }
}
