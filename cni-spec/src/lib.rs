//! The Container Network Interface, as the spec (0.3.0 through 1.1.0) defines it: the plugin's
//! environment, network configuration basics, results in each version's format, and errors.
//!
//! Written from the spec so that both `cbrnet` and `cbrnet-ipam` speak exactly the same dialect.

pub mod env;
pub mod error;
pub mod result;
pub mod skel;
pub mod version;

pub use env::{Command, Env};
pub use error::CniError;
pub use result::{add_default_routes, CniResult, Dns, Interface, IpConfig, Route};
pub use version::Version;

use serde::Deserialize;
use serde_json::Value;

/// The keys every network configuration has, whatever its plugin. Plugins parse their own keys
/// from the same document into their own type.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConfBase {
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub plugin_type: String,
    #[serde(default)]
    pub prev_result: Option<Value>,
}

/// One attachment that GC must keep (`cni.dev/valid-attachments`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The attachments a GC request says are still valid. The spec names the key
/// `cni.dev/valid-attachments`; early drafts (and some runtimes) say `cni.dev/attachments`. A GC
/// without the list is refused (code 7): read as "nothing is valid", it would free every address.
pub fn valid_attachments(conf: &Value) -> Result<Vec<Attachment>, CniError> {
    let v = conf
        .get("cni.dev/valid-attachments")
        .or_else(|| conf.get("cni.dev/attachments"));
    match v {
        None | Some(Value::Null) => Err(CniError::invalid_config(
            "GC needs cni.dev/valid-attachments (the attachments to keep)",
        )),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| CniError::invalid_config(format!("cni.dev/valid-attachments: {e}"))),
    }
}

/// Parses a configuration document, mapping a JSON syntax error to code 6 and a document that is
/// JSON but the wrong shape to code 7, as the spec asks.
pub fn parse_conf<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<(T, Value), CniError> {
    let raw: Value = serde_json::from_slice(bytes)
        .map_err(|e| CniError::decode(format!("network config is not JSON: {e}")))?;
    let conf = T::deserialize(&raw).map_err(|e| CniError::invalid_config(format!("network config: {e}")))?;
    Ok((conf, raw))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn gc_needs_the_list_of_valid_attachments() {
        assert_eq!(valid_attachments(&json!({})).unwrap_err().code, 7);
        assert_eq!(
            valid_attachments(&json!({"cni.dev/valid-attachments": null}))
                .unwrap_err()
                .code,
            7
        );
        assert_eq!(
            valid_attachments(&json!({"cni.dev/valid-attachments": [{"x": 1}]}))
                .unwrap_err()
                .code,
            7
        );
        let v = json!({"cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]});
        assert_eq!(valid_attachments(&v).unwrap().len(), 1);
        assert!(valid_attachments(&json!({"cni.dev/attachments": []}))
            .unwrap()
            .is_empty());
    }
}
