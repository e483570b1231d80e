//! `file:DIR`: leases as files in one directory shared by the nodes of a machine.
//!
//! `DIR/<subnet key>` holds `{"lease": {...}, "version": N}`. Create is write-to-temp, fsync, then
//! `link(2)` to the key, which is atomic and fails if the key exists: no torn file is ever visible
//! and two creators cannot both win. Update and delete compare the version under an exclusive
//! `flock` on `DIR/.lock` and replace by `rename(2)`. Changes are noticed, key by key, through
//! inotify (or, where it cannot be had, by polling the directory's mtime).
//!
//! The directory is shared, so everything in it is judged: entries that are not regular files
//! (symlinks are never followed, directories never entered), that are not named like a key, or
//! whose content is not a lease of that key are listed as invalid; temp files that a crashed
//! writer left behind are removed once they are old.

use super::{watch_pair, Entry, Feed, LeaseStore, Watch};
use crate::cluster::error::ClusterError;
use crate::cluster::record::{self, subnet_key, Invalid, Lease, Listing, Versioned};
use futures::StreamExt;
use inotify::{EventMask, Inotify, WatchMask};
use ipnetwork::IpNetwork;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// How often the watcher looks at the directory when it cannot use inotify.
pub const POLL: Duration = Duration::from_secs(1);
/// A temp file older than this belongs to a writer that died: writes take milliseconds.
pub const STALE_TMP: Duration = Duration::from_secs(60);
/// A record is a few hundred bytes; a larger file is not one.
const MAX_RECORD: u64 = 64 * 1024;
const LOCK: &str = ".lock";
const TMP_PREFIX: &str = ".tmp-";

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

/// Opens an existing file for reading without following a symlink.
fn open_nofollow(p: &Path) -> std::io::Result<File> {
    File::options()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(p)
}

impl FileStore {
    /// Opens the store, creating its directory if needed.
    pub fn open(dir: &Path) -> Result<FileStore, ClusterError> {
        crate::owner::create_dir_all(dir).map_err(io("creating", dir))?;
        FileStore::open_existing(dir)
    }

    /// Opens a store that exists; never creates one.
    pub fn open_existing(dir: &Path) -> Result<FileStore, ClusterError> {
        match fs::metadata(dir) {
            Ok(m) if m.is_dir() => match crate::owner::untrusted(dir, &m) {
                Some(why) => Err(ClusterError::Config(format!("refusing the lease store: {why}"))),
                None => Ok(FileStore { dir: dir.to_owned() }),
            },
            Ok(_) => Err(ClusterError::Config(format!(
                "lease store {} is not a directory",
                dir.display()
            ))),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(ClusterError::Config(format!(
                "there is no lease store at {}",
                dir.display()
            ))),
            Err(e) => Err(io("opening", dir)(e)),
        }
    }

