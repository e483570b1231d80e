//! The etcd lease store against a real etcd (Debian's etcd-server) in a namespace of the test's:
//! the store conformance suite, etcd's own expiry, watches, and outages.

use cbrnet_ipam::cluster::conformance::{self, cfg, node};
use cbrnet_ipam::cluster::lease::{acquire, Seen};
use cbrnet_ipam::cluster::record::unix_now;
use cbrnet_ipam::cluster::store::etcd::EtcdStore;
use cbrnet_ipam::cluster::store::LeaseStore;
use cbrnet_ipam::cluster::{ClusterError, Lease};
use cbrnet_tests::etcd::Etcd;
use cbrnet_tests::Netns;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PREFIX: &str = "/cbrnet/subnets/";

/// A namespace of its own with etcd on its 127.0.0.1.
fn etcd(tag: &str) -> (Netns, Etcd) {
    let ns = Netns::new(tag);
    let etcd = Etcd::start_in(&ns, "127.0.0.1");
    (ns, etcd)
}

async fn connect(etcd: &Etcd, prefix: &str) -> Result<EtcdStore, ClusterError> {
    EtcdStore::connect(vec![etcd.url()], prefix).await
}

#[test]
fn same_node_gets_its_subnet_back_and_release_frees_it() {
    let (ns, etcd) = etcd("ets-same");
    ns.block_on(0, || async {
        let s = connect(&etcd, PREFIX).await.unwrap();
        let b = conformance::same_node_gets_its_subnet_back(&s).await;
        // the key is the prefix + the subnet key, and its value the lease's JSON
        let one = connect(&etcd, "/cbrnet/subnets/").await.unwrap();
        assert_eq!(one.list().await.unwrap().leases, vec![b]);
    });
}

#[test]
fn many_nodes_at_once_get_distinct_subnets() {
    let (ns, etcd) = etcd("ets-many");
    ns.block_on(4, || async {
        conformance::many_nodes_at_once_get_distinct_subnets(Arc::new(connect(&etcd, PREFIX).await.unwrap()))
            .await;
    });
}

#[test]
fn two_families_one_lease() {
    let (ns, etcd) = etcd("ets-dual");
    ns.block_on(4, || async {
        conformance::two_families_one_lease(Arc::new(connect(&etcd, PREFIX).await.unwrap())).await;
    });
}

#[test]
fn a_partner_named_elsewhere_is_not_taken() {
    let (ns, etcd) = etcd("ets-partner");
    ns.block_on(0, || async {
        conformance::a_partner_named_elsewhere_is_not_taken(&connect(&etcd, PREFIX).await.unwrap()).await;
    });
}

#[test]
fn a_node_comes_back_to_the_subnet_it_last_published() {
    let (ns, etcd) = etcd("ets-back");
    ns.block_on(0, || async {
        conformance::a_node_comes_back_to_the_subnet_it_last_published(
            &connect(&etcd, PREFIX).await.unwrap(),
        )
        .await;
    });
}

#[test]
fn an_ipv6_only_cluster() {
    let (ns, etcd) = etcd("ets-v6");
    ns.block_on(0, || async {
        conformance::an_ipv6_only_cluster(&connect(&etcd, PREFIX).await.unwrap()).await;
    });
}

#[test]
fn expired_leases_are_free_only_after_the_grace() {
    let (ns, etcd) = etcd("ets-grace");
    ns.block_on(0, || async {
        conformance::expired_leases_are_free_only_after_the_grace(&connect(&etcd, PREFIX).await.unwrap())
            .await;
    });
}

#[test]
fn a_name_held_by_a_live_daemon_is_refused() {
    let (ns, etcd) = etcd("ets-name");
    ns.block_on(0, || async {
        conformance::a_name_held_by_a_live_daemon_is_refused(&connect(&etcd, PREFIX).await.unwrap()).await;
    });
}

#[test]
fn bad_records_are_skipped_one_by_one() {
    let (ns, etcd) = etcd("ets-bad");
    ns.block_on(0, || async {
        let s = connect(&etcd, PREFIX).await.unwrap();
        let raw = connect(&etcd, PREFIX).await.unwrap();
        let raw = &raw;
        let put_raw = |key: String, bytes: Vec<u8>| async move { raw.put_raw(&key, bytes).await.unwrap() };
        conformance::bad_records_are_skipped_one_by_one(&s, put_raw).await;
    });
}

#[test]
fn a_renewal_keeps_the_held_subnet() {
    let (ns, etcd) = etcd("ets-renew");
    ns.block_on(0, || async {
        let s = connect(&etcd, PREFIX).await.unwrap();
        let raw = connect(&etcd, PREFIX).await.unwrap();
        let raw = &raw;
        let put_raw = |key: String, bytes: Vec<u8>| async move { raw.put_raw(&key, bytes).await.unwrap() };
        conformance::a_renewal_keeps_the_held_subnet(&s, put_raw).await;
    });
}

