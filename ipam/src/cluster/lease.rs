//! Cluster-level subnet leases: each node holds one subnet of the cluster CIDR.
//!
//! The store decides every conflict by an atomic create-if-absent or compare-and-swap on one key
//! per subnet, so two nodes can never hold the same subnet, however many acquire at once; the
//! logic here only proposes.
//!
//! Time: a lease's `expires` is wall-clock, and clocks jump. So a record is never taken from
//! another holder on its `expires` alone: it must also have been seen unchanged (same version)
//! for [`LeaseConfig::grace`] of this process's monotonic time ([`Seen`]). A holder that is alive
//! renews every [`LeaseConfig::renew_every`] (well inside the grace), which changes the version,
//! so no clock jump anywhere can make another node take its subnet.

use super::error::ClusterError;
use super::record::{check_fields, subnet_key, unix_now, Lease, Listing, Versioned};
use super::store::LeaseStore;
use ipnetwork::{IpNetwork, Ipv6Network};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

/// The longest interval between renewals, whatever the TTL.
pub const MAX_RENEW_EVERY: Duration = Duration::from_secs(300);

/// One family's cluster CIDR and how it is carved into node subnets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub cidr: IpNetwork,
    pub subnet_len: u8,
    pub first: Option<IpNetwork>,
    pub last: Option<IpNetwork>,
}

/// The longest node subnets: an IPv4 /30 holds a gateway and one pod; an IPv6 /120 the same
/// order of pods as an IPv4 /24.
const MAX_LEN_V4: u8 = 30;
const MAX_LEN_V6: u8 = 120;

impl Pool {
    pub fn new(cidr: IpNetwork, subnet_len: u8) -> Result<Pool, ClusterError> {
        if cidr.ip() != cidr.network() {
            return Err(ClusterError::Config(format!(
                "cluster CIDR {cidr} has host bits set"
            )));
        }
        let max = if cidr.is_ipv4() { MAX_LEN_V4 } else { MAX_LEN_V6 };
        if subnet_len < cidr.prefix() || subnet_len > max {
            return Err(ClusterError::Config(format!(
                "subnet length /{subnet_len} must be between the cluster CIDR {cidr}'s /{} and /{max}",
                cidr.prefix()
            )));
        }
        Ok(Pool {
            cidr,
            subnet_len,
            first: None,
            last: None,
        })
    }

    fn bits(&self) -> u32 {
        if self.cidr.is_ipv4() {
            32
        } else {
            128
        }
    }

    fn step(&self) -> u128 {
        1u128 << (self.bits() - u32::from(self.subnet_len))
    }

    fn addr(ip: IpAddr) -> u128 {
        match ip {
            IpAddr::V4(v) => u128::from(u32::from(v)),
            IpAddr::V6(v) => u128::from(v),
        }
    }

    /// The first address of the first subnet, and of the last, that may be leased.
    fn span(&self) -> (u128, u128) {
        let base = Self::addr(self.cidr.network());
        let size = 1u128
            .checked_shl(self.bits() - u32::from(self.cidr.prefix()))
            .unwrap_or(0);
        // A /0 of IPv6 wraps: its last subnet starts `step` below the top.
        let last_net = base.wrapping_add(size).wrapping_sub(self.step());
        let start = self.first.map_or(base, |f| Self::addr(f.network()));
        let end = self
            .last
            .map_or(last_net, |l| Self::addr(l.network()))
            .min(last_net);
        (start, end)
    }

    /// How many subnets may be leased (saturated: an IPv6 pool may hold more than counts).
    pub fn count(&self) -> u128 {
        let (start, end) = self.span();
        if start > end {
            return 0;
        }
        ((end - start) / self.step()).saturating_add(1)
    }

    /// The `i`-th subnet that may be leased.
    pub fn nth(&self, i: u128) -> Option<IpNetwork> {
        if i >= self.count() {
            return None;
        }
        let a = self.span().0 + i * self.step();
        let ip = match self.cidr {
            IpNetwork::V4(_) => IpAddr::V4(Ipv4Addr::from(u32::try_from(a).ok()?)),
            IpNetwork::V6(_) => IpAddr::V6(Ipv6Addr::from(a)),
        };
        IpNetwork::new(ip, self.subnet_len).ok()
    }

