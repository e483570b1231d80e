#!/usr/bin/env bash
# Builds the offline Vagrant box of the lab: Debian bookworm for vagrant-libvirt (qcow2), with
# everything the lab's VMs need already installed (containerd, runc, etcd, nftables, iperf3, ...), so
# that provisioning needs no network. The guest has an empty apt source list.
#
#   vagrant/box/build.sh [--force]
#
# Output: $CBRNET_LAB_CACHE/box/cbrnet-bookworm.box (default /var/cache/cbrnet-lab/box), and next
# to it cbrnet-bookworm.box.inputs, the SHA-256 of everything the box is made from (this script,
# the box's Vagrantfile, Vagrant's insecure key, the apt sources). With the same inputs a rerun
# does nothing; --force rebuilds anyway. Needs root, mmdebstrap, qemu-utils, grub-pc-bin,
# grub2-common, fdisk and vagrant (for its insecure key); `vagrant/lab.sh up` installs them.
#
# Environment:
#   CBRNET_LAB_CACHE   where the box is cached (default /var/cache/cbrnet-lab)
#   CBRNET_BOX_MIRROR  a Debian mirror URL to build from instead of the host's apt sources
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${CBRNET_LAB_CACHE:-/var/cache/cbrnet-lab}/box
box=$cache/cbrnet-bookworm.box
stamp=$box.inputs
force=0
case "${1:-}" in
  --force) force=1 ;;
  "") ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

