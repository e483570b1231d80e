//! `etcd:URLS`: leases as keys `<prefix><subnet key>` in an etcd v3 cluster.
//!
//! The value is the lease's JSON and its version is the key's `mod_revision`. Create and
//! compare-and-swap are single etcd transactions, so etcd decides every race. Each key is put with
//! an etcd lease of the lease's TTL, so etcd itself deletes the subnet of a node that stopped
//! renewing (the `expires` field stays what [`crate::lease`] decides on).
//!
//! Every call is bounded by [`TIMEOUT`]: a stuck etcd or a blackholed endpoint would otherwise
//! stall a call forever, where the daemon needs an error it can retry.

use super::{LeaseStore, Versioned};
use crate::error::IpamError;
use crate::lease::{subnet_key, Lease};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp, WatchOptions, WatchStream,
};
use ipnetwork::IpNetwork;
use std::future::Future;
use std::time::Duration;
use tokio::sync::mpsc::{self, error::TrySendError};

/// How long any one etcd call may take.
pub const TIMEOUT: Duration = Duration::from_secs(3);
/// Backoff between attempts to re-establish a broken watch.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

pub struct EtcdStore {
    // Boxed: a `Client` is some 3.5 kB, which would bloat every `AnyStore`.
    client: Box<Client>,
    prefix: String,
}

/// Runs one etcd call within [`TIMEOUT`]; every failure is a (retryable) store error.
async fn call<T>(what: &str, f: impl Future<Output = Result<T, etcd_client::Error>>) -> Result<T, IpamError> {
    match tokio::time::timeout(TIMEOUT, f).await {
        Ok(r) => r.map_err(|e| IpamError::Store(format!("etcd {what}: {e}"))),
        Err(_) => Err(IpamError::Store(format!(
            "etcd {what}: no answer within {TIMEOUT:?}"
        ))),
    }
}

impl EtcdStore {
    pub async fn connect(endpoints: Vec<String>, prefix: &str) -> Result<EtcdStore, IpamError> {
        // HTTP/2 pings notice a silently dead connection under a watch (etcd refuses pings more
        // often than every 5 s).
        let opts = ConnectOptions::new()
            .with_connect_timeout(TIMEOUT)
            .with_keep_alive(Duration::from_secs(10), TIMEOUT);
        let client = match tokio::time::timeout(TIMEOUT, Client::connect(&endpoints, Some(opts))).await {
            Ok(Ok(c)) => c,
            // Retrying cannot fix a malformed endpoint list.
            Ok(Err(e @ (etcd_client::Error::InvalidArgs(_) | etcd_client::Error::InvalidUri(_)))) => {
                return Err(IpamError::Config(format!("etcd endpoints {endpoints:?}: {e}")))
            }
            Ok(Err(e)) => return Err(IpamError::Store(format!("etcd connect {endpoints:?}: {e}"))),
            Err(_) => return Err(IpamError::Store(format!("etcd connect {endpoints:?}: timed out"))),
        };
        // The client connects lazily: ask once, so a dead or wrong endpoint shows here.
        call("status", client.clone().status()).await?;
        Ok(EtcdStore {
            client: Box::new(client),
            prefix: prefix.to_owned(),
        })
    }

    fn key(&self, subnet: IpNetwork) -> String {
        format!("{}{}", self.prefix, subnet_key(subnet))
    }

    /// Puts `lease` under a fresh etcd lease of `ttl` if `cmp` holds; the new revision, or `None`.
    async fn put_if(&self, cmp: Compare, lease: &Lease, ttl: Duration) -> Result<Option<u64>, IpamError> {
        let mut c = self.client.clone();
        let id = call("lease grant", c.lease_grant(ttl.as_secs().max(1) as i64, None))
            .await?
            .id();
        let key = self.key(lease.subnet);
        let value = serde_json::to_vec(lease).expect("serializes");
        let put = TxnOp::put(key, value, Some(PutOptions::new().with_lease(id)));
        let txn = Txn::new().when([cmp]).and_then([put]);
        // On an error the put may still have happened: the etcd lease is left to expire.
        let resp = call("txn", c.txn(txn)).await?;
        if !resp.succeeded() {
            let _ = call("lease revoke", c.lease_revoke(id)).await;
            return Ok(None);
        }
        match resp.header() {
            Some(h) => Ok(Some(h.revision() as u64)),
            None => Err(IpamError::Store("etcd txn: response without a header".into())),
        }
    }
}

