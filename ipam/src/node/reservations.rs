//! The node's reservations on disk, under `dataDir/<network>/`.
//!
//! - `<ip>`: a reservation, a symlink whose target is `<containerID> <ifname>`. `symlink(2)`
//!   creates name and content in one atomic step and fails with EEXIST if the name exists: that is
//!   the "taken" test, so a reservation is either wholly there or not at all and two processes can
//!   never take one address.
//! - `owner:<containerID>:<ifname>`: the owner index, a symlink to the owner's addresses
//!   (`<ip>[,<ip>...]`), replaced atomically (temp + rename). DEL, CHECK and a repeated ADD read
//!   it instead of every reservation. It is written after the reservations it names; a crash in
//!   between leaves a reservation without index, which reclaim and GC take back.
//! - `last_reserved_ip.<N>`: a symlink to the address range set N last handed out (the
//!   round-robin cursor; a hint only).
//! - `.adding:<containerID>:<ifname>`: a file that an ADD in progress holds flock'ed, so that
//!   reclaim never takes an address whose ADD is still running.
//! - `lock`: flock'ed for a whole ADD/DEL/GC/reclaim, so that the index and the cursor stay
//!   consistent across concurrent plugin processes.
//! - `format`: present once the directory has an owner index (older directories are indexed on
//!   first use).
//!
//! Nothing is fsynced: the data directory lives on tmpfs by default, and a reservation only
//! protects the address of a pod that exists; see ARCHITECTURE.md for the crash model.

use super::error::IpamError;
use nix::fcntl::{Flock, FlockArg};
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::ErrorKind;
use std::net::IpAddr;
use std::os::unix::fs::{symlink, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Who holds an address: the (container ID, ifname) of one attachment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

    /// The content of a reservation symlink.
    fn encode(&self) -> String {
        format!("{} {}", self.container_id, self.ifname)
    }

    /// A reservation's content back to an owner, if it names a valid one.
    fn decode(s: &str) -> Option<Owner> {
        let (c, i) = s.split_once(' ')?;
        Owner::valid(c, i)
    }

    /// `<containerID>:<ifname>`: unambiguous, as neither may contain `:`.
    fn key(&self) -> String {
        format!("{}:{}", self.container_id, self.ifname)
    }

    fn from_key(s: &str) -> Option<Owner> {
        let (c, i) = s.split_once(':')?;
        Owner::valid(c, i)
    }

    fn valid(container_id: &str, ifname: &str) -> Option<Owner> {
        (cni_spec::env::validate_container_id(container_id).is_ok()
            && cni_spec::env::validate_ifname(ifname).is_ok())
        .then(|| Owner::new(container_id, ifname))
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.container_id, self.ifname)
    }
}

/// A network name becomes a directory name: keep it to one plain path component.
pub fn validate_network_name(name: &str) -> Result<(), IpamError> {
    if cni_spec::env::is_plain_name(name) {
        Ok(())
    } else {
        Err(IpamError::Config(format!(
            "network name {name:?} must be alphanumerics, '_', '.' or '-'"
        )))
    }
}

const LOCK: &str = "lock";
const FORMAT: &str = "format";
const OWNER_PREFIX: &str = "owner:";
const ADDING_PREFIX: &str = ".adding:";
const CURSOR_PREFIX: &str = "last_reserved_ip.";

/// What one entry of a network directory is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// `<ip>` → a valid owner.
    Reservation(IpAddr, Owner),
    /// `owner:...` → addresses.
    Index(Owner, Vec<IpAddr>),
    /// `.adding:...`, with whether an ADD holds it now.
    Adding(Owner, bool),
    /// `lock`, `format`, a cursor.
    Bookkeeping,
    /// Anything else: not ours, or not valid.
    Stray,
}

/// One reservation as a scan sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    pub ip: IpAddr,
    pub owner: Owner,
    /// When it was made (the symlink's mtime).
    pub since: SystemTime,
}

