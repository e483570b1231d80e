//! `datapath-bench`: the data path cbrnet builds, against the floor of each path, with iperf3
//! (TCP) in the namespace lab of `cbrnet-lab`.
//!
//! ```text
//! cargo build --release -p cbrnet-tests -p cbrnet-routed -p cbrnet \
//!   && sudo ./target/release/datapath-bench [--seconds 10] [--rounds 3] [--paths host-gw,vxlan]
//! ```
//!
//! - **host-gw**: 2 nodes on one segment (`--backend host-gw`), one pod each: pod → pod across
//!   the nodes through the direct route (`SUBNET via NODE_IP`). Floor: node → node on the same
//!   underlay, between the node IPs.
//! - **vxlan**: 2 nodes (`--backend vxlan`), one pod each: pod → pod through `cbrnet.vxlan`.
//!   Floor: a VXLAN pair made by hand between the same two node namespaces (`vxfloor`, VNI 99,
//!   port 4789, 10.99.0.1/24 and 10.99.0.2/24, no learning, a static FDB entry and a permanent
//!   neighbour entry each, as cbrnet's device has; the MTU of cbrnet's device), node → node
//!   across it. Both with TX checksum offload off (cbrnet's default) and on (the daemon's
//!   `--vxlan-tx-csum-offload on`; `ethtool -K vxfloor tx on` for the pair, the kernel's default).
//! - With each path (unless `--no-same-node`), pod → pod on one node (a second pod on node 0):
//!   the bridge alone, the share of a pod's own hops (veth + bridge) in the gap.
//! - With each path, the hand-made pod path (the floor of a pod's path): in each node namespace a
//!   plain bridge `flr0` (kernel defaults) with a gateway in a /24 of its own (10.250.1.0/24 on
//!   node 0, 10.250.2.0/24 on node 1), one veth pair to a "floor pod" namespace, cbrnet's pod
//!   MTU, and a route by hand to the other node's /24: via its node IP (host-gw), or via the
//!   other end of `vxfloor` (VXLAN, with its TX checksum offload off and on); on host-gw also
//!   through a nexthop object (`nhid`), as cbrnet's routes are made. Floor pod → floor
//!   pod does the kernel work of cbrnet's pod → pod with nothing of cbrnet in it: cbrnet / it is
//!   cbrnet's own overhead, it / node → node what the kernel's pod path costs. Before the runs,
//!   every difference between cbrnet's devices and the floor's (link attributes, offloads,
//!   per-device sysctls) is printed.
//!
//! Each measurement is one iperf3 client (`-J`, TCP, `--seconds` counted after `--omit` seconds
//! of slow start that are not) in the source namespace against a one-off server (`-s -1`) bound
//! to the target's address in the target namespace, with each of `--streams` (default one, and
//! four: `-P 4`).
//! Every round runs every case of a path, in an order that turns from round to round (rotated,
//! and reversed every other round; the 1- and 4-stream runs of a case swap too), so that the
//! machine's drift favours no case; the figures are the medians of the rounds. Beside each run,
//! how many CPUs the whole machine kept busy meanwhile (/proc/stat), and the load average before
//! and after each path: other work on the machine shows there.
//!
//! Everything runs inside namespaces the bench makes and removes, also on a panic or a signal;
//! the iperf3 processes die with the bench (parent-death signal).

use cbrnet_tests::lab::{Lab, StoreKind, VXLAN_DEV};
use cbrnet_tests::{KillOnDrop, Netns};
use clap::{Parser, ValueEnum};
use serde_json::Value;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PORT: &str = "5201";
/// The hand-made VXLAN pair (the floor of the VXLAN path).
const FLOOR_DEV: &str = "vxfloor";
const FLOOR_VNI: &str = "99";
const FLOOR_PORT: &str = "4789";

#[derive(Parser)]
#[command(
    name = "datapath-bench",
    about = "iperf3 through cbrnet's data paths (host-gw, VXLAN) against the floor of each, in \
             network namespaces it makes and removes. Needs root, iperf3 and ethtool."
)]
struct Cli {
    /// Seconds of each iperf3 run that are counted.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=600))]
    seconds: u32,
    /// Seconds of slow start before them, not counted (iperf3 -O).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=60))]
    omit: u32,
    /// Rounds of every case; the figures are their medians.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=99))]
    rounds: u32,
    /// The paths to measure.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "host-gw,vxlan")]
    paths: Vec<PathKind>,
    /// Skip pod → pod on one node (the bridge alone); node 0's `cbr0` then has one port, as
    /// the hand-made pod path's bridge.
    #[arg(long)]
    no_same_node: bool,
    /// The iperf3 stream counts each case runs with.
    #[arg(long, value_delimiter = ',', default_value = "1,4",
          value_parser = clap::value_parser!(u32).range(1..=128))]
    streams: Vec<u32>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PathKind {
    HostGw,
    Vxlan,
}

impl PathKind {
    fn name(self) -> &'static str {
        match self {
            PathKind::HostGw => "host-gw",
            PathKind::Vxlan => "vxlan",
        }
    }
}

