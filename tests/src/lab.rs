//! A cluster on one machine: nodes (namespaces) joined by an underlay in a namespace of its own,
//! each running `cbrnet-routed`, with pods added through the `cbrnet` binary. The underlay is one
//! bridge, or several (segments, one subnet each) with the underlay namespace routing between them.

pub use crate::etcd::Etcd;
use crate::{bin, result_ip, Call, Netns, Node};
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
/// The lab's IPv6 pod network.
pub const CLUSTER_CIDR_V6: &str = "fd00:10:244::/56";

/// The pods' address families (`cbrnet-lab --ip-family`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IpFamily {
    #[default]
    V4,
    V6,
    Dual,
}

impl IpFamily {
    pub fn has_v4(self) -> bool {
        self != IpFamily::V6
    }
    pub fn has_v6(self) -> bool {
        self != IpFamily::V4
    }
    /// The cluster CIDRs of the family, as `--cluster-cidr` takes them.
    pub fn cluster_cidr(self) -> String {
        match self {
            IpFamily::V4 => CLUSTER_CIDR.into(),
            IpFamily::V6 => CLUSTER_CIDR_V6.into(),
            IpFamily::Dual => format!("{CLUSTER_CIDR},{CLUSTER_CIDR_V6}"),
        }
    }
}

/// The device through which the daemon routes the subnets of peers it reaches over VXLAN.
pub const VXLAN_DEV: &str = "cbrnet.vxlan";

/// How a route of ours reaches its subnet: "vxlan" through [`VXLAN_DEV`], else "direct" (via the
/// peer's node IP).
pub fn route_path(line: &str) -> &'static str {
    if line.contains(&format!("dev {VXLAN_DEV}")) {
        "vxlan"
    } else {
        "direct"
    }
}

/// Segment `s` of the underlay: 192.168.(50+s).0/24.
fn segment_prefix(s: usize) -> String {
    format!("192.168.{}", 50 + s)
}

/// Segment `s` of the underlay in IPv6: fd50:s::/64 (outside the pods' fd00::/16).
fn segment_prefix_v6(s: usize) -> String {
    format!("fd50:{s:x}:")
}

/// What a node routes to the router of its segment: the underlay's segments and nothing else, so
/// that no pod traffic to an unknown destination reaches the router. 192.168.48.0/20 holds
/// segments 0-13; 192.168.64.0/20 the rest.
fn underlay_aggregates(segments: usize) -> &'static [&'static str] {
    if segments <= 14 {
        &["192.168.48.0/20"]
    } else {
        &["192.168.48.0/20", "192.168.64.0/20"]
    }
}

pub struct LabNode {
    pub name: String,
    pub node: Node,
    pub ip: String,
    /// The node's IPv6 underlay address, when the lab's underlay has IPv6.
    pub ip6: Option<String>,
    pub daemon: Option<Child>,
    /// (namespace, container ID, address: the first the plugin gave)
    pub pods: Vec<(Netns, String, String)>,
    /// Every address of each pod, by container ID.
    pub pod_addrs: std::collections::HashMap<String, Vec<String>>,
    /// Extra daemon flags (e.g. a short lease TTL).
    pub flags: Vec<String>,
    /// Extra environment of the daemon.
    pub env: Vec<(String, String)>,
    /// Variables of the test's environment the daemon does not get.
    pub env_remove: Vec<String>,
}

impl LabNode {
    /// `ip route show proto 157`, without the `nhid N` of routes through nexthop objects, so that
    /// a route reads `SUBNET via NODE_IP dev ...` either way.
    pub fn route_table(&self) -> String {
        self.route_table_raw()
            .lines()
            .map(|l| {
                let mut words: Vec<&str> = l.split_whitespace().collect();
                if let Some(i) = words.iter().position(|w| *w == "nhid") {
                    words.drain(i..(i + 2).min(words.len()));
                }
                words.join(" ") + "\n"
            })
            .collect()
    }
    /// `ip route show proto 157` of both families as the kernel writes it (`nhid N` included).
    pub fn route_table_raw(&self) -> String {
        let mut table = self.node.ns.ok(&["ip", "route", "show", "proto", "157"]);
        table += &self.node.ns.ok(&["ip", "-6", "route", "show", "proto", "157"]);
        table
    }

