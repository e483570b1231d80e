//! The node's bridge manager, shared by the `cbrnet` plugin (which ensures the bridge on the pod
//! start-up path) and `cbrnet-routed` (which sets the node up and keeps it so).
//!
//! [`bridge`] owns the bridge itself (stable MAC, up, gateway addresses), [`forwarding`] the IP
//! forwarding sysctls, [`masq`] the masquerade table, [`netlink`] the rtnetlink socket and link
//! queries everything above is built on, [`batch`] requests sent together in one write on a plain
//! netlink socket (ADD's round trips), [`mac`] the stable MACs derived by hashing, and [`port`]
//! the names of the pods' ports (the host ends of their veth pairs). [`ethtool`] reads and sets a
//! link's TX checksum offload, which the daemon keeps off on its VXLAN device.

pub mod batch;
pub mod bridge;
pub mod error;
pub mod ethtool;
pub mod forwarding;
pub mod mac;
pub mod masq;
pub mod netlink;
pub mod port;
pub mod probe;

pub use error::{errno, BridgeError};
pub use netlink::Nl;
