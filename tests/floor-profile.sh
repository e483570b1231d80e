#!/usr/bin/env bash
# Where the kernel's cost of an ADD grows with the pods on a node: `perf record -g` of M floor ADDs
# (cni-floor: the kernel work of a cbrnet ADD, nothing else) on a node that has no pods, then on one
# that has N, and the CPU per ADD of each part of the kernel's work at 0 and at N pods.
#
#   cargo build --release --workspace && sudo tests/floor-profile.sh [N [M]]   (900 and 100)
#
# Needs perf and python3. Everything happens in namespaces this script makes (cbrnet-fp-*), which
# it removes on exit. A bridge holds 1,023 ports: N + M above that would time failed ADDs, so it is
# refused.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-900}
M=${2:-100}
FLOOR=$PWD/target/release/cni-floor
die() { echo "floor-profile: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root: it creates network namespaces"
[ -x "$FLOOR" ] || die "build first: cargo build --release --workspace"
command -v perf >/dev/null || die "perf is missing (apt-get install linux-perf)"
[[ $N =~ ^[0-9]+$ && $M =~ ^[1-9][0-9]*$ ]] || die "usage: floor-profile.sh [N [M]]"
[ $((N + M)) -le 1023 ] || die "N + M = $((N + M)): a bridge holds 1,023 ports"

node=cbrnet-fp-node
keep=$(mktemp -d)
gone() { ip netns list | awk '/^cbrnet-fp-/ {print $1}' | while read -r ns; do ip netns del "$ns"; done; }
trap 'gone; rm -rf "$keep"' EXIT

# One floor ADD of pod $1 (address 10.244.x.y from its number) from the node's namespace.
add() {
  local i=$1 a=$(($1 + 2))
  nsenter --net=/run/netns/$node env -i CNI_COMMAND=ADD CNI_CONTAINERID=fp$i \
    CNI_NETNS=/run/netns/cbrnet-fp-$i CNI_IFNAME=eth0 \
    CNI_ARGS="IP=10.244.$((a / 256)).$((a % 256))/22;GW=10.244.0.1" \
    "$FLOOR" <<<'{"cniVersion":"1.0.0","name":"floornet","type":"cni-floor"}' >/dev/null \
    || die "floor ADD $i failed"
}
export -f add die
export FLOOR node

# A node as cbrnet leaves it after its first ADD: the bridge with its gateway, no snooping.
profile() {
  local pods=$1 data=$2
  gone
  ip netns add $node
  ip -n $node link set lo up
  ip -n $node link add cbr0 address 0a:58:0a:f4:00:01 type bridge mcast_snooping 0
  ip -n $node addr add 10.244.0.1/22 dev cbr0
  ip -n $node link set cbr0 up
  for i in $(seq 0 $((pods + M - 1))); do ip netns add cbrnet-fp-$i; done
  for i in $(seq 0 $((pods - 1))); do add "$i"; done
  sleep 2
  perf record -q -g -o "$data" -- bash -c "for i in \$(seq $pods $((pods + M - 1))); do add \$i; done" 2>/dev/null
}
profile 0 "$keep/at0.perf"
profile "$N" "$keep/atN.perf"

python3 - "$keep/at0.perf" "$keep/atN.perf" "$M" "$N" <<'EOF'
import collections, subprocess, sys

# A sample counts in the first part its call chain passes through.
PARTS = [
    ("namespace id lookups for notifications (peernet2id_alloc)", "peernet2id"),
    ("the port's IPv6 multicast route (addrconf_add_mroute)", "addrconf_add_mroute"),
    ("the bridge's list of lower links (__netdev_adjacent_dev_insert)", "__netdev_adjacent_dev_insert"),
    ("the rest of br_add_if", "br_add_if"),
    ("the port's coming up (br_stp_enable_port)", "br_stp_enable_port"),
    ("other IPv6 routing table work (fib6_*)", "fib6"),
    ("everything else", None),
]

def parts(path, adds):
    """µs of CPU per ADD in each part: each sample weighs its period (ns of CPU)."""
    script = subprocess.run(["perf", "script", "-i", path, "--comm", "cni-floor",
                             "-F", "period,ip,sym"],
                            capture_output=True, text=True, check=True).stdout
    ns = collections.Counter()
    for sample in script.split("\n\n"):
        lines = sample.strip().splitlines()
        if not lines:
            continue
        period = int(lines[0].split()[0])
        for name, key in PARTS:
            if key is None or key in sample:
                ns[name] += period
                break
    return {name: v / 1000 / adds for name, v in ns.items()}

at0, at_n, m, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
p0, pn = parts(at0, m), parts(at_n, m)
print(f"| µs of CPU per floor ADD | at 0 pods | at {n} | more |")
print("|---|---:|---:|---:|")
for name, _ in PARTS:
    a, b = p0.get(name, 0), pn.get(name, 0)
    print(f"| {name} | {a:.0f} | {b:.0f} | {b - a:+.0f} |")
a, b = sum(p0.values()), sum(pn.values())
print(f"| total | {a:.0f} | {b:.0f} | {b - a:+.0f} |")
EOF
