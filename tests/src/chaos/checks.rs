//! What must hold all the time (safety), what must come back after a fault (liveness), and what
//! must be left at the end (no leak).

use super::world::{World, PREFIX};
use cbrnet_ipam::cluster::lease::LeaseConfig;
use cbrnet_ipam::cluster::record::unix_now;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// A route of ours as `ip route` shows it: destination and gateway.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Route {
    pub dst: String,
    pub via: String,
}

/// Node `i`'s routes of ours (protocol 157).
pub fn routes(w: &World, i: usize) -> Result<Vec<Route>, String> {
    let table = w.node_cmd(i, &["ip", "route", "show", "proto", "157"])?;
    Ok(table
        .lines()
        .filter_map(|l| {
            Some(Route {
                dst: l.split_whitespace().next()?.to_string(),
                via: word_after(l, "via")?.to_string(),
            })
        })
        .collect())
}

/// The word after `key` in a line of `ip` or `bridge` output.
fn word_after<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let mut words = line.split_whitespace();
    words.find(|w| *w == key)?;
    words.next()
}

/// A broken promise: which, and what shows it.
#[derive(Debug, Clone)]
pub struct Violation {
    pub at: Duration,
    pub what: &'static str,
    pub evidence: String,
}

/// The safety checks' memory: since when each suspicious state has been seen.
pub struct Safety {
    /// How long a route may disagree with the store, or two live nodes share a subnet, before it
    /// is a violation (the daemons see a change within a watch event or a resync, and act on an
    /// expiry within a second).
    pub grace: Duration,
    since: HashMap<String, Instant>,
    pub checks: u64,
    pub store_unread: u64,
    cfg: LeaseConfig,
}

impl Safety {
    pub fn new(grace: Duration, ttl: u64) -> Safety {
        let cfg = LeaseConfig::new(
            crate::lab::CLUSTER_CIDR.parse().expect("the lab's cluster CIDR"),
            24,
            Duration::from_secs(ttl),
        )
        .expect("the lab's lease configuration");
        Safety {
            grace,
            since: HashMap::new(),
            checks: 0,
            store_unread: 0,
            cfg,
        }
    }

    /// Notes that `key` is seen now; true once it has been seen without a break for longer than
    /// the grace period.
    fn lasting(&mut self, seen: &mut BTreeSet<String>, key: String) -> bool {
        let t = *self.since.entry(key.clone()).or_insert_with(Instant::now);
        seen.insert(key);
        t.elapsed() > self.grace
    }

    /// One round of every safety check; the first violation found.
    pub fn check(&mut self, w: &mut World, started: Instant) -> Option<Violation> {
        let mut seen = BTreeSet::new();
        let at = started.elapsed();
        let v = self.check_inner(w, &mut seen, at);
        // A state not seen this time starts its clock again when it comes back.
        self.since.retain(|k, _| seen.contains(k));
        v
    }

