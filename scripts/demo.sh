#!/usr/bin/env bash
# Two pods on one node, wired by cbrnet, pinging each other. Everything lives in network
# namespaces this script makes (a node and two pods) and removes on exit, pass or fail.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace -q
BIN=$PWD/target/release
tag="demo-$$"
node="cbt-$tag-node"; pods=("cbt-$tag-a" "cbt-$tag-b")
data=$(mktemp -d)
cleanup() { for n in "$node" "${pods[@]}"; do ip netns del "$n" 2>/dev/null || true; done; rm -rf "$data"; }
trap cleanup EXIT
for n in "$node" "${pods[@]}"; do ip netns add "$n"; ip -n "$n" link set lo up; done

conf=$(cat <<JSON
{"cniVersion":"1.1.0","name":"demo","type":"cbrnet",
 "ipam":{"type":"cbrnet-ipam","subnet":"10.244.1.0/24","dataDir":"$data"}}
JSON
)
cni() { # COMMAND POD
  echo "$conf" | ip netns exec "$node" env CNI_COMMAND="$1" CNI_CONTAINERID="$2" \
    CNI_NETNS="/run/netns/$2" CNI_IFNAME=eth0 CNI_PATH="$BIN" "$BIN/cbrnet" 2>/dev/null
}
for p in "${pods[@]}"; do echo "ADD $p:"; cni ADD "$p"; done
ip_b=$(ip -n "${pods[1]}" -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1)
echo; echo "ping from ${pods[0]} to ${pods[1]} ($ip_b):"
ip netns exec "${pods[0]}" ping -c 3 -i 0.2 "$ip_b"
for p in "${pods[@]}"; do cni DEL "$p"; done
echo; echo "DEL done; reservations left: $(ls "$data/demo" | grep -c '^[0-9]' || true)"
