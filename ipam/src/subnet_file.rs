//! The subnet file: the node's pod subnet as `cbrnet-routed` publishes it and `cbrnet-ipam` (in
//! `cbrnet` or standalone) reads it, `{"subnet", "gateway", "clusterCIDR", "mtu"}`, and on a
//! dual-stack node the IPv6 subnet beside the IPv4 one: `{"ipv6Subnet", "ipv6Gateway",
//! "ipv6ClusterCIDR"}` (a reader of an earlier version ignores them and serves IPv4).
//!
//! The writer replaces it atomically (temp file + rename), so a reader never sees half a file.
//! The reader treats it as hostile: it reads only a regular file of sane size (a FIFO would hang
//! the plugin, a huge file would eat its memory) and validates every field before use.

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub const DEFAULT_PATH: &str = "/run/cbrnet/subnet.json";

/// A subnet file is a few hundred bytes; anything beyond this is not one.
pub const MAX_SIZE: u64 = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubnetFile {
    pub subnet: IpNetwork,
    pub gateway: IpAddr,
    #[serde(rename = "clusterCIDR", default, skip_serializing_if = "Option::is_none")]
    pub cluster_cidr: Option<IpNetwork>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// A dual-stack node's IPv6 subnet, beside the IPv4 one in `subnet`.
    #[serde(rename = "ipv6Subnet", default, skip_serializing_if = "Option::is_none")]
    pub ipv6_subnet: Option<IpNetwork>,
    #[serde(rename = "ipv6Gateway", default, skip_serializing_if = "Option::is_none")]
    pub ipv6_gateway: Option<IpAddr>,
    #[serde(rename = "ipv6ClusterCIDR", default, skip_serializing_if = "Option::is_none")]
    pub ipv6_cluster_cidr: Option<IpNetwork>,
}

/// One family's part of a subnet file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    pub subnet: IpNetwork,
    pub gateway: IpAddr,
    pub cluster_cidr: Option<IpNetwork>,
}

