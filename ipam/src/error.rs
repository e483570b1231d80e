use cni_spec::CniError;
use std::path::PathBuf;

/// Everything node-level IPAM can fail with; mapped to CNI codes at the edge.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("invalid ipam config: {0}")]
    Config(String),
    #[error("this node has no pod subnet yet: {} does not exist (is cbrnet-routed running?)", .0.display())]
    NoSubnet(PathBuf),
    #[error("subnet file {path}: {1}", path = .0.display())]
    BadSubnetFile(PathBuf, String),
    #[error("no free address left in {0}")]
    PoolFull(String),
    #[error("requested address {0} is not in any configured range")]
    RequestedOutOfRange(std::net::IpAddr),
    #[error("requested address {0} is already reserved by {1}")]
    RequestedInUse(std::net::IpAddr, String),
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("no address is reserved for {0}")]
    NotReserved(String),
    #[error("cluster CIDR {0} is full: no free /{1} subnet left")]
    ClusterFull(String, u8),
    #[error("lease store: {0}")]
    Store(String),
}

impl IpamError {
    pub fn io(what: impl Into<String>, e: std::io::Error) -> Self {
        IpamError::Io(what.into(), e)
    }
}

/// Our own CNI error codes start at 100.
pub const CODE_POOL_FULL: u32 = 100;
pub const CODE_ADDRESS_UNAVAILABLE: u32 = 101;
pub const CODE_NOT_RESERVED: u32 = 102;

impl From<IpamError> for CniError {
    fn from(e: IpamError) -> CniError {
        let code = match &e {
            IpamError::Config(_) => CniError::INVALID_CONFIG,
            IpamError::NoSubnet(_) => CniError::TRY_AGAIN_LATER,
            IpamError::BadSubnetFile(..) => CniError::TRY_AGAIN_LATER,
            IpamError::PoolFull(_) => CODE_POOL_FULL,
            IpamError::RequestedOutOfRange(_) | IpamError::RequestedInUse(..) => CODE_ADDRESS_UNAVAILABLE,
            IpamError::Io(..) => CniError::IO,
            IpamError::NotReserved(_) => CODE_NOT_RESERVED,
            IpamError::ClusterFull(..) => CODE_POOL_FULL,
            IpamError::Store(_) => CniError::TRY_AGAIN_LATER,
        };
        let details = match &e {
            IpamError::Io(_, io) => io.to_string(),
            _ => String::new(),
        };
        CniError::new(code, e.to_string()).with_details(details)
    }
}
