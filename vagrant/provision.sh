#!/usr/bin/env bash
# Provisions one lab VM (Vagrant runs it as root): NAME NODE_IP ETCD_IP ROLE LEASE_TTL
#   ROLE: etcd (this VM runs the cluster's etcd) or -
# Installs the cbrnet Debian package that the host built (/cbrnet/cbrnet_*.deb), configures it
# through /etc/default/cbrnet-routed (etcd over TLS with the node's client certificate from
# /cbrnet/pki, made by pki.sh), starts cbrnet-routed as the package's systemd unit, and
# imports the lab's pod image into containerd. With the lab's offline box everything the package
# and the lab need is already installed; with a public box the missing packages come from apt.
set -euo pipefail
name=$1 node_ip=$2 etcd_ip=$3 role=$4 lease_ttl=$5
export DEBIAN_FRONTEND=noninteractive
log() { printf '[provision %s %(%H:%M:%S)T] %s\n' "$name" -1 "$*"; }
die() { printf '[provision %s] error: %s\n' "$name" "$*" >&2; exit 1; }

need=(containerd runc nftables iproute2 iputils-ping python3 etcd-client iperf3 ethtool)
[ "$role" = etcd ] && need+=(etcd-server)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]} from the network (the lab's offline box has them already)"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

pki=/cbrnet/pki
[ -f $pki/ca.crt ] && [ -f "$pki/$name.crt" ] || die "no etcd certificates in $pki: run vagrant/artifacts.sh on the host"
# The node's etcd client certificate, where the daemon reads it; its key root's alone.
install -d -m 0755 /etc/cbrnet
install -m 0644 $pki/ca.crt /etc/cbrnet/etcd-ca.crt
install -m 0644 "$pki/$name.crt" /etc/cbrnet/etcd-client.crt
install -m 0600 "$pki/$name.key" /etc/cbrnet/etcd-client.key
etcdctl_tls=(--cacert=/etc/cbrnet/etcd-ca.crt --cert=/etc/cbrnet/etcd-client.crt --key=/etc/cbrnet/etcd-client.key)

if [ "$role" = etcd ]; then
  log "etcd on $etcd_ip:2379, TLS only, client certificates required"
  install -d -m 0755 /etc/etcd/pki
  install -m 0644 $pki/ca.crt /etc/etcd/pki/ca.crt
  install -m 0644 $pki/server.crt /etc/etcd/pki/server.crt
  install -m 0600 -o etcd -g etcd $pki/server.key /etc/etcd/pki/server.key
  cat >/etc/default/etcd <<EOF
# Written by the cbrnet lab (vagrant/provision.sh): the lab's one-member etcd, TLS only, every
# client with a certificate of the lab's CA (vagrant/pki.sh).
ETCD_NAME=$name
ETCD_DATA_DIR=/var/lib/etcd/default
ETCD_LISTEN_CLIENT_URLS=https://$etcd_ip:2379,https://127.0.0.1:2379
ETCD_ADVERTISE_CLIENT_URLS=https://$etcd_ip:2379
ETCD_CERT_FILE=/etc/etcd/pki/server.crt
ETCD_KEY_FILE=/etc/etcd/pki/server.key
ETCD_CLIENT_CERT_AUTH=true
ETCD_TRUSTED_CA_FILE=/etc/etcd/pki/ca.crt
ETCD_LISTEN_PEER_URLS=http://$etcd_ip:2380
ETCD_INITIAL_ADVERTISE_PEER_URLS=http://$etcd_ip:2380
ETCD_INITIAL_CLUSTER=$name=http://$etcd_ip:2380
EOF
  systemctl enable etcd >/dev/null 2>&1
  systemctl restart etcd
  for _ in $(seq 1 120); do
    ETCDCTL_API=3 etcdctl --endpoints="https://$etcd_ip:2379" "${etcdctl_tls[@]}" endpoint health >/dev/null 2>&1 && break
    sleep 1
  done
  ETCDCTL_API=3 etcdctl --endpoints="https://$etcd_ip:2379" "${etcdctl_tls[@]}" endpoint health || die "etcd is not healthy"
fi

deb=$(ls -t /cbrnet/cbrnet_*.deb 2>/dev/null | head -n 1)
[ -n "$deb" ] || die "no cbrnet_*.deb in /cbrnet: run vagrant/artifacts.sh on the host"
log "installing $(basename "$deb")"
# --reinstall: a rebuilt package of the same version must replace the installed one.
# confold: keep /etc/default/cbrnet-routed as configured below on a re-provision.
apt-get install -y -qq --reinstall -o Dpkg::Options::=--force-confold "$deb" >/dev/null

# The node's settings, in the package's own defaults file (its comments are kept).
set_default() {
  local key=$1 value=$2 f=/etc/default/cbrnet-routed
  if grep -qE "^#?${key}=" "$f"; then
    sed -i -E "s|^#?${key}=.*|${key}=${value}|" "$f"
  else
    echo "${key}=${value}" >>"$f"
  fi
}
set_default CBRNET_NODE_IP "$node_ip"
set_default CBRNET_CLUSTER_CIDR 10.244.0.0/16
set_default CBRNET_STORE "etcd:https://$etcd_ip:2379"
set_default CBRNET_ETCD_CA_FILE /etc/cbrnet/etcd-ca.crt
set_default CBRNET_ETCD_CERT_FILE /etc/cbrnet/etcd-client.crt
set_default CBRNET_ETCD_KEY_FILE /etc/cbrnet/etcd-client.key
set_default CBRNET_IP_MASQ true
set_default CBRNET_LEASE_TTL "$lease_ttl"

log "starting cbrnet-routed (the package's unit; the node name is the host name, $name)"
systemctl enable cbrnet-routed >/dev/null 2>&1
# Not blocking: the unit is Type=notify and becomes active once the node has its subnet, which
# needs etcd on node1 (provisioned in parallel).
systemctl restart --no-block cbrnet-routed
for _ in $(seq 1 300); do
  systemctl is-active --quiet cbrnet-routed && [ -s /run/cbrnet/subnet.json ] && break
  sleep 1
done
if ! systemctl is-active --quiet cbrnet-routed || [ ! -s /run/cbrnet/subnet.json ]; then
  systemctl status --no-pager cbrnet-routed || true
  journalctl -u cbrnet-routed -n 40 --no-pager || true
  die "cbrnet-routed did not become ready"
fi
log "subnet: $(cat /run/cbrnet/subnet.json)"

log "containerd: importing the pod image"
systemctl enable --now containerd >/dev/null 2>&1
for _ in $(seq 1 60); do ctr version >/dev/null 2>&1 && break; sleep 1; done
ctr -n cbrnet-lab images import /cbrnet/busybox-oci.tar >/dev/null
ctr -n cbrnet-lab images ls -q | grep -qx 'localhost/cbrnet-lab/busybox:1.35' \
  || die "the pod image was not imported: $(ctr -n cbrnet-lab images ls -q)"
log "ready: cbrnet $(dpkg-query -W -f='${Version}' cbrnet), $(ctr --version | cut -d' ' -f3-), CNI config $(ls /etc/cni/net.d)"
