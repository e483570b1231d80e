//! Node-level allocation: picks addresses from the pools and records them in the store.
//!
//! ADD, DEL and CHECK cost the same whatever the number of pods: the owner index answers "what
//! does this attachment hold", the reservation's EEXIST answers "is this address taken", and the
//! round-robin cursor says where to start looking. Only GC and reclaim read the whole directory.

use super::config::{IpamConf, Pools};
use super::error::IpamError;
use super::range::candidates;
pub use super::reservations::Owner;
use super::reservations::{Adding, Reserved, Store};
use cni_spec::Attachment;
use cni_spec::IpConfig;
use ipnetwork::IpNetwork;
use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

/// What an ADD got: its addresses, and which of them this call reserved (the others the owner
/// held already). Undoing a failed ADD releases only the new ones, so a repeated ADD that fails
/// never takes away the addresses of the attachment that holds them.
#[derive(Debug, Clone, PartialEq)]
pub struct Allocation {
    pub ips: Vec<IpConfig>,
    pub new: Vec<IpAddr>,
    /// Reservations of vanished pods taken back to make room.
    pub reclaimed: Vec<Reserved>,
}

/// When a reservation may be taken back from an attachment that vanished without DEL: it is
/// older than `older_than`, no ADD of it is running, and `is_gone` says its pod is gone (for
/// `cbrnet`: the host end of its veth pair no longer exists).
pub struct Reclaim<'a> {
    pub older_than: Duration,
    pub is_gone: &'a dyn Fn(&Owner) -> bool,
}

/// Takes back the reservations of attachments that are gone (see [`Reclaim`]); returns them.
pub fn reclaim(store: &Store, r: &Reclaim<'_>) -> Result<Vec<Reserved>, IpamError> {
    let scan = store.scan()?;
    store.remove_stray(&scan)?;
    let now = SystemTime::now();
    let old = |res: &Reserved| now.duration_since(res.since).is_ok_and(|age| age >= r.older_than);
    let mut by_owner: BTreeMap<&Owner, Vec<&Reserved>> = BTreeMap::new();
    for res in &scan.reservations {
        by_owner.entry(&res.owner).or_default().push(res);
    }
    let mut gone = Vec::new();
    for (owner, held) in by_owner {
        // Order matters: an ADD that is running is judged first, the pod's existence last.
        if scan.adding.contains(owner) || !held.iter().all(|res| old(res)) || !(r.is_gone)(owner) {
            continue;
        }
        gone.extend(held.into_iter().cloned());
    }
    store.release_reserved(&gone)?;
    Ok(gone)
}

