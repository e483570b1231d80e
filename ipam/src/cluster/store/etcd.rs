//! `etcd:URLS`: leases as keys `<prefix><subnet key>` in an etcd v3 cluster.
//!
//! The value is the lease's JSON and its version is the key's `mod_revision`. Create and
//! compare-and-swap are single etcd transactions, so etcd decides every race. Each key is put with
//! an etcd lease of the lease's TTL, so etcd itself deletes the subnet of a node that stopped
//! renewing (the `expires` field stays what [`crate::cluster::lease`] decides on).
//!
//! Every call is bounded by [`TIMEOUT`]: a stuck etcd or a blackholed endpoint would otherwise
//! stall a call forever, where the daemon needs an error it can retry.

use super::etcd_auth::{explain, Context, EtcdAuth, Files};
use super::{watch_pair, Entry, LeaseStore, Watch};
use crate::cluster::error::ClusterError;
use crate::cluster::record::{self, subnet_key, Lease, Listing, Versioned};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions, WatchStream,
};
use ipnetwork::IpNetwork;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long any one etcd call may take.
pub const TIMEOUT: Duration = Duration::from_secs(3);
/// How often the TLS and password files are looked at for a change (and at every call while
/// calls fail).
const RELOAD_CHECK: Duration = Duration::from_secs(1);
/// Keys per answer when listing: some 150 bytes each, well inside one gRPC message.
const PAGE: i64 = 1000;
/// The largest answer taken: a page of records padded with junk values (etcd takes up to 1.5 MiB
/// per value) still lists rather than failing the whole listing.
const MAX_ANSWER: usize = 64 << 20;
/// Backoff between attempts to re-establish a broken watch.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

pub struct EtcdStore {
    conn: Arc<Conn>,
    prefix: String,
}

/// Where etcd is and how to authenticate to it.
struct Target {
    endpoints: Vec<String>,
    auth: EtcdAuth,
    prefix: String,
}

/// The client and what it was made from, shared with the store's watch task.
struct Conn {
    target: Target,
    state: Mutex<State>,
    /// One look at changed files at a time.
    reloading: tokio::sync::Mutex<()>,
}

struct State {
    // Boxed: a `Client` is some 3.5 kB.
    client: Box<Client>,
    /// The files the client was made from.
    files: Files,
    /// When the files were last looked at.
    checked: Instant,
    /// A call failed since one last succeeded: new files are tried at once.
    failing: bool,
    /// New files that were judged broken or did not connect, said once, and not tried again until
    /// they change or the current connection fails.
    refused: Option<Files>,
}

/// The options every connection gets. HTTP/2 pings notice a silently dead connection under a
/// watch (etcd refuses pings more often than every 5 s).
fn base_options() -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(TIMEOUT)
        .with_keep_alive(Duration::from_secs(10), TIMEOUT)
}

impl Target {
    fn context(&self) -> Context<'_> {
        Context {
            endpoints: &self.endpoints,
            auth: &self.auth,
            prefix: &self.prefix,
        }
    }

    fn tls(&self) -> bool {
        self.endpoints.iter().any(|e| e.starts_with("https://"))
    }

    /// A client made from `files`, which answered once.
    async fn make(&self, files: &Files) -> Result<Client, ClusterError> {
        let opts = files
            .options(&self.auth, self.tls(), base_options())
            .map_err(ClusterError::Store)?;
        let eps = &self.endpoints;
        let client = match tokio::time::timeout(TIMEOUT, Client::connect(eps, Some(opts))).await {
            Ok(Ok(c)) => c,
            // Retrying cannot fix a malformed endpoint list.
            Ok(Err(e @ (etcd_client::Error::InvalidArgs(_) | etcd_client::Error::InvalidUri(_)))) => {
                return Err(ClusterError::Config(format!("etcd endpoints {eps:?}: {e}")))
            }
            Ok(Err(e)) => return Err(ClusterError::Store(explain(&e, &self.context()))),
            Err(_) => return Err(self.no_answer()),
        };
        // The client connects lazily: ask once, so a dead or wrong endpoint shows here.
        match tokio::time::timeout(TIMEOUT, client.clone().status()).await {
            Ok(Ok(_)) => Ok(client),
            Ok(Err(e)) => Err(ClusterError::Store(explain(&e, &self.context()))),
            Err(_) => Err(self.no_answer()),
        }
    }

    fn no_answer(&self) -> ClusterError {
        ClusterError::Store(format!(
            "etcd at {} does not answer within {TIMEOUT:?}",
            self.endpoints.join(",")
        ))
    }
}

