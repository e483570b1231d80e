//! What node-level IPAM can fail with, and the CNI code of each.

use crate::subnet_file::SubnetFileError;
use cni_spec::CniError;

/// Everything node-level IPAM can fail with; mapped to CNI codes at the edge.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("invalid ipam config: {0}")]
    Config(String),
    #[error(transparent)]
    SubnetFile(#[from] SubnetFileError),
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
    /// Another process holds the network's lock (a caller that must not wait asked).
    #[error("{0} is locked by another process")]
    Busy(String),
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
            // The daemon has not published the subnet yet: the runtime retries.
            IpamError::SubnetFile(SubnetFileError::Missing(_)) => CniError::TRY_AGAIN_LATER,
            IpamError::SubnetFile(SubnetFileError::Io(..)) => CniError::IO,
            IpamError::SubnetFile(SubnetFileError::Invalid(..)) => CniError::INVALID_CONFIG,
            IpamError::PoolFull(_) => CODE_POOL_FULL,
            IpamError::RequestedOutOfRange(_) | IpamError::RequestedInUse(..) => CODE_ADDRESS_UNAVAILABLE,
            IpamError::Io(..) => CniError::IO,
            IpamError::NotReserved(_) => CODE_NOT_RESERVED,
            IpamError::Busy(_) => CniError::TRY_AGAIN_LATER,
        };
        let details = std::error::Error::source(&e)
            .map(|s| s.to_string())
            .unwrap_or_default();
        CniError::new(code, e.to_string()).with_details(details)
    }
}