    pub fn subnet(&self) -> Option<String> {
        self.subnets().into_iter().next()
    }
    /// Every subnet the node publishes (`subnet`, then `ipv6Subnet`).
    pub fn subnets(&self) -> Vec<String> {
        let Some(v) = std::fs::read_to_string(self.node.subnet_file())
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        else {
            return Vec::new();
        };
        ["subnet", "ipv6Subnet"]
            .iter()
            .filter_map(|k| Some(v[k].as_str()?.to_string()))
            .collect()
    }
    /// The node's underlay address of a family.
    pub fn ip_of(&self, v6: bool) -> Option<&str> {
        if v6 {
            self.ip6.as_deref()
        } else {
            Some(&self.ip)
        }
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.node.dir.path().join("routed.log")).unwrap_or_default()
    }
    /// How often the log has said `what` (lines above debug level), and how often it was said
    /// only at debug level (the daemon's silent retries, with `CBRNET_LOG=debug`).
    pub fn said(&self, what: &str) -> (usize, usize) {
        let log = self.log();
        let lines = log.lines().filter(|l| l.contains(what));
        let debug = lines.clone().filter(|l| l.contains(" DEBUG ")).count();
        (lines.count() - debug, debug)
    }
}

impl Drop for LabNode {
    fn drop(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Where the lab keeps its leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// `file:DIR` in the lab's own directory.
    File,
    /// A real etcd inside the underlay namespace, on 192.168.50.2.
    Etcd,
}

// Fields drop in order: daemons first, then the store, then the underlay.
pub struct Lab {
    pub nodes: Vec<LabNode>,
    pub etcd: Option<crate::etcd::Etcd>,
    pub underlay: Netns,
    pub store: String,
    pub dir: tempfile::TempDir,
    /// `--cluster-cidr` of the daemons started from now on.
    pub cluster_cidr: String,
    /// `--resync-interval` of the daemons started from now on (1s: tests see resyncs soon).
    pub resync_interval: String,
    /// Underlay segments (one bridge and /24 each); set before the first node is added.
    pub segments: usize,
    /// `--backend` of the daemons started from now on (None: the daemon's default).
    pub backend: Option<String>,
    /// The pods' families; set before the first node is added (`cluster_cidr` follows it).
    pub family: IpFamily,
    /// The underlay's families: IPv4 (always: the store is reached over it), and IPv6 when the
    /// pods have IPv6 unless this is set (IPv6 pods over an IPv4-only underlay).
    pub underlay_v4_only: bool,
    /// Segments the underlay namespace has been built with so far.
    built_segments: usize,
    tag: String,
}

impl Lab {
    /// An empty lab: the underlay (bridge `ul0`, 192.168.50.0/24) and the store.
    pub fn new(tag: &str, kind: StoreKind) -> Lab {
        let underlay = Netns::new(&format!("{tag}-ul"));
        underlay.ok(&["ip", "link", "add", "ul0", "type", "bridge"]);
        underlay.ok(&["ip", "link", "set", "ul0", "up"]);
        let dir = crate::temp_dir();
        let (store, etcd) = match kind {
            StoreKind::File => (format!("file:{}", dir.path().join("leases").display()), None),
            StoreKind::Etcd => {
                underlay.ok(&["ip", "addr", "add", "192.168.50.2/24", "dev", "ul0"]);
                let e = crate::etcd::Etcd::start_in(&underlay, "192.168.50.2");
                (e.store(), Some(e))
            }
        };
        Lab {
            nodes: Vec::new(),
            etcd,
            underlay,
            store,
            dir,
            cluster_cidr: CLUSTER_CIDR.into(),
            resync_interval: "1s".into(),
            segments: 1,
            backend: None,
            family: IpFamily::V4,
            underlay_v4_only: false,
            built_segments: 1,
            tag: tag.into(),
        }
    }

    /// Does the underlay carry IPv6 (an address of each node, and the router's)?
    pub fn underlay_v6(&self) -> bool {
        self.family.has_v6() && !self.underlay_v4_only
    }

