//! `cbrnet-routed`: holds this node's subnet lease, publishes the subnet for the plugin, and keeps
//! every other node's pod subnet reachable, directly (host-gw) or through VXLAN.
//!
//! [`daemon`] is the event loop (lease, store watch, kernel events, timers); [`backend`] owns how
//! each peer is reached (the choice per peer, our routes, the VXLAN device and its entries); [`setup`] keeps the node
//! set up (bridge, gateway, forwarding, masquerading, subnet file); [`instance`] is the daemon's
//! identity in the store and its one-per-node lock; [`reclaim`] takes back addresses of vanished
//! pods; [`metrics`] serves `/healthz` and `/metrics`; [`cli`] is the command line (and judges
//! it), [`leases`] the `leases` subcommand, [`install`] the `install-cni` subcommand.
//! The node's bridge comes from `cbrnet-bridge`; leases, stores and the subnet file from
//! `cbrnet-ipam`.

pub mod backend;
pub mod cli;
pub mod daemon;
pub mod doctor;
pub mod error;
pub mod events;
pub mod install;
pub mod instance;
pub mod known;
pub mod leases;
pub mod metrics;
pub mod raw;
pub mod reclaim;
pub mod setup;
