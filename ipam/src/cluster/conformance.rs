//! What every `LeaseStore` must do, as tests each backend runs against itself: the file store in
//! this crate's unit tests, etcd in `tests/tests/etcd_store.rs` against a real etcd.

use super::error::ClusterError;
use super::lease::{acquire, missing_partner, release, renew, Claimant, LeaseConfig, Seen};
use super::record::{subnet_key, Lease, Versioned};
use super::store::LeaseStore;
use ipnetwork::IpNetwork;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

pub fn cfg(cidr: &str, len: u8) -> LeaseConfig {
    LeaseConfig::new(cidr.parse().unwrap(), len, Duration::from_secs(60)).unwrap()
}

/// A daemon of node `name` at `ip`, running as instance `holder`.
pub fn node(name: &str, ip: &str, holder: &str) -> Claimant {
    Claimant {
        node_name: name.into(),
        node_ip: ip.parse().unwrap(),
        holder: holder.into(),
        vtep_mac: None,
        node_ip_v6: None,
        prefer: None,
    }
}

async fn get<S: LeaseStore>(s: &S, c: &LeaseConfig, me: &Claimant) -> Result<Versioned, ClusterError> {
    acquire(s, c, me, &mut Seen::default()).await
}

/// A node gets its subnet back by name with its new IP; renew bumps the version; a stale version
/// cannot release; the right one can. Returns the other node's lease, still held.
pub async fn same_node_gets_its_subnet_back<S: LeaseStore>(s: &S) -> Versioned {
    let c = cfg("10.244.0.0/16", 24);
    let a = get(s, &c, &node("a", "192.168.1.1", "ha")).await.unwrap();
    let b = get(s, &c, &node("b", "192.168.1.2", "hb")).await.unwrap();
    assert_ne!(a.lease.subnet, b.lease.subnet);
    // restart on the same node with a new IP: same subnet, IP follows
    let me = node("a", "192.168.1.9", "ha");
    let a2 = get(s, &c, &me).await.unwrap();
    assert_eq!(a2.lease.subnet, a.lease.subnet);
    assert_eq!(a2.lease.node_ip.to_string(), "192.168.1.9");
    let a3 = renew(s, &c, &a2, &me, &mut Seen::default()).await.unwrap();
    assert!(a3.version != a2.version);
    assert!(a3.lease.expires >= a2.lease.expires);
    // a renewal from an older version (its answer was lost, say) finds the record still ours
    let a4 = renew(s, &c, &a2, &me, &mut Seen::default()).await.unwrap();
    assert_eq!(a4.lease.subnet, a.lease.subnet);
    assert!(!release(s, &a3).await.unwrap(), "a stale version must not delete");
    assert!(release(s, &a4).await.unwrap());
    let left: Vec<Lease> = s
        .list()
        .await
        .unwrap()
        .leases
        .into_iter()
        .map(|v| v.lease)
        .collect();
    assert_eq!(left, vec![b.lease.clone()]);
    b
}

/// 32 nodes acquiring at once get 32 distinct subnets.
pub async fn many_nodes_at_once_get_distinct_subnets<S: LeaseStore + 'static>(s: Arc<S>) {
    let c = Arc::new(cfg("10.244.0.0/16", 24));
    let hs: Vec<_> = (0..32)
        .map(|i| {
            let (s, c) = (s.clone(), c.clone());
            tokio::spawn(async move {
                let me = node(
                    &format!("n{i}"),
                    &format!("192.168.0.{}", i + 1),
                    &format!("h{i}"),
                );
                get(&*s, &c, &me).await.unwrap()
            })
        })
        .collect();
    let mut subnets = HashSet::new();
    for h in hs {
        assert!(subnets.insert(h.await.unwrap().lease.subnet));
    }
    assert_eq!(s.list().await.unwrap().leases.len(), 32);
}

