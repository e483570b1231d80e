//! What cluster-level IPAM can fail with. The daemon retries [`ClusterError::Store`] and
//! [`ClusterError::Io`] with backoff, and exits on [`ClusterError::Config`].

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Retrying cannot fix it: a malformed store spec, a bad lease configuration.
    #[error("{0}")]
    Config(String),
    #[error("cluster CIDR {0} is full: no free /{1} subnet left")]
    ClusterFull(String, u8),
    /// The store failed or did not answer.
    #[error("lease store: {0}")]
    Store(String),
    /// Another daemon, alive, holds this node name.
    #[error(
        "node name {name} is held by another live cbrnet-routed (node IP {node_ip}, holder {holder:?}); \
         refusing to take its subnet until that lease has gone unrenewed for {grace:?}"
    )]
    NameHeld {
        name: String,
        node_ip: std::net::IpAddr,
        holder: String,
        grace: std::time::Duration,
    },
    /// The record at the held subnet's key is no valid lease: it blocks the subnet for every
    /// node, so the holder keeps using it until the entry is removed and it can write it again.
    #[error(
        "the record of this node's subnet ({key}) is not a valid lease ({why}): keeping the subnet, \
         which nobody else can take while that entry blocks it; remove the entry to let it be written again"
    )]
    OwnRecordInvalid { key: String, why: String },
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
}

impl ClusterError {
    pub fn io(what: impl Into<String>, e: std::io::Error) -> Self {
        ClusterError::Io(what.into(), e)
    }

    /// Retrying cannot fix this error.
    pub fn is_permanent(&self) -> bool {
        matches!(self, ClusterError::Config(_))
    }
}
