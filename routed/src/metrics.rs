//! `/healthz` and Prometheus `/metrics`, over a deliberately tiny HTTP/1.0 responder: two fixed
//! paths do not justify an HTTP framework in a node daemon.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
}

impl Metrics {
    pub fn healthy(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.store_up.load(Ordering::Relaxed)
    }

    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut s = String::new();
        let mut m = |name: &str, kind: &str, help: &str, v: String| {
            let _ = write!(s, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n");
        };
        m(
            "cbrnet_leases",
            "gauge",
            "Live leases seen in the store, this node's included.",
            g(&self.leases_seen).to_string(),
        );
        m(
            "cbrnet_routes_installed",
            "gauge",
            "Host-gw routes of ours in the kernel.",
            g(&self.routes_installed).to_string(),
        );
        m(
            "cbrnet_reconcile_duration_seconds_sum",
            "counter",
            "Total time spent reconciling routes.",
            format!("{:.6}", g(&self.reconcile_micros) as f64 / 1e6),
        );
        m(
            "cbrnet_reconcile_duration_seconds_count",
            "counter",
            "Reconciles run.",
            g(&self.reconciles).to_string(),
        );
        m(
            "cbrnet_reconcile_errors_total",
            "counter",
            "Reconciles that failed.",
            g(&self.reconcile_errors).to_string(),
        );
        m(
            "cbrnet_store_up",
            "gauge",
            "1 if the lease store answered the last request.",
            u8::from(self.store_up.load(Ordering::Relaxed)).to_string(),
        );
        s
    }
}

pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]);
                let path = req.split_whitespace().nth(1).unwrap_or("");
                let (status, body) = match path {
                    "/healthz" if metrics.healthy() => ("200 OK", "ok\n".to_string()),
                    "/healthz" => (
                        "503 Service Unavailable",
                        "unhealthy: no lease or store unreachable\n".into(),
                    ),
                    "/metrics" => ("200 OK", metrics.render()),
                    _ => ("404 Not Found", "not found\n".into()),
                };
                let resp = format!(
                    "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    Ok(())
}
