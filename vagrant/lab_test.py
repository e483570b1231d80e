#!/usr/bin/env python3
"""The lab's scenarios, run by `vagrant/lab.sh test` inside the lab's namespaces (vagrant and ssh
reach the VMs there). Each scenario prints its evidence and PASS or FAIL; the exit status is
non-zero if any failed.

  (a) every pod reaches every other pod across the 3 VMs
  (b) a real reboot of node2 (vagrant reload): same subnet, new pods get addresses, no address of
      a pod that died with the reboot stays reserved
  (c) node3 halted: its lease expires (etcd's lease TTL), the other nodes drop its route, a new
      node takes the subnet; node3 comes back and gets a free subnet
  (d) cbrnet-routed killed (SIGKILL) and restarted by systemd: routes kept, no flap
  (e) a pod killed without CNI DEL: cbrnet-routed, confined by its hardened unit, takes its
      address back (background reclaim, written under /run/cbrnet)
  (f) the unit gives the daemon what it needs and no more: only CAP_NET_ADMIN in its bounding
      set, no new privileges, and only /run/cbrnet and /var/lib/cbrnet writable in its view; the
      store is etcd over TLS with the node's client certificate, and refuses a client without one
      and plain http://
  (g) VXLAN across the VMs on real virtio NICs: every node on CBRNET_BACKEND=vxlan, peers through
      cbrnet.vxlan (routes, FDB, neighbours), pod<->pod pings and a DF ping of the full pod MTU,
      iperf3 pod->pod with the device's TX checksum offload off and on, and node->node as the
      floor; then the nodes' settings as they were
  (h) dual-stack on the private network: IPv6 node IPs on the VMs (fd00:56::/64), every daemon on
      both families, pods with an address of each, pinging each other across the VMs on both;
      doctor all ok; then IPv4 only again (last: nothing after it sees its changes)

  (a) and (b) also run `cbrnet-routed doctor --probe` on every node (right after provisioning,
  and after the reboot): every check must be ok.

  lab_test.py summary | test [a b c d e f g h]

The VMs are reached with plain ssh through the config `vagrant ssh-config` writes
(CBRNET_LAB_SSH_CONFIG): a call costs well under a second, `vagrant ssh` about 7 s.
"""
import concurrent.futures
import ipaddress
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SSH_CONFIG = os.environ.get("CBRNET_LAB_SSH_CONFIG", "")
NODES = ["node1", "node2", "node3"]
NODE_IP = {"node1": "192.168.56.11", "node2": "192.168.56.12", "node3": "192.168.56.13"}
NEW_NODE, NEW_NODE_IP = "node4", "192.168.56.14"
# (h): the VMs' IPv6 addresses on the private network (unique local, added inside the VMs) and the
# cluster's two pod CIDRs.
NODE_IP6 = {"node1": "fd00:56::11", "node2": "fd00:56::12", "node3": "fd00:56::13"}
NODE_IP6_LEN = 64
CLUSTER_CIDR = "10.244.0.0/16"
CLUSTER_CIDR6 = "fd00:10:244::/56"
PRIV_DEV = "eth1"
LEASE_TTL = os.environ.get("CBRNET_LEASE_TTL", "30s")
# How long etcd may take, after a lease's expiry time, to revoke its etcd lease and so delete the
# key (its leader checks for expired leases twice a second and revokes them through consensus,
# slower in VMs under software emulation).
ETCD_REVOKE_S = 15
VXLAN_DEV = "cbrnet.vxlan"
# (g): the two nodes whose pods measure VXLAN, iperf3's port, each measurement's length.
VX_NODES = ("node1", "node2")
IPERF_PORT = 5201
IPERF_SECS = 10


def ttl_seconds(s):
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for u in sorted(units, key=len, reverse=True):
        if s.endswith(u):
            return float(s[: -len(u)]) * units[u]
    return float(s)


class LabError(Exception):
    pass


def say(msg=""):
    print(msg, flush=True)


def ev(msg):
    say(f"   {msg}")


# ---- talking to the VMs -------------------------------------------------------------------
_ssh_blocks = {}


def refresh_ssh_config(*nodes):
    """`vagrant ssh-config` of the given (running) nodes, merged into CBRNET_LAB_SSH_CONFIG."""
    if os.path.exists(SSH_CONFIG) and not _ssh_blocks:
        block, name = [], None
        for line in open(SSH_CONFIG):
            if line.startswith("Host "):
                if name:
                    _ssh_blocks[name] = "".join(block)
                name, block = line.split()[1], []
            block.append(line)
        if name:
            _ssh_blocks[name] = "".join(block)
    for n in nodes:
        p = subprocess.run(["vagrant", "ssh-config", n], cwd=HERE, capture_output=True, text=True)
        if p.returncode != 0:
            raise LabError(f"vagrant ssh-config {n}: {p.stderr.strip()}")
        _ssh_blocks[n] = p.stdout
    with open(SSH_CONFIG + ".tmp", "w") as f:
        f.write("".join(_ssh_blocks[n] for n in sorted(_ssh_blocks)))
    os.replace(SSH_CONFIG + ".tmp", SSH_CONFIG)


LABNODE = os.path.join(HERE, "guest", "labnode.py")


