//! A real etcd (Debian's etcd-server) with a temporary data directory, on 127.0.0.1 or on an
//! address inside a lab namespace; stopped and removed on drop.

use crate::Netns;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Etcd {
    host: String,
    ns_path: Option<String>,
    pub client_port: u16,
    peer_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Etcd {
    /// etcd on 127.0.0.1 of this machine, on free ports.
    pub fn start() -> Etcd {
        Etcd::start_in(None, "127.0.0.1")
    }

    /// etcd inside `ns` (if given) listening on `host` (an address of that namespace).
    pub fn start_in(ns: Option<&Netns>, host: &str) -> Etcd {
        let (client_port, peer_port) = if ns.is_some() {
            (2379, 2380)
        } else {
            (free_port(), free_port())
        };
        let mut e = Etcd {
            host: host.into(),
            ns_path: ns.map(Netns::path),
            client_port,
            peer_port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        e.resume();
        e
    }

    pub fn url(&self) -> String {
        format!("http://{}:{}", self.host, self.client_port)
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
        let peer = format!("http://{}:{}", self.host, self.peer_port);
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", "default", "--data-dir"])
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
            .args(["--initial-cluster", &format!("default={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(p) = &self.ns_path {
            enter(&mut cmd, p);
        }
        let child = cmd.spawn().expect("starting etcd (apt-get install etcd-server)");
        crate::register_daemon(child.id());
        self.child = Some(child);
        // A single-member cluster elects itself before it opens the client port.
        let t = Instant::now();
        while !self.listening() {
            assert!(t.elapsed() < Duration::from_secs(20), "etcd did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn listening(&self) -> bool {
        let addr = format!("{}:{}", self.host, self.client_port);
        let ns = self.ns_path.clone();
        // setns is per thread: look from a thread of our own.
        std::thread::spawn(move || {
            if let Some(p) = ns {
                use std::os::fd::AsFd;
                let f = std::fs::File::open(p).unwrap();
                nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            }
            std::net::TcpStream::connect(addr).is_ok()
        })
        .join()
        .unwrap()
    }
}

fn enter(cmd: &mut Command, path: &str) {
    use std::os::unix::process::CommandExt;
    let f = std::fs::File::open(path).expect("opening netns");
    unsafe {
        cmd.pre_exec(move || {
            use std::os::fd::AsFd;
            nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
        });
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.pause();
    }
}
