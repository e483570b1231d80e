#!/usr/bin/env bash
# Add two pods (network namespaces) on this VM through the installed cbrnet, as a runtime would,
# and print their addresses. Run on every node, then ping across nodes from one pod:
#   sudo ip netns exec pod-a ping <address of a pod on another node>
set -euo pipefail
conf=$(python3 -c 'import json;c=json.load(open("/etc/cni/net.d/10-cbrnet.conflist"));p=c["plugins"][0];p["cniVersion"]=c["cniVersion"];p["name"]=c["name"];print(json.dumps(p))')
for pod in pod-a pod-b; do
  ip netns add "$pod" 2>/dev/null || true
  ip -n "$pod" link set lo up
  echo "$conf" | CNI_COMMAND=ADD CNI_CONTAINERID="$(hostname)-$pod" CNI_NETNS="/run/netns/$pod" \
    CNI_IFNAME=eth0 CNI_PATH=/opt/cni/bin /opt/cni/bin/cbrnet 2>/dev/null \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); print(sys.argv[1], r["ips"][0]["address"])' "$pod"
done