    /// Where `subnet` is among the subnets that may be leased.
    pub fn index_of(&self, subnet: IpNetwork) -> Option<u128> {
        if !self.holds(subnet) {
            return None;
        }
        let (start, end) = self.span();
        let a = Self::addr(subnet.network());
        (start..=end).contains(&a).then(|| (a - start) / self.step())
    }

    /// Is `subnet` one of the subnets the cluster CIDR is carved into (family, length, inside)?
    pub fn holds(&self, subnet: IpNetwork) -> bool {
        subnet.is_ipv4() == self.cidr.is_ipv4()
            && subnet.prefix() == self.subnet_len
            && subnet.ip() == subnet.network()
            && self.cidr.contains(subnet.network())
    }
}

/// How the cluster CIDRs (one per family) are carved, and how long leases last. A node's lease
/// holds one subnet of each: the `i`-th subnet of the first family (IPv4 in a dual-stack
/// cluster) goes with the `i`-th of the second, so two nodes that hold different keys never
/// share a subnet of either family, whatever races between them.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// The first family's pool, then (dual-stack) the IPv6 one.
    pub pools: Vec<Pool>,
    pub ttl: Duration,
    /// How long a record must stay unchanged, as seen here, before it may be taken from its
    /// holder (expired, or held under our name by another daemon).
    pub grace: Duration,
}

/// One node's subnets: the first family's (the record's key), and the IPv6 one of a dual-stack
/// cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub subnet: IpNetwork,
    pub ipv6: Option<Ipv6Network>,
}

impl LeaseConfig {
    /// A cluster of one family.
    pub fn new(cluster_cidr: IpNetwork, subnet_len: u8, ttl: Duration) -> Result<LeaseConfig, ClusterError> {
        if ttl < Duration::from_secs(2) {
            return Err(ClusterError::Config("the lease TTL must be at least 2s".into()));
        }
        let renew = (ttl / 3).min(MAX_RENEW_EVERY);
        Ok(LeaseConfig {
            pools: vec![Pool::new(cluster_cidr, subnet_len)?],
            ttl,
            grace: ttl.min(renew * 3),
        })
    }

    /// Makes the cluster dual-stack with the other family's CIDR; the IPv4 pool comes first.
    pub fn with_family(mut self, cluster_cidr: IpNetwork, subnet_len: u8) -> Result<Self, ClusterError> {
        let pool = Pool::new(cluster_cidr, subnet_len)?;
        if self.pools.len() != 1 || self.pools[0].cidr.is_ipv4() == cluster_cidr.is_ipv4() {
            return Err(ClusterError::Config(format!(
                "cluster CIDR {cluster_cidr}: at most one of each family"
            )));
        }
        self.pools.push(pool);
        self.pools.sort_by_key(|p| !p.cidr.is_ipv4());
        Ok(self)
    }

    /// The first family's pool: the one the records are keyed by.
    pub fn primary(&self) -> &Pool {
        &self.pools[0]
    }

    /// The IPv6 pool of a dual-stack cluster.
    pub fn ipv6(&self) -> Option<&Pool> {
        self.pools.get(1)
    }

    fn pool_mut(&mut self, family_of: IpNetwork) -> Option<&mut Pool> {
        self.pools
            .iter_mut()
            .find(|p| p.cidr.is_ipv4() == family_of.is_ipv4())
    }

