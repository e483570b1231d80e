#!/usr/bin/env bash
# cbrnet's Vagrant lab as one command, offline: three Debian VMs under libvirt (qemu, software
# emulation unless told otherwise), the project's .deb installed in each, cbrnet-routed running as
# the shipped systemd unit, pods run by containerd, and the scenarios that need real machines.
#
#   vagrant/lab.sh up      install what the host lacks, build the box and the .deb if needed,
#                          bring the three VMs up and provision them
#   vagrant/lab.sh test    assert the scenarios (PASS/FAIL with evidence; non-zero on a failure)
#   vagrant/lab.sh down    destroy the VMs, stop every daemon the lab started, remove the lab's
#                          namespaces and state (the cached box stays)
#   vagrant/lab.sh status  what is up
#   vagrant/lab.sh ssh NODE [COMMAND...]   a shell (or a command) on a VM
#   vagrant/lab.sh vagrant ARGS...         any vagrant command, inside the lab
#
# Containment: libvirtd, virtlogd, dnsmasq, qemu and vagrant (with its ssh and rsync) all run
# inside one network namespace that has only `lo` and the lab's own bridges, and one mount
# namespace in which libvirt's directories (/etc/libvirt, /var/lib/libvirt, /var/cache/libvirt,
# /var/log/libvirt), /run and /tmp are the lab's own (a checkout, state or cache under /tmp or
# /run is carried into them, so the lab runs from a clone in /tmp). Both libvirt networks are
# isolated (no forwarding, no NAT). Nothing is configured in the machine's own network namespace
# and no packet can leave the machine. When `up` or `test` fails, everything is torn down as by `down`
# (CBRNET_LAB_KEEP=1 keeps the lab for a look instead).
#
# Environment:
#   CBRNET_LAB_STATE   the lab's state: disks, libvirt, vagrant (default /var/lib/cbrnet-lab)
#   CBRNET_LAB_CACHE   the cached box (default /var/cache/cbrnet-lab)
#   CBRNET_LAB_NETNS   the network namespace's name (default cbrnet-vlab)
#   CBRNET_LAB_DRIVER  libvirt's domain type: qemu (default: software emulation) or kvm
#   CBRNET_LAB_KEEP    1: keep the lab after a failure of up or test
#   CBRNET_DEB         use this .deb instead of building one (see artifacts.sh)
set -euo pipefail