def node_cmd(node, *args, timeout=600):
    # The host's labnode.py, fed through ssh: always the current one (/vagrant in the VMs is only
    # synced by `vagrant up` and `reload`).
    cmd = ["ssh", "-F", SSH_CONFIG, node, "sudo", "python3", "-", *args]
    with open(LABNODE) as script:
        p = subprocess.run(cmd, stdin=script, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0 or not p.stdout.strip():
        raise LabError(f"{node}: labnode.py {' '.join(args)}: exit {p.returncode}: {(p.stderr or p.stdout).strip()[-800:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def on_nodes(calls):
    """{node: (args...)} in parallel -> {node: result}."""
    with concurrent.futures.ThreadPoolExecutor(len(calls)) as ex:
        futs = {n: ex.submit(node_cmd, n, *a) for n, a in calls.items()}
        return {n: f.result() for n, f in futs.items()}


def vagrant(*args):
    t = time.time()
    say(f"   $ vagrant {' '.join(args)}")
    p = subprocess.Popen(["vagrant", *args], cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in p.stdout:
        line = line.rstrip()
        if line:
            say(f"     | {line}")
    if p.wait() != 0:
        raise LabError(f"vagrant {' '.join(args)} failed (exit {p.returncode})")
    return round(time.time() - t, 1)


# ---- helpers ------------------------------------------------------------------------------
def in_subnet(ip, subnet):
    return ip is not None and subnet is not None and ipaddress.ip_address(ip) in ipaddress.ip_network(subnet)


def route_to(state, dst):
    return next((r["gateway"] for r in state["routes"] if r["dst"] == dst), None)


def num(x, unit, spec):
    return format(x / unit, spec) if isinstance(x, (int, float)) else "?"


def fmt_route(r):
    return f"{r['dst']} via {r['gateway']}" + (f" dev {r['dev']}" if r.get("dev") == VXLAN_DEV else "")


def show_state(st):
    s = st["subnet"]["subnet"] if st["subnet"] else None
    mtu = st["subnet"].get("mtu") if st["subnet"] else None
    routes = ", ".join(fmt_route(r) for r in st["routes"]) or "none"
    d = st["daemon"]
    ev(f"{st['node']}: subnet {s} (pod MTU {mtu}); routes (proto 157): {routes}; cbrnet-routed {d['ActiveState']} pid {d['MainPID']} restarts {d['NRestarts']}")


def show_leases(node="node1"):
    ls = node_cmd(node, "leases")["leases"]
    for l in ls:
        path = f" path {l['path']}" if l.get("path") else ""
        v6 = f" + {l['ipv6Subnet']} {l.get('nodeIPv6') or '(no IPv6 node IP)'}" if l.get("ipv6Subnet") else ""
        ev(f"lease {l['subnet']} {l['nodeName']} {l['nodeIP']}{v6} expires {l['expires']}{' (expired)' if l.get('expired') else ''}{path}")
    return ls


def ping_matrix(targets, title):
    """targets: [(node, pod, ip)]; every running pod of every node in `targets` pings every ip."""
    ips = [ip for _, _, ip in targets]
    nodes = sorted({n for n, _, _ in targets})
    res = on_nodes({n: ("ping", *ips) for n in nodes})
    results = [r for n in nodes for r in res[n]["results"]]
    owner = {ip: f"{n}/{p}" for n, p, ip in targets}
    bad = [r for r in results if not r["ok"]]
    ok = len(results) - len(bad)
    ev(f"{title}: {ok}/{len(results)} pings answered")
    for r in bad:
        ev(f"  NO ANSWER {r['from']} ({r['from_ip']}) -> {owner.get(r['to'], r['to'])} ({r['to']})")
    return not bad and len(results) > 0, results


def run_pods(calls):
    """{node: tag} -> [(node, pod, ip)], after removing the node's earlier lab pods."""
    on_nodes({n: ("pods-clean",) for n in calls})
    res = on_nodes({n: ("pods-run", tag, "2") for n, tag in calls.items()})
    pods, ok = [], True
    for n in sorted(res):
        r = res[n]
        sub = r["subnet"]["subnet"] if r["subnet"] else None
        for p in r["pods"]:
            inside = in_subnet(p["ip"], sub)
            ok &= inside
            ev(f"pod {n}/{p['name']}: {p['ip']} ({'in' if inside else 'NOT in'} {sub})")
            pods.append((n, p["name"], p["ip"]))
        for name, lines in r["failed"].items():
            ok = False
            ev(f"pod {n}/{name}: NO ADDRESS; its unit's last lines: {' | '.join(lines)}")
    return ok, pods


# The checks every doctor run on a VM must include (with `peer` for each other node), so that a
# check that silently went missing cannot pass as "all ok".
DOCTOR_CHECKS = ["daemon", "daemon.health", "daemon.flags", "lease", "subnet-file", "bridge", "forwarding.ipv4",
                 "masquerade", "vxlan.device", "routes", "stale", "mtu", "cni.config", "cni.plugins", "ipam.cbrnet",
                 "probe.{peer}"]


def doctor_all(title, extra=(), unjudged=None):
    """`cbrnet-routed doctor --probe --json` on every VM (with the unit's settings); every check
    must be ok, doctor must exit 0, and each of DOCTOR_CHECKS (and `extra`) must be there. Prints
    each node's summary and every check as evidence. `unjudged`: {check: why} shown but not
    judged (nor doctor's exit status, which they may set)."""
    unjudged = unjudged or {}
    res = on_nodes({n: ("doctor",) for n in NODES})
    ok = True
    for n in NODES:
        r = res[n]
        checks = r["checks"]
        if not isinstance(checks, list):
            ok = False
            ev(f"FAIL: {n}: doctor printed no JSON list (exit {r['rc']}): {r['stderr'] or r['stdout']}")
            continue
        count = {s: sum(1 for c in checks if c["status"] == s) for s in ("ok", "warn", "FAIL")}
        ev(f"{n}: doctor --probe ({title}): exit {r['rc']} in {r['took_s']} s: {count['ok']} ok, {count['warn']} warn, {count['FAIL']} FAIL")
        width = max(len(c["check"]) for c in checks) if checks else 0
        for c in checks:
            fix = f"  => fix: {c['fix']}" if c["status"] != "ok" and c["fix"] else ""
            aside = f"  (not judged here: {unjudged[c['check']]})" if c["check"] in unjudged else ""
            ev(f"  {c['status']:<4}  {c['check']:<{width}}  {c['found']}{fix}{aside}")
        want = [w.format(peer=m) for w in [*DOCTOR_CHECKS, *extra] for m in (NODES if "{peer}" in w else [None]) if m != n]
        missing = [w for w in want if w not in {c["check"] for c in checks}]
        bad = [c["check"] for c in checks if c["status"] != "ok" and c["check"] not in unjudged]
        rc_ok = r["rc"] == 0 or (r["rc"] == 1 and not bad)
        if not rc_ok or bad or missing:
            ok = False
            ev(f"FAIL: {n}: doctor exit {r['rc']}; not ok: {', '.join(bad) or 'none'}; not checked: {', '.join(missing) or 'none'}")
    return ok


# ---- the scenarios ------------------------------------------------------------------------
class Lab:
    def __init__(self):
        self.pods = {}  # node -> [(node, pod, ip)]

    def all_pods(self):
        return [p for n in sorted(self.pods) for p in self.pods[n]]

    def scenario_a(self):
        say("== (a) every pod reaches every other pod across the 3 VMs (containerd pods, ctr run --cni)")
        states = on_nodes({n: ("state",) for n in NODES})
        subnets = {n: states[n]["subnet"]["subnet"] for n in NODES}
        ok = True
        for n in NODES:
            show_state(states[n])
            for m in NODES:
                if m != n and route_to(states[n], subnets[m]) != NODE_IP[m]:
                    ok = False
                    ev(f"MISSING: {n} has no route {subnets[m]} via {NODE_IP[m]}")
        show_leases()
        # The nodes as provisioning left them (no pod yet), checked by the product's own doctor.
        doctor_ok = doctor_all("after provisioning")
        pods_ok, pods = run_pods({n: "a" for n in NODES})
        self.pods = {n: [p for p in pods if p[0] == n] for n in NODES}
        ping_ok, results = ping_matrix(pods, f"{len(pods)} pods on {len(NODES)} VMs, every pod to every pod")
        cross = sum(1 for r in results if r["ok"] and r["from"].split("-")[1] != next(p[0] for p in pods if p[2] == r["to"]))
        ev(f"of which across VMs: {cross}")
        return ok and doctor_ok and pods_ok and ping_ok and len(pods) == 2 * len(NODES)

    def scenario_b(self):
        say("== (b) vagrant reload node2 (a real reboot): subnet back, new pods get addresses, no stale reservation")
        before = node_cmd("node2", "state")
        sub = before["subnet"]["subnet"]
        old = {r["container_id"] for r in before["reservations"]}
        ev(f"before: node2 subnet {sub}; reservations {', '.join(r['ip'] + '=' + r['container_id'] for r in before['reservations']) or 'none'}")
        if not old:
            raise LabError("node2 has no pod before the reboot: run (a) first")
        secs = vagrant("reload", "node2")
        refresh_ssh_config("node2")
        after = node_cmd("node2", "state")
        ok = True
        got = after["subnet"]["subnet"] if after["subnet"] else None
        ev(f"node2 rebooted in {secs} s; cbrnet-routed {after['daemon']['ActiveState']}; subnet {got}")
        if got != sub or after["daemon"]["ActiveState"] != "active":
            ok = False
            ev(f"FAIL: subnet {got} after the reboot, {sub} before")
        stale = [r for r in after["reservations"] if r["container_id"] in old]
        ev(f"after the reboot: reservations {', '.join(r['ip'] + '=' + r['container_id'] for r in after['reservations']) or 'none'}; "
           f"containerd records of the dead pods (they died without CNI DEL): {', '.join(after['containers']) or 'none'}")
        if stale:
            ok = False
            ev(f"FAIL: addresses of dead pods still reserved: {stale}")
        peers = on_nodes({n: ("wait-route", sub, NODE_IP["node2"], "60") for n in ("node1", "node3")})
        for n, r in sorted(peers.items()):
            ev(f"{n}: route {sub} via {NODE_IP['node2']}: {'present' if r['ok'] else 'MISSING'}")
            ok &= r["ok"]
        mine = on_nodes({"node2": ("state",)})["node2"]
        for m in ("node1", "node3"):
            s = node_cmd(m, "state")["subnet"]["subnet"]
            present = route_to(mine, s) == NODE_IP[m]
            ok &= present
            ev(f"node2: route {s} via {NODE_IP[m]}: {'present' if present else 'MISSING'}")
        pods_ok, pods = run_pods({"node2": "b"})
        self.pods["node2"] = pods
        res = node_cmd("node2", "state")
        new_ids = {f"cbrnet-lab-{p[1]}" for p in pods}
        reserved = {r["container_id"] for r in res["reservations"]}
        ev(f"node2 reservations now: {', '.join(r['ip'] + '=' + r['container_id'] for r in res['reservations'])}")
        if reserved != new_ids:
            ok = False
            ev(f"FAIL: reservations {sorted(reserved)} are not exactly the new pods {sorted(new_ids)}")
        ping_ok, _ = ping_matrix(self.all_pods(), "all pods after the reboot (node2's are new)")
        doctor_ok = doctor_all("after node2's reboot")
        return ok and pods_ok and ping_ok and doctor_ok and len(pods) == 2

    def scenario_c(self):
        ttl = ttl_seconds(LEASE_TTL)
        say(f"== (c) vagrant halt node3 (lease TTL {LEASE_TTL}): its route goes, a new node takes its subnet, node3 comes back")
        ok = True
        leases = show_leases()
        s3 = next(l["subnet"] for l in leases if l["nodeName"] == "node3")
        keys = node_cmd("node1", "etcd-keys")["keys"]
        for k in keys:
            ev(f"etcd {k['key']}: etcd lease {k['etcd_lease']} granted TTL {k.get('granted_ttl')} s, {k.get('remaining_ttl')} s left")
        secs = vagrant("halt", "node3")
        ev(f"node3 powered off ({secs} s); waiting for node1 and node2 to drop {s3}")
        gone = on_nodes({n: ("wait-route", s3, "none", str(ttl + 90)) for n in ("node1", "node2")})
        for n, r in sorted(gone.items()):
            ev(f"{n}: route {s3} via {NODE_IP['node3']} {'removed' if r['ok'] else 'STILL THERE'} {r['after_s']} s after node3 was off "
               f"({round(r['after_s'] + secs)} s after the halt began; TTL {LEASE_TTL}, renewed every third of it)")
            ok &= r["ok"] and r["after_s"] <= ttl + 20
        # The daemons drop a lease when its expiry time has passed; etcd deletes the key when it
        # revokes the etcd lease, which its leader does on its own schedule, a moment later.
        t = time.time()
        while True:
            keys = node_cmd("node1", "etcd-keys")["keys"]
            left = [k["key"] for k in keys if k["key"].endswith(s3.replace("/", "-")) or s3 in k["key"]]
            if not left or time.time() - t > ETCD_REVOKE_S:
                break
            time.sleep(1)
        ev(f"etcd keys {round(time.time() - t, 1)} s after the routes went: {', '.join(k['key'] for k in keys)}")
        if left:
            ok = False
            ev(f"FAIL: etcd still has {left} {ETCD_REVOKE_S} s after the routes went")
        # The new node: a network namespace of node2 with its own address on the private network
        # (macvlan), its own bridge and its own cbrnet-routed under another name.
        nn = node_cmd("node2", "newnode-start", NEW_NODE, NEW_NODE_IP)
        got = nn["subnet"]["subnet"] if nn["subnet"] else None
        ev(f"new node {NEW_NODE} ({NEW_NODE_IP}, a network namespace on node2): subnet {got}; its routes: "
           f"{', '.join(r['dst'] + ' via ' + r['gateway'] for r in nn['routes']) or 'none'}")
        if got != s3:
            ok = False
            ev(f"FAIL: {NEW_NODE} got {got}, not the freed {s3}; its log: {' | '.join(nn['journal'][-5:])}")
        rr = on_nodes({n: ("wait-route", s3, NEW_NODE_IP, "60") for n in ("node1", "node2")})
        for n, r in sorted(rr.items()):
            ev(f"{n}: route {s3} via {NEW_NODE_IP}: {'present' if r['ok'] else 'MISSING'} after {r['after_s']} s")
            ok &= r["ok"]
        gw = str(next(ipaddress.ip_network(s3).hosts()))
        p_ok, _ = ping_matrix([(n, "gateway", gw) for n in ("node1",)], f"node1's pods to {NEW_NODE}'s bridge {gw} (across the wire)")
        ok &= p_ok
        show_leases()
        secs = vagrant("up", "node3")
        refresh_ssh_config("node3")
        st3 = node_cmd("node3", "state")
        s3n = st3["subnet"]["subnet"] if st3["subnet"] else None
        ev(f"node3 back in {secs} s: subnet {s3n} (its old {s3} is {NEW_NODE}'s now)")
        if s3n is None or s3n == s3:
            ok = False
            ev("FAIL: node3 should have a new subnet")
        rr = on_nodes({n: ("wait-route", s3n, NODE_IP["node3"], "60") for n in ("node1", "node2")})
        for n, r in sorted(rr.items()):
            ev(f"{n}: route {s3n} via {NODE_IP['node3']}: {'present' if r['ok'] else 'MISSING'}")
            ok &= r["ok"]
        stop = node_cmd("node2", "newnode-stop", NEW_NODE)
        ev(f"{NEW_NODE} stopped, lease released: {stop['released']} ({stop['release_output']})")
        rr = on_nodes({n: ("wait-route", s3, "none", "60") for n in NODES})
        for n, r in sorted(rr.items()):
            ev(f"{n}: route {s3} via {NEW_NODE_IP}: {'removed' if r['ok'] else 'STILL THERE'}")
            ok &= r["ok"]
        pods_ok, pods = run_pods({"node3": "c"})
        self.pods["node3"] = pods
        ping_ok, _ = ping_matrix(self.all_pods(), "all pods with node3 back")
        show_leases()
        return ok and pods_ok and ping_ok

    def scenario_d(self):
        say("== (d) systemctl kill -s KILL cbrnet-routed on node2: systemd restarts it, routes stay, no flap")
        peer = self.pods.get("node1", [(None, None, None)])[0][2]
        r = node_cmd("node2", "restart-check", peer or "")
        ok = True
        b, a = r["before"], r["after"]
        ev(f"before: pid {b['daemon']['MainPID']} restarts {b['daemon']['NRestarts']}; routes {', '.join(x['dst'] + ' via ' + x['gateway'] for x in b['routes'])}")
        ev(f"after:  pid {a['daemon']['MainPID']} restarts {a['daemon']['NRestarts']} ({a['daemon']['ActiveState']}, "
           f"back {r['restarted_after_s']} s after the kill); routes {', '.join(x['dst'] + ' via ' + x['gateway'] for x in a['routes'])}")
        if r["restarted_after_s"] is None:
            ok = False
            ev("FAIL: systemd did not restart the daemon")
        if a["routes"] != b["routes"] or a["subnet"] != b["subnet"]:
            ok = False
            ev("FAIL: the route table or the subnet changed")
        deleted = [e for e in r["route_events"] if "Deleted" in e and "10.244." in e]
        ev(f"ip monitor route during the restart: {len(r['route_events'])} events, {len(deleted)} deletions of pod routes")
        for e in r["route_events"][:10]:
            ev(f"  {e}")
        if deleted:
            ok = False
        ev(f"journal since the kill: {len(r['journal'])} lines; 'route installed'/'route removed': {len(r['route_changes_in_journal'])}")
        for l in r["journal"][:12]:
            ev(f"  {l}")
        if r["route_changes_in_journal"]:
            ok = False
            for l in r["route_changes_in_journal"]:
                ev(f"  FLAP: {l}")
        if not r["ping"]:
            ok = False
            ev("FAIL: no pod on node2 pinged a pod of node1 during the restart (run (a) first)")
        else:
            ev(f"pod {self.pods['node2'][0][1]} -> {peer} during the restart: {r['ping'][0].strip()}")
            if " 0% packet loss" not in r["ping"][0]:
                ok = False
        return ok


    def scenario_e(self):
        say("== (e) a pod vanishes without CNI DEL on node1: the hardened cbrnet-routed reclaims its address")
        victim = self.pods.get("node1", [(None, "a-node1-2", None)])[-1][1]
        r = node_cmd("node1", "vanish-pod", victim, "90")
        ok = True
        ev(f"reserved before: {', '.join(x['ip'] + '=' + x['container_id'] for x in r['reserved_before']) or 'NOTHING'}")
        ev(f"cbr0 ports before: {', '.join(r['bridge_ports_before'])}; after the pod was killed (ctr and task by SIGKILL, no DEL): {', '.join(r['bridge_ports_after']) or 'none'}")
        if not r["reserved_before"]:
            ok = False
        if r["reclaimed_after_s"] is None:
            ok = False
            ev("FAIL: the address is still reserved after 90 s")
        else:
            ev(f"address reclaimed {r['reclaimed_after_s']} s after the pod was gone")
        for l in r["journal"]:
            ev(f"  journal: {l}")
        ok &= any("reclaimed" in l for l in r["journal"])
        ev(f"reservations now: {', '.join(x['ip'] + '=' + x['container_id'] for x in r['reservations_after']) or 'none'}")
        self.pods["node1"] = [p for p in self.pods.get("node1", []) if p[1] != victim]
        return ok


    def scenario_f(self):
        say("== (f) the hardened unit: cbrnet-routed gets CAP_NET_ADMIN and its own paths, nothing more")
        ok = True
        for n in NODES:
            r = node_cmd(n, "confinement")
            ev(f"{n}: pid {r['pid']} CapBnd {r['cap_bnd']} CapEff {r['cap_eff']} NoNewPrivs {r['no_new_privs']}")
            # CAP_NET_ADMIN is capability 12.
            if int(r["cap_bnd"] or "0", 16) != 1 << 12 or r["no_new_privs"] != "1":
                ok = False
                ev(f"FAIL: {n}: the bounding set should be CAP_NET_ADMIN alone, with no new privileges")
            for d, t in sorted(r["tries"].items()):
                want = d in r["writable"]
                ev(f"{n}: {d}: {'writable' if t['writable'] else 'read-only'}{'' if t['writable'] else ' (' + t['error'] + ')'}")
                if t["writable"] != want:
                    ok = False
                    ev(f"FAIL: {n}: {d} should be {'writable' if want else 'read-only'} for the daemon")
            # The store: etcd over TLS only, with the node's client certificate (key root's alone).
            t = node_cmd(n, "etcd-tls")
            ev(f"{n}: store {t['store']}, key mode {t['key_mode']}; leases with the node's certificate: exit {t['with_cert']['rc']}; "
               f"without: exit {t['without_cert']['rc']} ({t['without_cert']['said']}); over http://: exit {t['plain_http']['rc']} ({t['plain_http']['said']})")
            if not (t["store"].startswith("etcd:https://") and t["key_mode"] == "0600" and t["with_cert"]["rc"] == 0
                    and t["without_cert"]["rc"] != 0 and "client certificate" in t["without_cert"]["said"]
                    and t["plain_http"]["rc"] != 0 and "TLS only" in t["plain_http"]["said"]):
                ok = False
                ev(f"FAIL: {n}: the store should take only TLS with a client certificate")
        return ok


    # ---- (g) VXLAN ------------------------------------------------------------------------
    def _vx_wait(self, mode, subnets, secs=120):
        """Every node waits until each other node's subnet goes `mode` (direct|vxlan); prints each
        node's VXLAN device, FDB, neighbours, routes and paths. -> (ok, {node: state})"""
        calls = {n: ("wait-paths", mode, str(secs), *[f"{subnets[m]}={NODE_IP[m]}" for m in NODES if m != n]) for n in NODES}
        res = on_nodes(calls)
        ok = True
        for n in NODES:
            r = res[n]
            d = r["device"]
            dev = (f"{VXLAN_DEV} vni {d['vni']} port {d['port']} local {d['local']} mtu {d['mtu']} learning {d['learning']} "
                   f"mac {d['mac']} tx-checksumming {d['tx_checksumming']}") if d else f"no {VXLAN_DEV}"
            ev(f"{n}: {dev}; subnet file mtu {r['subnet'].get('mtu') if r['subnet'] else None}")
            ev(f"{n}: routes: {', '.join(fmt_route(x) for x in r['routes']) or 'none'}")
            if mode == "vxlan" or r["fdb"] or r["neigh"]:
                ev(f"{n}: fdb: {', '.join(e['mac'] + ' dst ' + str(e['dst']) for e in r['fdb']) or 'none'}; "
                   f"neigh: {', '.join(str(e['dst']) + ' lladdr ' + str(e['lladdr']) for e in r['neigh']) or 'none'}")
            ev(f"{n}: paths (cbrnet-routed leases): {', '.join(f'{k} {v}' for k, v in sorted(r['paths'].items()))}")
            if not r["ok"]:
                ok = False
                ev(f"FAIL: {n}: after {r['after_s']} s still not {mode}: {', '.join(r['missing'])}")
            else:
                ev(f"{n}: every peer {mode} ({r['after_s']} s)")
            want_paths = {subnets[m]: (mode if m != n else "self") for m in NODES}
            got_paths = {k: v for k, v in r["paths"].items() if k in want_paths}
            if got_paths != want_paths:
                ok = False
                ev(f"FAIL: {n}: leases shows paths {got_paths}, want {want_paths}")
        return ok, res

    def _vx_settings(self, pairs, what):
        res = on_nodes({n: ("defaults-set", *pairs) for n in NODES})
        ok = True
        for n in NODES:
            r = res[n]
            d = r["daemon"]
            ev(f"{n}: {what}: {' '.join(pairs)} in /etc/default/cbrnet-routed (original saved as {r['saved']}); "
               f"restarted in {r['restarted_in_s']} s: {d['ActiveState']} pid {d['MainPID']}")
            if r["restart_rc"] != 0 or d["ActiveState"] != "active":
                ok = False
                ev(f"FAIL: {n}: cbrnet-routed not active after the restart: {r['restart_error']}")
        return ok, res

    def _restore_defaults(self, keys):
        """Every node's saved settings file put back (byte for byte) and its daemon restarted;
        prints `keys` as they are now. -> ok"""
        res = on_nodes({n: ("defaults-restore",) for n in NODES})
        ok = True
        for n in NODES:
            r = res[n]
            now = ", ".join(f"{k} {r['settings'].get(k, '(unset)')}" for k in keys)
            ev(f"{n}: /etc/default/cbrnet-routed restored: {r['restored']} (sha256 {r['sha256'][:12]}); {now}; "
               f"restarted in {r['restarted_in_s']} s: {r['daemon']['ActiveState']}")
            ok &= r["restored"] and r["daemon"]["ActiveState"] == "active"
        return ok

    def _iperf(self, label, server_node, server_where, client_node, client_where, ip):
        srv = node_cmd(server_node, "iperf-server", server_where, str(IPERF_PORT))
        try:
            if not srv["listening"]:
                raise LabError(f"{server_node}: the iperf3 server does not listen: {srv['cmd']}")
            r = node_cmd(client_node, "iperf-client", client_where, ip, str(IPERF_PORT), str(IPERF_SECS))
        finally:
            node_cmd(server_node, "iperf-stop", str(IPERF_PORT))
        ev(f"{label}:")
        ev(f"  {server_node}$ {srv['cmd']}")
        ev(f"  {client_node}$ {r['cmd']}")
        if not r["ok"]:
            ev(f"  FAIL: iperf3 did not complete (exit {r['rc']}): {r['error']}")
            return r
        vx, e1 = r["tx_bytes_delta"].get(VXLAN_DEV), r["tx_bytes_delta"].get("eth1")
        ev(f"  {num(r['sent_bps'], 1e9, '.3f')} Gbit/s sent, {num(r['received_bps'], 1e9, '.3f')} Gbit/s received, "
           f"{r['retransmits']} retransmits ({num(r['seconds'], 1, '.1f')} s, 1 TCP stream, {num(r['bytes'], 1e6, '.0f')} MB; "
           f"mean RTT {r['mean_rtt_us']} us, max cwnd {r['max_snd_cwnd']} B; "
           f"CPU {num(r['cpu_local'], 1, '.0f')}% here, {num(r['cpu_remote'], 1, '.0f')}% there)")
        ev(f"  {client_node} TX during the run: {VXLAN_DEV} {num(vx, 1e6, '.0f')} MB, eth1 {num(e1, 1e6, '.0f')} MB; "
           f"cbrnet-routed used {num(r.get('daemon_cpu_s'), 1, '.1f')} s of CPU meanwhile")
        return r

    def _vx_load(self, title):
        """cbrnet-routed's CPU time on each node since its restart and the FDB writes it logged:
        shown, not judged (with every FDB entry in place, a quiet daemon writes none)."""
        res = on_nodes({n: ("daemon-load",) for n in NODES})
        for n in NODES:
            r = res[n]
            share = f" ({100 * r['cpu_s'] / r['up_s']:.0f}%)" if r["cpu_s"] is not None and r["up_s"] else ""
            ev(f"{n}: {title}: cbrnet-routed pid {r['pid']} used {num(r['cpu_s'], 1, '.1f')} s of CPU in its {r['up_s']} s{share}; "
               f"{r['log_lines']} log lines, {r['fdb_write_lines']} of them 'VXLAN peers: N FDB entries written' with N > 0")
            if r["fdb_write_lines"] > 2 * len(NODES):
                ev(f"WARNING: {n}: cbrnet-routed keeps rewriting FDB entries that are in place (last: {r['last_fdb_write']})")
        return res

    def scenario_g(self):
        say("== (g) VXLAN across the VMs on real virtio NICs: CBRNET_BACKEND=vxlan everywhere, pod<->pod pings at the full MTU, iperf3")
        ok = True
        states = on_nodes({n: ("state",) for n in NODES})
        subnets = {n: states[n]["subnet"]["subnet"] for n in NODES}
        for n in NODES:
            show_state(states[n])
        a, b = VX_NODES
        figures = {}
        restore_ok = False
        try:
            s_ok, _ = self._vx_settings(["CBRNET_BACKEND=vxlan"], "backend")
            ok &= s_ok
            w_ok, vx = self._vx_wait("vxlan", subnets)
            ok &= w_ok
            for n in VX_NODES:
                d = vx[n]["device"] or {}
                if d.get("tx_checksumming") != "off":
                    ok = False
                    ev(f"FAIL: {n}: {VXLAN_DEV} tx-checksumming is {d.get('tx_checksumming')}, the default is off")
            # One pod on each of two VMs (other pods of the earlier scenarios stay as they are).
            on_nodes({n: ("pods-clean", "g") for n in VX_NODES})
            res = on_nodes({n: ("pods-run", "g", "1") for n in VX_NODES})
            pods = {}
            for n in VX_NODES:
                r = res[n]
                for name, lines in r["failed"].items():
                    ok = False
                    ev(f"pod {n}/{name}: NO ADDRESS; its unit's last lines: {' | '.join(lines)}")
                if r["pods"]:
                    p = r["pods"][0]
                    pods[n] = (p["name"], p["ip"])
                    ev(f"pod {n}/{p['name']}: {p['ip']} ({'in' if in_subnet(p['ip'], subnets[n]) else 'NOT in'} {subnets[n]})")
            if len(pods) != 2:
                raise LabError("the pods of (g) did not start")

            def netchecks(title):
                good = True
                for src, dst in ((a, b), (b, a)):
                    r = node_cmd(src, "netcheck", pods[src][0], pods[dst][1])
                    ev(f"{title}: {src}/{pods[src][0]} (eth0 MTU {r['mtu']}) -> {dst}/{pods[dst][0]} {pods[dst][1]}:")
                    for k, want in (("ping", True), ("df_full", True), ("df_over", False)):
                        c = r[k]
                        ev(f"  $ {c['cmd']}: {'answered' if c['ok'] else 'no answer'}{'' if c['ok'] == want else ' (UNEXPECTED)'}; {' | '.join(c['summary'])}")
                    # The plain and the full-size DF ping must pass; one byte more must not leave
                    # the pod (evidence that the DF ping was at the limit; not judged).
                    good &= r["ping"]["ok"] and r["df_full"]["ok"]
                    if r["mtu"] != vx[src]["subnet"].get("mtu"):
                        good = False
                        ev(f"  FAIL: the pod's MTU {r['mtu']} is not the subnet file's {vx[src]['subnet'].get('mtu')}")
                return good

            ok &= netchecks("offload off")
            r = self._iperf(f"iperf3 pod->pod through VXLAN, {VXLAN_DEV} TX checksum offload OFF (default)", b, pods[b][0], a, pods[a][0], pods[b][1])
            figures["pod->pod vxlan, tx csum offload off"] = r
            ok &= r["ok"]
            r = self._iperf("iperf3 node->node on the private network (the floor: no VXLAN, no pod)", b, "host", a, "host", NODE_IP[b])
            figures["node->node eth1 (floor)"] = r
            ok &= r["ok"]

            s_ok, _ = self._vx_settings(["CBRNET_VXLAN_TX_CSUM_OFFLOAD=on"], "offload")
            ok &= s_ok
            w_ok, vx = self._vx_wait("vxlan", subnets)
            ok &= w_ok
            for n in VX_NODES:
                d = vx[n]["device"] or {}
                ev(f"{n}: ethtool -k {VXLAN_DEV}: tx-checksumming {d.get('tx_checksumming')}")
                if d.get("tx_checksumming") != "on":
                    ok = False
                    ev(f"FAIL: {n}: tx-checksumming should be on")
            ok &= netchecks("offload on")
            r = self._iperf(f"iperf3 pod->pod through VXLAN, {VXLAN_DEV} TX checksum offload ON", b, pods[b][0], a, pods[a][0], pods[b][1])
            figures["pod->pod vxlan, tx csum offload on"] = r
            ok &= r["ok"]
            self._vx_load("on vxlan")
        finally:
            # The lab as it was: the pods of (g) stopped, every node's settings file back (byte for
            # byte) and the daemon restarted; the peers direct again (auto on one network).
            try:
                on_nodes({n: ("pods-clean", "g") for n in VX_NODES})
                restore_ok = self._restore_defaults(["CBRNET_BACKEND"])
                w_ok, back = self._vx_wait("direct", subnets)
                restore_ok &= w_ok
                for n in NODES:
                    d = back[n]["device"] or {}
                    if d.get("tx_checksumming") not in (None, "off"):
                        restore_ok = False
                        ev(f"FAIL: {n}: {VXLAN_DEV} tx-checksumming still {d.get('tx_checksumming')}")
                    # Every peer direct: no FDB or neighbour entry is needed on the VXLAN device.
                    # Left-overs are reported, not judged (no route uses the device).
                    if back[n]["fdb"] or back[n]["neigh"]:
                        ev(f"WARNING: {n}: every peer is direct but {VXLAN_DEV} still has {len(back[n]['fdb'])} FDB and "
                           f"{len(back[n]['neigh'])} neighbour entries")
            except (LabError, subprocess.TimeoutExpired, KeyError, ValueError, json.JSONDecodeError) as e:
                ev(f"FAIL: restoring the nodes' settings: {e}")
                restore_ok = False
            if not restore_ok:
                ev("FAIL: the lab is not as before (g)")
        if figures:
            ev("iperf3, TCP, 1 stream, 10 s (node1 -> node2; qemu TCG, 1 vCPU per VM, virtio NICs):")
            for k, r in figures.items():
                if r["ok"]:
                    ev(f"  {k:38s} {num(r['sent_bps'], 1e9, '7.3f')} Gbit/s sent {num(r['received_bps'], 1e9, '7.3f')} Gbit/s received "
                       f"{r['retransmits']!s:>7} retransmits")
                else:
                    ev(f"  {k:40s} FAILED: {r['error']}")
        return ok and restore_ok

    # ---- (h) dual-stack ---------------------------------------------------------------------
    def _dual_pods(self, subnets4, subnets6):
        """Two pods per VM (every earlier lab pod stopped first) -> (ok, [(node, pod, ipv4, ipv6)])."""
        on_nodes({n: ("pods-clean",) for n in NODES})
        res = on_nodes({n: ("pods-run", "h", "2") for n in NODES})
        ok, pods = True, []
        for n in NODES:
            r = res[n]
            for p in r["pods"]:
                good = in_subnet(p["ip"], subnets4[n]) and in_subnet(p["ip6"], subnets6[n])
                ok &= good
                ev(f"pod {n}/{p['name']}: {p['ip']} and {p['ip6']} ({'in' if good else 'NOT in'} {subnets4[n]} and {subnets6[n]})")
                pods.append((n, p["name"], p["ip"], p["ip6"]))
            for name, lines in r["failed"].items():
                ok = False
                ev(f"pod {n}/{name}: NO ADDRESSES; its unit's last lines: {' | '.join(lines)}")
        return ok and len(pods) == 2 * len(NODES), pods

    def _dual_routes(self, subnets, node_ips, family):
        """Every node waits for its route to each other node's subnet of `family` via that node's
        IP of the family."""
        ok = True
        for m in NODES:
            if not subnets.get(m):
                ok = False
                continue
            res = on_nodes({n: ("wait-route", subnets[m], node_ips[m], "60") for n in NODES if n != m})
            for n, r in sorted(res.items()):
                ev(f"{n}: route {subnets[m]} via {node_ips[m]} (IPv{family}): "
                   f"{'present' if r['ok'] else 'MISSING (now via ' + str(r.get('now')) + ')'} after {r['after_s']} s")
                ok &= r["ok"]
        return ok

    def scenario_h(self):
        say(f"== (h) dual-stack on the VMs' private network: IPv6 node IPs {NODE_IP6['node1']}.., cluster {CLUSTER_CIDR},{CLUSTER_CIDR6}; "
            "pods ping each other on both families")
        ok = True
        restore_ok = False
        try:
            # The VMs' IPv6 addresses, beside their IPv4 ones on the same private network.
            res = on_nodes({n: ("addr6-add", f"{NODE_IP6[n]}/{NODE_IP6_LEN}", PRIV_DEV) for n in NODES})
            for n in NODES:
                r = res[n]
                ev(f"{n}: {PRIV_DEV} += {r['addr']} (duplicate address detection done after {r['dad_s']} s): "
                   f"global IPv6 {', '.join(a['addr'] + (' TENTATIVE' if a['tentative'] else '') for a in r['addrs'])}")
                if not r["ok"]:
                    ok = False
                    ev(f"FAIL: {n}: {r['addr']} is not usable on {PRIV_DEV}")
            res = on_nodes({n: ("ping-nodes", *[NODE_IP6[m] for m in NODES if m != n]) for n in NODES})
            for n in NODES:
                for r in res[n]["results"]:
                    ev(f"{n} -> {r['to']} (VM to VM over IPv6): {'answered' if r['ok'] else 'NO ANSWER'}")
                    ok &= r["ok"]
            # Every daemon on both families: its two node IPs, the two cluster CIDRs.
            res = on_nodes({n: ("defaults-set", f"CBRNET_NODE_IP={NODE_IP[n]},{NODE_IP6[n]}",
                                f"CBRNET_CLUSTER_CIDR={CLUSTER_CIDR},{CLUSTER_CIDR6}") for n in NODES})
            for n in NODES:
                r = res[n]
                ev(f"{n}: CBRNET_NODE_IP={r['settings'].get('CBRNET_NODE_IP')} CBRNET_CLUSTER_CIDR={r['settings'].get('CBRNET_CLUSTER_CIDR')} "
                   f"(original saved as {r['saved']}); restarted in {r['restarted_in_s']} s: {r['daemon']['ActiveState']} pid {r['daemon']['MainPID']}")
                if r["restart_rc"] != 0 or r["daemon"]["ActiveState"] != "active":
                    ok = False
                    ev(f"FAIL: {n}: cbrnet-routed not active after the restart: {r['restart_error']}")
            states = on_nodes({n: ("state",) for n in NODES})
            subnets4, subnets6, gws6 = {}, {}, {}
            for n in NODES:
                f = states[n]["subnet"] or {}
                subnets4[n], subnets6[n], gws6[n] = f.get("subnet"), f.get("ipv6Subnet"), f.get("ipv6Gateway")
                ev(f"{n}: subnet file: {f.get('subnet')} gateway {f.get('gateway')}; {f.get('ipv6Subnet')} gateway {f.get('ipv6Gateway')} "
                   f"(clusterCIDR {f.get('clusterCIDR')}, ipv6ClusterCIDR {f.get('ipv6ClusterCIDR')}); mtu {f.get('mtu')}")
                if not in_subnet(gws6[n], subnets6[n]) or not subnets6[n] or \
                        not ipaddress.ip_network(subnets6[n]).subnet_of(ipaddress.ip_network(CLUSTER_CIDR6)):
                    ok = False
                    ev(f"FAIL: {n}: no IPv6 subnet of {CLUSTER_CIDR6} in the subnet file")
            leases = {l["nodeName"]: l for l in show_leases()}
            for n in NODES:
                l = leases.get(n, {})
                if l.get("subnet") != subnets4[n] or l.get("ipv6Subnet") != subnets6[n] or l.get("nodeIPv6") != NODE_IP6[n]:
                    ok = False
                    ev(f"FAIL: {n}'s lease should carry {subnets4[n]} and {subnets6[n]} with node IP {NODE_IP6[n]}: {l}")
            ok &= self._dual_routes(subnets4, NODE_IP, 4)
            ok &= self._dual_routes(subnets6, NODE_IP6, 6)
            states = on_nodes({n: ("state",) for n in NODES})
            for n in NODES:
                ev(f"{n}: routes (proto 157): {', '.join(fmt_route(r) for r in states[n]['routes'] + states[n]['routes6']) or 'none'}")
            pods_ok, pods = self._dual_pods(subnets4, subnets6)
            ok &= pods_ok
            for fam, i in (("IPv4", 2), ("IPv6", 3)):
                targets = [(pod[0], pod[1], pod[i]) for pod in pods]
                ping_ok, results = ping_matrix(targets, f"{len(pods)} pods on {len(NODES)} VMs, every pod to every pod's {fam} address")
                owner = {ip: n for n, _, ip in targets}
                cross = sum(1 for r in results if r["ok"] and r["from"].split("-")[1] != owner.get(r["to"]))
                ev(f"of which across VMs ({fam}): {cross}")
                ok &= ping_ok and cross == len(pods) * (len(pods) - 2)
            ok &= doctor_all("dual-stack", extra=("forwarding.ipv6",))
        finally:
            # IPv4 only again, as before (h): pods stopped, the settings file back, the daemons
            # restarted, the VMs' IPv6 addresses gone, every IPv4 peer direct.
            try:
                on_nodes({n: ("pods-clean", "h") for n in NODES})
                restore_ok = self._restore_defaults(["CBRNET_NODE_IP", "CBRNET_CLUSTER_CIDR"])
                res = on_nodes({n: ("addr6-del", f"{NODE_IP6[n]}/{NODE_IP6_LEN}", PRIV_DEV) for n in NODES})
                for n in NODES:
                    ev(f"{n}: {PRIV_DEV} -= {res[n]['addr']}: {'removed' if res[n]['removed'] else 'NOT REMOVED'}")
                    restore_ok &= res[n]["removed"]
                states = on_nodes({n: ("state",) for n in NODES})
                subnets = {n: (states[n]["subnet"] or {}).get("subnet") for n in NODES}
                w_ok, back = self._vx_wait("direct", subnets)
                restore_ok &= w_ok
                for n in NODES:
                    f = back[n]["subnet"] or {}
                    ev(f"{n}: subnet file {f.get('subnet')}, ipv6Subnet {f.get('ipv6Subnet')}; IPv6 routes (proto 157) left: "
                       f"{', '.join(fmt_route(r) for r in states[n]['routes6']) or 'none'}")
                    if f.get("ipv6Subnet"):
                        restore_ok = False
                        ev(f"FAIL: {n}: the subnet file still has an IPv6 subnet")
            except (LabError, subprocess.TimeoutExpired, KeyError, ValueError, json.JSONDecodeError) as e:
                ev(f"FAIL: restoring the nodes' settings: {e}")
                restore_ok = False
            if not restore_ok:
                ev("FAIL: the lab is not as before (h)")
        return ok and restore_ok


def summary():
    refresh_ssh_config(*NODES)
    states = on_nodes({n: ("state",) for n in NODES})
    for n in NODES:
        show_state(states[n])
    show_leases()


def test(which):
    lab = Lab()
    # (g) and (h) change the nodes' settings (and put them back): last, so that nothing after them
    # could see their changes.
    scenarios = [("a", lab.scenario_a), ("b", lab.scenario_b), ("c", lab.scenario_c), ("d", lab.scenario_d), ("e", lab.scenario_e),
                 ("f", lab.scenario_f), ("g", lab.scenario_g), ("h", lab.scenario_h)]
    refresh_ssh_config(*NODES)
    results, t0 = [], time.time()
    for key, fn in scenarios:
        if which and key not in which:
            continue
        t = time.time()
        try:
            ok = fn()
        except (LabError, subprocess.TimeoutExpired, KeyError, ValueError, json.JSONDecodeError) as e:
            ev(f"error: {e}")
            ok = False
        secs = round(time.time() - t)
        results.append((key, ok, secs))
        say(f"{'PASS' if ok else 'FAIL'} ({key}) [{secs} s]")
        say()
    passed = sum(1 for _, ok, _ in results if ok)
    failed = len(results) - passed
    verdicts = " ".join(f"({k}) {'PASS' if ok else 'FAIL'} {s}s" for k, ok, s in results)
    say(f"lab test: {verdicts}; {round(time.time() - t0)} s in all")
    say(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 and results else 1


def main(argv):
    if not argv or argv[0] not in ("summary", "test"):
        print(__doc__, file=sys.stderr)
        return 2
    if not SSH_CONFIG:
        print("CBRNET_LAB_SSH_CONFIG is not set: run through vagrant/lab.sh", file=sys.stderr)
        return 2
    if argv[0] == "summary":
        summary()
        return 0
    return test(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
