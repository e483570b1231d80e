//! The spec versions we speak, and what each one allows.

use crate::error::CniError;
use std::fmt;

/// A CNI spec version whose config and result formats we implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl Version {
    pub const ALL: [Version; 5] = [
        Version::V0_3_0,
        Version::V0_3_1,
        Version::V0_4_0,
        Version::V1_0_0,
        Version::V1_1_0,
    ];
    pub const LATEST: Version = Version::V1_1_0;

    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_3_0 => "0.3.0",
            Version::V0_3_1 => "0.3.1",
            Version::V0_4_0 => "0.4.0",
            Version::V1_0_0 => "1.0.0",
            Version::V1_1_0 => "1.1.0",
        }
    }

    pub fn parse(s: &str) -> Result<Version, CniError> {
        Version::ALL.into_iter().find(|v| v.as_str() == s).ok_or_else(|| {
            CniError::incompatible(format!(
                "unsupported cniVersion {s:?}; supported: {}",
                Version::ALL.map(|v| v.as_str()).join(", ")
            ))
        })
    }

    /// CHECK arrived in 0.4.0.
    pub fn has_check(self) -> bool {
        self >= Version::V0_4_0
    }

    /// GC and STATUS arrived in 1.1.0.
    pub fn has_gc_status(self) -> bool {
        self >= Version::V1_1_0
    }

    /// Refuses (code 1) a command this version does not have: CHECK before 0.4.0, GC and STATUS
    /// before 1.1.0.
    pub fn allows(self, cmd: crate::Command) -> Result<(), CniError> {
        use crate::Command::*;
        let ok = match cmd {
            Check => self.has_check(),
            Gc | Status => self.has_gc_status(),
            Add | Del | Version => true,
        };
        if ok {
            Ok(())
        } else {
            Err(CniError::incompatible(format!(
                "config version {self} does not allow {}",
                cmd.as_str()
            )))
        }
    }

    /// Before 1.0.0 every `ips[]` entry carries `"version": "4"|"6"`.
    pub fn ip_has_version_field(self) -> bool {
        self < Version::V1_0_0
    }

    /// Interface `mtu`/`socketPath`/`pciID` and route `mtu`/`advmss`/`priority`/`table`/`scope`
    /// are 1.1.0 fields.
    pub fn has_1_1_fields(self) -> bool {
        self >= Version::V1_1_0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer to VERSION.
pub fn version_info() -> serde_json::Value {
    serde_json::json!({
        "cniVersion": Version::LATEST.as_str(),
        "supportedVersions": Version::ALL.map(|v| v.as_str()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_supported_version_and_rejects_others() {
        for v in Version::ALL {
            assert_eq!(Version::parse(v.as_str()).unwrap(), v);
        }
        assert_eq!(Version::parse("0.2.0").unwrap_err().code, 1);
        assert_eq!(Version::parse("").unwrap_err().code, 1);
        assert!(!Version::V0_3_1.has_check());
        assert!(Version::V0_4_0.has_check());
        assert!(!Version::V1_0_0.has_gc_status());
        assert_eq!(Version::V0_3_1.allows(crate::Command::Check).unwrap_err().code, 1);
        assert!(Version::V1_1_0.allows(crate::Command::Gc).is_ok());
    }
}
