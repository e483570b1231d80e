//! The daemon's event loop: hold the lease, set the node up, keep the routes right.

use crate::cli::RunArgs;
use crate::error::{Result, RoutedError};
use crate::metrics::{self, Metrics};
use crate::routes;
use cbrnet_bridge::{bridge, forwarding, mac, masq, Nl};
use cbrnet_ipam::cluster::lease::{self, LeaseConfig};
use cbrnet_ipam::cluster::store::{AnyStore, LeaseStore};
use cbrnet_ipam::cluster::{ClusterError, Lease, Versioned};
use cbrnet_ipam::SubnetFile;
use futures::StreamExt;
use ipnetwork::IpNetwork;
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::{Handle, MulticastGroup};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::sleep_until;

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Exponential backoff between BACKOFF_MIN and BACKOFF_MAX.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(BACKOFF_MIN)
    }
    fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
        d
    }
    fn reset(&mut self) {
        self.0 = BACKOFF_MIN;
    }
}

/// Retries `f` with backoff until it succeeds; the store being down is not fatal.
async fn retry<T, F, Fut>(what: &str, metrics: &Metrics, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, ClusterError>>,
{
    let mut b = Backoff::new();
    loop {
        match f().await {
            Ok(v) => {
                metrics.store_up.store(true, Ordering::Relaxed);
                return v;
            }
            Err(e) => {
                metrics.store_up.store(false, Ordering::Relaxed);
                let d = b.next();
                tracing::warn!("{what}: {e}; retrying in {d:?}");
                tokio::time::sleep(d).await;
            }
        }
    }
}

pub async fn run(args: RunArgs) -> Result<()> {
    let metrics = Arc::new(Metrics::default());
    metrics::serve(args.metrics_addr, metrics.clone())
        .await
        .map_err(|e| RoutedError::Io(format!("serving metrics on {}", args.metrics_addr), e))?;
    let mut cfg = LeaseConfig::new(args.cluster_cidr, args.subnet_len, args.lease_ttl)?;
    let v4 = |n: Option<IpNetwork>| match n {
        Some(IpNetwork::V4(n)) => Ok(Some(n)),
        Some(n) => Err(RoutedError::Config(format!("{n}: subnets are IPv4"))),
        None => Ok(None),
    };
    cfg.first = v4(args.first_subnet)?;
    cfg.last = v4(args.last_subnet)?;
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| RoutedError::Io("SIGTERM handler".into(), e))?;

    let startup = async {
        let store = retry("opening the lease store", &metrics, || {
            AnyStore::open(&args.store, &args.etcd_prefix)
        })
        .await;
        let held = retry("acquiring a lease", &metrics, || {
            lease::acquire(&store, &cfg, &args.node_name, args.node_ip)
        })
        .await;
        (store, held)
    };
    // SIGTERM during a long wait for the store ends the daemon too.
    let (store, mut held) = tokio::select! {
        r = startup => r,
        _ = sigterm.recv() => return Ok(()),
    };
    tracing::info!(subnet = %held.lease.subnet, node_ip = %held.lease.node_ip, "lease held");

    let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| RoutedError::Io("netlink".into(), e))?;
    tokio::spawn(conn);
    setup_node(&args, &held.lease, &handle).await?;
    metrics.ready.store(true, Ordering::Relaxed);

    let (mconn, _, mut events) = rtnetlink::new_multicast_connection(&[MulticastGroup::Ipv4Route])
        .map_err(|e| RoutedError::Io("netlink route events".into(), e))?;
    tokio::spawn(mconn);
    let mut changes = retry("watching the lease store", &metrics, || store.watch()).await;

    let mut resync = tokio::time::interval(args.resync_interval);
    let half_life = cfg.ttl / 2;
    let mut renew_at = Instant::now() + half_life;
    let mut backoff = Backoff::new();
    let mut retry_at: Option<Instant> = None;
    loop {
        let mut dirty = false;
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            Some(()) = changes.recv() => dirty = true,
            Some((msg, _)) = events.next() => {
                dirty = is_our_route_deleted(&msg.payload);
                // coalesce a burst of events into one reconcile
                while let Ok((m, _)) = events.try_recv() {
                    dirty |= is_our_route_deleted(&m.payload);
                }
            }
            _ = resync.tick() => dirty = true,
            _ = sleep_until(renew_at.into()) => {
                match lease::renew(&store, &cfg, &held, args.node_ip).await {
                    Ok(new) => {
                        if new.lease.subnet != held.lease.subnet {
                            tracing::error!(
                                old = %held.lease.subnet, new = %new.lease.subnet,
                                "lease was lost; took a new subnet"
                            );
                            setup_node(&args, &new.lease, &handle).await?;
                        }
                        held = new;
                        renew_at = Instant::now() + half_life;
                    }
                    Err(e) => {
                        tracing::warn!("renewing the lease: {e}");
                        metrics.store_up.store(false, Ordering::Relaxed);
                        renew_at = Instant::now() + backoff.next();
                    }
                }
            }
            _ = sleep_until(retry_at.unwrap_or_else(Instant::now).into()), if retry_at.is_some() => {
                dirty = true
            }
        }
        if dirty {
            match reconcile(&handle, &store, &args.node_name, &metrics).await {
                Ok(()) => {
                    retry_at = None;
                    backoff.reset();
                }
                Err(e) => {
                    metrics.reconcile_errors.fetch_add(1, Ordering::Relaxed);
                    let d = backoff.next();
                    tracing::warn!("reconcile: {e}; keeping the routes we have, retrying in {d:?}");
                    retry_at = Some(Instant::now() + d);
                }
            }
        }
    }
    // Routes and lease stay: pods keep working across a restart.
    tracing::info!("stopping; routes and lease are left in place");
    Ok(())
}

