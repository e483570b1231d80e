//! `cbrnet-routed` against an etcd that speaks TLS only and asks for client certificates, in a lab
//! of its own: a client certificate rotated while the daemon runs, a misconfiguration said in
//! `/healthz`, in the log once, and by `leases` and `release`; files that cannot be read refused
//! at start.

use cbrnet_tests::etcd::{Etcd, ServerTls};
use cbrnet_tests::lab::{Lab, StoreKind};
use cbrnet_tests::pki::{write_atomically, Ca, PairFiles};
use cbrnet_tests::{bin, routed, Netns};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A lab whose store is a TLS-only etcd at 192.168.50.2 asking for client certificates signed by
/// `client_ca`.
struct TlsLab {
    lab: Lab,
    pki: tempfile::TempDir,
    ca_file: PathBuf,
    client_ca: Ca,
}

fn tls_lab(tag: &str) -> TlsLab {
    let mut lab = Lab::new(tag, StoreKind::File);
    lab.underlay
        .ok(&["ip", "addr", "add", "192.168.50.2/24", "dev", "ul0"]);
    let pki = cbrnet_tests::temp_dir();
    let ca = Ca::new("etcd-ca");
    let client_ca = Ca::new("client-ca-1");
    let server = ca.server(&["192.168.50.2"]).write(pki.path(), "server");
    let etcd = Etcd::start_tls_in(
        &lab.underlay,
        "192.168.50.2",
        ServerTls {
            cert: server.cert,
            key: server.key,
            client_ca: Some(client_ca.write(&pki.path().join("client-ca-1.crt"))),
        },
    );
    lab.store = etcd.store();
    lab.etcd = Some(etcd);
    TlsLab {
        ca_file: ca.write(&pki.path().join("ca.crt")),
        lab,
        pki,
        client_ca,
    }
}

fn tls_flags(ca: &Path, pair: &PairFiles) -> Vec<String> {
    [
        "--etcd-ca-file",
        ca.to_str().unwrap(),
        "--etcd-cert-file",
        pair.cert.to_str().unwrap(),
        "--etcd-key-file",
        pair.key.to_str().unwrap(),
    ]
    .map(String::from)
    .into()
}

