//! What the daemon can fail with.

/// Everything `cbrnet-routed` can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RoutedError {
    #[error(transparent)]
    Cluster(#[from] cbrnet_ipam::cluster::ClusterError),
    #[error(transparent)]
    Bridge(#[from] cbrnet_bridge::BridgeError),
    #[error("{0}: {1}")]
    Netlink(String, #[source] rtnetlink::Error),
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("{0}")]
    Config(String),
}

pub type Result<T, E = RoutedError> = std::result::Result<T, E>;
