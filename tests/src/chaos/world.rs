//! The lab under chaos: the lab's nodes and pods, the store (a file store, one etcd or a cluster
//! of three), and what the runner has done to each node, which the checks need to judge it.

use crate::etcd::Etcd;
use crate::lab::{Lab, StoreKind};
use crate::{result_ip, Call, Netns};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::process::Command;
use std::time::Duration;

/// How long a plugin call may take before the run says it hung (a runtime's own limit is
/// minutes; an ADD here takes milliseconds).
const PLUGIN_LIMIT: Duration = Duration::from_secs(30);

/// Where etcd keeps the lab's records.
pub const PREFIX: &str = "/cbrnet/subnets/";

/// What the runner has done to a node, as far as the checks are concerned.
#[derive(Default)]
pub struct NodeState {
    /// Its daemon was killed and is not running.
    pub killed: bool,
    /// Its daemon is stopped (SIGSTOP).
    pub stopped: bool,
    /// Its underlay link is down.
    pub link_down: bool,
    /// nftables drops its traffic with the store.
    pub store_cut: bool,
    /// A process holds its network's IPAM lock.
    pub lock: Option<nix::fcntl::Flock<std::fs::File>>,
}

impl NodeState {
    /// Does its daemon run and see the store, so that its routes must follow the records?
    pub fn sees_store(&self) -> bool {
        !(self.killed || self.stopped || self.link_down || self.store_cut)
    }
    /// Does its daemon run (neither killed nor stopped)?
    pub fn live(&self) -> bool {
        !(self.killed || self.stopped)
    }
}

// Fields drop in order: the lab (daemons, then its store and underlay) before the etcd members,
// whose namespace is the lab's underlay.
pub struct World {
    pub lab: Lab,
    pub members: Vec<Etcd>,
    pub state: Vec<NodeState>,
    /// etcd members down (indexes into `members`, or 0 for the lab's single etcd).
    pub members_down: Vec<usize>,
    /// Keys of entries the runner wrote into the store and has not removed yet.
    pub junk: Vec<String>,
    pub lease_ttl: u64,
    pod_seq: usize,
    rt: tokio::runtime::Runtime,
    etcd: Option<etcd_client::Client>,
}

impl World {
    /// Builds the lab: `nodes` nodes with `pods` pods each, daemons with a lease TTL of
    /// `lease_ttl` seconds, on the store asked for. Runs on a thread inside the lab's underlay
    /// namespace (see [`World::run_in_underlay`]): the store is reached from there.
    pub fn build(cfg: &super::Config) -> World {
        let (tag, nodes, pods, store, members, lease_ttl) = (
            cfg.tag.as_str(),
            cfg.nodes,
            cfg.pods,
            cfg.store,
            cfg.etcd_members,
            cfg.lease_ttl,
        );
        let (mut lab, cluster) = if store == StoreKind::Etcd && members > 1 {
            let mut lab = Lab::new(tag, StoreKind::File);
            let hosts: Vec<String> = (0..members).map(|i| format!("192.168.50.{}", 2 + i)).collect();
            for h in &hosts {
                lab.underlay
                    .ok(&["ip", "addr", "add", &format!("{h}/24"), "dev", "ul0"]);
            }
            let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
            let cluster = Etcd::cluster_in(&lab.underlay, &hosts);
            let urls: Vec<String> = cluster.iter().map(Etcd::url).collect();
            lab.store = format!("etcd:{}", urls.join(","));
            (lab, cluster)
        } else {
            (Lab::new(tag, store), Vec::new())
        };
        lab.backend = cfg.backend.clone();
        for _ in 0..nodes {
            let i = lab.add_node();
            lab.nodes[i].flags = vec!["--lease-ttl".into(), format!("{lease_ttl}s")];
            lab.start(i);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("building a tokio runtime");
        let mut w = World {
            lab,
            members: cluster,
            state: (0..nodes).map(|_| NodeState::default()).collect(),
            members_down: Vec::new(),
            junk: Vec::new(),
            lease_ttl,
            pod_seq: 0,
            rt,
            etcd: None,
        };
        for i in 0..nodes {
            for _ in 0..pods {
                if let Err(e) = w.add_pod(i) {
                    panic!("adding the lab's pods: {e}");
                }
            }
        }
        w
    }

    /// The etcd endpoints of the store (empty with the file store).
    pub fn etcd_urls(&self) -> Vec<String> {
        match self.lab.store.strip_prefix("etcd:") {
            Some(urls) => urls.split(',').map(str::to_owned).collect(),
            None => Vec::new(),
        }
    }

    /// The etcd members' addresses.
    pub fn etcd_hosts(&self) -> Vec<String> {
        self.etcd_urls()
            .iter()
            .filter_map(|u| {
                let rest = u.strip_prefix("http://")?;
                Some(rest.rsplit_once(':')?.0.to_owned())
            })
            .collect()
    }

    /// How many etcd members there are (0: the file store).
    pub fn member_count(&self) -> usize {
        self.etcd_urls().len()
    }

    /// Is the store answering (every member up, or a quorum of them)?
    pub fn store_up(&self) -> bool {
        let n = self.member_count();
        n == 0 || (n - self.members_down.len()) * 2 > n
    }

    /// Runs `f` on the runtime, for at most `limit`; `None` if it did not finish in time.
    pub fn block_on<T>(&self, limit: Duration, f: impl std::future::Future<Output = T>) -> Option<T> {
        self.rt
            .block_on(async { tokio::time::timeout(limit, f).await.ok() })
    }

    /// An etcd client (connected once, lazily, to every member).
    fn etcd_client(&mut self) -> Option<etcd_client::Client> {
        if self.etcd.is_none() {
            self.etcd = self.connect(self.etcd_urls());
        }
        self.etcd.clone()
    }

    fn connect(&self, urls: Vec<String>) -> Option<etcd_client::Client> {
        let opts = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_millis(500))
            .with_timeout(Duration::from_secs(1));
        self.block_on(
            Duration::from_secs(2),
            etcd_client::Client::connect(urls, Some(opts)),
        )
        .and_then(Result::ok)
    }

