//! IP forwarding: a gateway bridge forwards between pods and the node's other links.

use crate::error::{BridgeError, Result};

/// Turns forwarding on (IPv4; IPv6 too if asked), writing only what is off. `Ok(true)` if
/// something was off.
pub fn enable(v6: bool) -> Result<bool> {
    enable_families(true, v6)
}

/// Turns forwarding on for the families asked, writing only what is off. `Ok(true)` if
/// something was off.
pub fn enable_families(v4: bool, v6: bool) -> Result<bool> {
    let mut knobs = Vec::new();
    if v4 {
        knobs.push("/proc/sys/net/ipv4/ip_forward");
    }
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

/// Keeps link `name` taking IPv6 router advertisements once forwarding is on: the kernel ignores
/// them on a forwarding link whose `accept_ra` is 1 (the default), so a node that got its
/// address or default route from them would lose it; 2 takes them even when forwarding. Only a
/// 1 is changed (0 is the operator's choice, 2 already right). `Ok(true)` if it was changed.
pub fn keep_router_advertisements(name: &str) -> Result<bool> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Ok(false);
    }
    let k = format!("/proc/sys/net/ipv6/conf/{name}/accept_ra");
    let v = match std::fs::read(&k) {
        Ok(v) => v,
        // IPv6 is off on the link (or it went): nothing to keep.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(BridgeError::io(format!("reading {k}"))(e)),
    };
    if v.trim_ascii() != b"1" {
        return Ok(false);
    }
    std::fs::write(&k, b"2").map_err(BridgeError::io(format!("writing {k}")))?;
    Ok(true)
}
