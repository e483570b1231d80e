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
    let name = subnet_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    subnet_file.with_file_name(format!(".{name}.lock"))
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
}