    /// Writes `bytes` under store key `key` as they are (file store: the bytes are the file).
    pub fn put_raw(&mut self, key: &str, bytes: &[u8]) -> Result<(), String> {
        if self.member_count() == 0 {
            let dir = self.lab.store_dir();
            let tmp = dir.with_file_name(format!(".chaos-put-{key}"));
            std::fs::write(&tmp, bytes).map_err(|e| e.to_string())?;
            return std::fs::rename(&tmp, dir.join(key)).map_err(|e| e.to_string());
        }
        let key = format!("{PREFIX}{key}");
        self.each_member(|mut c| {
            let (key, bytes) = (key.clone(), bytes.to_vec());
            async move { c.put(key, bytes, None).await.map(|_| ()) }
        })
    }

    /// Removes store key `key`.
    pub fn delete_raw(&mut self, key: &str) -> Result<(), String> {
        if self.member_count() == 0 {
            return match std::fs::remove_file(self.lab.store_dir().join(key)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
                _ => Ok(()),
            };
        }
        let key = format!("{PREFIX}{key}");
        self.each_member(|mut c| {
            let key = key.clone();
            async move { c.delete(key, None).await.map(|_| ()) }
        })
    }

    /// Runs a write through each member in turn until one takes it: with one member down, a
    /// client of all members may still pick the dead one for a while.
    fn each_member<F, Fut>(&mut self, op: F) -> Result<(), String>
    where
        F: Fn(etcd_client::Client) -> Fut,
        Fut: std::future::Future<Output = Result<(), etcd_client::Error>>,
    {
        let mut last = "no etcd member answered".to_string();
        for url in self.etcd_urls() {
            let Some(c) = self.connect(vec![url.clone()]) else {
                last = format!("{url}: no connection");
                continue;
            };
            match self.block_on(Duration::from_secs(2), op(c)) {
                Some(Ok(())) => return Ok(()),
                Some(Err(e)) => last = format!("{url}: {e}"),
                None => last = format!("{url}: no answer in 2 s"),
            }
        }
        Err(last)
    }

    /// etcd's live lease objects: (id, keys attached).
    pub fn etcd_leases(&mut self) -> Result<Vec<(i64, Vec<String>)>, String> {
        let mut c = self.etcd_client().ok_or("no etcd client")?;
        let ids = match self.block_on(Duration::from_secs(2), c.leases()) {
            Some(Ok(r)) => r.leases().iter().map(|l| l.id()).collect::<Vec<_>>(),
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("etcd did not answer in 2 s".into()),
        };
        let mut out = Vec::new();
        for id in ids {
            let opts = etcd_client::LeaseTimeToLiveOptions::new().with_keys();
            match self.block_on(Duration::from_secs(2), c.lease_time_to_live(id, Some(opts))) {
                Some(Ok(r)) => out.push((
                    id,
                    r.keys()
                        .iter()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                        .collect(),
                )),
                // Expired between the two calls.
                Some(Err(_)) => {}
                None => return Err("etcd did not answer in 2 s".into()),
            }
        }
        Ok(out)
    }

    /// The store's records and bad entries, as the daemons read them.
    pub fn listing(&mut self) -> Result<cbrnet_ipam::cluster::record::Listing, String> {
        use cbrnet_ipam::cluster::store::{AnyStore, LeaseStore};
        let spec: cbrnet_ipam::cluster::store::StoreSpec = self
            .lab
            .store
            .parse()
            .map_err(|e: cbrnet_ipam::cluster::ClusterError| e.to_string())?;
        let list = async {
            let s = AnyStore::open(&spec, PREFIX, false).await?;
            s.list().await
        };
        match self.block_on(Duration::from_secs(2), list) {
            Some(r) => r.map_err(|e| e.to_string()),
            None => Err("the store did not answer in 2 s".into()),
        }
    }

