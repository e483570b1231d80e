//! The lease store as this daemon knows it: every key's record (or why it is no record), kept in
//! memory and updated by the store's watch key by key, so that a reconcile reads only what
//! changed.

use cbrnet_ipam::cluster::record::{Invalid, Listing, Versioned};
use cbrnet_ipam::cluster::store::Entry;
use std::collections::HashMap;

#[derive(Default)]
pub struct Known {
    entries: HashMap<String, Entry>,
}

impl Known {
    /// Everything, from a full listing.
    pub fn from_listing(l: Listing) -> Known {
        let mut entries = HashMap::with_capacity(l.leases.len() + l.invalid.len());
        for v in l.leases {
            entries.insert(cbrnet_ipam::cluster::record::subnet_key(v.lease.subnet), Ok(v));
        }
        for i in l.invalid {
            entries.insert(i.key.clone(), Err(i));
        }
        Known { entries }
    }

    /// What `key` holds now (`None`: nothing); whether that is news.
    pub fn set(&mut self, key: String, e: Option<Entry>) -> bool {
        match e {
            Some(e) => self.entries.insert(key, e.clone()).as_ref() != Some(&e),
            None => self.entries.remove(&key).is_some(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    pub fn leases(&self) -> impl Iterator<Item = &Versioned> {
        self.entries.values().filter_map(|e| e.as_ref().ok())
    }

    pub fn invalid(&self) -> impl Iterator<Item = &Invalid> {
        self.entries.values().filter_map(|e| e.as_ref().err())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cbrnet_ipam::cluster::Lease;

    #[test]
    fn follows_a_listing_then_changes_key_by_key() {
        let lease = |s: &str| Versioned {
            lease: Lease {
                subnet: s.parse().unwrap(),
                node_name: "n".into(),
                node_ip: "192.168.1.1".parse().unwrap(),
                expires: 1,
                holder: None,
                vtep_mac: None,
            },
            version: 1,
        };
        let bad = Invalid {
            key: "junk".into(),
            subnet: None,
            why: "x".into(),
        };
        let mut k = Known::from_listing(Listing {
            leases: vec![lease("10.244.1.0/24"), lease("10.244.2.0/24")],
            invalid: vec![bad.clone()],
        });
        assert_eq!((k.leases().count(), k.invalid().count()), (2, 1));
        k.set("10.244.1.0-24".into(), None);
        k.set("junk".into(), Some(Ok(lease("10.244.9.0/24"))));
        assert_eq!((k.leases().count(), k.invalid().count()), (2, 0));
        assert!(k.get("10.244.2.0-24").is_some_and(|e| e.is_ok()));
    }
}
