//! Logs never go to stdout, which carries the result. stderr, which a runtime such as `ctr` shows
//! on the user's terminal, gets warnings and errors (`CBRNET_LOG=debug` for more); `logFile`
//! gets the config's `logLevel` (default info), with timestamps.

use std::fs::File;
use std::path::Path;
use std::sync::Mutex;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// `error`, `warn`, `info`, `debug` or `trace`.
pub fn parse_level(s: &str) -> Option<LevelFilter> {
    match s.to_ascii_lowercase().as_str() {
        "off" => Some(LevelFilter::OFF),
        "error" => Some(LevelFilter::ERROR),
        "warn" => Some(LevelFilter::WARN),
        "info" => Some(LevelFilter::INFO),
        "debug" => Some(LevelFilter::DEBUG),
        "trace" => Some(LevelFilter::TRACE),
        _ => None,
    }
}

pub fn init(log_file: Option<&Path>, file_level: LevelFilter) {
    let stderr_level = std::env::var("CBRNET_LOG")
        .ok()
        .and_then(|s| parse_level(&s))
        .unwrap_or(LevelFilter::WARN);
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .log_internal_errors(false)
        .with_filter(stderr_level);
    // A log file that cannot be opened is no reason to fail a pod.
    let file = log_file
        .and_then(|p| File::options().create(true).append(true).open(p).ok())
        .map(|f| {
            tracing_subscriber::fmt::layer()
                .with_writer(Mutex::new(f))
                .with_ansi(false)
                .with_target(false)
                .log_internal_errors(false)
                .with_filter(file_level)
        });
    let _ = tracing_subscriber::registry().with(stderr).with(file).try_init();
}
