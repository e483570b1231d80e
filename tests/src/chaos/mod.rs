//! `cbrnet-lab chaos`: the lab under faults drawn at random from a seed, several at a time, with
//! the cluster's promises checked every 200 ms. Rounds of 1 to 3 overlapping faults: each round
//! injects its faults, heals them, and then waits for the cluster to converge within a bound
//! derived from the lease TTL; safety is checked all along, leaks at the end.

pub mod checks;
pub mod faults;
pub mod rng;
pub mod world;

use crate::lab::StoreKind;
use faults::{Fault, Kind};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use world::World;

/// How often the invariants are checked.
pub const TICK: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub struct Config {
    pub nodes: usize,
    pub pods: usize,
    pub duration: Duration,
    pub seed: u64,
    pub store: StoreKind,
    pub etcd_members: usize,
    /// The daemons' lease TTL in seconds (short, so that faults past the TTL are quick).
    pub lease_ttl: u64,
    /// The daemons' `--backend` (None: their default).
    pub backend: Option<String>,
    /// Namespace tag (unique per run).
    pub tag: String,
}

impl Config {
    /// The command that replays this run.
    pub fn replay(&self) -> String {
        let store = match self.store {
            StoreKind::File => "file".to_string(),
            StoreKind::Etcd => format!("etcd --etcd-members {}", self.etcd_members),
        };
        let backend = match &self.backend {
            Some(b) => format!(" --backend {b}"),
            None => String::new(),
        };
        format!(
            "cbrnet-lab chaos --nodes {} --pods {} --duration {}s --seed {} --lease-ttl {}s --store {store}{backend}",
            self.nodes,
            self.pods,
            self.duration.as_secs(),
            self.seed,
            self.lease_ttl
        )
    }

    /// How long the cluster may take to converge once the faults of a round are healed: a
    /// restarted daemon may wait out its old lease (one TTL) before it takes its name back, its
    /// peers see the record within a resync (1 s), and a pod path needs its neighbours.
    pub fn bound(&self) -> Duration {
        Duration::from_secs(2 * self.lease_ttl + 10)
    }

    /// How long a route may disagree with the store before it is a violation.
    pub fn grace(&self) -> Duration {
        Duration::from_secs(5)
    }
}

/// What a run saw.
#[derive(Debug, Default)]
pub struct Report {
    pub faults: BTreeMap<&'static str, u64>,
    /// Faults drawn that could not be made, by kind.
    pub skipped: BTreeMap<&'static str, u64>,
    pub checks: u64,
    pub rounds: u64,
    /// Per fault kind: time from the last heal of its round to convergence.
    pub convergence: BTreeMap<&'static str, Vec<Duration>>,
    pub violations: Vec<checks::Violation>,
    pub elapsed: Duration,
    /// Where the daemons' logs were kept, after a violation.
    pub logs: Option<std::path::PathBuf>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let k = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[k.min(sorted.len() - 1)]
}

impl Report {
    pub fn print(&self, cfg: &Config) {
        println!(
            "\nchaos: seed {} ({} rounds in {:.0?})",
            cfg.seed, self.rounds, self.elapsed
        );
        println!("faults injected: {}", self.faults.values().sum::<u64>());
        for (k, n) in &self.faults {
            println!("  {k:<28} {n}");
        }
        if !self.skipped.is_empty() {
            println!("faults drawn but not injected: {:?}", self.skipped);
        }
        println!("checks made: {}", self.checks);
        println!(
            "convergence after heal (bound {:?}): p50 / p99 / max",
            cfg.bound()
        );
        for (k, v) in &self.convergence {
            let mut v = v.clone();
            v.sort();
            println!(
                "  {k:<28} {:>8.2?} {:>8.2?} {:>8.2?}  (n={})",
                percentile(&v, 0.5),
                percentile(&v, 0.99),
                v.last().copied().unwrap_or_default(),
                v.len()
            );
        }
        println!("violations: {}", self.violations.len());
        for v in &self.violations {
            println!("  at {:.1?}: {}: {}", v.at, v.what, v.evidence);
        }
        if !self.violations.is_empty() {
            if let Some(d) = &self.logs {
                println!("the daemons' logs and routes: {}", d.display());
            }
            println!("seed {}; replay: {}", cfg.seed, cfg.replay());
        }
    }
}