impl Cli {
    /// The command line that reproduces this run.
    fn command_line(&self) -> String {
        let paths: Vec<&str> = self.paths.iter().map(|p| p.name()).collect();
        format!(
            "./target/release/datapath-bench --seconds {} --omit {} --rounds {} --paths {} --streams {}{}",
            self.seconds,
            self.omit,
            self.rounds,
            paths.join(","),
            self.streams
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
            if self.no_same_node { " --no-same-node" } else { "" }
        )
    }
}

/// What a case needs set before it runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Setup {
    None,
    /// cbrnet's VXLAN device with TX checksum offload on or off (the daemons restarted with
    /// `--vxlan-tx-csum-offload`).
    CbrnetCsum(bool),
    /// The hand-made pair with TX checksum offload on or off (`ethtool -K vxfloor tx`).
    FloorCsum(bool),
    /// The hand-made pod path's routes through a nexthop object (`nhid`, as cbrnet's host-gw
    /// routes) or with their gateway in the route.
    FloorNexthop(bool),
}

/// One end of a measurement.
#[derive(Clone, Copy)]
enum End {
    /// Node `n`'s namespace at its node IP.
    Node(usize),
    /// Node `n`'s namespace at this address.
    NodeAt(usize, &'static str),
    /// Node `n`'s pod `p` (made through cbrnet).
    Pod(usize, usize),
    /// The hand-made floor pod of node `n`.
    FloorPod(usize),
}

impl End {
    fn resolve<'a>(self, lab: &'a Lab, floor: &'a [FloorPod]) -> (&'a Netns, String) {
        match self {
            End::Node(n) => (&lab.nodes[n].node.ns, lab.nodes[n].ip.clone()),
            End::NodeAt(n, addr) => (&lab.nodes[n].node.ns, addr.to_string()),
            End::Pod(n, p) => {
                let pod = &lab.nodes[n].pods[p];
                (&pod.0, pod.2.clone())
            }
            End::FloorPod(n) => {
                let f = floor.get(n).unwrap_or_else(|| panic!("no floor pod on node {n}"));
                (&f.ns, f.addr())
            }
        }
    }
}

struct Case {
    name: &'static str,
    setup: Setup,
    src: End,
    dst: End,
}