    /// Limits the subnets of one family that may be leased to `first..=last` (the family is that
    /// of the subnets given); each must be one of the subnets its cluster CIDR is carved into.
    pub fn with_range(
        mut self,
        first: Option<IpNetwork>,
        last: Option<IpNetwork>,
    ) -> Result<Self, ClusterError> {
        let Some(any) = first.or(last) else {
            return Ok(self);
        };
        if let (Some(f), Some(l)) = (first, last) {
            if f.is_ipv4() != l.is_ipv4() {
                return Err(ClusterError::Config(format!(
                    "first subnet {f} and last subnet {l} are of different families"
                )));
            }
        }
        let Some(pool) = self.pool_mut(any) else {
            return Err(ClusterError::Config(format!(
                "subnet {any}: the cluster has no CIDR of its family"
            )));
        };
        let check = |what: &str, n: IpNetwork| -> Result<IpNetwork, ClusterError> {
            if pool.holds(n) {
                Ok(n)
            } else {
                Err(ClusterError::Config(format!(
                    "{what} {n} is not a /{} subnet of {}",
                    pool.subnet_len, pool.cidr
                )))
            }
        };
        let first = first.map(|n| check("first subnet", n)).transpose()?;
        let last = last.map(|n| check("last subnet", n)).transpose()?;
        if first.is_some() {
            pool.first = first;
        }
        if last.is_some() {
            pool.last = last;
        }
        if let (Some(f), Some(l)) = (pool.first, pool.last) {
            if Pool::addr(f.network()) > Pool::addr(l.network()) {
                return Err(ClusterError::Config(format!(
                    "first subnet {f} is after last subnet {l}"
                )));
            }
        }
        Ok(self)
    }

    /// How often a held lease is renewed: a third of the TTL, at most [`MAX_RENEW_EVERY`].
    pub fn renew_every(&self) -> Duration {
        (self.ttl / 3).min(MAX_RENEW_EVERY)
    }

    /// Every slot a lease may take, in order: as many as the smaller pool holds.
    pub fn slots(&self) -> impl Iterator<Item = Slot> + '_ {
        let n = self.pools.iter().map(Pool::count).min().unwrap_or(0);
        (0..n).map_while(move |i| self.slot(i))
    }

    fn slot(&self, i: u128) -> Option<Slot> {
        let subnet = self.primary().nth(i)?;
        let ipv6 = match self.ipv6() {
            None => None,
            Some(p) => match p.nth(i)? {
                IpNetwork::V6(v6) => Some(v6),
                IpNetwork::V4(_) => return None,
            },
        };
        Some(Slot { subnet, ipv6 })
    }

    /// The slot of a first-family subnet (its IPv6 partner in a dual-stack cluster), if the
    /// subnet is one that may be leased and has a partner.
    pub fn slot_of(&self, subnet: IpNetwork) -> Option<Slot> {
        self.slot(self.primary().index_of(subnet)?)
    }

    /// Every first-family subnet a lease may take, in order.
    pub fn subnets(&self) -> impl Iterator<Item = IpNetwork> + '_ {
        self.slots().map(|s| s.subnet)
    }

    /// Is `subnet` one of the first family's subnets?
    pub fn holds(&self, subnet: IpNetwork) -> bool {
        self.primary().holds(subnet)
    }

    /// Judges a lease against this cluster: valid fields, a subnet of the first family's
    /// CIDR, and an IPv6 subnet (if it has one) of the IPv6 CIDR. A lease without the IPv6
    /// subnet of a dual-stack cluster is valid (an older node, routed on the family it has);
    /// one with an IPv6 subnet in a cluster without IPv6 is valid for its first family.
    pub fn check(&self, l: &Lease) -> Result<(), String> {
        check_fields(l)?;
        let p = self.primary();
        if !p.holds(l.subnet) {
            return Err(format!(
                "subnet {} is not a /{} subnet of the cluster CIDR {}",
                l.subnet, p.subnet_len, p.cidr
            ));
        }
        if let (Some(v6), Some(p)) = (l.ipv6_subnet, self.ipv6()) {
            if !p.holds(IpNetwork::V6(v6)) {
                return Err(format!(
                    "IPv6 subnet {v6} is not a /{} subnet of the cluster CIDR {}",
                    p.subnet_len, p.cidr
                ));
            }
        }
        Ok(())
    }

    /// The error of a cluster with no free slot: names the pool that ran out first.
    fn full(&self) -> ClusterError {
        let p = self
            .pools
            .iter()
            .min_by_key(|p| p.count())
            .unwrap_or_else(|| self.primary());
        ClusterError::ClusterFull(p.cidr.to_string(), p.subnet_len)
    }
}

