//! `routed-bench`: how fast `cbrnet-routed` turns leases into routes, with each store.
//!
//! 1. Latency: in a 2-node lab, a new lease is written to the store (as another node's daemon
//!    would) and we time until node 0's kernel announces the route (RTM_NEWROUTE, proto 157).
//! 2. Scale: N leases already in the store, each of another node; we start one node's daemon and
//!    time until its kernel holds all N routes, then read its peak RSS, the CPU a resync with
//!    nothing to do costs, and how often the idle daemon wakes.
//!
//! `--backend host-gw` (the default, as the figures before backends were measured) routes every
//! peer directly. `--backend vxlan` runs the daemons with `--backend vxlan` and gives every
//! synthetic lease a VTEP MAC (`0e:00:` + its index): each peer then needs an FDB entry, a
//! neighbour entry, a nexthop and a route on `cbrnet.vxlan`, and the scale part's clock runs until
//! the kernel holds all N routes of protocol 157, N FDB entries and N neighbour entries of ours on
//! the device (counted by netlink dumps inside the node's namespace). Each size is also timed as
//! its floor: the same kernel state put into a fresh namespace by hand (`ip link add`, `bridge
//! -batch`, `ip -batch`), with nexthop objects (as the daemon does) and with plain routes (whose
//! distinct gateways cost the kernel far more: minutes at 65k), and the daemon's time is given
//! as a multiple of each.
//!
//! routed-bench [--store file|etcd|both] [--backend host-gw|vxlan] [--rounds 20 (0: none)]
//!              [--leases 5000,20000 (default); any list] [--floor both (default)|nexthops|none]

use cbrnet_bridge::batch::{messages, u16_at, u32_at, HEADER};
use cbrnet_ipam::cluster::record::{unix_now, Lease};
use cbrnet_ipam::cluster::store::LeaseStore;
use cbrnet_tests::lab::{Lab, StoreKind, VXLAN_DEV};
use cbrnet_tests::Netns;
use futures::StreamExt;
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteProtocol};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

/// The daemon's route protocol (`proto 157`).
const PROTO: u8 = 157;

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `--backend`: how the daemons reach the synthetic peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    HostGw,
    Vxlan,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::HostGw => "host-gw",
            Backend::Vxlan => "vxlan",
        }
    }
}

/// The VTEP MAC of synthetic peer `k`: `0e:00:` + `k` (locally administered unicast).
fn vtep(k: u32) -> [u8; 6] {
    let b = k.to_be_bytes();
    [0x0e, 0x00, b[0], b[1], b[2], b[3]]
}

fn mac_text(m: [u8; 6]) -> String {
    m.map(|b| format!("{b:02x}")).join(":")
}

fn lease(subnet: &str, node: String, ip: Ipv4Addr, vtep_mac: Option<[u8; 6]>) -> Lease {
    Lease {
        subnet: subnet.parse().unwrap(),
        node_name: node,
        node_ip: IpAddr::V4(ip),
        expires: unix_now() + 3600,
        holder: None,
        vtep_mac: vtep_mac.map(mac_text),
        ipv6_subnet: None,
        node_ip_v6: None,
    }
}

/// The synthetic peers of a scale run: peer `k` holds subnet `10.1.0.0 + k` subnets of length
/// `len` (24 while they fit in the cluster's 10.0.0.0/8 above 10.0.0.0/24, which the bench's
/// node takes; else 25), its node IP is `100.64.0.2 + k` (on the node's link), its VTEP MAC
/// [`vtep`]`(k)`.
struct Peers {
    n: usize,
    len: u8,
}

impl Peers {
    fn new(n: usize) -> Peers {
        // 10.1.0.0/24 up to 10.255.255.0/24: 65,280 subnets; in /25s twice as many.
        let len = if n <= 65_280 { 24 } else { 25 };
        assert!(
            n <= 65_280 << (len - 24),
            "{n} peers do not fit 10.1.0.0-10.255.255.255"
        );
        Peers { n, len }
    }
    fn net(&self, k: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 0, 0)) + (k << (32 - self.len)))
    }
    fn subnet(&self, k: u32) -> String {
        format!("{}/{}", self.net(k), self.len)
    }
    fn node_ip(&self, k: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 2)) + k)
    }
}