    fn check_inner(&mut self, w: &mut World, seen: &mut BTreeSet<String>, at: Duration) -> Option<Violation> {
        let violation = |what, evidence: String| Some(Violation { at, what, evidence });
        // No pod address given twice.
        self.checks += 1;
        let mut addrs: BTreeMap<&str, &str> = BTreeMap::new();
        for n in &w.lab.nodes {
            for (_, id, ip) in &n.pods {
                if let Some(other) = addrs.insert(ip, id) {
                    return violation("pod-address-twice", format!("{ip} given to {other} and {id}"));
                }
            }
        }
        // No subnet held by two live nodes (as their set-up, the subnet file, says).
        self.checks += 1;
        let mut held: BTreeMap<String, usize> = BTreeMap::new();
        for (i, n) in w.lab.nodes.iter().enumerate() {
            if !w.state[i].live() {
                continue;
            }
            let Some(s) = n.subnet() else { continue };
            if let Some(j) = held.insert(s.clone(), i) {
                let key = format!("twice {s} {j} {i}");
                if self.lasting(seen, key) {
                    return violation(
                        "subnet-held-twice",
                        format!("{s} held by live {} and {}", w.lab.nodes[j].name, n.name),
                    );
                }
            }
        }
        // Routes follow the valid, live records; nothing is routed for an invalid one.
        let listing = match w.listing() {
            Ok(l) => l,
            Err(_) => {
                // The store is down (etcd without a quorum): nothing to judge the routes by.
                self.store_unread += 1;
                return None;
            }
        };
        let now = unix_now();
        let mut valid: HashMap<String, String> = HashMap::new();
        let mut invalid: BTreeSet<String> = listing
            .invalid
            .iter()
            .filter_map(|i| i.subnet.map(|s| s.to_string()))
            .collect();
        for v in &listing.leases {
            match self.cfg.check(&v.lease) {
                Ok(()) if !v.lease.expired(now) => {
                    valid.insert(v.lease.subnet.to_string(), v.lease.node_ip.to_string());
                }
                Ok(()) => {}
                Err(_) => {
                    invalid.insert(v.lease.subnet.to_string());
                }
            }
        }
        // Subnets named inside junk the runner wrote, whatever key they sit under.
        invalid.insert("10.99.0.0/24".into());
        for i in 0..w.lab.nodes.len() {
            if !w.state[i].sees_store() || !w.store_up() {
                continue;
            }
            self.checks += 1;
            let Ok(rs) = routes(w, i) else { continue };
            let name = &w.lab.nodes[i].name;
            let mut sees_store = None;
            for r in rs {
                // A route through VXLAN goes via the peer subnet's own address: judged by its
                // destination alone.
                let direct = !r.via.starts_with("10.");
                let (key, what, why) = match valid.get(&r.dst) {
                    Some(ip) if !direct || *ip == r.via => continue,
                    Some(ip) => (
                        format!("stale {i} {} {}", r.dst, r.via),
                        "route-to-non-holder",
                        format!("the store's record names {ip}"),
                    ),
                    None if invalid.contains(&r.dst) => (
                        format!("invalid {i} {}", r.dst),
                        "routed-invalid-record",
                        "its record is invalid".to_string(),
                    ),
                    None => (
                        format!("unheld {i} {}", r.dst),
                        "route-to-non-holder",
                        "no live record holds it".to_string(),
                    ),
                };
                if !self.lasting(seen, key.clone()) {
                    continue;
                }
                // Its grace runs from when its daemon reads the store again.
                if !*sees_store.get_or_insert_with(|| store_up(w, i)) {
                    seen.remove(&key);
                    continue;
                }
                return violation(
                    what,
                    format!(
                        "{name} routes {} via {} for more than {:?}, reading the store; {why}",
                        r.dst, r.via, self.grace
                    ),
                );
            }
        }
        None
    }
}