/// The IPv6 subnet a lease of `subnet` names: its slot's partner, unless one of `records` under
/// another key names that one. A subnet without a partner (the cluster's CIDRs changed under a
/// held lease) is held alone: the node's pods live in it. So is one whose partner another record
/// names (a node of another configuration, or a hand edit): two nodes must never share a
/// subnet, and the node's pods live in its first one.
pub fn free_partner<'a>(
    cfg: &LeaseConfig,
    subnet: IpNetwork,
    records: impl IntoIterator<Item = &'a Lease>,
) -> Option<Ipv6Network> {
    let v6 = cfg.slot_of(subnet)?.ipv6?;
    records
        .into_iter()
        .all(|l| l.ipv6_subnet != Some(v6) || l.subnet == subnet)
        .then_some(v6)
}

/// Why `l`, this node's lease, lacks the IPv6 subnet its slot pairs with, if it does: the
/// partner is named by another record (see [`free_partner`]).
pub fn missing_partner(cfg: &LeaseConfig, l: &Lease) -> Option<String> {
    let want = cfg.slot_of(l.subnet)?.ipv6?;
    (l.ipv6_subnet != Some(want)).then(|| {
        format!(
            "this node holds no IPv6 subnet: {want}, the partner of its subnet {}, is named by \
             another node's lease (`cbrnet-routed leases` shows which); its new pods get no IPv6 \
             address until that lease is gone",
            l.subnet
        )
    })
}

fn overlaps(a: IpNetwork, b: IpNetwork) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

/// Who asks for a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimant {
    pub node_name: String,
    /// The node's address (its IPv4 one, if it has one of each family).
    pub node_ip: IpAddr,
    /// The node's IPv6 address, when it has one of each family.
    pub node_ip_v6: Option<Ipv6Addr>,
    /// This daemon instance's identity: the same for a restart on the same node, another for a
    /// daemon elsewhere.
    pub holder: String,
    /// The MAC of the node's VXLAN device, published with the lease (`None`: no VXLAN device).
    pub vtep_mac: Option<String>,
    /// The subnet the node last published, taken again when no record holds it.
    pub prefer: Option<IpNetwork>,
}

impl Claimant {
    /// The record of this claimant for `subnet` with `ipv6` beside it.
    fn lease(&self, subnet: IpNetwork, ipv6: Option<Ipv6Network>, cfg: &LeaseConfig) -> Lease {
        Lease {
            subnet,
            ipv6_subnet: ipv6,
            node_name: self.node_name.clone(),
            node_ip: self.node_ip,
            node_ip_v6: self.node_ip_v6,
            expires: unix_now().saturating_add(cfg.ttl.as_secs()),
            holder: Some(self.holder.clone()),
            vtep_mac: self.vtep_mac.clone(),
        }
    }
}

/// Records as this process has seen them: each key's version and since when (monotonic) it has
/// had it. Kept across calls by whoever acquires. Only the records whose silence may matter to
/// an acquire are followed (expired ones, and those of the acquirer's name): a cluster's live
/// leases are not kept twice. A record followed only from when it expired waits at least its
/// grace from then, never less.
#[derive(Debug, Default)]
pub struct Seen {
    since: HashMap<IpNetwork, (u64, Instant)>,
}

impl Seen {
    /// Notes the records of `listing` that `follow` picks as seen at `now`; forgets the others.
    pub fn observe(&mut self, listing: &Listing, now: Instant, follow: impl Fn(&Versioned) -> bool) {
        let mut next = HashMap::new();
        for v in listing.leases.iter().filter(|v| follow(v)) {
            let since = match self.since.get(&v.lease.subnet) {
                Some((version, since)) if *version == v.version => *since,
                _ => now,
            };
            next.insert(v.lease.subnet, (v.version, since));
        }
        self.since = next;
    }

    /// How long `v` has been unchanged, as seen here.
    pub fn unchanged_for(&self, v: &Versioned, now: Instant) -> Duration {
        match self.since.get(&v.lease.subnet) {
            Some((version, since)) if *version == v.version => now.saturating_duration_since(*since),
            _ => Duration::ZERO,
        }
    }
}

