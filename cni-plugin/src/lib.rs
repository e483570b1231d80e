//! `cbrnet`, the CNI plugin: the node bridge, a veth pair per pod, and in-process IPAM.
//!
//! `commands` holds the CNI commands; each module below owns one thing on the node.
pub mod bridge;
pub mod commands;
pub mod config;
pub mod error;
pub mod forwarding;
pub mod ipam;
pub mod logging;
pub mod masq;
pub mod netns;
pub mod nl;
pub mod pod;
pub mod veth;
