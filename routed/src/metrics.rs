//! `/healthz` and Prometheus `/metrics`, served by axum; the metrics kept and encoded by
//! prometheus-client (OpenMetrics text).

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// What failed, for `cbrnet_errors_total{kind}`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ErrorKind {
    /// The lease store did not answer or refused.
    Store,
    /// A route reconcile failed (netlink).
    Routes,
    /// Setting the node up failed (bridge, address, forwarding, masquerading, subnet file).
    Setup,
    /// Renewing the lease failed.
    Renew,
    /// Reclaiming addresses of vanished pods failed for a network.
    Reclaim,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: ErrorKind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabel {
    /// direct, vxlan or unroutable.
    pub path: &'static str,
    /// ipv4 or ipv6.
    pub family: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FamilyLabel {
    /// ipv4 or ipv6.
    pub family: &'static str,
}

pub struct Metrics {
    registry: Registry,
    /// Live valid leases in the store with a subnet of the family, this node's included.
    pub leases: Family<FamilyLabel, Gauge>,
    /// Routes of ours in the kernel, per family of their destination.
    pub routes_installed: Family<FamilyLabel, Gauge>,
    pub reconcile_duration: Histogram,
    pub reconcile_errors: Counter,
    pub errors: Family<KindLabel, Counter>,
    pub store_up: Gauge,
    pub invalid_records: Gauge,
    pub route_conflicts: Gauge,
    pub repairs: Counter,
    pub reclaimed: Counter,
    pub node_ip_present: Gauge,
    /// Other nodes' live subnets, by how this node reaches them and family.
    pub peers: Family<PathLabel, Gauge>,
    pub peers_unroutable: Gauge,
    /// A lease is held and the node is set up.
    ready: AtomicBool,
    /// Why the node's data path cannot work as configured (a device of ours taken by another).
    problems: Mutex<BTreeMap<Problem, String>>,
    /// Why the lease store failed last (shown while `store_up` is 0).
    store_problem: Mutex<Option<String>>,
}

/// What can make a running node unhealthy, each with its reason (in this order in /healthz).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Problem {
    /// The node's set-up (bridge, gateway, forwarding, file, masquerade) keeps failing.
    Setup,
    /// The backend cannot work as configured (a foreign VXLAN device).
    Backend,
    /// Peers this node's backend cannot reach.
    Peers,
    /// Another daemon holds this node's name (it took the name while this one was silent).
    NameHeld,
    /// This node's lease lacks the subnet of a configured family that its slot pairs with
    /// (another record names it).
    Family,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            leases: Family::default(),
            routes_installed: Family::default(),
            // 100 µs to ~1.6 s: a reconcile of a few to thousands of leases.
            reconcile_duration: Histogram::new(exponential_buckets(0.0001, 2.0, 15)),
            reconcile_errors: Counter::default(),
            errors: Family::default(),
            store_up: Gauge::default(),
            invalid_records: Gauge::default(),
            route_conflicts: Gauge::default(),
            repairs: Counter::default(),
            reclaimed: Counter::default(),
            node_ip_present: Gauge::default(),
            peers: Family::default(),
            peers_unroutable: Gauge::default(),
            ready: AtomicBool::new(false),
            problems: Mutex::new(BTreeMap::new()),
            store_problem: Mutex::new(None),
            registry: Registry::default(),
        };
        registry.register(
            "cbrnet_leases",
            "Live valid leases seen in the store, this node's included",
            m.leases.clone(),
        );
        registry.register(
            "cbrnet_routes_installed",
            "Routes of ours (to other nodes' subnets) in the kernel",
            m.routes_installed.clone(),
        );
        registry.register(
            "cbrnet_reconcile_duration_seconds",
            "Time a route reconcile took",
            m.reconcile_duration.clone(),
        );
        registry.register(
            "cbrnet_reconcile_errors",
            "Route reconciles that failed",
            m.reconcile_errors.clone(),
        );
        registry.register("cbrnet_errors", "Failures, by what failed", m.errors.clone());
        registry.register(
            "cbrnet_store_up",
            "1 if the lease store answered the last request",
            m.store_up.clone(),
        );
        registry.register(
            "cbrnet_lease_records_invalid",
            "Store entries that are no valid lease, and leases that cannot be routed",
            m.invalid_records.clone(),
        );
        registry.register(
            "cbrnet_route_conflicts",
            "Peer subnets left alone because a route of another protocol holds them",
            m.route_conflicts.clone(),
        );
        registry.register(
            "cbrnet_node_repairs",
            "Drifts of the node's set-up that were put back",
            m.repairs.clone(),
        );
        registry.register(
            "cbrnet_addresses_reclaimed",
            "Pod addresses reclaimed from pods that vanished without DEL",
            m.reclaimed.clone(),
        );
        registry.register(
            "cbrnet_node_ip_present",
            "1 if --node-ip is on a local interface",
            m.node_ip_present.clone(),
        );
        registry.register(
            "cbrnet_peers",
            "Other nodes with a live lease, by how this node reaches them",
            m.peers.clone(),
        );
        registry.register(
            "cbrnet_peers_unroutable",
            "Other nodes with a live lease that this node cannot reach with its backend",
            m.peers_unroutable.clone(),
        );
        registry.register(
            "cbrnet_build",
            "The running cbrnet-routed",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn error(&self, kind: ErrorKind) {
        self.errors.get_or_create(&KindLabel { kind }).inc();
    }

    /// Sets (or clears) one of the reasons the node is not fine.
    pub fn set_problem(&self, what: Problem, why: Option<String>) {
        // A poisoned lock only means a panic elsewhere, which ends the process anyway.
        if let Ok(mut p) = self.problems.lock() {
            match why {
                Some(w) => p.insert(what, w),
                None => p.remove(&what),
            };
        }
    }

    /// Marks the store down for `why` (the error, in words). True when this is news: the store
    /// answered since it last failed, or it fails for another reason now. A store that keeps
    /// failing the same way is logged once, not once per retry.
    pub fn store_failed(&self, why: &str) -> bool {
        let was_up = self.store_up.get() != 0;
        self.store_up.set(0);
        let Ok(mut p) = self.store_problem.lock() else {
            return true;
        };
        let news = was_up || p.as_deref() != Some(why);
        *p = Some(why.to_string());
        news
    }

    /// Why the node is not healthy, if it is not.
    pub fn unhealthy(&self) -> Option<String> {
        let store_problem = || self.store_problem.lock().ok().and_then(|p| p.clone());
        if self.node_ip_present.get() == 0 {
            Some("--node-ip is on no local interface".into())
        } else if let Some(why) = store_problem().filter(|_| self.store_up.get() == 0) {
            Some(format!("the lease store: {why}"))
        } else if !self.is_ready() {
            let setup = self
                .problems
                .lock()
                .ok()
                .and_then(|p| p.get(&Problem::Setup).cloned());
            Some(setup.unwrap_or_else(|| "no lease yet, or the node is not set up".into()))
        } else if self.store_up.get() == 0 {
            Some("the lease store does not answer".into())
        } else {
            let p = self.problems.lock().ok()?;
            (!p.is_empty()).then(|| p.values().cloned().collect::<Vec<_>>().join("; "))
        }
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }
}