impl Conn {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The client to call with. When the auth files changed, a client made from the new ones
    /// takes over once it has answered; until then (a broken file, a CA etcd does not trust yet)
    /// the current one stays, and the new files are tried again when the current connection
    /// fails or they change again.
    async fn client(&self) -> Client {
        let (due, failing) = {
            let s = self.lock();
            (s.checked.elapsed() >= RELOAD_CHECK || s.failing, s.failing)
        };
        if self.target.auth.files().is_empty() || !due {
            return (*self.lock().client).clone();
        }
        let _one = self.reloading.lock().await;
        self.lock().checked = Instant::now();
        let files = match self.target.auth.read() {
            Ok(f) => f,
            // Mid-rotation (a file renamed away): the current client stays.
            Err(e) => {
                tracing::debug!("etcd: {e}; keeping the current connection");
                return (*self.lock().client).clone();
            }
        };
        {
            let s = self.lock();
            if !s.files.changed(&files) || (s.refused.as_ref() == Some(&files) && !failing) {
                return (*s.client).clone();
            }
        }
        match self.target.make(&files).await {
            Ok(c) => {
                tracing::info!(
                    "etcd: the certificate, key or password files changed; connected with the new ones"
                );
                let mut s = self.lock();
                *s.client = c;
                s.files = files;
                s.refused = None;
                s.failing = false;
                (*s.client).clone()
            }
            Err(e) => {
                let mut s = self.lock();
                if s.refused.as_ref() != Some(&files) {
                    tracing::error!("etcd: the changed certificate, key or password files cannot be used ({e}); keeping the current connection");
                } else {
                    tracing::debug!("etcd: the changed files still cannot be used ({e})");
                }
                s.refused = Some(files);
                (*s.client).clone()
            }
        }
    }

    /// Runs one etcd call within [`TIMEOUT`]; every failure is a (retryable) store error, in words.
    async fn call<T>(
        &self,
        what: &str,
        f: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, ClusterError> {
        let r = match tokio::time::timeout(TIMEOUT, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let why = explain(&e, &self.target.context());
                // An error of the server's own (not a misconfiguration) names the call.
                Err(ClusterError::Store(if why.starts_with("etcd") {
                    why
                } else {
                    format!("etcd {what}: {why}")
                }))
            }
            Err(_) => Err(self.target.no_answer()),
        };
        self.lock().failing = r.is_err();
        r
    }
}

impl EtcdStore {
    pub async fn connect(endpoints: Vec<String>, prefix: &str) -> Result<EtcdStore, ClusterError> {
        EtcdStore::connect_with(endpoints, prefix, EtcdAuth::default()).await
    }

    /// Connects with TLS files and a user (read now, and again whenever they change).
    pub async fn connect_with(
        endpoints: Vec<String>,
        prefix: &str,
        auth: EtcdAuth,
    ) -> Result<EtcdStore, ClusterError> {
        let files = auth.read().map_err(ClusterError::Store)?;
        let target = Target {
            endpoints,
            auth,
            prefix: prefix.to_owned(),
        };
        let client = target.make(&files).await?;
        let conn = Conn {
            target,
            state: Mutex::new(State {
                client: Box::new(client),
                files,
                checked: Instant::now(),
                failing: false,
                refused: None,
            }),
            reloading: tokio::sync::Mutex::new(()),
        };
        Ok(EtcdStore {
            conn: Arc::new(conn),
            prefix: prefix.to_owned(),
        })
    }