/// Opens a watch on every key under `prefix`, and waits until etcd confirms it: changes after
/// that are sure to be reported.
async fn open_watch(client: &Client, prefix: &str) -> Result<WatchStream, IpamError> {
    let mut c = client.clone();
    let mut s = call("watch", c.watch(prefix, Some(WatchOptions::new().with_prefix()))).await?;
    match call("watch", s.message()).await? {
        Some(r) if r.created() && !r.canceled() => Ok(s),
        _ => Err(IpamError::Store("etcd watch: not created".into())),
    }
}

impl LeaseStore for EtcdStore {
    async fn list(&self) -> Result<Vec<Versioned>, IpamError> {
        let mut c = self.client.clone();
        let resp = call(
            "get",
            c.get(self.prefix.as_str(), Some(GetOptions::new().with_prefix())),
        )
        .await?;
        // A value that is not a lease (written by something else) is not ours to judge.
        let mut out: Vec<Versioned> = resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                Some(Versioned {
                    lease: serde_json::from_slice(kv.value()).ok()?,
                    version: kv.mod_revision() as u64,
                })
            })
            .collect();
        out.sort_by_key(|v| v.lease.subnet);
        Ok(out)
    }

    async fn create(&self, lease: &Lease, ttl: Duration) -> Result<Option<u64>, IpamError> {
        let absent = Compare::create_revision(self.key(lease.subnet), CompareOp::Equal, 0);
        self.put_if(absent, lease, ttl).await
    }

    async fn update(&self, lease: &Lease, version: u64, ttl: Duration) -> Result<Option<u64>, IpamError> {
        let same = Compare::mod_revision(self.key(lease.subnet), CompareOp::Equal, version as i64);
        self.put_if(same, lease, ttl).await
    }

    async fn delete(&self, subnet: IpNetwork, version: u64) -> Result<bool, IpamError> {
        let key = self.key(subnet);
        let same = Compare::mod_revision(key.clone(), CompareOp::Equal, version as i64);
        let txn = Txn::new().when([same]).and_then([TxnOp::delete(key, None)]);
        Ok(call("txn", self.client.clone().txn(txn)).await?.succeeded())
    }

    async fn watch(&self) -> Result<mpsc::Receiver<()>, IpamError> {
        // The first watch is in place before we return, so a list made after this misses nothing.
        let mut stream = open_watch(&self.client, &self.prefix).await?;
        let (client, prefix) = (self.client.clone(), self.prefix.clone());
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            loop {
                // Follow the stream until it ends, fails or is canceled (e.g. by a compaction).
                loop {
                    let msg = tokio::select! {
                        _ = tx.closed() => return,
                        m = stream.message() => m,
                    };
                    match msg {
                        Ok(Some(r)) if !r.canceled() => {
                            if !r.events().is_empty()
                                && matches!(tx.try_send(()), Err(TrySendError::Closed(_)))
                            {
                                return;
                            }
                        }
                        _ => break,
                    }
                }
                let mut delay = BACKOFF_MIN;
                stream = loop {
                    tokio::select! {
                        _ = tx.closed() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    match open_watch(&client, &prefix).await {
                        Ok(s) => break s,
                        Err(_) => delay = (delay * 2).min(BACKOFF_MAX),
                    }
                };
                // Changes while the watch was down are lost: have the consumer look again.
                if matches!(tx.try_send(()), Err(TrySendError::Closed(_))) {
                    return;
                }
            }
        });
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::{acquire, unix_now};
    use crate::store::conformance::{self, cfg};
    use std::net::TcpListener;
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;
    use std::time::Instant;

    const PREFIX: &str = "/cbrnet/subnets/";

    /// A throwaway single-member etcd on free local ports; killed (and its data removed) on drop.
    struct Etcd {
        child: Child,
        args: Vec<String>,
        url: String,
        _dir: tempfile::TempDir,
    }

    impl Drop for Etcd {
        fn drop(&mut self) {
            self.stop();
        }
    }

    fn free_port() -> TcpListener {
        TcpListener::bind("127.0.0.1:0").unwrap()
    }

    fn spawn(args: &[String]) -> Child {
        Command::new("/usr/bin/etcd")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting /usr/bin/etcd")
    }

    impl Etcd {
        async fn start() -> Etcd {
            // Both listeners are bound before either is dropped, so the two ports differ.
            let [p1, p2] = [free_port(), free_port()].map(|l| l.local_addr().unwrap().port());
            let dir = tempfile::tempdir().unwrap();
            let (url, peer) = (format!("http://127.0.0.1:{p1}"), format!("http://127.0.0.1:{p2}"));
            let data = dir.path().join("data").to_str().unwrap().to_owned();
            let args: Vec<String> = [
                "--name",
                "default",
                "--data-dir",
                &data,
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &format!("default={peer}"),
            ]
            .map(String::from)
            .into();
            // The guard exists before the wait, so a failed start still kills etcd.
            let mut etcd = Etcd {
                child: spawn(&args),
                args,
                url,
                _dir: dir,
            };
            etcd.wait_ready().await;
            etcd
        }

        async fn wait_ready(&mut self) {
            let t0 = Instant::now();
            while self.connect().await.is_err() {
                assert!(t0.elapsed() < Duration::from_secs(10), "etcd did not come up");
                assert!(self.child.try_wait().unwrap().is_none(), "etcd exited");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }

        fn stop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }

        /// Restarts etcd on the same ports and data.
        async fn restart(&mut self) {
            self.stop();
            self.child = spawn(&self.args);
            self.wait_ready().await;
        }

        async fn connect(&self) -> Result<EtcdStore, IpamError> {
            EtcdStore::connect(vec![self.url.clone()], PREFIX).await
        }
    }

    #[tokio::test]
    async fn same_node_gets_its_subnet_back_and_release_frees_it() {
        let etcd = Etcd::start().await;
        let s = etcd.connect().await.unwrap();
        let b = conformance::same_node_gets_its_subnet_back(&s).await;
        // the key is where the issue says, with the lease's JSON
        let kvs = s
            .client
            .clone()
            .get("/cbrnet/subnets/10.244.1.0-24", None)
            .await
            .unwrap();
        let got: Lease = serde_json::from_slice(kvs.kvs()[0].value()).unwrap();
        assert_eq!((got, kvs.kvs()[0].mod_revision() as u64), (b.lease, b.version));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn many_nodes_at_once_get_distinct_subnets() {
        let etcd = Etcd::start().await;
        conformance::many_nodes_at_once_get_distinct_subnets(Arc::new(etcd.connect().await.unwrap())).await;
    }

    #[tokio::test]
    async fn etcd_deletes_a_lease_that_is_not_renewed() {
        let etcd = Etcd::start().await;
        let s = etcd.connect().await.unwrap();
        let l = Lease {
            subnet: "10.244.7.0/24".parse().unwrap(),
            node_name: "gone".into(),
            node_ip: "192.168.1.7".parse().unwrap(),
            expires: unix_now() + 2,
        };
        assert!(s.create(&l, Duration::from_secs(2)).await.unwrap().is_some());
        assert_eq!(s.create(&l, Duration::from_secs(2)).await.unwrap(), None);
        assert_eq!(s.list().await.unwrap().len(), 1);
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(s.list().await.unwrap(), vec![]);
    }

    #[tokio::test]
    async fn watch_reports_another_clients_change() {
        let etcd = Etcd::start().await;
        let (s, other) = (etcd.connect().await.unwrap(), etcd.connect().await.unwrap());
        let mut rx = s.watch().await.unwrap();
        assert!(rx.try_recv().is_err(), "nothing changed yet");
        let c = cfg("10.244.0.0/16", 24);
        acquire(&other, &c, "b", "192.168.1.2".parse().unwrap())
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a message within 5s")
            .expect("the watch is still running");
    }

    #[tokio::test]
    async fn a_dead_etcd_is_an_error_not_a_hang() {
        let mut etcd = Etcd::start().await;
        let s = etcd.connect().await.unwrap();
        etcd.stop();
        let t0 = Instant::now();
        let e = s.list().await.unwrap_err();
        assert!(matches!(e, IpamError::Store(_)), "{e}");
        let e = etcd.connect().await.err().unwrap();
        assert!(matches!(e, IpamError::Store(_)), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    }

    #[tokio::test]
    async fn watch_comes_back_after_etcd_restarts() {
        let mut etcd = Etcd::start().await;
        let s = etcd.connect().await.unwrap();
        let mut rx = s.watch().await.unwrap();
        etcd.restart().await;
        // one message for the resync, then the watch works as before
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a resync message")
            .unwrap();
        let c = cfg("10.244.0.0/16", 24);
        acquire(&s, &c, "a", "192.168.1.1".parse().unwrap())
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a message for the change")
            .unwrap();
    }
}
