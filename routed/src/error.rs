/// What the daemon can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RoutedError {
    #[error(transparent)]
    Ipam(#[from] cbrnet_ipam::IpamError),
    #[error(transparent)]
    Plugin(#[from] cbrnet::error::PluginError),
    #[error("{0}: {1}")]
    Netlink(String, #[source] rtnetlink::Error),
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("{0}")]
    Config(String),
}

pub type Result<T, E = RoutedError> = std::result::Result<T, E>;
