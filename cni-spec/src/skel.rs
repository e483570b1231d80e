//! The edge every plugin binary shares: read the environment and stdin, run the command, print
//! the result or the CNI error JSON on stdout, and exit accordingly.

use crate::{env::Command, version::version_info, CniError, Env};
use serde_json::Value;
use std::io::{Read, Write};

/// Who the plugin is, for a person who runs it by hand.
pub struct About {
    pub name: &'static str,
    pub version: &'static str,
}

impl About {
    /// What the reference plugins print: the name and version, and the CNI versions spoken.
    pub fn text(&self) -> String {
        format!(
            "CNI {} plugin v{}\nCNI protocol versions supported: {}\n",
            self.name,
            self.version,
            crate::Version::ALL.map(|v| v.as_str()).join(", ")
        )
    }
}

/// Runs one invocation. `handler` returns the JSON to print (if any) for every command but
/// VERSION, which is answered here. Run by hand (`--version`, or no `CNI_COMMAND`), it says who
/// it is and exits 0, as the reference plugins do. Never returns.
pub fn run(about: &About, handler: impl FnOnce(&Env, &[u8]) -> Result<Option<Value>, CniError>) -> ! {
    if std::env::args_os().skip(1).any(|a| a == "--version" || a == "-V") {
        print!("{}", about.text());
        let _ = std::io::stdout().flush();
        std::process::exit(0);
    }
    if std::env::var_os("CNI_COMMAND").is_none_or(|c| c.is_empty()) {
        let _ = std::io::stderr().write_all(about.text().as_bytes());
        std::process::exit(0);
    }
    let mut stdin = Vec::new();
    let outcome = Env::from_process().and_then(|env| {
        if env.command == Command::Version {
            // libcni sends dummy env values and a small config; neither matters.
            return Ok(Some(version_info()));
        }
        std::io::stdin()
            .read_to_end(&mut stdin)
            .map_err(|e| CniError::new(CniError::IO, format!("reading stdin: {e}")))?;
        handler(&env, &stdin)
    });
    let mut out = std::io::stdout().lock();
    let code = match outcome {
        Ok(Some(v)) => {
            let _ = writeln!(out, "{v}");
            0
        }
        Ok(None) => 0,
        Err(e) => {
            let _ = writeln!(out, "{}", e.to_json(&conf_version(&stdin)));
            1
        }
    };
    let _ = out.flush();
    std::process::exit(code)
}

/// The config's cniVersion for an error document: what the caller speaks, if we can tell.
fn conf_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_owned))
        .filter(|v| crate::Version::parse(v).is_ok())
        .unwrap_or_else(|| crate::Version::LATEST.as_str().to_owned())
}
