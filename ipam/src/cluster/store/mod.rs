//! Where the cluster's leases live. Every backend gives the same four atomic operations on one key
//! per subnet; [`crate::cluster::lease`] builds acquire/renew/release on them.
//!
//! - `file:DIR` ([`file`]): one directory shared by the nodes of one machine (the lab, a single
//!   node); the embedded default.
//! - `etcd:http://HOST:PORT[,...]` ([`etcd`]): a real etcd v3 cluster.

pub mod etcd;
pub mod file;

use super::error::ClusterError;
use super::record::{Lease, Versioned};
use ipnetwork::IpNetwork;
use std::future::Future;
use std::time::Duration;
use tokio::sync::mpsc;

pub trait LeaseStore: Send + Sync {
    /// Every lease in the store (a backend without expiry of its own includes expired ones).
    fn list(&self) -> impl Future<Output = Result<Vec<Versioned>, ClusterError>> + Send;
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
    /// A receiver that gets a message (coalesced) whenever the leases may have changed.
    fn watch(&self) -> impl Future<Output = Result<mpsc::Receiver<()>, ClusterError>> + Send;
}

/// A store named on the command line.
pub enum AnyStore {
    File(file::FileStore),
    Etcd(etcd::EtcdStore),
}

impl AnyStore {
    /// `file:DIR` or `etcd:http://HOST:PORT[,http://...]` (etcd keys go under `etcd_prefix`).
    pub async fn open(spec: &str, etcd_prefix: &str) -> Result<AnyStore, ClusterError> {
        if let Some(dir) = spec.strip_prefix("file:") {
            return Ok(AnyStore::File(file::FileStore::open(dir.as_ref())?));
        }
        if let Some(urls) = spec.strip_prefix("etcd:") {
            let eps: Vec<String> = urls
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            return Ok(AnyStore::Etcd(etcd::EtcdStore::connect(eps, etcd_prefix).await?));
        }
        Err(ClusterError::Config(format!(
            "store {spec:?}: expected file:DIR or etcd:http://HOST:PORT[,...]"
        )))
    }
}

impl LeaseStore for AnyStore {
    async fn list(&self) -> Result<Vec<Versioned>, ClusterError> {
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
    async fn watch(&self) -> Result<mpsc::Receiver<()>, ClusterError> {
        match self {
            AnyStore::File(s) => s.watch().await,
            AnyStore::Etcd(s) => s.watch().await,
        }
    }
}
