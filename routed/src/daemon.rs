//! The daemon's event loop: hold the lease, keep the node set up, keep the routes right.
//!
//! Everything is reconciled, never done once: routes on store changes, on deletions of our
//! routes (or of a foreign route that kept one of ours out) and on every resync; the node's set-up
//! on link and address events that touch the bridge and on every resync; the lease on its renewal
//! timer and whenever a reconcile finds it missing, expired or changed.

use crate::backend::{self, routes, vxlan, Desired, Family, Path};
use crate::cli::Config;
use crate::error::{Result, RoutedError};
use crate::events::{Event, Events, Neigh};
use crate::known::Known;
use crate::metrics::{self, ErrorKind, Metrics, Problem};
use crate::raw::{self, Nexthop, Raw};
use crate::{instance, reclaim, setup};
use cbrnet_bridge::Nl;
use cbrnet_ipam::cluster::lease::{self, Claimant, Seen};
use cbrnet_ipam::cluster::record::{subnet_key, unix_now};
use cbrnet_ipam::cluster::store::{AnyStore, Changed, LeaseStore};
use cbrnet_ipam::cluster::{ClusterError, Versioned};
use cbrnet_ipam::SubnetFile;
use futures::StreamExt;
use ipnetwork::IpNetwork;
use rtnetlink::Handle;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::{sleep_until, MissedTickBehavior};

const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Route requests in flight at once: enough to hide the round trips, few enough that their
/// acknowledgements always fit the socket's receive buffer.
const IN_FLIGHT: usize = 64;
/// Up to this many route changes in one reconcile are logged one by one.
const LOG_EACH: usize = 32;
/// At a resync this long after the last full check, the store and our routes are read in full
/// again (they are otherwise followed by the store's watch and the kernel's events, whose
/// overflows and reconnects already call for a full read): a safety net whose cost does not grow
/// with a shorter resync interval.
const FULL_CHECK_EVERY: Duration = Duration::from_secs(300);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A message that repeats while the daemon waits is logged at most this often.
const REPEAT_LOG: Duration = Duration::from_secs(60);

/// Exponential backoff between BACKOFF_MIN and BACKOFF_MAX.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(BACKOFF_MIN)
    }
    fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
        d
    }
    fn reset(&mut self) {
        self.0 = BACKOFF_MIN;
    }
}

/// Logs a message the first time, and again only when it changes or [`REPEAT_LOG`] has passed.
#[derive(Default)]
struct Throttled {
    last: Option<(String, Instant)>,
}

impl Throttled {
    fn due(&mut self, msg: &str) -> bool {
        let due = match &self.last {
            Some((m, at)) => m != msg || at.elapsed() >= REPEAT_LOG,
            None => true,
        };
        if due {
            self.last = Some((msg.to_string(), Instant::now()));
        }
        due
    }
}

/// Problems that persist across resyncs: each is logged once, when it first appears.
#[derive(Default)]
struct Reported(HashSet<String>);

impl Reported {
    /// The problems in `now` that were not there last time; `now` becomes what is known.
    fn fresh(&mut self, now: HashSet<String>) -> Vec<String> {
        let mut new: Vec<String> = now.difference(&self.0).cloned().collect();
        new.sort();
        self.0 = now;
        new
    }
}

/// Retries `f` with backoff until it succeeds; the store being down is not fatal, an error that
/// retrying cannot fix is.
async fn retry<T, F, Fut>(what: &str, metrics: &Metrics, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, ClusterError>>,
{
    let mut b = Backoff::new();
    let mut log = Throttled::default();
    loop {
        match f().await {
            Ok(v) => {
                metrics.store_up.set(i64::from(true));
                return Ok(v);
            }
            Err(e) if e.is_permanent() => return Err(e.into()),
            Err(e) => {
                let d = b.next();
                let msg = format!("{what}: {e}");
                let due = match e {
                    ClusterError::NameHeld { .. } => log.due(&msg),
                    _ => store_failed(metrics, &e),
                };
                if due {
                    if matches!(e, ClusterError::NameHeld { .. }) {
                        tracing::error!("{msg}; retrying");
                    } else {
                        tracing::warn!("{msg}; retrying in {d:?}");
                    }
                } else {
                    // Said once above; at debug level every attempt shows.
                    tracing::debug!("{msg}; retrying in {d:?}");
                }
                tokio::time::sleep(d).await;
            }
        }
    }
}

/// Records a failure of the store for `/healthz` (which says why); true when it is news and is to
/// be logged: a store that keeps failing the same way is logged once, not at every retry.
fn store_failed(metrics: &Metrics, e: &ClusterError) -> bool {
    match e {
        ClusterError::Store(why) => metrics.store_failed(why),
        e => metrics.store_failed(&e.to_string()),
    }
}

/// What the daemon holds once it runs.
struct Node {
    cfg: Config,
    me: Claimant,
    store: AnyStore,
    held: Versioned,
    seen: Seen,
    nl: Nl,
    metrics: Arc<Metrics>,
    invalid: Reported,
    conflicts: Reported,
    conf_problems: Reported,
    /// The record at our subnet's key is no valid lease (said once, until it is written again).
    own_invalid: bool,
    /// Why this node's lease lacks a family's subnet, as last said.
    missing_family: Option<String>,
    /// Networks of the config directory whose pods are not this daemon's to judge.
    reclaim_skips: Reported,
    /// Destinations of ours that a foreign route keeps out: its deletion lets ours in.
    blocked: HashSet<IpNetwork>,
    bridge_index: Option<u32>,
    /// The store as last seen, and what changed in it since.
    known: Known,
    pending: Changed,
    /// Our routes as the kernel has them; `None`: ask it.
    ours: Option<routes::Ours>,
    /// When the next live lease expires (unix seconds): its route must go then.
    next_expiry: Option<u64>,
    /// What the backend should have (routes, VXLAN entries), worked out from `known` and the
    /// links it was worked out with; `None`: work it out again (the store, the links, the time or
    /// the VXLAN device changed it).
    want: Option<(Desired, Vec<(IpNetwork, u32)>)>,
    /// The VXLAN device's index while it is ours and usable, and our FDB and neighbour entries
    /// on it as last seen (`None`: ask).
    vx_index: Option<u32>,
    vx_entries: Option<vxlan::Entries>,
    /// `vx_entries` are what the wanted state needs (the last pass wrote all it had to, and
    /// neither changed since): a resync with nothing to do plans nothing.
    vx_synced: bool,
    /// Our routes are what the wanted state needs (the last pass put and removed all it had to,
    /// and no event changed them since): a resync with nothing to do plans no route.
    routes_synced: bool,
    /// The links with an IPv4 address, as last seen: those our direct routes can go through.
    route_links: HashSet<u32>,
    /// Why the VXLAN device cannot be used, if it cannot (logged when it changes).
    vxlan_down: Option<String>,
    /// The underlay link (the one with the node IP) and its MTU, as last seen.
    underlay: Option<(u32, u32)>,
    /// The plain netlink socket for our route dumps and nexthop objects; whether nexthop objects
    /// are used (where the kernel has them), and ours as last seen (`None`: ask).
    raw: Raw,
    nexthops: bool,
    nh_known: Option<HashMap<u32, Nexthop>>,
}

pub async fn run(cfg: Config) -> Result<()> {
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| RoutedError::Io("SIGTERM handler".into(), e))?;
    // Starting may wait long (another daemon, the node IP, the store): SIGTERM ends it too.
    let lock = tokio::select! {
        l = lock(&cfg) => l?,
        _ = sigterm.recv() => return Ok(()),
        _ = tokio::signal::ctrl_c() => return Ok(()),
    };
    // What this daemon runs with, for `doctor` to compare its own flags with; a node that cannot
    // have it still runs.
    let settings = instance::settings_path(&cfg.args.subnet_file);
    if let Err(e) = cfg.settings().write(&settings) {
        tracing::warn!("writing {}: {e}", settings.display());
    }
    let metrics = Arc::new(Metrics::default());
    metrics::serve(cfg.args.metrics_addr, metrics.clone())
        .await
        .map_err(|e| RoutedError::Io(format!("serving metrics on {}", cfg.args.metrics_addr), e))?;
    let node = tokio::select! {
        n = start(cfg, metrics) => n?,
        _ = sigterm.recv() => return Ok(()),
        _ = tokio::signal::ctrl_c() => return Ok(()),
    };
    // The node's subnet is published: units ordered after this one may start pods now.
    let status = format!("holding {} for {}", node.held.lease.subnet, node.me.node_name);
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&status),
    ]);
    let out = run_loop(node, &mut sigterm).await;
    notify(&[sd_notify::NotifyState::Stopping]);
    drop(lock);
    out
}