    /// Sets the pods' families (before the first node): the cluster CIDR follows.
    pub fn set_family(&mut self, f: IpFamily) {
        assert!(self.nodes.is_empty(), "set the lab's family before adding nodes");
        self.family = f;
        self.cluster_cidr = f.cluster_cidr();
    }

    /// Node `i`'s `--node-ip`: its IPv4 address unless the pods are IPv6 only, and its IPv6
    /// one where the underlay has it.
    pub fn node_ip_arg(&self, i: usize) -> String {
        let n = &self.nodes[i];
        let mut ips = Vec::new();
        if self.family.has_v4() || !self.underlay_v6() {
            ips.push(n.ip.clone());
        }
        ips.extend(n.ip6.clone().filter(|_| self.family.has_v6()));
        ips.join(",")
    }

    /// The underlay segment of node `i`.
    pub fn segment_of(&self, i: usize) -> usize {
        i % self.segments
    }

    /// With more than one segment: the bridges `ul1`.. and the underlay namespace as the router
    /// between them (192.168.(50+s).1 on each, forwarding on, in that namespace only).
    fn build_segments(&mut self) {
        if self.built_segments == self.segments {
            return;
        }
        assert!(self.segments >= 1, "a lab has at least one segment");
        assert!(
            self.nodes.is_empty() && self.built_segments == 1,
            "set the lab's segments ({}) before adding nodes",
            self.segments
        );
        for s in 0..self.segments {
            let bridge = format!("ul{s}");
            if s > 0 {
                self.underlay
                    .ok(&["ip", "link", "add", &bridge, "type", "bridge"]);
                self.underlay.ok(&["ip", "link", "set", &bridge, "up"]);
            }
            let router = format!("{}.1/24", segment_prefix(s));
            self.underlay.ok(&["ip", "addr", "add", &router, "dev", &bridge]);
            if self.underlay_v6() {
                let router6 = format!("{}:1/64", segment_prefix_v6(s));
                self.underlay
                    .ok(&["ip", "addr", "add", &router6, "dev", &bridge, "nodad"]);
            }
        }
        self.underlay.ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        if self.underlay_v6() {
            self.underlay
                .ok(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        }
        self.built_segments = self.segments;
    }

    /// Adds a node on its segment's bridge (192.168.(50+s).(10+i)/24, s = i % segments, with a
    /// route to the other segments through the router when there are several); does not start
    /// its daemon.
    pub fn add_node(&mut self) -> usize {
        self.build_segments();
        let i = self.nodes.len();
        let s = self.segment_of(i);
        let node = Node::new(&format!("{}-n{i}", self.tag));
        let port = format!("port{i}");
        self.underlay.ok(&[
            "ip",
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &node.ns.name,
        ]);
        self.underlay
            .ok(&["ip", "link", "set", &port, "master", &format!("ul{s}"), "up"]);
        let ip = format!("{}.{}", segment_prefix(s), 10 + i);
        node.ns
            .ok(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        node.ns.ok(&["ip", "link", "set", "eth0", "up"]);
        // Written as the kernel and the daemon write it (fd50::a, not fd50:0::a).
        let ip6 = self.underlay_v6().then(|| {
            let a: std::net::Ipv6Addr = format!("{}:{:x}", segment_prefix_v6(s), 10 + i)
                .parse()
                .expect("the lab's IPv6 node address is an address");
            a.to_string()
        });
        if let Some(ip6) = &ip6 {
            // The address is the lab's alone: no DAD, usable at once.
            node.ns
                .ok(&["ip", "addr", "add", &format!("{ip6}/64"), "dev", "eth0", "nodad"]);
        }
        if self.segments > 1 {
            let router = format!("{}.1", segment_prefix(s));
            for net in underlay_aggregates(self.segments) {
                node.ns.ok(&["ip", "route", "add", net, "via", &router]);
            }
            if ip6.is_some() {
                let router6 = format!("{}:1", segment_prefix_v6(s));
                node.ns
                    .ok(&["ip", "-6", "route", "add", "fd50::/16", "via", &router6]);
            }
        }
        self.nodes.push(LabNode {
            name: format!("node-{i}"),
            node,
            ip,
            ip6,
            daemon: None,
            pods: Vec::new(),
            pod_addrs: Default::default(),
            flags: Vec::new(),
            env: Vec::new(),
            env_remove: Vec::new(),
        });
        i
    }

    /// Starts node `i`'s daemon and waits until it has published its subnet.
    pub fn start(&mut self, i: usize) {
        // A restarted daemon finds the subnet file of its last run: wait for its own lease too.
        let held = self.nodes[i].log().matches("lease held").count();
        self.spawn(i);
        let n = &self.nodes[i];
        let t = Instant::now();
        while n.subnet().is_none() || n.log().matches("lease held").count() == held {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "node {i} published no subnet:\n{}",
                n.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The network config of the lab's pods on node `i` (in-process IPAM from the node's subnet
    /// file; addresses of vanished pods reclaimed after 2 s).
    pub fn pod_conf(&self, i: usize) -> serde_json::Value {
        let n = &self.nodes[i].node;
        json!({
            "cniVersion": "1.1.0", "name": "labnet", "type": "cbrnet",
            "ipam": {
                "type": "cbrnet-ipam", "subnetFile": n.subnet_file(), "dataDir": n.data_dir(),
                "reclaimAfter": "2s",
            },
        })
    }

    /// Starts node `i`'s daemon (with the node's own CNI config directory, holding the lab's pod
    /// network) without waiting for it.
    pub fn spawn(&mut self, i: usize) {
        let conf_dir = self.nodes[i].node.dir.path().join("net.d");
        std::fs::create_dir_all(&conf_dir).unwrap();
        let conflist = json!({
            "cniVersion": "1.1.0", "name": "labnet",
            "plugins": [{"type": "cbrnet", "ipam": self.pod_conf(i)["ipam"]}],
        });
        std::fs::write(conf_dir.join("10-labnet.conflist"), conflist.to_string()).unwrap();
        let args = self.daemon_args(i);
        let n = &mut self.nodes[i];
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(n.node.dir.path().join("routed.log"))
            .unwrap();
        let mut cmd = Command::new(bin("cbrnet-routed"));
        for k in &n.env_remove {
            cmd.env_remove(k);
        }
        cmd.args(&args)
            .envs(n.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        n.node.ns.enter(&mut cmd);
        let child = cmd.spawn().expect("starting cbrnet-routed");
        crate::register_daemon(child.id());
        n.daemon = Some(child);
    }

    /// The flags node `i`'s daemon runs with (and `doctor` is given).
    pub fn daemon_args(&self, i: usize) -> Vec<String> {
        let n = &self.nodes[i];
        let mut args: Vec<String> = vec!["--node-name".into(), n.name.clone()];
        // A node's own --node-ip wins over the lab's.
        if !n.flags.iter().any(|f| f == "--node-ip") {
            args.extend(["--node-ip".into(), self.node_ip_arg(i)]);
        }
        args.extend([
            "--cluster-cidr".into(),
            self.cluster_cidr.clone(),
            "--store".into(),
            self.store.clone(),
            "--subnet-file".into(),
            n.node.subnet_file().display().to_string(),
            "--cni-conf-dir".into(),
            n.node.dir.path().join("net.d").display().to_string(),
            "--resync-interval".into(),
            self.resync_interval.clone(),
        ]);
        // A node's own --backend (a node of another kind) wins over the lab's.
        if let Some(b) = self
            .backend
            .iter()
            .find(|_| !n.flags.iter().any(|f| f == "--backend"))
        {
            args.extend(["--backend".into(), b.clone()]);
        }
        args.extend(n.flags.iter().cloned());
        args
    }

    /// `cbrnet-routed doctor --json` on node `i` with its daemon's flags and environment (and the
    /// plugins of this build as the runtime's); (exit code, the checks, stderr).
    pub fn doctor(&self, i: usize, extra: &[&str]) -> (i32, Vec<serde_json::Value>, String) {
        self.doctor_with(i, self.daemon_args(i), extra)
    }

    /// [`Lab::doctor`] with `args` instead of the daemon's flags.
    pub fn doctor_with(
        &self,
        i: usize,
        args: Vec<String>,
        extra: &[&str],
    ) -> (i32, Vec<serde_json::Value>, String) {
        let n = &self.nodes[i];
        let mut cmd = Command::new(bin("cbrnet-routed"));
        cmd.arg("doctor")
            .args(args)
            .args(["--json", "--cni-bin-dir"])
            .arg(crate::bin_dir())
            .args(extra)
            .envs(n.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        n.node.ns.enter(&mut cmd);
        let out = cmd.output().expect("running cbrnet-routed doctor");
        let checks = serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "doctor's stdout is no JSON list ({e}): {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (
            out.status.code().unwrap_or(-1),
            checks,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Stops node `i`'s daemon where it is (SIGSTOP), so that a fault made by hand stays for a
    /// look; [`Lab::thaw`] lets it go on.
    pub fn freeze(&self, i: usize) {
        self.signal(i, nix::sys::signal::Signal::SIGSTOP);
    }

    pub fn thaw(&self, i: usize) {
        self.signal(i, nix::sys::signal::Signal::SIGCONT);
    }

    fn signal(&self, i: usize, sig: nix::sys::signal::Signal) {
        let pid = self.nodes[i]
            .daemon
            .as_ref()
            .expect("the node's daemon runs")
            .id();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).unwrap();
    }

    /// SIGTERM, as an init system stops it; waits for the exit.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].daemon.take() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            )
            .unwrap();
            let st = c.wait().unwrap();
            assert!(
                st.success(),
                "cbrnet-routed exited with {st} on SIGTERM:\n{}",
                self.nodes[i].log()
            );
        }
    }

    /// Adds a pod on node `i` through the `cbrnet` binary (IPAM from the subnet file).
    pub fn add_pod(&mut self, i: usize) -> String {
        let conf = self.pod_conf(i);
        let n = &mut self.nodes[i];
        let id = format!("{}-pod{}", n.name, n.pods.len());
        let pod = Netns::new(&format!("{}-p", self.tag));
        let r = Call::new("ADD", &id, pod.path(), "eth0")
            .run(&n.node.ns, &conf)
            .expect_ok();
        let ip = result_ip(&r);
        let all: Vec<String> = r["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| Some(a["address"].as_str()?.split('/').next()?.to_string()))
            .collect();
        n.pod_addrs.insert(id.clone(), all);
        n.pods.push((pod, id, ip.clone()));
        ip
    }

    /// Waits up to `limit` for `cond` on node `i`'s routes of ours; returns how long it took.
    pub fn wait_routes(&self, i: usize, limit: Duration, cond: impl Fn(&str) -> bool) -> Option<Duration> {
        let t = Instant::now();
        loop {
            if cond(&self.nodes[i].route_table()) {
                return Some(t.elapsed());
            }
            if t.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Every address of a pod of node `i` (its first one if its result was not kept).
    fn addrs_of<'a>(&'a self, i: usize, pod: &'a (Netns, String, String)) -> Vec<&'a str> {
        match self.nodes[i].pod_addrs.get(&pod.1) {
            Some(all) if !all.is_empty() => all.iter().map(String::as_str).collect(),
            _ => vec![pod.2.as_str()],
        }
    }

    /// Waits up to `limit` per node for every node's routes to be complete; panics naming the
    /// first node that is not, with its routes and log.
    pub fn converge(&self, limit: Duration) {
        for i in 0..self.nodes.len() {
            assert!(
                self.wait_routes(i, limit, |_| self.routes_complete(i)).is_some(),
                "node {i}: routes incomplete:\n{}\n{}",
                self.nodes[i].route_table(),
                self.nodes[i].log()
            );
        }
    }

    /// Every pod pings every other pod on every address it has; returns the pairs that failed
    /// (the target named with the address when a pod has more than one).
    pub fn unreachable_pairs(&self) -> Vec<(String, String)> {
        let pods: Vec<(usize, &(Netns, String, String))> = self
            .nodes
            .iter()
            .enumerate()
            .flat_map(|(i, n)| n.pods.iter().map(move |p| (i, p)))
            .collect();
        let mut bad = Vec::new();
        for (i, a) in &pods {
            let v6 = self.addrs_of(*i, a).iter().any(|x| x.contains(':'));
            let v4 = self.addrs_of(*i, a).iter().any(|x| !x.contains(':'));
            for (j, b) in &pods {
                if a.1 == b.1 {
                    continue;
                }
                let addrs = self.addrs_of(*j, b);
                // A pod pings the addresses of the families it has itself.
                for addr in addrs.iter().filter(|x| if x.contains(':') { v6 } else { v4 }) {
                    if !a.0.can_ping(addr) {
                        let to = if addrs.len() > 1 {
                            format!("{} at {addr}", b.1)
                        } else {
                            b.1.clone()
                        };
                        bad.push((a.1.clone(), to));
                    }
                }
            }
        }
        bad
    }

    /// The `mtu` node `i`'s subnet file publishes, if any.
    pub fn pod_mtu_published(&self, i: usize) -> Option<usize> {
        let s = std::fs::read_to_string(self.nodes[i].node.subnet_file()).ok()?;
        let v: serde_json::Value = serde_json::from_str(&s).ok()?;
        usize::try_from(v["mtu"].as_u64()?).ok()
    }

    /// The MTU of node `i`'s pods: their `eth0`'s, or (before any pod) the subnet file's.
    pub fn pod_mtu(&self, i: usize) -> usize {
        let n = &self.nodes[i];
        let from_pod = n.pods.first().and_then(|(pod, _, _)| {
            let link = pod.ok(&["ip", "-o", "link", "show", "eth0"]);
            let mut words = link.split_whitespace();
            words.find(|w| *w == "mtu")?;
            words.next()?.parse().ok()
        });
        from_pod
            .or_else(|| self.pod_mtu_published(i))
            .unwrap_or_else(|| panic!("node {i}: no pod and no mtu in its subnet file"))
    }

    /// Every pod pings every other pod on each of its addresses, plainly and then with DF set
    /// at its full MTU (ICMP and IP headers take 28 bytes in IPv4, 48 in IPv6), which fails
    /// where an encapsulation leaves less room than the pods think they have; returns the pairs
    /// that failed (the target named with the address when it has more than one) and which ping
    /// did ("ping" or "df").
    pub fn unreachable_pairs_df(&self) -> Vec<(String, String, &'static str)> {
        let mut bad = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.pods.is_empty() {
                continue;
            }
            let mtu = self.pod_mtu(i);
            for a in &n.pods {
                let own = self.addrs_of(i, a);
                let has = |x: &&str| own.iter().any(|o| o.contains(':') == x.contains(':'));
                for (j, m) in self.nodes.iter().enumerate() {
                    for b in &m.pods {
                        if a.1 == b.1 {
                            continue;
                        }
                        let addrs = self.addrs_of(j, b);
                        for addr in addrs.iter().filter(|x| has(x)) {
                            let to = if addrs.len() > 1 {
                                format!("{} at {addr}", b.1)
                            } else {
                                b.1.clone()
                            };
                            let headers = if addr.contains(':') { 48 } else { 28 };
                            if !a.0.can_ping(addr) {
                                bad.push((a.1.clone(), to, "ping"));
                            } else if !a.0.can_ping_df(addr, mtu - headers) {
                                bad.push((a.1.clone(), to, "df"));
                            }
                        }
                    }
                }
            }
        }
        bad
    }

    /// How many (pod, other pod's address) pairs [`Lab::unreachable_pairs_df`] tries.
    pub fn pod_pairs(&self) -> usize {
        let all: Vec<(usize, &(Netns, String, String))> = self
            .nodes
            .iter()
            .enumerate()
            .flat_map(|(i, n)| n.pods.iter().map(move |p| (i, p)))
            .collect();
        let addrs: usize = all.iter().map(|(j, b)| self.addrs_of(*j, b).len()).sum();
        // each pod tries every address but its own
        all.iter().map(|(j, b)| addrs - self.addrs_of(*j, b).len()).sum()
    }

    /// Runs `cbrnet-routed ARGS --store <the lab's store>` inside the first node (the store's
    /// address exists only on the lab's underlay) and insists it succeeds; returns its stdout.
    pub fn routed_cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(bin("cbrnet-routed"));
        cmd.args(args).args(["--store", &self.store]);
        self.nodes[0].node.ns.enter(&mut cmd);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "cbrnet-routed {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `cbrnet-routed leases --json`.
    pub fn leases(&self) -> serde_json::Value {
        serde_json::from_str(&self.routed_cli(&["leases", "--json"])).unwrap()
    }

    /// How node `i` should reach node `j`'s subnet: "direct" (via `j`'s node IP) or "vxlan".
    /// Without a backend (the daemon's default) or with "auto", directly on the same segment only.
    pub fn expected_path(&self, i: usize, j: usize) -> &'static str {
        match self.backend.as_deref() {
            Some("vxlan") => "vxlan",
            Some("host-gw") => "direct",
            _ if self.segment_of(i) == self.segment_of(j) => "direct",
            _ => "vxlan",
        }
    }

    /// The same for one of `j`'s subnets: an IPv6 one with no IPv6 underlay goes through VXLAN
    /// (the kernel takes no IPv4 next hop for an IPv6 route).
    pub fn expected_path_of(&self, i: usize, j: usize, v6: bool) -> &'static str {
        if v6 && !self.underlay_v6() {
            "vxlan"
        } else {
            self.expected_path(i, j)
        }
    }

    /// Full-mesh expectation: node `i` has a route to every other node's subnet, of its
    /// [`Lab::expected_path`]: `SUBNET via NODE_IP ...` directly, `SUBNET via SUBNET_ADDRESS dev
    /// cbrnet.vxlan ...` over VXLAN.
    pub fn routes_complete(&self, i: usize) -> bool {
        let table = self.nodes[i].route_table();
        let has = |want: &[&str]| {
            table
                .lines()
                .any(|l| l.split_whitespace().take(want.len()).eq(want.iter().copied()))
        };
        self.nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .all(|(j, n)| {
                n.subnets().iter().all(|subnet| {
                    let v6 = subnet.contains(':');
                    match (self.expected_path_of(i, j, v6), n.ip_of(v6)) {
                        ("direct", Some(ip)) => has(&[subnet, "via", ip]),
                        ("direct", None) => false,
                        _ => {
                            let net = subnet.split('/').next().unwrap_or_default();
                            has(&[subnet, "via", net, "dev", VXLAN_DEV])
                        }
                    }
                })
            })
    }
}

impl Lab {
    /// GET `path` from node `i`'s metrics address (127.0.0.1:9473 inside the node), over HTTP/1.0
    /// from a thread inside the node's namespace.
    pub fn http_get(&self, i: usize, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let resp = self.nodes[i].node.ns.in_thread(|| {
            let mut s = std::net::TcpStream::connect("127.0.0.1:9473").unwrap_or_else(|e| {
                panic!(
                    "node {i}: connecting to the metrics address: {e}\n{}",
                    self.nodes[i].log()
                )
            });
            write!(s, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
            let mut resp = String::new();
            s.read_to_string(&mut resp).unwrap();
            resp
        });
        let status = resp
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("GET {path} from node {i}: no status line in {resp:?}"));
        let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (status, body)
    }
}

/// The lab's store as a client (the lab's `store` spec; call from inside a node, where the store
/// can be reached).
pub async fn open_store(spec: &str) -> cbrnet_ipam::cluster::store::AnyStore {
    let spec = spec.parse().expect("the lab's store spec");
    cbrnet_ipam::cluster::store::AnyStore::open(&spec, "/cbrnet/subnets/", true)
        .await
        .expect("opening the lab's store")
}

impl Lab {
    /// Writes `bytes` under store key `key`, bypassing every check, as a broken or hostile writer
    /// would (file store: a record file, or the bytes as they are when they are no JSON).
    pub fn put_raw(&self, key: &str, bytes: &[u8]) {
        match &self.etcd {
            None => {
                let body = match serde_json::from_slice::<serde_json::Value>(bytes) {
                    Ok(lease) => json!({"lease": lease, "version": 1}).to_string().into_bytes(),
                    Err(_) => bytes.to_vec(),
                };
                // Written whole, then renamed into place: the daemons follow the directory and
                // would otherwise read the file half-written, a torn write this does not test.
                let dir = self.store_dir();
                let tmp = dir.with_file_name(format!(".put-raw-{key}"));
                std::fs::write(&tmp, body).unwrap();
                std::fs::rename(&tmp, dir.join(key)).unwrap();
            }
            Some(e) => {
                let url = e.url();
                self.nodes[0].node.ns.block_on(0, || async {
                    let s =
                        cbrnet_ipam::cluster::store::etcd::EtcdStore::connect(vec![url], "/cbrnet/subnets/")
                            .await
                            .unwrap();
                    s.put_raw(key, bytes.to_vec()).await.unwrap();
                });
            }
        }
    }

    /// The file store's directory.
    pub fn store_dir(&self) -> std::path::PathBuf {
        std::path::PathBuf::from(self.store.strip_prefix("file:").expect("a file store"))
    }

    /// Node `i`'s metric `name`, from /metrics.
    pub fn metric(&self, i: usize, name: &str) -> f64 {
        let (_, body) = self.http_get(i, "/metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} "))?.parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in:\n{body}"))
    }

    /// Waits up to `limit` until node `i`'s log says `what`; else fails with the log.
    pub fn expect_logged(&self, i: usize, limit: Duration, what: &str) {
        assert!(
            self.wait_for(limit, |l| l.nodes[i].log().contains(what)),
            "node {i} did not log {what:?}:\n{}",
            self.nodes[i].log()
        );
    }

    /// Waits until node `i`'s daemon (run with `CBRNET_LOG=debug`) has said `what` and then
    /// tried again at least `retries` times without saying it again (each try a debug line).
    pub fn expect_said_once(&self, i: usize, what: &str, retries: usize) {
        let n = &self.nodes[i];
        assert!(
            self.wait_for(Duration::from_secs(60), |_| n.said(what).1 >= retries),
            "node {i} did not retry {retries} times with {what:?}:\n{}",
            n.log()
        );
        assert_eq!(n.said(what).0, 1, "{what:?} not said once:\n{}", n.log());
    }

    /// Waits up to `limit` for `cond`; whether it came true.
    pub fn wait_for(&self, limit: Duration, mut cond: impl FnMut(&Lab) -> bool) -> bool {
        let t = Instant::now();
        loop {
            if cond(self) {
                return true;
            }
            if t.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Lab {
    /// Everything this lab made, for `cbrnet-lab down` to remove once this process is gone:
    /// namespaces, processes, directories; and its nodes, for `cbrnet-lab status`.
    pub fn state(&self) -> serde_json::Value {
        let mut namespaces = vec![self.underlay.name.clone()];
        let mut pids: Vec<u32> = self.etcd.iter().filter_map(|e| e.pid()).collect();
        let mut dirs = vec![self.dir.path().display().to_string()];
        dirs.extend(self.etcd.iter().map(|e| e.dir().display().to_string()));
        let mut nodes = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            namespaces.push(n.node.ns.name.clone());
            namespaces.extend(n.pods.iter().map(|(p, _, _)| p.name.clone()));
            pids.extend(n.daemon.as_ref().map(Child::id));
            dirs.push(n.node.dir.path().display().to_string());
            nodes.push(json!({
                "name": n.name, "ip": n.ip, "ip6": n.ip6, "segment": self.segment_of(i), "netns": n.node.ns.name,
                "subnetFile": n.node.subnet_file(), "log": n.node.dir.path().join("routed.log"),
                "args": self.daemon_args(i), "pid": n.daemon.as_ref().map(Child::id),
                "dataDir": n.node.data_dir(),
                "pods": n.pods.iter().map(|(p, id, ip)| json!({
                    "id": id, "ip": ip, "ips": n.pod_addrs.get(id), "netns": p.name,
                })).collect::<Vec<_>>(),
            }));
        }
        json!({"store": self.store, "namespaces": namespaces, "pids": pids, "dirs": dirs, "nodes": nodes})
    }

    /// Leaves the lab running after this process ends (`cbrnet-lab up`): its guards are
    /// forgotten, and `cbrnet-lab down` removes it by its [`Lab::state`].
    pub fn keep(self) {
        std::mem::forget(self);
    }
}
