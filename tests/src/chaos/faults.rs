//! The faults: each drawn from the run's dice, injected, and healed after a while (or at once,
//! for a fault that is a single act the product must repair by itself).

use super::rng::Dice;
use super::world::World;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;
use std::time::Duration;

/// The kinds of fault, as the report names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// SIGKILL of a daemon, restarted within the lease TTL.
    Kill,
    /// SIGKILL of a daemon, restarted after longer than the lease TTL.
    KillPastTtl,
    /// SIGSTOP of a daemon, SIGCONT within the lease TTL.
    Stop,
    /// SIGSTOP of a daemon, SIGCONT after longer than the lease TTL.
    StopPastTtl,
    /// A node's underlay link down, then up.
    LinkDown,
    /// nftables drops a node's traffic with the store (etcd).
    StoreCut,
    /// nftables drops the traffic between two nodes.
    PeerCut,
    /// The routes of ours deleted by hand.
    RoutesDeleted,
    /// The bridge's addresses flushed.
    BridgeFlushed,
    /// IPv4 forwarding turned off.
    ForwardingOff,
    /// Entries that are no valid lease written into the store (then removed).
    Junk,
    /// A node's record overwritten with another node's subnet (then removed).
    Overwrite,
    /// One etcd member killed and restarted on its data.
    MemberDown,
    /// Two of three etcd members killed (quorum lost), then restarted.
    QuorumLoss,
    /// A pod deleted and another added, through the plugin.
    PodChurn,
    /// A plugin killed in the middle of an ADD (then the runtime's DEL).
    PluginKilled,
    /// A node's IPAM lock held by another process for a while.
    LockHeld,
    /// A daemon stopped (SIGTERM) and started again with another node IP (its underlay address
    /// moved to it).
    NodeIpChanged,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Kill => "daemon-kill",
            Kind::KillPastTtl => "daemon-kill-past-ttl",
            Kind::Stop => "daemon-stop",
            Kind::StopPastTtl => "daemon-stop-past-ttl",
            Kind::LinkDown => "link-down",
            Kind::StoreCut => "partition-node-store",
            Kind::PeerCut => "partition-node-node",
            Kind::RoutesDeleted => "routes-deleted",
            Kind::BridgeFlushed => "bridge-addresses-flushed",
            Kind::ForwardingOff => "forwarding-off",
            Kind::Junk => "store-junk",
            Kind::Overwrite => "store-record-overwritten",
            Kind::MemberDown => "etcd-member-down",
            Kind::QuorumLoss => "etcd-quorum-loss",
            Kind::PodChurn => "pod-churn",
            Kind::PluginKilled => "plugin-killed-mid-add",
            Kind::LockHeld => "ipam-lock-held",
            Kind::NodeIpChanged => "restart-with-another-node-ip",
        }
    }

    /// The kinds this store can have.
    pub fn available(members: usize) -> Vec<Kind> {
        let mut v = vec![
            Kind::Kill,
            Kind::KillPastTtl,
            Kind::Stop,
            Kind::StopPastTtl,
            Kind::LinkDown,
            Kind::PeerCut,
            Kind::RoutesDeleted,
            Kind::BridgeFlushed,
            Kind::ForwardingOff,
            Kind::Junk,
            Kind::Overwrite,
            Kind::PodChurn,
            Kind::PluginKilled,
            Kind::LockHeld,
            Kind::NodeIpChanged,
        ];
        if members > 0 {
            v.extend([Kind::StoreCut, Kind::MemberDown]);
        }
        if members >= 3 {
            v.push(Kind::QuorumLoss);
        }
        v
    }

    /// Does it act on one node (which no other fault of the same round may touch)?
    fn on_node(self) -> bool {
        !matches!(self, Kind::Junk | Kind::MemberDown | Kind::QuorumLoss)
    }
}

/// A fault drawn for a round: what, on whom, when it starts and how long it lasts.
#[derive(Debug, Clone)]
pub struct Fault {
    pub kind: Kind,
    /// The node acted on (the first of a pair).
    pub node: usize,
    /// The other node (a partition's peer, an overwrite's subnet owner) or etcd member.
    pub other: usize,
    pub start: Duration,
    pub hold: Duration,
    /// The store key it wrote, for those that write one.
    pub key: Option<String>,
}