/// Tells systemd (`Type=notify`) how the daemon is doing; without systemd, nothing.
fn notify(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!("telling systemd: {e}");
    }
}

/// Waits until this is the only daemon of its node (it holds the lock next to the subnet file).
async fn lock(cfg: &Config) -> Result<instance::InstanceLock> {
    let lock_path = instance::lock_path(&cfg.args.subnet_file);
    let mut log = Throttled::default();
    let lock = loop {
        match instance::try_lock(&lock_path) {
            Ok(Some(l)) => break l,
            Ok(None) => {
                let msg = format!(
                    "another cbrnet-routed runs on this node (it holds {}); waiting for it to stop",
                    lock_path.display()
                );
                if log.due(&msg) {
                    tracing::error!("{msg}");
                }
            }
            Err(e) => return Err(RoutedError::Io(format!("locking {}", lock_path.display()), e)),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    Ok(lock)
}

async fn start(cfg: Config, metrics: Arc<Metrics>) -> Result<Node> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| RoutedError::Io("netlink".into(), e))?;
    tokio::spawn(conn);
    let nl = Nl { handle };
    // As at boot: the node's address may come later (DHCP, a slow interface).
    let mut log = Throttled::default();
    while let Some(missing) = node_ip_missing(&nl.handle, &cfg).await? {
        metrics.node_ip_present.set(i64::from(false));
        let msg = format!("--node-ip {missing} is on no local interface; waiting for it");
        if log.due(&msg) {
            tracing::error!("{msg}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    metrics.node_ip_present.set(i64::from(true));

    let store = retry("opening the lease store", &metrics, || {
        AnyStore::open_with(&cfg.args.store, &cfg.args.etcd_prefix, true, &cfg.etcd_auth)
    })
    .await?;
    // Every subnet the node's file named when the daemon last ran.
    let published: Vec<IpNetwork> = SubnetFile::read(&cfg.args.subnet_file)
        .map(|f| f.families().iter().map(|f| f.subnet).collect())
        .unwrap_or_default();
    let me = Claimant {
        node_name: cfg.args.node_name.clone(),
        node_ip: cfg.node_ip,
        holder: instance::holder(),
        node_ip_v6: cfg.node_ip_v6,
        vtep_mac: cfg
            .args
            .backend
            .uses_vxlan()
            .then(|| cbrnet_bridge::mac::format(&vxlan::vtep_mac(&cfg.args.node_name))),
        // What this node last published, if it is a subnet of this cluster.
        prefer: published.first().copied().filter(|s| cfg.leases.holds(*s)),
    };
    let mut seen = Seen::default();
    let held = {
        let (store, leases, me, seen) = (&store, &cfg.leases, &me, &mut seen);
        let mut b = Backoff::new();
        let mut log = Throttled::default();
        loop {
            match lease::acquire(store, leases, me, seen).await {
                Ok(v) => break v,
                Err(e) if e.is_permanent() => return Err(e.into()),
                Err(e) => {
                    let msg = format!("acquiring a lease: {e}");
                    let due = match e {
                        // The store answered: these are the cluster's state, said in /healthz.
                        ClusterError::NameHeld { .. } | ClusterError::ClusterFull(..) => {
                            metrics.store_up.set(1);
                            metrics.set_problem(Problem::Setup, Some(format!("no lease: {e}")));
                            log.due(&msg)
                        }
                        _ => store_failed(&metrics, &e),
                    };
                    let d = b.next();
                    if due {
                        tracing::error!("{msg}; retrying");
                    } else {
                        tracing::debug!("{msg}; retrying in {d:?}");
                    }
                    tokio::time::sleep(d).await;
                }
            }
        }
    };
    metrics.store_up.set(i64::from(true));
    if let Some(last) = me.prefer.filter(|p| *p != held.lease.subnet) {
        tracing::error!(
            last = %last, now = %held.lease.subnet,
            "the subnet this node last published is held by another node: this node moves, and its pods \
             with addresses of the old subnet are cut off until they are recreated"
        );
    }
    let serves = setup::served(&cfg, &held.lease);
    let moved = me.prefer.is_some_and(|p| p != held.lease.subnet);
    // A family's subnet that another record names is said by itself (`judge_held`).
    let short = lease::missing_partner(&cfg.leases, &held.lease).is_some();
    if !moved && !short && !published.is_empty() && published != serves {
        let show = |v: &[IpNetwork]| v.iter().map(IpNetwork::to_string).collect::<Vec<_>>().join(",");
        tracing::warn!(
            before = %show(&published), now = %show(&serves),
            "this node's subnets follow its changed configuration (--cluster-cidr): pods with addresses \
             of a subnet it no longer serves keep them, unreachable, until they are recreated"
        );
    }
    let mut me = me;
    me.prefer = Some(held.lease.subnet);
    tracing::info!(
        subnet = %held.lease.subnet,
        ipv6_subnet = %held.lease.ipv6_subnet.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
        node_ip = %held.lease.node_ip, holder = %me.holder, "lease held"
    );
    let mut raw = Raw::open()?;
    let nexthops = nexthops_usable(&mut raw);
    let mut node = Node {
        cfg,
        me,
        store,
        held,
        seen,
        nl,
        metrics,
        invalid: Reported::default(),
        conflicts: Reported::default(),
        conf_problems: Reported::default(),
        own_invalid: false,
        missing_family: None,
        reclaim_skips: Reported::default(),
        blocked: HashSet::new(),
        bridge_index: None,
        known: Known::default(),
        pending: Changed {
            all: true,
            ..Changed::default()
        },
        ours: None,
        next_expiry: None,
        raw,
        nexthops,
        nh_known: None,
        want: None,
        vx_index: None,
        vx_entries: None,
        vx_synced: false,
        routes_synced: false,
        route_links: HashSet::new(),
        vxlan_down: None,
        underlay: None,
    };
    node.judge_held();
    let mut b = Backoff::new();
    while let Err(e) = node.set_up().await {
        let d = b.next();
        tracing::error!("setting the node up: {e}; retrying in {d:?}");
        node.metrics
            .set_problem(Problem::Setup, Some(format!("the node set-up fails: {e}")));
        tokio::time::sleep(d).await;
    }
    node.metrics.set_problem(Problem::Setup, None);
    node.metrics.set_ready(true);
    Ok(node)
}

/// Nexthop objects if the kernel has them (and `CBRNET_NEXTHOPS` is not `off`); else routes carry
/// their gateway.
fn nexthops_usable(raw: &mut Raw) -> bool {
    if std::env::var("CBRNET_NEXTHOPS").is_ok_and(|v| v == "off") {
        tracing::info!("nexthop objects are off (CBRNET_NEXTHOPS=off): routes carry their gateway");
        return false;
    }
    let usable = raw.supported();
    if !usable {
        tracing::info!("this kernel has no nexthop objects: routes carry their gateway");
    }
    usable
}

/// A node IP that is on no local interface, if one is.
async fn node_ip_missing(h: &Handle, cfg: &Config) -> Result<Option<IpAddr>> {
    let local = routes::connected(h).await?;
    Ok(cfg
        .node_ips()
        .into_iter()
        .find(|ip| !local.iter().any(|n| n.ip() == *ip)))
}

async fn run_loop(mut node: Node, sigterm: &mut tokio::signal::unix::Signal) -> Result<()> {
    let mut events = Events::open()?;
    let mut changes = retry("watching the lease store", &node.metrics, || node.store.watch()).await?;

    let mut resync = tokio::time::interval(node.cfg.args.resync_interval);
    let mut last_full = Instant::now();
    // After a long reconcile, one tick, not a burst of the ones missed.
    resync.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let renew_every = node.cfg.leases.renew_every();
    let mut renew_at = Instant::now() + renew_every;
    let mut backoff = Backoff::new();
    let mut retry_at: Option<Instant> = None;
    loop {
        let (mut routes_dirty, mut setup_dirty, mut sweep) = (false, false, false);
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            c = changes.changed() => match c {
                Some(c) => {
                    node.pending.keys.extend(c.keys);
                    node.pending.all |= c.all;
                    routes_dirty = true;
                }
                None => return Err(RoutedError::Config("the lease store stopped watching".into())),
            },
            e = events.next() => {
                for e in &e? {
                    let (r, s) = node.affected_by(e);
                    // Whatever calls for the routes to be looked at may have changed them.
                    node.routes_synced &= !r;
                    routes_dirty |= r;
                    setup_dirty |= s;
                }
            }
            _ = resync.tick() => {
                (routes_dirty, setup_dirty, sweep) = (true, true, true);
                // Every resync reads our own record (which also tells whether the store
                // answers). Our routes are followed by the kernel's events (and read again
                // whenever an event may hide silent changes, or events were lost); both the
                // store and our routes are read in full only now and then, as a safety net
                // under the store's watch and the kernel's events.
                node.pending.keys.insert(subnet_key(node.held.lease.subnet));
                if last_full.elapsed() >= FULL_CHECK_EVERY {
                    node.pending.all = true;
                    node.ours = None;
                    node.vx_entries = None;
                    last_full = Instant::now();
                }
            }
            _ = sleep_until(node.expiry_instant().into()), if node.next_expiry.is_some() => routes_dirty = true,
            _ = sleep_until(renew_at.into()) => {
                renew_at = Instant::now() + node.renew(&mut backoff).await;
                setup_dirty = true;
            }
            _ = sleep_until(retry_at.unwrap_or_else(Instant::now).into()), if retry_at.is_some() => {
                (routes_dirty, setup_dirty) = (true, true);
            }
        }
        if setup_dirty {
            match node.set_up().await {
                Ok(()) => {
                    node.metrics.set_ready(true);
                    node.metrics.set_problem(Problem::Setup, None);
                }
                Err(e) => {
                    tracing::error!("keeping the node set up: {e}");
                    node.metrics
                        .set_problem(Problem::Setup, Some(format!("the node set-up fails: {e}")));
                    node.metrics.error(ErrorKind::Setup);
                    retry_at = Some(Instant::now() + backoff.next());
                }
            }
            // The set-up may have changed which peers the backend can reach.
            routes_dirty |= node.want.is_none();
        }
        if routes_dirty {
            match node.reconcile().await {
                Ok(reassert) => {
                    retry_at = None;
                    backoff.reset();
                    if let Some(why) = reassert {
                        if !node.own_invalid {
                            tracing::warn!(subnet = %node.held.lease.subnet, "this node's lease is {why}; re-asserting it");
                        }
                        renew_at = Instant::now();
                    }
                }
                Err(e) => {
                    node.metrics.reconcile_errors.inc();
                    node.metrics.error(ErrorKind::Routes);
                    let d = backoff.next();
                    // A store failure was logged as it began (or changed its reason).
                    if !matches!(e, RoutedError::Cluster(ClusterError::Store(_))) {
                        tracing::warn!("reconcile: {e}; keeping the routes we have, retrying in {d:?}");
                    }
                    retry_at = Some(Instant::now() + d);
                }
            }
        }
        if sweep {
            node.reclaim();
        }
    }
    // Routes and lease stay: pods keep working across a restart.
    tracing::info!("stopping; routes and lease are left in place");
    Ok(())
}

impl Node {
    /// Does this kernel event call for a reconcile of the routes, of the node's set-up?
    fn affected_by(&mut self, e: &Event) -> (bool, bool) {
        match e {
            // A route of ours that went (by hand, or with a link) is no longer installed; a
            // foreign one that kept one of ours out lets it in.
            Event::RouteGone(protocol, dst) => {
                let ours = *protocol == routes::ROUTE_PROTOCOL;
                if let (true, Some(installed)) = (ours, self.ours.as_mut()) {
                    installed.remove(dst);
                }
                (ours || self.blocked.contains(dst), false)
            }
            // Our own routes are announced as they go in. A route that takes the place of one
            // of ours (another protocol, another gateway) means what we know of ours is wrong.
            Event::RouteNew(protocol, dst, gw) => {
                let replaced = self.ours.as_ref().is_some_and(|o| {
                    o.get(dst)
                        .is_some_and(|g| *protocol != routes::ROUTE_PROTOCOL || g != gw)
                });
                if replaced {
                    self.ours = None;
                }
                (replaced, false)
            }
            // Deleting a nexthop takes the routes through it along, without a word about them.
            Event::NexthopGone(_) => {
                self.ours = None;
                self.nh_known = None;
                (true, false)
            }
            // A link that goes down or away (a flap) takes its routes along, silently: read
            // ours again. Pods' veths come and go by the hundred and change nothing for them.
            // The VXLAN device and the underlay link are part of the set-up (the device itself,
            // the MTU that follows the underlay's).
            Event::Link { index, name } => {
                let is_bridge =
                    Some(*index) == self.bridge_index || name.as_deref() == Some(&self.cfg.args.bridge);
                let backend = Some(*index) == self.vx_index
                    || name.as_deref() == Some(vxlan::DEVICE)
                    || self.underlay.is_some_and(|(u, _)| u == *index);
                // Judged by what it carries, not by its name: only a link with an address of
                // ours (where our direct routes go) or the VXLAN device can take our routes
                // along. Pods' ports have no address; a link that gets one is an address event.
                let carries =
                    !is_bridge && (self.route_links.contains(index) || Some(*index) == self.vx_index);
                if carries {
                    self.ours = None;
                }
                if Some(*index) == self.vx_index {
                    self.vx_entries = None;
                }
                (carries, is_bridge || backend)
            }
            // Our FDB and neighbour entries on the VXLAN device: one that went, or one that is
            // not what we wrote, is put back. Every other device's are none of ours.
            Event::Neigh {
                index,
                deleted,
                entry,
            } => {
                let (Some(vx), Some(known)) = (self.vx_index, self.vx_entries.as_mut()) else {
                    return (Some(*index) == self.vx_index, false);
                };
                if *index != vx {
                    return (false, false);
                }
                // An entry of ours that went: read them all again rather than trusting the
                // event alone (a kernel may announce a replace as a deletion and an addition, and
                // a write of ours must never call for another one).
                if *deleted {
                    let ours = match entry {
                        Neigh::Fdb { mac, .. } => known.fdb.contains_key(mac),
                        Neigh::Ip { ip, .. } => known.neigh.contains_key(ip),
                    };
                    if ours {
                        self.vx_entries = None;
                    }
                    return (ours, false);
                }
                // Our own writes are announced too; a change to an entry of ours is not one of
                // them. Entries of other addresses (the kernel's own, while it resolves one) are
                // none of ours.
                let changed = match entry {
                    Neigh::Fdb { mac, dst } => known.fdb.get(mac).is_some_and(|d| Some(*d) != *dst),
                    Neigh::Ip { ip, mac } => known.neigh.get(ip).is_some_and(|m| Some(*m) != *mac),
                };
                if changed {
                    self.vx_entries = None;
                }
                (changed, false)
            }
            // Addresses decide which peers are neighbours, and the bridge carries the gateway;
            // an address that goes takes the routes through its network along, silently.
            Event::Address { index } => {
                let on_bridge = Some(*index) == self.bridge_index;
                if !on_bridge {
                    self.ours = None;
                }
                (true, on_bridge)
            }
            // What we know of the kernel's routes may be stale: read them again.
            Event::Lost => {
                self.ours = None;
                (true, true)
            }
        }
    }

    async fn set_up(&mut self) -> Result<()> {
        let vxlan_mtu = self.vxlan_mtu().await?;
        let pod_mtu = self.cfg.args.mtu.or(vxlan_mtu);
        let underlay = self.underlay_links().await?;
        let mut repaired =
            setup::reconcile(&self.nl, &self.cfg, &self.held.lease, pod_mtu, &underlay).await?;
        if let Ok(Some(l)) = self.nl.link(&self.cfg.args.bridge).await {
            self.bridge_index = Some(l.header.index);
        }
        repaired.extend(self.set_up_vxlan(vxlan_mtu).await?);
        if !repaired.is_empty() && self.metrics.is_ready() {
            for r in &repaired {
                tracing::warn!("repaired: {r}");
            }
            self.metrics.repairs.inc_by(repaired.len() as u64);
        }
        Ok(())
    }

    /// The names of the links the node IPs are on (needed only with IPv6 pods: whose router
    /// advertisements forwarding must not turn off).
    async fn underlay_links(&self) -> Result<Vec<String>> {
        if self.cfg.cluster_cidr_of(false).is_none() {
            return Ok(Vec::new());
        }
        let links = routes::connected_links(&self.nl.handle).await?;
        Ok(routes::link_names(&self.nl.handle, &links, &self.cfg.node_ips()).await)
    }

    /// The VXLAN device's MTU (`None` without one): the underlay link's less the encapsulation.
    /// While the node IP is on no link, the underlay's MTU as last seen.
    async fn vxlan_mtu(&mut self) -> Result<Option<u32>> {
        if !self.cfg.args.backend.uses_vxlan() {
            return Ok(None);
        }
        let links = routes::connected_links(&self.nl.handle).await?;
        let node_ip = self.cfg.node_ip;
        if let Some((_, index)) = links.iter().find(|(n, _)| n.ip() == node_ip) {
            let mut s = self.nl.handle.link().get().match_index(*index).execute();
            if let Ok(Some(l)) = futures::TryStreamExt::try_next(&mut s).await {
                if let Some(mtu) = cbrnet_bridge::netlink::mtu(&l) {
                    self.underlay = Some((*index, mtu));
                }
            }
        }
        let underlay = self.underlay.map_or(1500, |(_, mtu)| mtu);
        let ipv6_pods = self.cfg.cluster_cidr_of(false).is_some();
        Ok(Some(vxlan::device_mtu(underlay, node_ip, ipv6_pods)))
    }

    /// The VXLAN device as the backend wants it (or gone, on host-gw); returns what was repaired.
    /// A device of our name that is not ours is reported once and makes the node unhealthy; the
    /// peers that need it are unroutable meanwhile.
    async fn set_up_vxlan(&mut self, mtu: Option<u32>) -> Result<Vec<String>> {
        let args = &self.cfg.args;
        let Some(mtu) = mtu else {
            self.vx_index = None;
            self.vx_entries = None;
            return Ok(if vxlan::remove(&self.nl, args.vxlan_vni).await? {
                vec![format!("{} removed (--backend host-gw)", vxlan::DEVICE)]
            } else {
                Vec::new()
            });
        };
        let spec = vxlan::Spec {
            vni: args.vxlan_vni,
            port: args.vxlan_port,
            local: self.cfg.node_ip,
            mac: vxlan::vtep_mac(&args.node_name),
            mtu,
            addresses: setup::served(&self.cfg, &self.held.lease)
                .iter()
                .map(IpNetwork::network)
                .collect(),
            cluster_cidrs: self.cfg.cluster_cidrs().collect(),
            tx_csum_offload: args.vxlan_tx_csum_offload,
        };
        let (index, repaired, down) = match vxlan::ensure(&self.nl, &spec).await? {
            Ok((index, repaired)) => (Some(index), repaired, None),
            Err(why) => (None, Vec::new(), Some(why)),
        };
        if index != self.vx_index || down != self.vxlan_down {
            // Another device (or none): its entries and routes are not what we knew, and the
            // peers' paths may change.
            self.vx_entries = None;
            self.ours = None;
            self.nh_known = None;
            self.want = None;
        }
        if down != self.vxlan_down {
            match &down {
                Some(why) => {
                    tracing::error!("the VXLAN device cannot be used: {why}");
                    self.metrics.error(ErrorKind::Setup);
                }
                None if self.vxlan_down.is_some() => tracing::info!("{} is usable again", vxlan::DEVICE),
                None => {}
            }
            self.metrics.set_problem(Problem::Backend, down.clone());
        }
        (self.vx_index, self.vxlan_down) = (index, down);
        Ok(repaired)
    }

    /// Says, once each time it changes, whether the held lease lacks the subnet of a family that
    /// the cluster has (another record names it): a problem in `/healthz` while it does.
    fn judge_held(&mut self) {
        let why = lease::missing_partner(&self.cfg.leases, &self.held.lease);
        if why != self.missing_family {
            match &why {
                Some(w) => tracing::error!("{w}"),
                None if self.missing_family.is_some() => tracing::info!(
                    ipv6_subnet = %self.held.lease.ipv6_subnet.map(|s| s.to_string()).unwrap_or_default(),
                    "this node holds a subnet of each family again"
                ),
                None => {}
            }
            self.metrics.set_problem(Problem::Family, why.clone());
            self.missing_family = why;
        }
    }

    /// Renews the lease; returns when to renew next.
    async fn renew(&mut self, backoff: &mut Backoff) -> Duration {
        let every = self.cfg.leases.renew_every();
        let t0 = Instant::now();
        let r = lease::renew(
            &self.store,
            &self.cfg.leases,
            &self.held,
            &self.me,
            &mut self.seen,
        )
        .await;
        let took = t0.elapsed();
        match r {
            Ok(new) => {
                self.metrics.store_up.set(i64::from(true));
                if new.lease.subnet != self.held.lease.subnet {
                    tracing::error!(
                        old = %self.held.lease.subnet, new = %new.lease.subnet,
                        "the lease was lost; took a new subnet"
                    );
                }
                self.held = new;
                self.judge_held();
                self.me.prefer = Some(self.held.lease.subnet);
                self.own_invalid = false;
                self.metrics.set_problem(Problem::NameHeld, None);
                backoff.reset();
                // Others judge the lease by the time it was written, which this answer cannot
                // vouch for when it came back late: look at the store again at once.
                if took > every {
                    tracing::warn!("renewing the lease took {took:?}; checking the store again");
                    return Duration::ZERO;
                }
                every
            }
            // The node keeps its subnet and tries again at each renewal, quietly.
            Err(e @ ClusterError::OwnRecordInvalid { .. }) => {
                self.metrics.store_up.set(i64::from(true));
                if !self.own_invalid {
                    tracing::error!("{e}");
                    self.metrics.error(ErrorKind::Renew);
                    self.own_invalid = true;
                }
                backoff.reset();
                every
            }
            Err(e) => {
                let due = if !matches!(e, ClusterError::NameHeld { .. }) {
                    store_failed(&self.metrics, &e)
                } else {
                    // Another daemon took this node's name while this one was silent: a
                    // problem until a renewal succeeds, so that the set-up that follows each
                    // renewal cannot make the node look fine again.
                    self.metrics.set_problem(Problem::NameHeld, Some(e.to_string()));
                    true
                };
                let d = backoff.next();
                if due {
                    tracing::warn!("renewing the lease: {e}; retrying in {d:?}");
                }
                self.metrics.error(ErrorKind::Renew);
                d
            }
        }
    }

    /// Makes our routes match the live, valid leases; reports records and leases that cannot be
    /// used, once each. Reads from the store only what changed (everything when `pending.all`),
    /// from the kernel only our routes (and the foreign ones when a route is to be added). Returns
    /// why this node's own lease must be re-asserted, if it must.
    async fn reconcile(&mut self) -> Result<Option<&'static str>> {
        let t = Instant::now();
        let pending = std::mem::take(&mut self.pending);
        if let Err(e) = self.read_store(&pending).await {
            // What was not read is read again next time.
            self.pending.keys.extend(pending.keys);
            self.pending.all |= pending.all;
            let news = match &e {
                RoutedError::Cluster(c) => store_failed(&self.metrics, c),
                e => self.metrics.store_failed(&e.to_string()),
            };
            if news {
                tracing::warn!("reading the lease store: {e}; keeping the routes we have, retrying");
            }
            self.metrics.error(ErrorKind::Store);
            return Err(e);
        }
        self.metrics.store_up.set(1);
        let now = unix_now();
        let reassert = self.own_lease_check(now);
        let links = routes::connected_links(&self.nl.handle).await?;
        self.route_links = links.iter().map(|(_, i)| *i).collect();
        let expired = self.next_expiry.is_some_and(|e| e <= now);
        let desired = match self.want.take() {
            Some((d, seen)) if seen == links && !expired => d,
            _ => {
                self.vx_synced = false;
                self.routes_synced = false;
                self.work_out_desired(&links, now)
            }
        };
        self.want = Some((desired, links.clone()));
        let desired = &self.want.as_ref().expect("set just above").0;
        let want = &desired.routes;

        // A new peer's FDB and neighbour entries go in before its route, a gone peer's after it.
        let mut first_error = None;
        let vx_plan = match self.vx_index {
            Some(index) if !(self.vx_synced && self.vx_entries.is_some()) => {
                if self.vx_entries.is_none() {
                    self.vx_entries = Some(vxlan::dump(&self.nl.handle, index).await?);
                }
                let have = self.vx_entries.get_or_insert_with(Default::default);
                let plan = vxlan::plan(&desired.vxlan, have);
                if let Err(e) = vxlan::apply(&self.nl.handle, index, &plan, false, have).await {
                    first_error.get_or_insert(e);
                }
                Some((index, plan))
            }
            _ => None,
        };

        if self.ours.is_none() {
            self.ours = Some(self.raw.our_routes()?);
            self.routes_synced = false;
        }
        if !self.routes_synced {
            let h = self.nl.handle.clone();
            let ours = self.ours.get_or_insert_with(Default::default);
            // Foreign routes matter only for destinations we are about to add.
            let adding = want.keys().any(|d| !ours.contains_key(d));
            let foreign = if adding {
                self.raw.foreign_destinations()?
            } else {
                HashSet::new()
            };
            let plan = routes::plan(want, ours, &foreign);
            let via = if self.nexthops && !plan.put.is_empty() {
                match ensure_nexthops(
                    &mut self.raw,
                    &mut self.nh_known,
                    &plan.put,
                    &links,
                    self.vx_index,
                ) {
                    Ok(via) => via,
                    Err(e) => {
                        self.nh_known = None;
                        return Err(e);
                    }
                }
            } else {
                HashSet::new()
            };
            ours.reserve(plan.put.len());
            // Many requests in flight at once: the kernel takes them in order, and a cluster's worth
            // of routes goes in without a round trip each.
            // Each change is logged, but a cluster's worth at start is one line.
            let each = plan.put.len() + plan.delete.len() <= LOG_EACH;
            // Results are taken as they come, not gathered: a cluster's worth is tens of thousands.
            let vx_index = self.vx_index;
            // Routes `put` must delete before it adds (see there): few, only on a path change.
            let replacing: HashSet<IpNetwork> = plan
                .put
                .iter()
                .filter(|(d, hop)| hop.vxlan && d.is_ipv6() && ours.contains_key(d))
                .map(|(d, _)| *d)
                .collect();
            let replacing = &replacing;
            let puts = futures::stream::iter(plan.put.iter().map(|(dst, hop)| {
                let h = h.clone();
                let replaces = replacing.contains(dst);
                let nh = match hop.gw {
                    IpAddr::V4(g) if via.contains(&raw::id(g)) => Some(raw::id(g)),
                    _ => None,
                };
                async move {
                    (
                        *dst,
                        Some(hop.gw),
                        routes::put(&h, *dst, *hop, nh, vx_index, replaces).await,
                    )
                }
            }))
            .buffer_unordered(IN_FLIGHT);
            let dels = futures::stream::iter(plan.delete.iter().map(|dst| {
                let h = h.clone();
                async move { (*dst, None, routes::remove(&h, *dst).await) }
            }))
            .buffer_unordered(IN_FLIGHT);
            let mut done = futures::stream::select(puts, dels);
            let (mut put, mut removed) = (0, 0);
            while let Some((dst, gw, r)) = done.next().await {
                match (r, gw) {
                    (Ok(()), Some(gw)) => {
                        ours.insert(dst, Some(gw));
                        put += 1;
                        if each {
                            tracing::info!(%dst, %gw, "route installed");
                        }
                    }
                    (Ok(()), None) => {
                        ours.remove(&dst);
                        removed += 1;
                        if each {
                            tracing::info!(%dst, "route removed");
                        }
                    }
                    (Err(e), _) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            if !each {
                tracing::info!("{put} routes installed, {removed} removed");
            }
            // Nexthops no wanted route goes through any more (deleting one takes its routes along).
            // Those of an earlier run are known only from a dump.
            let sweep =
                self.nexthops && first_error.is_none() && !(plan.put.is_empty() && plan.delete.is_empty());
            if sweep && self.nh_known.is_none() {
                match self.raw.dump() {
                    Ok(k) => self.nh_known = Some(k),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            if let (Some(known), true) = (&mut self.nh_known, sweep && first_error.is_none()) {
                let used: HashSet<u32> = want
                    .values()
                    .filter_map(|hop| match hop.gw {
                        IpAddr::V4(g) => Some(raw::id(g)),
                        IpAddr::V6(_) => None,
                    })
                    .collect();
                let stale: Vec<u32> = known.keys().filter(|id| !used.contains(id)).copied().collect();
                if !stale.is_empty() {
                    match self.raw.delete(&stale) {
                        Ok(()) => known.retain(|id, _| used.contains(id)),
                        Err(e) => {
                            first_error.get_or_insert(e);
                        }
                    }
                }
            }
            self.blocked = plan.conflicts.iter().map(|(d, _)| *d).collect();
            self.metrics.route_conflicts.set(plan.conflicts.len() as i64);
            let conflicts = plan
                .conflicts
                .iter()
                .map(|(d, hop)| {
                    format!(
                        "{d} (via {}) is held by a route of another protocol; left alone",
                        hop.gw
                    )
                })
                .collect();
            for c in self.conflicts.fresh(conflicts) {
                tracing::warn!("route conflict: {c}");
            }
            for f in self.cfg.cluster_cidrs().map(|c| Family::of(&c)) {
                let n = want
                    .keys()
                    .filter(|d| Family::of(d) == f && ours.contains_key(*d))
                    .count();
                self.metrics
                    .routes_installed
                    .get_or_create(&metrics::FamilyLabel { family: f.as_str() })
                    .set(n as i64);
            }
            self.routes_synced = first_error.is_none();
        }
        if let (Some((index, vx_plan)), Some(have)) = (&vx_plan, self.vx_entries.as_mut()) {
            if first_error.is_none() && !vx_plan.is_empty() {
                if let Err(e) = vxlan::apply(&self.nl.handle, *index, vx_plan, true, have).await {
                    first_error.get_or_insert(e);
                }
            }
            self.vx_synced = first_error.is_none();
            if !vx_plan.is_empty() {
                let (put, gone) = (vx_plan.fdb_put.len(), vx_plan.fdb_delete.len());
                tracing::info!(
                    "VXLAN peers: {put} FDB entries written, {gone} removed; {} neighbour entries written, {} removed",
                    vx_plan.neigh_put.len(),
                    vx_plan.neigh_delete.len()
                );
            }
        }
        self.metrics.reconcile_duration.observe(t.elapsed().as_secs_f64());
        match first_error {
            // The routes (and nexthops) that failed are read back from the kernel next time.
            Some(e) => {
                self.ours = None;
                self.nh_known = None;
                self.vx_entries = None;
                Err(e)
            }
            None => Ok(reassert),
        }
    }

    /// Brings `known` up to date with what changed in the store (and forgets the routes wanted
    /// if anything did).
    async fn read_store(&mut self, pending: &Changed) -> Result<()> {
        if pending.all {
            self.known = Known::from_listing(self.store.list().await?);
            self.want = None;
            return Ok(());
        }
        for key in &pending.keys {
            let e = self.store.get(key).await?;
            if self.known.set(key, e) {
                self.want = None;
            }
        }
        Ok(())
    }

    /// The routes the live, valid leases call for; reports what cannot be used (once each) and
    /// notes when the next lease expires.
    fn work_out_desired(&mut self, links: &[(IpNetwork, u32)], now: u64) -> Desired {
        let mut problems: HashSet<String> = self
            .known
            .invalid()
            .map(|i| format!("store entry {}: {}", i.key, i.why))
            .collect();
        let mut live = Vec::new();
        self.next_expiry = None;
        for v in self.known.leases() {
            match self.cfg.leases.check(&v.lease) {
                Err(why) => {
                    problems.insert(format!("lease {}: {why}", subnet_key(v.lease.subnet)));
                }
                Ok(()) if !v.lease.expired(now) => {
                    live.push(&v.lease);
                    self.next_expiry = Some(
                        self.next_expiry
                            .map_or(v.lease.expires, |e| e.min(v.lease.expires)),
                    );
                }
                Ok(()) => {}
            }
        }
        for f in self.cfg.cluster_cidrs().map(|c| Family::of(&c)) {
            let n = live
                .iter()
                .filter(|l| l.subnets().iter().any(|s| Family::of(s) == f))
                .count();
            self.metrics
                .leases
                .get_or_create(&metrics::FamilyLabel { family: f.as_str() })
                .set(n as i64);
        }
        let local: Vec<IpNetwork> = links.iter().map(|(n, _)| *n).collect();
        self.metrics.node_ip_present.set(i64::from(
            self.cfg
                .node_ips()
                .iter()
                .all(|ip| local.iter().any(|n| n.ip() == *ip)),
        ));
        let me = backend::Local {
            mode: self.cfg.args.backend,
            node_name: &self.cfg.args.node_name,
            networks: &local,
            vxlan_down: self.vxlan_down.is_some(),
            own_vtep: self
                .cfg
                .args
                .backend
                .uses_vxlan()
                .then(|| vxlan::vtep_mac(&self.cfg.args.node_name)),
            underlay: Family::of(&IpNetwork::from(self.cfg.node_ip)),
            ipv6: self.cfg.cluster_cidr_of(false).is_some(),
        };
        let desired = backend::choose(live, &me);
        let mut unroutable = 0;
        for path in Path::ALL {
            for f in self.cfg.cluster_cidrs().map(|c| Family::of(&c)) {
                let n = desired.counts.get(&(path, f)).copied().unwrap_or(0);
                self.metrics
                    .peers
                    .get_or_create(&metrics::PathLabel {
                        path: path.as_str(),
                        family: f.as_str(),
                    })
                    .set(n as i64);
                if path == Path::Unroutable {
                    unroutable += n;
                }
            }
        }
        self.metrics.peers_unroutable.set(unroutable as i64);
        // Peers this node's own choice of backend cannot reach make it unhealthy; a peer whose
        // record cannot be used is that peer's problem.
        let here = &desired.unroutable_here;
        self.metrics.set_problem(
            Problem::Peers,
            (!here.is_empty()).then(|| {
                let some: Vec<&str> = here.iter().take(3).map(String::as_str).collect();
                format!(
                    "{} peer(s) cannot be reached with --backend host-gw (not on a network of this node): {}{} \
                     (--backend auto or vxlan reaches them)",
                    here.len(),
                    some.join(", "),
                    if here.len() > 3 { ", ..." } else { "" }
                )
            }),
        );
        problems.extend(desired.problems.iter().cloned());
        self.metrics.invalid_records.set(problems.len() as i64);
        for p in self.invalid.fresh(problems) {
            tracing::error!("skipped: {p}");
        }
        desired
    }

    /// When the next live lease expires, on this process's clock.
    fn expiry_instant(&self) -> Instant {
        let left = self.next_expiry.map_or(0, |e| e.saturating_sub(unix_now()));
        // A second late is fine: `expired` is judged in whole seconds.
        Instant::now() + Duration::from_secs(left + 1)
    }

    /// Is this node's own record still what it holds? A clock that jumped, a long pause or a
    /// hand in the store can make it look expired, vanish or change.
    fn own_lease_check(&self, now: u64) -> Option<&'static str> {
        let held = &self.held;
        match self.known.get(&subnet_key(held.lease.subnet)) {
            None => Some("missing from the store"),
            Some(Err(_)) => Some("not a valid record in the store"),
            Some(Ok(v)) if v.lease.node_name != self.me.node_name => Some("held by another node"),
            Some(Ok(v)) if v.lease.expired(now) => Some("expired"),
            Some(Ok(v)) if v.version != held.version => Some("changed in the store"),
            Some(Ok(_)) if self.missing_family.is_some() && self.partner_free() => {
                Some("without its slot's IPv6 subnet, which no other record names now")
            }
            Some(Ok(_)) => None,
        }
    }

    /// Is the IPv6 subnet that the held lease lacks named by no other record now? Looked at
    /// only while it is missing: the renewal that follows checks again against the store.
    fn partner_free(&self) -> bool {
        let records = self.known.leases().map(|v| &v.lease);
        lease::free_partner(&self.cfg.leases, self.held.lease.subnet, records).is_some()
    }

    /// Takes back the addresses of vanished pods of the CNI config directory's networks.
    fn reclaim(&mut self) {
        let (nets, problems) = reclaim::networks(&self.cfg.args.cni_conf_dir);
        let mut now: HashSet<String> = problems
            .iter()
            .map(|(f, why)| format!("{}: {why}", f.display()))
            .collect();
        let mut skipped = HashSet::new();
        for net in &nets {
            if let Err(why) = reclaim::is_ours(net, &self.cfg.args.subnet_file) {
                skipped.insert(format!("{} (network {}): {why}", net.file.display(), net.name));
                continue;
            }
            match reclaim::sweep(net) {
                // Its lock is held (an ADD in progress, or a plugin stopped holding it): the
                // loop never waits for it; the next sweep tries again.
                Ok(None) => tracing::debug!(network = %net.name, "reclaim: the network is locked; skipped"),
                Ok(Some(gone)) => {
                    for r in &gone {
                        tracing::warn!(network = %net.name, "reclaimed {} of {}: its pod is gone", r.ip, r.owner);
                    }
                    self.metrics.reclaimed.inc_by(gone.len() as u64);
                }
                Err(e) => {
                    now.insert(format!("{} (network {}): {e}", net.file.display(), net.name));
                    self.metrics.error(ErrorKind::Reclaim);
                }
            }
        }
        for p in self.conf_problems.fresh(now) {
            tracing::warn!("reclaim skipped {p}");
        }
        for p in self.reclaim_skips.fresh(skipped) {
            tracing::info!("reclaim leaves alone {p}");
        }
    }
}

/// Makes sure a nexthop object exists for the gateway of each route to `put`: a direct hop on
/// the link of the connected network it is on, a VXLAN hop on-link on the VXLAN device
/// (`vxlan_dev`); returns the ids of the nexthops the routes may use (a gateway the kernel
/// refused a nexthop for is routed the plain way). A nexthop's id is its gateway's address.
fn ensure_nexthops(
    nx: &mut Raw,
    known: &mut Option<HashMap<u32, Nexthop>>,
    put: &[(IpNetwork, routes::Hop)],
    links: &[(IpNetwork, u32)],
    vxlan_dev: Option<u32>,
) -> Result<HashSet<u32>> {
    let known = match known {
        Some(k) => k,
        None => known.insert(nx.dump()?),
    };
    let mut want: Vec<Nexthop> = put
        .iter()
        .filter_map(|(_, hop)| {
            let IpAddr::V4(gateway) = hop.gw else {
                return None;
            };
            let oif = match hop.vxlan {
                true => vxlan_dev,
                false => links.iter().find(|(n, _)| n.contains(hop.gw)).map(|(_, i)| *i),
            }?;
            Some(Nexthop {
                gateway,
                oif,
                onlink: hop.vxlan,
            })
        })
        .collect();
    want.sort_unstable_by_key(|nh| nh.gateway);
    want.dedup_by_key(|nh| nh.gateway);
    let missing: Vec<Nexthop> = want
        .iter()
        .filter(|nh| known.get(&raw::id(nh.gateway)) != Some(*nh))
        .copied()
        .collect();
    let mut refused = nx.put(&missing, |id| known.contains_key(&id))?;
    if refused.iter().any(|(_, e)| *e == nix::libc::EEXIST) {
        // What is known may be behind the kernel: a nexthop of ours (our protocol) made by
        // another run or process of ours since the last dump. Read them again, and take back
        // those that turn out ours; only another protocol's stays refused.
        *known = nx.dump()?;
        let ours: Vec<Nexthop> = refused
            .iter()
            .filter(|(nh, e)| *e == nix::libc::EEXIST && known.contains_key(&raw::id(nh.gateway)))
            .map(|(nh, _)| *nh)
            .collect();
        if !ours.is_empty() {
            let again = nx.put(&ours, |_| true)?;
            refused.retain(|(nh, _)| !ours.contains(nh));
            refused.extend(again);
        }
    }
    for (nh, errno) in &refused {
        if *errno == nix::libc::EEXIST {
            tracing::warn!(
                gateway = %nh.gateway,
                "nexthop id {} is another program's; routing it without a nexthop object",
                raw::id(nh.gateway)
            );
        } else {
            tracing::warn!(
                gateway = %nh.gateway,
                "the kernel refused a nexthop object ({}); routing it without one",
                std::io::Error::from_raw_os_error(*errno)
            );
        }
    }
    let refused: HashSet<u32> = refused.iter().map(|(nh, _)| raw::id(nh.gateway)).collect();
    known.reserve(missing.len());
    for nh in &missing {
        if !refused.contains(&raw::id(nh.gateway)) {
            known.insert(raw::id(nh.gateway), *nh);
        }
    }
    Ok(want
        .iter()
        .filter(|nh| known.get(&raw::id(nh.gateway)) == Some(*nh))
        .map(|nh| raw::id(nh.gateway))
        .collect())
}

/// `release`: drop this node's lease (decommission).
pub async fn release(store: &AnyStore, node_name: &str) -> Result<Released> {
    let all = store.list().await?;
    for v in all.leases.iter().filter(|v| v.lease.node_name == node_name) {
        if lease::release(store, v).await? {
            // A daemon still running on the node hears the deletion and writes the lease back
            // at once: the release did nothing, and must not say it did.
            let key = subnet_key(v.lease.subnet);
            for _ in 0..WRITE_BACK_WAIT_STEPS {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if let Some(Ok(back)) = store.get(&key).await? {
                    if back.lease.node_name == node_name {
                        return Ok(Released::WrittenBack(v.lease.subnet.to_string()));
                    }
                }
            }
            return Ok(Released::Yes);
        }
    }
    Ok(Released::NoLease)
}

/// How long `release` watches for a running daemon writing the lease back (its watch and a
/// renewal take milliseconds), in tenths of a second.
const WRITE_BACK_WAIT_STEPS: u32 = 20;

/// What `release` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Released {
    Yes,
    NoLease,
    /// The node's daemon still runs: it wrote its lease (this subnet) back.
    WrittenBack(String),
}
