//! `cbrnet-routed doctor`: the node checked against what the daemon, given the same flags, should
//! have made of it; one line per check (`ok`, `warn`, `FAIL`), what was found, and for anything
//! not ok the one thing to do about it. It changes nothing: every read is a dump, a file read or
//! a lock probed without being kept.
//!
//! The desired state is the daemon's own: [`crate::backend::choose`] over the store's live
//! leases, [`crate::backend::routes::plan`] and [`crate::backend::vxlan::plan`] against what the
//! kernel has, the subnet file's reader, the IPAM's reservations and the reclaim's view of the CNI
//! config directory. A check that cannot be made is a `warn` saying why.

mod cni;
mod node;
mod peers;
pub mod probe;

use crate::cli::Config;
use crate::instance;
use cbrnet_bridge::Nl;
use cbrnet_ipam::cluster::record::Listing;
use cbrnet_ipam::cluster::store::{AnyStore, LeaseStore};
use cbrnet_ipam::cluster::Lease;
use cbrnet_ipam::SubnetFile;
use ipnetwork::IpNetwork;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// How long the store may take to answer before its checks say it did not.
const STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// A check's verdict. Written as the text output writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Status {
    #[serde(rename = "ok")]
    Ok,
    #[serde(rename = "warn")]
    Warn,
    #[serde(rename = "FAIL")]
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        }
    }
}

/// One check: its name, verdict, what was found, and what to do when it is not ok.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub check: String,
    pub status: Status,
    pub found: String,
    pub fix: String,
}

impl Check {
    pub fn ok(check: impl Into<String>, found: impl Into<String>) -> Check {
        Check {
            check: check.into(),
            status: Status::Ok,
            found: found.into(),
            fix: String::new(),
        }
    }
    pub fn warn(check: impl Into<String>, found: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            check: check.into(),
            status: Status::Warn,
            found: found.into(),
            fix: fix.into(),
        }
    }
    pub fn fail(check: impl Into<String>, found: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            check: check.into(),
            status: Status::Fail,
            found: found.into(),
            fix: fix.into(),
        }
    }
    /// The check could not be made: a warning that says why.
    pub fn unknown(check: impl Into<String>, why: impl std::fmt::Display) -> Check {
        Check::warn(
            check,
            format!("not checked: {why}"),
            "run doctor as root, on the node, with the daemon's flags and environment",
        )
    }
}

/// What `doctor` was asked besides the daemon's flags.
#[derive(Debug, Clone)]
pub struct Options {
    pub probe: bool,
    pub cni_bin_dirs: Vec<PathBuf>,
}

/// What the checks share, read once.
pub(crate) struct Facts<'a> {
    pub cfg: &'a Config,
    /// The rtnetlink socket, if one could be opened.
    pub nl: Result<Nl, String>,
    /// The store's listing.
    pub listing: Result<Listing, String>,
    /// The subnet file.
    pub file: Result<SubnetFile, String>,
    /// Whether the daemon's lock is held (`None`: no lock file).
    pub locked: Result<Option<bool>, String>,
    /// What the daemon published of its flags, if it runs and did.
    pub settings: Option<instance::Settings>,
    /// This node's addresses (of both families, not link-local) with their links.
    pub links: Result<Vec<(IpNetwork, u32)>, String>,
}

impl Facts<'_> {
    /// This node's live lease in the store, if it has one.
    pub fn own_lease(&self) -> Option<&Lease> {
        let now = cbrnet_ipam::cluster::record::unix_now();
        let mine = self.listing.as_ref().ok()?.leases.iter().map(|v| &v.lease);
        mine.filter(|l| l.node_name == self.cfg.args.node_name)
            .max_by_key(|l| (!l.expired(now), l.expires))
    }

    /// The subnets the node serves, its first family's first: its lease's, else its subnet
    /// file's; none if it has neither.
    pub fn subnets(&self) -> Vec<IpNetwork> {
        match (self.own_lease(), &self.file) {
            (Some(l), _) => crate::setup::served(self.cfg, l),
            (None, Ok(f)) => std::iter::once(f.subnet).chain(f.ipv6_subnet).collect(),
            (None, Err(_)) => Vec::new(),
        }
    }
}

async fn read_store(cfg: &Config) -> Result<Listing, String> {
    let store = cfg.args.store.clone();
    let what = crate::cli::store_flag(&store);
    let go = async {
        let s = AnyStore::open_with(&store, &cfg.args.etcd_prefix, false, &cfg.etcd_auth)
            .await
            .map_err(|e| e.to_string())?;
        s.list().await.map_err(|e| e.to_string())
    };
    match tokio::time::timeout(STORE_TIMEOUT, go).await {
        Ok(r) => r.map_err(|e| format!("reading the store {what}: {e}")),
        Err(_) => Err(format!(
            "the store {what} did not answer within {}s",
            STORE_TIMEOUT.as_secs()
        )),
    }
}