# Descriptors inherited from the caller are closed (stdin, stdout and stderr stay; 255 is bash's
# own, close-on-exec): the daemons this script starts (the namespace holder, libvirtd, virtlogd)
# outlive it and would keep them open, and with them, say, the lock of a `flock LOCKFILE
# vagrant/lab.sh up` for as long as the lab is up (or a CI runner's pipe, which it waits on).
for fd in /proc/self/fd/*; do
  fd=${fd##*/}
  if [ "$fd" -gt 2 ] && [ "$fd" != 255 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
done
unset fd

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
state=${CBRNET_LAB_STATE:-/var/lib/cbrnet-lab}
export CBRNET_LAB_CACHE=${CBRNET_LAB_CACHE:-/var/cache/cbrnet-lab}
netns=${CBRNET_LAB_NETNS:-cbrnet-vlab}
box_file=$CBRNET_LAB_CACHE/box/cbrnet-bookworm.box
box_name=cbrnet/bookworm-lab
nodes=(node1 node2 node3)

# What vagrant and the Vagrantfile see.
export VAGRANT_HOME=$state/vagrant.d
export VAGRANT_DOTFILE_PATH=$state/dot-vagrant
export VAGRANT_CHECKPOINT_DISABLE=1 VAGRANT_BOX_UPDATE_CHECK_DISABLE=1
export VAGRANT_DEFAULT_PROVIDER=libvirt
export LIBVIRT_DEFAULT_URI=qemu:///system
export CBRNET_BOX=$box_name
export CBRNET_LIBVIRT_DRIVER=${CBRNET_LAB_DRIVER:-qemu}
export CBRNET_LAB_ISOLATED=1
export CBRNET_LAB_CONSOLE_DIR=$state/console
export CBRNET_LEASE_TTL=${CBRNET_LEASE_TTL:-30s}
export CBRNET_LAB_SSH_CONFIG=$state/ssh_config

# Debian packages the host needs (the .deb's release build needs protoc and its .proto files, for
# the etcd client). qemu-utils must be the version of qemu-system-x86: a newer qemu-utils (e.g.
# from backports) Breaks the qemu-system-common that qemu-system-x86 needs.
host_packages=(vagrant vagrant-libvirt libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients
  dnsmasq-base qemu-system-x86 qemu-utils mmdebstrap grub-pc-bin grub2-common fdisk busybox-static
  iproute2 util-linux rsync openssh-client python3 protobuf-compiler libprotobuf-dev)

log() { printf '[lab %(%H:%M:%S)T] %s\n' -1 "$*"; }
warn() { printf '[lab %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { printf '[lab] error: %s\n' "$*" >&2; exit 1; }
elapsed() { local s=$(($(date +%s) - $1)); printf '%dm%02ds' $((s / 60)) $((s % 60)); }

# The PID of the lab's namespace holder, if it is alive and in the lab's network namespace.
holder_pid() {
  local pid
  pid=$(cat "$state/holder.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = sleep ] || return 1
  [ "$(stat -L -c %i "/proc/$pid/ns/net" 2>/dev/null)" = "$(stat -L -c %i "/run/netns/$netns" 2>/dev/null)" ] || return 1
  echo "$pid"
}

lab_running() { holder_pid >/dev/null 2>&1; }

# Runs a command inside the lab's network and mount namespaces.
inside() {
  local pid
  pid=$(holder_pid) || die "the lab is not up (vagrant/lab.sh up)"
  nsenter -t "$pid" -n -m -- "$@"
}

in_vagrant_dir() { inside env -C "$here" "$@"; }

pid_alive() { local p; p=$(cat "$1" 2>/dev/null) && [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

# Vagrant's output without its upload progress bar, each line with the time.
progress_filter() {
  sed -u -E 's/(\x1b\[K)?Progress: [0-9]+%//g' | while IFS= read -r line; do
    [ -n "$line" ] && printf '  %(%H:%M:%S)T %s\n' -1 "$line"
  done
  return 0
}
export -f progress_filter

# Runs a long step (vagrant up, the tests) in its own process group, its whole output appended to
# LOG and shown (filtered) as it comes. Waiting with `wait` keeps this script responsive to
# signals: the failure trap then stops the step's whole group.
step_pgid=
temp_policy=
run_step() {
  local logf=$1 rc=0
  shift
  setsid bash -c 'set -o pipefail; log=$1; shift; "$@" 2>&1 | tee -a "$log" | progress_filter' \
    run-step "$logf" "$@" &
  step_pgid=$!
  wait "$step_pgid" || rc=$?
  step_pgid=
  return "$rc"
}

# ---------------------------------------------------------------------------------------------
install_host_packages() {
  local missing=() p qv uv
  for p in "${host_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  qv=$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null || true)
  uv=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
  if [ "${#missing[@]}" -eq 0 ] && [ "$qv" = "$uv" ]; then
    log "host packages: all there"
    return
  fi
  log "host packages: installing ${missing[*]:-qemu-utils at the version of qemu-system-x86}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  qv=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
  [ -n "$qv" ] && [ "$qv" != "(none)" ] || die "qemu-system-x86 is not available from apt"
  local pkgs=()
  for p in "${host_packages[@]}"; do
    case "$p" in qemu-utils | qemu-system-x86) pkgs+=("$p=$qv") ;; *) pkgs+=("$p") ;; esac
  done
  # The packages' maintainer scripts must not start the host's own libvirtd (with its default
  # NAT network) or dnsmasq: the lab runs its own. Debian's policy-rc.d says so, for this install
  # only, unless the machine already has one.
  local out rc=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    temp_policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\n# vagrant/lab.sh: no service starts while it installs packages\nexit 101\n' >"$temp_policy"
    chmod 0755 "$temp_policy"
  fi
  out=$(apt-get install -y -qq --no-install-recommends --allow-downgrades -o DPkg::Lock::Timeout=600 \
    "${pkgs[@]}" 2>&1) || rc=$?
  [ -z "$temp_policy" ] || rm -f "$temp_policy"
  temp_policy=
  if [ "$rc" != 0 ]; then
    printf '%s\n' "$out" | tail -n 30 >&2
    die "apt-get install failed"
  fi
  log "host packages: installed"
}

# ---------------------------------------------------------------------------------------------
# The namespaces: a holder process (sleep) in a new network namespace (ip netns) and a private
# mount namespace; libvirtd and virtlogd are started inside and write their PIDs into the state.
start_namespaces() {
  if lab_running; then
    log "namespaces: already up (netns $netns, holder $(holder_pid))"
  else
    [ ! -e "/run/netns/$netns" ] || die "network namespace $netns exists but not the lab's holder: vagrant/lab.sh down first"
    log "namespaces: netns $netns (only lo), private /run, /tmp and libvirt directories"
    mkdir -p "$state"/{libvirt/etc,libvirt/lib,libvirt/cache,libvirt/log,console,logs}
    # libvirt's configuration as packaged, without any network, domain or pool definition (so no
    # default NAT network, whatever the host has).
    if [ ! -e "$state/libvirt/etc/libvirtd.conf" ]; then
      cp -a /etc/libvirt/. "$state/libvirt/etc/"
      rm -rf "$state/libvirt/etc/qemu/networks" "$state/libvirt/etc/storage" "$state"/libvirt/etc/qemu/*.xml
      mkdir -p "$state/libvirt/etc/qemu/networks/autostart"
      # No per-VM mount namespace: libvirt would rebuild /dev for each qemu and cannot move the
      # lab's stand-in for /dev/kvm there (see the holder below).
      printf '\n# cbrnet lab (vagrant/lab.sh)\nnamespaces = []\n' >>"$state/libvirt/etc/qemu.conf"
      mkdir -p "$state"/libvirt/lib/{images,qemu,dnsmasq}
      chmod 0711 "$state/libvirt/lib" "$state/libvirt/cache"
    fi
    chown libvirt-qemu "$state/console"
    ip netns add "$netns"
    ip -n "$netns" link set lo up
    # setsid: the holder outlives this script (and its terminal).
    setsid ip netns exec "$netns" unshare --mount --propagation private -- bash -c '
      set -e
      s=$1
      drv=$2
      shift 2
      # The lab works in the repository, its state and its cache: any of them under /run or /tmp
      # (a clone in /tmp, say) is carried into the private ones, through a descriptor opened
      # before they are covered.
      keep=()
      fd=10
      for p in "$@"; do
        case "$p" in
          /run/*|/tmp/*) eval "exec $fd<\"\$p\""; keep+=("$fd:$p"); fd=$((fd + 1)) ;;
        esac
      done
      mount -t tmpfs -o mode=0755 cbrnet-lab-run /run
      mkdir -p /run/lock
      mount -t tmpfs -o mode=1777 cbrnet-lab-tmp /tmp
      for k in "${keep[@]}"; do
        f=${k%%:*}
        p=${k#*:}
        mkdir -p "$p"
        mount --no-canonicalize --bind "/proc/self/fd/$f" "$p"
        eval "exec $f<&-"
      done
      mount --bind "$s/libvirt/etc" /etc/libvirt
      mount --bind "$s/libvirt/lib" /var/lib/libvirt
      mount --bind "$s/libvirt/cache" /var/cache/libvirt
      mount --bind "$s/libvirt/log" /var/log/libvirt
      # Under software emulation /dev/kvm is hidden from libvirt (an empty file in its place):
      # where it exists but cannot be used, libvirt probes KVM as usable yet finds it unusable
      # for the qemu user, throws its capability cache away on every call and probes qemu again
      # (tens of seconds each under load).
      if [ "$drv" = qemu ] && [ -e /dev/kvm ]; then
        install -m 0600 /dev/null "$s/no-kvm"
        mount --bind "$s/no-kvm" /dev/kvm
      fi
      echo $$ >"$s/holder.pid.tmp"
      mv "$s/holder.pid.tmp" "$s/holder.pid"
      exec sleep infinity' cbrnet-lab-holder "$state" "$CBRNET_LIBVIRT_DRIVER" \
      "$(cd "$here/.." && pwd -P)" "$state" "$CBRNET_LAB_CACHE" </dev/null >"$state/logs/holder.log" 2>&1 8>&- &
    for _ in $(seq 1 50); do lab_running && break; sleep 0.1; done
    lab_running || { cat "$state/logs/holder.log" >&2; die "the namespace holder did not start"; }
  fi
  if ! pid_alive "$state/virtlogd.pid"; then
    inside virtlogd --daemon --pid-file "$state/virtlogd.pid" 8>&-
  fi
  if ! pid_alive "$state/libvirtd.pid"; then
    inside libvirtd --daemon --pid-file "$state/libvirtd.pid" 8>&-
  fi
  for _ in $(seq 1 120); do
    inside virsh -q version >/dev/null 2>&1 && break
    sleep 0.5
  done
  inside virsh -q version >/dev/null || die "libvirtd does not answer"
  log "namespaces: libvirtd $(cat "$state/libvirtd.pid"), virtlogd $(cat "$state/virtlogd.pid") in netns $netns"
}


# The nodes' private network, isolated (no <forward>: libvirt only links the VMs; no DHCP, no
# DNS). `vagrant destroy` undefines it, so it is defined again before every `up`.
define_private_network() {
  if ! inside virsh -q net-info cbrnet-lab-priv >/dev/null 2>&1; then
    cat >"$state/priv-net.xml" <<'EOF'
<network>
  <name>cbrnet-lab-priv</name>
  <bridge name="cbrlab0" stp="off" delay="0"/>
  <dns enable="no"/>
  <ip address="192.168.56.1" netmask="255.255.255.0"/>
</network>
EOF
    inside virsh -q net-define "$state/priv-net.xml" >/dev/null
  fi
  inside virsh -q net-info cbrnet-lab-priv | grep -q 'Active: *yes' || inside virsh -q net-start cbrnet-lab-priv >/dev/null
}

add_box() {
  local want have
  want=$(cat "$box_file.inputs")
  have=$(cat "$state/box.inputs" 2>/dev/null || true)
  if [ "$want" = "$have" ] && inside vagrant box list 2>/dev/null | grep -q "^$box_name "; then
    return
  fi
  if [ -n "$have" ] && [ "$want" != "$have" ] && [ -n "$(ls -A "$VAGRANT_DOTFILE_PATH/machines" 2>/dev/null)" ]; then
    die "the box was rebuilt while VMs of the old one exist: vagrant/lab.sh down first"
  fi
  log "vagrant: adding the box $box_name"
  inside vagrant box remove --force "$box_name" >/dev/null 2>&1 || true
  inside vagrant box add --force --name "$box_name" "$box_file" >"$state/logs/box-add.log" 2>&1 \
    || { cat "$state/logs/box-add.log" >&2; die "vagrant box add failed"; }
  echo "$want" >"$state/box.inputs"
}

# vagrant-libvirt copies the box image into libvirt's storage pool through the libvirt API on the
# first `up` (about 2 minutes here). As the lab's storage pool starts empty every time, the image
# is put there directly instead, under the name vagrant-libvirt 0.11 looks for
# (<box>_vagrant_box_image_0_<mtime>_box.img for a box without version); should the name not be
# the one it wants, it uploads as usual.
preseed_box_volume() {
  local img vol
  img=$VAGRANT_HOME/boxes/${box_name//\//-VAGRANTSLASH-}/0/libvirt/box.img
  [ -f "$img" ] || return 0
  vol="${box_name//\//-VAGRANTSLASH-}_vagrant_box_image_0_$(stat -c %Y "$img")_box.img"
  if ! inside virsh -q pool-info default >/dev/null 2>&1; then
    inside virsh -q pool-define-as default dir --target /var/lib/libvirt/images >/dev/null
    inside virsh -q pool-start default >/dev/null
  fi
  inside virsh -q vol-info --pool default "$vol" >/dev/null 2>&1 && return 0
  ln "$img" "$state/libvirt/lib/images/$vol" 2>/dev/null || cp "$img" "$state/libvirt/lib/images/$vol"
  inside virsh -q pool-refresh default >/dev/null
  log "libvirt: box image in the storage pool as $vol"
}

write_ssh_config() {
  in_vagrant_dir vagrant ssh-config "${nodes[@]}" >"$CBRNET_LAB_SSH_CONFIG.tmp" 2>/dev/null
  mv "$CBRNET_LAB_SSH_CONFIG.tmp" "$CBRNET_LAB_SSH_CONFIG"
}

# ---------------------------------------------------------------------------------------------
diagnostics() {
  warn "---- diagnostics ----"
  if lab_running; then
    in_vagrant_dir vagrant status 2>&1 | sed 's/^/  /' >&2 || true
    inside virsh -q list --all 2>&1 | sed 's/^/  /' >&2 || true
  fi
  local f
  for f in "$state"/console/*-console.log; do
    [ -f "$f" ] || continue
    warn "last lines of $(basename "$f"):"
    tail -n 15 "$f" | tr -d '\r' | sed 's/^/  /' >&2
  done
  for f in "$state"/libvirt/log/libvirtd.log "$state"/libvirt/log/qemu/*.log; do
    [ -f "$f" ] || continue
    warn "last lines of ${f#"$state"/}:"
    tail -n 10 "$f" | sed 's/^/  /' >&2
  done
  warn "---- end of diagnostics ----"
}

# On a failure of up or test: diagnostics, then everything down (unless CBRNET_LAB_KEEP=1).
on_failure() {
  local rc=$?
  trap - EXIT INT TERM
  [ -z "$temp_policy" ] || rm -f "$temp_policy"
  if [ -n "$step_pgid" ]; then
    kill -TERM -- "-$step_pgid" 2>/dev/null || true
    sleep 2
    kill -KILL -- "-$step_pgid" 2>/dev/null || true
  fi
  if [ "$rc" != 0 ]; then
    diagnostics || true
    if [ "${CBRNET_LAB_KEEP:-0}" = 1 ]; then
      warn "failed (exit $rc); CBRNET_LAB_KEEP=1: the lab stays up (vagrant/lab.sh down removes it)"
    else
      warn "failed (exit $rc): taking the lab down"
      do_down || true
    fi
  fi
  exit "$rc"
}

# ---------------------------------------------------------------------------------------------
do_up() {
  local t0 t
  t0=$(date +%s)
  trap on_failure EXIT
  trap 'exit 130' INT TERM
  install_host_packages
  t=$(date +%s)
  "$here/box/build.sh"
  log "box ready ($(elapsed "$t"))"
  t=$(date +%s)
  "$here/artifacts.sh"
  log "artifacts ready ($(elapsed "$t"))"
  start_namespaces
  define_private_network
  add_box
  preseed_box_volume
  t=$(date +%s)
  log "vagrant up: 3 VMs of 1 GiB (${CBRNET_LIBVIRT_DRIVER}), provisioned in parallel; a few minutes under software emulation"
  run_step "$state/logs/vagrant-up.log" nsenter -t "$(holder_pid)" -n -m -- env -C "$here" vagrant up --provider libvirt \
    || die "vagrant up failed (its log: $state/logs/vagrant-up.log)"
  write_ssh_config
  log "VMs up and provisioned ($(elapsed "$t"))"
  PYTHONDONTWRITEBYTECODE=1 inside python3 "$here/lab_test.py" summary
  log "lab up in $(elapsed "$t0"); next: vagrant/lab.sh test"
  trap - EXIT INT TERM
}

do_test() {
  lab_running || die "the lab is not up (vagrant/lab.sh up)"
  trap on_failure EXIT
  trap 'exit 130' INT TERM
  write_ssh_config
  run_step "$state/logs/test.log" nsenter -t "$(holder_pid)" -n -m -- \
    env PYTHONDONTWRITEBYTECODE=1 python3 -u "$here/lab_test.py" test "$@"
  trap - EXIT INT TERM
}

do_down() {
  local t0 pid pids n
  t0=$(date +%s)
  if lab_running; then
    log "down: destroying the VMs"
    in_vagrant_dir timeout 600 vagrant destroy --force >"$state/logs/destroy.log" 2>&1 \
      || warn "vagrant destroy failed (see below); removing the domains with virsh"
    # Whatever vagrant did not remove: domains, networks, volumes of the lab's libvirt.
    for n in $(inside virsh -q list --all --name 2>/dev/null); do
      inside virsh -q destroy "$n" >/dev/null 2>&1 || true
      inside virsh -q undefine "$n" --remove-all-storage >/dev/null 2>&1 || true
    done
    for n in $(inside virsh -q net-list --all --name 2>/dev/null); do
      inside virsh -q net-destroy "$n" >/dev/null 2>&1 || true
      inside virsh -q net-undefine "$n" >/dev/null 2>&1 || true
    done
    for n in $(inside virsh -q pool-list --all --name 2>/dev/null); do
      inside virsh -q pool-destroy "$n" >/dev/null 2>&1 || true
      inside virsh -q pool-undefine "$n" >/dev/null 2>&1 || true
    done
  fi
  for n in libvirtd virtlogd; do
    if pid_alive "$state/$n.pid"; then
      pid=$(cat "$state/$n.pid")
      log "down: stopping $n ($pid)"
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  if [ -e "/run/netns/$netns" ]; then
    # Anything else still in the lab's network namespace was started by the lab (dnsmasq, a
    # qemu, a vagrant ssh, the holder): by PID, TERM then KILL.
    pids=$(ip netns pids "$netns" 2>/dev/null | tr '\n' ' ')
    if [ -n "${pids// /}" ]; then
      log "down: stopping what is left in $netns: $(for p in $pids; do printf '%s(%s) ' "$p" "$(cat "/proc/$p/comm" 2>/dev/null)"; done)"
      # shellcheck disable=SC2086
      kill $pids 2>/dev/null || true
      for _ in $(seq 1 50); do [ -z "$(ip netns pids "$netns" 2>/dev/null)" ] && break; sleep 0.1; done
      pids=$(ip netns pids "$netns" 2>/dev/null | tr '\n' ' ')
      # shellcheck disable=SC2086
      [ -z "${pids// /}" ] || kill -KILL $pids 2>/dev/null || true
    fi
    ip netns del "$netns"
  fi
  pid=$(cat "$state/holder.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = sleep ]; then
    kill "$pid" 2>/dev/null || true
  fi
  rm -rf "$state"
  log "down in $(elapsed "$t0"): no VM, daemon or namespace of the lab left; cached box kept in ${box_file%/*}"
}

do_status() {
  if ! lab_running; then
    echo "lab: down"
    return
  fi
  echo "lab: up (netns $netns, holder $(holder_pid), libvirtd $(cat "$state/libvirtd.pid" 2>/dev/null), virtlogd $(cat "$state/virtlogd.pid" 2>/dev/null))"
  in_vagrant_dir vagrant status
}

[ "$(id -u)" = 0 ] || die "run as root (namespaces, libvirt, packages)"
mkdir -p "$CBRNET_LAB_CACHE"
cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  up | test | down)
    # One lab command at a time on this machine (the daemons the lab starts do not inherit the
    # lock: 8>&-).
    exec 8<"$CBRNET_LAB_CACHE"
    flock -n 8 || die "another vagrant/lab.sh is running"
    "do_$cmd" "$@"
    ;;
  status) do_status ;;
  ssh)
    [ $# -ge 1 ] || die "usage: $0 ssh NODE [COMMAND...]"
    write_ssh_config
    if [ $# -eq 1 ]; then inside ssh -F "$CBRNET_LAB_SSH_CONFIG" -t "$1"; else inside ssh -F "$CBRNET_LAB_SSH_CONFIG" "$@"; fi
    ;;
  vagrant) in_vagrant_dir vagrant "$@" ;;
  *)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