/// What of ours the kernel of a namespace holds: routes of protocol 157 in the main table, and on
/// the VXLAN device the FDB entries of a synthetic VTEP MAC (`0e:00:...` with a destination) and
/// the neighbour entries of protocol 157.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    routes: usize,
    fdb: usize,
    neigh: usize,
}

/// Netlink dumps on a plain socket opened inside a namespace (it stays there whichever thread
/// uses it), each message looked at in place: far cheaper than listing with `ip` and `bridge`
/// (the floor prints both), and nothing of the measured daemon's.
struct Kernel {
    socket: Socket,
    seq: u32,
}

const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const AF_INET: u8 = 2;
const AF_BRIDGE: u8 = 7;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const NDA_IFINDEX: u16 = 8;
const NDA_PROTOCOL: u16 = 12;
/// struct ndmsg: family, pad, pad (u16), ifindex (i32), state (u16), flags, type.
const NDMSG: usize = 12;

/// The attributes of a message after its fixed part of `fixed` bytes: (kind, value).
fn attrs(p: &[u8], fixed: usize) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = fixed;
    std::iter::from_fn(move || {
        let (len, kind) = (u16_at(p, at)? as usize, u16_at(p, at + 2)?);
        if len < 4 || at + len > p.len() {
            return None;
        }
        let v = &p[at + 4..at + len];
        at += (len + 3) & !3;
        Some((kind & 0x3fff, v))
    })
}

impl Kernel {
    fn open(ns: &Netns) -> Kernel {
        let socket = ns.in_thread(|| {
            let mut s = Socket::new(NETLINK_ROUTE).expect("a netlink socket");
            s.bind_auto().expect("binding a netlink socket");
            s.connect(&SocketAddr::new(0, 0))
                .expect("connecting a netlink socket");
            // The kernel filters the dumps (protocol, device) only with strict checking.
            s.set_netlink_get_strict_chk(true).expect("strict checking");
            s
        });
        Kernel { socket, seq: 0 }
    }

    /// One dump: request `kind` with the fixed part `body`; `each` gets every answer's type and
    /// payload.
    fn dump(&mut self, kind: u16, body: &[u8], mut each: impl FnMut(u16, &[u8])) {
        self.seq += 1;
        let seq = self.seq;
        let mut req = vec![0u8; HEADER];
        req.extend_from_slice(body);
        let len = req.len() as u32;
        req[0..4].copy_from_slice(&len.to_ne_bytes());
        req[4..6].copy_from_slice(&kind.to_ne_bytes());
        req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        req[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.socket.send(&req, 0).expect("sending a dump request");
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = self.socket.recv(&mut &mut buf[..], 0).expect("reading a dump");
            for (t, s, payload) in messages(&buf[..n]) {
                if s != seq {
                    continue;
                }
                match t {
                    NLMSG_DONE => return,
                    NLMSG_ERROR => panic!(
                        "dump {kind}: errno {}",
                        u32_at(payload, 0).map_or(0, |e| (e as i32).wrapping_neg())
                    ),
                    _ => each(t, payload),
                }
            }
        }
    }