/// One iperf3 run.
#[derive(Clone, Copy)]
struct Sample {
    gbps: f64,
    retransmits: u64,
    /// CPU of the client's and the server's process, % of one core (iperf3's own figures).
    cpu_client: f64,
    cpu_server: f64,
    /// CPUs the whole machine kept busy during the run (from /proc/stat): the run's own use is
    /// about `(cpu_client + cpu_server) / 100` plus the softirq work it causes; more means other
    /// work shared the CPUs.
    machine_busy: f64,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = cbrnet_tests::tear_down_on_signals() {
        panic!("handling signals: {e}");
    }
    for (tool, pkg) in [("iperf3", "iperf3"), ("ethtool", "ethtool")] {
        if Command::new(tool).arg("--version").output().is_err() {
            eprintln!("{tool} is missing: apt-get install -y {pkg}");
            std::process::exit(2);
        }
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("binary dir");
    assert!(
        dir.join("cbrnet").is_file() && dir.join("cbrnet-routed").is_file(),
        "build first: cargo build --release -p cbrnet-tests -p cbrnet-routed -p cbrnet"
    );
    println!("{}", cli.command_line());
    println!(
        "kernel {}, nproc {}, {}; TCP, {} s counted after {} s not, {} round(s), streams {:?}",
        out("uname", &["-r"]),
        std::thread::available_parallelism().map_or(0, |c| c.get()),
        out("iperf3", &["--version"]).lines().next().unwrap_or_default(),
        cli.seconds,
        cli.omit,
        cli.rounds,
        cli.streams
    );
    let mut results = Vec::new();
    for &path in &cli.paths {
        results.push((path, bench_path(&cli, path)));
    }
    println!("\n## Summary (medians of {} round(s))\n", cli.rounds);
    for (path, rows) in &results {
        table(path.name(), rows);
    }
    println!();
    for (path, rows) in &results {
        ratios(*path, rows, &cli.streams);
    }
    println!("\nreproduce: {}", cli.command_line());
}

/// A row of a path's table: a case with its streams, and a sample per round.
struct Row {
    case: &'static str,
    streams: u32,
    samples: Vec<Sample>,
}

impl Row {
    fn median(&self, f: impl Fn(&Sample) -> f64) -> f64 {
        median(self.samples.iter().map(f).collect())
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

const POD_POD: &str = "pod → pod, across nodes";
const NODE_NODE: &str = "node → node (floor)";
const SAME_NODE: &str = "pod → pod, one node (bridge only)";
const VX_OFF: &str = "pod → pod, cbrnet.vxlan, tx csum off (default)";
const VX_ON: &str = "pod → pod, cbrnet.vxlan, tx csum on";
const FLOOR_OFF: &str = "node → node, vxfloor, tx csum off (floor)";
const FLOOR_ON: &str = "node → node, vxfloor, tx csum on (floor)";
const FLOOR_POD: &str = "floor pod → floor pod, across nodes (hand-made)";
const FLOOR_POD_NH: &str = "floor pod → floor pod, across nodes, nexthop route";
const FLOOR_POD_OFF: &str = "floor pod → floor pod, vxfloor, tx csum off";
const FLOOR_POD_ON: &str = "floor pod → floor pod, vxfloor, tx csum on";

fn bench_path(cli: &Cli, path: PathKind) -> Vec<Row> {
    println!("\n## {}\n", path.name());
    println!("load average at the start: {}", load_average());
    let tag = match path {
        PathKind::HostGw => "dpb-hg",
        PathKind::Vxlan => "dpb-vx",
    };
    let mut lab = Lab::new(tag, StoreKind::File);
    lab.backend = Some(path.name().into());
    // The lab's resync (1 s, for tests) would be work on the CPUs the runs share: the default.
    lab.resync_interval = "10s".into();
    for _ in 0..2 {
        lab.add_node();
    }
    for i in 0..2 {
        lab.start(i);
    }
    for i in 0..2 {
        lab.add_pod(i);
    }
    if !cli.no_same_node {
        lab.add_pod(0);
    }
    wait_converged(&lab);
    // Declared after the lab, so dropped first: the floor pods' namespaces go before the nodes'.
    let floor: Vec<FloorPod>;
    let mut cases = match path {
        PathKind::HostGw => {
            floor = make_floor_pods(&lab, tag, FloorRoute::HostGw);
            vec![
                Case {
                    name: POD_POD,
                    setup: Setup::None,
                    src: End::Pod(0, 0),
                    dst: End::Pod(1, 0),
                },
                Case {
                    name: NODE_NODE,
                    setup: Setup::None,
                    src: End::Node(0),
                    dst: End::Node(1),
                },
                Case {
                    name: FLOOR_POD,
                    setup: Setup::FloorNexthop(false),
                    src: End::FloorPod(0),
                    dst: End::FloorPod(1),
                },
                Case {
                    name: FLOOR_POD_NH,
                    setup: Setup::FloorNexthop(true),
                    src: End::FloorPod(0),
                    dst: End::FloorPod(1),
                },
            ]
        }
        PathKind::Vxlan => {
            let mtu = link_mtu(&lab.nodes[0].node.ns, VXLAN_DEV);
            make_floor_pair(&lab, mtu);
            floor = make_floor_pods(&lab, tag, FloorRoute::Vxfloor);
            vec![
                Case {
                    name: VX_OFF,
                    setup: Setup::CbrnetCsum(false),
                    src: End::Pod(0, 0),
                    dst: End::Pod(1, 0),
                },
                Case {
                    name: FLOOR_OFF,
                    setup: Setup::FloorCsum(false),
                    src: End::NodeAt(0, "10.99.0.1"),
                    dst: End::NodeAt(1, "10.99.0.2"),
                },
                Case {
                    name: VX_ON,
                    setup: Setup::CbrnetCsum(true),
                    src: End::Pod(0, 0),
                    dst: End::Pod(1, 0),
                },
                Case {
                    name: FLOOR_ON,
                    setup: Setup::FloorCsum(true),
                    src: End::NodeAt(0, "10.99.0.1"),
                    dst: End::NodeAt(1, "10.99.0.2"),
                },
                Case {
                    name: FLOOR_POD_OFF,
                    setup: Setup::FloorCsum(false),
                    src: End::FloorPod(0),
                    dst: End::FloorPod(1),
                },
                Case {
                    name: FLOOR_POD_ON,
                    setup: Setup::FloorCsum(true),
                    src: End::FloorPod(0),
                    dst: End::FloorPod(1),
                },
            ]
        }
    };
    if !cli.no_same_node {
        cases.push(Case {
            name: SAME_NODE,
            setup: Setup::None,
            src: End::Pod(0, 1),
            dst: End::Pod(0, 0),
        });
    }
    println!(
        "MTU: underlay {}, pods {}, floor pods {}{}",
        link_mtu(&lab.nodes[0].node.ns, "eth0"),
        lab.pod_mtu(0),
        link_mtu(&floor[0].ns, "eth0"),
        match path {
            PathKind::Vxlan => format!(
                ", {VXLAN_DEV} {}, {FLOOR_DEV} {}",
                link_mtu(&lab.nodes[0].node.ns, VXLAN_DEV),
                link_mtu(&lab.nodes[0].node.ns, FLOOR_DEV)
            ),
            PathKind::HostGw => String::new(),
        }
    );
    print_features(&lab, &floor);
    compare_pod_paths(&lab, &floor);

    let mut cbrnet_csum = false; // the daemon's default
    let mut rows: Vec<Row> = cases
        .iter()
        .flat_map(|c| {
            cli.streams.iter().map(|&s| Row {
                case: c.name,
                streams: s,
                samples: Vec::new(),
            })
        })
        .collect();
    for round in 0..cli.rounds as usize {
        let mut order: Vec<usize> = (0..cases.len()).collect();
        order.rotate_left(round % cases.len());
        if round % 2 == 1 {
            order.reverse();
        }
        let mut streams = cli.streams.clone();
        if round % 2 == 1 {
            streams.reverse();
        }
        println!("\nround {}:", round + 1);
        for &k in &order {
            let case = &cases[k];
            match case.setup {
                Setup::None => {}
                Setup::CbrnetCsum(on) => {
                    if on != cbrnet_csum {
                        restart_with_csum(&mut lab, on);
                        cbrnet_csum = on;
                    }
                    for i in 0..2 {
                        assert_eq!(
                            tx_csum(&lab.nodes[i].node.ns, VXLAN_DEV),
                            on,
                            "node {i}: TX checksum offload of {VXLAN_DEV}"
                        );
                    }
                }
                Setup::FloorCsum(on) => {
                    for i in 0..2 {
                        let ns = &lab.nodes[i].node.ns;
                        ns.ok(&["ethtool", "-K", FLOOR_DEV, "tx", if on { "on" } else { "off" }]);
                        assert_eq!(tx_csum(ns, FLOOR_DEV), on, "node {i}: {FLOOR_DEV} tx");
                    }
                }
                Setup::FloorNexthop(nh) => route_floor(&lab, nh),
            }
            let (src_ns, src_addr) = case.src.resolve(&lab, &floor);
            let (dst_ns, dst_addr) = case.dst.resolve(&lab, &floor);
            for &s in &streams {
                let sample = iperf(src_ns, &src_addr, dst_ns, &dst_addr, cli, s);
                println!(
                    "  {:<48} P{s}: {:7.2} Gbit/s, {:6} retransmits, CPU client {:3.0}%, server {:3.0}%, machine {:.2} CPUs busy",
                    case.name, sample.gbps, sample.retransmits, sample.cpu_client, sample.cpu_server, sample.machine_busy
                );
                rows.iter_mut()
                    .find(|r| r.case == case.name && r.streams == s)
                    .expect("a row per case and streams")
                    .samples
                    .push(sample);
            }
        }
    }
    // The paths must still be what was measured.
    wait_converged(&lab);
    check_floor_pods(&floor);
    println!("\nload average at the end: {}", load_average());
    rows
}

/// /proc/loadavg's 1, 5 and 15 minute figures: well above the runs' own (about 1.5) means other
/// work shared the CPUs.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Routes complete on both nodes and every pod reaches every other, also with DF at its MTU.
fn wait_converged(lab: &Lab) {
    for i in 0..lab.nodes.len() {
        assert!(
            lab.wait_routes(i, Duration::from_secs(20), |_| lab.routes_complete(i))
                .is_some(),
            "node {i}: routes incomplete:\n{}\n{}",
            lab.nodes[i].route_table(),
            lab.nodes[i].log()
        );
    }
    let bad = lab.unreachable_pairs_df();
    assert!(bad.is_empty(), "pods that do not reach each other: {bad:?}");
}

/// The hand-made VXLAN pair between nodes 0 and 1: `vxfloor`, 10.99.0.(1+i)/24, MTU `mtu`, no
/// learning, the peer's MAC in the FDB (→ its node IP) and as a permanent neighbour.
fn make_floor_pair(lab: &Lab, mtu: u32) {
    let mac = |i: usize| format!("0a:99:00:00:00:0{}", i + 1);
    let mtu = mtu.to_string();
    for i in 0..2 {
        let (me, peer) = (&lab.nodes[i], &lab.nodes[1 - i]);
        let ns = &me.node.ns;
        ns.ok(&[
            "ip",
            "link",
            "add",
            FLOOR_DEV,
            "address",
            &mac(i),
            "mtu",
            &mtu,
            "type",
            "vxlan",
            "id",
            FLOOR_VNI,
            "dstport",
            FLOOR_PORT,
            "local",
            &me.ip,
            "nolearning",
        ]);
        ns.ok(&[
            "ip",
            "addr",
            "add",
            &format!("10.99.0.{}/24", i + 1),
            "dev",
            FLOOR_DEV,
        ]);
        ns.ok(&["ip", "link", "set", FLOOR_DEV, "up"]);
        ns.ok(&[
            "bridge",
            "fdb",
            "append",
            &mac(1 - i),
            "dev",
            FLOOR_DEV,
            "dst",
            &peer.ip,
        ]);
        ns.ok(&[
            "ip",
            "neigh",
            "replace",
            &format!("10.99.0.{}", 2 - i),
            "lladdr",
            &mac(1 - i),
            "dev",
            FLOOR_DEV,
            "nud",
            "permanent",
        ]);
    }
    assert!(
        lab.nodes[0].node.ns.can_ping("10.99.0.2"),
        "the hand-made VXLAN pair does not carry a ping"
    );
}

/// The hand-made pod path, one per node: the smallest pod path of cbrnet's shape, made with `ip`
/// in the node's namespace. A bridge `flr0` at the kernel's defaults with the gateway of a /24
/// of its own (10.250.(1+n).1: outside the lab's cluster CIDR, underlay and `vxfloor` network),
/// one veth pair (`flrveth0`, a plain bridge port) to a pod namespace whose `eth0` has .2 and a
/// default route via the gateway, and a route by hand to the other node's floor /24. The
/// node's IP forwarding is the lab's (cbrnet-routed turned it on).
const FLOOR_BRIDGE: &str = "flr0";
const FLOOR_VETH: &str = "flrveth0";

struct FloorPod {
    ns: Netns,
    node: usize,
}

impl FloorPod {
    fn addr(&self) -> String {
        format!("{}.2", floor_net(self.node))
    }
}

/// The first three octets of node `n`'s floor /24.
fn floor_net(n: usize) -> String {
    format!("10.250.{}", n + 1)
}

/// How a node reaches the other node's floor /24.
#[derive(Clone, Copy)]
enum FloorRoute {
    /// Via the other node's IP on the underlay, as cbrnet's host-gw routes.
    HostGw,
    /// Via the other end of the hand-made VXLAN pair, whose address has a permanent neighbour
    /// entry: the same route, FDB and neighbour lookups as cbrnet's VXLAN routes make.
    Vxfloor,
}

/// Makes a floor pod on nodes 0 and 1, with cbrnet's pod MTU on this path, routed by `route`;
/// insists that each reaches the other at that MTU with DF set.
fn make_floor_pods(lab: &Lab, tag: &str, route: FloorRoute) -> Vec<FloorPod> {
    let mtu = lab.pod_mtu(0).to_string();
    let mut pods = Vec::new();
    for i in 0..2 {
        let node = &lab.nodes[i].node.ns;
        let net = floor_net(i);
        node.ok(&["ip", "link", "add", FLOOR_BRIDGE, "type", "bridge"]);
        node.ok(&["ip", "addr", "add", &format!("{net}.1/24"), "dev", FLOOR_BRIDGE]);
        node.ok(&["ip", "link", "set", FLOOR_BRIDGE, "up"]);
        let pod = FloorPod {
            ns: Netns::new(&format!("{tag}-fp")),
            node: i,
        };
        // Both ends get the MTU at birth; the bridge follows its one port's (the kernel's
        // automatic bridge MTU), as cbr0 has the pods' MTU.
        node.ok(&[
            "ip",
            "link",
            "add",
            FLOOR_VETH,
            "mtu",
            &mtu,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "mtu",
            &mtu,
            "netns",
            &pod.ns.name,
        ]);
        node.ok(&["ip", "link", "set", FLOOR_VETH, "master", FLOOR_BRIDGE, "up"]);
        pod.ns
            .ok(&["ip", "addr", "add", &format!("{net}.2/24"), "dev", "eth0"]);
        pod.ns.ok(&["ip", "link", "set", "eth0", "up"]);
        pod.ns
            .ok(&["ip", "route", "add", "default", "via", &format!("{net}.1")]);
        pods.push(pod);
    }
    for i in 0..2 {
        let node = &lab.nodes[i].node.ns;
        let other = format!("{}.0/24", floor_net(1 - i));
        match route {
            FloorRoute::HostGw => {
                // The nexthop object that `Setup::FloorNexthop(true)` routes through, made as
                // cbrnet's host-gw ones are (the gateway on the underlay link).
                node.ok(&[
                    "ip",
                    "nexthop",
                    "add",
                    "id",
                    FLOOR_NHID,
                    "via",
                    &lab.nodes[1 - i].ip,
                    "dev",
                    "eth0",
                ]);
                node.ok(&["ip", "route", "add", &other, "via", &lab.nodes[1 - i].ip])
            }
            FloorRoute::Vxfloor => node.ok(&[
                "ip",
                "route",
                "add",
                &other,
                "via",
                &format!("10.99.0.{}", 2 - i),
                "dev",
                FLOOR_DEV,
            ]),
        };
    }
    check_floor_pods(&pods);
    pods
}

/// The id of the hand-made pod path's nexthop object in each node (outside cbrnet's ids, which
/// are derived from the peers' gateways).
const FLOOR_NHID: &str = "4250";

/// Routes each node's way to the other's floor /24 through the nexthop object or with the
/// gateway in the route, and checks the route says so.
fn route_floor(lab: &Lab, nexthop: bool) {
    for i in 0..2 {
        let node = &lab.nodes[i].node.ns;
        let other = format!("{}.0/24", floor_net(1 - i));
        if nexthop {
            node.ok(&["ip", "route", "replace", &other, "nhid", FLOOR_NHID]);
        } else {
            node.ok(&[
                "ip",
                "route",
                "replace",
                &other,
                "via",
                &lab.nodes[1 - i].ip,
                "dev",
                "eth0",
            ]);
        }
        let shown = node.ok(&["ip", "route", "show", &other]);
        assert_eq!(shown.contains("nhid"), nexthop, "node {i}: {shown}");
    }
}

/// Each floor pod reaches the other, plainly and with DF at its MTU (as the lab checks cbrnet's
/// pods).
fn check_floor_pods(pods: &[FloorPod]) {
    for (a, b) in [(0, 1), (1, 0)] {
        let size = link_mtu(&pods[a].ns, "eth0") as usize - 28;
        let to = pods[b].addr();
        assert!(
            pods[a].ns.can_ping(&to) && pods[a].ns.can_ping_df(&to, size),
            "floor pod {a} does not reach {to} (DF, {size} bytes)"
        );
    }
}

/// Restarts both daemons with `--vxlan-tx-csum-offload on|off` and waits until their devices
/// have it and the routes are back.
fn restart_with_csum(lab: &mut Lab, on: bool) {
    for i in 0..2 {
        lab.stop(i);
        lab.nodes[i].flags = vec![
            "--vxlan-tx-csum-offload".into(),
            if on { "on" } else { "off" }.into(),
        ];
        lab.start(i);
    }
    let t = Instant::now();
    while (0..2).any(|i| tx_csum(&lab.nodes[i].node.ns, VXLAN_DEV) != on) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{VXLAN_DEV}: TX checksum offload not {on} after a restart"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_converged(lab);
}

/// One iperf3 run from `src` to a one-off server in `dst` bound to `dst_addr`.
fn iperf(src: &Netns, src_addr: &str, dst: &Netns, dst_addr: &str, cli: &Cli, streams: u32) -> Sample {
    let mut server = Command::new("iperf3");
    server
        .args(["-s", "-1", "-B", dst_addr, "-p", PORT])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    dst.enter(&mut server);
    dies_with_us(&mut server);
    let mut server = KillOnDrop(server.spawn().expect("starting iperf3 -s"));
    let t = Instant::now();
    loop {
        let listening = dst.ok(&["ss", "-Hltn", &format!("sport = :{PORT}")]);
        if !listening.trim().is_empty() {
            break;
        }
        if let Ok(Some(st)) = server.0.try_wait() {
            panic!("iperf3 -s in {} exited at once: {st}", dst.name);
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "iperf3 -s in {} does not listen",
            dst.name
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let json_file = tempfile::NamedTempFile::new().expect("a temp file");
    let mut client = Command::new("iperf3");
    client
        .args(["-c", dst_addr, "-B", src_addr, "-p", PORT, "-J"])
        .args(["-t", &cli.seconds.to_string(), "-O", &cli.omit.to_string()])
        .args(["-P", &streams.to_string(), "--connect-timeout", "5000"])
        .stdin(Stdio::null())
        .stdout(json_file.reopen().expect("reopening the temp file"))
        .stderr(Stdio::null());
    src.enter(&mut client);
    dies_with_us(&mut client);
    let busy0 = machine_busy_ticks();
    let mut client = KillOnDrop(client.spawn().expect("starting iperf3 -c"));
    let limit = Duration::from_secs(u64::from(cli.seconds + cli.omit) + 30);
    let t = Instant::now();
    let status = loop {
        if let Some(st) = client.0.try_wait().expect("waiting for iperf3 -c") {
            break st;
        }
        assert!(t.elapsed() < limit, "iperf3 -c from {} did not end", src.name);
        std::thread::sleep(Duration::from_millis(50));
    };
    let busy = (machine_busy_ticks() - busy0) / ticks_per_second() / t.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(json_file.path()).expect("reading iperf3's JSON");
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("iperf3 -c ({status}) wrote no JSON ({e}): {text}"));
    if let Some(err) = v.get("error") {
        panic!("iperf3 -c {dst_addr} from {}: {err}", src.name);
    }
    assert!(status.success(), "iperf3 -c: {status}");
    // The one-off server ends with its test; it is killed if it has not within a few seconds.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) && matches!(server.0.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let end = &v["end"];
    let f = |p: &Value| p.as_f64().unwrap_or(f64::NAN);
    Sample {
        gbps: f(&end["sum_received"]["bits_per_second"]) / 1e9,
        retransmits: end["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
        cpu_client: f(&end["cpu_utilization_percent"]["host_total"]),
        cpu_server: f(&end["cpu_utilization_percent"]["remote_total"]),
        machine_busy: busy,
    }
}

/// Busy time of all CPUs since boot, in clock ticks (/proc/stat: user, nice, system, irq,
/// softirq, steal).
fn machine_busy_ticks() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").expect("reading /proc/stat");
    let cpu = stat.lines().next().unwrap_or_default();
    let v: Vec<f64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| v.get(i)).sum()
}

fn ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |t| t as f64)
}

/// The child is killed when this process ends, however it ends (a signal's `exit` included).
fn dies_with_us(cmd: &mut Command) {
    // SAFETY: runs in the forked child before exec: one prctl(2) system call, async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
}

/// `ethtool -k DEV`'s "tx-checksumming".
fn tx_csum(ns: &Netns, dev: &str) -> bool {
    feature(&ns.ok(&["ethtool", "-k", dev]), "tx-checksumming").starts_with("on")
}

/// The value of `name` in `ethtool -k` output ("on", "off [fixed]", ...).
fn feature<'a>(ethtool_k: &'a str, name: &str) -> &'a str {
    ethtool_k
        .lines()
        .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
        .map_or("?", str::trim)
}

