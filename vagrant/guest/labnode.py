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
  labnode.py pods-clean [TAG]               stop this node's lab pods (only TAG-*: those), remove dead containers
  labnode.py pods-run TAG N                 start N pods TAG-<node>-<i>, wait for their addresses
  labnode.py ping IP...                     ping every IP once from every running pod
  labnode.py wait-route SUBNET GW|none SECS wait until the route to SUBNET is via GW (or absent; either family)
  labnode.py leases                         the cluster's leases (cbrnet-routed leases --json)
  labnode.py etcd-keys                      the lease keys in etcd and their etcd lease TTLs
  labnode.py etcd-tls                       the store over TLS: leases with the node's certificate, without, over http
  labnode.py restart-check PEER_POD_IP      SIGKILL cbrnet-routed, let systemd restart it, compare
  labnode.py vanish-pod NAME SECS           kill a pod without CNI DEL, wait for its address's reclaim
  labnode.py confinement                    what the unit leaves cbrnet-routed: capabilities, writable paths
  labnode.py newnode-start NAME IP          a new cbrnet node in a network namespace of this VM
  labnode.py newnode-stop NAME              stop it and release its lease
  labnode.py defaults-set KEY=VALUE...      set cbrnet-routed's settings (the file saved first), restart it
  labnode.py defaults-restore               put the saved settings file back, restart cbrnet-routed
  labnode.py wait-paths direct|vxlan SECS SUBNET=NODE_IP...
                                            wait until each SUBNET goes that way (vxlan: route through
                                            cbrnet.vxlan and an FDB entry to NODE_IP), then the VXLAN state
  labnode.py daemon-load                    cbrnet-routed's CPU time, age and FDB writes logged since it started
  labnode.py netcheck POD IP                from POD's network namespace: MTU, ping, DF ping at the full MTU
  labnode.py iperf-server POD|host PORT     a one-off iperf3 server in POD's network namespace (or the VM's)
  labnode.py iperf-client POD|host IP PORT SECS
                                            iperf3 (TCP, one stream) to IP from there, JSON figures
  labnode.py iperf-stop PORT                stop what is left of an iperf3 server on PORT
  labnode.py doctor                         cbrnet-routed doctor --probe --json with the unit's settings
  labnode.py addr6-add ADDR/LEN DEV         add an IPv6 address, wait until duplicate detection is done
  labnode.py addr6-del ADDR/LEN DEV         remove it
  labnode.py ping-nodes IP...               ping each IP once from the VM itself (no pod)
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


# The node's etcd TLS settings, as flags of cbrnet-routed.
TLS_FLAGS = {"CBRNET_ETCD_CA_FILE": "--etcd-ca-file", "CBRNET_ETCD_CERT_FILE": "--etcd-cert-file",
             "CBRNET_ETCD_KEY_FILE": "--etcd-key-file"}


def store_args():
    """--store and the node's etcd TLS flags, for cbrnet-routed's commands."""
    env = defaults()
    args = ["--store", env["CBRNET_STORE"]]
    for var, flag in TLS_FLAGS.items():
        if env.get(var):
            args += [flag, env[var]]
    return args


def node():
    return os.uname().nodename


def subnet():
    try:
        with open(SUBNET_FILE) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def routes(netns=None, family="4"):
    cmd = ["ip"] + (["-n", netns] if netns else []) + ["-j", f"-{family}", "route", "show", "proto", "157"]
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


def pod_ip(pid, family="inet"):
    """The pod's first address of `family` on eth0 (inet6: a global one, not its link-local)."""
    p = run("nsenter", "-t", str(pid), "-n", "ip", "-j", "addr", "show", "dev", "eth0", check=False)
    if p.returncode != 0 or not p.stdout.strip():
        return None
    for a in json.loads(p.stdout):
        for ai in a.get("addr_info", []):
            if ai.get("family") == family and ai.get("scope") == "global":
                return ai["local"]
    return None


def pods():
    return sorted(
        ({"name": n, "pid": pid, "ip": pod_ip(pid), "ip6": pod_ip(pid, "inet6"), "cni_container_id": f"{CTR_NS}-{n}"}
         for n, pid in tasks().items()),
        key=lambda p: p["name"],
    )


