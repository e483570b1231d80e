//! IP forwarding: a gateway bridge forwards between pods and the node's other links.

use crate::error::{BridgeError, Result};

/// Turns forwarding on (IPv4; IPv6 too if asked), writing only what is off. `Ok(true)` if
/// something was off.
pub fn enable(v6: bool) -> Result<bool> {
    let mut knobs = vec!["/proc/sys/net/ipv4/ip_forward"];
    if v6 {
        knobs.push("/proc/sys/net/ipv6/conf/all/forwarding");
    }
    let mut changed = false;
    for k in knobs {
        if std::fs::read(k)
            .map_err(BridgeError::io(format!("reading {k}")))?
            .first()
            != Some(&b'1')
        {
            std::fs::write(k, b"1").map_err(BridgeError::io(format!("writing {k}")))?;
            changed = true;
        }
    }
    Ok(changed)
}
