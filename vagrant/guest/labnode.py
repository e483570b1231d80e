#!/usr/bin/env python3
"""What the lab does and reads inside one VM (run as root, by vagrant/lab_test.py or by hand).

Pods are containerd containers started the way a runtime does it: `ctr run --cni` (containerd
1.6), which calls the cbrnet plugin from /opt/cni/bin with the config in /etc/cni/net.d for ADD
when the pod starts and DEL when it exits. Each pod runs under a transient systemd unit
(cbrnet-pod-NAME) that holds the foreground `ctr run`; stopping a pod with `pods-clean` makes its
process exit, and ctr then calls DEL and removes the container. A reboot kills pods without DEL,
as a crash would.

Every command prints one JSON document on stdout.

  labnode.py state                          node, subnet, routes, reservations, pods, daemon
  labnode.py pods-clean                     stop this node's lab pods, remove dead containers
  labnode.py pods-run TAG N                 start N pods TAG-<node>-<i>, wait for their addresses
  labnode.py ping IP...                     ping every IP once from every running pod
  labnode.py wait-route SUBNET GW|none SECS wait until the route to SUBNET is via GW (or absent)
  labnode.py leases                         the cluster's leases (cbrnet-routed leases --json)
  labnode.py etcd-keys                      the lease keys in etcd and their etcd lease TTLs
  labnode.py restart-check PEER_POD_IP      SIGKILL cbrnet-routed, let systemd restart it, compare
  labnode.py vanish-pod NAME SECS           kill a pod without CNI DEL, wait for its address's reclaim
  labnode.py confinement                    what the unit leaves cbrnet-routed: capabilities, writable paths
  labnode.py newnode-start NAME IP          a new cbrnet node in a network namespace of this VM
  labnode.py newnode-stop NAME              stop it and release its lease
"""
import ipaddress
import json
import os
import re
import subprocess
import sys
import time

CTR_NS = "cbrnet-lab"
IMAGE = "localhost/cbrnet-lab/busybox:1.35"
IPAM_DIR = "/run/cbrnet/ipam/cbrnet"
SUBNET_FILE = "/run/cbrnet/subnet.json"
DEFAULTS = "/etc/default/cbrnet-routed"
UNIT = "cbrnet-routed.service"


def run(*cmd, check=True, timeout=120, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}: {p.stderr.strip() or p.stdout.strip()}")
    return p


def out(doc):
    json.dump(doc, sys.stdout, indent=None, sort_keys=True)
    sys.stdout.write("\n")


def defaults():
    env = {}
    with open(DEFAULTS) as f:
        for line in f:
            m = re.match(r"^\s*([A-Z_]+)=(.*)$", line)
            if m:
                env[m.group(1)] = m.group(2).strip().strip('"')
    return env


def store():
    return defaults()["CBRNET_STORE"]


def node():
    return os.uname().nodename


def subnet():
    try:
        with open(SUBNET_FILE) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def routes(netns=None):
    cmd = ["ip"] + (["-n", netns] if netns else []) + ["-j", "-4", "route", "show", "proto", "157"]
    return sorted(
        ({"dst": r["dst"], "gateway": r.get("gateway"), "dev": r.get("dev")} for r in json.loads(run(*cmd).stdout or "[]")),
        key=lambda r: r["dst"],
    )


def reservations():
    res = []
    try:
        names = os.listdir(IPAM_DIR)
    except FileNotFoundError:
        return res
    for name in sorted(names):
        try:
            ipaddress.ip_address(name)
        except ValueError:
            continue
        target = os.readlink(os.path.join(IPAM_DIR, name))
        cid, _, ifname = target.partition(" ")
        res.append({"ip": name, "container_id": cid, "ifname": ifname})
    return res


def daemon():
    p = run("systemctl", "show", UNIT, "-p", "MainPID,NRestarts,ActiveState,SubState,Result")
    return dict(line.split("=", 1) for line in p.stdout.split("\n") if "=" in line)


def tasks():
    """Running tasks of the lab's containerd namespace: {name: pid}."""
    p = run("ctr", "-n", CTR_NS, "tasks", "ls", check=False)
    t = {}
    for line in p.stdout.splitlines()[1:]:
        f = line.split()
        if len(f) >= 3 and f[2] == "RUNNING":
            t[f[0]] = int(f[1])
    return t


def containers():
    p = run("ctr", "-n", CTR_NS, "containers", "ls", "-q", check=False)
    return [c for c in p.stdout.split() if c]


def pod_ip(pid):
    p = run("nsenter", "-t", str(pid), "-n", "ip", "-j", "-4", "addr", "show", "dev", "eth0", check=False)
    if p.returncode != 0 or not p.stdout.strip():
        return None
    for a in json.loads(p.stdout):
        for ai in a.get("addr_info", []):
            if ai.get("family") == "inet":
                return ai["local"]
    return None