/// Daemons that ended without the runner killing them, or that panicked.
pub fn exits(w: &mut World, at: Duration) -> Option<Violation> {
    for (i, n) in w.lab.nodes.iter_mut().enumerate() {
        if let Some(c) = n.daemon.as_mut() {
            if let Ok(Some(st)) = c.try_wait() {
                let tail = tail(&n.log(), 20);
                n.daemon = None;
                return Some(Violation {
                    at,
                    what: "unexpected-exit",
                    evidence: format!("node-{i}'s daemon exited with {st}; its log ends:\n{tail}"),
                });
            }
        }
    }
    None
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Is the cluster converged: every node's routes exactly the other nodes' subnets via their node
/// IPs, every record valid and live, and every `/healthz` 200? `None` if so, else what is not.
pub fn converged(w: &mut World) -> Option<String> {
    let subnets: Vec<Option<String>> = w.lab.nodes.iter().map(|n| n.subnet()).collect();
    for (i, s) in subnets.iter().enumerate() {
        if s.is_none() {
            return Some(format!("{} has no subnet", w.lab.nodes[i].name));
        }
    }
    for i in 0..w.lab.nodes.len() {
        // Directly via the peer's node IP, or through the VXLAN device via its subnet's address.
        let want: BTreeSet<Route> = (0..w.lab.nodes.len())
            .filter(|j| *j != i)
            .map(|j| {
                let dst = subnets[j].clone().unwrap_or_default();
                let via = match w.lab.expected_path(i, j) {
                    "vxlan" => dst.split('/').next().unwrap_or_default().to_owned(),
                    _ => w.lab.nodes[j].ip.clone(),
                };
                Route { dst, via }
            })
            .collect();
        let have: BTreeSet<Route> = match routes(w, i) {
            Ok(r) => r.into_iter().collect(),
            Err(e) => return Some(format!("{}: {e}", w.lab.nodes[i].name)),
        };
        if have != want {
            return Some(format!(
                "{} routes {:?}, wants {:?}",
                w.lab.nodes[i].name,
                have.iter()
                    .map(|r| format!("{} via {}", r.dst, r.via))
                    .collect::<Vec<_>>(),
                want.iter()
                    .map(|r| format!("{} via {}", r.dst, r.via))
                    .collect::<Vec<_>>()
            ));
        }
    }
    let listing = match w.listing() {
        Ok(l) => l,
        Err(e) => return Some(format!("the store: {e}")),
    };
    let now = unix_now();
    for (i, n) in w.lab.nodes.iter().enumerate() {
        let ok = listing.leases.iter().any(|v| {
            v.lease.node_name == n.name
                && !v.lease.expired(now)
                && Some(v.lease.subnet.to_string()) == subnets[i]
                && v.lease.node_ip.to_string() == n.ip
        });
        if !ok {
            return Some(format!("no live record of {} for {:?}", n.name, subnets[i]));
        }
    }
    for i in 0..w.lab.nodes.len() {
        let (code, body) = health(w, i);
        if code != 200 {
            return Some(format!(
                "{} /healthz {code}: {}",
                w.lab.nodes[i].name,
                body.trim()
            ));
        }
    }
    None
}

/// `/healthz` of node `i` (0 if it cannot be read).
pub fn health(w: &World, i: usize) -> (u16, String) {
    get(w, i, "/healthz")
}

/// Does node `i`'s daemon say it reads the store (`cbrnet_store_up 1`)? A daemon that cannot
/// keeps the routes it has, by design: they are judged again once it reads the store.
pub fn store_up(w: &World, i: usize) -> bool {
    let (code, body) = get(w, i, "/metrics");
    code == 200
        && body
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["cbrnet_store_up", "1"])
}