    /// Adds a pod on node `i` through the plugin; its address, or why the ADD failed.
    pub fn add_pod(&mut self, i: usize) -> Result<String, String> {
        let conf = self.lab.pod_conf(i);
        self.pod_seq += 1;
        let id = format!("{}-c{}", self.lab.nodes[i].name, self.pod_seq);
        let pod = Netns::new(&format!("{}-p", self.tag()));
        let ns = &self.lab.nodes[i].node.ns;
        let out = Call::new("ADD", &id, pod.path(), "eth0").run_within(ns, &conf, PLUGIN_LIMIT)?;
        if !out.ok {
            // What a runtime does after a failed ADD.
            let _ = Call::new("DEL", &id, pod.path(), "eth0").run_within(ns, &conf, PLUGIN_LIMIT);
            return Err(format!("{} {}", out.json, out.stderr));
        }
        let ip = result_ip(&out.json);
        self.lab.nodes[i].pods.push((pod, id, ip.clone()));
        Ok(ip)
    }

    /// Deletes pod `k` of node `i` through the plugin, then its namespace.
    pub fn del_pod(&mut self, i: usize, k: usize) -> Result<(), String> {
        let conf = self.lab.pod_conf(i);
        let (pod, id, _) = self.lab.nodes[i].pods.remove(k);
        let out = Call::new("DEL", &id, pod.path(), "eth0")
            .run_within(&self.lab.nodes[i].node.ns, &conf, PLUGIN_LIMIT)
            .map_err(|e| format!("DEL {id}: {e}"))?;
        if out.ok {
            Ok(())
        } else {
            Err(format!("DEL {id}: {} {}", out.json, out.stderr))
        }
    }

    /// An ADD killed while it runs (at `point`), then the runtime's DEL; the pod is gone.
    pub fn killed_add(&mut self, i: usize, point: &'static str) -> Result<(), String> {
        let conf = self.lab.pod_conf(i);
        self.pod_seq += 1;
        let id = format!("{}-k{}", self.lab.nodes[i].name, self.pod_seq);
        let pod = Netns::new(&format!("{}-p", self.tag()));
        let ns = &self.lab.nodes[i].node.ns;
        Call::new("ADD", &id, pod.path(), "eth0")
            .start_stopped_at(ns, &conf, point)
            .kill();
        let out = Call::new("DEL", &id, pod.path(), "eth0")
            .run_within(ns, &conf, PLUGIN_LIMIT)
            .map_err(|e| format!("DEL after a killed ADD {id}: {e}"))?;
        if out.ok {
            Ok(())
        } else {
            Err(format!(
                "DEL after a killed ADD {id}: {} {}",
                out.json, out.stderr
            ))
        }
    }

    /// Holds node `i`'s IPAM lock (as a plugin stopped while holding it would), until the state's
    /// `lock` is dropped. Held by this process itself: a helper process would pass the lock on
    /// to its children, which outlive it.
    pub fn hold_lock(&mut self, i: usize) -> Result<(), String> {
        use nix::fcntl::{Flock, FlockArg};
        let path = self.lab.nodes[i].node.data_dir().join("labnet").join("lock");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let held = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| e.to_string())?;
        self.state[i].lock = Some(held);
        Ok(())
    }

    /// The node IP node `i` moves to when it restarts with another one: it goes back and forth
    /// between the lab's address (192.168.50.(10+i)) and 100 above it.
    pub fn other_node_ip(&self, i: usize) -> String {
        let base = format!("192.168.50.{}", 10 + i);
        if self.lab.nodes[i].ip == base {
            format!("192.168.50.{}", 110 + i)
        } else {
            base
        }
    }

    /// Stops node `i`'s daemon as its service manager would (SIGTERM); an error if it does not
    /// exit cleanly.
    pub fn stop_daemon(&mut self, i: usize) -> Result<(), String> {
        let Some(mut c) = self.lab.nodes[i].daemon.take() else {
            return Ok(());
        };
        kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM).map_err(|e| e.to_string())?;
        let st = c.wait().map_err(|e| e.to_string())?;
        if st.success() {
            Ok(())
        } else {
            Err(format!("the daemon exited with {st} on SIGTERM"))
        }
    }

    fn tag(&self) -> String {
        self.lab
            .underlay
            .name
            .strip_prefix("cbt-")
            .and_then(|n| n.split('-').next())
            .unwrap_or("chaos")
            .to_owned()
    }

    /// Runs a command in node `i`'s namespace (`ip -n` where it can, which enters the network
    /// namespace only); its stdout, or its stderr as the error.
    pub fn node_cmd(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let ns = &self.lab.nodes[i].node.ns.name;
        let out = if args[0] == "ip" {
            Command::new("ip").args(["-n", ns]).args(&args[1..]).output()
        } else {
            Command::new("ip").args(["netns", "exec", ns]).args(args).output()
        };
        match out {
            Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
            Ok(o) => Err(String::from_utf8_lossy(&o.stderr).into_owned()),
            Err(e) => Err(e.to_string()),
        }
    }
}