/// Draws the faults of one round: 1 to 3, on distinct nodes, starting within the first second.
pub fn draw(dice: &mut Dice, kinds: &[Kind], nodes: usize, members: usize, ttl: u64) -> Vec<Fault> {
    let want = dice.between(1, 3) as usize;
    let mut used: Vec<usize> = Vec::new();
    let mut store_fault = false;
    let mut out = Vec::new();
    for _ in 0..want {
        let kind = dice.pick(kinds);
        let node = dice.below(nodes as u64) as usize;
        let mut other = (node + 1 + dice.below(nodes.saturating_sub(1) as u64) as usize) % nodes;
        if kind.on_node() && used.contains(&node) {
            continue;
        }
        // One fault of the store's members at a time.
        if matches!(kind, Kind::MemberDown | Kind::QuorumLoss) {
            if store_fault {
                continue;
            }
            store_fault = true;
            other = dice.below(members as u64) as usize;
        }
        if kind.on_node() {
            used.push(node);
        }
        let past = Duration::from_millis(dice.between(ttl * 1000 + 1000, ttl * 1000 + 3000));
        let hold = match kind {
            Kind::KillPastTtl | Kind::StopPastTtl => past,
            Kind::Kill | Kind::Stop => Duration::from_millis(dice.between(200, ttl * 1000 / 2)),
            Kind::RoutesDeleted | Kind::BridgeFlushed | Kind::ForwardingOff => Duration::ZERO,
            Kind::PodChurn | Kind::PluginKilled | Kind::NodeIpChanged => Duration::ZERO,
            _ => Duration::from_millis(dice.between(500, ttl * 1000 + 2000)),
        };
        out.push(Fault {
            kind,
            node,
            other,
            start: Duration::from_millis(dice.below(1000)),
            hold,
            key: None,
        });
    }
    out
}

fn signal(w: &World, i: usize, sig: Signal) -> Result<(), String> {
    let pid = w.lab.nodes[i]
        .daemon
        .as_ref()
        .map(|c| c.id())
        .ok_or("no daemon")?;
    kill(Pid::from_raw(pid as i32), sig).map_err(|e| e.to_string())
}

/// The nftables table of a node's cut towards `what` ("store" or a peer).
fn cut_table(what: &str) -> String {
    format!("chaos_{what}")
}

fn cut(w: &World, i: usize, what: &str, addrs: &[String]) -> Result<(), String> {
    let set = addrs.join(", ");
    let rules = format!(
        "table inet {t} {{\n chain out {{ type filter hook output priority 0; ip daddr {{ {set} }} drop; }}\n \
         chain in {{ type filter hook input priority 0; ip saddr {{ {set} }} drop; }}\n}}\n",
        t = cut_table(what)
    );
    let path = w.lab.dir.path().join(format!("nft-{i}-{what}"));
    std::fs::write(&path, rules).map_err(|e| e.to_string())?;
    w.node_cmd(i, &["nft", "-f", &path.to_string_lossy()]).map(|_| ())
}

fn uncut(w: &World, i: usize, what: &str) -> Result<(), String> {
    w.node_cmd(i, &["nft", "delete", "table", "inet", &cut_table(what)])
        .map(|_| ())
}

