#!/usr/bin/env bash
# Builds what the lab's VMs install into target/vagrant/ (synced to /cbrnet in every VM):
#   cbrnet_<version>_amd64.deb  the project's Debian package (install/build-deb.sh, which needs
#                               cargo-deb: installed from crates.io if missing), rebuilt when a
#                               source file is newer than it (or with CBRNET_REBUILD_DEB=1)
#   busybox-oci.tar             the pods' image, from the host's static busybox (oci-busybox.py)
#   pki/                        etcd's TLS: a CA, etcd's certificate, a client certificate per
#                               node (pki.sh), made anew on every run
#
# Environment:
#   CBRNET_DEB=/path/x.deb   use this package instead of building one
#   CBRNET_BUSYBOX=/path     the static busybox binary (default /bin/busybox from busybox-static)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
out=$repo/target/vagrant
log() { printf '[artifacts %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { printf '[artifacts] error: %s\n' "$*" >&2; exit 1; }

mkdir -p "$out"

deb=${CBRNET_DEB:-}
if [ -z "$deb" ]; then
  deb=$(ls -t "$repo"/target/debian/cbrnet_*.deb 2>/dev/null | head -n 1 || true)
  stale=
  if [ -z "$deb" ]; then
    stale="no package built yet"
  elif [ "${CBRNET_REBUILD_DEB:-0}" = 1 ]; then
    stale="CBRNET_REBUILD_DEB=1"
  else
    newer=$(find "$repo"/Cargo.toml "$repo"/Cargo.lock "$repo"/README.md "$repo"/install \
      "$repo"/.cargo "$repo"/routed "$repo"/ipam "$repo"/cni-plugin "$repo"/bridge "$repo"/cni-spec \
      -newer "$deb" -type f -print -quit 2>/dev/null || true)
    [ -n "$newer" ] && stale="${newer#"$repo"/} is newer than $(basename "$deb")"
  fi
  if [ -n "$stale" ]; then
    if ! command -v cargo-deb >/dev/null; then
      log "installing cargo-deb from crates.io (install/build-deb.sh needs it; a few minutes)"
      cargo install --locked cargo-deb >"$out/cargo-install.log" 2>&1 \
        || { tail -n 20 "$out/cargo-install.log" >&2; die "cargo install cargo-deb failed"; }
    fi
    log "building the Debian package ($stale): install/build-deb.sh (a release build, minutes)"
    start=$SECONDS
    "$repo/install/build-deb.sh" >"$out/build-deb.log" 2>&1 \
      || { tail -n 30 "$out/build-deb.log" >&2; die "install/build-deb.sh failed (log: $out/build-deb.log)"; }
    deb=$(ls -t "$repo"/target/debian/cbrnet_*.deb | head -n 1)
    log "built $(basename "$deb") in $((SECONDS - start)) s"
  else
    log "package up to date: $(basename "$deb")"
  fi
fi
[ -f "$deb" ] || die "no such package: $deb"
rm -f "$out"/cbrnet_*.deb
cp "$deb" "$out/"

busybox=${CBRNET_BUSYBOX:-/bin/busybox}
ldd_out=$(ldd "$busybox" 2>&1 || true)
[ -x "$busybox" ] && [[ $ldd_out == *"not a dynamic executable"* ]] \
  || die "$busybox is not a static busybox (Debian: apt-get install busybox-static)"
python3 "$here/oci-busybox.py" "$busybox" "$out/busybox-oci.tar" | sed 's/^/[artifacts] /'
"$here/pki.sh" "$out/pki"
log "ready in ${out#"$repo"/}/: $(cd "$out" && ls -d cbrnet_*.deb busybox-oci.tar pki | tr '\n' ' ')"