/// Everything in a network directory, classified.
#[derive(Debug, Default)]
pub struct Scan {
    pub reservations: Vec<Reserved>,
    pub index: BTreeMap<Owner, Vec<IpAddr>>,
    /// ADDs in progress now (their `.adding` file is locked).
    pub adding: Vec<Owner>,
    /// Entries that are not ours or not valid, by file name.
    pub stray: Vec<String>,
    /// `.adding` files nobody holds (their ADD died).
    pub stale_adding: Vec<Owner>,
}

/// An open, locked network directory. The lock is released on drop.
pub struct Store {
    dir: PathBuf,
    _lock: Flock<File>,
}

/// Opens `dir/name` for flock without following a symlink someone put there, creating `dir` if
/// it is not there (tried only then: the directory exists on every call but a network's first).
fn open_lock_file(dir: &Path, name: &str) -> Result<(File, PathBuf), IpamError> {
    let path = dir.join(name);
    let open = || {
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(crate::owner::LOCK_MODE)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(&path)
    };
    let f = match open() {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            crate::owner::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
            open()
        }
        r => r,
    };
    match f {
        Ok(f) => Ok((f, path)),
        Err(e) => Err(IpamError::Io(format!("opening {}", path.display()), e)),
    }
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> IpamError {
    move |e| IpamError::Io(what, e)
}

impl Store {
    /// Opens (creating if needed) and locks the directory of `network` under `data_dir`.
    pub fn open(data_dir: &Path, network: &str) -> Result<Store, IpamError> {
        Store::open_locked(data_dir, network, true)
    }

    /// Opens and locks the directory; without `wait`, a lock that another process holds is
    /// [`IpamError::Busy`] at once.
    fn open_locked(data_dir: &Path, network: &str, wait: bool) -> Result<Store, IpamError> {
        validate_network_name(network)?;
        let dir = data_dir.join(network);
        let (f, lock_path) = open_lock_file(&dir, LOCK)?;
        let how = match wait {
            true => FlockArg::LockExclusive,
            false => FlockArg::LockExclusiveNonblock,
        };
        let lock = Flock::lock(f, how).map_err(|(_, errno)| match errno {
            nix::errno::Errno::EWOULDBLOCK if !wait => IpamError::Busy(lock_path.display().to_string()),
            _ => IpamError::io(format!("locking {}", lock_path.display()), errno.into()),
        })?;
        let store = Store { dir, _lock: lock };
        store.index_if_unindexed()?;
        Ok(store)
    }

    /// Opens the store only if the network has one: DEL and GC must not create directories.
    pub fn open_existing(data_dir: &Path, network: &str) -> Result<Option<Store>, IpamError> {
        Store::open_existing_locked(data_dir, network, true)
    }

    /// [`Store::open_existing`] for a caller that must never wait (the daemon's loop): a lock
    /// that another process holds, a plugin mid-ADD or one stopped while holding it, is
    /// [`IpamError::Busy`].
    pub fn try_open_existing(data_dir: &Path, network: &str) -> Result<Option<Store>, IpamError> {
        Store::open_existing_locked(data_dir, network, false)
    }

