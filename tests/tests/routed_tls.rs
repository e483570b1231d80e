//! `cbrnet-routed` against an etcd that speaks TLS only and asks for client certificates, in a lab
//! of its own: a client certificate and a password rotated while the daemon runs; each
//! misconfiguration (a wrong CA, a server certificate for another host, the system's roots that
//! do not hold etcd's CA, a user without permission, a user where etcd has no users) said in
//! `/healthz`, in the log once, and by `leases` (and `release`); the system's roots when no CA
//! file is given; files that cannot be read refused at start.

use cbrnet_tests::etcd::Etcd;
use cbrnet_tests::lab::{Lab, StoreKind};
use cbrnet_tests::pki::{write_atomically, Ca, EtcdPki, PairFiles};
use cbrnet_tests::{bin, routed, routed_with, Netns};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const URL: &str = "https://192.168.50.2:2379";
const PREFIX: &str = "/cbrnet/subnets/";

/// A lab whose store is a TLS-only etcd at 192.168.50.2 asking for client certificates of the
/// PKI's client CA.
struct TlsLab {
    lab: Lab,
    pki: EtcdPki,
}

fn tls_lab(tag: &str) -> TlsLab {
    tls_lab_naming(tag, &["192.168.50.2"])
}

/// [`tls_lab`] with etcd's certificate for `names` (addresses or DNS names).
fn tls_lab_naming(tag: &str, names: &[&str]) -> TlsLab {
    let mut lab = Lab::new(tag, StoreKind::File);
    lab.underlay
        .ok(&["ip", "addr", "add", "192.168.50.2/24", "dev", "ul0"]);
    let pki = EtcdPki::new(names, true);
    let etcd = Etcd::start_tls_in(&lab.underlay, "192.168.50.2", pki.server.clone());
    assert_eq!(etcd.url(), URL);
    lab.store = etcd.store();
    lab.etcd = Some(etcd);
    TlsLab { lab, pki }
}

/// A client certificate of `ca` with the common name `cn`, in node `i`'s directory (where a
/// rotation, by cert-manager or a script, replaces it).
fn node_pair(lab: &Lab, i: usize, ca: &Ca, cn: &str) -> PairFiles {
    ca.client(cn).write(lab.nodes[i].node.dir.path(), "client")
}

/// The flags of a CA file (none: the system's roots) and a client pair.
fn tls_flags(ca: Option<&Path>, pair: &PairFiles) -> Vec<String> {
    let mut flags = Vec::new();
    if let Some(ca) = ca {
        flags.extend(["--etcd-ca-file".to_string(), ca.display().to_string()]);
    }
    flags.extend([
        "--etcd-cert-file".to_string(),
        pair.cert.display().to_string(),
        "--etcd-key-file".to_string(),
        pair.key.display().to_string(),
    ]);
    flags
}

/// The flags of etcd user `user`, whose password is written (0600) to node `i`'s file.
fn user_flags(lab: &Lab, i: usize, user: &str, password: &str) -> Vec<String> {
    let pw = lab.nodes[i].node.dir.path().join("password");
    write_atomically(&pw, format!("{password}\n").as_bytes(), 0o600);
    [
        "--etcd-username",
        user,
        "--etcd-password-file",
        pw.to_str().unwrap(),
    ]
    .map(String::from)
    .into()
}

/// The daemon's log at debug level: each silent retry shows, so that "said once" is judged over
/// several of them.
fn debug_env() -> Vec<(String, String)> {
    vec![("CBRNET_LOG".into(), "debug".into())]
}

/// Starts node `i`'s daemon with `flags` at debug level, without waiting for a lease.
fn spawn_debug(lab: &mut Lab, i: usize, flags: &[String]) {
    lab.nodes[i].flags = flags.to_vec();
    lab.nodes[i].env = debug_env();
    lab.spawn(i);
}

/// `leases` on node `i` with `flags` (and the lab's store) fails, saying `reason`.
fn leases_say(lab: &Lab, i: usize, flags: &[String], env: impl FnOnce(&mut Command), reason: &str) {
    let mut args = vec!["leases".to_string(), "--store".into(), lab.store.clone()];
    args.extend(flags.iter().cloned());
    let (code, err) = routed_with(&lab.nodes[i].node.ns, &args, env);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains(reason), "{err}");
}

