//! A real etcd (Debian's etcd-server) with a temporary data directory, inside a network namespace
//! of the test's; stopped and removed on drop. Plain, or TLS with a server certificate and, if
//! asked, client certificates signed by a given CA; with etcd users if asked.

use crate::{enter_netns, in_netns, Netns};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const CLIENT_PORT: u16 = 2379;
const PEER_PORT: u16 = 2380;

pub struct Etcd {
    host: String,
    ns_path: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
    tls: Option<ServerTls>,
    /// A member of a cluster: its name and `--initial-cluster` (None: a cluster of its own).
    member: Option<(String, String)>,
}

/// etcd's TLS: its certificate and key, and the CA its clients' certificates must be signed by
/// (`None`: no client certificate asked for).
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

impl Etcd {
    /// etcd inside `ns`, listening on `host` (an address of that namespace: its 127.0.0.1, or an
    /// address on a lab's underlay). Each namespace has its own ports, so the fixed ones are free.
    pub fn start_in(ns: &Netns, host: &str) -> Etcd {
        Etcd::start(ns, host, None)
    }

    /// etcd speaking TLS only, as [`Etcd::start_in`].
    pub fn start_tls_in(ns: &Netns, host: &str, tls: ServerTls) -> Etcd {
        Etcd::start(ns, host, Some(tls))
    }

    fn start(ns: &Netns, host: &str, tls: Option<ServerTls>) -> Etcd {
        let mut e = Etcd {
            host: host.into(),
            ns_path: ns.path(),
            dir: crate::temp_dir(),
            child: None,
            tls,
            member: None,
        };
        e.resume();
        e
    }

    /// A cluster of plain members inside `ns`, one on each of `hosts` (addresses of that
    /// namespace), named `m0`, `m1`..; returns once each listens.
    pub fn cluster_in(ns: &Netns, hosts: &[&str]) -> Vec<Etcd> {
        let initial: Vec<String> = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| format!("m{i}=http://{h}:{PEER_PORT}"))
            .collect();
        let initial = initial.join(",");
        let mut members: Vec<Etcd> = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| Etcd {
                host: (*h).into(),
                ns_path: ns.path(),
                dir: crate::temp_dir(),
                child: None,
                tls: None,
                member: Some((format!("m{i}"), initial.clone())),
            })
            .collect();
        // Each listens before the cluster has a leader, so starting them in turn does not wait
        // for a quorum.
        for m in &mut members {
            m.resume();
        }
        members
    }

    /// The CA that client certificates must be signed by from the next [`Etcd::resume`] on.
    pub fn set_client_ca(&mut self, ca: Option<PathBuf>) {
        if let Some(t) = self.tls.as_mut() {
            t.client_ca = ca;
        }
    }

    /// The server's process, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}:{CLIENT_PORT}", self.host)
    }

    /// The store spec for cbrnet-routed.
    pub fn store(&self) -> String {
        format!("etcd:{}", self.url())
    }

    /// Stops the server (its data stays), as an outage.
    pub fn pause(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// (Re)starts the server on the same ports and data, and waits until it listens.
    pub fn resume(&mut self) {
        let client = self.url();
        let peer = format!("http://{}:{PEER_PORT}", self.host);
        let mut cmd = Command::new("etcd");
        let (name, initial) = self
            .member
            .clone()
            .unwrap_or_else(|| ("default".into(), format!("default={peer}")));
        cmd.args(["--name", &name, "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &initial])
            // Each authentication costs a bcrypt of the password: the cheapest there is, in tests.
            .args(["--bcrypt-cost", "4"])
            .stdout(Stdio::null());
        if let Some(t) = &self.tls {
            cmd.arg("--cert-file").arg(&t.cert).arg("--key-file").arg(&t.key);
            if let Some(ca) = &t.client_ca {
                cmd.arg("--client-cert-auth").arg("--trusted-ca-file").arg(ca);
            }
        }
        // Its log, kept for the message of a start that fails.
        let log_path = self.dir.path().join("etcd.log");
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
        {
            Ok(f) => cmd.stderr(f),
            Err(_) => cmd.stderr(Stdio::null()),
        };
        enter_netns(&mut cmd, &self.ns_path);
        let child = cmd.spawn().expect("starting etcd (apt-get install etcd-server)");
        crate::register_daemon(child.id());
        self.child = Some(child);
        // A single-member cluster elects itself before it opens the client port.
        let t = Instant::now();
        while !self.listening() {
            if t.elapsed() > Duration::from_secs(20) {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                let alive = self.child.as_mut().map(|c| c.try_wait().ok().flatten().is_none());
                panic!(
                    "etcd did not come up in 20 s (running: {alive:?}); its log ends:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn listening(&self) -> bool {
        let addr = format!("{}:{CLIENT_PORT}", self.host);
        in_netns(&self.ns_path, || std::net::TcpStream::connect(addr).is_ok())
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.pause();
    }
}

/// Turns etcd's authentication on with `root` (password `root`) and `user` (password `password`),
/// whose role may read and write the keys under `prefix` only. `opts`: how to reach etcd (its
/// TLS), from inside its namespace.
pub async fn enable_auth(
    url: &str,
    opts: Option<etcd_client::ConnectOptions>,
    user: &str,
    password: &str,
    prefix: &str,
) {
    use etcd_client::Permission;
    let mut c = etcd_client::Client::connect([url], opts)
        .await
        .expect("connecting to etcd");
    c.user_add("root", "root", None).await.unwrap();
    c.user_grant_role("root", "root").await.unwrap();
    c.role_add("cbrnet").await.unwrap();
    c.role_grant_permission("cbrnet", Permission::read_write(prefix).with_prefix())
        .await
        .unwrap();
    c.user_add(user, password, None).await.unwrap();
    c.user_grant_role(user, "cbrnet").await.unwrap();
    // a user with no role at all
    c.user_add("nobody", "nobody", None).await.unwrap();
    c.auth_enable().await.unwrap();
}
