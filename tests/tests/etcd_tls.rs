//! The etcd lease store over TLS, with client certificates and etcd users, against a real etcd
//! (Debian's etcd-server) in a namespace of the test's, with certificates made by the test: the
//! conformance suite over TLS, a user and password over TLS, and every misconfiguration named in
//! words, never a hang.

use cbrnet_ipam::cluster::conformance;
use cbrnet_ipam::cluster::store::etcd::EtcdStore;
use cbrnet_ipam::cluster::store::etcd_auth::EtcdAuth;
use cbrnet_ipam::cluster::store::LeaseStore;
use cbrnet_ipam::cluster::ClusterError;
use cbrnet_tests::etcd::{enable_auth, Etcd};
use cbrnet_tests::pki::{Ca, EtcdPki, Pair, PairFiles};
use cbrnet_tests::Netns;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PREFIX: &str = "/cbrnet/subnets/";

/// etcd on the 127.0.0.1 of a namespace of its own, speaking TLS only, asking for client
/// certificates if `client_certs`; a valid client pair in the PKI's directory.
struct Tls {
    etcd: Etcd,
    ns: Netns,
    pki: EtcdPki,
    client: PairFiles,
}

fn tls_etcd(tag: &str, client_certs: bool) -> Tls {
    let ns = Netns::new(tag);
    let pki = EtcdPki::new(&["127.0.0.1", "localhost"], client_certs);
    let client = pki.client_ca.client("cbrnet").write(pki.dir.path(), "client");
    Tls {
        etcd: Etcd::start_tls_in(&ns, "127.0.0.1", pki.server.clone()),
        ns,
        pki,
        client,
    }
}

impl Tls {
    /// The CA file and, if given, a client pair.
    fn auth(&self, client: Option<&PairFiles>) -> EtcdAuth {
        EtcdAuth {
            ca_file: Some(self.pki.ca_file.clone()),
            cert_file: client.map(|c| c.cert.clone()),
            key_file: client.map(|c| c.key.clone()),
            ..EtcdAuth::default()
        }
    }

    /// A user and its password (in a file of the test's).
    fn user(&self, user: &str, password: &str) -> EtcdAuth {
        let pw = self.pki.dir.path().join(format!("{user}.password"));
        std::fs::write(&pw, format!("{password}\n")).unwrap();
        EtcdAuth {
            username: Some(user.into()),
            password_file: Some(pw),
            ..self.auth(None)
        }
    }
}

async fn connect(url: &str, prefix: &str, auth: &EtcdAuth) -> Result<EtcdStore, ClusterError> {
    EtcdStore::connect_with(vec![url.to_string()], prefix, auth.clone()).await
}

/// Connecting fails, within a few seconds, with an error that says `why`.
async fn refused(url: &str, auth: &EtcdAuth, why: &str) {
    let t = Instant::now();
    let e = match connect(url, PREFIX, auth).await {
        Ok(s) => match s.list().await {
            Ok(_) => panic!("expected {why:?}, but the store works"),
            Err(e) => e,
        },
        Err(e) => e,
    };
    assert!(matches!(e, ClusterError::Store(_)), "{e}");
    assert!(e.to_string().contains(why), "expected {why:?} in: {e}");
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
}

#[test]
fn the_conformance_suite_passes_over_tls_with_client_certificates() {
    let t = tls_etcd("etls-conf", true);
    let auth = t.auth(Some(&t.client));
    let url = t.etcd.url();
    assert!(url.starts_with("https://"), "{url}");
    t.ns.block_on(4, || async {
        // each part of the suite under a prefix of its own, on one etcd
        let s = |p: &'static str| {
            let (url, auth) = (url.clone(), auth.clone());
            async move { connect(&url, p, &auth).await.unwrap() }
        };
        conformance::same_node_gets_its_subnet_back(&s("/a/").await).await;
        conformance::many_nodes_at_once_get_distinct_subnets(Arc::new(s("/b/").await)).await;
        conformance::expired_leases_are_free_only_after_the_grace(&s("/c/").await).await;
        conformance::a_name_held_by_a_live_daemon_is_refused(&s("/d/").await).await;
        let (st, raw) = (s("/e/").await, s("/e/").await);
        let raw = &raw;
        let put_raw = |key: String, bytes: Vec<u8>| async move { raw.put_raw(&key, bytes).await.unwrap() };
        conformance::bad_records_are_skipped_one_by_one(&st, put_raw).await;
        let (st, raw) = (s("/f/").await, s("/f/").await);
        let raw = &raw;
        let put_raw = |key: String, bytes: Vec<u8>| async move { raw.put_raw(&key, bytes).await.unwrap() };
        conformance::a_renewal_keeps_the_held_subnet(&st, put_raw).await;
        // and the watch, over TLS
        let st = s("/g/").await;
        let mut w = st.watch().await.unwrap();
        let c = conformance::cfg("10.244.0.0/16", 24);
        cbrnet_ipam::cluster::lease::acquire(
            &st,
            &c,
            &conformance::node("w", "192.168.1.3", "hw"),
            &mut Default::default(),
        )
        .await
        .unwrap();
        tokio::time::timeout(Duration::from_secs(5), w.changed())
            .await
            .expect("a change within 5s")
            .unwrap();
    });
}