/// Why a fault was not injected.
#[derive(Debug)]
pub enum Failure {
    /// The runner could not make it (a store write while another fault holds the store down, a
    /// route gone before it was deleted): skipped.
    NotMade(String),
    /// The product failed while it was made (a plugin call failed or hung, a daemon did not stop
    /// cleanly): a violation, by its name.
    Broke(&'static str, String),
}

impl From<String> for Failure {
    fn from(e: String) -> Failure {
        Failure::NotMade(e)
    }
}

impl From<&str> for Failure {
    fn from(e: &str) -> Failure {
        Failure::NotMade(e.into())
    }
}

fn plugin(e: String) -> Failure {
    Failure::Broke("plugin-failed", e)
}

/// Injects `f`; what was done, for the run's log.
pub fn inject(w: &mut World, dice: &mut Dice, f: &mut Fault) -> Result<String, Failure> {
    let i = f.node;
    let name = w.lab.nodes[i].name.clone();
    match f.kind {
        Kind::Kill | Kind::KillPastTtl => {
            if let Some(mut c) = w.lab.nodes[i].daemon.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            w.state[i].killed = true;
            Ok(format!("SIGKILL {name}'s daemon for {:?}", f.hold))
        }
        Kind::Stop | Kind::StopPastTtl => {
            signal(w, i, Signal::SIGSTOP)?;
            w.state[i].stopped = true;
            Ok(format!("SIGSTOP {name}'s daemon for {:?}", f.hold))
        }
        Kind::LinkDown => {
            w.node_cmd(i, &["ip", "link", "set", "eth0", "down"])?;
            w.state[i].link_down = true;
            Ok(format!("{name}'s eth0 down for {:?}", f.hold))
        }
        Kind::StoreCut => {
            cut(w, i, "store", &w.etcd_hosts())?;
            w.state[i].store_cut = true;
            Ok(format!("{name} cut from the store for {:?}", f.hold))
        }
        Kind::PeerCut => {
            let peer = w.lab.nodes[f.other].ip.clone();
            cut(w, i, &format!("peer{}", f.other), &[peer])?;
            Ok(format!(
                "{name} cut from {} for {:?}",
                w.lab.nodes[f.other].name, f.hold
            ))
        }
        Kind::RoutesDeleted => {
            // One by one: `ip route flush` refuses a protocol filter in some iproute2 versions.
            for r in super::checks::routes(w, i)? {
                w.node_cmd(i, &["ip", "route", "del", &r.dst])?;
            }
            if w.node_cmd(i, &["ip", "link", "show", crate::lab::VXLAN_DEV])
                .is_ok()
            {
                w.node_cmd(i, &["ip", "neigh", "flush", "dev", crate::lab::VXLAN_DEV])?;
                w.node_cmd(i, &["bridge", "fdb", "flush", "dev", crate::lab::VXLAN_DEV])?;
            }
            Ok(format!("{name}'s routes of ours deleted"))
        }
        Kind::BridgeFlushed => {
            w.node_cmd(i, &["ip", "addr", "flush", "dev", "cbr0"])?;
            Ok(format!("{name}'s bridge addresses flushed"))
        }
        Kind::ForwardingOff => {
            w.node_cmd(i, &["sysctl", "-qw", "net.ipv4.ip_forward=0"])?;
            Ok(format!("{name}'s forwarding off"))
        }
        Kind::Junk => {
            // A key in the cluster CIDR that no node holds (the lab's nodes hold the lowest).
            let key = format!("10.244.{}.0-24", 200 + dice.below(50));
            let bytes: Vec<u8> = match dice.below(3) {
                0 => b"{not json".to_vec(),
                1 => json!({"subnet": "10.99.0.0/24", "nodeName": "junk", "nodeIP": "192.168.50.99", "expires": 4_000_000_000u64})
                    .to_string()
                    .into_bytes(),
                _ => json!({"subnet": key.replace('-', "/"), "nodeName": "", "nodeIP": "192.168.50.99", "expires": 4_000_000_000u64})
                    .to_string()
                    .into_bytes(),
            };
            let bytes = wrap(w, &bytes);
            w.put_raw(&key, &bytes)?;
            w.junk.push(key.clone());
            f.key = Some(key.clone());
            Ok(format!("junk at {key} for {:?}", f.hold))
        }
        Kind::Overwrite => {
            let (Some(mine), Some(theirs)) = (w.lab.nodes[i].subnet(), w.lab.nodes[f.other].subnet()) else {
                return Err("a node without a subnet".into());
            };
            let key = mine.replace('/', "-");
            let ip = w.lab.nodes[f.other].ip.clone();
            let bytes = json!({"subnet": theirs, "nodeName": w.lab.nodes[f.other].name, "nodeIP": ip, "expires": 4_000_000_000u64})
                .to_string()
                .into_bytes();
            let bytes = wrap(w, &bytes);
            w.put_raw(&key, &bytes)?;
            w.junk.push(key.clone());
            f.key = Some(key.clone());
            Ok(format!(
                "{name}'s record ({key}) overwritten with {theirs} for {:?}",
                f.hold
            ))
        }
        Kind::MemberDown | Kind::QuorumLoss => {
            let n = w.member_count();
            let down: Vec<usize> = if f.kind == Kind::QuorumLoss {
                vec![f.other, (f.other + 1) % n]
            } else {
                vec![f.other]
            };
            for m in &down {
                match w.members.get_mut(*m) {
                    Some(e) => e.pause(),
                    None => {
                        if let Some(e) = w.lab.etcd.as_mut() {
                            e.pause()
                        }
                    }
                }
            }
            w.members_down.extend(&down);
            Ok(format!("etcd members {down:?} down for {:?}", f.hold))
        }
        Kind::PodChurn => {
            let mut what = Vec::new();
            let pods = w.lab.nodes[i].pods.len() as u64;
            if pods > 0 {
                let k = dice.below(pods) as usize;
                w.del_pod(i, k).map_err(plugin)?;
                what.push(format!("DEL pod {k}"));
            }
            let ip = w.add_pod(i).map_err(|e| plugin(format!("ADD on {name}: {e}")))?;
            what.push(format!("ADD {ip}"));
            Ok(format!("{name}: {}", what.join(", ")))
        }
        Kind::PluginKilled => {
            let point = dice.pick(&["reserved", "veth", "pod"]);
            w.killed_add(i, point).map_err(plugin)?;
            Ok(format!("{name}: a plugin killed at {point}, then DEL"))
        }
        Kind::LockHeld => {
            w.hold_lock(i)?;
            Ok(format!("{name}'s IPAM lock held for {:?}", f.hold))
        }
        Kind::NodeIpChanged => {
            let old = w.lab.nodes[i].ip.clone();
            let new = w.other_node_ip(i);
            w.stop_daemon(i)
                .map_err(|e| Failure::Broke("unexpected-exit", format!("{name}: {e}")))?;
            // The old one goes first: deleting a subnet's primary address takes its secondaries
            // along.
            w.node_cmd(i, &["ip", "addr", "del", &format!("{old}/24"), "dev", "eth0"])?;
            w.node_cmd(i, &["ip", "addr", "add", &format!("{new}/24"), "dev", "eth0"])?;
            w.lab.nodes[i].ip = new.clone();
            w.lab.spawn(i);
            Ok(format!(
                "{name}'s daemon restarted with node IP {new} (was {old})"
            ))
        }
    }
}

/// The file store keeps a record as `{"lease": ..., "version": N}`; etcd as the lease itself.
/// Bytes that are no JSON go as they are.
fn wrap(w: &World, bytes: &[u8]) -> Vec<u8> {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(lease) if w.member_count() == 0 => json!({"lease": lease, "version": 1}).to_string().into_bytes(),
        _ => bytes.to_vec(),
    }
}