#[test]
fn a_listing_larger_than_one_answer_is_read_in_pages_and_whole() {
    let (ns, etcd) = etcd("ets-pages");
    ns.block_on(0, || async {
        use futures::StreamExt;
        let s = connect(&etcd, PREFIX).await.unwrap();
        let s = &s;
        // 2,500 records (pages of 1,000), one of them junk, and a key beside the prefix
        let n = 2500u32;
        futures::stream::iter(0..n)
            .map(|k| async move {
                let net =
                    std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 1, 0, 0)) + (k << 8));
                let l = Lease {
                    subnet: format!("{net}/24").parse().unwrap(),
                    node_name: format!("n{k}"),
                    node_ip: "192.168.1.1".parse().unwrap(),
                    expires: unix_now() + 3600,
                    holder: None,
                    vtep_mac: None,
                    ipv6_subnet: None,
                    node_ip_v6: None,
                };
                let key = cbrnet_ipam::cluster::record::subnet_key(l.subnet);
                let body = if k == 1234 {
                    b"junk".to_vec()
                } else {
                    serde_json::to_vec(&l).unwrap()
                };
                s.put_raw(&key, body).await.unwrap();
            })
            .buffer_unordered(64)
            .collect::<Vec<()>>()
            .await;
        let beside = connect(&etcd, "/cbrnet/subnets0").await.unwrap();
        beside.put_raw("x", b"{}".to_vec()).await.unwrap();
        let listing = s.list().await.unwrap();
        assert_eq!(listing.leases.len(), n as usize - 1);
        assert_eq!(listing.invalid.len(), 1, "{:?}", listing.invalid);
        let names: std::collections::HashSet<&str> = listing
            .leases
            .iter()
            .map(|v| v.lease.node_name.as_str())
            .collect();
        assert_eq!(names.len(), n as usize - 1, "a key listed twice or missed");
    });
}

#[test]
fn etcd_deletes_a_lease_that_is_not_renewed() {
    let (ns, etcd) = etcd("ets-ttl");
    ns.block_on(0, || async {
        let s = connect(&etcd, PREFIX).await.unwrap();
        let l = Lease {
            subnet: "10.244.7.0/24".parse().unwrap(),
            node_name: "gone".into(),
            node_ip: "192.168.1.7".parse().unwrap(),
            expires: unix_now() + 2,
            holder: None,
            vtep_mac: None,
            ipv6_subnet: None,
            node_ip_v6: None,
        };
        assert!(s.create(&l, Duration::from_secs(2)).await.unwrap().is_some());
        assert_eq!(s.create(&l, Duration::from_secs(2)).await.unwrap(), None);
        assert_eq!(s.list().await.unwrap().leases.len(), 1);
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(s.list().await.unwrap().leases, vec![]);
    });
}

#[test]
fn renewals_leave_no_etcd_lease_behind() {
    let (ns, etcd) = etcd("ets-revoke");
    ns.block_on(0, || async {
        let s = connect(&etcd, PREFIX).await.unwrap();
        let mut l = Lease {
            subnet: "10.244.8.0/24".parse().unwrap(),
            node_name: "renewer".into(),
            node_ip: "192.168.1.8".parse().unwrap(),
            expires: unix_now() + 3600,
            holder: None,
            vtep_mac: None,
            ipv6_subnet: None,
            node_ip_v6: None,
        };
        let ttl = Duration::from_secs(3600);
        let mut version = s.create(&l, ttl).await.unwrap().unwrap();
        for _ in 0..20 {
            l.expires += 1;
            version = s.update(&l, version, ttl).await.unwrap().unwrap();
        }
        // a compare that fails grants and revokes one too
        assert_eq!(s.update(&l, version - 1, ttl).await.unwrap(), None);
        let mut c = etcd_client::Client::connect([etcd.url()], None).await.unwrap();
        let live = c.leases().await.unwrap().leases().len();
        assert_eq!(live, 1, "etcd leases alive after 20 renewals");
        // and the record is still there, under the one lease left
        assert_eq!(s.list().await.unwrap().leases.len(), 1);
    });
}

#[test]
fn watch_reports_another_clients_change() {
    let (ns, etcd) = etcd("ets-watch");
    ns.block_on(0, || async {
        let (s, other) = (
            connect(&etcd, PREFIX).await.unwrap(),
            connect(&etcd, PREFIX).await.unwrap(),
        );
        let mut w = s.watch().await.unwrap();
        let quiet = tokio::time::timeout(Duration::from_millis(300), w.changed()).await;
        assert!(quiet.is_err(), "nothing changed yet");
        let c = cfg("10.244.0.0/16", 24);
        let got = acquire(&other, &c, &node("b", "192.168.1.2", "hb"), &mut Seen::default())
            .await
            .unwrap();
        let changed = tokio::time::timeout(Duration::from_secs(5), w.changed())
            .await
            .expect("a message within 5s")
            .expect("the watch is still running");
        // the watch names the key that changed, and `get` reads it
        let key = cbrnet_ipam::cluster::record::subnet_key(got.lease.subnet);
        assert!(changed.keys.contains(&key), "{changed:?}");
        assert_eq!(s.get(&key).await.unwrap(), Some(Ok(got)));
    });
}

#[test]
fn a_dead_etcd_is_an_error_not_a_hang() {
    let (ns, mut etcd) = etcd("ets-dead");
    let etcd = &mut etcd;
    ns.block_on(0, || async move {
        let s = connect(etcd, PREFIX).await.unwrap();
        etcd.pause();
        let t0 = Instant::now();
        let e = s.list().await.unwrap_err();
        assert!(matches!(e, ClusterError::Store(_)), "{e}");
        let e = connect(etcd, PREFIX).await.err().unwrap();
        assert!(matches!(e, ClusterError::Store(_)), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    });
}

#[test]
fn watch_comes_back_after_etcd_restarts() {
    let (ns, mut etcd) = etcd("ets-restart");
    let etcd = &mut etcd;
    ns.block_on(0, || async move {
        let s = connect(etcd, PREFIX).await.unwrap();
        let mut w = s.watch().await.unwrap();
        etcd.pause();
        etcd.resume();
        // everything changed (as far as the watcher can know), then the watch works as before
        let changed = tokio::time::timeout(Duration::from_secs(10), w.changed())
            .await
            .expect("a resync message")
            .unwrap();
        assert!(changed.all);
        let c = cfg("10.244.0.0/16", 24);
        acquire(&s, &c, &node("a", "192.168.1.1", "ha"), &mut Seen::default())
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), w.changed())
            .await
            .expect("a message for the change")
            .unwrap();
    });
}
