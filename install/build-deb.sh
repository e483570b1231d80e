#!/usr/bin/env bash
# Builds the Debian package cbrnet_<version>_<arch>.deb into target/debian/ (needs cargo-deb:
# `cargo install cargo-deb`). The release build is shared with everything else in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || { echo "build-deb.sh: cargo-deb is missing: cargo install cargo-deb" >&2; exit 1; }
cargo build --release --workspace --bins
# The plugins, statically linked (see .cargo/config.toml).
cargo static-cbrnet
cargo static-cbrnet-ipam
cargo deb -p cbrnet-routed --no-build "$@"
