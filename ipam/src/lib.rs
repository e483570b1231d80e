//! Address management for cbrnet.
//!
//! Node level (this issue): [`range`] decides which addresses of a node's subnet may be handed out
//! and in what order, [`reservations`] keeps the reservations on disk crash-safe and race-free, and
//! [`allocator`] ties the two together behind the calls a CNI plugin makes. [`plugin`] serves those
//! calls as the standalone `cbrnet-ipam` CNI IPAM plugin; `cbrnet` calls [`allocator`] in-process.
//!
//! Cluster level (feature `cluster`): [`lease`] carves per-node subnets out of the cluster CIDR
//! as leases in a shared [`store`] (`file:DIR` or `etcd:URLS`).

pub mod allocator;
pub mod config;
pub mod error;
#[cfg(feature = "cluster")]
pub mod lease;
pub mod plugin;
pub mod range;
pub mod reservations;
#[cfg(feature = "cluster")]
pub mod store;

pub use allocator::Owner;
pub use config::{IpamConf, SubnetFile};
pub use error::IpamError;
