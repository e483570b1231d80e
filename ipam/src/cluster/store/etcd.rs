//! `etcd:URLS`: leases as keys `<prefix><subnet key>` in an etcd v3 cluster.
//!
//! The value is the lease's JSON and its version is the key's `mod_revision`. Create and
//! compare-and-swap are single etcd transactions, so etcd decides every race. Each key is put with
//! an etcd lease of the lease's TTL, so etcd itself deletes the subnet of a node that stopped
//! renewing (the `expires` field stays what [`crate::cluster::lease`] decides on).
//!
//! Every call is bounded by [`TIMEOUT`]: a stuck etcd or a blackholed endpoint would otherwise
//! stall a call forever, where the daemon needs an error it can retry.

use super::{watch_pair, Entry, LeaseStore, Watch};
use crate::cluster::error::ClusterError;
use crate::cluster::record::{self, subnet_key, Lease, Listing, Versioned};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions, WatchStream,
};
use ipnetwork::IpNetwork;
use std::future::Future;
use std::time::Duration;

/// How long any one etcd call may take.
pub const TIMEOUT: Duration = Duration::from_secs(3);
/// Keys per answer when listing: some 150 bytes each, well inside one gRPC message.
const PAGE: i64 = 1000;
/// The largest answer taken: a page of records padded with junk values (etcd takes up to 1.5 MiB
/// per value) still lists rather than failing the whole listing.
const MAX_ANSWER: usize = 64 << 20;
/// Backoff between attempts to re-establish a broken watch.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

pub struct EtcdStore {
    // Boxed: a `Client` is some 3.5 kB, which would bloat every `AnyStore`.
    client: Box<Client>,
    prefix: String,
}

/// Runs one etcd call within [`TIMEOUT`]; every failure is a (retryable) store error.
async fn call<T>(
    what: &str,
    f: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, ClusterError> {
    match tokio::time::timeout(TIMEOUT, f).await {
        Ok(r) => r.map_err(|e| ClusterError::Store(format!("etcd {what}: {e}"))),
        Err(_) => Err(ClusterError::Store(format!(
            "etcd {what}: no answer within {TIMEOUT:?}"
        ))),
    }
}

impl EtcdStore {
    pub async fn connect(endpoints: Vec<String>, prefix: &str) -> Result<EtcdStore, ClusterError> {
        // HTTP/2 pings notice a silently dead connection under a watch (etcd refuses pings more
        // often than every 5 s).
        let opts = ConnectOptions::new()
            .with_connect_timeout(TIMEOUT)
            .with_keep_alive(Duration::from_secs(10), TIMEOUT);
        let client = match tokio::time::timeout(TIMEOUT, Client::connect(&endpoints, Some(opts))).await {
            Ok(Ok(c)) => c,
            // Retrying cannot fix a malformed endpoint list.
            Ok(Err(e @ (etcd_client::Error::InvalidArgs(_) | etcd_client::Error::InvalidUri(_)))) => {
                return Err(ClusterError::Config(format!("etcd endpoints {endpoints:?}: {e}")))
            }
            Ok(Err(e)) => return Err(ClusterError::Store(format!("etcd connect {endpoints:?}: {e}"))),
            Err(_) => {
                return Err(ClusterError::Store(format!(
                    "etcd connect {endpoints:?}: timed out"
                )))
            }
        };
        // The client connects lazily: ask once, so a dead or wrong endpoint shows here.
        call("status", client.clone().status()).await?;
        Ok(EtcdStore {
            client: Box::new(client),
            prefix: prefix.to_owned(),
        })
    }

    /// Writes `value` under `<prefix><key>` as is, bypassing every check: for tests that need a
    /// store holding what no daemon would write.
    #[cfg(any(test, feature = "conformance"))]
    pub async fn put_raw(&self, key: &str, value: Vec<u8>) -> Result<(), ClusterError> {
        let key = format!("{}{key}", self.prefix);
        call("put", self.client.clone().put(key, value, None))
            .await
            .map(|_| ())
    }

    fn key(&self, subnet: IpNetwork) -> String {
        format!("{}{}", self.prefix, subnet_key(subnet))
    }

    /// Puts `lease` under a fresh etcd lease of `ttl` if `cmp` holds; the new revision, or `None`.
    async fn put_if(&self, cmp: Compare, lease: &Lease, ttl: Duration) -> Result<Option<u64>, ClusterError> {
        let mut c = self.client.clone();
        let id = call("lease grant", c.lease_grant(ttl.as_secs().max(1) as i64, None))
            .await?
            .id();
        let key = self.key(lease.subnet);
        let value =
            serde_json::to_vec(lease).map_err(|e| ClusterError::Store(format!("encoding a lease: {e}")))?;
        let put = TxnOp::put(key, value, Some(PutOptions::new().with_lease(id).with_prev_key()));
        let txn = Txn::new().when([cmp]).and_then([put]);
        // On an error the put may still have happened: the etcd lease is left to expire.
        let resp = call("txn", c.txn(txn)).await?;
        if !resp.succeeded() {
            let _ = call("lease revoke", c.lease_revoke(id)).await;
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
            let _ = call("lease revoke", c.lease_revoke(old)).await;
        }
        Ok(Some(revision))
    }
}

/// Opens a watch on every key under `prefix`, and waits until etcd confirms it: changes after
/// that are sure to be reported.
async fn open_watch(client: &Client, prefix: &str) -> Result<WatchStream, ClusterError> {
    let mut c = client.clone();
    let mut s = call("watch", c.watch(prefix, Some(WatchOptions::new().with_prefix()))).await?;
    match call("watch", s.message()).await? {
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
        let mut kv = self.client.kv_client().max_decoding_message_size(MAX_ANSWER);
        let end = prefix_end(self.prefix.as_bytes());
        let mut from = self.prefix.as_bytes().to_vec();
        let mut revision = 0;
        let mut out = Listing::default();
        loop {
            let opts = GetOptions::new()
                .with_range(end.clone())
                .with_limit(PAGE)
                .with_revision(revision);
            let resp = call("get", kv.get(from.clone(), Some(opts))).await?;
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
        Ok(call("txn", self.client.clone().txn(txn)).await?.succeeded())
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>, ClusterError> {
        let resp = call(
            "get",
            self.client.clone().get(format!("{}{key}", self.prefix), None),
        )
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
        let mut stream = open_watch(&self.client, &self.prefix).await?;
        let (client, prefix) = (self.client.clone(), self.prefix.clone());
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
                    match open_watch(&client, &prefix).await {
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
