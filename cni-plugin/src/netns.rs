//! Network namespaces: opening the pod's, and doing a step inside it.

use crate::error::{PluginError, Result};
use nix::sched::{setns, CloneFlags};
use nix::sys::statfs::{fstatfs, NSFS_MAGIC, PROC_SUPER_MAGIC};
use std::fs::File;
use std::io::ErrorKind;
use std::os::fd::AsFd;

/// An open network namespace.
pub struct NetNs {
    pub path: String,
    file: File,
}

impl NetNs {
    /// Opens the namespace at `path` (a bind mount under /run/netns, or /proc/PID/ns/net) and
    /// checks that it is one.
    pub fn open(path: &str) -> Result<NetNs> {
        let file = File::open(path).map_err(|e| match e.kind() {
            ErrorKind::NotFound => PluginError::NetnsMissing(path.into()),
            _ => PluginError::Io(format!("opening network namespace {path}"), e),
        })?;
        let fs = fstatfs(&file).map_err(|e| PluginError::Io(format!("statfs {path}"), e.into()))?;
        let t = fs.filesystem_type();
        if t != NSFS_MAGIC && t != PROC_SUPER_MAGIC {
            return Err(PluginError::NotNetns(path.into()));
        }
        Ok(NetNs {
            path: path.into(),
            file,
        })
    }

    /// The calling thread's current namespace.
    pub fn current() -> Result<NetNs> {
        NetNs::open("/proc/thread-self/ns/net")
    }

    /// Runs `f` with the calling thread inside this namespace, then returns to `home`. Sockets
    /// opened by `f` stay bound to this namespace: that is how we get a netlink socket in the pod
    /// without running anything else there.
    pub fn run_in<T>(&self, home: &NetNs, f: impl FnOnce() -> T) -> Result<T> {
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| PluginError::Io(format!("entering {}", self.path), e.into()))?;
        let out = f();
        // Failing to get back would leave the rest of the run in the pod: nothing sane follows.
        setns(home.file.as_fd(), CloneFlags::CLONE_NEWNET).expect("returning to the host network namespace");
        Ok(out)
    }

    pub fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.file.as_raw_fd()
    }
}
