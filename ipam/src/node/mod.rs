//! Node-level IPAM: [`range`] decides which addresses of a node's subnet may be handed out and in
//! what order, [`reservations`] keeps the reservations on disk crash-safe and race-free, and
//! [`allocator`] ties the two together behind the calls a CNI plugin makes ([`allocator::Network`]).
//! [`config`] reads the `ipam` section, [`plugin`] serves the calls as the standalone `cbrnet-ipam`
//! plugin, and [`error`] maps failures to CNI codes.

pub mod allocator;
pub mod config;
pub mod error;
pub mod plugin;
pub mod range;
pub mod reservations;

pub use allocator::Owner;
pub use config::IpamConf;
pub use error::IpamError;