def pods():
    return sorted(
        ({"name": n, "pid": pid, "ip": pod_ip(pid), "cni_container_id": f"{CTR_NS}-{n}"} for n, pid in tasks().items()),
        key=lambda p: p["name"],
    )


def state():
    return {
        "node": node(),
        "subnet": subnet(),
        "routes": routes(),
        "reservations": reservations(),
        "pods": pods(),
        "containers": containers(),
        "daemon": daemon(),
    }


def pods_clean():
    stopped, removed = [], []
    for name in tasks():
        run("ctr", "-n", CTR_NS, "tasks", "kill", "-s", "TERM", name, check=False)
        stopped.append(name)
    # Each pod's `ctr run` sees its task exit, calls CNI DEL and removes the container.
    deadline = time.time() + 60
    while time.time() < deadline and any(
        run("systemctl", "is-active", "--quiet", f"cbrnet-pod-{n}.service", check=False).returncode == 0 for n in stopped
    ):
        time.sleep(0.5)
    for name in stopped:
        run("systemctl", "stop", f"cbrnet-pod-{name}.service", check=False)
    # Containers whose pod died without ctr (a reboot): only the record is left.
    for name in containers():
        run("ctr", "-n", CTR_NS, "tasks", "rm", "-f", name, check=False)
        run("ctr", "-n", CTR_NS, "containers", "rm", name, check=False)
        removed.append(name)
    run("systemctl", "reset-failed", "cbrnet-pod-*", check=False)
    return {"node": node(), "stopped": stopped, "removed_dead_containers": removed, "reservations": reservations()}


def pods_run(tag, n):
    names = [f"{tag}-{node()}-{i}" for i in range(1, n + 1)]
    for name in names:
        run(
            "systemd-run", "--quiet", f"--unit=cbrnet-pod-{name}", "--collect",
            # A reboot must kill the pod without DEL, as a crash would: SIGKILL to ctr.
            "-p", "KillSignal=SIGKILL",
            "ctr", "-n", CTR_NS, "run", "--rm", "--cni", IMAGE, name,
            "sh", "-c", 'trap "exit 0" TERM INT; sleep 1000000 & wait',
        )
    deadline = time.time() + 120
    ps = []
    while time.time() < deadline:
        ps = [p for p in pods() if p["name"] in names]
        if len(ps) == n and all(p["ip"] for p in ps):
            break
        time.sleep(0.5)
    failed = {}
    for name in names:
        if name not in {p["name"] for p in ps if p["ip"]}:
            j = run("journalctl", "-u", f"cbrnet-pod-{name}", "-n", "20", "-o", "cat", check=False)
            failed[name] = j.stdout.strip().splitlines()[-5:]
    return {"node": node(), "subnet": subnet(), "pods": ps, "failed": failed, "reservations": reservations()}


def ping(ips):
    results = []
    for p in pods():
        script = "; ".join(f'if ping -c 1 -W 3 {ip} >/dev/null 2>&1; then echo "ok {ip}"; else echo "fail {ip}"; fi' for ip in ips)
        r = run("ctr", "-n", CTR_NS, "tasks", "exec", "--exec-id", f"ping-{os.getpid()}-{p['pid']}", p["name"], "sh", "-c", script, check=False, timeout=300)
        seen = dict(line.split()[::-1] for line in r.stdout.splitlines() if line.split()[:1] in (["ok"], ["fail"]))
        for ip in ips:
            results.append({"from": p["name"], "from_ip": p["ip"], "to": ip, "ok": seen.get(ip) == "ok"})
    return {"node": node(), "results": results}


def wait_route(dst, gw, secs):
    start = time.time()
    while True:
        r = [x for x in routes() if x["dst"] == dst]
        cur = r[0]["gateway"] if r else None
        if cur == (None if gw == "none" else gw):
            return {"node": node(), "dst": dst, "want": gw, "ok": True, "after_s": round(time.time() - start, 1)}
        if time.time() - start > secs:
            return {"node": node(), "dst": dst, "want": gw, "ok": False, "now": cur, "after_s": round(time.time() - start, 1)}
        time.sleep(0.25)


def leases():
    p = run("cbrnet-routed", "leases", "--store", store(), "--json")
    return {"node": node(), "leases": json.loads(p.stdout)}


def etcdctl(*args):
    ep = store().removeprefix("etcd:")
    return run("etcdctl", f"--endpoints={ep}", *args, env={**os.environ, "ETCDCTL_API": "3"})


