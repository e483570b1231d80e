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
use ipnetwork::{IpNetwork, Ipv4Network};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

/// The longest interval between renewals, whatever the TTL.
pub const MAX_RENEW_EVERY: Duration = Duration::from_secs(300);

/// How the cluster CIDR is carved, and how long leases last.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub cluster_cidr: Ipv4Network,
    pub subnet_len: u8,
    pub first: Option<Ipv4Network>,
    pub last: Option<Ipv4Network>,
    pub ttl: Duration,
    /// How long a record must stay unchanged, as seen here, before it may be taken from its
    /// holder (expired, or held under our name by another daemon).
    pub grace: Duration,
}

impl LeaseConfig {
    pub fn new(cluster_cidr: IpNetwork, subnet_len: u8, ttl: Duration) -> Result<LeaseConfig, ClusterError> {
        let IpNetwork::V4(cidr) = cluster_cidr else {
            return Err(ClusterError::Config(format!(
                "cluster CIDR {cluster_cidr} is not IPv4"
            )));
        };
        if cidr.ip() != cidr.network() {
            return Err(ClusterError::Config(format!(
                "cluster CIDR {cidr} has host bits set"
            )));
        }
        if subnet_len < cidr.prefix() || subnet_len > 30 {
            return Err(ClusterError::Config(format!(
                "subnet length /{subnet_len} must be between the cluster CIDR's /{} and /30",
                cidr.prefix()
            )));
        }
        if ttl < Duration::from_secs(2) {
            return Err(ClusterError::Config("the lease TTL must be at least 2s".into()));
        }
        let renew = (ttl / 3).min(MAX_RENEW_EVERY);
        Ok(LeaseConfig {
            cluster_cidr: cidr,
            subnet_len,
            first: None,
            last: None,
            ttl,
            grace: ttl.min(renew * 3),
        })
    }

    /// Limits the subnets that may be leased to `first..=last`; each must be one of the subnets
    /// the cluster CIDR is carved into.
    pub fn with_range(
        mut self,
        first: Option<IpNetwork>,
        last: Option<IpNetwork>,
    ) -> Result<Self, ClusterError> {
        let check = |what: &str, n: IpNetwork| -> Result<Ipv4Network, ClusterError> {
            match n {
                IpNetwork::V4(v4) if v4.ip() == v4.network() && self.holds(n) => Ok(v4),
                _ => Err(ClusterError::Config(format!(
                    "{what} {n} is not a /{} subnet of {}",
                    self.subnet_len, self.cluster_cidr
                ))),
            }
        };
        let first = first.map(|n| check("first subnet", n)).transpose()?;
        let last = last.map(|n| check("last subnet", n)).transpose()?;
        (self.first, self.last) = (first, last);
        if let (Some(f), Some(l)) = (self.first, self.last) {
            if f.network() > l.network() {
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

    /// Every subnet a lease may take, in order.
    pub fn subnets(&self) -> impl Iterator<Item = IpNetwork> + '_ {
        let step = 1u64 << (32 - self.subnet_len);
        let start = u32::from(self.first.map_or(self.cluster_cidr.network(), |f| f.network())) as u64;
        let last_net = u32::from(self.cluster_cidr.broadcast()) as u64 + 1 - step;
        let end = self
            .last
            .map_or(last_net, |l| u32::from(l.network()) as u64)
            .min(last_net);
        let len = self.subnet_len;
        (0..)
            .map(move |i| start + i * step)
            .take_while(move |a| *a <= end)
            .filter_map(move |a| Ipv4Network::new(Ipv4Addr::from(a as u32), len).ok())
            .map(IpNetwork::V4)
    }

    /// Is `subnet` one of the subnets the cluster CIDR is carved into (right length, inside)?
    pub fn holds(&self, subnet: IpNetwork) -> bool {
        subnet.prefix() == self.subnet_len
            && match subnet.network() {
                IpAddr::V4(v) => self.cluster_cidr.contains(v),
                IpAddr::V6(_) => false,
            }
    }

    /// Judges a lease against this cluster: valid fields, and a subnet of the cluster CIDR.
    pub fn check(&self, l: &Lease) -> Result<(), String> {
        check_fields(l)?;
        if !self.holds(l.subnet) {
            return Err(format!(
                "subnet {} is not a /{} subnet of the cluster CIDR {}",
                l.subnet, self.subnet_len, self.cluster_cidr
            ));
        }
        Ok(())
    }

    fn full(&self) -> ClusterError {
        ClusterError::ClusterFull(self.cluster_cidr.to_string(), self.subnet_len)
    }
}

fn overlaps(a: IpNetwork, b: IpNetwork) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

/// Who asks for a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimant {
    pub node_name: String,
    pub node_ip: IpAddr,
    /// This daemon instance's identity: the same for a restart on the same node, another for a
    /// daemon elsewhere.
    pub holder: String,
    /// The MAC of the node's VXLAN device, published with the lease (`None`: no VXLAN device).
    pub vtep_mac: Option<String>,
}

impl Claimant {
    fn lease(&self, subnet: IpNetwork, cfg: &LeaseConfig) -> Lease {
        Lease {
            subnet,
            node_name: self.node_name.clone(),
            node_ip: self.node_ip,
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
            let l = me.lease(mine.lease.subnet, cfg);
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
        let mut waiting = false;
        let mut target = None;
        for s in cfg.subnets() {
            if blocked.iter().any(|b| overlaps(*b, s)) {
                continue;
            }
            match by_key.get(&s) {
                None => {
                    target = Some((s, None));
                    break;
                }
                Some(v) if v.lease.expired(now) => {
                    if seen.unchanged_for(v, t) >= cfg.grace {
                        target = Some((s, Some(v.version)));
                        break;
                    }
                    waiting = true;
                }
                Some(_) => {}
            }
        }
        let Some((subnet, old)) = target else {
            return Err(if waiting {
                ClusterError::Store(format!(
                    "no free subnet yet: the expired leases must stay unrenewed for {:?} first",
                    cfg.grace
                ))
            } else {
                cfg.full()
            });
        };
        let l = me.lease(subnet, cfg);
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
/// node acquire again.
pub async fn renew<S: LeaseStore>(
    store: &S,
    cfg: &LeaseConfig,
    held: &Versioned,
    me: &Claimant,
    seen: &mut Seen,
) -> Result<Versioned, ClusterError> {
    let l = me.lease(held.lease.subnet, cfg);
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
        assert!(LeaseConfig::new(net("fd00::/64"), 80, ttl).is_err());
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
