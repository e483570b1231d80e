//! Address management for cbrnet.
//!
//! Node level (this issue): [`range`] decides which addresses of a node's subnet may be handed out
//! and in what order, [`store`] keeps the reservations on disk crash-safe and race-free, and
//! [`allocator`] ties the two together behind the calls a CNI plugin makes. [`plugin`] serves those
//! calls as the standalone `cbrnet-ipam` CNI IPAM plugin; `cbrnet` calls [`allocator`] in-process.
//!
//! Cluster level (per-node subnet leases) arrives with the route daemon (issue 3).

pub mod allocator;
pub mod config;
pub mod error;
pub mod plugin;
pub mod range;
pub mod store;

pub use allocator::Owner;
pub use config::{IpamConf, SubnetFile};
pub use error::IpamError;