def etcd_keys():
    keys = []
    doc = json.loads(etcdctl("get", "--prefix", "/cbrnet/subnets/", "-w", "json").stdout)
    for kv in doc.get("kvs", []):
        import base64

        k = base64.b64decode(kv["key"]).decode()
        lease = kv.get("lease")
        ttl = None
        if lease:
            t = etcdctl("lease", "timetolive", format(int(lease), "x"), "-w", "json")
            ttl = json.loads(t.stdout)
            ttl = {"granted_ttl": ttl.get("granted-ttl"), "remaining_ttl": ttl.get("ttl")}
        keys.append({"key": k, "etcd_lease": format(int(lease), "x") if lease else None, **(ttl or {})})
    return {"node": node(), "keys": keys}


def journal_cursor():
    p = run("journalctl", "-u", UNIT, "-n", "0", "--show-cursor", "-q")
    m = re.search(r"-- cursor: (\S+)", p.stdout)
    return m.group(1) if m else None


def restart_check(peer_ip):
    before = {"routes": routes(), "subnet": subnet(), "daemon": daemon()}
    cursor = journal_cursor()
    mon = subprocess.Popen(["ip", "-ts", "monitor", "route"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    ps = pods()
    pinger = None
    if ps and peer_ip:
        # Pod-to-pod traffic across nodes during the restart (from this node's first pod).
        pinger = subprocess.Popen(
            ["nsenter", "-t", str(ps[0]["pid"]), "-n", "ping", "-q", "-i", "0.25", "-c", "80", peer_ip],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
    time.sleep(1)
    t_kill = time.time()
    run("systemctl", "kill", "-s", "KILL", UNIT)
    old_pid, old_restarts = before["daemon"]["MainPID"], int(before["daemon"]["NRestarts"])
    restarted_after = None
    while time.time() - t_kill < 90:
        d = daemon()
        if d["ActiveState"] == "active" and d["MainPID"] not in ("0", old_pid) and int(d["NRestarts"]) > old_restarts:
            restarted_after = round(time.time() - t_kill, 1)
            break
        time.sleep(0.2)
    # Wait past a full resync interval (10 s): a flap would have happened by then.
    time.sleep(12)
    mon.terminate()
    events = mon.communicate(timeout=10)[0].splitlines()
    ping_summary = None
    if pinger:
        pinger.wait(timeout=60)
        ping_summary = [l for l in pinger.stdout.read().splitlines() if "transmitted" in l]
    after = {"routes": routes(), "subnet": subnet(), "daemon": daemon()}
    j = run("journalctl", "-u", UNIT, "--after-cursor", cursor, "-o", "short-precise", check=False).stdout.splitlines() if cursor else []
    return {
        "node": node(),
        "before": before,
        "after": after,
        "restarted_after_s": restarted_after,
        "route_events": [e for e in events if e.strip()],
        "journal": j,
        "route_changes_in_journal": [l for l in j if "route installed" in l or "route removed" in l],
        "ping": ping_summary,
    }


def vanish_pod(name, secs):
    """Kills a pod the way a crashed runtime would leave it: its `ctr run` (which would call DEL)
    and then its task, both with SIGKILL. The pod's network namespace goes with its last process,
    and the host end of its veth with it; its reservation stays until cbrnet-routed's background
    reclaim (on its resync) takes the address back."""
    cid = f"{CTR_NS}-{name}"
    before = [r for r in reservations() if r["container_id"] == cid]
    veth = [l["ifname"] for l in json.loads(run("ip", "-j", "link", "show", "master", "cbr0").stdout or "[]")]
    cursor = journal_cursor()
    run("systemctl", "kill", "-s", "KILL", f"cbrnet-pod-{name}.service", check=False)
    run("ctr", "-n", CTR_NS, "tasks", "kill", "-s", "KILL", name, check=False)
    t0 = time.time()
    while name in tasks() and time.time() - t0 < 30:
        time.sleep(0.2)
    t_gone = time.time()
    veth_after = [l["ifname"] for l in json.loads(run("ip", "-j", "link", "show", "master", "cbr0").stdout or "[]")]
    reclaimed_after = None
    while time.time() - t_gone < secs:
        if not any(r["container_id"] == cid for r in reservations()):
            reclaimed_after = round(time.time() - t_gone, 1)
            break
        time.sleep(0.5)
    run("ctr", "-n", CTR_NS, "tasks", "rm", "-f", name, check=False)
    run("ctr", "-n", CTR_NS, "containers", "rm", name, check=False)
    run("systemctl", "reset-failed", f"cbrnet-pod-{name}.service", check=False)
    j = run("journalctl", "-u", UNIT, "--after-cursor", cursor, "-o", "cat", check=False).stdout.splitlines() if cursor else []
    return {
        "node": node(),
        "pod": name,
        "reserved_before": before,
        "bridge_ports_before": veth,
        "bridge_ports_after": veth_after,
        "reclaimed_after_s": reclaimed_after,
        "reservations_after": reservations(),
        "journal": [l for l in j if "reclaim" in l],
    }


def newnode_start(name, ip):
    """A new node: its own network namespace on this VM, with its own address on the nodes' L2
    segment (a macvlan of eth1), its own bridge, subnet file and cbrnet-routed under another
    node name. It reaches the other VMs (and they it) over the private network; this VM itself
    cannot reach it (macvlan keeps parent and child apart)."""
    d = f"/run/cbrnet-{name}"
    run("ip", "netns", "add", name)
    run("ip", "link", "add", f"mv-{name}", "link", "eth1", "type", "macvlan", "mode", "bridge")
    run("ip", "link", "set", f"mv-{name}", "netns", name)
    run("ip", "-n", name, "link", "set", f"mv-{name}", "name", "eth1")
    run("ip", "-n", name, "addr", "add", f"{ip}/24", "dev", "eth1")
    run("ip", "-n", name, "link", "set", "eth1", "up")
    run("ip", "-n", name, "link", "set", "lo", "up")
    os.makedirs(f"{d}/net.d", exist_ok=True)
    env = defaults()
    run(
        "systemd-run", "--quiet", f"--unit=cbrnet-routed-{name}", "--collect",
        "-p", f"NetworkNamespacePath=/run/netns/{name}",
        "/usr/bin/cbrnet-routed", "--node-name", name, "--node-ip", ip,
        "--cluster-cidr", env["CBRNET_CLUSTER_CIDR"], "--store", env["CBRNET_STORE"],
        "--lease-ttl", env.get("CBRNET_LEASE_TTL", "24h"),
        "--subnet-file", f"{d}/subnet.json",
        # Its own (empty) CNI config directory: no pods here, and the background reclaim must
        # not judge this VM's pods from another network namespace.
        "--cni-conf-dir", f"{d}/net.d",
    )
    deadline = time.time() + 60
    sub = None
    while time.time() < deadline:
        try:
            with open(f"{d}/subnet.json") as f:
                sub = json.load(f)
            break
        except (FileNotFoundError, json.JSONDecodeError):
            time.sleep(0.25)
    j = run("journalctl", "-u", f"cbrnet-routed-{name}", "-o", "cat", "-n", "15", check=False).stdout.splitlines()
    return {"node": node(), "new_node": name, "ip": ip, "subnet": sub, "routes": routes(name) if sub else [], "journal": j}


def newnode_stop(name):
    run("systemctl", "stop", f"cbrnet-routed-{name}.service", check=False)
    r = run("cbrnet-routed", "release", "--store", store(), "--node-name", name, check=False)
    run("ip", "netns", "del", name, check=False)
    run("rm", "-rf", f"/run/cbrnet-{name}", check=False)
    return {"node": node(), "released": r.returncode == 0, "release_output": (r.stdout + r.stderr).strip()}


# Paths the daemon must be able to write (its subnet file and reservations; a file store) and
# paths it must not (the rest of the system), tried from inside its own mount namespace.
WRITABLE = ["/run/cbrnet", "/var/lib/cbrnet"]
READ_ONLY = ["/usr/lib", "/etc", "/etc/cni/net.d", "/opt/cni/bin", "/var/lib"]


def confinement():
    pid = daemon()["MainPID"]
    status = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            status[k] = v.strip()
    tries = {}
    for d in WRITABLE + READ_ONLY:
        probe = os.path.join(d, f".cbrnet-lab-probe-{os.getpid()}")
        p = run("nsenter", "-t", pid, "-m", "--", "sh", "-c", f"touch {probe} && rm -f {probe}", check=False)
        tries[d] = {"writable": p.returncode == 0, "error": p.stderr.strip()[-200:]}
    return {
        "pid": pid,
        "cap_bnd": status.get("CapBnd"),
        "cap_eff": status.get("CapEff"),
        "no_new_privs": status.get("NoNewPrivs"),
        "writable": WRITABLE,
        "read_only": READ_ONLY,
        "tries": tries,
    }


def main(argv):
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[0], argv[1:]
    table = {
        "state": lambda: state(),
        "pods-clean": lambda: pods_clean(),
        "pods-run": lambda: pods_run(args[0], int(args[1])),
        "ping": lambda: ping(args),
        "wait-route": lambda: wait_route(args[0], args[1], float(args[2])),
        "leases": lambda: leases(),
        "etcd-keys": lambda: etcd_keys(),
        "restart-check": lambda: restart_check(args[0] if args else None),
        "vanish-pod": lambda: vanish_pod(args[0], float(args[1])),
        "newnode-start": lambda: newnode_start(args[0], args[1]),
        "newnode-stop": lambda: newnode_stop(args[0]),
        "confinement": lambda: confinement(),
    }
    if cmd not in table:
        print(__doc__, file=sys.stderr)
        return 2
    out(table[cmd]())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
