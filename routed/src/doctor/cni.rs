//! What the container runtime sees: the network config, the plugins, and each `cbrnet`
//! network's addresses (in use, free, held by pods that are gone).

use super::{human, some, Check, Facts};
use crate::reclaim;
use cbrnet_bridge::port;
use cbrnet_ipam::node::reservations::{peek, Reserved};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// The plugins cbrnet installs.
const PLUGINS: [&str; 2] = ["cbrnet", "cbrnet-ipam"];
/// How long `PLUGIN --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(2);
/// Above this share of its pool in use, a network is close to full.
const FULL: f64 = 0.9;
const INSTALL: &str = "cbrnet-routed install-cni";

/// A config file as a runtime reads it: its network name, its cniVersion, whether it uses the
/// `cbrnet` plugin.
type Conf = Result<(String, String, bool), String>;

fn read_config(f: &Path) -> Conf {
    let meta = std::fs::metadata(f).map_err(|e| e.to_string())?;
    if !meta.is_file() || meta.len() > 1024 * 1024 {
        return Err("not a regular file of at most 1 MiB".into());
    }
    let doc: Value = serde_json::from_slice(&std::fs::read(f).map_err(|e| e.to_string())?)
        .map_err(|e| format!("not JSON: {e}"))?;
    let name = doc.get("name").and_then(Value::as_str).unwrap_or("").to_string();
    let version = doc
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let plugins: Vec<&Value> = match doc.get("plugins") {
        Some(Value::Array(p)) => p.iter().collect(),
        _ => vec![&doc],
    };
    let cbrnet = plugins
        .iter()
        .any(|p| p.get("type").and_then(Value::as_str) == Some("cbrnet"));
    Ok((name, version, cbrnet))
}

/// The network config: one in the directory uses `cbrnet`, it is the one runtimes take, and its
/// `cniVersion` is one cbrnet speaks.
pub fn config(f: &Facts<'_>) -> Vec<Check> {
    let dir = &f.cfg.args.cni_conf_dir;
    let files = match reclaim::config_files(dir) {
        Ok(files) => files,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return vec![Check::fail(
                "cni.config",
                format!("{} does not exist: runtimes start no pods", dir.display()),
                format!("{INSTALL} --conf-dir {}", dir.display()),
            )]
        }
        Err(e) => {
            return vec![Check::unknown(
                "cni.config",
                format!("reading {}: {e}", dir.display()),
            )]
        }
    };
    let read: Vec<(PathBuf, Conf)> = files.into_iter().map(|p| (p.clone(), read_config(&p))).collect();
    let mut out = Vec::new();
    let bad: Vec<String> = read
        .iter()
        .filter_map(|(p, r)| r.as_ref().err().map(|e| format!("{}: {e}", p.display())))
        .collect();
    let first = read.iter().find(|(_, r)| r.is_ok());
    let ours = read
        .iter()
        .find(|(_, r)| r.as_ref().is_ok_and(|(_, _, cbrnet)| *cbrnet));
    out.push(match (ours, first) {
        (None, _) => Check::fail(
            "cni.config",
            format!("no network config in {} uses cbrnet", dir.display()),
            format!("{INSTALL} --conf-dir {}", dir.display()),
        ),
        (Some((p, Ok((name, version, _)))), Some((first, _))) => {
            if let Err(e) = cni_spec::version::Version::parse(version) {
                Check::fail(
                    "cni.config",
                    format!("{} (network {name}): {}", p.display(), e.msg),
                    "\"cniVersion\": \"1.0.0\" (every runtime cbrnet was tested with takes it; 1.1.0 where the runtime speaks it)",
                )
            } else if first != p {
                Check::warn(
                    "cni.config",
                    format!(
                        "{} (network {name}, cniVersion {version}) uses cbrnet, but runtimes take {} first",
                        p.display(),
                        first.display()
                    ),
                    "rename the configs so that cbrnet's sorts first, or remove the other",
                )
            } else {
                Check::ok(
                    "cni.config",
                    format!("{} (network {name}, cniVersion {version}) uses cbrnet", p.display()),
                )
            }
        }
        _ => Check::unknown("cni.config", "unreadable"),
    });
    if !bad.is_empty() {
        out.push(Check::warn(
            "cni.config.files",
            format!("not network configs: {}", some(&bad, 3)),
            "fix or remove them: a runtime may fail on them",
        ));
    }
    out
}