impl Family {
    /// A canonical subnet, the gateway a usable address inside it, the subnet inside the
    /// cluster CIDR.
    fn validate(&self) -> Result<(), String> {
        let s = self.subnet;
        if s.network() != s.ip() {
            return Err(format!("subnet {s} has host bits set"));
        }
        // /31 and /32 (v6: /127, /128) have no network address to avoid.
        let tiny = s.prefix() >= if s.is_ipv4() { 31 } else { 127 };
        if s.is_ipv4() != self.gateway.is_ipv4()
            || !s.contains(self.gateway)
            || (!tiny && self.gateway == s.network())
        {
            return Err(format!("gateway {} is not a usable address of {s}", self.gateway));
        }
        if let IpNetwork::V4(v4) = s {
            if v4.prefix() < 31 && self.gateway == IpAddr::V4(v4.broadcast()) {
                return Err(format!(
                    "gateway {} is the broadcast address of {s}",
                    self.gateway
                ));
            }
        }
        if let Some(c) = self.cluster_cidr {
            if c.is_ipv4() != s.is_ipv4() || c.prefix() > s.prefix() || !c.contains(s.network()) {
                return Err(format!("subnet {s} is not inside clusterCIDR {c}"));
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SubnetFileError {
    #[error("this node has no pod subnet yet: {} does not exist (is cbrnet-routed running?)", .0.display())]
    Missing(PathBuf),
    #[error("subnet file {path}: {1}", path = .0.display())]
    Io(PathBuf, #[source] std::io::Error),
    /// Not a regular file, too large, not JSON of the right shape, or fields that contradict each
    /// other.
    #[error("subnet file {path}: {1}", path = .0.display())]
    Invalid(PathBuf, String),
}

impl SubnetFile {
    /// Every subnet of the node with its gateway and cluster CIDR, the first family's first.
    pub fn families(&self) -> Vec<Family> {
        let mut out = vec![Family {
            subnet: self.subnet,
            gateway: self.gateway,
            cluster_cidr: self.cluster_cidr,
        }];
        if let (Some(subnet), Some(gateway)) = (self.ipv6_subnet, self.ipv6_gateway) {
            out.push(Family {
                subnet,
                gateway,
                cluster_cidr: self.ipv6_cluster_cidr,
            });
        }
        out
    }

    /// Checks that the fields make sense together: canonical subnets (an IPv6 one only beside
    /// an IPv4 one, with its gateway), each gateway a usable address inside its subnet, each
    /// subnet inside its cluster CIDR, an MTU the kernel takes.
    pub fn validate(&self) -> Result<(), String> {
        match (self.ipv6_subnet, self.ipv6_gateway) {
            (None, None) if self.ipv6_cluster_cidr.is_none() => {}
            (Some(s6), Some(_)) if s6.is_ipv6() && self.subnet.is_ipv4() => {}
            _ => {
                return Err(
                    "ipv6Subnet and ipv6Gateway go together, an IPv6 subnet beside an IPv4 subnet".into(),
                )
            }
        }
        for f in self.families() {
            f.validate()?;
        }
        if let Some(m) = self.mtu {
            if !(68..=65535).contains(&m) {
                return Err(format!("mtu {m} is out of range (68-65535)"));
            }
        }
        Ok(())
    }

    /// Parses and validates a subnet file's contents.
    pub fn parse(bytes: &[u8]) -> Result<SubnetFile, String> {
        let f: SubnetFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        f.validate()?;
        Ok(f)
    }

    /// Reads and validates the file at `path`.
    pub fn read(path: &Path) -> Result<SubnetFile, SubnetFileError> {
        let invalid = |m: String| SubnetFileError::Invalid(path.to_owned(), m);
        let io = |e: std::io::Error| SubnetFileError::Io(path.to_owned(), e);
        // O_NONBLOCK: opening a FIFO for reading must not wait for a writer.
        let file = match File::options()
            .read(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(SubnetFileError::Missing(path.to_owned()))
            }
            Err(e) => return Err(io(e)),
        };
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(invalid("not a regular file".into()));
        }
        if let Some(why) = crate::owner::untrusted(path, &meta) {
            return Err(invalid(why));
        }
        if meta.len() > MAX_SIZE {
            return Err(invalid(format!(
                "{} bytes is too large for a subnet file",
                meta.len()
            )));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        // The file may grow after the check: never read more than the limit.
        file.take(MAX_SIZE + 1).read_to_end(&mut bytes).map_err(io)?;
        if bytes.len() as u64 > MAX_SIZE {
            return Err(invalid("too large for a subnet file".into()));
        }
        SubnetFile::parse(&bytes).map_err(invalid)
    }

    /// Publishes the file at `path` atomically; does nothing if it already says the same.
    /// `Ok(true)` if it wrote.
    pub fn write(&self, path: &Path) -> std::io::Result<bool> {
        if SubnetFile::read(path).ok().as_ref() == Some(self) {
            return Ok(false);
        }
        // Readable by the plugins, written by the daemon alone, whatever the umask.
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        crate::owner::replace_file(path, &bytes).map(|()| true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn file(subnet: &str, gw: &str, cidr: Option<&str>, mtu: Option<u32>) -> SubnetFile {
        SubnetFile {
            subnet: subnet.parse().unwrap(),
            gateway: gw.parse().unwrap(),
            cluster_cidr: cidr.map(|c| c.parse().unwrap()),
            mtu,
            ipv6_subnet: None,
            ipv6_gateway: None,
            ipv6_cluster_cidr: None,
        }
    }

    #[test]
    fn a_dual_stack_file_has_both_families() {
        let mut f = file("10.244.3.0/24", "10.244.3.1", Some("10.244.0.0/16"), Some(1450));
        f.ipv6_subnet = Some("fd00:10:244:3::/64".parse().unwrap());
        f.ipv6_gateway = Some("fd00:10:244:3::1".parse().unwrap());
        f.ipv6_cluster_cidr = Some("fd00:10:244::/56".parse().unwrap());
        assert_eq!(f.validate(), Ok(()));
        let fams = f.families();
        assert_eq!(fams.len(), 2);
        assert_eq!(fams[1].gateway.to_string(), "fd00:10:244:3::1");
        // an older reader sees the IPv4 part alone; the keys are as documented
        let j = serde_json::to_value(&f).unwrap();
        assert_eq!(j["subnet"], "10.244.3.0/24");
        assert_eq!(j["ipv6Subnet"], "fd00:10:244:3::/64");
        assert_eq!(j["ipv6Gateway"], "fd00:10:244:3::1");
        assert_eq!(j["ipv6ClusterCIDR"], "fd00:10:244::/56");
        let why = |f: &SubnetFile| f.validate().unwrap_err();
        let mut bad = f.clone();
        bad.ipv6_gateway = None;
        assert!(why(&bad).contains("go together"));
        let mut bad = f.clone();
        bad.ipv6_gateway = Some("fd00:10:244:4::1".parse().unwrap());
        assert!(why(&bad).contains("gateway"));
        let mut bad = f.clone();
        bad.ipv6_cluster_cidr = Some("fd01::/56".parse().unwrap());
        assert!(why(&bad).contains("clusterCIDR"));
        // an IPv6-only node's file: its one subnet in `subnet`
        let v6 = file(
            "fd00:10:244:3::/64",
            "fd00:10:244:3::1",
            Some("fd00:10:244::/56"),
            None,
        );
        assert_eq!(v6.validate(), Ok(()));
        let mut bad = v6.clone();
        bad.ipv6_subnet = f.ipv6_subnet;
        bad.ipv6_gateway = f.ipv6_gateway;
        assert!(why(&bad).contains("beside an IPv4 subnet"));
    }

    #[test]
    fn validation_names_what_is_wrong() {
        assert!(
            file("10.244.3.0/24", "10.244.3.1", Some("10.244.0.0/16"), Some(1450))
                .validate()
                .is_ok()
        );
        let why = |f: SubnetFile| f.validate().unwrap_err();
        assert!(why(file("10.244.3.7/24", "10.244.3.1", None, None)).contains("host bits"));
        assert!(why(file("10.244.3.0/24", "10.244.4.1", None, None)).contains("gateway"));
        assert!(why(file("10.244.3.0/24", "10.244.3.0", None, None)).contains("gateway"));
        assert!(why(file("10.244.3.0/24", "10.244.3.255", None, None)).contains("broadcast"));
        assert!(why(file("10.244.3.0/24", "fd00::1", None, None)).contains("gateway"));
        assert!(
            why(file("10.245.3.0/24", "10.245.3.1", Some("10.244.0.0/16"), None)).contains("clusterCIDR")
        );
        assert!(
            why(file("10.244.0.0/15", "10.244.0.1", Some("10.244.0.0/16"), None)).contains("clusterCIDR")
        );
        assert!(why(file("10.244.3.0/24", "10.244.3.1", None, Some(67))).contains("mtu"));
        assert!(why(file("10.244.3.0/24", "10.244.3.1", None, Some(70000))).contains("mtu"));
    }

    #[test]
    fn reads_only_a_sane_regular_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("subnet.json");
        assert!(matches!(SubnetFile::read(&p), Err(SubnetFileError::Missing(_))));
        let f = file("10.244.3.0/24", "10.244.3.1", Some("10.244.0.0/16"), None);
        assert!(f.write(&p).unwrap());
        assert!(!f.write(&p).unwrap(), "the same content is not written again");
        assert_eq!(SubnetFile::read(&p).unwrap(), f);
        // no temp file is left behind
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);

        let fifo = d.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = SubnetFile::read(&fifo).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let e = SubnetFile::read(d.path()).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");

        let big = d.path().join("big");
        std::fs::write(&big, vec![b' '; MAX_SIZE as usize + 1]).unwrap();
        assert!(SubnetFile::read(&big)
            .unwrap_err()
            .to_string()
            .contains("too large"));

        std::fs::write(&p, br#"{"subnet":"10.244.3.0/24","gateway":"10.244.3.1/24"}"#).unwrap();
        assert!(matches!(SubnetFile::read(&p), Err(SubnetFileError::Invalid(..))));
        // fields a newer writer adds are ignored
        std::fs::write(
            &p,
            br#"{"subnet":"10.244.3.0/24","gateway":"10.244.3.1","new":1}"#,
        )
        .unwrap();
        assert!(SubnetFile::read(&p).is_ok());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        // Whatever the bytes, parsing never panics; what parses is valid and round-trips.
        #[test]
        fn parse_never_panics_and_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(f) = SubnetFile::parse(&bytes) {
                prop_assert!(f.validate().is_ok());
                let again = SubnetFile::parse(&serde_json::to_vec(&f).unwrap()).unwrap();
                prop_assert_eq!(again, f);
            }
        }

        #[test]
        fn structured_files_never_panic_and_what_parses_round_trips(
            a in any::<u32>(), len in 8u8..=32, g in any::<u32>(), mtu in proptest::option::of(0u32..70000)
        ) {
            let subnet = format!("{}/{len}", std::net::Ipv4Addr::from(a));
            let doc = serde_json::json!({
                "subnet": subnet, "gateway": std::net::Ipv4Addr::from(g).to_string(),
                "clusterCIDR": "0.0.0.0/0", "mtu": mtu,
            });
            let bytes = serde_json::to_vec(&doc).unwrap();
            match SubnetFile::parse(&bytes) {
                Ok(f) => prop_assert_eq!(SubnetFile::parse(&serde_json::to_vec(&f).unwrap()).unwrap(), f),
                Err(why) => prop_assert!(!why.is_empty()),
            }
        }
    }
}
