//! Background reclaim: addresses held by pods that vanished without DEL (a reboot, a runtime that
//! never calls DEL or GC) are taken back for every `cbrnet` network of the CNI config directory,
//! with the network's own `ipam.reclaimAfter`. The rules are the plugin's (see
//! `cbrnet_ipam::node::allocator::reclaim`): an ADD that is still running is never touched.

use cbrnet_bridge::port;
use cbrnet_ipam::node::allocator::Network;
use cbrnet_ipam::node::reservations::{validate_network_name, Owner, Reserved};
use cbrnet_ipam::{IpamConf, IpamError};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// One `cbrnet` network with in-process `cbrnet-ipam`, as a config file declares it.
#[derive(Debug)]
pub struct CbrnetNetwork {
    pub file: PathBuf,
    pub name: String,
    /// The bridge its pods' host ends are ports of.
    pub bridge: String,
    pub ipam: IpamConf,
}

/// The config files of `dir` (`*.conf`, `*.conflist`, `*.json`) in the order runtimes take
/// them: by name.
pub fn config_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "conf" || e == "conflist" || e == "json")
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The `cbrnet` networks of the config files in `dir` ([`config_files`]); one problem per file
/// that could not be read as a config. A missing directory has none.
pub fn networks(dir: &Path) -> (Vec<CbrnetNetwork>, Vec<(PathBuf, String)>) {
    let mut nets = Vec::new();
    let mut problems = Vec::new();
    let Ok(files) = config_files(dir) else {
        return (nets, problems);
    };
    for f in files {
        match read(&f) {
            Ok(found) => nets.extend(found),
            Err(why) => problems.push((f, why)),
        }
    }
    (nets, problems)
}

fn read(f: &Path) -> Result<Vec<CbrnetNetwork>, String> {
    let meta = std::fs::metadata(f).map_err(|e| e.to_string())?;
    if !meta.is_file() || meta.len() > 1024 * 1024 {
        return Err("not a regular file of at most 1 MiB".into());
    }
    let bytes = std::fs::read(f).map_err(|e| e.to_string())?;
    let doc: Value = serde_json::from_slice(&bytes).map_err(|e| format!("not JSON: {e}"))?;
    let name = doc.get("name").and_then(Value::as_str).ok_or("no network name")?;
    // A conflist lists its plugins; a plain conf is one plugin.
    let plugins: Vec<&Value> = match doc.get("plugins") {
        Some(Value::Array(p)) => p.iter().collect(),
        Some(_) => return Err("plugins is not a list".into()),
        None => vec![&doc],
    };
    let mut out = Vec::new();
    for p in plugins {
        let is_cbrnet = p.get("type").and_then(Value::as_str) == Some("cbrnet");
        let ipam = p.get("ipam").cloned().unwrap_or(Value::Null);
        if !is_cbrnet || ipam.get("type").and_then(Value::as_str) != Some("cbrnet-ipam") {
            continue;
        }
        validate_network_name(name).map_err(|e| e.to_string())?;
        let ipam = IpamConf::from_value(&ipam).map_err(|e| e.to_string())?;
        ipam.validate().map_err(|e| e.to_string())?;
        let bridge = match p.get("bridge") {
            None => "cbr0",
            Some(Value::String(b)) if !b.is_empty() => b.as_str(),
            Some(_) => return Err("bridge is not a link name".into()),
        };
        out.push(CbrnetNetwork {
            file: f.to_owned(),
            name: name.to_string(),
            bridge: bridge.to_string(),
            ipam,
        });
    }
    Ok(out)
}

