//! `cbrnet`, the CNI plugin: a veth pair per pod on the node bridge, and in-process IPAM.
//!
//! [`commands`] dispatches the CNI commands; [`add`] is ADD: [`plan`] works out what to do
//! (pure), then `add` applies it and undoes it on failure. The pod-only parts are [`veth`] (the
//! pair), [`pod`] (addresses and routes inside the pod, CHECK) and [`netns`] (entering the pod's
//! namespace); [`ipam`] is in-process `cbrnet-ipam` or a delegated IPAM plugin. The bridge,
//! forwarding and masquerading come from the node's bridge manager, `cbrnet-bridge`.
pub mod add;
pub mod commands;
pub mod config;
pub mod error;
pub mod ipam;
pub mod logging;
pub mod netns;
pub mod plan;
pub mod pod;
pub mod veth;