fn link_mtu(ns: &Netns, dev: &str) -> u32 {
    let link = ns.ok(&["ip", "-o", "link", "show", dev]);
    let mut words = link.split_whitespace();
    words.find(|w| *w == "mtu");
    words
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("no MTU in {link}"))
}

/// The offloads that decide the throughput, of every device on node 0's side of the paths.
fn print_features(lab: &Lab, floor: &[FloorPod]) {
    const SHOWN: [(&str, &str); 6] = [
        ("tx-checksumming", "tx-csum"),
        ("tx-tcp-segmentation", "tso"),
        ("generic-segmentation-offload", "gso"),
        ("generic-receive-offload", "gro"),
        ("tx-udp_tnl-segmentation", "udp-tnl-seg"),
        ("rx-udp-gro-forwarding", "udp-gro-fwd"),
    ];
    let node = &lab.nodes[0].node.ns;
    let mut devs: Vec<(&Netns, String)> = node
        .links()
        .into_iter()
        .filter(|l| l != "lo")
        .map(|l| (node, l))
        .collect();
    devs.push((&lab.nodes[0].pods[0].0, "eth0".into()));
    devs.push((&floor[0].ns, "eth0".into()));
    println!("offloads on node 0 (and its first pod's and its floor pod's eth0):");
    for (ns, dev) in devs {
        let k = ns.ok(&["ethtool", "-k", &dev]);
        let shown: Vec<String> = SHOWN
            .iter()
            .map(|(name, short)| format!("{short} {}", feature(&k, name)))
            .collect();
        let place = if std::ptr::eq(ns, node) {
            "node"
        } else if std::ptr::eq(ns, &floor[0].ns) {
            "floor pod"
        } else {
            "pod"
        };
        println!("  {place} {dev}: {}", shown.join(", "));
    }
}

