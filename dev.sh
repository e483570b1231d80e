#!/usr/bin/env bash
# The two commands of the README, on a fresh Debian machine with Rust:
#   sudo ./dev.sh lab [cbrnet-lab flags]   installs what is missing, builds, runs the namespace lab
#   sudo ./dev.sh test                     installs what is missing, builds, runs every check and test
# CI runs `./dev.sh test` (.ci/run).
set -euo pipefail
cd "$(dirname "$0")"

# What the lab and the tests use from Debian: the build needs protoc and its .proto files (etcd
# client); the tests run the reference plugins, etcd, `sysctl` (procps), `ethtool` (to check the
# VXLAN device's offloads against), and real runtimes (containerd, podman) on an image made from
# busybox-static; the system's CA store (ca-certificates: a test checks that etcd's CA of its own
# is not trusted there).
PACKAGES=(
  iproute2 nftables iputils-ping procps etcd-server protobuf-compiler libprotobuf-dev
  containernetworking-plugins containerd runc podman conmon busybox-static ethtool ca-certificates
)

die() { echo "dev.sh: $*" >&2; exit 1; }

install_missing() {
  [ "$(id -u)" = 0 ] || die "run as root (sudo ./dev.sh $1): the lab and the tests create network namespaces"
  command -v apt-get >/dev/null && command -v dpkg-query >/dev/null \
    || die "this needs Debian or a derivative (apt-get); install by hand: ${PACKAGES[*]}"
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "dev.sh: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  command -v cargo >/dev/null || die "Rust is missing: install it with rustup (https://rustup.rs), then run this again"
}

case "${1:-}" in
  lab)
    shift
    install_missing lab
    cargo build --workspace
    exec ./target/debug/cbrnet-lab "$@"
    ;;
  test)
    install_missing test
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo build --workspace
    cargo test --workspace
    ;;
  *)
    echo "usage: sudo ./dev.sh lab [cbrnet-lab flags] | sudo ./dev.sh test" >&2
    exit 2
    ;;
esac