/// A fault of the current round and where it is in its life.
struct Live {
    fault: Fault,
    injected: Option<Instant>,
    healed: Option<Instant>,
    /// It could not be made.
    skipped: bool,
}

/// Builds the lab, runs the chaos for `cfg.duration`, checks for leaks, tears everything down;
/// the report. Runs on a thread inside the lab's underlay namespace, from which the store is
/// reached.
pub fn run(cfg: &Config) -> Report {
    println!(
        "chaos: {} nodes, {} pods each, {:?}, store {:?} ({} etcd members), lease TTL {}s, backend {}, seed {}",
        cfg.nodes,
        cfg.pods,
        cfg.duration,
        cfg.store,
        if cfg.store == StoreKind::Etcd {
            cfg.etcd_members
        } else {
            0
        },
        cfg.lease_ttl,
        cfg.backend.as_deref().unwrap_or("the daemon's default"),
        cfg.seed
    );
    let world = World::build(cfg);
    let underlay = world.lab.underlay.path();
    crate::in_netns(&underlay, move || {
        let mut world = world;
        let report = chaos(&mut world, cfg);
        drop(world);
        report
    })
}

fn chaos(w: &mut World, cfg: &Config) -> Report {
    let mut dice = rng::Dice::new(cfg.seed);
    let kinds = Kind::available(w.member_count());
    let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
    println!("fault kinds: {}", names.join(", "));
    let mut report = Report::default();
    let mut safety = checks::Safety::new(cfg.grace(), cfg.lease_ttl);
    let started = Instant::now();
    // The lab starts converged, or the run proves nothing.
    if let Some(v) = settle(w, cfg, &mut safety, started, &mut report, &[]) {
        report.violations.push(v);
    }
    while report.violations.is_empty() && started.elapsed() < cfg.duration {
        report.rounds += 1;
        let drawn = faults::draw(
            &mut dice,
            &kinds,
            w.lab.nodes.len(),
            w.member_count(),
            cfg.lease_ttl,
        );
        let mut live: Vec<Live> = drawn
            .into_iter()
            .map(|fault| Live {
                fault,
                injected: None,
                healed: None,
                skipped: false,
            })
            .collect();
        let round = Instant::now();
        // Inject and heal on schedule, checking all along.
        while report.violations.is_empty() && live.iter().any(|l| l.healed.is_none()) {
            for l in live.iter_mut() {
                let since = round.elapsed();
                if l.injected.is_none() && since >= l.fault.start {
                    // A fault that cannot be made (a store write while another fault of the
                    // round holds the store down) is skipped, and counted as such.
                    match faults::inject(w, &mut dice, &mut l.fault) {
                        Ok(what) => {
                            println!("[{:>7.1?}] {}: {what}", started.elapsed(), l.fault.kind.name());
                            *report.faults.entry(l.fault.kind.name()).or_default() += 1;
                            l.injected = Some(Instant::now());
                        }
                        Err(faults::Failure::NotMade(e)) => {
                            println!(
                                "[{:>7.1?}] {}: not injected: {e}",
                                started.elapsed(),
                                l.fault.kind.name()
                            );
                            *report.skipped.entry(l.fault.kind.name()).or_default() += 1;
                            l.injected = Some(Instant::now());
                            l.healed = Some(Instant::now());
                            l.skipped = true;
                        }
                        Err(faults::Failure::Broke(what, e)) => {
                            report.violations.push(checks::Violation {
                                at: started.elapsed(),
                                what,
                                evidence: format!("{}: {e}", l.fault.kind.name()),
                            });
                            l.injected = Some(Instant::now());
                            l.healed = Some(Instant::now());
                            l.skipped = true;
                        }
                    }
                }
                if let (Some(t), None) = (l.injected, l.healed) {
                    if t.elapsed() >= l.fault.hold {
                        // Undoing may need the store, which another fault of the round may hold
                        // down: tried again each tick, for at most the convergence bound.
                        match faults::heal(w, &l.fault) {
                            Ok(()) => l.healed = Some(Instant::now()),
                            Err(e) if t.elapsed() > l.fault.hold + cfg.bound() => {
                                report.violations.push(checks::Violation {
                                    at: started.elapsed(),
                                    what: "heal-failed",
                                    evidence: format!("{}: {e}", l.fault.kind.name()),
                                });
                                l.healed = Some(Instant::now());
                            }
                            Err(_) => {}
                        }
                    }
                }
            }
            tick(w, &mut safety, started, &mut report);
        }
        if !report.violations.is_empty() {
            break;
        }
        let healed: Vec<(&'static str, Instant)> = live
            .iter()
            .filter(|l| !l.skipped)
            .filter_map(|l| Some((l.fault.kind.name(), l.healed?)))
            .collect();
        if let Some(v) = settle(w, cfg, &mut safety, started, &mut report, &healed) {
            report.violations.push(v);
        }
    }
    if !report.violations.is_empty() {
        report.logs = keep_logs(w, cfg);
    }
    if report.violations.is_empty() {
        // Leftovers the daemons clear by themselves (a vanished pod's address) get a reclaim
        // period and a few resyncs.
        let t = Instant::now();
        let leak = loop {
            match checks::leaks(w) {
                None => break None,
                Some(e) if t.elapsed() > Duration::from_secs(6) => break Some(e),
                Some(_) => std::thread::sleep(TICK),
            }
        };
        if let Some(e) = leak {
            report.violations.push(checks::Violation {
                at: started.elapsed(),
                what: "leak",
                evidence: e,
            });
        }
    }
    if !report.violations.is_empty() && report.logs.is_none() {
        report.logs = keep_logs(w, cfg);
    }
    report.checks += safety.checks;
    report.elapsed = started.elapsed();
    report
}

/// Copies the daemons' logs (and the store's listing) out of the lab, which is removed when the
/// run ends, so that a violation can be read; the directory, if they could be written.
fn keep_logs(w: &mut World, cfg: &Config) -> Option<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("cbrnet-chaos-{}", cfg.seed));
    std::fs::create_dir_all(&dir).ok()?;
    for n in &w.lab.nodes {
        std::fs::write(dir.join(format!("{}.log", n.name)), n.log()).ok()?;
        let routes = n.node.ns.run(&["ip", "route", "show"]);
        std::fs::write(dir.join(format!("{}.routes", n.name)), routes.stdout).ok()?;
    }
    let listing = match w.listing() {
        Ok(l) => format!("{l:#?}"),
        Err(e) => e,
    };
    std::fs::write(dir.join("store.txt"), listing).ok()?;
    Some(dir)
}