/// Reserves one address per range set for `owner` and returns them in range-set order. Asking
/// again for the same owner returns the same addresses. `requested` addresses are honoured where
/// they fall in a range set; any that fits none is an error. A full range set is first relieved
/// by `reclaim`, if given.
pub fn allocate(
    store: &Store,
    pools: &Pools,
    owner: &Owner,
    requested: &[IpAddr],
    reclaim_with: Option<&Reclaim<'_>>,
) -> Result<Allocation, IpamError> {
    let held = store.owned(owner)?;
    let mut taken: Vec<(usize, IpAddr)> = Vec::new();
    let mut reclaimed = Vec::new();
    let result = (|| {
        let mut out = Vec::new();
        let mut used_requests = 0;
        let mut tried_reclaim = false;
        for (i, set) in pools.range_sets.iter().enumerate() {
            let range_of = |ip: IpAddr| set.iter().find(|r| r.usable(ip));
            let existing = held.iter().copied().find(|ip| range_of(*ip).is_some());
            let wanted = requested.iter().copied().find(|ip| range_of(*ip).is_some());
            if wanted.is_some() {
                used_requests += 1;
            }
            let ip = match (existing, wanted) {
                (Some(ip), _) => ip,
                (None, Some(ip)) => {
                    if !store.reserve(ip, owner)? {
                        let holder = store
                            .holder(ip)?
                            .map_or_else(|| "another attachment".into(), |o| o.to_string());
                        return Err(IpamError::RequestedInUse(ip, holder));
                    }
                    taken.push((i, ip));
                    ip
                }
                (None, None) => {
                    let mut got = None;
                    loop {
                        for ip in candidates(set, store.last_reserved(i)) {
                            if store.reserve(ip, owner)? {
                                got = Some(ip);
                                break;
                            }
                        }
                        match (got, reclaim_with) {
                            (None, Some(r)) if !tried_reclaim => {
                                tried_reclaim = true;
                                reclaimed.extend(reclaim(store, r)?);
                            }
                            _ => break,
                        }
                    }
                    let ip = got.ok_or_else(|| {
                        IpamError::PoolFull(
                            set.iter()
                                .map(|r| r.subnet.to_string())
                                .collect::<Vec<_>>()
                                .join(", "),
                        )
                    })?;
                    taken.push((i, ip));
                    ip
                }
            };
            let r = range_of(ip).ok_or_else(|| IpamError::Config(format!("{ip} is in no range")))?;
            let address = IpNetwork::new(ip, r.subnet.prefix())
                .map_err(|e| IpamError::Config(format!("{ip}/{}: {e}", r.subnet.prefix())))?;
            out.push(IpConfig {
                address,
                gateway: Some(r.gateway),
                interface: None,
            });
        }
        if used_requests < requested.len() {
            let stray = requested
                .iter()
                .find(|ip| !pools.usable(**ip))
                .copied()
                .unwrap_or(requested[0]);
            return Err(IpamError::RequestedOutOfRange(stray));
        }
        if !taken.is_empty() {
            let all: Vec<IpAddr> = out.iter().map(|c| c.address.ip()).collect();
            store.write_index(owner, &all)?;
        }
        Ok(out)
    })();
    match result {
        Ok(out) => {
            for (i, ip) in &taken {
                // A hint only: an ADD that got its addresses does not fail for want of it.
                let _ = store.set_last_reserved(*i, *ip);
            }
            Ok(Allocation {
                ips: out,
                new: taken.into_iter().map(|(_, ip)| ip).collect(),
                reclaimed,
            })
        }
        Err(e) => {
            let new: Vec<IpAddr> = taken.into_iter().map(|(_, ip)| ip).collect();
            let _ = store.release_some(owner, &new);
            Err(e)
        }
    }
}

/// Releases every address `owner` holds; returns them. Releasing nothing is not an error.
pub fn release(store: &Store, owner: &Owner) -> Result<Vec<IpAddr>, IpamError> {
    store.release_owner(owner)
}

/// Releases every reservation whose owner is not in `valid`, and removes every entry that is
/// not a valid reservation, index or bookkeeping of ours; returns what was released.
pub fn gc(store: &Store, valid: &HashSet<Owner>) -> Result<Vec<(IpAddr, Owner)>, IpamError> {
    let scan = store.scan()?;
    store.remove_stray(&scan)?;
    let stale: Vec<Reserved> = scan
        .reservations
        .iter()
        .filter(|r| !valid.contains(&r.owner))
        .cloned()
        .collect();
    store.release_reserved(&stale)?;
    // Indexes must say exactly what each owner holds.
    let mut held: BTreeMap<&Owner, Vec<IpAddr>> = BTreeMap::new();
    for r in scan.reservations.iter().filter(|r| valid.contains(&r.owner)) {
        held.entry(&r.owner).or_default().push(r.ip);
    }
    for (owner, ips) in &scan.index {
        if !held.contains_key(owner) || held.get(owner) != Some(ips) {
            store.write_index(owner, held.get(owner).map_or(&[][..], |v| v))?;
        }
    }
    for (owner, ips) in &held {
        if scan.index.get(*owner) != Some(ips) {
            store.write_index(owner, ips)?;
        }
    }
    Ok(stale.into_iter().map(|r| (r.ip, r.owner)).collect())
}