/// Where cbrnet's pod path and the hand-made one differ on node 0, device against device: link
/// attributes (`ip -d link`: MTU, qdisc, queues, GSO/GRO limits, bridge and bridge port
/// options), offloads (`ethtool -k`) and the device's IPv4/IPv6 sysctls. What differs by
/// construction (names, indexes, MACs, bridge ids, timers, counters) is left out.
fn compare_pod_paths(lab: &Lab, floor: &[FloorPod]) {
    let node = &lab.nodes[0].node.ns;
    let pod = &lab.nodes[0].pods[0].0;
    // cbrnet configures every host end alike: the first is as good as pod 0's own.
    let veth = node
        .links()
        .into_iter()
        .find(|l| l.starts_with("veth"))
        .expect("a pod's host end on node 0");
    let node_sysctls = sysctls(node);
    let pairs = [
        (
            "bridge",
            node,
            "cbr0",
            node,
            FLOOR_BRIDGE,
            &node_sysctls,
            &node_sysctls,
        ),
        (
            "host end",
            node,
            veth.as_str(),
            node,
            FLOOR_VETH,
            &node_sysctls,
            &node_sysctls,
        ),
        (
            "pod eth0",
            pod,
            "eth0",
            &floor[0].ns,
            "eth0",
            &sysctls(pod),
            &sysctls(&floor[0].ns),
        ),
    ];
    println!(
        "cbrnet's pod path against the hand-made one on node 0 (only what differs; cbrnet / hand-made):"
    );
    for (what, ns_a, a, ns_b, b, sys_a, sys_b) in pairs {
        let mut diffs = Vec::new();
        let (la, lb) = (link_attrs(ns_a, a), link_attrs(ns_b, b));
        diff_maps(&la, &lb, &mut diffs);
        let (fa, fb) = (features(ns_a, a), features(ns_b, b));
        diff_maps(&fa, &fb, &mut diffs);
        let (sa, sb) = (dev_sysctls(sys_a, a), dev_sysctls(sys_b, b));
        diff_maps(&sa, &sb, &mut diffs);
        println!(
            "  {what} {a} / {b}: {}",
            if diffs.is_empty() {
                "the same".into()
            } else {
                diffs.join(", ")
            }
        );
    }
}

