//! Node-level allocation: picks addresses from the pools and records them in the store.

use super::config::{IpamConf, Pools};
use super::error::IpamError;
use super::range::candidates;
pub use super::reservations::Owner;
use super::reservations::Store;
use cni_spec::Attachment;
use cni_spec::IpConfig;
use ipnetwork::IpNetwork;
use std::collections::HashSet;
use std::net::IpAddr;

/// What an ADD got: its addresses, and which of them this call reserved (the others the owner
/// held already). Undoing a failed ADD releases only the new ones, so a repeated ADD that fails
/// never takes away the addresses of the attachment that holds them.
#[derive(Debug, Clone, PartialEq)]
pub struct Allocation {
    pub ips: Vec<IpConfig>,
    pub new: Vec<IpAddr>,
}

/// Reserves one address per range set for `owner` and returns them, durable, in range-set order.
/// Asking again for the same owner returns the same addresses. `requested` addresses are honoured
/// where they fall in a range set; any that fits none is an error.
pub fn allocate(
    store: &Store,
    pools: &Pools,
    owner: &Owner,
    requested: &[IpAddr],
) -> Result<Allocation, IpamError> {
    let reserved = store.reservations()?;
    let mut taken: Vec<(usize, IpAddr)> = Vec::new();
    let result = (|| {
        let mut out = Vec::new();
        let mut used_requests = 0;
        for (i, set) in pools.range_sets.iter().enumerate() {
            let range_of = |ip: IpAddr| set.iter().find(|r| r.usable(ip));
            let existing = reserved
                .iter()
                .find(|(ip, o)| *o == owner && range_of(**ip).is_some())
                .map(|(ip, _)| *ip);
            let wanted = requested.iter().copied().find(|ip| range_of(*ip).is_some());
            if wanted.is_some() {
                used_requests += 1;
            }
            let ip = match (existing, wanted) {
                (Some(ip), _) => ip,
                (None, Some(ip)) => {
                    if let Some(holder) = reserved.get(&ip) {
                        return Err(IpamError::RequestedInUse(ip, holder.to_string()));
                    }
                    if !store.reserve(ip, owner)? {
                        return Err(IpamError::RequestedInUse(ip, "another attachment".into()));
                    }
                    taken.push((i, ip));
                    ip
                }
                (None, None) => {
                    let mut got = None;
                    for ip in candidates(set, store.last_reserved(i)) {
                        if !reserved.contains_key(&ip) && store.reserve(ip, owner)? {
                            got = Some(ip);
                            break;
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
            let r = range_of(ip).expect("address is in its range set");
            out.push(IpConfig {
                address: IpNetwork::new(ip, r.subnet.prefix()).expect("prefix of a valid subnet"),
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
        store.sync()?;
        Ok(out)
    })();
    match result {
        Ok(out) => {
            for (i, ip) in &taken {
                store.set_last_reserved(*i, *ip)?;
            }
            Ok(Allocation {
                ips: out,
                new: taken.into_iter().map(|(_, ip)| ip).collect(),
            })
        }
        Err(e) => {
            for (_, ip) in taken {
                let _ = store.release(ip);
            }
            Err(e)
        }
    }
}

/// Releases every address `owner` holds; returns them. Releasing nothing is not an error.
pub fn release(store: &Store, owner: &Owner) -> Result<Vec<IpAddr>, IpamError> {
    let mine: Vec<IpAddr> = store
        .reservations()?
        .into_iter()
        .filter(|(_, o)| o == owner)
        .map(|(ip, _)| ip)
        .collect();
    for ip in &mine {
        store.release(*ip)?;
    }
    Ok(mine)
}

/// Releases every reservation whose owner is not in `valid`; returns what was released.
pub fn gc(store: &Store, valid: &HashSet<Owner>) -> Result<Vec<(IpAddr, Owner)>, IpamError> {
    let stale: Vec<(IpAddr, Owner)> = store
        .reservations()?
        .into_iter()
        .filter(|(_, o)| !valid.contains(o))
        .collect();
    for (ip, _) in &stale {
        store.release(*ip)?;
    }
    Ok(stale)
}

/// CHECK: every address in `ips` is reserved for `owner`.
pub fn check(store: &Store, owner: &Owner, ips: &[IpAddr]) -> Result<(), IpamError> {
    let res = store.reservations()?;
    for ip in ips {
        if res.get(ip) != Some(owner) {
            return Err(IpamError::NotReserved(format!("{owner} at {ip}")));
        }
    }
    if ips.is_empty() && !res.values().any(|o| o == owner) {
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
    /// are judged before the store, or its directory, is touched.
    pub fn add(&self, owner: &Owner, requested: &[IpAddr]) -> Result<(Allocation, Pools), IpamError> {
        let pools = self.conf.pools()?;
        if let Some(ip) = requested.iter().find(|ip| !pools.usable(**ip)) {
            return Err(IpamError::RequestedOutOfRange(*ip));
        }
        let store = Store::open(self.conf.data_dir(), self.name)?;
        Ok((allocate(&store, &pools, owner, requested)?, pools))
    }

    /// Takes back addresses an ADD reserved, when the ADD failed after all; every address is
    /// tried, and every failure returned.
    pub fn undo(&self, new: &[IpAddr]) -> Vec<IpamError> {
        if new.is_empty() {
            return Vec::new();
        }
        match Store::open(self.conf.data_dir(), self.name) {
            Ok(store) => new.iter().filter_map(|ip| store.release(*ip).err()).collect(),
            Err(e) => vec![e],
        }
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

    /// GC: releases every reservation whose owner is not among `valid`.
    pub fn gc(&self, valid: &[Attachment]) -> Result<Vec<(IpAddr, Owner)>, IpamError> {
        let valid: HashSet<Owner> = valid.iter().map(Owner::from).collect();
        match Store::open_existing(self.conf.data_dir(), self.name)? {
            Some(store) => gc(&store, &valid),
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
        let first = allocate(&s, &p, &a, &[]).unwrap();
        assert_eq!(first.ips[0].address.to_string(), "10.9.0.2/29");
        assert_eq!(first.new.len(), 1);
        let again = allocate(&s, &p, &a, &[]).unwrap();
        assert_eq!(again.ips, first.ips);
        assert!(again.new.is_empty());
        release(&s, &a).unwrap();
        // the released address is not handed out again at once
        let b = allocate(&s, &p, &Owner::new("b", "eth0"), &[]).unwrap();
        assert_eq!(b.ips[0].address.ip().to_string(), "10.9.0.3");
    }

    #[test]
    fn fills_exactly_then_reports_the_subnet() {
        let d = tempfile::tempdir().unwrap();
        let p = pools("10.9.0.0/28");
        let s = Store::open(d.path(), "net").unwrap();
        for i in 0..13 {
            allocate(&s, &p, &Owner::new(&format!("c{i}"), "eth0"), &[]).unwrap();
        }
        let e = allocate(&s, &p, &Owner::new("c13", "eth0"), &[]).unwrap_err();
        assert!(matches!(&e, IpamError::PoolFull(s) if s == "10.9.0.0/28"), "{e}");
    }

    #[test]
    fn requested_addresses() {
        let d = tempfile::tempdir().unwrap();
        let p = pools("10.9.0.0/24");
        let s = Store::open(d.path(), "net").unwrap();
        let ip: IpAddr = "10.9.0.77".parse().unwrap();
        let got = allocate(&s, &p, &Owner::new("a", "eth0"), &[ip]).unwrap();
        assert_eq!(got.ips[0].address.ip(), ip);
        assert!(matches!(
            allocate(&s, &p, &Owner::new("b", "eth0"), &[ip]),
            Err(IpamError::RequestedInUse(..))
        ));
        let gw: IpAddr = "10.9.0.1".parse().unwrap();
        assert!(matches!(
            allocate(&s, &p, &Owner::new("b", "eth0"), &[gw]),
            Err(IpamError::RequestedOutOfRange(_))
        ));
        // nothing was left reserved by the failures
        assert_eq!(s.reservations().unwrap().len(), 1);
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
                        match allocate(&s, &p, &owner, &[]) {
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
                    prop_assert_eq!(on_disk.get(ip), Some(&Owner::new(&format!("c{o}"), "eth0")));
                }
            }
        }
    }
}
