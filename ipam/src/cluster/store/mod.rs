//! Where the cluster's leases live. Every backend gives the same four atomic operations on one key
//! per subnet; [`crate::cluster::lease`] builds acquire/renew/release on them.
//!
//! - `file:DIR` ([`file`]): one directory shared by the nodes of one machine (the lab, a single
//!   node); the embedded default.
//! - `etcd:http://HOST:PORT[,...]` or `etcd:https://...` ([`etcd`]): a real etcd v3 cluster,
//!   with TLS and an etcd user if asked ([`etcd_auth`]).

pub mod etcd;
pub mod etcd_auth;
pub mod file;

use super::error::ClusterError;
use super::record::{Invalid, Lease, Listing, Versioned};
use ipnetwork::IpNetwork;
use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// What one key holds: a lease, or an entry that is none.
pub type Entry = Result<Versioned, Invalid>;

/// What changed in a store since its watcher last looked: some keys, or everything (a watch that
/// was re-established, events that were lost).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changed {
    pub keys: BTreeSet<String>,
    pub all: bool,
}

/// The watcher's side of a store watch. Changes merge until taken, so a burst is one batch and
/// nothing is lost however slowly the watcher takes them.
pub struct Watch {
    wake: mpsc::Receiver<()>,
    pending: Arc<Mutex<Changed>>,
}