/// An expired lease is taken only once it has gone unchanged for the grace period as the taker
/// sees it; a full cluster CIDR is an error that names it.
pub async fn expired_leases_are_free_only_after_the_grace<S: LeaseStore>(s: &S) {
    let mut c = cfg("10.244.0.0/23", 24);
    c.grace = Duration::from_millis(300);
    get(s, &c, &node("a", "192.168.1.1", "ha")).await.unwrap();
    let b = get(s, &c, &node("b", "192.168.1.2", "hb")).await.unwrap();
    let me = node("c", "192.168.1.3", "hc");
    let e = get(s, &c, &me).await.unwrap_err();
    assert!(
        matches!(&e, ClusterError::ClusterFull(..)) && e.to_string().contains("10.244.0.0/23"),
        "{e}"
    );
    // b's lease expires (or a clock says so): not taken at first sight
    let mut old = b.lease.clone();
    old.expires = 1;
    s.update(&old, b.version, c.ttl).await.unwrap().unwrap();
    let mut seen = Seen::default();
    let e = acquire(s, &c, &me, &mut seen).await.unwrap_err();
    assert!(e.to_string().contains("unrenewed"), "{e}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let got = acquire(s, &c, &me, &mut seen).await.unwrap();
    assert_eq!(got.lease.subnet, b.lease.subnet);
}

/// A node whose record is gone (a store that forgot it after a long downtime) comes back to the
/// subnet it last published when that subnet is free, not to the lowest free one; when another
/// node holds it, to the lowest free one.
pub async fn a_node_comes_back_to_the_subnet_it_last_published<S: LeaseStore>(s: &S) {
    let c = cfg("10.244.0.0/16", 24);
    let a = get(s, &c, &node("a", "192.168.1.1", "ha")).await.unwrap();
    let b = get(s, &c, &node("b", "192.168.1.2", "hb")).await.unwrap();
    let x = get(s, &c, &node("x", "192.168.1.3", "hx")).await.unwrap();
    // a is decommissioned (its subnet, the lowest, is free); x's record vanishes
    assert!(release(s, &a).await.unwrap());
    assert!(release(s, &x).await.unwrap());
    let mut me = node("x", "192.168.1.3", "hx");
    me.prefer = Some(x.lease.subnet);
    let back = get(s, &c, &me).await.unwrap();
    assert_eq!(back.lease.subnet, x.lease.subnet, "not back in its own subnet");
    // its subnet taken meanwhile: the lowest free one
    assert!(release(s, &back).await.unwrap());
    let y = get(s, &c, &node("y", "192.168.1.4", "hy")).await.unwrap();
    assert_eq!(y.lease.subnet, a.lease.subnet);
    let z = get(s, &c, &node("z", "192.168.1.5", "hz")).await.unwrap();
    assert_eq!(z.lease.subnet, x.lease.subnet);
    let moved = get(s, &c, &me).await.unwrap();
    assert!(![a.lease.subnet, b.lease.subnet, x.lease.subnet].contains(&moved.lease.subnet));
}

/// A second daemon under a node name that a live daemon holds is refused; once the first has
/// gone silent for the grace period, the second takes the subnet (with its own IP).
pub async fn a_name_held_by_a_live_daemon_is_refused<S: LeaseStore>(s: &S) {
    let mut c = cfg("10.244.0.0/16", 24);
    c.grace = Duration::from_millis(300);
    let first = node("n", "192.168.1.1", "machine-a");
    let held = get(s, &c, &first).await.unwrap();
    let second = node("n", "192.168.1.99", "machine-b");
    let mut seen = Seen::default();
    for _ in 0..3 {
        let e = acquire(s, &c, &second, &mut seen).await.unwrap_err();
        assert!(matches!(e, ClusterError::NameHeld { .. }), "{e}");
        // the first keeps renewing: the second never sees it silent
        tokio::time::sleep(Duration::from_millis(150)).await;
        renew(
            s,
            &c,
            &get(s, &c, &first).await.unwrap(),
            &first,
            &mut Seen::default(),
        )
        .await
        .unwrap();
    }
    let now = s.list().await.unwrap().leases;
    assert_eq!(now.len(), 1);
    assert_eq!(
        now[0].lease.node_ip.to_string(),
        "192.168.1.1",
        "the second rerouted the node"
    );
    // the first dies: the second, which retries, sees its last renewal, then the grace pass
    assert!(acquire(s, &c, &second, &mut seen).await.is_err());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let taken = acquire(s, &c, &second, &mut seen).await.unwrap();
    assert_eq!(taken.lease.subnet, held.lease.subnet);
    assert_eq!(taken.lease.node_ip.to_string(), "192.168.1.99");
}

/// Entries that are no valid lease are listed as invalid, one by one, and block the subnets they
/// name; a node acquiring moves on to the next free subnet. `put_raw(key, bytes)` writes an entry
/// under a key, bypassing every check.
pub async fn bad_records_are_skipped_one_by_one<S, F, Fut>(s: &S, put_raw: F)
where
    S: LeaseStore,
    F: Fn(String, Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let c = cfg("10.244.0.0/16", 24);
    let rec = |subnet: &str, ip: &str| Lease {
        subnet: subnet.parse().unwrap(),
        node_name: format!("n-{subnet}"),
        node_ip: ip.parse().unwrap(),
        expires: u64::MAX / 2,
        holder: None,
        vtep_mac: None,
        ipv6_subnet: None,
        node_ip_v6: None,
    };
    let key = |subnet: &str| subnet_key(subnet.parse::<IpNetwork>().unwrap());
    put_raw(key("10.244.0.0/24"), b"{not json".to_vec()).await;
    put_raw(
        key("10.244.1.0/24"),
        lease_bytes(&rec("10.244.5.0/24", "192.168.1.5")),
    )
    .await;
    put_raw(
        "10.244.2.7-24".into(),
        lease_bytes(&rec("10.244.2.0/24", "192.168.1.2")),
    )
    .await;
    put_raw(
        key("10.244.3.0/24"),
        lease_bytes(&rec("10.244.3.0/24", "127.0.0.1")),
    )
    .await;
    // valid records that this cluster does not accept: another size, outside the CIDR
    put_raw(
        key("10.244.6.0/23"),
        lease_bytes(&rec("10.244.6.0/23", "192.168.1.6")),
    )
    .await;
    put_raw(
        key("10.99.0.0/24"),
        lease_bytes(&rec("10.99.0.0/24", "192.168.1.9")),
    )
    .await;
    let listing = s.list().await.unwrap();
    let bad: Vec<&str> = listing.invalid.iter().map(|i| i.key.as_str()).collect();
    for k in ["10.244.0.0-24", "10.244.1.0-24", "10.244.2.7-24", "10.244.3.0-24"] {
        assert!(bad.contains(&k), "{k} is not listed as invalid: {listing:?}");
    }
    assert_eq!(listing.leases.len(), 2, "{listing:?}");
    let mut got = Vec::new();
    for i in 0..4 {
        let me = node(
            &format!("new{i}"),
            &format!("192.168.2.{}", i + 1),
            &format!("h{i}"),
        );
        got.push(get(s, &c, &me).await.unwrap().lease.subnet.to_string());
    }
    // 0, 1 and 3 are blocked by what their keys name, 6 and 7 by the /23
    assert_eq!(
        got,
        ["10.244.2.0/24", "10.244.4.0/24", "10.244.5.0/24", "10.244.8.0/24"]
    );
}

/// A renewal that finds its record changed keeps the node in the subnet its pods live in: a
/// record that vanished is written again (with a lower subnet free), one that is no valid lease
/// is refused and keeps blocking the subnet for others, and only a record that another node
/// holds makes the node acquire again. `put_raw` as for [`bad_records_are_skipped_one_by_one`].
pub async fn a_renewal_keeps_the_held_subnet<S, F, Fut>(s: &S, put_raw: F)
where
    S: LeaseStore,
    F: Fn(String, Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let c = cfg("10.244.0.0/16", 24);
    let me = node("b", "192.168.1.2", "hb");
    let a = get(s, &c, &node("a", "192.168.1.1", "ha")).await.unwrap();
    let b = get(s, &c, &me).await.unwrap();
    // a's subnet, below b's, is free again; then b's record vanishes
    assert!(release(s, &a).await.unwrap());
    assert!(release(s, &b).await.unwrap());
    let b2 = renew(s, &c, &b, &me, &mut Seen::default()).await.unwrap();
    assert_eq!(
        b2.lease.subnet, b.lease.subnet,
        "a node moved out of its own subnet"
    );
    // b's record vanishes again and another node creates one at its key before b renews: b's
    // compare-and-swap must not win over it (a re-created key has no version b knows), and b
    // moves to the next free subnet
    assert!(release(s, &b2).await.unwrap());
    let theirs = Lease {
        node_name: "z".into(),
        node_ip: "192.168.1.26".parse().unwrap(),
        expires: u64::MAX / 2,
        holder: Some("hz".into()),
        vtep_mac: None,
        ipv6_subnet: None,
        node_ip_v6: None,
        ..b2.lease.clone()
    };
    assert!(s.create(&theirs, c.ttl).await.unwrap().is_some());
    let b3 = renew(s, &c, &b2, &me, &mut Seen::default()).await.unwrap();
    assert_ne!(b3.lease.subnet, b.lease.subnet);
    assert_eq!(b3.lease.subnet, a.lease.subnet);
    let now = s.list().await.unwrap();
    assert!(now.leases.iter().any(|v| v.lease == theirs), "{now:?}");
    // b's new record is overwritten by something that is no lease: b keeps the subnet
    put_raw(subnet_key(b3.lease.subnet), b"{not json".to_vec()).await;
    let e = renew(s, &c, &b3, &me, &mut Seen::default()).await.unwrap_err();
    assert!(matches!(e, ClusterError::OwnRecordInvalid { .. }), "{e}");
    let other = get(s, &c, &node("o", "192.168.1.4", "ho")).await.unwrap();
    assert_ne!(
        other.lease.subnet, b3.lease.subnet,
        "a blocked subnet was handed out"
    );
}

fn lease_bytes(l: &Lease) -> Vec<u8> {
    serde_json::to_vec(l).unwrap()
}

/// A dual-stack cluster: each node's one lease holds a subnet of each family, distinct across
/// nodes even when they acquire at once; a record of one family (an older node) is valid, and
/// its renewal under the dual-stack configuration adds the IPv6 subnet; an IPv6 subnet named by
/// a record under another key is skipped; an IPv6 CIDR smaller than the IPv4 one fills first,
/// names itself, and leaves the nodes that hold leases renewing.
pub async fn two_families_one_lease<S: LeaseStore + 'static>(s: Arc<S>) {
    let net = |n: &str| n.parse::<IpNetwork>().unwrap();
    let c = Arc::new(
        cfg("10.244.0.0/16", 24)
            .with_family(net("fd00:10:244::/60"), 64)
            .unwrap(),
    );
    // an older node's record, IPv4 only, at the first slot
    let old = node("old", "192.168.0.200", "hold");
    let old_lease = Lease {
        subnet: net("10.244.0.0/24"),
        ipv6_subnet: None,
        node_name: "old".into(),
        node_ip: old.node_ip,
        node_ip_v6: None,
        expires: u64::MAX / 2,
        holder: Some("hold".into()),
        vtep_mac: None,
    };
    let v = s.create(&old_lease, c.ttl).await.unwrap().unwrap();
    // a hand-made record under another key names the second slot's IPv6 subnet
    let squatter = Lease {
        subnet: net("10.244.9.0/24"),
        ipv6_subnet: Some("fd00:10:244:1::/64".parse().unwrap()),
        node_name: "sq".into(),
        node_ip: "192.168.0.201".parse().unwrap(),
        ..old_lease.clone()
    };
    s.create(&squatter, c.ttl).await.unwrap().unwrap();
    let hs: Vec<_> = (0..8)
        .map(|i| {
            let (s, c) = (s.clone(), c.clone());
            tokio::spawn(async move {
                let mut me = node(
                    &format!("n{i}"),
                    &format!("192.168.0.{}", i + 1),
                    &format!("h{i}"),
                );
                me.node_ip_v6 = Some(format!("fd00:56::{}", i + 1).parse().unwrap());
                get(&*s, &c, &me).await.unwrap()
            })
        })
        .collect();
    let (mut v4, mut v6) = (HashSet::new(), HashSet::new());
    for h in hs {
        let l = h.await.unwrap().lease;
        let six = l.ipv6_subnet.expect("a dual-stack lease without its IPv6 subnet");
        assert!(c.check(&l).is_ok(), "{l:?}");
        assert_eq!(c.slot_of(l.subnet).and_then(|s| s.ipv6), Some(six), "{l:?}");
        assert!(v4.insert(l.subnet) && v6.insert(six), "shared: {l:?}");
        assert!(l.node_ip_v6.is_some());
    }
    assert!(
        !v4.contains(&net("10.244.1.0/24")),
        "the squatted slot was handed out"
    );
    assert!(!v6.contains(&"fd00:10:244::/64".parse().unwrap()));
    // the older node's renewal under this configuration adds its partner
    let held = Versioned {
        lease: old_lease.clone(),
        version: v,
    };
    let renewed = renew(&*s, &c, &held, &old, &mut Seen::default()).await.unwrap();
    assert_eq!(renewed.lease.subnet, old_lease.subnet);
    assert_eq!(
        renewed.lease.ipv6_subnet.map(|n| n.to_string()).as_deref(),
        Some("fd00:10:244::/64")
    );
    // 16 slots: the old node's, the squatted one, the squatter's own key, 8 nodes: 5 left,
    // then full, naming the IPv6 CIDR
    let mut held = Vec::new();
    for i in 0..5 {
        held.push(
            get(&*s, &c, &node(&format!("m{i}"), "192.168.1.1", &format!("hm{i}")))
                .await
                .unwrap(),
        );
    }
    let e = get(&*s, &c, &node("last", "192.168.1.2", "hl"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ClusterError::ClusterFull(cidr, 64) if cidr == "fd00:10:244::/60"),
        "{e}"
    );
    for h in &held {
        let me = node(
            &h.lease.node_name,
            "192.168.1.1",
            &h.lease.holder.clone().unwrap(),
        );
        let r = renew(&*s, &c, h, &me, &mut Seen::default()).await.unwrap();
        assert_eq!(
            (r.lease.subnet, r.lease.ipv6_subnet),
            (h.lease.subnet, h.lease.ipv6_subnet)
        );
    }
}