/// Gets `me` a lease. The one held under its node name, if the holder is this daemon (or an
/// earlier run of it, on the same node) or has been silent for the grace period, refreshed with
/// its current IP and a new expiry; a name held by another live daemon is refused
/// ([`ClusterError::NameHeld`]). Otherwise the first subnet that no valid or invalid record
/// blocks, or whose lease expired and has been silent for the grace period. Lost races are
/// retried from a fresh list.
pub async fn acquire<S: LeaseStore>(
    store: &S,
    cfg: &LeaseConfig,
    me: &Claimant,
    seen: &mut Seen,
) -> Result<Versioned, ClusterError> {
    for _ in 0..1000 {
        let listing = store.list().await?;
        let (now, t) = (unix_now(), Instant::now());
        seen.observe(&listing, t, |v| {
            v.lease.expired(now) || v.lease.node_name == me.node_name
        });
        let (valid, bad): (Vec<&Versioned>, Vec<&Versioned>) =
            listing.leases.iter().partition(|v| cfg.check(&v.lease).is_ok());
        if let Some(mine) = valid.iter().find(|v| v.lease.node_name == me.node_name) {
            let ours = mine.lease.holder.as_deref().is_none_or(|h| h == me.holder);
            if !ours && seen.unchanged_for(mine, t) < cfg.grace {
                return Err(ClusterError::NameHeld {
                    name: me.node_name.clone(),
                    node_ip: mine.lease.node_ip,
                    holder: mine.lease.holder.clone().unwrap_or_default(),
                    grace: cfg.grace,
                });
            }
            let subnet = mine.lease.subnet;
            let ipv6 = free_partner(cfg, subnet, listing.leases.iter().map(|v| &v.lease));
            let l = me.lease(subnet, ipv6, cfg);
            match store.update(&l, mine.version, cfg.ttl).await? {
                Some(version) => return Ok(Versioned { lease: l, version }),
                None => continue,
            }
        }
        // Whatever is in the store blocks the subnets it overlaps: valid leases by key, records
        // that fail the checks and entries that are no records at all by what they name.
        let by_key: HashMap<IpNetwork, &Versioned> = valid.iter().map(|v| (v.lease.subnet, *v)).collect();
        let blocked: Vec<IpNetwork> = bad
            .iter()
            .map(|v| v.lease.subnet)
            .chain(listing.invalid.iter().filter_map(|i| i.subnet))
            .collect();
        // An IPv6 subnet that a record under another key names is not free either.
        let ipv6_taken: HashMap<Ipv6Network, IpNetwork> = listing
            .leases
            .iter()
            .filter_map(|v| Some((v.lease.ipv6_subnet?, v.lease.subnet)))
            .collect();
        let mut waiting = false;
        let mut target = None;
        // The subnet this node last published comes first: its bridge, its file and its pods'
        // addresses still name it, though its record is gone (a store that forgets an expired
        // record, or one removed by hand).
        let preferred = me.prefer.and_then(|p| cfg.slot_of(p));
        for slot in preferred.into_iter().chain(cfg.slots()) {
            let s = slot.subnet;
            if blocked.iter().any(|b| overlaps(*b, s)) {
                continue;
            }
            if slot
                .ipv6
                .is_some_and(|v6| ipv6_taken.get(&v6).is_some_and(|k| *k != s))
            {
                continue;
            }
            match by_key.get(&s) {
                None => {
                    target = Some((slot, None));
                    break;
                }
                Some(v) if v.lease.expired(now) => {
                    if seen.unchanged_for(v, t) >= cfg.grace {
                        target = Some((slot, Some(v.version)));
                        break;
                    }
                    waiting = true;
                }
                Some(_) => {}
            }
        }
        let Some((slot, old)) = target else {
            return Err(if waiting {
                ClusterError::Store(format!(
                    "no free subnet yet: the expired leases must stay unrenewed for {:?} first",
                    cfg.grace
                ))
            } else {
                cfg.full()
            });
        };
        let l = me.lease(slot.subnet, slot.ipv6, cfg);
        let res = match old {
            Some(version) => store.update(&l, version, cfg.ttl).await?,
            None => store.create(&l, cfg.ttl).await?,
        };
        if let Some(version) = res {
            return Ok(Versioned { lease: l, version });
        }
    }
    Err(ClusterError::Store(
        "could not acquire a lease: too much contention".into(),
    ))
}