/// The version `PLUGIN --version` prints (`CNI cbrnet plugin v0.1.0`), within a timeout.
fn plugin_version(path: &Path) -> Result<String, String> {
    let mut child = Command::new(path)
        .arg("--version")
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("running it: {e}"))?;
    let t = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if t.elapsed() < VERSION_TIMEOUT => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "no answer to --version in {}s",
                    VERSION_TIMEOUT.as_secs()
                ));
            }
        }
    }
    let mut out = String::new();
    if let Some(mut s) = child.stdout.take() {
        use std::io::Read;
        let _ = s.by_ref().take(4096).read_to_string(&mut out);
    }
    out.split_whitespace()
        .find_map(|w| {
            w.strip_prefix('v')
                .filter(|v| v.starts_with(|c: char| c.is_ascii_digit()))
        })
        .map(str::to_string)
        .ok_or_else(|| {
            format!(
                "--version printed no version: {:?}",
                out.lines().next().unwrap_or("")
            )
        })
}

/// The plugins where runtimes look, and of the daemon's version.
pub fn plugins(f: &Facts<'_>, dirs: &[PathBuf]) -> Check {
    let want = f
        .settings
        .as_ref()
        .map_or(env!("CARGO_PKG_VERSION").to_string(), |s| s.version.clone());
    let mut found = Vec::new();
    let mut wrong = Vec::new();
    for dir in dirs {
        let mut here = Vec::new();
        for p in PLUGINS {
            let path = dir.join(p);
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => match plugin_version(&path) {
                    Ok(v) if v == want => here.push(format!("{p} {v}")),
                    Ok(v) => wrong.push(format!("{} is {v}, the daemon {want}", path.display())),
                    Err(e) => wrong.push(format!("{}: {e}", path.display())),
                },
                Ok(_) => wrong.push(format!("{} is not an executable file", path.display())),
                Err(_) => {}
            }
        }
        if !here.is_empty() {
            found.push(format!("{}: {}", dir.display(), here.join(", ")));
        }
    }
    let dirs_text = dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let complete = dirs.iter().any(|d| {
        PLUGINS.iter().all(|p| {
            found
                .iter()
                .any(|f| f.starts_with(&d.display().to_string()) && f.contains(&format!("{p} ")))
        })
    });
    if !wrong.is_empty() {
        Check::fail(
            "cni.plugins",
            wrong.join("; "),
            format!("{INSTALL} (from the daemon's package) puts the plugins of its version in place"),
        )
    } else if !complete {
        Check::fail(
            "cni.plugins",
            format!("cbrnet and cbrnet-ipam are not both in one of {dirs_text}"),
            format!("{INSTALL} --bin-dir /opt/cni/bin"),
        )
    } else {
        Check::ok("cni.plugins", found.join("; "))
    }
}

/// Each `cbrnet` network of this node: addresses in use, free, held by pods that are gone, and
/// the pool's fill level.
pub fn ipam(f: &Facts<'_>) -> Vec<Check> {
    let (nets, _) = reclaim::networks(&f.cfg.args.cni_conf_dir);
    nets.iter()
        .filter(|n| reclaim::is_ours(n, &f.cfg.args.subnet_file).is_ok())
        .map(|n| network(f, n))
        .collect()
}

/// A count of addresses as people read it: exact up to a billion, beyond (an IPv6 /64) in
/// scientific notation.
fn amount(n: u128) -> String {
    if n < 1_000_000_000 {
        n.to_string()
    } else {
        format!("{:.1e}", n as f64)
    }
}