    /// Our routes, and our entries on the device of index `vx` (none without a device).
    fn count(&mut self, vx: Option<u32>) -> Counts {
        let mut c = Counts {
            routes: 0,
            fdb: 0,
            neigh: 0,
        };
        // struct rtmsg: family, dst_len, src_len, tos, table (main), protocol, scope, type, flags.
        let rtmsg = [AF_INET, 0, 0, 0, 254, PROTO, 0, 0, 0, 0, 0, 0];
        self.dump(RTM_GETROUTE, &rtmsg, |t, p| {
            if t == RTM_NEWROUTE && p.get(5) == Some(&PROTO) {
                c.routes += 1;
            }
        });
        let Some(vx) = vx else { return c };
        let on_vx = |p: &[u8]| u32_at(p, 4) == Some(vx);
        // The FDB of one device: its index in the header (strict checking).
        let mut ndmsg = [0u8; NDMSG];
        ndmsg[0] = AF_BRIDGE;
        ndmsg[4..8].copy_from_slice(&vx.to_ne_bytes());
        self.dump(RTM_GETNEIGH, &ndmsg, |t, p| {
            if t != RTM_NEWNEIGH || !on_vx(p) {
                return;
            }
            let (mut ours, mut dst) = (false, false);
            for (k, v) in attrs(p, NDMSG) {
                match k {
                    NDA_LLADDR => ours = v.len() == 6 && v[..2] == [0x0e, 0x00],
                    NDA_DST => dst = true,
                    _ => {}
                }
            }
            c.fdb += usize::from(ours && dst);
        });
        // The IPv4 neighbours of one device: its index as an attribute (strict checking wants
        // the header's zero).
        let mut req = [0u8; NDMSG + 8].to_vec();
        req[0] = AF_INET;
        req[NDMSG..NDMSG + 2].copy_from_slice(&8u16.to_ne_bytes());
        req[NDMSG + 2..NDMSG + 4].copy_from_slice(&NDA_IFINDEX.to_ne_bytes());
        req[NDMSG + 4..].copy_from_slice(&vx.to_ne_bytes());
        self.dump(RTM_GETNEIGH, &req, |t, p| {
            if t == RTM_NEWNEIGH
                && on_vx(p)
                && attrs(p, NDMSG).any(|(k, v)| k == NDA_PROTOCOL && v == [PROTO])
            {
                c.neigh += 1;
            }
        });
        c
    }
}

