//! Cluster-level IPAM: every node holds one subnet of the cluster CIDR as a lease in a shared
//! store.
//!
//! [`record`] is the lease as the store keeps it, [`store`] the stores ([`store::LeaseStore`] and
//! its `file:` and `etcd:` backends), and [`lease`] the acquire / renew / release logic on top of
//! any store. [`conformance`] holds what every store must do, run against each backend.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod error;
pub mod lease;
pub mod record;
pub mod store;

pub use error::ClusterError;
pub use lease::LeaseConfig;
pub use record::{Lease, Versioned};