    /// Writes `value` under `<prefix><key>` as is, bypassing every check: for tests that need a
    /// store holding what no daemon would write.
    #[cfg(any(test, feature = "conformance"))]
    pub async fn put_raw(&self, key: &str, value: Vec<u8>) -> Result<(), ClusterError> {
        let key = format!("{}{key}", self.prefix);
        let mut c = self.conn.client().await;
        self.conn.call("put", c.put(key, value, None)).await.map(|_| ())
    }

    fn key(&self, subnet: IpNetwork) -> String {
        format!("{}{}", self.prefix, subnet_key(subnet))
    }

    /// Puts `lease` under a fresh etcd lease of `ttl` if `cmp` holds; the new revision, or `None`.
    async fn put_if(&self, cmp: Compare, lease: &Lease, ttl: Duration) -> Result<Option<u64>, ClusterError> {
        let mut c = self.conn.client().await;
        let id = self
            .conn
            .call("lease grant", c.lease_grant(ttl.as_secs().max(1) as i64, None))
            .await?
            .id();
        let key = self.key(lease.subnet);
        let value =
            serde_json::to_vec(lease).map_err(|e| ClusterError::Store(format!("encoding a lease: {e}")))?;
        let put = TxnOp::put(key, value, Some(PutOptions::new().with_lease(id).with_prev_key()));
        let txn = Txn::new().when([cmp]).and_then([put]);
        // On an error the put may still have happened: the etcd lease is left to expire.
        let resp = self.conn.call("txn", c.txn(txn)).await?;
        if !resp.succeeded() {
            let _ = self.conn.call("lease revoke", c.lease_revoke(id)).await;
            return Ok(None);
        }
        let revision = match resp.header() {
            Some(h) => h.revision() as u64,
            None => return Err(ClusterError::Store("etcd txn: response without a header".into())),
        };
        // The record's previous etcd lease holds no key any more (each put gets its own): revoked
        // now, or else every renewal would leave one behind until its TTL ran out (a node would
        // hold TTL / renewal interval of them). Failing here only leaves it to expire.
        let previous = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Put(p) => p.prev_key().map(|kv| kv.lease()),
            _ => None,
        });
        if let Some(old) = previous.filter(|old| *old != 0 && *old != id) {
            let _ = self.conn.call("lease revoke", c.lease_revoke(old)).await;
        }
        Ok(Some(revision))
    }
}

/// Opens a watch on every key under `prefix`, and waits until etcd confirms it: changes after
/// that are sure to be reported.
async fn open_watch(conn: &Conn, prefix: &str) -> Result<WatchStream, ClusterError> {
    let mut c = conn.client().await;
    let mut s = conn
        .call("watch", c.watch(prefix, Some(WatchOptions::new().with_prefix())))
        .await?;
    match conn.call("watch", s.message()).await? {
        Some(r) if r.created() && !r.canceled() => Ok(s),
        _ => Err(ClusterError::Store("etcd watch: not created".into())),
    }
}

/// The first key after every key that starts with `prefix` (etcd's range end for a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte is 0xff (or there is none): the range runs to the end of the key space.
    vec![0]
}

