//! Load held: many pods through the plugin at once, and a churning cluster of simulated nodes
//! against real daemons. Correctness under load is asserted; speed is for the benchmarks.

use cbrnet_ipam::cluster::record::{unix_now, Lease};
use cbrnet_ipam::cluster::store::LeaseStore;
use cbrnet_ipam::cluster::Versioned;
use cbrnet_tests::lab::{Lab, StoreKind};
use cbrnet_tests::{result_ip, Call, Netns, Node};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

#[test]
fn two_hundred_pods_in_waves_of_32_concurrent_adds_and_dels() {
    const PODS: usize = 200;
    const WAVE: usize = 32;
    let node = Node::new("waves");
    let conf = node.conf("1.1.0", "10.244.60.0/24");
    let pods: Vec<Netns> = (0..PODS).map(|_| Netns::new("waves-pod")).collect();
    let ids: Vec<String> = (0..PODS).map(|i| format!("wave-pod-{i}")).collect();
    let run_wave = |cmd: &'static str, range: std::ops::Range<usize>| -> Vec<cbrnet_tests::CniOut> {
        std::thread::scope(|s| {
            let hs: Vec<_> = range
                .map(|i| {
                    let (node, conf, pod, id) = (&node, &conf, &pods[i], &ids[i]);
                    s.spawn(move || Call::new(cmd, id, pod.path(), "eth0").run(&node.ns, conf))
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        })
    };
    let mut ips = Vec::new();
    for start in (0..PODS).step_by(WAVE) {
        for out in run_wave("ADD", start..(start + WAVE).min(PODS)) {
            ips.push(result_ip(&out.expect_ok()));
        }
    }
    let distinct: HashSet<&String> = ips.iter().collect();
    assert_eq!(distinct.len(), PODS, "duplicate addresses");
    assert_eq!(node.reservations("testnet").len(), PODS);
    assert_eq!(node.veths().len(), PODS);
    assert!(pods[0].can_ping(&ips[PODS - 1]));
    for start in (0..PODS).step_by(WAVE) {
        for out in run_wave("DEL", start..(start + WAVE).min(PODS)) {
            out.expect_ok();
        }
    }
    assert!(node.reservations("testnet").is_empty(), "reservations left");
    assert!(node.veths().is_empty(), "veths left");
    // nothing but bookkeeping is left in the network's directory
    let left: BTreeSet<String> = std::fs::read_dir(node.data_dir().join("testnet"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with("last_reserved_ip."))
        .collect();
    assert_eq!(left, ["format", "lock"].map(String::from).into(), "{left:?}");
}

/// A small deterministic generator: the churn is the same in every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

#[test]
fn five_hundred_simulated_nodes_churn_for_a_minute_against_three_daemons() {
    const SIMULATED: u32 = 500;
    const CHURN: Duration = Duration::from_secs(60);
    let mut lab = Lab::new("churn", StoreKind::File);
    lab.cluster_cidr = "10.0.0.0/8".into();
    for _ in 0..3 {
        let i = lab.add_node();
        // the simulated nodes sit in 192.168.128.0/17, on every real node's link
        let addr = format!("192.168.128.{}/17", 1 + i);
        lab.nodes[i]
            .node
            .ns
            .ok(&["ip", "addr", "add", &addr, "dev", "eth0"]);
        lab.start(i);
    }
    let store = lab.store.clone();
    let sim_ip = |k: u32| IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(192, 168, 130, 10)) + k));
    let subnet = |n: u32| format!("10.{}.{}.0/24", 1 + n / 256, n % 256);
    let pids: Vec<u32> = lab
        .nodes
        .iter()
        .map(|n| n.daemon.as_ref().unwrap().id())
        .collect();
    let mut rss: Vec<Vec<u64>> = vec![Vec::new(); 3];
    let ops = lab.nodes[0].node.ns.block_on(0, || async {
        let s = cbrnet_tests::lab::open_store(&store).await;
        let ttl = Duration::from_secs(3600);
        // subnet number → what the simulated node holds now
        let mut held: BTreeMap<u32, Versioned> = BTreeMap::new();
        let lease = |n: u32, ip: IpAddr, expires: u64| Lease {
            subnet: subnet(n).parse().unwrap(),
            node_name: format!("sim-{n}"),
            node_ip: ip,
            expires,
            holder: Some(format!("sim-{n}")),
            vtep_mac: None,
            ipv6_subnet: None,
            node_ip_v6: None,
        };
        for n in 0..SIMULATED {
            let l = lease(n, sim_ip(n), unix_now() + 3600);
            let version = s.create(&l, ttl).await.unwrap().expect("a fresh key");
            held.insert(n, Versioned { lease: l, version });
        }
        let mut rng = Rng(0x9e3779b97f4a7c15);
        let t0 = Instant::now();
        let mut ops = 0u64;
        let mut next_sample = Duration::from_secs(5);
        while t0.elapsed() < CHURN {
            let n = rng.below(SIMULATED as u64) as u32;
            match (held.get(&n).cloned(), rng.below(5)) {
                // a node leaves
                (Some(v), 0) => {
                    if s.delete(v.lease.subnet, v.version).await.unwrap() {
                        held.remove(&n);
                    }
                }
                // a node's lease expires without renewal (or a clock says so)
                (Some(v), 1) => {
                    let l = Lease {
                        expires: 1,
                        ..v.lease.clone()
                    };
                    if let Some(version) = s.update(&l, v.version, ttl).await.unwrap() {
                        held.insert(n, Versioned { lease: l, version });
                    }
                }
                // a node comes back with a new address
                (Some(v), 2) => {
                    let l = Lease {
                        node_ip: sim_ip((n + 1 + rng.below(SIMULATED as u64 - 1) as u32) % SIMULATED),
                        expires: unix_now() + 3600,
                        ..v.lease.clone()
                    };
                    if let Some(version) = s.update(&l, v.version, ttl).await.unwrap() {
                        held.insert(n, Versioned { lease: l, version });
                    }
                }
                // a renewal
                (Some(v), _) => {
                    let l = Lease {
                        expires: unix_now() + 3600,
                        ..v.lease.clone()
                    };
                    if let Some(version) = s.update(&l, v.version, ttl).await.unwrap() {
                        held.insert(n, Versioned { lease: l, version });
                    }
                }
                // a node joins
                (None, _) => {
                    let l = lease(n, sim_ip(n), unix_now() + 3600);
                    if let Some(version) = s.create(&l, ttl).await.unwrap() {
                        held.insert(n, Versioned { lease: l, version });
                    }
                }
            }
            ops += 1;
            if t0.elapsed() >= next_sample {
                for (i, pid) in pids.iter().enumerate() {
                    rss[i].push(vm_rss_kib(*pid));
                }
                next_sample += Duration::from_secs(5);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        ops
    });
    assert!(ops > 1000, "only {ops} operations in {CHURN:?}");
    // the end state: every daemon routes exactly the live leases of the other nodes
    let expected = |lab: &Lab, i: usize| -> BTreeSet<String> {
        lab.leases()
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["expired"] == false && l["nodeName"] != lab.nodes[i].name.as_str())
            .map(|l| {
                format!(
                    "{} via {}",
                    l["subnet"].as_str().unwrap(),
                    l["nodeIP"].as_str().unwrap()
                )
            })
            .collect()
    };
    for (i, samples) in rss.iter().enumerate() {
        let routes = |lab: &Lab| -> BTreeSet<String> {
            lab.nodes[i]
                .route_table()
                .lines()
                .map(|l| l.split(" dev ").next().unwrap().trim().to_string())
                .collect()
        };
        let converged = lab.wait_for(Duration::from_secs(10), |l| routes(l) == expected(l, i));
        let (want, have) = (expected(&lab, i), routes(&lab));
        assert!(
            converged,
            "node {i}: {} routes, {} live leases; missing {:?}, extra {:?}",
            have.len(),
            want.len(),
            want.difference(&have).take(5).collect::<Vec<_>>(),
            have.difference(&want).take(5).collect::<Vec<_>>()
        );
        assert!(want.len() > 100, "node {i}: only {} live leases", want.len());
        // memory is flat: the last sample is no more than 8 MiB above the first
        let (first, last) = (samples[0], *samples.last().unwrap());
        println!(
            "node {i}: {ops} store operations in {CHURN:?}; {} routes = live leases; RSS KiB every 5 s: {:?}",
            have.len(),
            samples
        );
        assert!(
            last <= first + 8 * 1024,
            "node {i}: RSS grew from {first} KiB to {last} KiB: {:?}",
            samples
        );
    }
}