/// Undoes what `f` did that the product is not meant to repair by itself.
pub fn heal(w: &mut World, f: &Fault) -> Result<(), String> {
    let i = f.node;
    match f.kind {
        Kind::Kill | Kind::KillPastTtl => {
            w.lab.spawn(i);
            w.state[i].killed = false;
            Ok(())
        }
        Kind::Stop | Kind::StopPastTtl => {
            signal(w, i, Signal::SIGCONT)?;
            w.state[i].stopped = false;
            Ok(())
        }
        Kind::LinkDown => {
            w.node_cmd(i, &["ip", "link", "set", "eth0", "up"])?;
            w.state[i].link_down = false;
            Ok(())
        }
        Kind::StoreCut => {
            uncut(w, i, "store")?;
            w.state[i].store_cut = false;
            Ok(())
        }
        Kind::PeerCut => uncut(w, i, &format!("peer{}", f.other)),
        Kind::Junk | Kind::Overwrite => {
            let key = f.key.clone().unwrap_or_default();
            w.delete_raw(&key)?;
            w.junk.retain(|k| *k != key);
            Ok(())
        }
        Kind::MemberDown | Kind::QuorumLoss => {
            for m in std::mem::take(&mut w.members_down) {
                match w.members.get_mut(m) {
                    Some(e) => e.resume(),
                    None => {
                        if let Some(e) = w.lab.etcd.as_mut() {
                            e.resume()
                        }
                    }
                }
            }
            Ok(())
        }
        Kind::LockHeld => {
            w.state[i].lock = None;
            Ok(())
        }
        Kind::RoutesDeleted
        | Kind::BridgeFlushed
        | Kind::ForwardingOff
        | Kind::PodChurn
        | Kind::PluginKilled
        | Kind::NodeIpChanged => Ok(()),
    }
}
