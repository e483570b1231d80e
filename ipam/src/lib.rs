//! Address management for cbrnet, at two levels that meet in one file.
//!
//! - [`node`]: hands each pod a unique address from its node's subnet, crash-safe and race-free;
//!   served in-process by `cbrnet` and as the standalone `cbrnet-ipam` CNI IPAM plugin.
//! - [`cluster`] (feature `cluster`): carves non-overlapping per-node subnets out of the cluster
//!   CIDR as leases in a shared store (`file:DIR` or `etcd:URLS`); used by `cbrnet-routed`.
//! - [`subnet_file`]: the node's subnet as the daemon publishes it (cluster level, writer) and the
//!   plugins read it (node level, reader).
//! - [`owner`]: the modes of what both levels write, and the refusal of what others could write.

#[cfg(feature = "cluster")]
pub mod cluster;
pub mod duration;
pub mod node;
pub mod owner;
pub mod subnet_file;

pub use node::{IpamConf, IpamError, Owner};
pub use subnet_file::SubnetFile;
