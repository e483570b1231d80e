//! `file:DIR`: leases as files in one directory shared by the nodes of a machine.
//!
//! `DIR/<subnet key>` holds `{"lease": {...}, "version": N}`. Create is write-to-temp, fsync, then
//! `link(2)` to the key, which is atomic and fails if the key exists: no torn file is ever visible
//! and two creators cannot both win. Update and delete compare the version under an exclusive
//! `flock` on `DIR/.lock` and replace by `rename(2)`. Changes are noticed by polling the
//! directory's mtime.

use super::LeaseStore;
use crate::cluster::error::ClusterError;
use crate::cluster::record::{subnet_key, Lease, Versioned};
use ipnetwork::IpNetwork;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// How often the watcher looks at the directory.
pub const POLL: Duration = Duration::from_millis(100);

#[derive(Serialize, Deserialize)]
struct Record {
    lease: Lease,
    version: u64,
}

pub struct FileStore {
    dir: PathBuf,
}

static TMP: AtomicU64 = AtomicU64::new(0);

fn io(what: &str, p: &Path) -> impl FnOnce(std::io::Error) -> ClusterError {
    let what = format!("{what} {}", p.display());
    move |e| ClusterError::io(what, e)
}

impl FileStore {
    pub fn open(dir: &Path) -> Result<FileStore, ClusterError> {
        fs::create_dir_all(dir).map_err(io("creating", dir))?;
        Ok(FileStore { dir: dir.to_owned() })
    }

    fn lock(&self) -> Result<Flock<File>, ClusterError> {
        let p = self.dir.join(".lock");
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(io("opening", &p))?;
        Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, e)| ClusterError::io("locking the lease store", e.into()))
    }

    /// Writes `rec` to a fresh temp file, durably; returns its path.
    fn write_tmp(&self, rec: &Record) -> Result<PathBuf, ClusterError> {
        let n = TMP.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.join(format!(".tmp-{}-{n}", std::process::id()));
        let mut f = File::create(&tmp).map_err(io("creating", &tmp))?;
        f.write_all(&serde_json::to_vec(rec).expect("serializes"))
            .map_err(io("writing", &tmp))?;
        f.sync_all().map_err(io("syncing", &tmp))?;
        Ok(tmp)
    }

    fn sync_dir(&self) -> Result<(), ClusterError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing", &self.dir))
    }

    fn read(&self, path: &Path) -> Result<Option<Record>, ClusterError> {
        match fs::read(path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| ClusterError::Store(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("reading", path)(e)),
        }
    }

    fn list_sync(&self) -> Result<Vec<Versioned>, ClusterError> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir).map_err(io("reading", &self.dir))? {
            let e = e.map_err(io("reading", &self.dir))?;
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if let Some(r) = self.read(&e.path())? {
                out.push(Versioned {
                    lease: r.lease,
                    version: r.version,
                });
            }
        }
        out.sort_by_key(|v| v.lease.subnet);
        Ok(out)
    }

    fn create_sync(&self, lease: &Lease) -> Result<Option<u64>, ClusterError> {
        let tmp = self.write_tmp(&Record {
            lease: lease.clone(),
            version: 1,
        })?;
        let key = self.dir.join(subnet_key(lease.subnet));
        let r = fs::hard_link(&tmp, &key);
        let _ = fs::remove_file(&tmp);
        match r {
            Ok(()) => {
                self.sync_dir()?;
                Ok(Some(1))
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(io("creating", &key)(e)),
        }
    }

    fn update_sync(&self, lease: &Lease, version: u64) -> Result<Option<u64>, ClusterError> {
        let _lock = self.lock()?;
        let key = self.dir.join(subnet_key(lease.subnet));
        match self.read(&key)? {
            Some(cur) if cur.version == version => {}
            _ => return Ok(None),
        }
        let tmp = self.write_tmp(&Record {
            lease: lease.clone(),
            version: version + 1,
        })?;
        fs::rename(&tmp, &key).map_err(io("replacing", &key))?;
        self.sync_dir()?;
        Ok(Some(version + 1))
    }

    fn delete_sync(&self, subnet: IpNetwork, version: u64) -> Result<bool, ClusterError> {
        let _lock = self.lock()?;
        let key = self.dir.join(subnet_key(subnet));
        match self.read(&key)? {
            Some(cur) if cur.version == version => {}
            _ => return Ok(false),
        }
        fs::remove_file(&key).map_err(io("deleting", &key))?;
        self.sync_dir()?;
        Ok(true)
    }
}

// The file operations are short and local; they run inline rather than on a blocking pool.
impl LeaseStore for FileStore {
    async fn list(&self) -> Result<Vec<Versioned>, ClusterError> {
        self.list_sync()
    }
    async fn create(&self, lease: &Lease, _ttl: Duration) -> Result<Option<u64>, ClusterError> {
        self.create_sync(lease)
    }
    async fn update(&self, lease: &Lease, version: u64, _ttl: Duration) -> Result<Option<u64>, ClusterError> {
        self.update_sync(lease, version)
    }
    async fn delete(&self, subnet: IpNetwork, version: u64) -> Result<bool, ClusterError> {
        self.delete_sync(subnet, version)
    }
    async fn watch(&self) -> Result<mpsc::Receiver<()>, ClusterError> {
        // Every create, update (rename) and delete changes the directory's mtime: polling that is
        // one stat, however many leases there are. Expiry changes nothing on disk; the daemon's
        // periodic resync catches it.
        let (tx, rx) = mpsc::channel(1);
        let dir = self.dir.clone();
        tokio::spawn(async move {
            let stamp = |d: &Path| fs::metadata(d).and_then(|m| m.modified()).ok();
            let mut last = stamp(&dir);
            loop {
                tokio::time::sleep(POLL).await;
                let now = stamp(&dir);
                if now != last {
                    last = now;
                    if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(()) {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::conformance::{self, cfg};
    use crate::cluster::lease::acquire;
    use std::sync::Arc;

    #[tokio::test]
    async fn same_node_gets_its_subnet_back_and_release_frees_it() {
        let d = tempfile::tempdir().unwrap();
        conformance::same_node_gets_its_subnet_back(&FileStore::open(d.path()).unwrap()).await;
    }

    #[tokio::test]
    async fn expired_leases_are_free_and_a_full_cidr_is_named() {
        let d = tempfile::tempdir().unwrap();
        let s = FileStore::open(d.path()).unwrap();
        let c = cfg("10.244.0.0/23", 24);
        acquire(&s, &c, "a", "192.168.1.1".parse().unwrap())
            .await
            .unwrap();
        let b = acquire(&s, &c, "b", "192.168.1.2".parse().unwrap())
            .await
            .unwrap();
        let e = acquire(&s, &c, "c", "192.168.1.3".parse().unwrap())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("10.244.0.0/23"), "{e}");
        // b's lease expires: c takes its subnet
        let mut old = b.lease.clone();
        old.expires = 1;
        s.update(&old, b.version, c.ttl).await.unwrap().unwrap();
        let got = acquire(&s, &c, "c", "192.168.1.3".parse().unwrap())
            .await
            .unwrap();
        assert_eq!(got.lease.subnet, b.lease.subnet);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_nodes_at_once_get_distinct_subnets() {
        let d = tempfile::tempdir().unwrap();
        conformance::many_nodes_at_once_get_distinct_subnets(Arc::new(FileStore::open(d.path()).unwrap()))
            .await;
    }
}