type Attrs = std::collections::BTreeMap<String, String>;

fn diff_maps(a: &Attrs, b: &Attrs, out: &mut Vec<String>) {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for k in keys {
        let (va, vb) = (a.get(k), b.get(k));
        if va != vb {
            let show = |v: Option<&String>| v.map_or("-", String::as_str).to_string();
            out.push(format!("{k} {} / {}", show(va), show(vb)));
        }
    }
}

/// `ip -j -d link show DEV`, flattened to `a.b.c = value`, without what differs by construction.
fn link_attrs(ns: &Netns, dev: &str) -> Attrs {
    const SKIP: [&str; 10] = [
        "ifindex",
        "ifname",
        "address",
        "broadcast",
        "link",
        "link_index",
        "link_netnsid",
        "master",
        "altnames",
        "perm_address",
    ];
    let v: Value = serde_json::from_str(&ns.ok(&["ip", "-j", "-d", "link", "show", "dev", dev]))
        .expect("ip -j link show");
    let mut out = Attrs::new();
    flatten("", &v[0], &mut out);
    out.retain(|k, _| {
        let first = k.split('.').next().unwrap_or_default();
        let last = k.rsplit('.').next().unwrap_or_default();
        !SKIP.contains(&first)
            && !last.ends_with("_timer")
            && !last.ends_with("_id")
            && !last.ends_with("_root")
            && !last.ends_with("_bridge")
            && !last.ends_with("_port")
            && !matches!(last, "no" | "id" | "root_port" | "root_path_cost")
    });
    out
}