/// A node whose slot's IPv6 subnet another record names (a node of another configuration, or a
/// hand edit) holds its first family alone, whether it renews or takes its record back by name,
/// and says why; once that record is gone, its next renewal adds the IPv6 subnet.
pub async fn a_partner_named_elsewhere_is_not_taken<S: LeaseStore>(s: &S) {
    let net = |n: &str| n.parse::<IpNetwork>().unwrap();
    let c = cfg("10.244.0.0/16", 24)
        .with_family(net("fd00:10:244::/60"), 64)
        .unwrap();
    let partner = "fd00:10:244::/64".parse().unwrap();
    let me = node("old", "192.168.0.200", "hold");
    // an older node's record, IPv4 only, at the first slot, whose partner another record names
    let old_lease = Lease {
        subnet: net("10.244.0.0/24"),
        ipv6_subnet: None,
        node_name: "old".into(),
        node_ip: me.node_ip,
        node_ip_v6: None,
        expires: u64::MAX / 2,
        holder: Some("hold".into()),
        vtep_mac: None,
    };
    let version = s.create(&old_lease, c.ttl).await.unwrap().unwrap();
    let other = Lease {
        subnet: net("10.244.9.0/24"),
        ipv6_subnet: Some(partner),
        node_name: "other".into(),
        node_ip: "192.168.0.201".parse().unwrap(),
        holder: Some("hother".into()),
        ..old_lease.clone()
    };
    let other_version = s.create(&other, c.ttl).await.unwrap().unwrap();
    let held = Versioned {
        lease: old_lease.clone(),
        version,
    };
    let renewed = renew(s, &c, &held, &me, &mut Seen::default()).await.unwrap();
    let taken_back = get(s, &c, &me).await.unwrap();
    for l in [&renewed.lease, &taken_back.lease] {
        assert_eq!((l.subnet, l.ipv6_subnet), (old_lease.subnet, None), "{l:?}");
        let why = missing_partner(&c, l).expect("the missing IPv6 subnet is said");
        assert!(why.contains("fd00:10:244::/64"), "{why}");
    }
    let listed = s.list().await.unwrap();
    let naming: Vec<_> = listed
        .leases
        .iter()
        .filter(|v| v.lease.ipv6_subnet == Some(partner))
        .map(|v| v.lease.node_name.as_str())
        .collect();
    assert_eq!(naming, ["other"], "{listed:?}");
    // the other record goes: the next renewal adds the partner
    assert!(s.delete(other.subnet, other_version).await.unwrap());
    let added = renew(s, &c, &taken_back, &me, &mut Seen::default())
        .await
        .unwrap();
    assert_eq!(added.lease.subnet, old_lease.subnet);
    assert_eq!(added.lease.ipv6_subnet, Some(partner));
    assert_eq!(missing_partner(&c, &added.lease), None);
    assert!(release(s, &added).await.unwrap());
}

