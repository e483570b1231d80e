//! `etcd:` backend: not written yet (being built next).
use super::{LeaseStore, Versioned};
use crate::error::IpamError;
use crate::lease::Lease;
use ipnetwork::IpNetwork;
use std::time::Duration;
use tokio::sync::mpsc;

pub struct EtcdStore;

impl EtcdStore {
    pub async fn connect(_endpoints: Vec<String>, _prefix: &str) -> Result<EtcdStore, IpamError> {
        Err(IpamError::Config("the etcd store is not built yet".into()))
    }
}

impl LeaseStore for EtcdStore {
    async fn list(&self) -> Result<Vec<Versioned>, IpamError> {
        unreachable!()
    }
    async fn create(&self, _: &Lease, _: Duration) -> Result<Option<u64>, IpamError> {
        unreachable!()
    }
    async fn update(&self, _: &Lease, _: u64, _: Duration) -> Result<Option<u64>, IpamError> {
        unreachable!()
    }
    async fn delete(&self, _: IpNetwork, _: u64) -> Result<bool, IpamError> {
        unreachable!()
    }
    async fn watch(&self) -> Result<mpsc::Receiver<()>, IpamError> {
        unreachable!()
    }
}