impl Watch {
    /// Waits for changes and takes them; `None` once the store stopped watching.
    pub async fn changed(&mut self) -> Option<Changed> {
        self.wake.recv().await?;
        Some(std::mem::take(
            &mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

/// The store's side of a watch.
#[derive(Clone)]
pub struct Feed {
    wake: mpsc::Sender<()>,
    pending: Arc<Mutex<Changed>>,
}

impl Feed {
    /// Records a change (`f` edits what is pending) and wakes the watcher; `false` once nobody
    /// watches.
    pub fn send(&self, f: impl FnOnce(&mut Changed)) -> bool {
        f(&mut self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        !matches!(self.wake.try_send(()), Err(mpsc::error::TrySendError::Closed(_)))
    }

    /// Resolves once nobody watches.
    pub async fn closed(&self) {
        self.wake.closed().await
    }
}

/// A connected feed and watch.
pub fn watch_pair() -> (Feed, Watch) {
    let (tx, rx) = mpsc::channel(1);
    let pending = Arc::new(Mutex::new(Changed::default()));
    (
        Feed {
            wake: tx,
            pending: pending.clone(),
        },
        Watch { wake: rx, pending },
    )
}

pub trait LeaseStore: Send + Sync {
    /// Every record in the store (a backend without expiry of its own includes expired ones),
    /// sorted by subnet, and every entry that is no valid record. One bad entry never fails the
    /// listing.
    fn list(&self) -> impl Future<Output = Result<Listing, ClusterError>> + Send;
    /// Creates the lease's key if it does not exist. `None`: it exists (somebody was first).
    fn create(
        &self,
        lease: &Lease,
        ttl: Duration,
    ) -> impl Future<Output = Result<Option<u64>, ClusterError>> + Send;
    /// Replaces the lease at its key if the key is still at `version`. `None`: it changed.
    fn update(
        &self,
        lease: &Lease,
        version: u64,
        ttl: Duration,
    ) -> impl Future<Output = Result<Option<u64>, ClusterError>> + Send;
    /// Deletes the key if it is still at `version`.
    fn delete(
        &self,
        subnet: IpNetwork,
        version: u64,
    ) -> impl Future<Output = Result<bool, ClusterError>> + Send;
    /// What one key (without prefix: `10.244.3.0-24`) holds now; `None`: nothing.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Entry>, ClusterError>> + Send;
    /// The keys that change from now on, as they change (see [`Watch`]).
    fn watch(&self) -> impl Future<Output = Result<Watch, ClusterError>> + Send;
}

/// A store named on the command line.
pub enum AnyStore {
    File(file::FileStore),
    Etcd(etcd::EtcdStore),
}

/// A store as named on the command line, judged before anything is opened or created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// `file:DIR` (an absolute path).
    File(PathBuf),
    /// `etcd:http://HOST:PORT[,...]` or `etcd:https://HOST:PORT[,...]`.
    Etcd(Vec<String>),
}

impl std::str::FromStr for StoreSpec {
    type Err = ClusterError;

    fn from_str(spec: &str) -> Result<StoreSpec, ClusterError> {
        let bad = |why: &str| {
            ClusterError::Config(format!(
                "store {spec:?}: {why} (expected file:/DIR or etcd:http(s)://HOST:PORT[,...])"
            ))
        };
        if let Some(dir) = spec.strip_prefix("file:") {
            if !dir.starts_with('/') || dir.contains('\0') {
                return Err(bad("the directory must be an absolute path"));
            }
            return Ok(StoreSpec::File(PathBuf::from(dir)));
        }
        if let Some(urls) = spec.strip_prefix("etcd:") {
            let eps: Vec<String> = urls.split(',').map(str::to_owned).collect();
            for ep in &eps {
                let rest = ep
                    .strip_prefix("http://")
                    .or_else(|| ep.strip_prefix("https://"))
                    .ok_or_else(|| bad(&format!("endpoint {ep:?} is not http:// or https://")))?;
                let (host, port) = rest
                    .trim_end_matches('/')
                    .rsplit_once(':')
                    .ok_or_else(|| bad(&format!("endpoint {ep:?} has no port")))?;
                if host.is_empty() || host.contains('/') || port.parse::<u16>().map_or(true, |p| p == 0) {
                    return Err(bad(&format!("endpoint {ep:?} is not HOST:PORT")));
                }
            }
            // One set of TLS options serves every endpoint.
            if eps.iter().any(|e| e.starts_with("https://")) && eps.iter().any(|e| e.starts_with("http://")) {
                return Err(bad("http:// and https:// endpoints mixed"));
            }
            return Ok(StoreSpec::Etcd(eps));
        }
        Err(bad("unknown kind"))
    }
}

impl AnyStore {
    /// Opens the store (etcd keys go under `etcd_prefix`). With `create` false, a file store's
    /// directory must already exist: a command that only reads never creates a store.
    pub async fn open(spec: &StoreSpec, etcd_prefix: &str, create: bool) -> Result<AnyStore, ClusterError> {
        AnyStore::open_with(spec, etcd_prefix, create, &etcd_auth::EtcdAuth::default()).await
    }

    /// [`AnyStore::open`], connecting to etcd with `auth`'s TLS files and user.
    pub async fn open_with(
        spec: &StoreSpec,
        etcd_prefix: &str,
        create: bool,
        auth: &etcd_auth::EtcdAuth,
    ) -> Result<AnyStore, ClusterError> {
        match spec {
            StoreSpec::File(dir) => Ok(AnyStore::File(if create {
                file::FileStore::open(dir)?
            } else {
                file::FileStore::open_existing(dir)?
            })),
            StoreSpec::Etcd(eps) => Ok(AnyStore::Etcd(
                etcd::EtcdStore::connect_with(eps.clone(), etcd_prefix, auth.clone()).await?,
            )),
        }
    }
}

impl LeaseStore for AnyStore {
    async fn list(&self) -> Result<Listing, ClusterError> {
        match self {
            AnyStore::File(s) => s.list().await,
            AnyStore::Etcd(s) => s.list().await,
        }
    }
    async fn create(&self, lease: &Lease, ttl: Duration) -> Result<Option<u64>, ClusterError> {
        match self {
            AnyStore::File(s) => s.create(lease, ttl).await,
            AnyStore::Etcd(s) => s.create(lease, ttl).await,
        }
    }
    async fn update(&self, lease: &Lease, version: u64, ttl: Duration) -> Result<Option<u64>, ClusterError> {
        match self {
            AnyStore::File(s) => s.update(lease, version, ttl).await,
            AnyStore::Etcd(s) => s.update(lease, version, ttl).await,
        }
    }
    async fn delete(&self, subnet: IpNetwork, version: u64) -> Result<bool, ClusterError> {
        match self {
            AnyStore::File(s) => s.delete(subnet, version).await,
            AnyStore::Etcd(s) => s.delete(subnet, version).await,
        }
    }
    async fn get(&self, key: &str) -> Result<Option<Entry>, ClusterError> {
        match self {
            AnyStore::File(s) => s.get(key).await,
            AnyStore::Etcd(s) => s.get(key).await,
        }
    }
    async fn watch(&self) -> Result<Watch, ClusterError> {
        match self {
            AnyStore::File(s) => s.watch().await,
            AnyStore::Etcd(s) => s.watch().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn store_specs_are_judged_before_use() {
        assert_eq!(
            "file:/var/lib/x".parse::<StoreSpec>().unwrap(),
            StoreSpec::File("/var/lib/x".into())
        );
        assert_eq!(
            "etcd:https://10.0.0.1:2379,https://e2:2379"
                .parse::<StoreSpec>()
                .unwrap(),
            StoreSpec::Etcd(vec!["https://10.0.0.1:2379".into(), "https://e2:2379".into()])
        );
        for bad in [
            "",
            "file:",
            "file:relative",
            "etcd:",
            "etcd:10.0.0.1:2379",
            "etcd:http://h",
            "etcd:http://h:0",
            "etcd:http://h:99999",
            "etcd:http://:2379",
            "etcd:http://h:2379,",
            "etcd:http://h:2379,https://g:2379",
            "consul:x",
            "/dir",
        ] {
            assert!(
                matches!(bad.parse::<StoreSpec>(), Err(ClusterError::Config(_))),
                "{bad:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn spec_parsing_never_panics(s in ".{0,40}") {
            let _ = s.parse::<StoreSpec>();
        }
    }
}
