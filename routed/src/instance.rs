//! Who this daemon is: its identity in the store (the lease's `holder`), and the lock that keeps
//! it the only daemon of its node.
//!
//! The identity is the machine's ID and the network namespace the daemon runs in: the same for a
//! restart of the daemon, or a reboot, of the same node; another for a daemon on another machine
//! (or, in a lab of namespaces, another node) started under the same node name.

use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// This daemon instance's identity, e.g. `4c4c45...:netns:4026531840`.
pub fn holder() -> String {
    let machine = ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .find_map(|p| {
            let id = std::fs::read_to_string(p).ok()?;
            let id = id.trim();
            (!id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_hexdigit()))
                .then(|| id.to_string())
        })
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let netns = std::fs::metadata("/proc/thread-self/ns/net").map_or(0, |m| m.ino());
    format!("{machine}:netns:{netns}")
}

/// The lock a daemon holds for as long as it runs: next to the subnet file it publishes.
pub fn lock_path(subnet_file: &Path) -> PathBuf {
    beside(subnet_file, "lock")
}

/// `.<subnet file's name>.<what>` in the subnet file's directory.
fn beside(subnet_file: &Path, what: &str) -> PathBuf {
    let name = subnet_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    subnet_file.with_file_name(format!(".{name}.{what}"))
}

/// Where a running daemon says what it runs with (its effective flags: [`Settings`]), next to its
/// lock: `doctor` reads it to compare, and trusts it only while the lock is held.
pub fn settings_path(subnet_file: &Path) -> PathBuf {
    beside(subnet_file, "daemon.json")
}

/// What a daemon runs with, as `doctor` compares it with its own flags. Credentials are never in
/// it: the etcd files are named by path only.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    pub pid: u32,
    pub version: String,
    pub node_name: String,
    #[serde(rename = "nodeIP")]
    pub node_ip: String,
    #[serde(rename = "clusterCIDR")]
    pub cluster_cidr: String,
    pub store: String,
    pub etcd_prefix: String,
    pub subnet_len: u8,
    /// Absent from the settings of a daemon that predates it, which ran with the default.
    #[serde(default = "default_subnet_len_v6")]
    pub subnet_len_v6: u8,
    pub subnet_file: PathBuf,
    pub bridge: String,
    pub mtu: Option<u32>,
    pub ip_masq: bool,
    pub metrics_addr: String,
    pub backend: String,
    #[serde(rename = "vxlanVNI")]
    pub vxlan_vni: u32,
    pub vxlan_port: u16,
    pub cni_conf_dir: PathBuf,
}

fn default_subnet_len_v6() -> u8 {
    64
}

impl Settings {
    /// The flags that decide what the node's network is, by flag name, with their values:
    /// `doctor` names each that differs.
    pub fn compared(&self) -> Vec<(&'static str, String)> {
        vec![
            ("--node-name", self.node_name.clone()),
            ("--node-ip", self.node_ip.clone()),
            ("--cluster-cidr", self.cluster_cidr.clone()),
            ("--store", self.store.clone()),
            ("--etcd-prefix", self.etcd_prefix.clone()),
            ("--subnet-len", self.subnet_len.to_string()),
            ("--subnet-len-v6", self.subnet_len_v6.to_string()),
            ("--subnet-file", self.subnet_file.display().to_string()),
            ("--bridge", self.bridge.clone()),
            ("--mtu", self.mtu.map_or("none".into(), |m| m.to_string())),
            ("--ip-masq", self.ip_masq.to_string()),
            ("--metrics-addr", self.metrics_addr.clone()),
            ("--backend", self.backend.clone()),
            ("--vxlan-vni", self.vxlan_vni.to_string()),
            ("--vxlan-port", self.vxlan_port.to_string()),
            ("--cni-conf-dir", self.cni_conf_dir.display().to_string()),
        ]
    }

    /// Writes them at `path` atomically (temp file, rename), readable by all.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        cbrnet_ipam::owner::replace_file(path, &bytes)
    }

    /// Reads them back; `None` if there is no such file or it is no settings file (a daemon of
    /// a version that wrote none, or garbage), up to 64 KiB.
    pub fn read(path: &Path) -> Option<Settings> {
        use std::io::Read;
        let f = File::options()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(path)
            .ok()?;
        if !f.metadata().ok()?.is_file() {
            return None;
        }
        let mut bytes = Vec::new();
        f.take(64 * 1024).read_to_end(&mut bytes).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// Is the lock at `path` held by a daemon now? Looked at without creating anything, and without
/// keeping it: `Ok(None)` if there is no lock file (no daemon ever ran with this subnet file).
pub fn is_locked(path: &Path) -> std::io::Result<Option<bool>> {
    let f = match File::options()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC | nix::libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // A shared lock conflicts with the daemon's exclusive one only; ours goes with the file.
    match Flock::lock(f, FlockArg::LockSharedNonblock) {
        Ok(_) => Ok(Some(false)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(Some(true)),
        Err((_, e)) => Err(e.into()),
    }
}

/// The process that holds the flock of `path`, from `/proc/locks` (by the file's device and
/// inode); `None` if none is found there.
pub fn lock_holder(path: &Path) -> Option<u32> {
    let meta = std::fs::metadata(path).ok()?;
    let (major, minor) = (
        nix::sys::stat::major(meta.dev()),
        nix::sys::stat::minor(meta.dev()),
    );
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    holder_in(&locks, major, minor, meta.ino())
}

/// The pid of the exclusive FLOCK in a `/proc/locks` text on (major, minor, inode). Lines read:
/// `1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`.
fn holder_in(locks: &str, major: u64, minor: u64, ino: u64) -> Option<u32> {
    locks.lines().find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        // Blocked waiters are listed with "->" and one more word.
        if w.len() < 6 || w.get(1) != Some(&"FLOCK") || w.get(3) != Some(&"WRITE") {
            return None;
        }
        let mut id = w[5].split(':');
        let maj = u64::from_str_radix(id.next()?, 16).ok()?;
        let min = u64::from_str_radix(id.next()?, 16).ok()?;
        let i: u64 = id.next()?.parse().ok()?;
        (maj == major && min == minor && i == ino).then(|| w[4].parse().ok())?
    })
}

