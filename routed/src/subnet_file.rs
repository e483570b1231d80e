//! Publishing the node's subnet for `cbrnet-ipam`: written atomically (temp + rename), so the
//! plugin never reads half a file.

use crate::error::{Result, RoutedError};
use cbrnet_ipam::SubnetFile;
use std::io::Write;
use std::path::Path;

pub fn write(path: &Path, f: &SubnetFile) -> Result<()> {
    let io = |e| RoutedError::Io(format!("writing {}", path.display()), e);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    if SubnetFile::read(path).ok().as_ref() == Some(f) {
        return Ok(());
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut file = std::fs::File::create(&tmp).map_err(io)?;
    file.write_all(&serde_json::to_vec_pretty(f).expect("serializes"))
        .map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}