    fn open_existing_locked(data_dir: &Path, network: &str, wait: bool) -> Result<Option<Store>, IpamError> {
        validate_network_name(network)?;
        match fs::symlink_metadata(data_dir.join(network)) {
            Ok(m) if m.is_dir() => Store::open_locked(data_dir, network, wait).map(Some),
            _ => Ok(None),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A directory from before the owner index gets one, from a scan; once.
    fn index_if_unindexed(&self) -> Result<(), IpamError> {
        if fs::symlink_metadata(self.path(FORMAT)).is_ok() {
            return Ok(());
        }
        let scan = self.scan()?;
        let mut by_owner: BTreeMap<Owner, Vec<IpAddr>> = BTreeMap::new();
        for r in scan.reservations {
            by_owner.entry(r.owner).or_default().push(r.ip);
        }
        for (owner, ips) in &by_owner {
            if scan.index.get(owner) != Some(ips) {
                self.write_index(owner, ips)?;
            }
        }
        fs::write(self.path(FORMAT), b"2\n").map_err(io(format!("writing {}", self.path(FORMAT).display())))
    }

    /// The owner of reservation `ip`, if it is a valid one.
    pub fn holder(&self, ip: IpAddr) -> Result<Option<Owner>, IpamError> {
        match fs::read_link(self.path(&ip.to_string())) {
            Ok(t) => Ok(t.to_str().and_then(Owner::decode)),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::InvalidInput) => Ok(None),
            Err(e) => Err(IpamError::io(format!("reading reservation {ip}"), e)),
        }
    }

    /// The addresses `owner` holds, by its index, each checked against its reservation.
    pub fn owned(&self, owner: &Owner) -> Result<Vec<IpAddr>, IpamError> {
        let ips = match fs::read_link(self.path(&format!("{OWNER_PREFIX}{}", owner.key()))) {
            Ok(t) => t.to_str().map(parse_ips).unwrap_or_default(),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::InvalidInput) => {
                return Ok(Vec::new())
            }
            Err(e) => return Err(IpamError::io(format!("reading the index of {owner}"), e)),
        };
        let mut mine = Vec::with_capacity(ips.len());
        for ip in ips {
            if self.holder(ip)?.as_ref() == Some(owner) {
                mine.push(ip);
            }
        }
        Ok(mine)
    }

    /// Reserves `ip` for `owner`. `Ok(false)` if the address is taken.
    pub fn reserve(&self, ip: IpAddr, owner: &Owner) -> Result<bool, IpamError> {
        match symlink(owner.encode(), self.path(&ip.to_string())) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(IpamError::io(format!("reserving {ip}"), e)),
        }
    }

    /// Records `ips` as everything `owner` holds (no addresses: removes its index).
    pub fn write_index(&self, owner: &Owner, ips: &[IpAddr]) -> Result<(), IpamError> {
        let name = format!("{OWNER_PREFIX}{}", owner.key());
        if ips.is_empty() {
            return remove(&self.path(&name)).map_err(io(format!("removing the index of {owner}")));
        }
        let target = ips.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(",");
        replace_symlink(&self.dir, &name, &target).map_err(io(format!("writing the index of {owner}")))
    }

    /// Removes reservation `ip` if `owner` holds it.
    fn release_if_held_by(&self, ip: IpAddr, owner: &Owner) -> Result<(), IpamError> {
        if self.holder(ip)?.as_ref() == Some(owner) {
            remove(&self.path(&ip.to_string())).map_err(io(format!("releasing {ip}")))?;
        }
        Ok(())
    }

    /// Releases every address `owner` holds, and its index; returns them.
    pub fn release_owner(&self, owner: &Owner) -> Result<Vec<IpAddr>, IpamError> {
        let ips = self.owned(owner)?;
        for ip in &ips {
            self.release_if_held_by(*ip, owner)?;
        }
        self.write_index(owner, &[])?;
        Ok(ips)
    }

    /// Releases some of `owner`'s addresses (an ADD's undo), keeping its index true.
    pub fn release_some(&self, owner: &Owner, ips: &[IpAddr]) -> Result<(), IpamError> {
        for ip in ips {
            self.release_if_held_by(*ip, owner)?;
        }
        let rest: Vec<IpAddr> = self
            .owned(owner)?
            .into_iter()
            .filter(|ip| !ips.contains(ip))
            .collect();
        self.write_index(owner, &rest)
    }

    /// Removes a reservation whatever it says (GC of a reservation that names no valid owner).
    fn remove_entry(&self, name: &str) -> Result<(), IpamError> {
        let p = self.path(name);
        let r = match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&p),
            Ok(_) => fs::remove_file(&p),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        r.map_err(io(format!("removing {}", p.display())))
    }

    /// Where range set `set` left off.
    pub fn last_reserved(&self, set: usize) -> Option<IpAddr> {
        fs::read_link(self.path(&format!("{CURSOR_PREFIX}{set}")))
            .ok()?
            .to_str()?
            .parse()
            .ok()
    }

    /// Moves the round-robin cursor. A hint only: losing it costs nothing but order.
    pub fn set_last_reserved(&self, set: usize, ip: IpAddr) -> std::io::Result<()> {
        replace_symlink(&self.dir, &format!("{CURSOR_PREFIX}{set}"), &ip.to_string())
    }

    /// What the entry called `name` is. `Adding` entries are probed with a non-blocking flock.
    pub fn classify(&self, name: &str) -> Entry {
        classify_in(&self.dir, name)
    }

    /// Reads the whole directory (GC, reclaim, tests: never ADD or DEL).
    pub fn scan(&self) -> Result<Scan, IpamError> {
        scan_dir(&self.dir)
    }

    /// Every valid reservation: address → owner.
    pub fn reservations(&self) -> Result<HashMap<IpAddr, Owner>, IpamError> {
        Ok(self
            .scan()?
            .reservations
            .into_iter()
            .map(|r| (r.ip, r.owner))
            .collect())
    }

    /// Removes what `scan` found stray, and the `.adding` files of ADDs that died.
    pub fn remove_stray(&self, scan: &Scan) -> Result<(), IpamError> {
        for name in &scan.stray {
            self.remove_entry(name)?;
        }
        for owner in &scan.stale_adding {
            self.remove_entry(&format!("{ADDING_PREFIX}{}", owner.key()))?;
        }
        Ok(())
    }

    /// Releases reservations by address whatever their index says, and fixes the indexes of their
    /// owners (GC and reclaim).
    pub fn release_reserved(&self, gone: &[Reserved]) -> Result<(), IpamError> {
        let mut owners: BTreeMap<&Owner, Vec<IpAddr>> = BTreeMap::new();
        for r in gone {
            self.release_if_held_by(r.ip, &r.owner)?;
            owners.entry(&r.owner).or_default().push(r.ip);
        }
        for (owner, ips) in owners {
            let rest: Vec<IpAddr> = self
                .owned(owner)?
                .into_iter()
                .filter(|ip| !ips.contains(ip))
                .collect();
            self.write_index(owner, &rest)?;
        }
        Ok(())
    }
}