log() { printf '[box %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { printf '[box] error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (mmdebstrap, loop devices, grub-install)"

# Packages of the box. systemd/udev/dbus/kernel/ssh/sudo/ifupdown/DHCP: a bootable Vagrant guest;
# iproute2, iputils-ping, nftables, python3, kmod, procps: the lab's checks and the cbrnet
# package's dependencies (libc6, nftables); containerd + runc: the runtime of the lab's pods;
# etcd-server + etcd-client: the lease store (node1) and its inspection; rsync: Vagrant's synced
# folder; iperf3 + ethtool: the VXLAN scenario's throughput between pods and the VXLAN device's
# offloads (iperf3 runs from the VM inside a pod's network namespace: the pods have busybox only).
packages=(
  systemd-sysv udev dbus linux-image-cloud-amd64 openssh-server sudo
  iproute2 ifupdown isc-dhcp-client iputils-ping netbase procps kmod
  nftables python3 etcd-server etcd-client containerd runc rsync
  iperf3 ethtool
)
suite=bookworm

insecure_key=
for k in /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub \
         /opt/vagrant/embedded/gems/gems/vagrant-*/keys/vagrant.pub; do
  [ -f "$k" ] && insecure_key=$k
done
[ -n "$insecure_key" ] || die "Vagrant's insecure public key not found: install vagrant"
for tool in mmdebstrap qemu-img sfdisk partx losetup grub-mkimage mkfs.ext4 blkid; do
  command -v "$tool" >/dev/null || die "$tool is missing (vagrant/lab.sh up installs what the box needs)"
done

# The inputs' hash: what the box is made of. Package versions come from the mirror at build time;
# the apt sources (or the mirror) are part of the inputs, so a new mirror snapshot rebuilds.
sources() {
  if [ -n "${CBRNET_BOX_MIRROR:-}" ]; then
    echo "mirror $CBRNET_BOX_MIRROR"
  else
    cat /etc/apt/sources.list 2>/dev/null || true
    cat /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null || true
  fi
}
inputs=$( {
  sha256sum "$here/build.sh" "$here/Vagrantfile" "$insecure_key" | cut -d' ' -f1
  sources | sha256sum | cut -d' ' -f1
} | sha256sum | cut -d' ' -f1)

if [ "$force" = 0 ] && [ -f "$box" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$inputs" ]; then
  log "box up to date: $box (inputs ${inputs:0:12})"
  exit 0
fi

mkdir -p "$cache"
# One build at a time; a build killed outright (SIGKILL) leaves a .build.* directory that the
# next build removes.
exec 9<"$cache"
flock 9
if [ "$force" = 0 ] && [ -f "$box" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$inputs" ]; then
  log "box up to date: $box (built meanwhile by another run)"
  exit 0
fi
for stale in "$cache"/.build.*; do
  [ -d "$stale" ] || continue
  if mountpoint -q "$stale/mnt" 2>/dev/null; then umount -l "$stale/mnt" || true; fi
  rm -rf "$stale"
done
log "building the box (inputs ${inputs:0:12}) into $cache"
work=$(mktemp -d "$cache/.build.XXXXXX")
loop=
mnt=$work/mnt
cleanup() {
  local rc=$?
  if mountpoint -q "$mnt" 2>/dev/null; then umount "$mnt" || umount -l "$mnt" || true; fi
  if [ -n "$loop" ]; then
    partx -d "$loop" 2>/dev/null || true
    losetup -d "$loop" 2>/dev/null || true
  fi
  rm -rf "$work"
  [ "$rc" = 0 ] || printf '[box] failed (exit %s); nothing was left behind\n' "$rc" >&2
}
trap cleanup EXIT
trap 'exit 130' INT TERM

root=$work/rootfs
start=$SECONDS
log "mmdebstrap $suite (minbase + ${#packages[@]} packages; takes about 2 minutes)"
mirror_args=()
[ -n "${CBRNET_BOX_MIRROR:-}" ] && mirror_args=("$CBRNET_BOX_MIRROR")
include=$(IFS=,; echo "${packages[*]}")
# mmdebstrap hands apt one of its pipes by number, to a `sh -c 'cat >&N'` that dash runs (dash
# takes one digit only): descriptors the caller left open (this script's lock, lab.sh's, a CI
# runner's or a terminal multiplexer's) push N past 9 and apt fails with "Bad fd number". It runs
# with stdin, stdout and stderr only.
only_std_fds() {
  local fd
  for fd in /proc/self/fd/*; do
    fd=${fd##*/}
    if [ "$fd" -gt 2 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
  done
  exec "$@"
}
( only_std_fds mmdebstrap --mode=root --variant=minbase --include="$include" \
  "$suite" "$root" "${mirror_args[@]}" ) >"$work/mmdebstrap.log" 2>&1 \
  || { tail -n 30 "$work/mmdebstrap.log" >&2; die "mmdebstrap failed"; }
log "root file system ready ($((SECONDS - start)) s, $(du -sh "$root" | cut -f1))"

log "configuring the guest (vagrant user, ssh, eth0 by DHCP, serial console, no apt sources)"
chroot "$root" useradd --create-home --shell /bin/bash --groups sudo vagrant
echo 'vagrant:vagrant' | chroot "$root" chpasswd
printf 'vagrant ALL=(ALL) NOPASSWD:ALL\nDefaults:vagrant !requiretty\n' >"$root/etc/sudoers.d/vagrant"
chmod 0440 "$root/etc/sudoers.d/vagrant"
install -d -m 0700 "$root/home/vagrant/.ssh"
install -m 0600 "$insecure_key" "$root/home/vagrant/.ssh/authorized_keys"
chroot "$root" chown -R vagrant:vagrant /home/vagrant/.ssh

echo cbrnet-box >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tcbrnet-box\n' >"$root/etc/hosts"
cat >"$root/etc/network/interfaces" <<'EOF'
# The box: eth0 (Vagrant's management network) by DHCP; Vagrant adds the private network.
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback

allow-hotplug eth0
iface eth0 inet dhcp
EOF
echo 'UseDNS no' >"$root/etc/ssh/sshd_config.d/vagrant.conf"

# Every VM gets its own identity at first boot: machine ID (cbrnet-routed writes it into its
# lease) and SSH host keys.
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id" "$root"/etc/ssh/ssh_host_*
cat >"$root/etc/systemd/system/ssh-host-keys.service" <<'EOF'
[Unit]
Description=Generate this VM's SSH host keys
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
EOF
chroot "$root" systemctl enable ssh-host-keys.service ssh.service serial-getty@ttyS0.service >/dev/null 2>&1
# etcd runs only where the lab's provisioning starts it (node1); iperf3 only when a scenario runs
# it (its package leaves its daemon off unless told otherwise; off it stays).
chroot "$root" systemctl disable etcd.service >/dev/null 2>&1
chroot "$root" systemctl disable iperf3.service >/dev/null 2>&1 || true

# Guests have no network: no apt sources, no package lists.
rm -f "$root"/etc/apt/sources.list.d/* "$root/etc/apt/apt.conf.d/99mmdebstrap"
: >"$root/etc/apt/sources.list"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb

log "disk image: 8 GiB raw, one MBR partition, ext4, GRUB for BIOS (i386-pc)"
raw=$work/disk.raw
truncate -s 8G "$raw"
echo 'start=2048, type=83, bootable' | sfdisk --quiet "$raw"
loop=$(losetup --find --show --partscan "$raw")
udevadm settle 2>/dev/null || true
[ -b "${loop}p1" ] || partx -a "$loop"
[ -b "${loop}p1" ] || die "no partition device ${loop}p1"
mkfs.ext4 -q -L root "${loop}p1"
uuid=$(blkid -c /dev/null -s UUID -o value "${loop}p1")
echo "UUID=$uuid / ext4 errors=remount-ro 0 1" >"$root/etc/fstab"
mkdir -p "$mnt"
mount "${loop}p1" "$mnt"
cp -a "$root/." "$mnt/"
[ -e "$mnt/vmlinuz" ] && [ -e "$mnt/initrd.img" ] || die "no /vmlinuz or /initrd.img in the root file system"
# GRUB for BIOS, set up by hand rather than by grub-install, which cannot map a loop device's
# partition to a GRUB drive on this kernel ("cannot find a GRUB drive for /dev/loop0p1"). The
# result is the same: boot.img in the MBR (the partition table kept), core.img in the gap before
# the partition (at sector 1, where boot.img looks by default; grub-mkimage fills in core.img's
# length), the modules under /boot/grub/i386-pc.
grub_lib=/usr/lib/grub/i386-pc
install -d "$mnt/boot/grub/i386-pc"
cp "$grub_lib"/*.mod "$grub_lib"/*.lst "$mnt/boot/grub/i386-pc/"
# The box's disk is the VM's first (and only BIOS) disk: hd0.
grub-mkimage -O i386-pc -o "$work/core.img" -p '(hd0,msdos1)/boot/grub' biosdisk part_msdos ext2
[ "$(stat -c %s "$work/core.img")" -lt $((2047 * 512)) ] || die "core.img does not fit before the partition"
cat >"$mnt/boot/grub/grub.cfg" <<EOF
set timeout=0
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
menuentry "Debian $suite (cbrnet lab box)" {
  search --no-floppy --fs-uuid --set=root $uuid
  linux /vmlinuz root=UUID=$uuid ro console=tty0 console=ttyS0,115200 net.ifnames=0 biosdevname=0
  initrd /initrd.img
}
EOF
umount "$mnt"
partx -d "$loop" 2>/dev/null || true
losetup -d "$loop"
loop=
dd if="$grub_lib/boot.img" of="$raw" bs=440 count=1 conv=notrunc status=none
# A hard disk: the boot drive check becomes two NOPs, as grub-bios-setup does for hard disks.
printf '\x90\x90' | dd of="$raw" bs=1 seek=$((0x66)) conv=notrunc status=none
dd if="$work/core.img" of="$raw" bs=512 seek=1 conv=notrunc status=none

log "converting to qcow2"
mkdir -p "$work/box"
qemu-img convert -O qcow2 "$raw" "$work/box/box.img"
rm -f "$raw"
echo '{"provider":"libvirt","format":"qcow2","virtual_size":8}' >"$work/box/metadata.json"
cp "$here/Vagrantfile" "$work/box/Vagrantfile"
tar -C "$work/box" -cf "$work/box.tar" metadata.json Vagrantfile box.img
mv -f "$work/box.tar" "$box"
echo "$inputs" >"$stamp"
log "box built in $((SECONDS - start)) s: $box ($(du -h "$box" | cut -f1))"
