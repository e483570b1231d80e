//! `/healthz` and Prometheus `/metrics`, over a small HTTP/1.0 responder: two fixed paths do not
//! justify an HTTP framework in a node daemon.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Default)]
pub struct Metrics {
    pub leases_seen: AtomicU64,
    pub routes_installed: AtomicU64,
    pub reconciles: AtomicU64,
    pub reconcile_errors: AtomicU64,
    /// Sum of reconcile durations, in microseconds.
    pub reconcile_micros: AtomicU64,
    pub store_up: AtomicBool,
    /// A lease is held and the node is set up.
    pub ready: AtomicBool,
    /// `--node-ip` is on a local interface.
    pub node_ip_present: AtomicBool,
    /// Store entries that are no valid lease, and leases that cannot be routed, now.
    pub invalid_records: AtomicU64,
    /// Peers' subnets that a route of another protocol already covers, now.
    pub route_conflicts: AtomicU64,
    /// Drift of the node's set-up put back (bridge, address, forwarding, masquerading, file).
    pub repairs: AtomicU64,
    /// Addresses of vanished pods reclaimed.
    pub reclaimed: AtomicU64,
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

impl Metrics {
    /// Why the node is not healthy, if it is not.
    pub fn unhealthy(&self) -> Option<&'static str> {
        if !self.node_ip_present.load(Ordering::Relaxed) {
            Some("--node-ip is on no local interface")
        } else if !self.ready.load(Ordering::Relaxed) {
            Some("no lease yet, or the node is not set up")
        } else if !self.store_up.load(Ordering::Relaxed) {
            Some("the lease store does not answer")
        } else {
            None
        }
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let mut m = |name: &str, kind: &str, help: &str, v: String| {
            let _ = write!(s, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n");
        };
        let b = |a: &AtomicBool| u8::from(a.load(Ordering::Relaxed)).to_string();
        m(
            "cbrnet_leases",
            "gauge",
            "Live valid leases seen in the store, this node's included.",
            get(&self.leases_seen).to_string(),
        );
        m(
            "cbrnet_routes_installed",
            "gauge",
            "Host-gw routes of ours in the kernel.",
            get(&self.routes_installed).to_string(),
        );
        m(
            "cbrnet_reconcile_duration_seconds_sum",
            "counter",
            "Total time spent reconciling routes.",
            format!("{:.6}", get(&self.reconcile_micros) as f64 / 1e6),
        );
        m(
            "cbrnet_reconcile_duration_seconds_count",
            "counter",
            "Reconciles run.",
            get(&self.reconciles).to_string(),
        );
        m(
            "cbrnet_reconcile_errors_total",
            "counter",
            "Reconciles that failed.",
            get(&self.reconcile_errors).to_string(),
        );
        m(
            "cbrnet_store_up",
            "gauge",
            "1 if the lease store answered the last request.",
            b(&self.store_up),
        );
        m(
            "cbrnet_lease_records_invalid",
            "gauge",
            "Store entries that are no valid lease, and leases that cannot be routed.",
            get(&self.invalid_records).to_string(),
        );
        m(
            "cbrnet_route_conflicts",
            "gauge",
            "Peer subnets left alone because a route of another protocol covers them.",
            get(&self.route_conflicts).to_string(),
        );
        m(
            "cbrnet_node_repairs_total",
            "counter",
            "Drifts of the node's set-up that were put back.",
            get(&self.repairs).to_string(),
        );
        m(
            "cbrnet_addresses_reclaimed_total",
            "counter",
            "Pod addresses reclaimed from pods that vanished without DEL.",
            get(&self.reclaimed).to_string(),
        );
        m(
            "cbrnet_node_ip_present",
            "gauge",
            "1 if --node-ip is on a local interface.",
            b(&self.node_ip_present),
        );
        s
    }
}

/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let mut sock = BufReader::new(sock);
                // The request line, then headers up to the blank line: a request may arrive in
                // any number of segments.
                let mut request = String::new();
                let read = async {
                    let mut line = String::new();
                    loop {
                        line.clear();
                        let n = sock.read_line(&mut line).await?;
                        if n == 0 || line == "\r\n" || line == "\n" || request.len() > 8192 {
                            return Ok::<_, std::io::Error>(());
                        }
                        if request.is_empty() {
                            request = line.clone();
                        }
                    }
                };
                if !matches!(tokio::time::timeout(READ_TIMEOUT, read).await, Ok(Ok(()))) {
                    return;
                }
                let path = request.split_whitespace().nth(1).unwrap_or("");
                let (status, body) = match path {
                    "/healthz" => match metrics.unhealthy() {
                        None => ("200 OK", "ok\n".to_string()),
                        Some(why) => ("503 Service Unavailable", format!("unhealthy: {why}\n")),
                    },
                    "/metrics" => ("200 OK", metrics.render()),
                    _ => ("404 Not Found", "not found\n".into()),
                };
                let resp = format!(
                    "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.get_mut().write_all(resp.as_bytes()).await;
            });
        }
    });
    Ok(())
}