/// Renews a held lease (with the node's current IP). If the record changed meanwhile, the held
/// subnet comes first, since the node's pods live in it: a record that vanished is written again,
/// one still ours (a renewal whose answer was lost) is renewed at its new version, and one that
/// is no valid lease is refused ([`ClusterError::OwnRecordInvalid`]: the entry blocks the subnet
/// for everyone else, so the node keeps it). Only a record that another node now holds makes the
/// node acquire again. An IPv6 subnet the held record does not name yet (an older node's record,
/// or new cluster CIDRs) is added only if no record under another key names it, which costs a
/// listing of the store.
pub async fn renew<S: LeaseStore>(
    store: &S,
    cfg: &LeaseConfig,
    held: &Versioned,
    me: &Claimant,
    seen: &mut Seen,
) -> Result<Versioned, ClusterError> {
    let subnet = held.lease.subnet;
    let ipv6 = match free_partner(cfg, subnet, []) {
        Some(v6) if held.lease.ipv6_subnet != Some(v6) => {
            let listing = store.list().await?;
            free_partner(cfg, subnet, listing.leases.iter().map(|v| &v.lease))
        }
        same => same,
    };
    let l = me.lease(subnet, ipv6, cfg);
    if let Some(version) = store.update(&l, held.version, cfg.ttl).await? {
        return Ok(Versioned { lease: l, version });
    }
    let key = subnet_key(held.lease.subnet);
    let written = match store.get(&key).await? {
        None => store.create(&l, cfg.ttl).await?,
        Some(Ok(v))
            if v.lease.node_name == me.node_name
                && v.lease.holder.as_deref().is_none_or(|h| h == me.holder) =>
        {
            store.update(&l, v.version, cfg.ttl).await?
        }
        Some(Ok(_)) => None,
        Some(Err(bad)) => return Err(ClusterError::OwnRecordInvalid { key, why: bad.why }),
    };
    match written {
        Some(version) => Ok(Versioned { lease: l, version }),
        None => acquire(store, cfg, me, seen).await,
    }
}

/// Gives the subnet back (node decommissioned). `Ok(false)` if it was no longer ours.
pub async fn release<S: LeaseStore>(store: &S, held: &Versioned) -> Result<bool, ClusterError> {
    store.delete(held.lease.subnet, held.version).await
}

