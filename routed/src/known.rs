//! The lease store as this daemon knows it: every key's record (or why it is no record), kept in
//! memory and updated by the store's watch key by key, so that a reconcile reads only what
//! changed.

use cbrnet_ipam::cluster::record::{parse_key, Invalid, Listing, Versioned};
use cbrnet_ipam::cluster::store::Entry;
use ipnetwork::IpNetwork;
use std::collections::HashMap;

/// A store key: a subnet's (as nearly all are, kept without its text) or any other.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Subnet(IpNetwork),
    Other(Box<str>),
}

impl From<&str> for Key {
    fn from(key: &str) -> Key {
        parse_key(key).map_or_else(|| Key::Other(key.into()), Key::Subnet)
    }
}

/// The entries are boxed: a map's table has room for up to twice its entries, and a record is
/// far larger than a pointer (tens of thousands of them are kept).
#[derive(Default)]
pub struct Known {
    entries: HashMap<Key, Box<Entry>>,
}

impl Known {
    /// Everything, from a full listing.
    pub fn from_listing(l: Listing) -> Known {
        let mut entries = HashMap::with_capacity(l.leases.len() + l.invalid.len());
        for v in l.leases {
            entries.insert(Key::Subnet(v.lease.subnet), Box::new(Ok(v)));
        }
        for i in l.invalid {
            entries.insert(Key::from(i.key.as_str()), Box::new(Err(i)));
        }
        Known { entries }
    }

    /// What `key` holds now (`None`: nothing); whether that is news.
    pub fn set(&mut self, key: &str, e: Option<Entry>) -> bool {
        let key = Key::from(key);
        match e {
            Some(e) => match self.entries.get_mut(&key) {
                Some(old) if **old == e => false,
                Some(old) => {
                    **old = e;
                    true
                }
                None => {
                    self.entries.insert(key, Box::new(e));
                    true
                }
            },
            None => self.entries.remove(&key).is_some(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(&Key::from(key)).map(|e| &**e)
    }

    pub fn leases(&self) -> impl Iterator<Item = &Versioned> {
        self.entries.values().filter_map(|e| e.as_ref().as_ref().ok())
    }

    pub fn invalid(&self) -> impl Iterator<Item = &Invalid> {
        self.entries.values().filter_map(|e| e.as_ref().as_ref().err())
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
                ipv6_subnet: None,
                node_ip_v6: None,
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
        k.set("10.244.1.0-24", None);
        k.set("junk", Some(Ok(lease("10.244.9.0/24"))));
        assert_eq!((k.leases().count(), k.invalid().count()), (2, 0));
        assert!(k.get("10.244.2.0-24").is_some_and(|e| e.is_ok()));
    }
}
