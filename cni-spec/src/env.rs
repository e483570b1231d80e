//! The plugin's environment: CNI_COMMAND and friends, validated per command.

use crate::error::CniError;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Result<Command, CniError> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            other => {
                return Err(CniError::invalid_env(format!(
                    "CNI_COMMAND: unknown command {other:?}"
                )))
            }
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Gc => "GC",
            Command::Status => "STATUS",
            Command::Version => "VERSION",
        }
    }
}

/// The CNI_* variables of one invocation. Fields a command does not need are left empty.
#[derive(Debug, Clone)]
pub struct Env {
    pub command: Command,
    pub container_id: String,
    /// Empty when the runtime sent none (allowed for DEL).
    pub netns: String,
    pub ifname: String,
    /// The raw `CNI_ARGS`.
    pub args: String,
    pub path: Vec<PathBuf>,
}

impl Env {
    /// Reads and validates the environment through `get` (std::env::var in production).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
        let command = Command::parse(
            &get("CNI_COMMAND").ok_or_else(|| CniError::invalid_env("CNI_COMMAND is not set"))?,
        )?;
        let var = |name: &str| get(name).unwrap_or_default();
        let mut env = Env {
            command,
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
            args: var("CNI_ARGS"),
            path: std::env::split_paths(&var("CNI_PATH"))
                .filter(|p| !p.as_os_str().is_empty())
                .collect(),
        };
        // VERSION, GC and STATUS are not about one attachment: libcni sends dummy values, which we
        // must not judge.
        if matches!(command, Command::Add | Command::Del | Command::Check) {
            validate_container_id(&env.container_id)?;
            validate_ifname(&env.ifname)?;
            if command != Command::Del && env.netns.is_empty() {
                return Err(CniError::invalid_env("CNI_NETNS is not set"));
            }
        } else {
            env.container_id.clear();
            env.ifname.clear();
            env.netns.clear();
        }
        Ok(env)
    }

    pub fn from_process() -> Result<Env, CniError> {
        Env::from_vars(|k| std::env::var(k).ok())
    }

    /// The value of a `CNI_ARGS` key (`K1=V1;K2=V2`); unknown keys are simply never asked for.
    pub fn arg(&self, key: &str) -> Option<&str> {
        cni_arg(&self.args, key)
    }
}

pub fn cni_arg<'a>(args: &'a str, key: &str) -> Option<&'a str> {
    args.split(';').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == key).then(|| v.trim())
    })
}

/// Non-empty, alphanumerics, `_`, `.` and `-`, starting with an alphanumeric: safe as one path
/// component (no `/`, never `.` or `..`).
pub fn is_plain_name(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The spec: a container ID is non-empty and made of alphanumerics, `_`, `.` and `-`, starting with
/// an alphanumeric. That also keeps it from naming a path outside a data directory.
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    let ok = is_plain_name(id);
    if ok {
        Ok(())
    } else {
        Err(CniError::invalid_env(format!(
            "CNI_CONTAINERID {id:?} is invalid: it must be non-empty alphanumerics, '_', '.' or '-'"
        )))
    }
}

/// What the kernel accepts as an interface name: 1 to 15 bytes, not `.` or `..`, and no `/`,
/// `:` or white space.
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    let why = if name.is_empty() {
        Some("is empty")
    } else if name.len() > 15 {
        Some("is longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("is . or ..")
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        Some("contains '/', ':' or white space")
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(CniError::invalid_env(format!("CNI_IFNAME {name:?} {why}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Env, CniError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::from_vars(|k| m.get(k).cloned())
    }

    #[test]
    fn add_needs_valid_id_ifname_and_netns() {
        let ok = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc-1.2_x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/run/netns/x"),
        ];
        assert!(env(&ok).is_ok());
        for (k, v) in [
            ("CNI_CONTAINERID", "../../etc"),
            ("CNI_CONTAINERID", ""),
            ("CNI_CONTAINERID", ".hidden"),
            ("CNI_IFNAME", "a/b"),
            ("CNI_IFNAME", "sixteen-bytes-xx"),
            ("CNI_IFNAME", ""),
            ("CNI_NETNS", ""),
        ] {
            let mut p = ok.to_vec();
            p.retain(|(kk, _)| *kk != k);
            p.push((k, v));
            assert_eq!(env(&p).unwrap_err().code, 4, "{k}={v}");
        }
        assert_eq!(env(&[("CNI_COMMAND", "NOPE")]).unwrap_err().code, 4);
    }

    #[test]
    fn del_may_have_no_netns_and_version_ignores_dummies() {
        assert!(env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0")
        ])
        .is_ok());
        let v = env(&[
            ("CNI_COMMAND", "VERSION"),
            ("CNI_CONTAINERID", "dummy"),
            ("CNI_NETNS", "dummy"),
            ("CNI_IFNAME", "dummy"),
            ("CNI_PATH", "dummy"),
        ])
        .unwrap();
        assert_eq!(v.command, Command::Version);
    }

    #[test]
    fn cni_args_lookup() {
        assert_eq!(
            cni_arg("IgnoreUnknown=1;IP=10.1.2.3;K8S_POD_NAME=x", "IP"),
            Some("10.1.2.3")
        );
        assert_eq!(cni_arg("", "IP"), None);
        assert_eq!(cni_arg("garbage;IP=1.2.3.4", "IP"), Some("1.2.3.4"));
    }
}