    fn lock(&self) -> Result<Flock<File>, ClusterError> {
        let p = self.dir.join(LOCK);
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(crate::owner::LOCK_MODE)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(&p)
            .map_err(io("opening", &p))?;
        Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, e)| ClusterError::io("locking the lease store", e.into()))
    }

    /// Writes `rec` to a fresh temp file, durably; returns its path.
    fn write_tmp(&self, rec: &Record) -> Result<PathBuf, ClusterError> {
        let n = TMP.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.join(format!("{TMP_PREFIX}{}-{n}", std::process::id()));
        let bytes =
            serde_json::to_vec(rec).map_err(|e| ClusterError::Store(format!("encoding a lease: {e}")))?;
        let write = || -> std::io::Result<()> {
            let mut f = File::options()
                .write(true)
                .create_new(true)
                .custom_flags(nix::libc::O_CLOEXEC)
                .open(&tmp)?;
            // Readable by every node's daemon and `leases`, whatever the umask.
            f.set_permissions(std::fs::Permissions::from_mode(crate::owner::FILE_MODE))?;
            f.write_all(&bytes)?;
            f.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io("writing", &tmp)(e)
        })?;
        Ok(tmp)
    }

    fn sync_dir(&self) -> Result<(), ClusterError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing", &self.dir))
    }

    /// The record under `key`: `Ok(None)` if there is none, `Err(why)` if the entry is no record.
    fn read(&self, key: &str) -> Result<Option<Versioned>, Result<Invalid, ClusterError>> {
        let path = self.dir.join(key);
        let invalid = |why: String| {
            Err(Ok(Invalid {
                key: key.to_string(),
                subnet: record::parse_key(key),
                why,
            }))
        };
        if record::parse_key(key).is_none() {
            return invalid("the key names no subnet".into());
        }
        let f = match open_nofollow(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => return invalid("a symlink".into()),
            Err(e) => return Err(Err(io("reading", &path)(e))),
        };
        let meta = f.metadata().map_err(|e| Err(io("reading", &path)(e)))?;
        if !meta.is_file() {
            return invalid("not a regular file".into());
        }
        let mut bytes = Vec::new();
        f.take(MAX_RECORD + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Err(io("reading", &path)(e)))?;
        if bytes.len() as u64 > MAX_RECORD {
            return invalid("too large for a record".into());
        }
        #[derive(Deserialize)]
        struct Raw {
            lease: serde_json::Value,
            version: u64,
        }
        let raw: Raw = match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            Err(e) => return invalid(format!("not a record: {e}")),
        };
        match record::parse(key, raw.lease.to_string().as_bytes()) {
            Ok(lease) => Ok(Some(Versioned {
                lease,
                version: raw.version,
            })),
            Err(i) => Err(Ok(i)),
        }
    }

    /// The current version of `key`, for a compare-and-swap: `None` if there is no valid record.
    fn version_of(&self, key: &str) -> Result<Option<u64>, ClusterError> {
        match self.read(key) {
            Ok(v) => Ok(v.map(|v| v.version)),
            Err(Ok(_)) => Ok(None),
            Err(Err(e)) => Err(e),
        }
    }

    fn list_sync(&self) -> Result<Listing, ClusterError> {
        let mut out = Listing::default();
        for e in fs::read_dir(&self.dir).map_err(io("reading", &self.dir))? {
            let e = e.map_err(io("reading", &self.dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name == LOCK {
                continue;
            }
            if name.starts_with(TMP_PREFIX) {
                self.remove_if_stale(&e.path());
                continue;
            }
            match self.read(&name) {
                Ok(Some(v)) => out.leases.push(v),
                Ok(None) => {}
                Err(Ok(invalid)) => out.invalid.push(invalid),
                Err(Err(e)) => out.invalid.push(Invalid {
                    key: name.clone(),
                    subnet: record::parse_key(&name),
                    why: e.to_string(),
                }),
            }
        }
        out.leases.sort_by_key(|v| v.lease.subnet);
        out.invalid.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Removes a temp file that no writer can still be using.
    fn remove_if_stale(&self, p: &Path) {
        let old = fs::symlink_metadata(p).and_then(|m| m.modified()).is_ok_and(|t| {
            SystemTime::now()
                .duration_since(t)
                .is_ok_and(|age| age > STALE_TMP)
        });
        if old {
            let _ = fs::remove_file(p);
        }
    }

    fn create_sync(&self, lease: &Lease) -> Result<Option<u64>, ClusterError> {
        // A record created again after a delete must not take a version that its old holder
        // still has: that holder's compare-and-swap would then overwrite the new record.
        let version = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            .max(1);
        let tmp = self.write_tmp(&Record {
            lease: lease.clone(),
            version,
        })?;
        let key = self.dir.join(subnet_key(lease.subnet));
        let r = fs::hard_link(&tmp, &key);
        let _ = fs::remove_file(&tmp);
        match r {
            Ok(()) => {
                self.sync_dir()?;
                Ok(Some(version))
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(io("creating", &key)(e)),
        }
    }

    fn update_sync(&self, lease: &Lease, version: u64) -> Result<Option<u64>, ClusterError> {
        let _lock = self.lock()?;
        let key = subnet_key(lease.subnet);
        if self.version_of(&key)? != Some(version) {
            return Ok(None);
        }
        let next = version.wrapping_add(1);
        let tmp = self.write_tmp(&Record {
            lease: lease.clone(),
            version: next,
        })?;
        let path = self.dir.join(&key);
        fs::rename(&tmp, &path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io("replacing", &path)(e)
        })?;
        self.sync_dir()?;
        Ok(Some(next))
    }

    fn delete_sync(&self, subnet: IpNetwork, version: u64) -> Result<bool, ClusterError> {
        let _lock = self.lock()?;
        let key = subnet_key(subnet);
        if self.version_of(&key)? != Some(version) {
            return Ok(false);
        }
        let path = self.dir.join(&key);
        fs::remove_file(&path).map_err(io("deleting", &path))?;
        self.sync_dir()?;
        Ok(true)
    }
}

// The file operations are short and local; they run inline rather than on a blocking pool.
impl LeaseStore for FileStore {
    async fn list(&self) -> Result<Listing, ClusterError> {
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
    async fn get(&self, key: &str) -> Result<Option<Entry>, ClusterError> {
        match self.read(key) {
            Ok(v) => Ok(v.map(Ok)),
            Err(Ok(invalid)) => Ok(Some(Err(invalid))),
            Err(Err(e)) => Err(e),
        }
    }

    async fn watch(&self) -> Result<Watch, ClusterError> {
        let (feed, watch) = watch_pair();
        match Inotify::init().and_then(|i| {
            i.watches().add(
                &self.dir,
                WatchMask::CREATE
                    | WatchMask::DELETE
                    | WatchMask::MOVED_TO
                    | WatchMask::MOVED_FROM
                    | WatchMask::CLOSE_WRITE
                    | WatchMask::DELETE_SELF
                    | WatchMask::MOVE_SELF,
            )?;
            i.into_event_stream([0u8; 4096])
        }) {
            Ok(events) => {
                tokio::spawn(follow(events, feed));
            }
            Err(e) => {
                // Out of inotify watches (or no inotify): fall back to the directory's mtime.
                tracing::warn!(
                    "watching {} with inotify: {e}; polling it instead",
                    self.dir.display()
                );
                tokio::spawn(poll(self.dir.clone(), feed));
            }
        }
        Ok(watch)
    }
}

/// Feeds the names of the records that inotify says changed; everything when events were lost.
async fn follow(mut events: inotify::EventStream<[u8; 4096]>, feed: Feed) {
    loop {
        let ev = tokio::select! {
            _ = feed.closed() => return,
            ev = events.next() => ev,
        };
        let open = match ev {
            Some(Ok(ev)) if ev.mask.contains(EventMask::Q_OVERFLOW) => feed.send(|c| c.all = true),
            Some(Ok(ev)) => match ev.name.map(|n| n.to_string_lossy().into_owned()) {
                Some(name) if name == LOCK || name.starts_with(TMP_PREFIX) => true,
                Some(name) => feed.send(|c| {
                    c.keys.insert(name);
                }),
                // The directory itself went or moved: nothing more will come from this watch.
                None => {
                    feed.send(|c| c.all = true);
                    return;
                }
            },
            Some(Err(_)) | None => {
                feed.send(|c| c.all = true);
                return;
            }
        };
        if !open {
            return;
        }
    }
}

/// The fallback without inotify: every create, rename and delete changes the directory's mtime.
async fn poll(dir: PathBuf, feed: Feed) {
    let stamp = |d: &Path| fs::metadata(d).and_then(|m| m.modified()).ok();
    let mut last = stamp(&dir);
    loop {
        tokio::select! {
            _ = feed.closed() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
        let now = stamp(&dir);
        if now != last {
            last = now;
            if !feed.send(|c| c.all = true) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::conformance;
    use std::os::unix::fs::symlink;
    use std::sync::Arc;

    #[tokio::test]
    async fn same_node_gets_its_subnet_back_and_release_frees_it() {
        let d = tempfile::tempdir().unwrap();
        conformance::same_node_gets_its_subnet_back(&FileStore::open(d.path()).unwrap()).await;
    }

    #[tokio::test]
    async fn records_are_0644_the_lock_0600_and_an_open_directory_is_refused() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("store");
        let s = FileStore::open(&dir).unwrap();
        let b = conformance::same_node_gets_its_subnet_back(&s).await;
        let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&dir.join(record::subnet_key(b.lease.subnet))), 0o644);
        assert_eq!(mode(&dir.join(LOCK)), 0o600);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o757)).unwrap();
        for r in [FileStore::open(&dir).err(), FileStore::open_existing(&dir).err()] {
            let e = r.expect("refused").to_string();
            assert!(e.contains("store is writable by others (mode 0757)"), "{e}");
        }
    }

    #[tokio::test]
    async fn expired_leases_are_free_only_after_the_grace() {
        let d = tempfile::tempdir().unwrap();
        conformance::expired_leases_are_free_only_after_the_grace(&FileStore::open(d.path()).unwrap()).await;
    }

    #[tokio::test]
    async fn a_name_held_by_a_live_daemon_is_refused() {
        let d = tempfile::tempdir().unwrap();
        conformance::a_name_held_by_a_live_daemon_is_refused(&FileStore::open(d.path()).unwrap()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_nodes_at_once_get_distinct_subnets() {
        let d = tempfile::tempdir().unwrap();
        conformance::many_nodes_at_once_get_distinct_subnets(Arc::new(FileStore::open(d.path()).unwrap()))
            .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_families_one_lease() {
        let d = tempfile::tempdir().unwrap();
        conformance::two_families_one_lease(Arc::new(FileStore::open(d.path()).unwrap())).await;
    }

    #[tokio::test]
    async fn a_partner_named_elsewhere_is_not_taken() {
        let d = tempfile::tempdir().unwrap();
        conformance::a_partner_named_elsewhere_is_not_taken(&FileStore::open(d.path()).unwrap()).await;
    }

    #[tokio::test]
    async fn a_node_comes_back_to_the_subnet_it_last_published() {
        let d = tempfile::tempdir().unwrap();
        conformance::a_node_comes_back_to_the_subnet_it_last_published(&FileStore::open(d.path()).unwrap())
            .await;
    }

    #[tokio::test]
    async fn an_ipv6_only_cluster() {
        let d = tempfile::tempdir().unwrap();
        conformance::an_ipv6_only_cluster(&FileStore::open(d.path()).unwrap()).await;
    }

    /// Writes an entry under a key by hand: a record as the file store writes it, or the bytes
    /// as they are when they are no JSON.
    fn put_raw(dir: &Path) -> impl Fn(String, Vec<u8>) -> std::future::Ready<()> + '_ {
        move |key: String, bytes: Vec<u8>| {
            let body = match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(lease) => serde_json::json!({"lease": lease, "version": 1})
                    .to_string()
                    .into_bytes(),
                Err(_) => bytes,
            };
            fs::write(dir.join(key), body).unwrap();
            std::future::ready(())
        }
    }

    #[tokio::test]
    async fn bad_records_are_skipped_one_by_one() {
        let d = tempfile::tempdir().unwrap();
        let s = FileStore::open(d.path()).unwrap();
        conformance::bad_records_are_skipped_one_by_one(&s, put_raw(d.path())).await;
    }

    #[tokio::test]
    async fn a_renewal_keeps_the_held_subnet() {
        let d = tempfile::tempdir().unwrap();
        let s = FileStore::open(d.path()).unwrap();
        conformance::a_renewal_keeps_the_held_subnet(&s, put_raw(d.path())).await;
    }

    #[tokio::test]
    async fn strays_symlinks_and_old_temp_files() {
        let d = tempfile::tempdir().unwrap();
        let s = FileStore::open(d.path()).unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        fs::write(outside.path(), "secret").unwrap();
        symlink(outside.path(), d.path().join("10.244.9.0-24")).unwrap();
        fs::create_dir(d.path().join("10.244.8.0-24")).unwrap();
        fs::write(d.path().join("README"), "hello").unwrap();
        let old_tmp = d.path().join(".tmp-99999-0");
        let new_tmp = d.path().join(".tmp-99999-1");
        fs::write(&old_tmp, "half").unwrap();
        fs::write(&new_tmp, "half").unwrap();
        let long_ago = nix::sys::time::TimeSpec::new(1_000_000, 0);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &old_tmp,
            &long_ago,
            &long_ago,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
        let l = s.list().await.unwrap();
        let why: Vec<(&str, &str)> = l
            .invalid
            .iter()
            .map(|i| (i.key.as_str(), i.why.as_str()))
            .collect();
        assert_eq!(
            why,
            [
                ("10.244.8.0-24", "not a regular file"),
                ("10.244.9.0-24", "a symlink"),
                ("README", "the key names no subnet"),
            ]
        );
        assert!(l.leases.is_empty());
        assert!(!old_tmp.exists(), "a crashed writer's temp file stays");
        assert!(new_tmp.exists(), "a temp file that may be in use was removed");
        assert_eq!(fs::read_to_string(outside.path()).unwrap(), "secret");
        // the symlinked key can be neither updated nor deleted through the link
        let lease = Lease {
            subnet: "10.244.9.0/24".parse().unwrap(),
            node_name: "x".into(),
            node_ip: "192.168.1.1".parse().unwrap(),
            expires: 1,
            holder: None,
            vtep_mac: None,
            ipv6_subnet: None,
            node_ip_v6: None,
        };
        assert_eq!(s.update(&lease, 1, Duration::from_secs(60)).await.unwrap(), None);
        assert!(!s.delete(lease.subnet, 1).await.unwrap());
        assert_eq!(fs::read_to_string(outside.path()).unwrap(), "secret");
    }

    #[tokio::test]
    async fn the_watch_names_each_changed_key_and_get_reads_it() {
        let d = tempfile::tempdir().unwrap();
        let s = FileStore::open(d.path()).unwrap();
        let mut w = s.watch().await.unwrap();
        let mut other = crate::cluster::lease::Seen::default();
        let c = conformance::cfg("10.244.0.0/16", 24);
        let got =
            crate::cluster::lease::acquire(&s, &c, &conformance::node("a", "192.168.1.1", "h"), &mut other)
                .await
                .unwrap();
        let changed = tokio::time::timeout(Duration::from_secs(5), w.changed())
            .await
            .unwrap()
            .unwrap();
        let key = subnet_key(got.lease.subnet);
        assert_eq!(changed.keys.iter().collect::<Vec<_>>(), [&key], "{changed:?}");
        assert_eq!(s.get(&key).await.unwrap(), Some(Ok(got.clone())));
        // a temp file or the lock is no change
        fs::write(d.path().join(".tmp-1-1"), "x").unwrap();
        assert!(s.delete(got.lease.subnet, got.version).await.unwrap());
        let changed = tokio::time::timeout(Duration::from_secs(5), w.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(changed.keys.iter().collect::<Vec<_>>(), [&key], "{changed:?}");
        assert_eq!(s.get(&key).await.unwrap(), None);
    }

    #[test]
    fn a_store_that_does_not_exist_is_not_created_by_readers() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("none");
        assert!(matches!(
            FileStore::open_existing(&missing),
            Err(ClusterError::Config(_))
        ));
        assert!(!missing.exists());
    }
}
