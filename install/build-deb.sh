#!/usr/bin/env bash
# Builds the Debian package cbrnet_<version>_<arch>.deb into target/debian/ (needs cargo-deb:
# `cargo install cargo-deb`). Only what the package ships is built: the daemon in release, the
# plugins in their own profile.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || { echo "build-deb.sh: cargo-deb is missing: cargo install cargo-deb" >&2; exit 1; }
cargo build --release -p cbrnet-routed --bin cbrnet-routed
# The plugins, statically linked (see .cargo/config.toml).
cargo static-cbrnet
cargo static-cbrnet-ipam
cargo deb -p cbrnet-routed --no-build "$@"