def state():
    return {
        "node": node(),
        "subnet": subnet(),
        "routes": routes(),
        "routes6": routes(family="6"),
        "reservations": reservations(),
        "pods": pods(),
        "containers": containers(),
        "daemon": daemon(),
    }


def pods_clean(tag=None):
    """Stops this node's lab pods (only those named TAG-* with a TAG) and, without a TAG, removes
    the records of containers that died without ctr."""
    stopped, removed = [], []
    for name in tasks():
        if tag and not name.startswith(f"{tag}-"):
            continue
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
    for name in [] if tag else containers():
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
    # With an IPv6 subnet on the node, a pod is ready once it has an address of each family.
    dual = bool((subnet() or {}).get("ipv6Subnet"))
    deadline = time.time() + 120
    ps = []
    while time.time() < deadline:
        ps = [p for p in pods() if p["name"] in names]
        if len(ps) == n and all(p["ip"] and (p["ip6"] or not dual) for p in ps):
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
    family = "6" if ipaddress.ip_network(dst).version == 6 else "4"
    start = time.time()
    while True:
        r = [x for x in routes(family=family) if x["dst"] == dst]
        cur = r[0]["gateway"] if r else None
        if cur == (None if gw == "none" else gw):
            return {"node": node(), "dst": dst, "want": gw, "ok": True, "after_s": round(time.time() - start, 1)}
        if time.time() - start > secs:
            return {"node": node(), "dst": dst, "want": gw, "ok": False, "now": cur, "after_s": round(time.time() - start, 1)}
        time.sleep(0.25)


def leases():
    p = run("cbrnet-routed", "leases", *store_args(), "--json")
    return {"node": node(), "leases": json.loads(p.stdout)}


def etcdctl(*args):
    env = defaults()
    ep = env["CBRNET_STORE"].removeprefix("etcd:")
    tls = [f"--{f}={env[v]}" for v, f in (("CBRNET_ETCD_CA_FILE", "cacert"), ("CBRNET_ETCD_CERT_FILE", "cert"),
                                          ("CBRNET_ETCD_KEY_FILE", "key")) if env.get(v)]
    return run("etcdctl", f"--endpoints={ep}", *tls, *args, env={**os.environ, "ETCDCTL_API": "3"})


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
        "--cluster-cidr", env["CBRNET_CLUSTER_CIDR"], *store_args(),
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
    r = run("cbrnet-routed", "release", *store_args(), "--node-name", name, check=False)
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


def etcd_tls():
    """The store as the daemon reaches it (TLS with the node's client certificate), and what etcd
    says to a client without one and to plain http://."""
    env = defaults()
    ep = env["CBRNET_STORE"].removeprefix("etcd:").split(",")[0]
    def leases(*args):
        p = run("cbrnet-routed", "leases", *args, check=False)
        return {"rc": p.returncode, "said": (p.stderr.strip().splitlines() or [""])[-1][-300:]}
    key = env.get("CBRNET_ETCD_KEY_FILE", "")
    return {
        "node": node(),
        "store": env["CBRNET_STORE"],
        "key_mode": format(os.stat(key).st_mode & 0o7777, "04o") if key else None,
        "with_cert": leases(*store_args()),
        "without_cert": leases("--store", f"etcd:{ep}", "--etcd-ca-file", env.get("CBRNET_ETCD_CA_FILE", "")),
        "plain_http": leases("--store", "etcd:" + ep.replace("https://", "http://")),
    }


# ---- backends: the daemon's settings, the VXLAN device, pod-to-pod checks, iperf3 ----------
SAVED_DEFAULTS = DEFAULTS + ".cbrnet-lab-saved"
VXLAN_DEV = "cbrnet.vxlan"


def sha256(path):
    import hashlib

    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def restart_daemon():
    """Restarts the unit and waits for it to be ready (Type=notify: `systemctl restart` returns
    once the node has its subnet again)."""
    t = time.time()
    r = run("systemctl", "restart", UNIT, check=False, timeout=300)
    deadline = time.time() + 120
    while time.time() < deadline:
        if daemon().get("ActiveState") == "active" and subnet():
            break
        time.sleep(0.5)
    d = daemon()
    return {"restart_rc": r.returncode, "restart_error": r.stderr.strip()[-300:], "restarted_in_s": round(time.time() - t, 1), "daemon": d}