/// Held while this daemon runs.
pub struct InstanceLock {
    _lock: Flock<File>,
}

/// Takes the node's daemon lock, creating its directory if needed; `Ok(None)` if another daemon
/// holds it.
pub fn try_lock(path: &Path) -> std::io::Result<Option<InstanceLock>> {
    if let Some(dir) = path.parent() {
        cbrnet_ipam::owner::create_dir_all(dir)?;
    }
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(cbrnet_ipam::owner::LOCK_MODE)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)?;
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(Some(InstanceLock { _lock: l })),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_daemon_per_lock_and_a_stable_identity() {
        let d = tempfile::tempdir().unwrap();
        let p = lock_path(&d.path().join("run").join("subnet.json"));
        assert!(p.ends_with("run/.subnet.json.lock"));
        let first = try_lock(&p).unwrap();
        assert!(first.is_some());
        assert!(try_lock(&p).unwrap().is_none());
        drop(first);
        assert!(try_lock(&p).unwrap().is_some());
        assert_eq!(holder(), holder());
        assert!(holder().contains(":netns:"));
    }

    #[test]
    fn a_held_lock_is_seen_without_being_taken_and_its_holder_found() {
        let d = tempfile::tempdir().unwrap();
        let p = lock_path(&d.path().join("subnet.json"));
        assert_eq!(is_locked(&p).unwrap(), None, "no lock file: nothing created");
        assert!(!p.exists());
        let held = try_lock(&p).unwrap();
        assert_eq!(is_locked(&p).unwrap(), Some(true));
        assert_eq!(lock_holder(&p), Some(std::process::id()));
        drop(held);
        assert_eq!(is_locked(&p).unwrap(), Some(false));
        // the probe itself leaves the lock free
        assert!(try_lock(&p).unwrap().is_some());
        assert_eq!(lock_holder(&p), None);
    }

    #[test]
    fn proc_locks_lines_are_read_by_device_and_inode() {
        let text = "1: FLOCK  ADVISORY  WRITE 4242 00:1a:977 0 EOF\n\
                    2: POSIX  ADVISORY  WRITE 17 00:1a:978 0 EOF\n\
                    3: FLOCK  ADVISORY  READ 99 00:1a:979 0 EOF\n\
                    garbage\n";
        assert_eq!(holder_in(text, 0, 0x1a, 977), Some(4242));
        assert_eq!(holder_in(text, 0, 0x1a, 978), None);
        assert_eq!(holder_in(text, 0, 0x1a, 979), None);
        assert_eq!(holder_in(text, 8, 1, 977), None);
    }

    #[test]
    fn settings_go_and_come_back_and_garbage_is_none() {
        let d = tempfile::tempdir().unwrap();
        let p = settings_path(&d.path().join("subnet.json"));
        assert!(p.ends_with(".subnet.json.daemon.json"));
        let s = Settings {
            pid: 7,
            version: "0.1.0".into(),
            node_name: "n1".into(),
            node_ip: "192.168.1.2,fd00::2".into(),
            cluster_cidr: "10.244.0.0/16,fd00:10:244::/56".into(),
            store: "file:/x".into(),
            etcd_prefix: "/cbrnet/subnets/".into(),
            subnet_len: 24,
            subnet_len_v6: 64,
            subnet_file: d.path().join("subnet.json"),
            bridge: "cbr0".into(),
            mtu: None,
            ip_masq: false,
            metrics_addr: "127.0.0.1:9473".into(),
            backend: "auto".into(),
            vxlan_vni: 1,
            vxlan_port: 8472,
            cni_conf_dir: "/etc/cni/net.d".into(),
        };
        s.write(&p).unwrap();
        assert_eq!(Settings::read(&p), Some(s.clone()));
        // A daemon that predates --subnet-len-v6 ran with its default.
        let mut old: serde_json::Value = serde_json::to_value(&s).unwrap();
        old.as_object_mut().unwrap().remove("subnetLenV6");
        std::fs::write(&p, old.to_string()).unwrap();
        assert_eq!(Settings::read(&p).map(|r| r.subnet_len_v6), Some(64));
        std::fs::write(&p, "{not json").unwrap();
        assert_eq!(Settings::read(&p), None);
        assert_eq!(Settings::read(&d.path().join("missing")), None);
    }
}
