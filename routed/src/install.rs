//! `cbrnet-routed install-cni`: puts the CNI plugins and the network config where a runtime looks
//! for them, each file atomically (written beside its place, then renamed over it), so a package
//! script or an init container can run it at any time.

use crate::cli::InstallCniArgs;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The network config every node gets (see install/ in the source tree).
pub const CONFLIST: &str = include_str!("../../install/10-cbrnet.conflist");
pub const CONFLIST_NAME: &str = "10-cbrnet.conflist";
pub const PLUGINS: [&str; 2] = ["cbrnet", "cbrnet-ipam"];

/// Where the plugins are taken from: `--from`, else next to this program, else Debian's
/// /usr/lib/cni.
fn source_dir(from: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(d) = from {
        return Ok(d.to_owned());
    }
    let here = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    here.into_iter()
        .chain([PathBuf::from("/usr/lib/cni")])
        .find(|d| PLUGINS.iter().all(|p| d.join(p).is_file()))
        .ok_or_else(|| {
            "cbrnet and cbrnet-ipam are neither next to cbrnet-routed nor in /usr/lib/cni; give --from".into()
        })
}

/// Writes `bytes` to `dir/name` with `mode`: to a temp file in `dir`, synced, then renamed.
fn put(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<PathBuf, String> {
    let what = |e: std::io::Error| format!("{}: {e}", dir.join(name).display());
    fs::create_dir_all(dir).map_err(what)?;
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let dst = dir.join(name);
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, &dst)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        what(e)
    })?;
    Ok(dst)
}

/// Installs the plugins into `--bin-dir` and the conflist into `--conf-dir`; returns what it wrote.
pub fn install_cni(a: &InstallCniArgs) -> Result<Vec<PathBuf>, String> {
    let from = source_dir(a.from.as_deref())?;
    let mut wrote = Vec::new();
    for p in PLUGINS {
        let src = from.join(p);
        let bytes = fs::read(&src).map_err(|e| format!("{}: {e}", src.display()))?;
        wrote.push(put(&a.bin_dir, p, &bytes, 0o755)?);
    }
    wrote.push(put(&a.conf_dir, CONFLIST_NAME, CONFLIST.as_bytes(), 0o644)?);
    Ok(wrote)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_plugins_and_the_conflist_atomically() {
        let d = tempfile::tempdir().unwrap();
        let from = d.path().join("from");
        fs::create_dir(&from).unwrap();
        for p in PLUGINS {
            fs::write(from.join(p), format!("binary {p}")).unwrap();
        }
        let a = InstallCniArgs {
            bin_dir: d.path().join("bin"),
            conf_dir: d.path().join("net.d"),
            from: Some(from),
        };
        let wrote = install_cni(&a).unwrap();
        assert_eq!(wrote.len(), 3);
        assert_eq!(
            fs::read_to_string(a.bin_dir.join("cbrnet")).unwrap(),
            "binary cbrnet"
        );
        let mode = fs::metadata(a.bin_dir.join("cbrnet-ipam"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        let conf: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(a.conf_dir.join(CONFLIST_NAME)).unwrap()).unwrap();
        assert_eq!(
            conf["cniVersion"], "1.0.0",
            "every supported runtime speaks 1.0.0"
        );
        assert_eq!(conf["plugins"][0]["type"], "cbrnet");
        // again: replaced in place, no temp file left
        install_cni(&a).unwrap();
        assert_eq!(fs::read_dir(&a.bin_dir).unwrap().count(), 2);
        assert_eq!(fs::read_dir(&a.conf_dir).unwrap().count(), 1);
        let missing = InstallCniArgs {
            from: Some(d.path().join("nowhere")),
            ..a
        };
        assert!(install_cni(&missing).unwrap_err().contains("nowhere"));
    }
}