fn is_our_route_deleted(p: &NetlinkPayload<RouteNetlinkMessage>) -> bool {
    matches!(p, NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelRoute(m)) if routes::ours(m))
}

/// Publishes the subnet and makes the node ready for pods: bridge, gateway address, forwarding,
/// masquerading.
async fn setup_node(args: &RunArgs, l: &Lease, handle: &Handle) -> Result<()> {
    let gw = l.gateway();
    let nl = Nl {
        handle: handle.clone(),
    };
    let spec = bridge::Spec {
        name: args.bridge.clone(),
        mtu: args.mtu.unwrap_or(1500),
        mac: mac::for_bridge(Some(gw), &args.bridge),
        promisc: false,
    };
    let br = bridge::ensure(&nl, &spec).await?;
    bridge::ensure_address(&nl, &br, gw, l.subnet).await?;
    forwarding::enable(false)?;
    if args.ip_masq {
        masq::ensure("cbrnet_routed", l.subnet, args.cluster_cidr)?;
    }
    // Last: the plugin may add pods as soon as this file exists.
    let file = SubnetFile {
        subnet: l.subnet,
        gateway: gw,
        cluster_cidr: Some(args.cluster_cidr),
        mtu: args.mtu,
    };
    file.write(&args.subnet_file)
        .map_err(|e| RoutedError::Io(format!("writing {}", args.subnet_file.display()), e))
}

/// Makes our routes match the live leases.
pub async fn reconcile<S: LeaseStore>(h: &Handle, store: &S, me: &str, metrics: &Metrics) -> Result<()> {
    let t = Instant::now();
    let leases = match lease::live(store).await {
        Ok(l) => l,
        Err(e) => {
            metrics.store_up.store(false, Ordering::Relaxed);
            return Err(e.into());
        }
    };
    metrics.store_up.store(true, Ordering::Relaxed);
    metrics.leases_seen.store(leases.len() as u64, Ordering::Relaxed);
    let connected = routes::connected(h).await?;
    let (want, skipped) = routes::want(&leases, me, &connected);
    for s in &skipped {
        tracing::error!(subnet = %s.lease.subnet, node = %s.lease.node_name, "not routed: {}", s.why);
    }
    let have = routes::installed(h).await?;
    let (add, del) = routes::plan(&want, &have);
    for (dst, gw) in &add {
        routes::put(h, *dst, *gw).await?;
        tracing::info!(%dst, %gw, "route installed");
    }
    for r in &del {
        routes::remove(h, r).await?;
        tracing::info!(dst = %r.dst, "route removed");
    }
    metrics
        .routes_installed
        .store(want.len() as u64, Ordering::Relaxed);
    metrics.reconciles.fetch_add(1, Ordering::Relaxed);
    metrics
        .reconcile_micros
        .fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
    Ok(())
}

/// `release`: drop this node's lease (decommission).
pub async fn release(store: &AnyStore, node_name: &str) -> Result<bool> {
    let all: Vec<Versioned> = store.list().await?;
    for v in all.iter().filter(|v| v.lease.node_name == node_name) {
        if lease::release(store, v).await? {
            return Ok(true);
        }
    }
    Ok(false)
}