/// The index of `name` in `ns` (`ip -o link show`: `N: name...`), if it is there.
fn ifindex(ns: &Netns, name: &str) -> Option<u32> {
    let out = ns.run(&["ip", "-o", "link", "show", "dev", name]);
    String::from_utf8_lossy(&out.stdout)
        .split(':')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// The floor: the kernel state of `n` peers (FDB, neighbour entries, routes; with `nexthops`, a
/// nexthop object per peer and the routes through it) put into a fresh namespace by hand, from
/// files generated beforehand: one `sh` that creates the device and runs `bridge -batch` and
/// `ip -batch`. Returns the time and what the kernel then holds; checks `bridge`/`ip` agree.
fn floor(peers: &Peers, backend: Backend, nexthops: bool) -> (Duration, Counts) {
    let ns = Netns::new("rbf");
    // The node's link (a veth pair, both ends here and up): an address of its own (the VXLAN
    // device's local) and the peers' network.
    for cmd in [
        &[
            "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
        ][..],
        &["ip", "addr", "add", "192.168.50.10/24", "dev", "eth0"],
        &["ip", "addr", "add", "100.64.0.1/10", "dev", "eth0"],
        &["ip", "link", "set", "eth1", "up"],
        &["ip", "link", "set", "eth0", "up"],
    ] {
        ns.ok(cmd);
    }
    let dir = cbrnet_tests::temp_dir();
    let (fdb, ipb) = (dir.path().join("fdb.batch"), dir.path().join("ip.batch"));
    // Each peer's next hop and how it is reached, as the daemon routes it.
    let hop = |k: u32| match backend {
        Backend::Vxlan => (peers.net(k), format!("dev {VXLAN_DEV} onlink")),
        Backend::HostGw => (peers.node_ip(k), "dev eth0".to_string()),
    };
    let (mut f, mut b) = (String::new(), String::new());
    for k in 0..peers.n as u32 {
        let (gw, dev) = hop(k);
        if backend == Backend::Vxlan {
            let mac = mac_text(vtep(k));
            writeln!(
                f,
                "fdb add {mac} dev {VXLAN_DEV} dst {} self permanent",
                peers.node_ip(k)
            )
            .unwrap();
            writeln!(
                b,
                "neigh add {gw} lladdr {mac} dev {VXLAN_DEV} nud permanent protocol {PROTO}"
            )
            .unwrap();
        }
        if nexthops {
            writeln!(b, "nexthop add id {} via {gw} {dev}", u32::from(gw)).unwrap();
        }
    }
    for k in 0..peers.n as u32 {
        let (gw, dev) = hop(k);
        let subnet = peers.subnet(k);
        match nexthops {
            true => writeln!(b, "route add {subnet} nhid {} proto {PROTO}", u32::from(gw)),
            false => writeln!(b, "route add {subnet} via {gw} {dev} proto {PROTO}"),
        }
        .unwrap();
    }
    std::fs::write(&fdb, f).unwrap();
    std::fs::write(&ipb, b).unwrap();
    let script = match backend {
        Backend::Vxlan => format!(
            "ip link add {VXLAN_DEV} type vxlan id 1 local 192.168.50.10 dstport 8472 nolearning && \
             ip link set {VXLAN_DEV} up && bridge -batch {} && ip -batch {}",
            fdb.display(),
            ipb.display()
        ),
        Backend::HostGw => format!("ip -batch {}", ipb.display()),
    };
    let t = Instant::now();
    ns.ok(&["sh", "-c", &script]);
    let took = t.elapsed();
    let vx = ifindex(&ns, VXLAN_DEV);
    let counts = Kernel::open(&ns).count(vx);
    if vx.is_some() {
        // The dumps agree with iproute2's own listings (and what those cost).
        let t = Instant::now();
        let lines = |args: &[&str]| ns.ok(args).lines().count();
        let by_ip = Counts {
            routes: lines(&["ip", "route", "show", "proto", "157"]),
            fdb: lines(&["bridge", "fdb", "show", "dev", VXLAN_DEV]),
            neigh: lines(&["ip", "neigh", "show", "dev", VXLAN_DEV]),
        };
        println!(
            "  (floor check: ip/bridge list {by_ip:?} in {:.0} ms; the dumps {counts:?})",
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    (took, counts)
}

fn stats(mut v: Vec<Duration>) -> String {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "median {:.1} ms, p90 {:.1} ms, max {:.1} ms (n={})",
        ms(v[v.len() / 2]),
        ms(v[v.len() * 9 / 10]),
        ms(*v.last().unwrap()),
        v.len()
    )
}

fn latency(kind: StoreKind, backend: Backend, rounds: usize) -> Vec<Duration> {
    let mut lab = Lab::new("rbl", kind);
    lab.backend = Some(backend.name().into());
    for _ in 0..2 {
        let i = lab.add_node();
        lab.start(i);
    }
    let store = lab.store.clone();
    lab.nodes[0].node.ns.block_on(0, || async move {
        let s = cbrnet_tests::lab::open_store(&store).await;
        let (conn, _, mut events) =
            rtnetlink::new_multicast_connection(&[rtnetlink::MulticastGroup::Ipv4Route]).unwrap();
        tokio::spawn(conn);
        let mut out = Vec::new();
        for k in 0..rounds {
            let net = Ipv4Addr::new(10, 244, 100 + k as u8, 0);
            let l = lease(
                &format!("{net}/24"),
                format!("bench-{k}"),
                Ipv4Addr::new(192, 168, 50, 100 + k as u8),
                (backend == Backend::Vxlan).then(|| vtep(k as u32)),
            );
            let t0 = Instant::now();
            s.create(&l, Duration::from_secs(3600))
                .await
                .unwrap()
                .expect("fresh key");
            let wait = async {
                while let Some((m, _)) = events.next().await {
                    if let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r)) = m.payload {
                        let dst = r.attributes.iter().any(
                            |a| matches!(a, RouteAttribute::Destination(RouteAddress::Inet(d)) if *d == net),
                        );
                        if dst && r.header.protocol == RouteProtocol::Other(157) {
                            return;
                        }
                    }
                }
            };
            tokio::time::timeout(Duration::from_secs(10), wait)
                .await
                .expect("route within 10 s");
            out.push(t0.elapsed());
        }
        out
    })
}