async fn healthz(m: Arc<Metrics>) -> impl IntoResponse {
    match m.unhealthy() {
        None => (StatusCode::OK, "ok\n".to_string()),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("unhealthy: {why}\n")),
    }
}

async fn metrics(m: Arc<Metrics>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    )
}

/// Binds `addr` and serves `/healthz` and `/metrics` on it from now on.
pub async fn serve(addr: SocketAddr, m: Arc<Metrics>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let (h, g) = (m.clone(), m);
    let app = Router::new()
        .route("/healthz", get(move || healthz(h.clone())))
        .route("/metrics", get(move || metrics(g.clone())));
    tokio::spawn(async move {
        // Serving only ends if the listener fails, which leaves nothing to do but report it.
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("serving /healthz and /metrics stopped: {e}");
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_and_health() {
        let m = Metrics::default();
        m.leases.get_or_create(&FamilyLabel { family: "ipv4" }).set(3);
        m.repairs.inc();
        m.error(ErrorKind::Store);
        m.reconcile_duration.observe(0.002);
        let s = m.render();
        for line in [
            "cbrnet_leases{family=\"ipv4\"} 3",
            "cbrnet_node_repairs_total 1",
            "cbrnet_errors_total{kind=\"Store\"} 1",
            "cbrnet_reconcile_duration_seconds_count 1",
            "cbrnet_build_info{version=\"",
            "# EOF",
        ] {
            assert!(s.contains(line), "{line} not in:\n{s}");
        }
        assert_eq!(
            m.unhealthy().as_deref(),
            Some("--node-ip is on no local interface")
        );
        m.node_ip_present.set(1);
        m.set_ready(true);
        assert_eq!(m.unhealthy().as_deref(), Some("the lease store does not answer"));
        m.store_up.set(1);
        assert_eq!(m.unhealthy(), None);
        m.set_problem(Problem::Backend, Some("cbrnet.vxlan is not ours".into()));
        assert_eq!(m.unhealthy().as_deref(), Some("cbrnet.vxlan is not ours"));
        m.set_problem(Problem::Setup, Some("the bridge cannot be made".into()));
        assert_eq!(
            m.unhealthy().as_deref(),
            Some("the bridge cannot be made; cbrnet.vxlan is not ours")
        );
        m.set_problem(Problem::Backend, None);
        m.set_problem(Problem::Setup, None);
        assert_eq!(m.unhealthy(), None);
        // a store failure: its reason, said once until it changes or the store answers again
        assert!(m.store_failed("etcd at https://e:2379 refused the client certificate"));
        assert!(!m.store_failed("etcd at https://e:2379 refused the client certificate"));
        assert_eq!(
            m.unhealthy().as_deref(),
            Some("the lease store: etcd at https://e:2379 refused the client certificate")
        );
        assert!(m.store_failed("etcd at https://e:2379 does not listen (connection refused)"));
        m.store_up.set(1);
        assert_eq!(m.unhealthy(), None);
        assert!(m.store_failed("etcd at https://e:2379 does not listen (connection refused)"));
        m.peers
            .get_or_create(&PathLabel {
                path: "vxlan",
                family: "ipv6",
            })
            .set(2);
        assert!(m
            .render()
            .contains("cbrnet_peers{path=\"vxlan\",family=\"ipv6\"} 2"));
    }
}
