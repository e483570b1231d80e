//! What `cbrnet` can fail with, and the CNI code of each (mapped at the edge, in `From` below).

use cbrnet_bridge::BridgeError;
use cbrnet_ipam::IpamError;
use cni_spec::CniError;
use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// Already a CNI error (bad env, bad config, a delegated IPAM plugin's own error).
    #[error("{0}")]
    Cni(#[from] CniError),
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(transparent)]
    Bridge(#[from] BridgeError),
    #[error("network namespace {0} does not exist")]
    NetnsMissing(String),
    #[error("CNI_NETNS {0} is not a pod's network namespace: {1}")]
    NotNetns(String, String),
    #[error("{0}: {1}")]
    Netlink(String, #[source] rtnetlink::Error),
    #[error("interface {0} already exists in the pod namespace")]
    IfnameTaken(String),
    #[error("bridge {0} is full: a Linux bridge takes at most {max} ports", max = cbrnet_bridge::port::MAX_PORTS)]
    BridgeFull(String),
    #[error("CHECK failed: {0}")]
    Check(String),
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// Several failures of one teardown, each reported.
    #[error("{0}")]
    List(ErrorList),
    /// A bug: the plugin panicked (after the undo of what an ADD had done).
    #[error("cbrnet panicked: {0}")]
    Panic(String),
    /// A failed ADD whose undo failed too: the ADD's error comes first, the undo's in the details.
    #[error("{error}; undoing the ADD also failed: {undo}")]
    AddAndUndo {
        error: Box<PluginError>,
        undo: ErrorList,
    },
}

pub type Result<T, E = PluginError> = std::result::Result<T, E>;

/// Our codes (100+). IPAM's own are 100-102 (see cbrnet_ipam::node::error).
pub const CODE_NETLINK: u32 = 110;
pub const CODE_NOT_A_BRIDGE: u32 = 111;
pub const CODE_IFNAME_TAKEN: u32 = 112;
pub const CODE_CHECK_FAILED: u32 = 113;
pub const CODE_MASQ: u32 = 114;
pub const CODE_BRIDGE_FULL: u32 = 115;
/// A panic (a bug in cbrnet), caught and reported instead of aborting.
pub const CODE_PANIC: u32 = cni_spec::skel::PANIC;

pub use cni_spec::skel::panic_message;

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

/// The failures of a teardown (DEL, or the undo of a failed ADD) that goes on past each one, so
/// that one failed step never hides another or leaves the rest undone.
#[derive(Debug, Default)]
pub struct ErrorList(pub Vec<PluginError>);

impl ErrorList {
    /// Keeps `r`'s error, if any, and gives back its value.
    pub fn keep<T>(&mut self, r: Result<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push(e);
                None
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// No error: `Ok`; one: that error; more: all of them.
    pub fn into_result(mut self) -> Result<()> {
        match self.0.len() {
            0 => Ok(()),
            1 => Err(self.0.remove(0)),
            _ => Err(PluginError::List(self)),
        }
    }
}

impl fmt::Display for ErrorList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl From<PluginError> for CniError {
    fn from(e: PluginError) -> CniError {
        let code = match &e {
            PluginError::Cni(_) | PluginError::Ipam(_) => 0,
            PluginError::Bridge(b) => match b {
                BridgeError::Netlink(..) => CODE_NETLINK,
                BridgeError::NotABridge(_) => CODE_NOT_A_BRIDGE,
                BridgeError::Masq(_) => CODE_MASQ,
                BridgeError::Io(..) => CniError::IO,
            },
            PluginError::NetnsMissing(_) => CniError::UNKNOWN_CONTAINER,
            PluginError::NotNetns(..) => CniError::INVALID_ENV,
            PluginError::Netlink(..) => CODE_NETLINK,
            PluginError::IfnameTaken(_) => CODE_IFNAME_TAKEN,
            PluginError::BridgeFull(_) => CODE_BRIDGE_FULL,
            PluginError::Check(_) => CODE_CHECK_FAILED,
            PluginError::Io(..) => CniError::IO,
            PluginError::Panic(_) => CODE_PANIC,
            PluginError::List(_) | PluginError::AddAndUndo { .. } => 0,
        };
        match e {
            PluginError::Cni(c) => c,
            PluginError::Ipam(i) => i.into(),
            // The first failure's code; every failure in the message.
            PluginError::List(list) => {
                let msg = list.to_string();
                let first = list.0.into_iter().next().map(CniError::from);
                let code = first.as_ref().map_or(CniError::IO, |c| c.code);
                CniError::new(code, msg)
            }
            PluginError::AddAndUndo { error, undo } => {
                let add = CniError::from(*error);
                let details = if add.details.is_empty() {
                    format!("undo failed: {undo}")
                } else {
                    format!("{}; undo failed: {undo}", add.details)
                };
                CniError::new(add.code, add.msg).with_details(details)
            }
            e => {
                let details = std::error::Error::source(&e)
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                CniError::new(code, e.to_string()).with_details(details)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_keeps_every_error_and_the_first_code() {
        let mut l = ErrorList::default();
        assert_eq!(l.keep(Ok::<_, PluginError>(5)), Some(5));
        l.keep::<()>(Err(PluginError::IfnameTaken("eth0".into())));
        l.keep::<()>(Err(PluginError::Check("x".into())));
        let c = CniError::from(l.into_result().unwrap_err());
        assert_eq!(c.code, CODE_IFNAME_TAKEN);
        assert!(
            c.msg.contains("eth0") && c.msg.contains("CHECK failed: x"),
            "{}",
            c.msg
        );
        assert!(ErrorList::default().into_result().is_ok());
    }

    #[test]
    fn a_failed_undo_is_in_the_details_of_the_add_error() {
        let mut undo = ErrorList::default();
        undo.keep::<()>(Err(PluginError::Check("veth".into())));
        let c = CniError::from(PluginError::AddAndUndo {
            error: Box::new(PluginError::IfnameTaken("eth0".into())),
            undo,
        });
        assert_eq!(c.code, CODE_IFNAME_TAKEN);
        assert!(
            c.details.contains("undo failed: CHECK failed: veth"),
            "{}",
            c.details
        );
    }
}