/// What the entry called `name` is. `Adding` entries are probed with a non-blocking flock.
fn classify_in(dir: &Path, name: &str) -> Entry {
    let p = dir.join(name);
    // A temp file is only ever there while its writer holds the lock, which scans hold too:
    // one seen in a scan is a crashed writer's, hence stray.
    if name == LOCK || name == FORMAT {
        return Entry::Bookkeeping;
    }
    if let Some(set) = name.strip_prefix(CURSOR_PREFIX) {
        return if set.parse::<usize>().is_ok() {
            Entry::Bookkeeping
        } else {
            Entry::Stray
        };
    }
    if let Some(key) = name.strip_prefix(ADDING_PREFIX) {
        let Some(owner) = Owner::from_key(key) else {
            return Entry::Stray;
        };
        return Entry::Adding(owner, adding_is_held(&p));
    }
    let link = fs::read_link(&p).ok();
    let target = link.as_deref().and_then(Path::to_str);
    if let Some(key) = name.strip_prefix(OWNER_PREFIX) {
        return match (Owner::from_key(key), target) {
            (Some(owner), Some(t)) => Entry::Index(owner, parse_ips(t)),
            _ => Entry::Stray,
        };
    }
    // A reservation's name is the address written canonically.
    match (name.parse::<IpAddr>(), target.and_then(Owner::decode)) {
        (Ok(ip), Some(owner)) if ip.to_string() == name => Entry::Reservation(ip, owner),
        _ => Entry::Stray,
    }
}