fn flatten(prefix: &str, v: &Value, out: &mut Attrs) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Value::Object(m) => m.iter().for_each(|(k, v)| flatten(&key(k), v, out)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, v)| flatten(&key(&i.to_string()), v, out)),
        Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// Every feature of `ethtool -k DEV`.
fn features(ns: &Netns, dev: &str) -> Attrs {
    ns.ok(&["ethtool", "-k", dev])
        .lines()
        .skip(1)
        .filter_map(|l| l.trim().split_once(": "))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// `sysctl -a` in a namespace (lines `key = value`); keys that cannot be read are missing.
fn sysctls(ns: &Netns) -> String {
    String::from_utf8_lossy(&ns.run(&["sysctl", "-a"]).stdout).into_owned()
}

/// The `net.ipv4.conf.DEV.*` and `net.ipv6.conf.DEV.*` sysctls, keyed without the device.
fn dev_sysctls(all: &str, dev: &str) -> Attrs {
    let mut out = Attrs::new();
    for l in all.lines() {
        let Some((k, v)) = l.split_once(" = ") else {
            continue;
        };
        for family in ["ipv4", "ipv6"] {
            if let Some(rest) = k.strip_prefix(&format!("net.{family}.conf.{dev}.")) {
                out.insert(format!("{family}.{rest}"), v.to_string());
            }
        }
    }
    out
}

fn table(path: &str, rows: &[Row]) {
    println!("### {path}\n");
    println!(
        "| case | streams | Gbit/s | retransmits | CPU client % | CPU server % | machine CPUs busy | rounds (Gbit/s) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    for r in rows {
        let each: Vec<String> = r.samples.iter().map(|s| format!("{:.2}", s.gbps)).collect();
        println!(
            "| {} | {} | {:.2} | {:.0} | {:.0} | {:.0} | {:.2} | {} |",
            r.case,
            r.streams,
            r.median(|s| s.gbps),
            r.median(|s| s.retransmits as f64),
            r.median(|s| s.cpu_client),
            r.median(|s| s.cpu_server),
            r.median(|s| s.machine_busy),
            each.join(", ")
        );
    }
    println!();
}

fn ratios(path: PathKind, rows: &[Row], streams: &[u32]) {
    let g = |case: &str, s: u32| {
        rows.iter()
            .find(|r| r.case == case && r.streams == s)
            .map_or(f64::NAN, |r| r.median(|x| x.gbps))
    };
    let line = |what: &str, a: &str, b: &str, target: bool| {
        let each: Vec<String> = streams
            .iter()
            .map(|&s| {
                let r = g(a, s) / g(b, s);
                let verdict = if !target || r.is_nan() {
                    ""
                } else if r >= 0.95 {
                    " (met)"
                } else {
                    " (NOT met)"
                };
                format!("P{s} {r:.3}{verdict}")
            })
            .collect();
        println!(
            "  {what}: {}{}",
            each.join(", "),
            if target { "  [target >= 0.95]" } else { "" }
        );
    };
    let same_node = rows.iter().any(|r| r.case == SAME_NODE);
    match path {
        PathKind::HostGw => {
            println!("host-gw:");
            line("pod → pod / node → node", POD_POD, NODE_NODE, true);
            line(
                "cbrnet pod → pod / hand-made pod → pod (cbrnet's own overhead)",
                POD_POD,
                FLOOR_POD,
                false,
            );
            line(
                "hand-made pod → pod / node → node (the kernel's pod path)",
                FLOOR_POD,
                NODE_NODE,
                false,
            );
            line(
                "cbrnet pod → pod / hand-made pod → pod with a nexthop route",
                POD_POD,
                FLOOR_POD_NH,
                false,
            );
            line(
                "hand-made pod → pod: nexthop route / gateway route",
                FLOOR_POD_NH,
                FLOOR_POD,
                false,
            );
            if same_node {
                line("pod → pod on one node / node → node", SAME_NODE, NODE_NODE, false);
                line(
                    "pod → pod across / pod → pod on one node",
                    POD_POD,
                    SAME_NODE,
                    false,
                );
            }
        }
        PathKind::Vxlan => {
            println!("vxlan:");
            line(
                "cbrnet, csum off (default) / vxfloor, csum off",
                VX_OFF,
                FLOOR_OFF,
                true,
            );
            line("cbrnet, csum on / vxfloor, csum on", VX_ON, FLOOR_ON, true);
            line(
                "cbrnet, csum off / hand-made pod → pod, csum off (cbrnet's own overhead)",
                VX_OFF,
                FLOOR_POD_OFF,
                false,
            );
            line(
                "cbrnet, csum on / hand-made pod → pod, csum on (cbrnet's own overhead)",
                VX_ON,
                FLOOR_POD_ON,
                false,
            );
            line(
                "hand-made pod → pod / vxfloor, csum off (the kernel's pod path)",
                FLOOR_POD_OFF,
                FLOOR_OFF,
                false,
            );
            line(
                "hand-made pod → pod / vxfloor, csum on (the kernel's pod path)",
                FLOOR_POD_ON,
                FLOOR_ON,
                false,
            );
            line(
                "cbrnet, csum off (default) / vxfloor, csum on (the kernel's default)",
                VX_OFF,
                FLOOR_ON,
                false,
            );
            line("TX csum offload on / off, cbrnet", VX_ON, VX_OFF, false);
            line("TX csum offload on / off, vxfloor", FLOOR_ON, FLOOR_OFF, false);
            if same_node {
                line(
                    "pod → pod on one node / vxfloor, csum off",
                    SAME_NODE,
                    FLOOR_OFF,
                    false,
                );
            }
        }
    }
}

fn out(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
