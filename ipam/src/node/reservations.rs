//! The node's reservations on disk, under `dataDir/<network>/`.
//!
//! A reservation is a symlink named after the address whose target is `<containerID> <ifname>`.
//! `symlink(2)` creates name and content in one atomic step and fails if the name exists, so a
//! reservation is either wholly there or not at all (no torn files, no temp files to clean up), and
//! two processes can never take one address. The directory is fsynced before an ADD returns, so a
//! reservation survives a crash. `lock` is held (flock) for a whole ADD/DEL/GC so that lookups by
//! owner and the round-robin marker stay consistent across concurrent plugin processes.
//! `last_reserved_ip.<N>` (a symlink to an address) remembers where range set N left off.

use super::error::IpamError;
use nix::fcntl::{Flock, FlockArg};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::ErrorKind;
use std::net::IpAddr;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// Who holds an address: the (container ID, ifname) of one attachment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    pub container_id: String,
    pub ifname: String,
}

impl Owner {
    pub fn new(container_id: &str, ifname: &str) -> Owner {
        Owner {
            container_id: container_id.into(),
            ifname: ifname.into(),
        }
    }
    fn encode(&self) -> String {
        format!("{} {}", self.container_id, self.ifname)
    }
    fn decode(s: &str) -> Option<Owner> {
        let (c, i) = s.split_once(' ')?;
        Some(Owner::new(c, i))
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.container_id, self.ifname)
    }
}

/// An open, locked network directory. The lock is released on drop.
pub struct Store {
    dir: PathBuf,
    _lock: Flock<File>,
}

/// A network name becomes a directory name: keep it to one plain path component.
pub fn validate_network_name(name: &str) -> Result<(), IpamError> {
    let ok = cni_spec::env::is_plain_name(name);
    if ok {
        Ok(())
    } else {
        Err(IpamError::Config(format!(
            "network name {name:?} must be alphanumerics, '_', '.' or '-'"
        )))
    }
}

impl Store {
    /// Opens (creating if needed) and locks the directory of `network` under `data_dir`.
    pub fn open(data_dir: &Path, network: &str) -> Result<Store, IpamError> {
        validate_network_name(network)?;
        let dir = data_dir.join(network);
        fs::create_dir_all(&dir).map_err(|e| IpamError::io(format!("creating {}", dir.display()), e))?;
        let lock_path = dir.join("lock");
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| IpamError::io(format!("opening {}", lock_path.display()), e))?;
        let lock = Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, errno)| IpamError::io(format!("locking {}", lock_path.display()), errno.into()))?;
        Ok(Store { dir, _lock: lock })
    }

    /// Opens the store only if the network has one: DEL and GC must not create directories.
    pub fn open_existing(data_dir: &Path, network: &str) -> Result<Option<Store>, IpamError> {
        validate_network_name(network)?;
        if !data_dir.join(network).is_dir() {
            return Ok(None);
        }
        Store::open(data_dir, network).map(Some)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every reservation: address → owner.
    pub fn reservations(&self) -> Result<HashMap<IpAddr, Owner>, IpamError> {
        let io = |e| IpamError::io(format!("reading {}", self.dir.display()), e);
        let mut out = HashMap::new();
        for entry in fs::read_dir(&self.dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let Some(ip) = entry.file_name().to_str().and_then(|n| n.parse::<IpAddr>().ok()) else {
                continue;
            };
            match fs::read_link(entry.path()) {
                Ok(t) => {
                    if let Some(owner) = t.to_str().and_then(Owner::decode) {
                        out.insert(ip, owner);
                    }
                }
                // Released under our feet cannot happen while we hold the lock, but a stray
                // regular file named like an address is not ours to judge.
                Err(e) if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::InvalidInput => {}
                Err(e) => return Err(io(e)),
            }
        }
        Ok(out)
    }

    /// Reserves `ip` for `owner`. `Ok(false)` if the address is taken.
    pub fn reserve(&self, ip: IpAddr, owner: &Owner) -> Result<bool, IpamError> {
        match symlink(owner.encode(), self.dir.join(ip.to_string())) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(IpamError::io(format!("reserving {ip}"), e)),
        }
    }

    /// Makes every reservation so far durable.
    pub fn sync(&self) -> Result<(), IpamError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| IpamError::io(format!("syncing {}", self.dir.display()), e))
    }

    pub fn release(&self, ip: IpAddr) -> Result<(), IpamError> {
        match fs::remove_file(self.dir.join(ip.to_string())) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(IpamError::io(format!("releasing {ip}"), e)),
        }
    }

    pub fn last_reserved(&self, set: usize) -> Option<IpAddr> {
        fs::read_link(self.dir.join(format!("last_reserved_ip.{set}")))
            .ok()?
            .to_str()?
            .parse()
            .ok()
    }

    /// Moves the round-robin marker. A hint only: losing it in a crash costs nothing but order.
    pub fn set_last_reserved(&self, set: usize, ip: IpAddr) -> Result<(), IpamError> {
        let tmp = self.dir.join(format!(".last_reserved_ip.{set}.tmp"));
        let _ = fs::remove_file(&tmp);
        symlink(ip.to_string(), &tmp)
            .and_then(|_| fs::rename(&tmp, self.dir.join(format!("last_reserved_ip.{set}"))))
            .map_err(|e| IpamError::io("recording last reserved address", e))
    }
}
