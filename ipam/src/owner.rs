//! The node's state that decides where pods' traffic goes (the `file:` lease store, the subnet
//! file, IPAM reservations) is written by root only: whoever can write there can reroute a node's
//! pods. Directories are made 0755, files 0644 (locks 0600), whatever the umask; a directory or
//! file that others can write, or that belongs to another user, is refused by its readers.

use std::fs::{DirBuilder, Metadata};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;

/// Mode of the directories made here.
pub const DIR_MODE: u32 = 0o755;
/// Mode of records and the subnet file.
pub const FILE_MODE: u32 = 0o644;
/// Mode of lock files.
pub const LOCK_MODE: u32 = 0o600;

/// Creates `dir` and its missing parents, each 0755 (or tighter, by the umask).
pub fn create_dir_all(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Writes `bytes` to `path` atomically (a temp file beside it, renamed into place), mode 0644
/// whatever the umask, creating its directory if needed: a reader sees the old file or the new
/// one, never a part.
pub fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        create_dir_all(dir)?;
    }
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    let r = write();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// Why `path` may not be trusted, if it may not: others may write it (its mode), or it belongs
/// to a user other than root or this process's.
pub fn untrusted(path: &Path, meta: &Metadata) -> Option<String> {
    let mode = meta.mode() & 0o7777;
    if mode & 0o002 != 0 {
        return Some(format!(
            "{} is writable by others (mode {mode:04o}): anyone could reroute this node's pods; \
             make it 0755 (a directory) or 0644 (a file), owned by root",
            path.display()
        ));
    }
    let uid = meta.uid();
    if uid != 0 && uid != nix::unistd::geteuid().as_raw() {
        return Some(format!(
            "{} belongs to uid {uid}, not root (mode {mode:04o}): that user could reroute this node's pods",
            path.display()
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn directories_are_0755_whatever_the_umask_allows_and_loose_modes_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let deep = d.path().join("a/b");
        create_dir_all(&deep).unwrap();
        for p in [d.path().join("a"), deep.clone()] {
            let m = std::fs::metadata(&p).unwrap();
            assert_eq!(m.mode() & 0o7777 & !DIR_MODE, 0, "{:o}", m.mode());
            assert_eq!(untrusted(&p, &m), None);
        }
        std::fs::set_permissions(&deep, std::fs::Permissions::from_mode(0o777)).unwrap();
        let why = untrusted(&deep, &std::fs::metadata(&deep).unwrap()).unwrap();
        assert!(why.contains("a/b is writable by others (mode 0777)"), "{why}");
        // group-writable is the admin's choice (a group of root's), not refused
        std::fs::set_permissions(&deep, std::fs::Permissions::from_mode(0o775)).unwrap();
        assert_eq!(untrusted(&deep, &std::fs::metadata(&deep).unwrap()), None);
    }
}