#[test]
fn each_tls_misconfiguration_is_named_and_never_hangs() {
    let t = tls_etcd("etls-bad", true);
    let url = t.etcd.url();
    let d = t.pki.dir.path();
    let other_ca = Ca::new("other");
    let wrong_ca = EtcdAuth {
        ca_file: Some(other_ca.write(&d.join("other-ca.crt"))),
        ..t.auth(Some(&t.client))
    };
    let foreign = other_ca.client("cbrnet").write(d, "foreign");
    let expired = t.pki.client_ca.expired_client("cbrnet").write(d, "expired");
    let mismatched = t
        .pki
        .client_ca
        .client("cbrnet")
        .with_key_of(&t.pki.client_ca.client("x"))
        .write(d, "mismatched");
    let plain_url = url.replace("https://", "http://");
    t.ns.block_on(0, || async {
        // the right files work
        connect(&url, PREFIX, &t.auth(Some(&t.client)))
            .await
            .unwrap()
            .list()
            .await
            .unwrap();
        refused(&url, &wrong_ca, "wrong CA").await;
        refused(&url, &t.auth(None), "requires a client certificate").await;
        refused(&url, &t.auth(Some(&foreign)), "refused the client certificate").await;
        refused(&url, &t.auth(Some(&expired)), "expired at 2021-01-01").await;
        refused(&url, &t.auth(Some(&mismatched)), "does not match the certificate").await;
        refused(&plain_url, &EtcdAuth::default(), "it speaks TLS only").await;
    });
}

#[test]
fn https_against_a_plain_etcd_is_named() {
    let ns = Netns::new("etls-plain");
    let etcd = Etcd::start_in(&ns, "127.0.0.1");
    let url = etcd.url().replace("http://", "https://");
    let ca = Ca::new("ca");
    let dir = cbrnet_tests::temp_dir();
    let auth = EtcdAuth {
        ca_file: Some(ca.write(&dir.path().join("ca.crt"))),
        ..EtcdAuth::default()
    };
    // A plain etcd hangs up on the TLS hello at its end or at once: several tries see both.
    ns.block_on(0, || async {
        for _ in 0..6 {
            refused(&url, &auth, "does not speak TLS").await;
        }
    });
}

#[test]
fn a_user_and_password_over_tls_and_their_errors() {
    let t = tls_etcd("etls-user", false);
    let url = t.etcd.url();
    t.ns.block_on(0, || async {
        enable_auth(&url, Some(t.pki.client_options(None)), "cbrnet", "s3cret", PREFIX).await;
        // the user reads and writes its prefix
        let s = connect(&url, PREFIX, &t.user("cbrnet", "s3cret")).await.unwrap();
        conformance::same_node_gets_its_subnet_back(&s).await;
        refused(
            &url,
            &t.user("cbrnet", "wrong"),
            "refused the user name or password",
        )
        .await;
        refused(&url, &t.user("nobody", "nobody"), "no permission on the prefix").await;
        refused(&url, &t.auth(None), "requires a user").await;
    });
}

/// etcd on 127.0.0.1 with the server certificate `server` makes: connecting fails saying `why`.
fn server_certificate_named(tag: &str, server: impl FnOnce(&Ca) -> Pair, why: &str) {
    let ns = Netns::new(tag);
    let pki = EtcdPki::with_server(server, false);
    let etcd = Etcd::start_tls_in(&ns, "127.0.0.1", pki.server.clone());
    let auth = EtcdAuth {
        ca_file: Some(pki.ca_file.clone()),
        ..EtcdAuth::default()
    };
    let url = etcd.url();
    ns.block_on(0, || refused(&url, &auth, why));
}

#[test]
fn server_certificates_for_another_host_expired_or_not_yet_valid_are_named() {
    server_certificate_named(
        "etls-name",
        |ca| ca.server(&["127.0.0.2", "etcd.example"]),
        "etcd's server certificate at https://127.0.0.1:2379 does not name the host it is reached at (it names 127.0.0.2, etcd.example)",
    );
    server_certificate_named(
        "etls-exp",
        |ca| ca.expired_server(&["127.0.0.1"]),
        "etcd's server certificate at https://127.0.0.1:2379 expired at 2021-01-01 00:00:00 UTC",
    );
    server_certificate_named(
        "etls-future",
        |ca| ca.future_server(&["127.0.0.1"]),
        "etcd's server certificate at https://127.0.0.1:2379 is not valid before 2090-01-01 00:00:00 UTC yet",
    );
}
