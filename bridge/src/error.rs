//! What the bridge manager can fail with. The plugin maps these to CNI codes, the daemon logs
//! them and retries.

/// Everything `cbrnet-bridge` can fail with.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("{0}: {1}")]
    Netlink(String, #[source] rtnetlink::Error),
    #[error("{0} exists and is not a bridge")]
    NotABridge(String),
    #[error("nftables: {0}")]
    Masq(String),
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
}

pub type Result<T, E = BridgeError> = std::result::Result<T, E>;

impl BridgeError {
    pub fn netlink(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> BridgeError {
        let what = what.into();
        move |e| BridgeError::Netlink(what, e)
    }
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BridgeError {
        let what = what.into();
        move |e| BridgeError::Io(what, e)
    }
}

/// The errno a netlink request failed with, if it was the kernel that said no.
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

/// The errnos callers tolerate, as [`errno`] reports them.
pub const ENODEV: i32 = nix::errno::Errno::ENODEV as i32;
pub const EEXIST: i32 = nix::errno::Errno::EEXIST as i32;
pub const ESRCH: i32 = nix::errno::Errno::ESRCH as i32;
pub const EADDRNOTAVAIL: i32 = nix::errno::Errno::EADDRNOTAVAIL as i32;
