//! The edge every plugin binary shares: read the environment and stdin, run the command, print
//! the result or the CNI error JSON on stdout, and exit accordingly.

use crate::{env::Command, version::version_info, CniError, Env};
use serde_json::Value;
use std::io::{Read, Write};

/// The code of a caught panic (a bug in the plugin).
pub const PANIC: u32 = 999;

/// The message of a caught panic.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Opens /dev/null on whichever of descriptors 0, 1 and 2 the caller left closed, so that no file
/// the plugin opens becomes its stdout or stderr (Rust's own start-up does this; the plugins start
/// from C's `main`, see their `main.rs`). One `poll` when all three are open.
pub fn stdio_or_dev_null() {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::BorrowedFd;
    // SAFETY: descriptors 0-2 are only polled, never read, written or closed here; a closed one
    // is reported as POLLNVAL, which is what is asked.
    let mut fds = [0, 1, 2].map(|fd| PollFd::new(unsafe { BorrowedFd::borrow_raw(fd) }, PollFlags::empty()));
    if poll(&mut fds, PollTimeout::ZERO).is_err() {
        return;
    }
    for f in &fds {
        if f.revents().is_some_and(|r| r.contains(PollFlags::POLLNVAL)) {
            // open(2) returns the lowest free descriptor: the closed one. Kept open for good.
            if let Ok(null) = std::fs::File::options().read(true).write(true).open("/dev/null") {
                std::mem::forget(null);
            }
        }
    }
}

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
    stdio_or_dev_null();
    // As Rust's start-up does: a closed pipe (stdout, or nft's stdin) is an EPIPE error to
    // report, not a signal that kills the plugin before it can.
    // SAFETY: SIG_IGN installs no handler, and no other thread exists yet.
    let _ =
        unsafe { nix::sys::signal::signal(nix::sys::signal::SIGPIPE, nix::sys::signal::SigHandler::SigIgn) };
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
        // A panic (a bug) is a CNI error on stdout, not an abort: the plugins' `main` is entered
        // from C, which a panic must not unwind into.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(&env, &stdin))).unwrap_or_else(|p| {
            Err(CniError::new(
                PANIC,
                format!("internal error: {}", panic_message(&*p)),
            ))
        })
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