/// GET `path` from node `i`'s daemon: status (0 if it cannot be read) and body.
fn get(w: &World, i: usize, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let resp = w.lab.nodes[i].node.ns.in_thread(|| {
        let mut s = std::net::TcpStream::connect("127.0.0.1:9473").ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\n\r\n").ok()?;
        let mut r = String::new();
        s.read_to_string(&mut r).ok()?;
        Some(r)
    });
    let Some(resp) = resp else {
        return (0, "no answer".into());
    };
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

/// Pod pairs that cannot reach each other (one ping each, up to 1 s).
pub fn unreachable(w: &World, only: Option<&BTreeSet<(String, String)>>) -> BTreeSet<(String, String)> {
    let pods: Vec<&(crate::Netns, String, String)> = w.lab.nodes.iter().flat_map(|n| &n.pods).collect();
    let mut bad = BTreeSet::new();
    for a in &pods {
        for b in &pods {
            let pair = (a.1.clone(), b.1.clone());
            if a.1 == b.1 || only.is_some_and(|o| !o.contains(&pair)) {
                continue;
            }
            let ok =
                a.0.run(&["ping", "-c", "1", "-W", "1", "-q", &b.2])
                    .status
                    .success();
            if !ok {
                bad.insert(pair);
            }
        }
    }
    bad
}

/// At the end: every reservation is a live pod's, every record is a node's, and (etcd) each node
/// has at most 2 etcd leases. The first problem found.
pub fn leaks(w: &mut World) -> Option<String> {
    for n in &w.lab.nodes {
        let have: BTreeSet<String> = n
            .node
            .reservations("labnet")
            .into_iter()
            .map(|(ip, _)| ip)
            .collect();
        let want: BTreeSet<String> = n.pods.iter().map(|(_, _, ip)| ip.clone()).collect();
        if have != want {
            return Some(format!("{}: reservations {have:?}, live pods {want:?}", n.name));
        }
    }
    let listing = match w.listing() {
        Ok(l) => l,
        Err(e) => return Some(format!("the store: {e}")),
    };
    if !listing.invalid.is_empty() {
        return Some(format!("entries left in the store: {:?}", listing.invalid));
    }
    let names: BTreeSet<&str> = w.lab.nodes.iter().map(|n| n.name.as_str()).collect();
    if listing.leases.len() != names.len()
        || listing
            .leases
            .iter()
            .any(|v| !names.contains(v.lease.node_name.as_str()))
    {
        let held: Vec<String> = listing
            .leases
            .iter()
            .map(|v| format!("{} {}", v.lease.subnet, v.lease.node_name))
            .collect();
        return Some(format!("records left in the store: {held:?}"));
    }
    if w.member_count() > 0 {
        let leases = match w.etcd_leases() {
            Ok(l) => l,
            Err(e) => return Some(format!("etcd's leases: {e}")),
        };
        let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
        for (_, keys) in &leases {
            for k in keys {
                *per_node
                    .entry(k.trim_start_matches(PREFIX).to_owned())
                    .or_default() += 1;
            }
        }
        let bound = 2 * w.lab.nodes.len();
        if leases.len() > bound || per_node.values().any(|c| *c > 2) {
            return Some(format!(
                "{} etcd leases for {} nodes (at most {bound}); keys: {per_node:?}",
                leases.len(),
                w.lab.nodes.len()
            ));
        }
    }
    // No nexthop object of ours but one per peer's gateway (none at all where routes go without
    // them), and no VXLAN FDB entry but towards a peer's node IP.
    for (i, n) in w.lab.nodes.iter().enumerate() {
        let peers: BTreeSet<String> = w
            .lab
            .nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(j, p)| match (w.lab.expected_path(i, j), p.subnet()) {
                ("vxlan", Some(s)) => s.split('/').next().unwrap_or_default().to_owned(),
                _ => p.ip.clone(),
            })
            .collect();
        let node_ips: BTreeSet<&str> = w.lab.nodes.iter().map(|p| p.ip.as_str()).collect();
        if let Ok(fdb) = w.node_cmd(i, &["bridge", "fdb", "show", "dev", crate::lab::VXLAN_DEV]) {
            let stale: Vec<&str> = fdb
                .lines()
                .filter(|l| word_after(l, "dst").is_some_and(|d| !node_ips.contains(d) || d == n.ip))
                .collect();
            if !stale.is_empty() {
                return Some(format!(
                    "{} keeps VXLAN FDB entries no peer needs: {stale:?}",
                    n.name
                ));
            }
        }
        let have = match w.node_cmd(i, &["ip", "nexthop", "show", "proto", "157"]) {
            Ok(t) => t,
            Err(e) => return Some(format!("{}'s nexthops: {e}", n.name)),
        };
        let stale: Vec<&str> = have
            .lines()
            .filter(|l| !word_after(l, "via").is_some_and(|v| peers.contains(v)))
            .collect();
        if !stale.is_empty() {
            return Some(format!(
                "{} keeps nexthops of ours no peer needs: {stale:?}",
                n.name
            ));
        }
    }
    for n in &w.lab.nodes {
        if n.log().contains("panicked") {
            return Some(format!("{} panicked:\n{}", n.name, tail(&n.log(), 20)));
        }
    }
    None
}