/// Reads the whole directory (GC, reclaim, tests: never ADD or DEL).
fn scan_dir(dir: &Path) -> Result<Scan, IpamError> {
    let mut scan = Scan::default();
    let rd = fs::read_dir(dir).map_err(io(format!("reading {}", dir.display())))?;
    for entry in rd {
        let entry = entry.map_err(io(format!("reading {}", dir.display())))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            scan.stray.push(entry.file_name().to_string_lossy().into_owned());
            continue;
        };
        match classify_in(dir, &name) {
            Entry::Reservation(ip, owner) => {
                let since = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                scan.reservations.push(Reserved { ip, owner, since });
            }
            Entry::Index(owner, ips) => {
                scan.index.insert(owner, ips);
            }
            Entry::Adding(owner, true) => scan.adding.push(owner),
            Entry::Adding(owner, false) => scan.stale_adding.push(owner),
            Entry::Bookkeeping => {}
            Entry::Stray => scan.stray.push(name),
        }
    }
    scan.reservations.sort_by_key(|r| r.ip);
    Ok(scan)
}

/// The reservations of `network` under `data_dir` as they are, for a reader that must change
/// nothing (`cbrnet-routed doctor`): no directory or lock file is created and the network's lock
/// is not taken, so an ADD or DEL running meanwhile may show half done. `Ok(None)`: the network
/// has no directory.
pub fn peek(data_dir: &Path, network: &str) -> Result<Option<Scan>, IpamError> {
    validate_network_name(network)?;
    let dir = data_dir.join(network);
    match fs::symlink_metadata(&dir) {
        Ok(m) if m.is_dir() => scan_dir(&dir).map(Some),
        _ => Ok(None),
    }
}

/// Marks an attachment's ADD as in progress for as long as it is held (an flock'ed file in the
/// network directory); removed on drop.
pub struct Adding {
    path: PathBuf,
    _lock: Flock<File>,
}

impl Adding {
    /// Taken before the ADD reserves anything, so a reservation whose ADD is alive is always marked.
    pub fn begin(data_dir: &Path, network: &str, owner: &Owner) -> Result<Adding, IpamError> {
        validate_network_name(network)?;
        let dir = data_dir.join(network);
        let (f, path) = open_lock_file(&dir, &format!("{ADDING_PREFIX}{}", owner.key()))?;
        let lock = Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, errno)| IpamError::io(format!("locking {}", path.display()), errno.into()))?;
        Ok(Adding { path, _lock: lock })
    }
}

impl Drop for Adding {
    fn drop(&mut self) {
        // Removed while still held: whoever opens it after this sees no file, or a stale one.
        let _ = fs::remove_file(&self.path);
    }
}

/// Does a live ADD hold this `.adding` file?
fn adding_is_held(path: &Path) -> bool {
    let Ok(f) = File::options()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
    else {
        return false;
    };
    Flock::lock(f, FlockArg::LockExclusiveNonblock).is_err()
}

fn parse_ips(s: &str) -> Vec<IpAddr> {
    s.split(',').filter_map(|p| p.parse().ok()).collect()
}