/// The valid leases in force now.
pub async fn live<S: LeaseStore>(store: &S, cfg: &LeaseConfig) -> Result<Vec<Lease>, ClusterError> {
    let now = unix_now();
    Ok(store
        .list()
        .await?
        .leases
        .into_iter()
        .map(|v| v.lease)
        .filter(|l| !l.expired(now) && cfg.check(l).is_ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipnetwork::Ipv4Network;

    fn cfg() -> LeaseConfig {
        LeaseConfig::new("10.244.0.0/16".parse().unwrap(), 24, Duration::from_secs(60)).unwrap()
    }

    #[test]
    fn carves_in_order_within_bounds() {
        let c = cfg();
        let v: Vec<_> = c.subnets().collect();
        assert_eq!(v.len(), 256);
        assert_eq!(v[0].to_string(), "10.244.0.0/24");
        assert_eq!(v[255].to_string(), "10.244.255.0/24");
        let c = c
            .with_range(
                Some("10.244.10.0/24".parse().unwrap()),
                Some("10.244.12.0/24".parse().unwrap()),
            )
            .unwrap();
        let v: Vec<String> = c.subnets().map(|s| s.to_string()).collect();
        assert_eq!(v, ["10.244.10.0/24", "10.244.11.0/24", "10.244.12.0/24"]);
        assert_eq!(subnet_key("10.244.3.0/24".parse().unwrap()), "10.244.3.0-24");
    }

    #[test]
    fn bad_configurations_are_refused() {
        let net = |s: &str| s.parse::<IpNetwork>().unwrap();
        let ttl = Duration::from_secs(60);
        assert!(LeaseConfig::new(net("10.244.0.0/16"), 8, ttl).is_err());
        assert!(LeaseConfig::new(net("10.244.0.0/16"), 31, ttl).is_err());
        assert!(LeaseConfig::new(net("10.244.1.0/16"), 24, ttl).is_err());
        assert!(LeaseConfig::new(net("fd00::/64"), 60, ttl).is_err());
        assert!(LeaseConfig::new(net("fd00::/64"), 121, ttl).is_err());
        assert!(LeaseConfig::new(net("fd00::1/56"), 64, ttl).is_err());
        // one CIDR of each family at most
        assert!(cfg().with_family(net("10.245.0.0/16"), 24).is_err());
        let dual = cfg().with_family(net("fd00::/56"), 64).unwrap();
        assert!(dual.clone().with_family(net("fd01::/56"), 64).is_err());
        for (first, last) in [
            (Some("fd00:0:0:1::/64"), Some("10.244.1.0/24")),
            (Some("fd01::/64"), None),
            (Some("fd00::/80"), None),
        ] {
            let r = dual.clone().with_range(first.map(net), last.map(net));
            assert!(matches!(r, Err(ClusterError::Config(_))), "{first:?} {last:?}");
        }
        let r = cfg().with_range(Some(net("fd00::/64")), None);
        assert!(matches!(r, Err(ClusterError::Config(_))), "no IPv6 CIDR to range");
        assert!(LeaseConfig::new(net("10.244.0.0/16"), 24, Duration::from_secs(1)).is_err());
        for (first, last) in [
            (Some("10.245.0.0/24"), None),
            (Some("10.244.1.0/25"), None),
            (None, Some("10.244.1.7/24")),
            (Some("10.244.9.0/24"), Some("10.244.1.0/24")),
        ] {
            let r = cfg().with_range(first.map(net), last.map(net));
            assert!(matches!(r, Err(ClusterError::Config(_))), "{first:?} {last:?}");
        }
    }

    #[test]
    fn carves_ipv6_and_pairs_the_families_by_position() {
        let net = |s: &str| s.parse::<IpNetwork>().unwrap();
        let ttl = Duration::from_secs(60);
        let v6 = LeaseConfig::new(net("fd00:10:244::/56"), 64, ttl).unwrap();
        let v: Vec<String> = v6.subnets().map(|s| s.to_string()).collect();
        assert_eq!(v.len(), 256);
        assert_eq!(v[0], "fd00:10:244::/64");
        assert_eq!(v[255], "fd00:10:244:ff::/64");
        assert_eq!(subnet_key(net("fd00:10:244:3::/64")), "fd00:10:244:3::-64");
        // the IPv4 pool comes first whichever is given first; positions pair the families
        let dual = LeaseConfig::new(net("fd00:10:244::/56"), 64, ttl)
            .unwrap()
            .with_family(net("10.244.0.0/16"), 24)
            .unwrap()
            .with_range(Some(net("fd00:10:244:10::/64")), None)
            .unwrap()
            .with_range(Some(net("10.244.2.0/24")), Some(net("10.244.4.0/24")))
            .unwrap();
        let slots: Vec<(String, String)> = dual
            .slots()
            .map(|s| (s.subnet.to_string(), s.ipv6.unwrap().to_string()))
            .collect();
        assert_eq!(
            slots,
            [
                ("10.244.2.0/24".into(), "fd00:10:244:10::/64".into()),
                ("10.244.3.0/24".into(), "fd00:10:244:11::/64".into()),
                ("10.244.4.0/24".into(), "fd00:10:244:12::/64".into()),
            ]
        );
        assert_eq!(
            dual.slot_of(net("10.244.3.0/24"))
                .and_then(|s| s.ipv6)
                .map(|n| n.to_string()),
            Some("fd00:10:244:11::/64".into())
        );
        assert_eq!(dual.slot_of(net("10.244.9.0/24")), None);
        // the smaller pool bounds the slots, and is the one a full cluster names
        let small = cfg().with_family(net("fd00::/126"), 127);
        assert!(small.is_err(), "an IPv6 node subnet longer than /120");
        let small = cfg().with_family(net("fd00::/62"), 64).unwrap();
        assert_eq!(small.slots().count(), 4);
        assert!(small.full().to_string().contains("fd00::/62"), "{}", small.full());
        // a record's IPv6 subnet must be the cluster's
        let mut l = Lease {
            subnet: net("10.244.1.0/24"),
            ipv6_subnet: Some("fd01::/64".parse().unwrap()),
            node_name: "n".into(),
            node_ip: "192.168.1.1".parse().unwrap(),
            node_ip_v6: None,
            expires: 1,
            holder: None,
            vtep_mac: None,
        };
        assert!(small.check(&l).unwrap_err().contains("IPv6 subnet"));
        l.ipv6_subnet = None;
        assert_eq!(small.check(&l), Ok(()), "one family in a dual-stack cluster");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        // However the two families are sized and ranged, every slot has both, and no subnet of
        // either family is in two slots or outside its cluster CIDR.
        #[test]
        fn slots_never_overlap_and_never_miss_a_family(
            a4 in proptest::prelude::any::<u32>(), p4 in 8u8..=22, d4 in 0u8..=8,
            a6 in proptest::prelude::any::<u128>(), p6 in 32u8..=112, d6 in 0u8..=8,
            skip4 in 0u32..4, skip6 in 0u32..4,
        ) {
            let v4 = Ipv4Network::new(Ipv4Addr::from(a4), p4).unwrap();
            let v4 = IpNetwork::new(IpAddr::V4(v4.network()), p4).unwrap();
            let v6 = Ipv6Network::new(Ipv6Addr::from(a6), p6).unwrap();
            let v6 = IpNetwork::new(IpAddr::V6(v6.network()), p6).unwrap();
            let mut c = LeaseConfig::new(v4, p4 + d4, Duration::from_secs(60))
                .unwrap()
                .with_family(v6, p6 + d6)
                .unwrap();
            let first4 = c.primary().nth(u128::from(skip4));
            let first6 = c.ipv6().unwrap().nth(u128::from(skip6));
            c = c.with_range(first4, None).unwrap().with_range(first6, None).unwrap();
            let expect = c.pools.iter().map(Pool::count).min().unwrap();
            let (mut seen4, mut seen6) = (std::collections::HashSet::new(), std::collections::HashSet::new());
            for s in c.slots() {
                let six = s.ipv6.expect("a dual-stack slot has an IPv6 subnet");
                proptest::prop_assert!(c.holds(s.subnet) && v4.contains(s.subnet.network()));
                proptest::prop_assert!(c.ipv6().unwrap().holds(IpNetwork::V6(six)));
                proptest::prop_assert!(seen4.insert(s.subnet) && seen6.insert(six));
                proptest::prop_assert_eq!(c.slot_of(s.subnet), Some(s));
            }
            proptest::prop_assert_eq!(seen4.len() as u128, expect);
        }
    }

    #[test]
    fn renewal_is_well_inside_the_ttl_and_the_grace() {
        for (ttl, renew, grace) in [(3, 1, 3), (60, 20, 60), (86400, 300, 900)] {
            let c = LeaseConfig::new("10.244.0.0/16".parse().unwrap(), 24, Duration::from_secs(ttl)).unwrap();
            assert_eq!(c.renew_every(), Duration::from_secs(renew), "ttl {ttl}");
            assert_eq!(c.grace, Duration::from_secs(grace), "ttl {ttl}");
        }
    }

    #[test]
    fn seen_counts_from_the_last_change() {
        let v = |version| Versioned {
            lease: Lease {
                subnet: "10.244.1.0/24".parse().unwrap(),
                node_name: "a".into(),
                node_ip: "192.168.1.1".parse().unwrap(),
                expires: 0,
                holder: None,
                vtep_mac: None,
                ipv6_subnet: None,
                node_ip_v6: None,
            },
            version,
        };
        let listing = |version| Listing {
            leases: vec![v(version)],
            invalid: vec![],
        };
        let mut s = Seen::default();
        let t0 = Instant::now();
        s.observe(&listing(1), t0, |_| true);
        let t1 = t0 + Duration::from_secs(5);
        s.observe(&listing(1), t1, |_| true);
        assert_eq!(s.unchanged_for(&v(1), t1), Duration::from_secs(5));
        s.observe(&listing(2), t1, |_| true);
        assert_eq!(
            s.unchanged_for(&v(2), t1 + Duration::from_secs(1)),
            Duration::from_secs(1)
        );
        assert_eq!(
            s.unchanged_for(&v(1), t1),
            Duration::ZERO,
            "an old version is no evidence"
        );
        s.observe(&listing(2), t1, |_| false);
        assert_eq!(
            s.unchanged_for(&v(2), t1 + Duration::from_secs(9)),
            Duration::ZERO,
            "a record no longer followed starts again from zero"
        );
    }
}
