#!/usr/bin/env bash
# Provision one lab VM: NAME NODE_IP ETCD_IP [etcd]
set -euo pipefail
name=$1 node_ip=$2 etcd_ip=$3 role=${4:-}
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq iproute2 nftables iputils-ping ${role:+etcd-server} >/dev/null

if [ "$role" = etcd ]; then
  cat > /etc/default/etcd <<CONF
ETCD_NAME=node1
ETCD_DATA_DIR=/var/lib/etcd/default
ETCD_LISTEN_CLIENT_URLS=http://${etcd_ip}:2379,http://127.0.0.1:2379
ETCD_ADVERTISE_CLIENT_URLS=http://${etcd_ip}:2379
ETCD_LISTEN_PEER_URLS=http://${etcd_ip}:2380
ETCD_INITIAL_ADVERTISE_PEER_URLS=http://${etcd_ip}:2380
ETCD_INITIAL_CLUSTER=node1=http://${etcd_ip}:2380
CONF
  systemctl restart etcd
fi

install -d /opt/cni/bin /etc/cni/net.d
install -m 0755 /cbrnet/target/release/cbrnet /cbrnet/target/release/cbrnet-ipam /opt/cni/bin/
install -m 0755 /cbrnet/target/release/cbrnet-routed /usr/local/bin/

cat > /etc/cni/net.d/10-cbrnet.conflist <<'CONF'
{
  "cniVersion": "1.1.0",
  "name": "cbrnet",
  "plugins": [
    { "type": "cbrnet", "bridge": "cbr0", "ipam": { "type": "cbrnet-ipam" } }
  ]
}
CONF

cat > /etc/systemd/system/cbrnet-routed.service <<UNIT
[Unit]
Description=cbrnet subnet lease and host-gw routes
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=/usr/local/bin/cbrnet-routed --node-name ${name} --node-ip ${node_ip} \
  --cluster-cidr 10.244.0.0/16 --store etcd:http://${etcd_ip}:2379 --ip-masq
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable --now cbrnet-routed