fn remove(p: &Path) -> std::io::Result<()> {
    match fs::remove_file(p) {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// Replaces symlink `dir/name` with one to `target`, atomically (temp + rename).
fn replace_symlink(dir: &Path, name: &str, target: &str) -> std::io::Result<()> {
    let tmp = dir.join(format!(".tmp.{name}.{}", std::process::id()));
    if let Err(e) = symlink(target, &tmp) {
        // A writer that died with the same process ID left its temp: take it away.
        if e.kind() != ErrorKind::AlreadyExists {
            return Err(e);
        }
        fs::remove_file(&tmp)?;
        symlink(target, &tmp)?;
    }
    fs::rename(&tmp, dir.join(name)).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_round_trip_and_bad_ones_are_refused() {
        let o = Owner::new("abc-1.2_x", "eth0.5");
        assert_eq!(Owner::decode(&o.encode()), Some(o.clone()));
        assert_eq!(Owner::from_key(&o.key()), Some(o));
        for bad in ["", "x", "../x eth0", "c1 ", "c1 a/b", "c1 sixteen-bytes-xx"] {
            assert_eq!(Owner::decode(bad), None, "{bad:?}");
        }
        assert_eq!(Owner::from_key("c1:a:b"), None);
    }

    #[test]
    fn entries_are_classified_and_strays_removed() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), "n").unwrap();
        let a = Owner::new("a", "eth0");
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(s.reserve(ip, &a).unwrap());
        assert!(!s.reserve(ip, &Owner::new("b", "eth0")).unwrap());
        s.write_index(&a, &[ip]).unwrap();
        s.set_last_reserved(0, ip).unwrap();
        symlink("garbage", s.path("10.0.0.3")).unwrap();
        symlink("a eth0", s.path("010.0.0.4")).unwrap();
        fs::write(s.path("10.0.0.5"), "a eth0").unwrap();
        fs::create_dir(s.path("junk")).unwrap();
        fs::write(s.path(".adding:dead:eth0"), "").unwrap();
        let scan = s.scan().unwrap();
        assert_eq!(scan.reservations.len(), 1);
        assert_eq!(scan.index.get(&a), Some(&vec![ip]));
        let mut stray = scan.stray.clone();
        stray.sort();
        assert_eq!(stray, ["010.0.0.4", "10.0.0.3", "10.0.0.5", "junk"]);
        assert_eq!(scan.stale_adding, [Owner::new("dead", "eth0")]);
        s.remove_stray(&scan).unwrap();
        let mut left: Vec<String> = fs::read_dir(s.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["10.0.0.2", "format", "last_reserved_ip.0", "lock", "owner:a:eth0"]
        );
    }

    #[test]
    fn an_adding_file_is_held_while_its_add_runs() {
        let d = tempfile::tempdir().unwrap();
        let o = Owner::new("c", "eth0");
        let adding = Adding::begin(d.path(), "n", &o).unwrap();
        let s = Store::open(d.path(), "n").unwrap();
        assert_eq!(s.scan().unwrap().adding, std::slice::from_ref(&o));
        drop(adding);
        let scan = s.scan().unwrap();
        assert!(scan.adding.is_empty() && scan.stale_adding.is_empty());
    }

    #[test]
    fn an_old_directory_is_indexed_on_first_use() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("n");
        fs::create_dir(&dir).unwrap();
        symlink("a eth0", dir.join("10.0.0.2")).unwrap();
        symlink("a eth0", dir.join("fd00::2")).unwrap();
        symlink("b eth0", dir.join("10.0.0.3")).unwrap();
        let s = Store::open(d.path(), "n").unwrap();
        let mut a = s.owned(&Owner::new("a", "eth0")).unwrap();
        a.sort();
        assert_eq!(
            a,
            ["10.0.0.2".parse::<IpAddr>().unwrap(), "fd00::2".parse().unwrap()]
        );
        assert_eq!(s.release_owner(&Owner::new("b", "eth0")).unwrap().len(), 1);
        assert!(s.path(FORMAT).exists());
    }

    #[test]
    fn the_lock_file_is_never_followed() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("n");
        fs::create_dir(&dir).unwrap();
        let victim = d.path().join("victim");
        symlink(&victim, dir.join(LOCK)).unwrap();
        assert!(matches!(Store::open(d.path(), "n"), Err(IpamError::Io(..))));
        assert!(!victim.exists());
    }

    #[test]
    fn a_caller_that_must_not_wait_is_told_the_lock_is_busy() {
        let d = tempfile::tempdir().unwrap();
        assert!(Store::try_open_existing(d.path(), "n").unwrap().is_none());
        let held = Store::open(d.path(), "n").unwrap();
        assert!(matches!(
            Store::try_open_existing(d.path(), "n"),
            Err(IpamError::Busy(_))
        ));
        drop(held);
        assert!(Store::try_open_existing(d.path(), "n").unwrap().is_some());
    }
}
