use cbrnet_ipam::IpamError;
use cni_spec::CniError;

/// Everything `cbrnet` can fail with. Mapped to CNI error codes at the edge (`From` below).
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// Already a CNI error (bad env, bad config, a delegated IPAM plugin's own error).
    #[error("{0}")]
    Cni(#[from] CniError),
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error("network namespace {0} does not exist")]
    NetnsMissing(String),
    #[error("{0} is not a network namespace")]
    NotNetns(String),
    #[error("{0}: {1}")]
    Netlink(String, #[source] rtnetlink::Error),
    #[error("{0} exists and is not a bridge")]
    NotABridge(String),
    #[error("interface {0} already exists in the pod namespace")]
    IfnameTaken(String),
    #[error("CHECK failed: {0}")]
    Check(String),
    #[error("nftables: {0}")]
    Masq(String),
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
}

pub type Result<T, E = PluginError> = std::result::Result<T, E>;

/// Our codes (100+). IPAM's own are 100-102 (see cbrnet_ipam::error).
pub const CODE_NETLINK: u32 = 110;
pub const CODE_NOT_A_BRIDGE: u32 = 111;
pub const CODE_IFNAME_TAKEN: u32 = 112;
pub const CODE_CHECK_FAILED: u32 = 113;
pub const CODE_MASQ: u32 = 114;

impl PluginError {
    pub fn netlink(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> PluginError {
        let what = what.into();
        move |e| PluginError::Netlink(what, e)
    }
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PluginError {
        let what = what.into();
        move |e| PluginError::Io(what, e)
    }
}

impl From<PluginError> for CniError {
    fn from(e: PluginError) -> CniError {
        let code = match &e {
            PluginError::Cni(_) | PluginError::Ipam(_) => 0,
            PluginError::NetnsMissing(_) => CniError::UNKNOWN_CONTAINER,
            PluginError::NotNetns(_) => CniError::INVALID_ENV,
            PluginError::Netlink(..) => CODE_NETLINK,
            PluginError::NotABridge(_) => CODE_NOT_A_BRIDGE,
            PluginError::IfnameTaken(_) => CODE_IFNAME_TAKEN,
            PluginError::Check(_) => CODE_CHECK_FAILED,
            PluginError::Masq(_) => CODE_MASQ,
            PluginError::Io(..) => CniError::IO,
        };
        match e {
            PluginError::Cni(c) => return c,
            PluginError::Ipam(i) => return i.into(),
            _ => {}
        }
        let details = std::error::Error::source(&e)
            .map(|s| s.to_string())
            .unwrap_or_default();
        CniError::new(code, e.to_string()).with_details(details)
    }
}

/// The errno a netlink request failed with, if it was the kernel that said no.
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}
