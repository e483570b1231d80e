#!/bin/sh
# doctor on a node with 1,000 peers (without --probe): a namespace with an underlay of its own
# (veth, 172.20.0.1/16), a file store holding 1,000 peers' leases on it, this node's daemon
# routing them; then `cbrnet-routed doctor` timed. Everything lives in the namespace and a
# temporary directory, removed at the end.
set -eu
BIN=${BIN:-$(dirname "$0")/../target/debug}
NS=cbt-drbench-$$
D=$(mktemp -d)
cleanup() { [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null; ip netns del "$NS" 2>/dev/null; rm -rf "$D"; }
trap cleanup EXIT INT TERM
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add ul0 type veth peer name ul1
ip -n "$NS" addr add 172.20.0.1/16 dev ul0
ip -n "$NS" link set ul0 up
ip -n "$NS" link set ul1 up
mkdir -p "$D/leases" "$D/net.d"
exp=$(( $(date +%s) + 86400 ))
i=1
while [ $i -le 1000 ]; do
  a=$(( i / 250 )); b=$(( i % 250 + 2 ))
  printf '{"lease":{"subnet":"10.%d.%d.0/24","nodeName":"peer-%d","nodeIP":"172.20.%d.%d","expires":%d},"version":1}' \
    $(( 100 + i / 256 )) $(( i % 256 )) $i $a $b $exp > "$D/leases/10.$(( 100 + i / 256 )).$(( i % 256 )).0-24"
  i=$(( i + 1 ))
done
ARGS="--node-name me --node-ip 172.20.0.1 --cluster-cidr 10.0.0.0/8 --store file:$D/leases --subnet-file $D/subnet.json --cni-conf-dir $D/net.d --backend host-gw"
ip netns exec "$NS" "$BIN/cbrnet-routed" $ARGS 2>"$D/log" &
PID=$!
n=0
while [ "$(ip -n "$NS" route show proto 157 | wc -l)" -lt 1000 ]; do
  n=$(( n + 1 )); [ $n -gt 300 ] && { echo "routes did not come"; cat "$D/log"; exit 1; }
  sleep 0.1
done
for run in 1 2 3; do
  s=$(date +%s.%N)
  ip netns exec "$NS" "$BIN/cbrnet-routed" doctor $ARGS --cni-bin-dir "$BIN" > "$D/out" || true
  e=$(date +%s.%N)
  echo "run $run: $(echo "$e - $s" | bc) s; $(tail -1 "$D/out")"
  grep -E "^(FAIL|warn) | routes " "$D/out" | cut -c1-100
done