def defaults_set(pairs):
    """Sets KEY=VALUE in /etc/default/cbrnet-routed (as provision.sh does: an existing or
    commented-out line of the key is replaced, else one is added), after saving the file once
    (the first save is kept: it is the lab's own configuration), and restarts the daemon."""
    if not os.path.exists(SAVED_DEFAULTS):
        run("cp", "-p", DEFAULTS, SAVED_DEFAULTS)
    with open(DEFAULTS) as f:
        lines = f.read().splitlines()
    for pair in pairs:
        key, _, value = pair.partition("=")
        if not re.fullmatch(r"[A-Z_]+", key):
            raise RuntimeError(f"not a setting: {pair}")
        pat = re.compile(rf"^#?{key}=")
        if any(pat.match(l) for l in lines):
            lines = [f"{key}={value}" if pat.match(l) else l for l in lines]
        else:
            lines.append(f"{key}={value}")
    with open(DEFAULTS + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(DEFAULTS + ".tmp", DEFAULTS)
    return {
        "node": node(),
        "saved": SAVED_DEFAULTS,
        "saved_sha256": sha256(SAVED_DEFAULTS),
        "settings": {k: v for k, v in defaults().items() if k.startswith("CBRNET_")},
        **restart_daemon(),
    }


def defaults_restore():
    restored = os.path.exists(SAVED_DEFAULTS)
    if restored:
        os.replace(SAVED_DEFAULTS, DEFAULTS)
    return {
        "node": node(),
        "restored": restored,
        "sha256": sha256(DEFAULTS),
        "settings": {k: v for k, v in defaults().items() if k.startswith("CBRNET_")},
        **restart_daemon(),
    }


def ip_json(*args, netns_pid=None):
    cmd = (["nsenter", "-t", str(netns_pid), "-n"] if netns_pid else []) + ["ip", "-j", *args]
    p = run(*cmd, check=False)
    return json.loads(p.stdout or "[]") if p.returncode == 0 else []


def tx_checksumming():
    p = run("ethtool", "-k", VXLAN_DEV, check=False)
    m = re.search(r"^tx-checksumming:\s*(\S+)", p.stdout, re.M)
    return m.group(1) if m else None


def daemon_load():
    """The running cbrnet-routed's CPU time and age, and how many of its log lines since it
    started say it wrote FDB entries (each reconcile that finds an entry missing writes it)."""
    p = run("systemctl", "show", UNIT, "-p", "MainPID,CPUUsageNSec,ExecMainStartTimestampMonotonic")
    d = dict(line.split("=", 1) for line in p.stdout.split("\n") if "=" in line)
    cpu = int(d["CPUUsageNSec"]) / 1e9 if d.get("CPUUsageNSec", "").isdigit() else None
    up = time.clock_gettime(time.CLOCK_MONOTONIC) - int(d.get("ExecMainStartTimestampMonotonic") or 0) / 1e6
    j = run("journalctl", "-u", UNIT, f"_PID={d.get('MainPID')}", "-o", "cat", check=False, timeout=300).stdout.splitlines()
    writes = [l for l in j if re.search(r"VXLAN peers: [1-9][0-9]* FDB entries written", l)]
    return {"node": node(), "pid": d.get("MainPID"), "cpu_s": cpu, "up_s": round(up, 1), "log_lines": len(j),
            "fdb_write_lines": len(writes), "last_fdb_write": writes[-1] if writes else None}


def daemon_cpu_s():
    p = run("systemctl", "show", UNIT, "-p", "CPUUsageNSec", "--value", check=False)
    v = p.stdout.strip()
    return int(v) / 1e9 if v.isdigit() else None


def vxlan_state():
    link = ip_json("-d", "link", "show", "dev", VXLAN_DEV)
    dev = None
    if link:
        l = link[0]
        info = l.get("linkinfo", {}).get("info_data", {})
        dev = {
            "mtu": l.get("mtu"), "mac": l.get("address"), "up": "UP" in l.get("flags", []),
            "vni": info.get("id"), "port": info.get("port"), "local": info.get("local"),
            "learning": info.get("learning"), "tx_checksumming": tx_checksumming(),
        }
    p = run("bridge", "-j", "fdb", "show", "dev", VXLAN_DEV, check=False)
    fdb = [{"mac": e.get("mac"), "dst": e.get("dst"), "state": e.get("state")}
           for e in json.loads(p.stdout or "[]")] if p.returncode == 0 else []
    neigh = [{"dst": e.get("dst"), "lladdr": e.get("lladdr"), "state": e.get("state")}
             for e in ip_json("neigh", "show", "dev", VXLAN_DEV)]
    lp = run("cbrnet-routed", "leases", *store_args(), "--json", check=False)
    ls = json.loads(lp.stdout) if lp.returncode == 0 and lp.stdout.strip() else []
    return {
        "node": node(),
        "device": dev,
        "fdb": fdb,
        "neigh": neigh,
        "routes": routes(),
        "subnet": subnet(),
        "paths": {l["subnet"]: l.get("path") for l in ls},
        "daemon": daemon(),
    }


def wait_paths(mode, secs, peers):
    """peers: ["SUBNET=NODE_IP", ...]; mode direct: each route is `SUBNET via NODE_IP` (not through
    the VXLAN device); vxlan: each route goes through cbrnet.vxlan and the FDB sends NODE_IP's VTEP
    there."""
    want = dict(p.split("=", 1) for p in peers)
    start = time.time()
    while True:
        rs = {r["dst"]: r for r in routes()}
        fdb_dsts = set()
        if mode == "vxlan":
            p = run("bridge", "-j", "fdb", "show", "dev", VXLAN_DEV, check=False)
            if p.returncode == 0:
                fdb_dsts = {e.get("dst") for e in json.loads(p.stdout or "[]")}
        missing = []
        for sub, ip in want.items():
            r = rs.get(sub)
            if mode == "direct":
                good = r is not None and r["gateway"] == ip and r["dev"] != VXLAN_DEV
            else:
                good = r is not None and r["dev"] == VXLAN_DEV and ip in fdb_dsts
            if not good:
                missing.append(sub)
        if not missing or time.time() - start > secs:
            return {"ok": not missing, "missing": missing, "after_s": round(time.time() - start, 1), **vxlan_state()}
        time.sleep(0.5)


def pod_pid(name):
    pid = tasks().get(name)
    if pid is None:
        raise RuntimeError(f"no running pod {name} on {node()}")
    return pid


def netcheck(pod, ip):
    """From the pod's network namespace, with the VM's iputils ping (busybox's has no -M): its
    eth0 MTU, a plain ping, a ping of the full MTU with DF set (ICMP payload MTU-28), and one byte
    more with DF set (which the pod's own MTU must refuse)."""
    pid = pod_pid(pod)
    link = ip_json("link", "show", "dev", "eth0", netns_pid=pid)
    mtu = link[0]["mtu"] if link else None

    def ping(*extra):
        cmd = ["nsenter", f"--net=/proc/{pid}/ns/net", "ping", "-c", "3", "-i", "0.3", "-W", "3", *extra, ip]
        p = run(*cmd, check=False, timeout=60)
        text = (p.stdout + p.stderr).strip().splitlines()
        summary = [l for l in text if "transmitted" in l or "rtt" in l or "error" in l.lower() or "too long" in l]
        return {"cmd": " ".join(cmd[2:]), "ok": p.returncode == 0, "summary": summary[:3] or text[-2:]}

    return {
        "node": node(), "pod": pod, "pid": pid, "to": ip, "mtu": mtu,
        "ping": ping(),
        "df_full": ping("-M", "do", "-s", str(mtu - 28)) if mtu else None,
        "df_over": ping("-M", "do", "-s", str(mtu - 27)) if mtu else None,
    }


def netns_prefix(where):
    if where == "host":
        return []
    return ["nsenter", f"--net=/proc/{pod_pid(where)}/ns/net"]


def iperf_pidfile(port):
    return f"/run/cbrnet-lab-iperf3-{port}.pid"


def iperf_stop(port):
    killed = False
    try:
        with open(iperf_pidfile(port)) as f:
            pid = int(f.read().strip() or "0")
        if pid and os.path.exists(f"/proc/{pid}") and "iperf3" in open(f"/proc/{pid}/comm").read():
            os.kill(pid, 15)
            killed = True
    except (FileNotFoundError, ValueError, ProcessLookupError):
        pass
    try:
        os.unlink(iperf_pidfile(port))
    except FileNotFoundError:
        pass
    return {"node": node(), "port": port, "killed": killed}


def iperf_server(where, port):
    """A one-off iperf3 server (it exits after one test) in the pod's network namespace, or the
    VM's (`host`); returns once it listens."""
    iperf_stop(port)
    pre = netns_prefix(where)
    cmd = [*pre, "iperf3", "-s", "-1", "-D", "-p", str(port), "--pidfile", iperf_pidfile(port)]
    run(*cmd)
    deadline = time.time() + 30
    listening = False
    while time.time() < deadline and not listening:
        p = run(*pre, "ss", "-Hltn", f"sport = :{port}", check=False)
        listening = bool(p.stdout.strip())
        if not listening:
            time.sleep(0.2)
    return {"node": node(), "where": where, "port": port, "cmd": " ".join(cmd), "listening": listening}


def dev_counters(dev):
    try:
        with open(f"/sys/class/net/{dev}/statistics/tx_bytes") as f:
            tx = int(f.read())
        with open(f"/sys/class/net/{dev}/statistics/tx_packets") as f:
            txp = int(f.read())
        return tx, txp
    except FileNotFoundError:
        return None, None


def iperf_client(where, ip, port, secs):
    """iperf3 TCP, one stream, for SECS seconds, from the pod's network namespace (or the VM's);
    also the VM's counters of the VXLAN device and eth1 around it (which way the bytes went)."""
    pre = netns_prefix(where)
    cmd = [*pre, "iperf3", "-c", ip, "-p", str(port), "-t", str(secs), "-J", "--connect-timeout", "10000"]
    before = {d: dev_counters(d) for d in (VXLAN_DEV, "eth1")}
    cpu0 = daemon_cpu_s()
    t = time.time()
    p = run(*cmd, check=False, timeout=secs + 120)
    took = round(time.time() - t, 1)
    cpu1 = daemon_cpu_s()
    after = {d: dev_counters(d) for d in (VXLAN_DEV, "eth1")}
    delta = {d: (after[d][0] - before[d][0]) if before[d][0] is not None and after[d][0] is not None else None for d in before}
    doc = {}
    try:
        doc = json.loads(p.stdout)
    except json.JSONDecodeError:
        pass
    end = doc.get("end", {})
    sent, recv = end.get("sum_sent", {}), end.get("sum_received", {})
    streams = end.get("streams", [{}])
    snd = (streams[0] or {}).get("sender", {}) if streams else {}
    cpu = end.get("cpu_utilization_percent", {})
    ok = p.returncode == 0 and bool(sent) and not doc.get("error")
    return {
        "node": node(), "where": where, "to": ip, "cmd": " ".join(cmd), "ok": ok, "rc": p.returncode,
        "error": doc.get("error") or ("" if ok else (p.stderr.strip() or p.stdout.strip())[-400:]),
        "seconds": sent.get("seconds"), "took_s": took,
        "sent_bps": sent.get("bits_per_second"), "received_bps": recv.get("bits_per_second"),
        "bytes": sent.get("bytes"), "retransmits": sent.get("retransmits"),
        "max_snd_cwnd": snd.get("max_snd_cwnd"), "mean_rtt_us": snd.get("mean_rtt"),
        "cpu_local": cpu.get("host_total"), "cpu_remote": cpu.get("remote_total"),
        "tx_bytes_delta": delta,
        # cbrnet-routed's CPU time on this node during the run (it shares the VM's CPU).
        "daemon_cpu_s": round(cpu1 - cpu0, 2) if cpu0 is not None and cpu1 is not None else None,
    }


# ---- doctor, and the VMs' IPv6 addresses on the private network ---------------------------
def doctor():
    """`cbrnet-routed doctor --probe --json` given the daemon's settings the way the unit reads
    them (its EnvironmentFile, exported), as the README's troubleshooting says to run it."""
    script = f'set -a; . {DEFAULTS}; set +a; exec cbrnet-routed doctor --probe --json'
    t = time.time()
    p = run("sh", "-c", script, check=False, timeout=120)
    took = round(time.time() - t, 1)
    try:
        checks = json.loads(p.stdout)
    except json.JSONDecodeError:
        checks = None
    return {"node": node(), "cmd": f"sh -c '{script}'", "rc": p.returncode, "took_s": took, "checks": checks,
            "stdout": p.stdout[-2000:] if checks is None else "", "stderr": p.stderr.strip()[-1000:]}


def addrs6(dev):
    return [{"addr": f"{a['local']}/{a['prefixlen']}", "tentative": bool(a.get("tentative")), "dadfailed": bool(a.get("dadfailed"))}
            for l in ip_json("-6", "addr", "show", "dev", dev) for a in l.get("addr_info", [])
            if a.get("scope") == "global"]


def addr6_add(addr, dev, secs=30):
    """Adds a global IPv6 address (if missing) and waits until duplicate address detection has
    finished with it, as a configured interface would."""
    if not any(a["addr"] == addr for a in addrs6(dev)):
        run("ip", "-6", "addr", "add", addr, "dev", dev)
    t = time.time()
    while time.time() - t < secs:
        mine = [a for a in addrs6(dev) if a["addr"] == addr]
        if mine and not mine[0]["tentative"]:
            break
        time.sleep(0.2)
    mine = [a for a in addrs6(dev) if a["addr"] == addr]
    return {"node": node(), "dev": dev, "addr": addr, "ok": bool(mine) and not mine[0]["tentative"] and not mine[0]["dadfailed"],
            "dad_s": round(time.time() - t, 1), "addrs": addrs6(dev)}


def addr6_del(addr, dev):
    p = run("ip", "-6", "addr", "del", addr, "dev", dev, check=False)
    return {"node": node(), "dev": dev, "addr": addr, "removed": p.returncode == 0, "addrs": addrs6(dev)}


def ping_nodes(ips):
    """One ping to each IP from the VM itself (its own addresses, no pod)."""
    results = []
    for ip in ips:
        p = run("ping", "-c", "1", "-W", "3", ip, check=False, timeout=30)
        results.append({"to": ip, "ok": p.returncode == 0})
    return {"node": node(), "results": results}


def main(argv):
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[0], argv[1:]
    table = {
        "state": lambda: state(),
        "pods-clean": lambda: pods_clean(args[0] if args else None),
        "pods-run": lambda: pods_run(args[0], int(args[1])),
        "ping": lambda: ping(args),
        "wait-route": lambda: wait_route(args[0], args[1], float(args[2])),
        "leases": lambda: leases(),
        "etcd-keys": lambda: etcd_keys(),
        "etcd-tls": lambda: etcd_tls(),
        "restart-check": lambda: restart_check(args[0] if args else None),
        "vanish-pod": lambda: vanish_pod(args[0], float(args[1])),
        "newnode-start": lambda: newnode_start(args[0], args[1]),
        "newnode-stop": lambda: newnode_stop(args[0]),
        "confinement": lambda: confinement(),
        "defaults-set": lambda: defaults_set(args),
        "defaults-restore": lambda: defaults_restore(),
        "wait-paths": lambda: wait_paths(args[0], float(args[1]), args[2:]),
        "daemon-load": lambda: daemon_load(),
        "netcheck": lambda: netcheck(args[0], args[1]),
        "iperf-server": lambda: iperf_server(args[0], int(args[1])),
        "iperf-client": lambda: iperf_client(args[0], args[1], int(args[2]), int(args[3])),
        "iperf-stop": lambda: iperf_stop(int(args[0])),
        "doctor": lambda: doctor(),
        "addr6-add": lambda: addr6_add(args[0], args[1]),
        "addr6-del": lambda: addr6_del(args[0], args[1]),
        "ping-nodes": lambda: ping_nodes(args),
    }
    if cmd not in table:
        print(__doc__, file=sys.stderr)
        return 2
    out(table[cmd]())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