/// Node `i`'s daemon (with [`debug_env`]) cannot use the store for `reason`: said once in the
/// log over several retries, in `/healthz`, and `cbrnet_store_up` is 0; no subnet is taken.
fn store_down_for(lab: &Lab, i: usize, reason: &str) {
    lab.expect_said_once(i, reason, 3);
    let (code, body) = lab.http_get(i, "/healthz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains(&format!("the lease store: {reason}")), "{body}");
    assert_eq!(lab.metric(i, "cbrnet_store_up"), 0.0);
    assert!(lab.nodes[i].subnet().is_none());
}

/// Turns etcd's users on (a user `cbrnet` with `password` whose role has the prefix; `nobody`
/// with no role), as etcd's root by client certificate, from inside node `i`.
fn enable_auth(lab: &Lab, i: usize, pki: &EtcdPki, password: &str) {
    let root = pki.client_options(Some("root"));
    lab.nodes[i].node.ns.block_on(0, || {
        cbrnet_tests::etcd::enable_auth(URL, Some(root), "cbrnet", password, PREFIX)
    });
}

#[test]
fn a_client_certificate_rotated_while_the_daemon_runs_is_used_after_etcd_restarts() {
    let TlsLab { mut lab, pki } = tls_lab("rtls-rot");
    let i = lab.add_node();
    let pair = node_pair(&lab, i, &pki.client_ca, "node-0");
    lab.nodes[i].flags = tls_flags(Some(&pki.ca_file), &pair);
    lab.nodes[i].env = debug_env();
    lab.start(i);
    assert!(lab.wait_for(Duration::from_secs(5), |l| l.http_get(i, "/healthz").0 == 200));

    // a broken new pair (a key of another certificate) is logged and the connection kept
    let other = pki.client_ca.client("x");
    write_atomically(&pair.key, other.key.as_bytes(), 0o600);
    lab.expect_logged(i, Duration::from_secs(15), "does not match the certificate");
    assert_eq!(lab.http_get(i, "/healthz").0, 200);

    // the new pair, of a CA etcd does not trust yet: the working connection stays
    let ca2 = Ca::new("client-ca-2");
    let new = ca2.client("node-0");
    write_atomically(&pair.cert, new.cert.as_bytes(), 0o644);
    write_atomically(&pair.key, new.key.as_bytes(), 0o600);
    lab.expect_logged(i, Duration::from_secs(15), "refused the client certificate");
    assert_eq!(lab.http_get(i, "/healthz").0, 200);

    // etcd restarted trusting only the new CA: the daemon reconnects with the new pair
    let etcd = lab.etcd.as_mut().unwrap();
    etcd.set_client_ca(Some(ca2.write(&pki.dir.path().join("client-ca-2.crt"))));
    etcd.pause();
    etcd.resume();
    lab.expect_logged(i, Duration::from_secs(30), "connected with the new ones");
    assert!(lab.wait_for(Duration::from_secs(10), |l| l.http_get(i, "/healthz").0 == 200));
    // and it follows the store: a new node with a pair of the new CA is routed to
    let j = lab.add_node();
    let pair_j = node_pair(&lab, j, &ca2, "node-1");
    lab.nodes[j].flags = tls_flags(Some(&pki.ca_file), &pair_j);
    lab.start(j);
    assert!(
        lab.wait_for(Duration::from_secs(15), |l| l.routes_complete(i)),
        "{}",
        lab.nodes[i].route_table()
    );
    assert_eq!(lab.metric(i, "cbrnet_store_up"), 1.0);
}

#[test]
fn a_wrong_ca_is_said_in_healthz_once_in_the_log_and_by_leases_and_release() {
    let TlsLab { mut lab, pki } = tls_lab("rtls-ca");
    let i = lab.add_node();
    let pair = node_pair(&lab, i, &pki.client_ca, "node-0");
    // a key others may read: warned about
    std::fs::set_permissions(&pair.key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let wrong = lab.nodes[i].node.dir.path().join("ca.crt");
    Ca::new("not-etcds").write(&wrong);
    let flags = tls_flags(Some(&wrong), &pair);
    spawn_debug(&mut lab, i, &flags);
    let reason = format!(
        "etcd's server certificate at {URL} is not signed by the CA of --etcd-ca-file {}: wrong CA",
        wrong.display()
    );
    store_down_for(&lab, i, &reason);
    let log = lab.nodes[i].log();
    assert!(
        log.contains("--etcd-key-file") && log.contains("readable by group or others"),
        "{log}"
    );

    // leases and release say the same, and fail
    leases_say(&lab, i, &flags, |_| {}, &reason);
    let mut args: Vec<String> = ["release", "--node-name", "node-0", "--store", &lab.store]
        .map(String::from)
        .into();
    args.extend(flags);
    let (code, err) = routed(&lab.nodes[i].node.ns, &args);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains(&reason), "{err}");

    // the right CA put in the file's place: the daemon gets its lease without a restart
    std::fs::copy(&pki.ca_file, &wrong).unwrap();
    assert!(
        lab.wait_for(Duration::from_secs(15), |l| l.nodes[i].subnet().is_some()),
        "{}",
        lab.nodes[i].log()
    );
    assert!(lab.wait_for(Duration::from_secs(5), |l| l.http_get(i, "/healthz").0 == 200));
}

#[test]
fn a_server_certificate_for_another_host_is_said_in_healthz_once_in_the_log_and_by_leases() {
    // etcd is reached at 192.168.50.2; its certificate names another address and a DNS name
    let TlsLab { mut lab, pki } = tls_lab_naming("rtls-name", &["192.168.50.3", "etcd.example"]);
    let i = lab.add_node();
    let pair = node_pair(&lab, i, &pki.client_ca, "node-0");
    let flags = tls_flags(Some(&pki.ca_file), &pair);
    spawn_debug(&mut lab, i, &flags);
    let reason = format!(
        "etcd's server certificate at {URL} does not name the host it is reached at (it names 192.168.50.3, etcd.example)"
    );
    store_down_for(&lab, i, &reason);
    leases_say(&lab, i, &flags, |_| {}, &reason);
}

#[test]
fn https_without_a_ca_file_trusts_the_systems_roots() {
    let TlsLab { mut lab, pki } = tls_lab("rtls-roots");
    // The roots come from SSL_CERT_FILE and SSL_CERT_DIR when either is set (rustls-native-
    // certs), else from the machine's store: the test's CA is made the system's roots of a
    // process by naming it alone.
    let ca_file = pki.ca_file.display().to_string();
    let ours = |cmd: &mut Command| {
        cmd.env("SSL_CERT_FILE", &ca_file).env_remove("SSL_CERT_DIR");
    };
    let i = lab.add_node();
    let pair = node_pair(&lab, i, &pki.client_ca, "node-0");
    let flags = tls_flags(None, &pair);
    lab.nodes[i].flags = flags.clone();
    lab.nodes[i].env = vec![("SSL_CERT_FILE".into(), ca_file.clone())];
    lab.nodes[i].env_remove = vec!["SSL_CERT_DIR".into()];
    lab.start(i);
    assert!(lab.wait_for(Duration::from_secs(5), |l| l.http_get(i, "/healthz").0 == 200));
    let mut args = vec!["leases".to_string(), "--store".into(), lab.store.clone()];
    args.extend(flags);
    let (code, err) = routed_with(&lab.nodes[i].node.ns, &args, ours);
    assert_eq!(code, 0, "{err}");

    // the machine's own roots do not hold the test's CA
    let j = lab.add_node();
    let pair_j = node_pair(&lab, j, &pki.client_ca, "node-1");
    let flags_j = tls_flags(None, &pair_j);
    lab.nodes[j].env_remove = vec!["SSL_CERT_FILE".into(), "SSL_CERT_DIR".into()];
    spawn_debug(&mut lab, j, &flags_j);
    let reason = format!(
        "etcd's server certificate at {URL} is not signed by the system's CAs (no --etcd-ca-file): wrong CA"
    );
    store_down_for(&lab, j, &reason);
    let machines = |cmd: &mut Command| {
        cmd.env_remove("SSL_CERT_FILE").env_remove("SSL_CERT_DIR");
    };
    leases_say(&lab, j, &flags_j, machines, &reason);

    // roots that hold no certificate at all
    let empty = lab.dir.path().join("no-roots.pem");
    std::fs::write(&empty, "").unwrap();
    let no_roots = |cmd: &mut Command| {
        cmd.env("SSL_CERT_FILE", &empty).env_remove("SSL_CERT_DIR");
    };
    leases_say(
        &lab,
        j,
        &flags_j,
        no_roots,
        "https:// without --etcd-ca-file, and the system has no CA certificates",
    );
}

#[test]
fn tls_and_password_files_that_cannot_be_read_exit_2_naming_the_flag() {
    let ns = Netns::new("rtls-files");
    let dir = cbrnet_tests::temp_dir();
    let subnet_file = dir.path().join("run").join("subnet.json");
    let present = dir.path().join("present.pem");
    std::fs::write(&present, "x").unwrap();
    let missing = dir.path().join("missing.pem");
    let (p, m) = (present.to_str().unwrap(), missing.to_str().unwrap());
    let store: Vec<String> = ["--store", "etcd:https://192.168.50.2:2379"]
        .map(String::from)
        .into();
    let daemon = [cbrnet_tests::node_flags(&subnet_file), store.clone()].concat();
    for (extra, flag) in [
        (vec!["--etcd-ca-file", m], "--etcd-ca-file"),
        (
            vec!["--etcd-cert-file", m, "--etcd-key-file", p],
            "--etcd-cert-file",
        ),
        (
            vec!["--etcd-cert-file", p, "--etcd-key-file", m],
            "--etcd-key-file",
        ),
        (vec!["--etcd-cert-file", p], "--etcd-key-file"),
        (
            vec!["--etcd-username", "u", "--etcd-password-file", m],
            "--etcd-password-file",
        ),
        (vec!["--etcd-username", "u"], "--etcd-password-file"),
    ] {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        for base in [
            daemon.clone(),
            [vec!["leases".to_string()], store.clone()].concat(),
            [
                vec!["release".to_string(), "--node-name".into(), "n1".into()],
                store.clone(),
            ]
            .concat(),
        ] {
            let args = [base, extra.clone()].concat();
            let (code, err) = routed(&ns, &args);
            assert_eq!(code, 2, "{args:?}: {err}");
            assert!(
                err.contains(flag),
                "{args:?}: the error does not name {flag}: {err}"
            );
            assert!(!subnet_file.exists(), "{args:?} wrote something");
        }
    }
    // the same from the environment
    let mut cmd = Command::new(bin("cbrnet-routed"));
    cmd.args(&daemon)
        .env("CBRNET_ETCD_CA_FILE", &missing)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    ns.enter(&mut cmd);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--etcd-ca-file"));
}

#[test]
fn a_user_without_permission_on_the_prefix_is_said_in_healthz_and_by_leases() {
    let TlsLab { mut lab, pki } = tls_lab("rtls-perm");
    let i = lab.add_node();
    enable_auth(&lab, i, &pki, "s3cret");
    let pair = node_pair(&lab, i, &pki.client_ca, "node-0");
    let mut flags = tls_flags(Some(&pki.ca_file), &pair);
    flags.extend(user_flags(&lab, i, "nobody", "nobody"));
    spawn_debug(&mut lab, i, &flags);
    let reason = format!(
        "etcd user \"nobody\" has no permission on the prefix \"{PREFIX}\" (grant its role readwrite on it)"
    );
    store_down_for(&lab, i, &reason);
    leases_say(&lab, i, &flags, |_| {}, &reason);
    // without a user, etcd takes the certificate's common name for one (node-0: none such)
    leases_say(
        &lab,
        i,
        &tls_flags(Some(&pki.ca_file), &pair),
        |_| {},
        "client certificate's common name",
    );
}

#[test]
fn a_user_given_to_an_etcd_without_users_is_said_in_healthz_and_by_leases() {
    let TlsLab { mut lab, pki } = tls_lab("rtls-noauth");
    let i = lab.add_node();
    let pair = node_pair(&lab, i, &pki.client_ca, "node-0");
    let mut flags = tls_flags(Some(&pki.ca_file), &pair);
    flags.extend(user_flags(&lab, i, "cbrnet", "s3cret"));
    spawn_debug(&mut lab, i, &flags);
    let reason = format!(
        "etcd at {URL} has authentication off, but --etcd-username is given (turn it on in etcd, or give no --etcd-username and --etcd-password-file)"
    );
    store_down_for(&lab, i, &reason);
    leases_say(&lab, i, &flags, |_| {}, &reason);
}

/// Changes etcd user `cbrnet`'s password to `password`, as etcd's root, from inside node `i`.
fn change_password(lab: &Lab, i: usize, pki: &EtcdPki, password: &str) {
    let root = pki.client_options(Some("root"));
    lab.nodes[i].node.ns.block_on(0, || async {
        let mut c = etcd_client::Client::connect([URL], Some(root))
            .await
            .expect("connecting to etcd as root");
        c.user_change_password("cbrnet", password).await.unwrap();
    });
}

#[test]
fn a_password_changed_in_etcd_and_in_its_file_is_used_without_a_restart() {
    let TlsLab { mut lab, pki } = tls_lab("rtls-pw");
    let i = lab.add_node();
    enable_auth(&lab, i, &pki, "first");
    let pair = node_pair(&lab, i, &pki.client_ca, "node-0");
    let mut flags = tls_flags(Some(&pki.ca_file), &pair);
    flags.extend(user_flags(&lab, i, "cbrnet", "first"));
    lab.nodes[i].flags = flags;
    lab.nodes[i].env = debug_env();
    lab.start(i);
    assert!(lab.wait_for(Duration::from_secs(5), |l| l.http_get(i, "/healthz").0 == 200));
    let set_file = |lab: &Lab, password: &str| {
        user_flags(lab, i, "cbrnet", password);
    };
    let refused = "refused the user name or password";
    let swapped = "connected with the new ones";
    // A node joining later is etcd's user cbrnet by its certificate's common name (no password):
    // node-0 routing to it shows that node-0 reads the store with the password it has now.
    let join = |lab: &mut Lab| {
        let j = lab.add_node();
        let pair_j = node_pair(lab, j, &pki.client_ca, "cbrnet");
        lab.nodes[j].flags = tls_flags(Some(&pki.ca_file), &pair_j);
        lab.start(j);
        assert!(
            lab.wait_for(Duration::from_secs(15), |l| l.routes_complete(i)),
            "{}\n{}",
            lab.nodes[i].route_table(),
            lab.nodes[i].log()
        );
    };

    // The new password in the file first: etcd does not take it yet, which is said, and the
    // working connection is kept.
    set_file(&lab, "second");
    let kept = format!("password files cannot be used (lease store: etcd at {URL} {refused}");
    lab.expect_logged(i, Duration::from_secs(15), &kept);
    assert_eq!(lab.http_get(i, "/healthz").0, 200);
    // then in etcd, which voids the tokens of the old one: the daemon connects with the file's
    change_password(&lab, i, &pki, "second");
    assert!(
        lab.wait_for(Duration::from_secs(15), |l| l.nodes[i].said(swapped).0 == 1),
        "{}",
        lab.nodes[i].log()
    );
    assert!(lab.wait_for(Duration::from_secs(10), |l| l.http_get(i, "/healthz").0 == 200));
    join(&mut lab);

    // etcd first: the daemon's calls fail (said in /healthz) until the file has the new one
    change_password(&lab, i, &pki, "third");
    assert!(
        lab.wait_for(Duration::from_secs(15), |l| {
            let (code, body) = l.http_get(i, "/healthz");
            code == 503 && body.contains(refused)
        }),
        "{:?}\n{}",
        lab.http_get(i, "/healthz"),
        lab.nodes[i].log()
    );
    set_file(&lab, "third");
    assert!(
        lab.wait_for(Duration::from_secs(15), |l| l.nodes[i].said(swapped).0 == 2),
        "{}",
        lab.nodes[i].log()
    );
    assert!(lab.wait_for(Duration::from_secs(10), |l| l.http_get(i, "/healthz").0 == 200));
    join(&mut lab);
    assert_eq!(lab.metric(i, "cbrnet_store_up"), 1.0);
}
