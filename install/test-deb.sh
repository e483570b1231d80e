#!/usr/bin/env bash
# Installs the cbrnet .deb on a clean Debian 12 as a new user would (`apt-get install ./cbrnet_*.deb`
# on a fresh minbase system with systemd, made by mmdebstrap from this machine's apt sources, its
# dependencies coming from the mirror), checks what the package put where, then removes and purges
# it and checks that nothing of it is left. Nothing runs: the system is a chroot that mmdebstrap
# removes at the end, and no network is configured anywhere.
#
#   install/test-deb.sh [DEB]     default: the newest target/debian/cbrnet_*.deb (install/build-deb.sh)
#
# Needs root and mmdebstrap. Environment: CBRNET_DEB_MIRROR, a Debian mirror URL to use instead of
# the host's apt sources.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { printf 'test-deb: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (mmdebstrap makes a chroot)"
command -v mmdebstrap >/dev/null || die "mmdebstrap is missing: apt-get install mmdebstrap"
deb=${1:-$(ls -t target/debian/cbrnet_*.deb 2>/dev/null | head -n1)}
[ -f "$deb" ] || die "no .deb: build one with install/build-deb.sh, or name it"
deb=$(realpath "$deb")

# The checks, run inside the chroot by mmdebstrap's hooks (it mounts /proc, /sys and /dev there
# for them and takes them down after). Each prints what it saw; the first failure ends the run.
checks=$(mktemp)
trap 'rm -f "$checks"' EXIT
cat >"$checks" <<'EOF'
set -eu
fail() { echo "FAIL: $*"; exit 1; }
ok() { echo "ok: $*"; }
step=$1
case "$step" in
installed)
    dpkg-query -W -f='${Status} ${Version}\n' cbrnet | grep -q '^install ok installed' || fail "cbrnet is not installed"
    ok "$(dpkg-query -W -f='${Package} ${Version}: ${Status}' cbrnet); depends: $(dpkg-query -W -f='${Depends}' cbrnet)"
    for f in /usr/bin/cbrnet-routed /usr/lib/cni/cbrnet /usr/lib/cni/cbrnet-ipam; do
        [ -x "$f" ] || fail "$f is not there or not executable"
    done
    ok "binaries in /usr/bin and the plugins in /usr/lib/cni (podman's and Debian's plugin directory)"
    for p in cbrnet cbrnet-ipam; do
        [ "$(readlink /opt/cni/bin/$p)" = /usr/lib/cni/$p ] || fail "/opt/cni/bin/$p does not point at /usr/lib/cni/$p"
    done
    ok "/opt/cni/bin (containerd's plugin directory) links to them"
    grep -q '"cniVersion": "1.0.0"' /etc/cni/net.d/10-cbrnet.conflist || fail "no conflist at cniVersion 1.0.0 in /etc/cni/net.d"
    ok "/etc/cni/net.d/10-cbrnet.conflist installed, cniVersion 1.0.0"
    [ -f /etc/default/cbrnet-routed ] || fail "no /etc/default/cbrnet-routed"
    unit=/lib/systemd/system/cbrnet-routed.service
    [ -f "$unit" ] || fail "no $unit"
    grep -q '^Type=notify' "$unit" || fail "$unit is not Type=notify"
    ok "the unit: $unit (Type=notify)"
    systemd-analyze verify cbrnet-routed.service || fail "systemd-analyze verify cbrnet-routed.service"
    ok "systemd-analyze verify: clean"
    [ "$(systemctl is-enabled cbrnet-routed.service 2>/dev/null || true)" = disabled ] || fail "the unit should be installed disabled (it needs its settings first)"
    ok "the unit is disabled until configured"
    out=$(/usr/lib/cni/cbrnet 2>&1) || fail "cbrnet with no CNI_COMMAND: $out"
    case "$out" in *cbrnet*1.0.0*) ;; *) fail "cbrnet with no CNI_COMMAND said: $out" ;; esac
    ok "cbrnet with no CNI_COMMAND: $(echo "$out" | head -n1)"
    out=$(echo '{"cniVersion":"1.0.0"}' | CNI_COMMAND=VERSION /opt/cni/bin/cbrnet-ipam) || fail "cbrnet-ipam VERSION"
    case "$out" in *supportedVersions*) ;; *) fail "cbrnet-ipam VERSION said: $out" ;; esac
    ok "cbrnet-ipam VERSION: $out"
    cbrnet-routed --version | grep -q cbrnet-routed || fail "cbrnet-routed --version"
    cbrnet-routed --help | grep -q install-cni || fail "cbrnet-routed --help does not list install-cni"
    ok "$(cbrnet-routed --version); --help lists install-cni"
    command -v nft >/dev/null || fail "nftables (a dependency) was not installed"
    ok "dependency nftables installed from the mirror"
    ;;
removed)
    for f in /usr/bin/cbrnet-routed /usr/lib/cni/cbrnet /usr/lib/cni/cbrnet-ipam /opt/cni/bin/cbrnet /opt/cni/bin/cbrnet-ipam; do
        [ ! -e "$f" ] && [ ! -L "$f" ] || fail "$f is still there after remove"
    done
    [ -f /etc/default/cbrnet-routed ] || fail "remove took the administrator's /etc/default/cbrnet-routed"
    [ -f /etc/cni/net.d/10-cbrnet.conflist ] || fail "remove took the network config"
    ok "remove: binaries and links gone; the settings and the network config kept"
    ;;
purged)
    dpkg-query -W -f='${Status}\n' cbrnet 2>/dev/null | grep -q 'install ok' && fail "cbrnet still installed"
    for f in /etc/default/cbrnet-routed /etc/cni/net.d/10-cbrnet.conflist /lib/systemd/system/cbrnet-routed.service; do
        [ ! -e "$f" ] || fail "$f is still there after purge"
    done
    ok "purge: nothing of cbrnet left"
    ;;
esac
EOF

echo "test-deb: $(basename "$deb") on a fresh Debian 12 (minbase + systemd; about 2 minutes)"
mirror=()
[ -n "${CBRNET_DEB_MIRROR:-}" ] && mirror=("$CBRNET_DEB_MIRROR")
# A fresh system has apt sources: mmdebstrap gives the chroot those it was built from.
mmdebstrap --mode=root --variant=minbase --include=systemd-sysv --quiet \
  --customize-hook="copy-in $deb /tmp" \
  --customize-hook="copy-in $checks /tmp" \
  --customize-hook="chroot \"\$1\" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q /tmp/$(basename "$deb") >/dev/null" \
  --customize-hook="chroot \"\$1\" sh /tmp/$(basename "$checks") installed" \
  --customize-hook="chroot \"\$1\" env DEBIAN_FRONTEND=noninteractive apt-get remove -y -q cbrnet >/dev/null" \
  --customize-hook="chroot \"\$1\" sh /tmp/$(basename "$checks") removed" \
  --customize-hook="chroot \"\$1\" env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q cbrnet >/dev/null" \
  --customize-hook="chroot \"\$1\" sh /tmp/$(basename "$checks") purged" \
  bookworm /dev/null "${mirror[@]}" \
  || die "FAILED (see above)"
echo "test-deb: installed, checked, removed and purged on a fresh Debian 12"
echo "test-deb: 3 passed, 0 failed"