/// One tick: the safety checks and the daemons' exits, then the rest of the 200 ms.
fn tick(w: &mut World, safety: &mut checks::Safety, started: Instant, report: &mut Report) {
    let t = Instant::now();
    if let Some(v) = checks::exits(w, started.elapsed()) {
        report.violations.push(v);
    }
    report.checks += 1;
    if let Some(v) = safety.check(w, started) {
        report.violations.push(v);
    }
    std::thread::sleep(TICK.saturating_sub(t.elapsed()));
}

/// Waits (checking safety all along) until the cluster has converged and every pod reaches every
/// other, for at most the bound; records how long after its heal each fault took. The violation,
/// if it does not.
fn settle(
    w: &mut World,
    cfg: &Config,
    safety: &mut checks::Safety,
    started: Instant,
    report: &mut Report,
    healed: &[(&'static str, Instant)],
) -> Option<checks::Violation> {
    // From the round's last heal: before it, another fault of the round may still hold the
    // cluster apart.
    let from = healed.iter().map(|(_, t)| *t).max().unwrap_or_else(Instant::now);
    loop {
        if !report.violations.is_empty() {
            return None;
        }
        report.checks += 1;
        let Some(why) = checks::converged(w) else {
            break;
        };
        if from.elapsed() > cfg.bound() {
            return Some(checks::Violation {
                at: started.elapsed(),
                what: "not-converged",
                evidence: format!("{:?} after the heal: {why}", cfg.bound()),
            });
        }
        tick(w, safety, started, report);
    }
    let converged_at = Instant::now();
    let mut bad = checks::unreachable(w, None);
    while !bad.is_empty() {
        if from.elapsed() > cfg.bound() {
            return Some(checks::Violation {
                at: started.elapsed(),
                what: "pods-unreachable",
                evidence: format!(
                    "{:?} after the heal: {} pairs, e.g. {:?}",
                    cfg.bound(),
                    bad.len(),
                    bad.iter().next()
                ),
            });
        }
        tick(w, safety, started, report);
        bad = checks::unreachable(w, Some(&bad));
    }
    report.checks += 1;
    for (kind, _) in healed {
        report
            .convergence
            .entry(kind)
            .or_default()
            .push(converged_at.saturating_duration_since(from));
    }
    None
}
