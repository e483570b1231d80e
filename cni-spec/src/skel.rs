//! The edge every plugin binary shares: read the environment and stdin, run the command, print
//! the result or the CNI error JSON on stdout, and exit accordingly.

use crate::{env::Command, version::version_info, CniError, Env};
use serde_json::Value;
use std::io::{Read, Write};

/// Runs one invocation. `handler` returns the JSON to print (if any) for every command but
/// VERSION, which is answered here. Never returns.
pub fn run(handler: impl FnOnce(&Env, &[u8]) -> Result<Option<Value>, CniError>) -> ! {
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