/// What `scale` measured.
struct Scale {
    fill: Duration,
    /// Until the daemon's own count (`cbrnet_routes_installed`) reached N: the figure measured
    /// before backends.
    converge_metric: Duration,
    /// Until a count of the kernel's (routes; with vxlan, FDB and neighbour entries too) found
    /// all N, that count included.
    converge: Duration,
    counts: Counts,
    /// What one count of the kernel's costs (at the end, everything in place).
    count_cost: Duration,
    peak_rss_kib: u64,
    rss_kib: u64,
    /// CPU per resync with nothing to do (everything the daemon did in 30 s of 1 s resyncs,
    /// divided by 30; the full read of the store every 5 minutes is `full_read`).
    noop_resync_cpu: Duration,
    /// One listing of the whole store, as the daemon's full read every 5 minutes does it.
    full_read: Duration,
    /// Voluntary context switches (sleeps ended) per second at the default resync interval
    /// (10 s), idle.
    idle_wakeups: f64,
    /// From the daemon's log: when it held its lease and finished its first reconcile.
    phases: String,
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// CPU time of all the process's threads (ns, from schedstat) and how often they went to sleep.
fn cpu_and_switches(pid: u32) -> (u64, u64) {
    let mut cpu = 0;
    let mut switches = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let p = t.path();
        if let Ok(s) = std::fs::read_to_string(p.join("schedstat")) {
            cpu += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
        if let Ok(s) = std::fs::read_to_string(p.join("status")) {
            for l in s.lines().filter(|l| l.starts_with("voluntary_ctxt_switches")) {
                switches += l
                    .split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    (cpu, switches)
}

/// The daemon log's timestamps (RFC 3339, `...T12:34:56.123456Z`) as seconds of the day.
fn log_secs(line: &str) -> Option<f64> {
    let t = line
        .split_whitespace()
        .next()?
        .split('T')
        .nth(1)?
        .trim_end_matches('Z');
    let mut hms = t.split(':');
    let (h, m, s): (f64, f64, f64) = (
        hms.next()?.parse().ok()?,
        hms.next()?.parse().ok()?,
        hms.next()?.parse().ok()?,
    );
    Some(h * 3600.0 + m * 60.0 + s)
}

/// When the daemon's first run logged its lease held and the end of its first reconcile (its
/// routes installed; with vxlan, its FDB and neighbour entries went in before them), from the time
/// it was started (`start`: seconds of the day, UTC).
fn phases(log: &str, start: f64) -> String {
    let at = |what: &str| {
        log.lines()
            .find(|l| l.contains(what))
            .and_then(log_secs)
            .map_or("-".to_string(), |t| format!("{:.2} s", t - start))
    };
    format!(
        "lease held at {}, first reconcile done (routes installed) at {}",
        at("lease held"),
        at("routes installed")
    )
}

/// Seconds of the day, UTC, now.
fn now_secs() -> f64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs() % 86_400) as f64 + f64::from(d.subsec_micros()) / 1e6
}

/// `n` leases of `n` nodes, each with its own address (the kernel's worst case): fill the store,
/// start one daemon, time until the kernel holds every route (and with vxlan every FDB and
/// neighbour entry), then what a resync with nothing to do costs, and how often the daemon wakes
/// when idle.
fn scale(kind: StoreKind, backend: Backend, peers: &Peers) -> Scale {
    let n = peers.n;
    let mut lab = Lab::new("rbs", kind);
    lab.cluster_cidr = "10.0.0.0/8".into();
    lab.backend = Some(backend.name().into());
    let i = lab.add_node();
    if peers.len != 24 {
        lab.nodes[i].flags = vec!["--subnet-len".into(), peers.len.to_string()];
    }
    // Up to 65k nodes: they sit in 100.64.0.0/10, on the node's link.
    lab.nodes[i]
        .node
        .ns
        .ok(&["ip", "addr", "add", "100.64.0.1/10", "dev", "eth0"]);
    let store = lab.store.clone();
    let t_fill = Instant::now();
    let vxlan = backend == Backend::Vxlan;
    let full_read = lab.nodes[i].node.ns.block_on(0, || async move {
        let s = cbrnet_tests::lab::open_store(&store).await;
        let s = &s;
        futures::stream::iter(0..n as u32)
            .map(|k| async move {
                let l = lease(
                    &peers.subnet(k),
                    format!("bench-{k}"),
                    peers.node_ip(k),
                    vxlan.then(|| vtep(k)),
                );
                s.create(&l, Duration::from_secs(3600))
                    .await
                    .unwrap()
                    .expect("fresh key");
            })
            .buffer_unordered(64)
            .collect::<Vec<()>>()
            .await;
        // What the daemon's full read of the store (every 5 minutes) costs: one listing.
        let t = Instant::now();
        let listing = s.list().await.unwrap();
        assert_eq!(listing.leases.len(), n);
        t.elapsed()
    });
    let fill = t_fill.elapsed() - full_read;
    let mut kernel = Kernel::open(&lab.nodes[i].node.ns);
    let want = Counts {
        routes: n,
        fdb: if vxlan { n } else { 0 },
        neigh: if vxlan { n } else { 0 },
    };
    let t0 = Instant::now();
    let start_secs = now_secs();
    lab.start(i);
    // The daemon's own count first (an HTTP request): the kernel is counted only once it says
    // it is done (it writes a peer's FDB and neighbour entries before its route), and then
    // until the kernel agrees.
    while lab.metric(i, "cbrnet_routes_installed{family=\"ipv4\"}") < n as f64 {
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "only {} routes after 600 s",
            lab.metric(i, "cbrnet_routes_installed{family=\"ipv4\"}")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let converge_metric = t0.elapsed();
    let vx = if vxlan {
        Some(ifindex(&lab.nodes[i].node.ns, VXLAN_DEV).expect("the daemon's VXLAN device"))
    } else {
        None
    };
    let counts = loop {
        let c = kernel.count(vx);
        if c == want {
            break c;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "after 600 s the kernel holds {c:?} of {want:?}:\n{}",
            lab.nodes[i].log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let converge = t0.elapsed();
    let t = Instant::now();
    kernel.count(vx);
    let count_cost = t.elapsed();
    let phases = phases(&lab.nodes[i].log(), start_secs);
    let pid = lab.nodes[i].daemon.as_ref().unwrap().id();
    let peak_rss_kib = status_kib(pid, "VmHWM:");
    std::thread::sleep(Duration::from_secs(3));
    let (c0, _) = cpu_and_switches(pid);
    std::thread::sleep(Duration::from_secs(30));
    let (c1, _) = cpu_and_switches(pid);
    let noop_resync_cpu = Duration::from_nanos((c1 - c0) / 30);
    let rss_kib = status_kib(pid, "VmRSS:");
    // Idle at the default resync interval: a restart finds every route in place.
    lab.stop(i);
    lab.resync_interval = "10s".into();
    lab.start(i);
    while lab.metric(i, "cbrnet_routes_installed{family=\"ipv4\"}") < n as f64 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = lab.nodes[i].daemon.as_ref().unwrap().id();
    std::thread::sleep(Duration::from_secs(5));
    let (_, s0) = cpu_and_switches(pid);
    std::thread::sleep(Duration::from_secs(30));
    let (_, s1) = cpu_and_switches(pid);
    assert_eq!(kernel.count(vx), want, "after the restart");
    Scale {
        fill,
        full_read,
        converge_metric,
        converge,
        counts,
        count_cost,
        peak_rss_kib,
        rss_kib,
        noop_resync_cpu,
        idle_wakeups: (s1 - s0) as f64 / 30.0,
        phases,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        hook(info);
        cbrnet_tests::tear_down();
    }));
    let which = arg(&args, "--store", "both".to_string());
    let backend = match arg(&args, "--backend", "host-gw".to_string()).as_str() {
        "host-gw" => Backend::HostGw,
        "vxlan" => Backend::Vxlan,
        b => panic!("--backend {b}: host-gw or vxlan"),
    };
    let rounds: usize = arg(&args, "--rounds", 20);
    let floor_kind = arg(&args, "--floor", "both".to_string());
    assert!(
        ["both", "nexthops", "none"].contains(&floor_kind.as_str()),
        "--floor both|nexthops|none"
    );
    let sizes: Vec<usize> = arg(&args, "--leases", "5000,20000".to_string())
        .split(',')
        .map(|n| n.trim().parse().expect("--leases N[,N...]"))
        .collect();
    let kinds: Vec<(&str, StoreKind)> = [("file", StoreKind::File), ("etcd", StoreKind::Etcd)]
        .into_iter()
        .filter(|(name, _)| which == "both" || which == *name)
        .collect();
    println!(
        "kernel {}, {} cores, --backend {}",
        String::from_utf8_lossy(
            &std::process::Command::new("uname")
                .arg("-r")
                .output()
                .unwrap()
                .stdout
        )
        .trim(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        backend.name()
    );
    for (name, kind) in kinds.iter().filter(|_| rounds > 0) {
        println!(
            "{name}: new lease -> route on another node: {}",
            stats(latency(*kind, backend, rounds))
        );
    }
    for (name, kind) in &kinds {
        for n in &sizes {
            let peers = Peers::new(*n);
            let s = scale(*kind, backend, &peers);
            let what = match backend {
                Backend::HostGw => format!("{n} routes"),
                Backend::Vxlan => format!("{n} routes + FDB + neighbour entries"),
            };
            println!(
                "{name}: {n} leases (/{}) -> {what} in {:.2} s from daemon start (its metric at {:.2} s; \
                 the kernel's count, {:.0} ms, included; store filled in {:.1} s); kernel: {:?}; \
                 peak RSS {:.1} MiB, RSS after {:.1} MiB; no-op resync {:.1} ms CPU; \
                 idle: {:.2} wakeups/s; full store read (every 5 min) {:.0} ms",
                peers.len,
                s.converge.as_secs_f64(),
                s.converge_metric.as_secs_f64(),
                s.count_cost.as_secs_f64() * 1e3,
                s.fill.as_secs_f64(),
                s.counts,
                s.peak_rss_kib as f64 / 1024.0,
                s.rss_kib as f64 / 1024.0,
                s.noop_resync_cpu.as_secs_f64() * 1e3,
                s.idle_wakeups,
                s.full_read.as_secs_f64() * 1e3
            );
            println!("  daemon log: {}", s.phases);
            // The floor, after the lab is gone: the same kernel state by hand, with nexthop
            // objects (as the daemon) and, unless `--floor nexthops`, with plain routes.
            let mut floors = Vec::new();
            for (what, nexthops) in [("nexthop objects", true), ("plain routes", false)] {
                if floor_kind == "none" || (floor_kind == "nexthops" && !nexthops) {
                    continue;
                }
                let (took, c) = floor(&peers, backend, nexthops);
                assert_eq!(c, s.counts, "the floor ({what}) holds what the daemon made");
                floors.push(format!("{:.2} s with {what}", took.as_secs_f64()));
                let ratio = s.converge.as_secs_f64() / took.as_secs_f64();
                floors.push(format!("daemon/floor {ratio:.1}x"));
            }
            if !floors.is_empty() {
                println!(
                    "  floor ({n} peers by hand, ip/bridge -batch): {}",
                    floors.join(", ")
                );
            }
        }
    }
}