/// Whether `net`'s pods are this daemon's to judge: their host ends are in this network namespace
/// only if the network takes its subnet from the subnet file this daemon writes (`subnet_file`),
/// or, with a subnet of its own, if its bridge is here. A daemon of another namespace that reads
/// the same config directory would otherwise see every pod of the network as gone.
pub fn is_ours(net: &CbrnetNetwork, subnet_file: &Path) -> Result<(), String> {
    if net.ipam.uses_subnet_file() {
        let theirs = net.ipam.subnet_file_path();
        if theirs != subnet_file {
            return Err(format!(
                "its subnet file {} is not the one this daemon writes ({})",
                theirs.display(),
                subnet_file.display()
            ));
        }
    } else if !port::exists(&net.bridge) {
        return Err(format!(
            "its bridge {} is not in this network namespace",
            net.bridge
        ));
    }
    Ok(())
}

/// Reclaims the addresses of vanished pods of `net`: those whose host veth is gone from this
/// network namespace (the daemon runs where the plugin puts the host ends).
///
/// Never waits: `Ok(None)` while another process holds the network's lock (a plugin in the
/// middle of an ADD, or stopped holding it); the next sweep tries again.
pub fn sweep(net: &CbrnetNetwork) -> Result<Option<Vec<Reserved>>, String> {
    let n = Network {
        conf: &net.ipam,
        name: &net.name,
    };
    let is_gone = |o: &Owner| !port::exists(&port::host_veth_name(&net.name, &o.container_id, &o.ifname));
    match n.reclaim(&is_gone) {
        Ok(gone) => Ok(Some(gone)),
        Err(IpamError::Busy(_)) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cbrnet_networks_and_names_bad_files() {
        let d = tempfile::tempdir().unwrap();
        let w = |name: &str, body: &str| std::fs::write(d.path().join(name), body).unwrap();
        w(
            "10-cbrnet.conflist",
            r#"{"cniVersion":"1.0.0","name":"pods","plugins":[{"type":"cbrnet","ipam":{"type":"cbrnet-ipam"}},{"type":"portmap"}]}"#,
        );
        w(
            "20-other.conf",
            r#"{"cniVersion":"1.0.0","name":"x","type":"bridge","ipam":{"type":"host-local"}}"#,
        );
        w(
            "30-single.conf",
            r#"{"cniVersion":"1.0.0","name":"one","type":"cbrnet","ipam":{"type":"cbrnet-ipam","subnet":"10.1.0.0/24"}}"#,
        );
        w("40-bad.json", "{");
        w(
            "50-escape.conf",
            r#"{"name":"../etc","type":"cbrnet","ipam":{"type":"cbrnet-ipam"}}"#,
        );
        w("README.md", "not a config");
        let (nets, problems) = networks(d.path());
        let names: Vec<&str> = nets.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["pods", "one"]);
        let bad: Vec<String> = problems
            .iter()
            .map(|(f, _)| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(bad, ["40-bad.json", "50-escape.conf"]);
        assert!(networks(&d.path().join("missing")).0.is_empty());
        assert_eq!(nets[0].bridge, "cbr0");
    }

    #[test]
    fn only_networks_of_this_daemons_subnet_file_or_bridge_are_its_own() {
        let net = |ipam: Value, bridge: &str| CbrnetNetwork {
            file: "/x.conflist".into(),
            name: "pods".into(),
            bridge: bridge.into(),
            ipam: IpamConf::from_value(&ipam).unwrap(),
        };
        let file = net(serde_json::json!({"subnetFile": "/run/a/subnet.json"}), "cbr0");
        assert!(is_ours(&file, Path::new("/run/a/subnet.json")).is_ok());
        let why = is_ours(&file, Path::new("/run/b/subnet.json")).unwrap_err();
        assert!(why.contains("/run/a/subnet.json"), "{why}");
        // with a subnet of its own, the bridge decides: loopback exists in every namespace
        let fixed = |b: &str| net(serde_json::json!({"subnet": "10.1.0.0/24"}), b);
        assert!(is_ours(&fixed("lo"), Path::new("/run/a/subnet.json")).is_ok());
        assert!(is_ours(&fixed("cbrnet-none0"), Path::new("/run/a/subnet.json")).is_err());
    }
}
