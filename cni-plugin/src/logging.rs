//! Logs go to stderr and, with `logFile`, to that file; never to stdout, which carries the result.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

struct Tee(Option<File>);

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        if let Some(f) = &mut self.0 {
            let _ = f.write_all(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn init(log_file: Option<&Path>) {
    let file = log_file.and_then(|p| File::options().create(true).append(true).open(p).ok());
    let _ = tracing_subscriber::fmt()
        .with_writer(Mutex::new(Tee(file)))
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_target(false)
        .try_init();
}