/// CHECK: every address in `ips` is reserved for `owner` (with no addresses: it holds some).
pub fn check(store: &Store, owner: &Owner, ips: &[IpAddr]) -> Result<(), IpamError> {
    for ip in ips {
        if store.holder(*ip)?.as_ref() != Some(owner) {
            return Err(IpamError::NotReserved(format!("{owner} at {ip}")));
        }
    }
    if ips.is_empty() && store.owned(owner)?.is_empty() {
        return Err(IpamError::NotReserved(owner.to_string()));
    }
    Ok(())
}

impl From<&Attachment> for Owner {
    fn from(a: &Attachment) -> Owner {
        Owner::new(&a.container_id, &a.ifname)
    }
}

/// One network's node-level IPAM: the commands of a CNI IPAM plugin over its store. Both the
/// standalone `cbrnet-ipam` and `cbrnet`'s in-process IPAM go through here.
pub struct Network<'a> {
    pub conf: &'a IpamConf,
    pub name: &'a str,
}

impl Network<'_> {
    /// ADD: the pools (reading the subnet file if needed) and the allocation. Requested addresses
    /// are judged before the store, or its directory, is touched. With `is_gone` (only a plugin
    /// that knows how to tell a vanished pod can give it) and reclaim on, a full pool is relieved
    /// by reclaim, and the returned [`Adding`] marks this ADD as running until the caller drops
    /// it, so that no reclaim takes its addresses meanwhile.
    pub fn add(
        &self,
        owner: &Owner,
        requested: &[IpAddr],
        is_gone: Option<&dyn Fn(&Owner) -> bool>,
    ) -> Result<(Allocation, Pools, Option<Adding>), IpamError> {
        let pools = self.conf.pools()?;
        if let Some(ip) = requested.iter().find(|ip| !pools.usable(**ip)) {
            return Err(IpamError::RequestedOutOfRange(*ip));
        }
        let reclaim = match (is_gone, self.conf.reclaim_after()?) {
            (Some(is_gone), Some(older_than)) => Some(Reclaim { older_than, is_gone }),
            _ => None,
        };
        // Taken before anything is reserved.
        let adding = match reclaim {
            Some(_) => Some(Adding::begin(self.conf.data_dir(), self.name, owner)?),
            None => None,
        };
        let store = Store::open(self.conf.data_dir(), self.name)?;
        let a = allocate(&store, &pools, owner, requested, reclaim.as_ref())?;
        Ok((a, pools, adding))
    }

    /// Takes back addresses an ADD reserved, when the ADD failed after all.
    pub fn undo(&self, owner: &Owner, new: &[IpAddr]) -> Result<(), IpamError> {
        if new.is_empty() {
            return Ok(());
        }
        Store::open(self.conf.data_dir(), self.name)?.release_some(owner, new)
    }

    /// DEL: releases what `owner` holds (nothing to do if the network has no store yet).
    pub fn release(&self, owner: &Owner) -> Result<Vec<IpAddr>, IpamError> {
        match Store::open_existing(self.conf.data_dir(), self.name)? {
            Some(store) => release(&store, owner),
            None => Ok(Vec::new()),
        }
    }

    /// CHECK: `owner` holds every one of `ips`.
    pub fn check(&self, owner: &Owner, ips: &[IpAddr]) -> Result<(), IpamError> {
        let store = Store::open_existing(self.conf.data_dir(), self.name)?
            .ok_or_else(|| IpamError::NotReserved(owner.to_string()))?;
        check(&store, owner, ips)
    }

    /// GC: releases every reservation whose owner is not among `valid`, and clears out whatever
    /// else does not belong in the directory.
    pub fn gc(&self, valid: &[Attachment]) -> Result<Vec<(IpAddr, Owner)>, IpamError> {
        let valid: HashSet<Owner> = valid.iter().map(Owner::from).collect();
        match Store::open_existing(self.conf.data_dir(), self.name)? {
            Some(store) => gc(&store, &valid),
            None => Ok(Vec::new()),
        }
    }

    /// Reclaim outside an ADD (the route daemon's background sweep); nothing if the network has
    /// no store yet or reclaim is off for it. Never waits for the network's lock: while another
    /// process holds it, [`IpamError::Busy`] and nothing done.
    pub fn reclaim(&self, is_gone: &dyn Fn(&Owner) -> bool) -> Result<Vec<Reserved>, IpamError> {
        let Some(older_than) = self.conf.reclaim_after()? else {
            return Ok(Vec::new());
        };
        match Store::try_open_existing(self.conf.data_dir(), self.name)? {
            Some(store) => reclaim(&store, &Reclaim { older_than, is_gone }),
            None => Ok(Vec::new()),
        }
    }

    /// STATUS: can an ADD get an address now? Without a subnet, no (code 50).
    pub fn status(&self) -> Result<(), cni_spec::CniError> {
        self.conf.pools().map(|_| ()).map_err(|e| {
            let e = cni_spec::CniError::from(e);
            cni_spec::CniError::new(cni_spec::CniError::NOT_AVAILABLE, e.msg).with_details(e.details)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::config::IpamConf;
    use proptest::prelude::*;
    use serde_json::json;
    use std::collections::HashMap;

    fn pools(subnet: &str) -> Pools {
        IpamConf::from_value(&json!({ "subnet": subnet }))
            .unwrap()
            .pools()
            .unwrap()
    }

    #[test]
    fn same_owner_same_address_and_round_robin() {
        let d = tempfile::tempdir().unwrap();
        let p = pools("10.9.0.0/29");
        let s = Store::open(d.path(), "net").unwrap();
        let a = Owner::new("a", "eth0");
        let first = allocate(&s, &p, &a, &[], None).unwrap();
        assert_eq!(first.ips[0].address.to_string(), "10.9.0.2/29");
        assert_eq!(first.new.len(), 1);
        let again = allocate(&s, &p, &a, &[], None).unwrap();
        assert_eq!(again.ips, first.ips);
        assert!(again.new.is_empty());
        release(&s, &a).unwrap();
        // the released address is not handed out again at once
        let b = allocate(&s, &p, &Owner::new("b", "eth0"), &[], None).unwrap();
        assert_eq!(b.ips[0].address.ip().to_string(), "10.9.0.3");
    }

    #[test]
    fn fills_exactly_then_reports_the_subnet() {
        let d = tempfile::tempdir().unwrap();
        let p = pools("10.9.0.0/28");
        let s = Store::open(d.path(), "net").unwrap();
        for i in 0..13 {
            allocate(&s, &p, &Owner::new(&format!("c{i}"), "eth0"), &[], None).unwrap();
        }
        let e = allocate(&s, &p, &Owner::new("c13", "eth0"), &[], None).unwrap_err();
        assert!(matches!(&e, IpamError::PoolFull(s) if s == "10.9.0.0/28"), "{e}");
    }

    #[test]
    fn requested_addresses() {
        let d = tempfile::tempdir().unwrap();
        let p = pools("10.9.0.0/24");
        let s = Store::open(d.path(), "net").unwrap();
        let ip: IpAddr = "10.9.0.77".parse().unwrap();
        let got = allocate(&s, &p, &Owner::new("a", "eth0"), &[ip], None).unwrap();
        assert_eq!(got.ips[0].address.ip(), ip);
        assert!(matches!(
            allocate(&s, &p, &Owner::new("b", "eth0"), &[ip], None),
            Err(IpamError::RequestedInUse(..))
        ));
        let gw: IpAddr = "10.9.0.1".parse().unwrap();
        assert!(matches!(
            allocate(&s, &p, &Owner::new("b", "eth0"), &[gw], None),
            Err(IpamError::RequestedOutOfRange(_))
        ));
        // nothing was left reserved by the failures
        assert_eq!(s.reservations().unwrap().len(), 1);
    }

    #[test]
    fn reclaim_takes_only_what_is_gone_old_and_not_being_added() {
        let d = tempfile::tempdir().unwrap();
        let p = pools("10.9.0.0/29");
        let s = Store::open(d.path(), "net").unwrap();
        for o in ["alive", "gone", "adding"] {
            allocate(&s, &p, &Owner::new(o, "eth0"), &[], None).unwrap();
        }
        let _running = Adding::begin(d.path(), "net", &Owner::new("adding", "eth0")).unwrap();
        let is_gone = |o: &Owner| o.container_id != "alive";
        let young = Reclaim {
            older_than: Duration::from_secs(3600),
            is_gone: &is_gone,
        };
        assert!(reclaim(&s, &young).unwrap().is_empty());
        let any_age = Reclaim {
            older_than: Duration::ZERO,
            is_gone: &is_gone,
        };
        let got = reclaim(&s, &any_age).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].owner, Owner::new("gone", "eth0"));
        assert!(s.owned(&Owner::new("gone", "eth0")).unwrap().is_empty());
        assert_eq!(s.reservations().unwrap().len(), 2);
        // a full pool reclaims by itself
        for i in 0..3 {
            allocate(&s, &p, &Owner::new(&format!("f{i}"), "eth0"), &[], None).unwrap();
        }
        let is_gone = |o: &Owner| o.container_id == "f0";
        let r = Reclaim {
            older_than: Duration::ZERO,
            is_gone: &is_gone,
        };
        let a = allocate(&s, &p, &Owner::new("late", "eth0"), &[], Some(&r)).unwrap();
        assert_eq!(a.reclaimed.len(), 1);
        assert_eq!(a.reclaimed[0].ip, a.ips[0].address.ip());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Add(u8),
        Del(u8),
        Gc(Vec<u8>),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..20).prop_map(Op::Add),
            2 => (0u8..20).prop_map(Op::Del),
            1 => proptest::collection::vec(0u8..20, 0..20).prop_map(Op::Gc),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        // Against a model: owners hold distinct usable addresses, a held address never changes,
        // and an ADD fails only when the pool is really full.
        #[test]
        fn allocator_matches_model(ops in proptest::collection::vec(op(), 1..80)) {
            let d = tempfile::tempdir().unwrap();
            let p = pools("10.7.0.0/28"); // 13 usable: smaller than the 20 owners
            let cap = 13;
            let mut model: HashMap<u8, IpAddr> = HashMap::new();
            for op in ops {
                let s = Store::open(d.path(), "n").unwrap();
                match op {
                    Op::Add(o) => {
                        let owner = Owner::new(&format!("c{o}"), "eth0");
                        match allocate(&s, &p, &owner, &[], None) {
                            Ok(v) => {
                                let ip = v.ips[0].address.ip();
                                if let Some(prev) = model.get(&o) { prop_assert_eq!(*prev, ip); }
                                prop_assert!(p.range_sets[0][0].usable(ip));
                                prop_assert!(!model.iter().any(|(k, v)| *k != o && *v == ip));
                                model.insert(o, ip);
                            }
                            Err(IpamError::PoolFull(_)) => prop_assert_eq!(model.len(), cap),
                            Err(e) => prop_assert!(false, "{}", e),
                        }
                    }
                    Op::Del(o) => {
                        release(&s, &Owner::new(&format!("c{o}"), "eth0")).unwrap();
                        model.remove(&o);
                    }
                    Op::Gc(keep) => {
                        let valid: HashSet<Owner> =
                            keep.iter().map(|o| Owner::new(&format!("c{o}"), "eth0")).collect();
                        gc(&s, &valid).unwrap();
                        model.retain(|k, _| keep.contains(k));
                    }
                }
                let on_disk: HashMap<IpAddr, Owner> = s.reservations().unwrap();
                prop_assert_eq!(on_disk.len(), model.len());
                for (o, ip) in &model {
                    let owner = Owner::new(&format!("c{o}"), "eth0");
                    prop_assert_eq!(on_disk.get(ip), Some(&owner));
                    // the index agrees with the reservations
                    prop_assert_eq!(s.owned(&owner).unwrap(), vec![*ip]);
                }
                prop_assert_eq!(s.scan().unwrap().index.len(), model.len());
            }
        }
    }
}