/// An IPv6-only cluster: records keyed by their IPv6 subnet, listed and renewed as IPv4 ones,
/// with an IPv4 or an IPv6 node IP.
pub async fn an_ipv6_only_cluster<S: LeaseStore>(s: &S) {
    let c = cfg("fd00:10:244::/56", 64);
    let a = get(s, &c, &node("a", "192.168.1.1", "ha")).await.unwrap();
    let b = get(s, &c, &node("b", "fd00:56::2", "hb")).await.unwrap();
    assert_eq!(a.lease.subnet.to_string(), "fd00:10:244::/64");
    assert_eq!(b.lease.subnet.to_string(), "fd00:10:244:1::/64");
    assert_eq!(b.lease.ipv6_subnet, None);
    let listed = s.list().await.unwrap();
    assert!(listed.invalid.is_empty(), "{:?}", listed.invalid);
    assert_eq!(listed.leases.len(), 2);
    let got = s.get(&subnet_key(b.lease.subnet)).await.unwrap();
    assert_eq!(got.unwrap().unwrap().lease, b.lease);
    let me = node("b", "fd00:56::2", "hb");
    let b2 = renew(s, &c, &b, &me, &mut Seen::default()).await.unwrap();
    assert_eq!(b2.lease.subnet, b.lease.subnet);
    assert!(release(s, &b2).await.unwrap());
}