impl LeaseStore for EtcdStore {
    /// Reads the prefix in pages of [`PAGE`] keys, all at the revision of the first page (one
    /// snapshot): a cluster's worth of leases in one answer would pass the gRPC message limit.
    async fn list(&self) -> Result<Listing, ClusterError> {
        let mut kv = self
            .conn
            .client()
            .await
            .kv_client()
            .max_decoding_message_size(MAX_ANSWER);
        let end = prefix_end(self.prefix.as_bytes());
        let mut from = self.prefix.as_bytes().to_vec();
        let mut revision = 0;
        let mut out = Listing::default();
        loop {
            let opts = GetOptions::new()
                .with_range(end.clone())
                .with_limit(PAGE)
                .with_revision(revision);
            let resp = self.conn.call("get", kv.get(from.clone(), Some(opts))).await?;
            if revision == 0 {
                revision = resp.header().map_or(0, |h| h.revision());
            }
            for kv in resp.kvs() {
                let key = String::from_utf8_lossy(kv.key());
                let key = key.strip_prefix(self.prefix.as_str()).unwrap_or(&key);
                match record::parse(key, kv.value()) {
                    Ok(lease) => out.leases.push(Versioned {
                        lease,
                        version: kv.mod_revision() as u64,
                    }),
                    Err(invalid) => out.invalid.push(invalid),
                }
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        out.leases.sort_by_key(|v| v.lease.subnet);
        Ok(out)
    }

    async fn create(&self, lease: &Lease, ttl: Duration) -> Result<Option<u64>, ClusterError> {
        let absent = Compare::create_revision(self.key(lease.subnet), CompareOp::Equal, 0);
        self.put_if(absent, lease, ttl).await
    }

    async fn update(&self, lease: &Lease, version: u64, ttl: Duration) -> Result<Option<u64>, ClusterError> {
        let same = Compare::mod_revision(self.key(lease.subnet), CompareOp::Equal, version as i64);
        self.put_if(same, lease, ttl).await
    }

    async fn delete(&self, subnet: IpNetwork, version: u64) -> Result<bool, ClusterError> {
        let key = self.key(subnet);
        let same = Compare::mod_revision(key.clone(), CompareOp::Equal, version as i64);
        let txn = Txn::new().when([same]).and_then([TxnOp::delete(key, None)]);
        let mut c = self.conn.client().await;
        Ok(self.conn.call("txn", c.txn(txn)).await?.succeeded())
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>, ClusterError> {
        let mut c = self.conn.client().await;
        let resp = self
            .conn
            .call("get", c.get(format!("{}{key}", self.prefix), None))
            .await?;
        Ok(resp.kvs().first().map(|kv| {
            record::parse(key, kv.value()).map(|lease| Versioned {
                lease,
                version: kv.mod_revision() as u64,
            })
        }))
    }

    async fn watch(&self) -> Result<Watch, ClusterError> {
        // The first watch is in place before we return, so a list made after this misses nothing.
        let mut stream = open_watch(&self.conn, &self.prefix).await?;
        let (conn, prefix) = (self.conn.clone(), self.prefix.clone());
        let (feed, watch) = watch_pair();
        tokio::spawn(async move {
            loop {
                // Follow the stream until it ends, fails or is canceled (e.g. by a compaction).
                loop {
                    let msg = tokio::select! {
                        _ = feed.closed() => return,
                        m = stream.message() => m,
                    };
                    match msg {
                        Ok(Some(r)) if !r.canceled() => {
                            let keys: Vec<String> = r
                                .events()
                                .iter()
                                .filter_map(|e| e.kv())
                                .map(|kv| {
                                    let k = String::from_utf8_lossy(kv.key());
                                    k.strip_prefix(prefix.as_str()).unwrap_or(&k).to_string()
                                })
                                .collect();
                            if !keys.is_empty() && !feed.send(|c| c.keys.extend(keys)) {
                                return;
                            }
                        }
                        _ => break,
                    }
                }
                let mut delay = BACKOFF_MIN;
                stream = loop {
                    tokio::select! {
                        _ = feed.closed() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    match open_watch(&conn, &prefix).await {
                        Ok(s) => break s,
                        Err(_) => delay = (delay * 2).min(BACKOFF_MAX),
                    }
                };
                // Changes while the watch was down are lost: have the consumer look at it all.
                if !feed.send(|c| c.all = true) {
                    return;
                }
            }
        });
        Ok(watch)
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn a_prefix_ends_at_its_successor() {
        assert_eq!(prefix_end(b"/cbrnet/subnets/"), b"/cbrnet/subnets0");
        assert_eq!(prefix_end(b"a\xff\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }
}