/// Runs every check; must be called inside a tokio runtime (the rtnetlink socket's task).
pub async fn run(cfg: &Config, opts: &Options) -> Vec<Check> {
    let lock = instance::lock_path(&cfg.args.subnet_file);
    let locked = instance::is_locked(&lock).map_err(|e| format!("probing {}: {e}", lock.display()));
    let settings = match locked {
        Ok(Some(true)) => instance::Settings::read(&instance::settings_path(&cfg.args.subnet_file)),
        _ => None,
    };
    let nl = Nl::connect().map_err(|e| e.to_string());
    let links = match &nl {
        Ok(nl) => crate::backend::routes::connected_links(&nl.handle)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.clone()),
    };
    let facts = Facts {
        cfg,
        nl,
        listing: read_store(cfg).await,
        file: SubnetFile::read(&cfg.args.subnet_file).map_err(|e| e.to_string()),
        locked,
        settings,
        links,
    };
    let mut out = Vec::new();
    out.extend(node::daemon(&facts, &lock));
    out.push(node::lease(&facts));
    out.push(node::subnet_file(&facts));
    out.push(node::bridge(&facts).await);
    out.extend(node::forwarding(&facts).await);
    out.push(node::masquerade(&facts));
    out.push(node::vxlan_device(&facts).await);
    let desired = peers::checks(&facts, &mut out).await;
    out.push(node::mtu(&facts).await);
    out.extend(cni::config(&facts));
    out.push(cni::plugins(&facts, &opts.cni_bin_dirs));
    out.extend(cni::ipam(&facts));
    if opts.probe {
        out.extend(peers::probe(&facts, desired.as_ref()));
    }
    out
}

/// 0 when nothing fails, 1 when a check fails.
pub fn exit_code(checks: &[Check]) -> i32 {
    i32::from(checks.iter().any(|c| c.status == Status::Fail))
}

/// `N ok, N warn, N FAIL`.
pub fn summary(checks: &[Check]) -> String {
    let n = |s: Status| checks.iter().filter(|c| c.status == s).count();
    format!(
        "{} ok, {} warn, {} FAIL",
        n(Status::Ok),
        n(Status::Warn),
        n(Status::Fail)
    )
}

/// One line per check, `fix:` after what was found when it is not ok; the summary last.
pub fn render_text(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.check.len()).max().unwrap_or(0).min(24);
    let mut s = String::new();
    for c in checks {
        s += &format!("{:<4}  {:<width$}  {}", c.status.as_str(), c.check, c.found);
        if c.status != Status::Ok && !c.fix.is_empty() {
            s += &format!("  => fix: {}", c.fix);
        }
        s.push('\n');
    }
    s += &format!("{}\n", summary(checks));
    s
}

/// The checks as a JSON list of `{check, status, found, fix}`.
pub fn render_json(checks: &[Check]) -> String {
    serde_json::to_string_pretty(checks).unwrap_or_else(|_| "[]".into()) + "\n"
}

/// A list of at most `n` items, then how many more.
pub(crate) fn some<T: std::fmt::Display>(items: &[T], n: usize) -> String {
    let mut s = items
        .iter()
        .take(n)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join("; ");
    if items.len() > n {
        s += &format!("; and {} more", items.len() - n);
    }
    s
}

/// A duration for people: `2d3h`, `5h12m`, `4m10s`, `12s`.
pub(crate) fn human(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match () {
        _ if d > 0 => format!("{d}d{h}h"),
        _ if h > 0 => format!("{h}h{m}m"),
        _ if m > 0 => format!("{m}m{s}s"),
        _ => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_one_line_per_check_with_the_fix_and_exit_follows_the_worst() {
        let checks = vec![
            Check::ok("bridge", "cbr0 up"),
            Check::warn("ipam.pods", "95% full", "more room"),
            Check::fail("routes", "1 missing", "restart the daemon"),
        ];
        let t = render_text(&checks);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(
            lines[0].starts_with("ok    bridge") && !lines[0].contains("fix"),
            "{t}"
        );
        assert!(lines[2].starts_with("FAIL  routes") && lines[2].ends_with("=> fix: restart the daemon"));
        assert_eq!(lines[3], "1 ok, 1 warn, 1 FAIL");
        assert_eq!(exit_code(&checks), 1);
        assert_eq!(exit_code(&checks[..2]), 0);
        let j: serde_json::Value = serde_json::from_str(&render_json(&checks)).unwrap();
        assert_eq!(j[2]["status"], "FAIL");
        assert_eq!(j[1]["status"], "warn");
        assert_eq!(j[0]["fix"], "");
        assert_eq!(j[2]["found"], "1 missing");
    }

    #[test]
    fn lists_are_cut_and_durations_read() {
        assert_eq!(some(&[1, 2, 3], 2), "1; 2; and 1 more");
        assert_eq!(some(&[1], 2), "1");
        assert_eq!(human(59), "59s");
        assert_eq!(human(3 * 3600 + 120), "3h2m");
        assert_eq!(human(86400 + 3600), "1d1h");
    }
}