#[test]
fn a_client_certificate_rotated_while_the_daemon_runs_is_used_after_etcd_restarts() {
    let TlsLab {
        mut lab,
        pki,
        ca_file,
        client_ca,
    } = tls_lab("rtls-rot");
    let i = lab.add_node();
    // the node's pair lives where a rotation (cert-manager, a script) replaces it
    let dir = lab.nodes[i].node.dir.path().to_path_buf();
    let pair = client_ca.client("node-0").write(&dir, "client");
    lab.nodes[i].flags = tls_flags(&ca_file, &pair);
    lab.nodes[i].env = vec![("CBRNET_LOG".into(), "debug".into())];
    lab.start(i);
    assert!(lab.wait_for(Duration::from_secs(5), |l| l.http_get(i, "/healthz").0 == 200));

    // a broken new pair (a key of another certificate) is logged and the connection kept
    let other = client_ca.client("x");
    write_atomically(&pair.key, other.key.as_bytes(), 0o600);
    assert!(
        lab.wait_for(Duration::from_secs(15), |l| l.nodes[i]
            .log()
            .contains("does not match the certificate")),
        "{}",
        lab.nodes[i].log()
    );
    assert_eq!(lab.http_get(i, "/healthz").0, 200);

    // the new pair, of a CA etcd does not trust yet: the working connection stays
    let ca2 = Ca::new("client-ca-2");
    let new = ca2.client("node-0");
    write_atomically(&pair.cert, new.cert.as_bytes(), 0o644);
    write_atomically(&pair.key, new.key.as_bytes(), 0o600);
    assert!(
        lab.wait_for(Duration::from_secs(15), |l| l.nodes[i]
            .log()
            .contains("refused the client certificate")),
        "{}",
        lab.nodes[i].log()
    );
    assert_eq!(lab.http_get(i, "/healthz").0, 200);

    // etcd restarted trusting only the new CA: the daemon reconnects with the new pair
    let etcd = lab.etcd.as_mut().unwrap();
    etcd.set_client_ca(Some(ca2.write(&pki.path().join("client-ca-2.crt"))));
    etcd.pause();
    etcd.resume();
    assert!(
        lab.wait_for(Duration::from_secs(30), |l| l.nodes[i]
            .log()
            .contains("connected with the new ones")),
        "{}",
        lab.nodes[i].log()
    );
    assert!(lab.wait_for(Duration::from_secs(10), |l| l.http_get(i, "/healthz").0 == 200));
    // and it follows the store: a new node with a pair of the new CA is routed to
    let j = lab.add_node();
    let dir = lab.nodes[j].node.dir.path().to_path_buf();
    let pair_j = ca2.client("node-1").write(&dir, "client");
    lab.nodes[j].flags = tls_flags(&ca_file, &pair_j);
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
    let TlsLab {
        mut lab,
        pki,
        ca_file,
        client_ca,
    } = tls_lab("rtls-ca");
    let i = lab.add_node();
    let dir = lab.nodes[i].node.dir.path().to_path_buf();
    let pair = client_ca.client("node-0").write(&dir, "client");
    // a key others may read: warned about
    std::fs::set_permissions(&pair.key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let wrong = dir.join("ca.crt");
    Ca::new("not-etcds").write(&wrong);
    lab.nodes[i].flags = tls_flags(&wrong, &pair);
    lab.spawn(i);
    let reason = "is not signed by the CA of --etcd-ca-file";
    assert!(lab.wait_for(Duration::from_secs(10), |l| l.nodes[i].log().contains(reason)));
    assert!(
        lab.wait_for(Duration::from_secs(10), |l| {
            let (code, body) = l.http_get(i, "/healthz");
            code == 503 && body.contains(reason) && body.contains("wrong CA")
        }),
        "{:?}\n{}",
        lab.http_get(i, "/healthz"),
        lab.nodes[i].log()
    );
    assert_eq!(lab.metric(i, "cbrnet_store_up"), 0.0);
    // several retries later (200 ms doubling to 5 s), the reason was logged once
    std::thread::sleep(Duration::from_secs(4));
    let log = lab.nodes[i].log();
    assert_eq!(log.matches(reason).count(), 1, "{log}");
    assert!(
        log.contains("--etcd-key-file") && log.contains("readable by group or others"),
        "{log}"
    );
    assert!(lab.nodes[i].subnet().is_none());

    // leases and release say the same, and fail
    let mut flags = tls_flags(&wrong, &pair);
    flags.extend(["--store".to_string(), lab.store.clone()]);
    for cmd in [&["leases"][..], &["release", "--node-name", "node-0"][..]] {
        let args: Vec<String> = cmd.iter().map(|s| s.to_string()).chain(flags.clone()).collect();
        let (code, err) = routed(&lab.nodes[i].node.ns, &args);
        assert_ne!(code, 0, "{cmd:?}: {err}");
        assert!(err.contains(reason), "{cmd:?}: {err}");
    }

    // the right CA put in the file's place: the daemon gets its lease without a restart
    std::fs::copy(&ca_file, &wrong).unwrap();
    assert!(
        lab.wait_for(Duration::from_secs(15), |l| l.nodes[i].subnet().is_some()),
        "{}",
        lab.nodes[i].log()
    );
    assert!(lab.wait_for(Duration::from_secs(5), |l| l.http_get(i, "/healthz").0 == 200));
    drop(pki);
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
    let daemon: Vec<String> = [
        "--node-name",
        "n1",
        "--node-ip",
        "192.168.50.10",
        "--cluster-cidr",
        "10.244.0.0/16",
        "--subnet-file",
        subnet_file.to_str().unwrap(),
        "--store",
        "etcd:https://192.168.50.2:2379",
    ]
    .map(String::from)
    .into();
    let store: Vec<String> = ["--store", "etcd:https://192.168.50.2:2379"]
        .map(String::from)
        .into();
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
    let TlsLab {
        mut lab,
        pki,
        ca_file,
        client_ca,
    } = tls_lab("rtls-perm");
    let admin = client_ca.client("root").write(pki.path(), "admin");
    let url = lab.etcd.as_ref().unwrap().url();
    let i = lab.add_node();
    let opts = etcd_client::ConnectOptions::new().with_tls(
        etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(
                std::fs::read(&ca_file).unwrap(),
            ))
            .identity(etcd_client::Identity::from_pem(
                std::fs::read(&admin.cert).unwrap(),
                std::fs::read(&admin.key).unwrap(),
            )),
    );
    lab.nodes[i].node.ns.block_on(0, || {
        cbrnet_tests::etcd::enable_auth(&url, Some(opts), "cbrnet", "s3cret", "/cbrnet/subnets/")
    });
    let dir = lab.nodes[i].node.dir.path().to_path_buf();
    let pair = client_ca.client("node-0").write(&dir, "client");
    let pw = dir.join("password");
    write_atomically(&pw, b"nobody\n", 0o600);
    let mut flags = tls_flags(&ca_file, &pair);
    flags.extend(
        [
            "--etcd-username",
            "nobody",
            "--etcd-password-file",
            pw.to_str().unwrap(),
        ]
        .map(String::from),
    );
    lab.nodes[i].flags = flags.clone();
    lab.spawn(i);
    let reason = "etcd user \"nobody\" has no permission on the prefix \"/cbrnet/subnets/\"";
    assert!(
        lab.wait_for(Duration::from_secs(15), |l| l.nodes[i].log().contains(reason)),
        "{}",
        lab.nodes[i].log()
    );
    let (code, body) = lab.http_get(i, "/healthz");
    assert_eq!(code, 503);
    assert!(body.contains(reason), "{body}");
    assert_eq!(lab.metric(i, "cbrnet_store_up"), 0.0);
    flags.extend(["--store".to_string(), lab.store.clone()]);
    let args: Vec<String> = ["leases".to_string()].into_iter().chain(flags).collect();
    let (code, err) = routed(&lab.nodes[i].node.ns, &args);
    assert_ne!(code, 0);
    assert!(err.contains(reason), "{err}");
    // without a user, etcd takes the certificate's common name for one (node-0: none such)
    let mut args: Vec<String> = vec!["leases".into(), "--store".into(), lab.store.clone()];
    args.extend(tls_flags(&ca_file, &pair));
    let (code, err) = routed(&lab.nodes[i].node.ns, &args);
    assert_ne!(code, 0);
    assert!(err.contains("client certificate's common name"), "{err}");
}
