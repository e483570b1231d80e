//! Network namespaces: opening the pod's (and judging that it is one, and not ours), and doing a
//! step inside it.

use crate::error::{PluginError, Result};
use nix::sched::{setns, CloneFlags};
use nix::sys::statfs::{fstatfs, NSFS_MAGIC};
use std::fs::File;
use std::io::ErrorKind;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;

/// An open network namespace.
pub struct NetNs {
    pub path: String,
    file: File,
}

/// The kind of namespace `file` is (a `CLONE_NEW*` flag), by the nsfs ioctl.
fn ns_type(file: &File) -> std::io::Result<i32> {
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the descriptor, which `file` keeps
    // open for the duration of the call.
    let t = unsafe { nix::libc::ioctl(file.as_raw_fd(), nix::libc::NS_GET_NSTYPE) };
    if t < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(t)
    }
}

impl NetNs {
    /// Opens the namespace at `path` (a bind mount under /run/netns, or /proc/PID/ns/net) and
    /// checks that it is a network namespace.
    pub fn open(path: &str) -> Result<NetNs> {
        let file = File::open(path).map_err(|e| match e.kind() {
            ErrorKind::NotFound => PluginError::NetnsMissing(path.into()),
            _ => PluginError::Io(format!("opening network namespace {path}"), e),
        })?;
        let fs = fstatfs(&file).map_err(|e| PluginError::Io(format!("statfs {path}"), e.into()))?;
        if fs.filesystem_type() != NSFS_MAGIC {
            return Err(PluginError::NotNetns(path.into(), "not a namespace file".into()));
        }
        match ns_type(&file) {
            Ok(t) if t == CloneFlags::CLONE_NEWNET.bits() => {}
            Ok(_) => {
                return Err(PluginError::NotNetns(
                    path.into(),
                    "a namespace of another kind".into(),
                ))
            }
            Err(e) => return Err(PluginError::Io(format!("asking {path} its namespace type"), e)),
        }
        Ok(NetNs {
            path: path.into(),
            file,
        })
    }

    /// Opens the pod's namespace: a network namespace, and not the one the plugin runs in
    /// (configuring that would make the node itself a pod).
    pub fn open_pod(path: &str, home: &NetNs) -> Result<NetNs> {
        let ns = NetNs::open(path)?;
        if ns.same_as(home)? {
            return Err(PluginError::NotNetns(
                path.into(),
                "the plugin's own network namespace, not a pod's".into(),
            ));
        }
        Ok(ns)
    }

    /// The calling thread's current namespace.
    pub fn current() -> Result<NetNs> {
        NetNs::open("/proc/thread-self/ns/net")
    }

    /// Do both name the same namespace (same device and inode)?
    pub fn same_as(&self, other: &NetNs) -> Result<bool> {
        let id = |n: &NetNs| {
            n.file
                .metadata()
                .map(|m| (m.dev(), m.ino()))
                .map_err(PluginError::io(format!("stat {}", n.path)))
        };
        Ok(id(self)? == id(other)?)
    }

    /// Runs `f` with the calling thread inside this namespace, then returns to `home`. Sockets
    /// opened by `f` stay bound to this namespace: that is how we get a netlink socket in the pod
    /// without running anything else there.
    pub fn run_in<T>(&self, home: &NetNs, f: impl FnOnce() -> T) -> Result<T> {
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| PluginError::Io(format!("entering {}", self.path), e.into()))?;
        let out = f();
        // Invariant: `home` is the namespace this thread came from, held open; setns back to it
        // cannot fail, and if it somehow did, nothing the rest of the run does would be sane.
        setns(home.file.as_fd(), CloneFlags::CLONE_NEWNET).expect("returning to the host network namespace");
        Ok(out)
    }

    pub fn fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }
}