fn network(f: &Facts<'_>, net: &reclaim::CbrnetNetwork) -> Check {
    let check = format!("ipam.{}", net.name);
    let pools = match net.ipam.pools() {
        Ok(p) => p,
        Err(e) => return Check::unknown(check, format!("its pool: {e}")),
    };
    // The pool of the first family: one address of each family per pod.
    let Some(set) = pools.range_sets.first() else {
        return Check::unknown(check, "no range");
    };
    let capacity: u128 = set.iter().map(|r| r.capacity()).sum();
    let pool = set
        .iter()
        .map(|r| r.subnet.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let data_dir = net.ipam.data_dir();
    let scan = match peek(data_dir, &net.name) {
        Ok(Some(s)) => s,
        Ok(None) => return Check::ok(check, format!("{pool}: 0 in use, {} free", amount(capacity))),
        Err(e) => {
            return Check::unknown(
                check,
                format!("reading {}: {e}", data_dir.join(&net.name).display()),
            )
        }
    };
    let in_pool: Vec<&Reserved> = scan
        .reservations
        .iter()
        .filter(|r| set.iter().any(|range| range.usable(r.ip)))
        .collect();
    let used = in_pool.len() as u128;
    let free = capacity.saturating_sub(used);
    let fill = used as f64 / capacity.max(1) as f64;
    let gone: Vec<&Reserved> = scan
        .reservations
        .iter()
        .filter(|r| {
            !scan.adding.contains(&r.owner)
                && !port::exists(&port::host_veth_name(
                    &net.name,
                    &r.owner.container_id,
                    &r.owner.ifname,
                ))
        })
        .collect();
    let now = SystemTime::now();
    let age = |r: &Reserved| now.duration_since(r.since).unwrap_or_default();
    let reclaim_after = net.ipam.reclaim_after().ok().flatten();
    // The daemon sweeps every resync: a reservation past reclaimAfter by more than two sweeps
    // is not being reclaimed.
    let overdue_after = reclaim_after.map(|a| a + 2 * f.cfg.args.resync_interval + Duration::from_secs(1));
    let overdue: Vec<&&Reserved> = gone
        .iter()
        .filter(|r| overdue_after.is_some_and(|o| age(r) > o))
        .collect();
    let show = |rs: &[&&Reserved]| -> Vec<String> {
        rs.iter()
            .map(|r| format!("{} ({}, {} old)", r.ip, r.owner, human(age(r).as_secs())))
            .collect()
    };
    let mut found = format!(
        "{pool}: {used} in use, {} free of {} ({:.0}%)",
        amount(free),
        amount(capacity),
        fill * 100.0
    );
    if !gone.is_empty() {
        let all: Vec<&&Reserved> = gone.iter().collect();
        found += &format!(
            "; {} reserved by pods that no longer exist: {}",
            gone.len(),
            some(&show(&all), 5)
        );
    }
    if !scan.stray.is_empty() {
        found += &format!("; {} stray entries: {}", scan.stray.len(), some(&scan.stray, 3));
    }
    let dir = data_dir.join(&net.name);
    if !overdue.is_empty() {
        return Check::fail(
            check,
            found,
            format!(
                "held past reclaimAfter {}: the daemon's reclaim is not taking them back (is it running with --cni-conf-dir {}?); by hand: rm {}/<address> once its pod is surely gone",
                reclaim_after.map_or("-".into(), |a| human(a.as_secs())),
                f.cfg.args.cni_conf_dir.display(),
                dir.display()
            ),
        );
    }
    if fill > FULL {
        return Check::warn(
            check,
            found,
            "the pool is nearly full: a longer --subnet-len gives each node fewer pods; move pods or add nodes",
        );
    }
    if !gone.is_empty() && reclaim_after.is_none() {
        return Check::warn(
            check,
            found,
            "reclaim is off (ipam.reclaimAfter \"0\"): the runtime's GC or a DEL frees them",
        );
    }
    if !gone.is_empty() {
        return Check::warn(
            check,
            found,
            format!(
                "waiting for reclaim (after {}): nothing to do unless it stays",
                reclaim_after.map_or("-".into(), |a| human(a.as_secs()))
            ),
        );
    }
    if !scan.stray.is_empty() {
        return Check::warn(
            check,
            found,
            format!("the daemon's reclaim removes stray entries of {}", dir.display()),
        );
    }
    Check::ok(check, found)
}

#[cfg(test)]
mod tests {
    use super::amount;

    #[test]
    fn counts_beyond_a_billion_are_written_short() {
        assert_eq!(amount(253), "253");
        assert_eq!(amount(999_999_999), "999999999");
        // an IPv6 /64 less its network address and gateway
        assert_eq!(amount((1u128 << 64) - 2), "1.8e19");
    }
}
