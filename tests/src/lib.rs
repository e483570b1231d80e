//! The harness our integration tests share: nodes and pods as network namespaces that a test
//! creates and that are removed when it ends, pass or fail; and a runner for the plugin binaries.
//!
//! The harness itself uses `ip` (iproute2) to make namespaces and to look inside them; the
//! product never does.

pub mod chaos;
pub mod etcd;
pub mod lab;
pub mod pki;
pub mod runtime;

use serde_json::Value;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace that exists for as long as this value does.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A fresh namespace named `cbt-<tag>-<pid>-<n>`: unique across parallel tests and runs.
    pub fn new(tag: &str) -> Netns {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("cbt-{tag}-{}-{n}", std::process::id());
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        // Loopback up, as a runtime would have it.
        ns.ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Runs a command inside the namespace.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        Command::new(full[0])
            .args(&full[1..])
            .output()
            .expect("running ip netns exec")
    }

    /// Runs a command inside the namespace and insists that it succeeds; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} in {} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Adds a veth pair `name` <-> `peer` in the namespace (a link that is not a bridge).
    pub fn add_veth(&self, name: &str, peer: &str) {
        self.ok(&["ip", "link", "add", name, "type", "veth", "peer", "name", peer]);
    }

    /// Link names in the namespace.
    pub fn links(&self) -> Vec<String> {
        self.ok(&["ip", "-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }

    /// Does one of two pings (200 ms apart) to `ip` get an answer?
    pub fn can_ping(&self, ip: &str) -> bool {
        self.run(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "-q", ip])
            .status
            .success()
    }

    /// Does one of two pings (200 ms apart) of `size` bytes of data to `ip`, with Don't Fragment
    /// set, get an answer? Nothing on the way may fragment them: a path whose MTU is smaller
    /// fails.
    pub fn can_ping_df(&self, ip: &str, size: usize) -> bool {
        let size = size.to_string();
        self.run(&[
            "ping", "-M", "do", "-s", &size, "-c", "2", "-i", "0.2", "-W", "2", "-q", ip,
        ])
        .status
        .success()
    }

    /// Makes `cmd` run inside this namespace.
    pub fn enter(&self, cmd: &mut Command) {
        enter_netns(cmd, &self.path());
    }

    /// Runs `f` on a thread of its own that has entered this namespace, so that the sockets `f`
    /// opens live here.
    pub fn in_thread<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_netns(&self.path(), f)
    }

    /// Runs the future that `f` makes on a tokio runtime all of whose threads (the calling one and
    /// `workers` more; 0 for a current-thread runtime) are inside this namespace.
    pub fn block_on<T: Send, F: std::future::Future<Output = T>>(
        &self,
        workers: usize,
        f: impl FnOnce() -> F + Send,
    ) -> T {
        let path = self.path();
        self.in_thread(move || {
            let rt = if workers == 0 {
                tokio::runtime::Builder::new_current_thread().enable_all().build()
            } else {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(workers)
                    .enable_all()
                    .on_thread_start(move || setns_to(&path))
                    .build()
            };
            rt.expect("building a tokio runtime").block_on(f())
        })
    }
}

/// Moves the calling thread into the network namespace at `path` (setns is per thread).
fn setns_to(path: &str) {
    let f = File::open(path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
    nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("entering {path}: {e}"));
}

/// Runs `f` on a thread of its own inside the network namespace at `path`; a panic in `f` is
/// the caller's.
pub fn in_netns<T: Send>(path: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            setns_to(path);
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Makes `cmd` run inside the network namespace at `path`: the child enters it between fork and
/// exec.
pub fn enter_netns(cmd: &mut Command, path: &str) {
    let f = File::open(path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // work is allowed. It makes one setns(2) system call on a descriptor opened above, and
    // building an io::Error from an errno does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
        });
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("running command");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

static DAEMONS: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());
static DIRS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// A temporary directory that [`tear_down`] removes too.
pub fn temp_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("creating a temporary directory");
    DIRS.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(d.path().to_owned());
    d
}

/// Remembers a daemon child (cbrnet-routed, etcd) so that [`tear_down`] can kill it when the
/// guards' drops cannot run (a signal); tests rely on their guards.
pub fn register_daemon(pid: u32) {
    DAEMONS.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
}

/// Kills the registered daemons, deletes every namespace this process made (`cbt-*-<pid>-*`) and
/// its temporary directories. For a process that is about to end without running its guards'
/// drops.
pub fn tear_down() {
    for pid in DAEMONS.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    for d in DIRS.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let _ = std::fs::remove_dir_all(d);
    }
    let mark = format!("-{}-", std::process::id());
    for e in std::fs::read_dir("/run/netns").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("cbt-") && name.contains(&mark) {
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
        }
    }
}

/// On SIGINT, SIGTERM or SIGHUP, tears down what this process made (see [`tear_down`]) and exits
/// with 128 + the signal: for programs that hold a lab while someone may press Ctrl-C.
pub fn tear_down_on_signals() -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            eprintln!("signal {sig}: tearing the lab down");
            tear_down();
            std::process::exit(128 + sig);
        }
    });
    Ok(())
}

/// A plugin stopped at a test point: resumed or killed by the test, or killed when the test ends.
pub struct Stopped(Option<std::process::Child>);

impl Stopped {
    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.0.as_ref().map_or(0, |c| c.id() as i32))
    }

    /// Lets it go on (SIGCONT) and waits for its end.
    pub fn resume(mut self) -> Output {
        let child = self.0.take().expect("a stopped plugin is resumed once");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGCONT,
        );
        child.wait_with_output().expect("waiting for the plugin")
    }

    /// Kills it (SIGKILL) and waits; how it ended.
    pub fn kill(mut self) -> std::process::ExitStatus {
        let mut child = self.0.take().expect("a stopped plugin is killed once");
        let _ = child.kill();
        child.wait().expect("waiting for the plugin")
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A child process that is killed (and reaped) when this guard goes, pass or fail.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Where cargo put our binaries (next to the test's own `deps/`).
pub fn bin_dir() -> PathBuf {
    // Tests run from target/<profile>/deps/, our own binaries (lab, bench) from target/<profile>/.
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors()
        .skip(1)
        .take(2)
        .find(|d| d.join("cbrnet").is_file())
        .expect("build the binaries first: cargo build --workspace")
        .to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// The reference plugins (Debian's containernetworking-plugins).
pub const REFERENCE_CNI_DIR: &str = "/usr/lib/cni";

/// A plugin call's outcome: exit status and stdout as JSON (if any).
#[derive(Debug)]
pub struct CniOut {
    pub ok: bool,
    pub json: Value,
    pub stderr: String,
}

impl CniOut {
    pub fn code(&self) -> u64 {
        self.json["code"].as_u64().unwrap_or(0)
    }
    pub fn expect_ok(self) -> Value {
        assert!(self.ok, "plugin failed: {} / {}", self.json, self.stderr);
        self.json
    }
}

/// One plugin invocation, as a runtime makes it.
pub struct Call<'a> {
    pub plugin: PathBuf,
    pub command: &'a str,
    pub container_id: &'a str,
    pub netns: String,
    pub ifname: &'a str,
    pub args: &'a str,
    pub cni_path: String,
    pub extra_env: Vec<(&'a str, &'a str)>,
}

impl<'a> Call<'a> {
    pub fn new(command: &'a str, container_id: &'a str, netns: impl AsRef<str>, ifname: &'a str) -> Call<'a> {
        Call {
            plugin: bin("cbrnet"),
            command,
            container_id,
            netns: netns.as_ref().to_string(),
            ifname,
            args: "",
            cni_path: format!("{}:{}", bin_dir().display(), REFERENCE_CNI_DIR),
            extra_env: Vec::new(),
        }
    }

    pub fn command(&self, node: &Netns) -> Command {
        let mut c = Command::new(&self.plugin);
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CNI_COMMAND", self.command)
            .env("CNI_CONTAINERID", self.container_id)
            .env("CNI_NETNS", &self.netns)
            .env("CNI_IFNAME", self.ifname)
            .env("CNI_ARGS", self.args)
            .env("CNI_PATH", &self.cni_path)
            .envs(self.extra_env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        node.enter(&mut c);
        c
    }

    /// Starts the plugin in `node`'s namespace with `conf` on stdin and `CBRNET_TEST_STOP_AT` set to
    /// `point`, and waits until it has stopped itself there (SIGSTOP). The caller resumes or kills
    /// it; if the test ends first, it is killed.
    pub fn start_stopped_at(&mut self, node: &Netns, conf: &Value, point: &'a str) -> Stopped {
        use nix::sys::signal::Signal;
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        use std::io::Write;
        self.extra_env.push(("CBRNET_TEST_STOP_AT", point));
        let mut child = self.command(node).spawn().expect("spawning plugin");
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(conf.to_string().as_bytes())
            .expect("writing the config");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let st = waitpid(pid, Some(WaitPidFlag::WUNTRACED)).expect("waitpid");
        let stopped = Stopped(Some(child));
        assert!(
            matches!(st, WaitStatus::Stopped(_, Signal::SIGSTOP)),
            "the plugin did not stop at {point}: {st:?}"
        );
        stopped
    }

    /// As [`Call::run`], but a plugin that has not ended within `limit` is killed, and that is
    /// the error.
    pub fn run_within(
        &self,
        node: &Netns,
        conf: &Value,
        limit: std::time::Duration,
    ) -> Result<CniOut, String> {
        use std::io::Write;
        let mut child = self.command(node).spawn().map_err(|e| e.to_string())?;
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(conf.to_string().as_bytes());
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let out = match rx.recv_timeout(limit) {
            Ok(out) => out,
            Err(_) => {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = waiter.join();
                return Err(format!("{} did not end within {limit:?}; killed", self.command));
            }
        };
        let _ = waiter.join();
        CniOut::from_output(out.map_err(|e| e.to_string())?)
    }

    /// Runs the plugin in `node`'s namespace with `conf` on stdin.
    pub fn run(&self, node: &Netns, conf: &Value) -> CniOut {
        use std::io::Write;
        let mut child = self.command(node).spawn().expect("spawning plugin");
        // A plugin that refuses its environment may exit before reading stdin: a broken pipe here
        // is its answer, not ours to judge.
        let _ = child.stdin.take().unwrap().write_all(conf.to_string().as_bytes());
        CniOut::from_output(child.wait_with_output().unwrap()).unwrap_or_else(|e| panic!("{e}"))
    }
}

impl CniOut {
    /// A plugin's exit status, stdout (JSON, or an error saying it is not) and stderr.
    fn from_output(out: Output) -> Result<CniOut, String> {
        let json = if out.stdout.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&out.stdout).map_err(|e| {
                format!(
                    "stdout is not JSON ({e}): {}",
                    String::from_utf8_lossy(&out.stdout)
                )
            })?
        };
        Ok(CniOut {
            ok: out.status.success(),
            json,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// The flags of a daemon for node `n1` at 192.168.50.10 in 10.244.0.0/16 that writes
/// `subnet_file`, without `--store`: for tests of flags it refuses before it runs.
pub fn node_flags(subnet_file: &std::path::Path) -> Vec<String> {
    [
        "--node-name",
        "n1",
        "--node-ip",
        "192.168.50.10",
        "--cluster-cidr",
        "10.244.0.0/16",
        "--subnet-file",
        &subnet_file.display().to_string(),
    ]
    .map(String::from)
    .into()
}

/// Runs `cbrnet-routed ARGS` in `ns` to its end; (exit code, stderr).
pub fn routed(ns: &Netns, args: &[impl AsRef<std::ffi::OsStr>]) -> (i32, String) {
    routed_with(ns, args, |_| {})
}

/// [`routed`], with `env` setting the command's environment.
pub fn routed_with(
    ns: &Netns,
    args: &[impl AsRef<std::ffi::OsStr>],
    env: impl FnOnce(&mut Command),
) -> (i32, String) {
    let mut cmd = Command::new(bin("cbrnet-routed"));
    cmd.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    env(&mut cmd);
    ns.enter(&mut cmd);
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A node: a namespace, a data directory, and a subnet file path, all its own.
pub struct Node {
    pub ns: Netns,
    pub dir: tempfile::TempDir,
}

impl Node {
    pub fn new(tag: &str) -> Node {
        Node {
            ns: Netns::new(tag),
            dir: temp_dir(),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn subnet_file(&self) -> PathBuf {
        self.dir.path().join("subnet.json")
    }

    /// A `cbrnet` network config with in-process IPAM on `subnet`.
    pub fn conf(&self, version: &str, subnet: &str) -> Value {
        serde_json::json!({
            "cniVersion": version,
            "name": "testnet",
            "type": "cbrnet",
            "ipam": { "type": "cbrnet-ipam", "subnet": subnet, "dataDir": self.data_dir() },
        })
    }

    /// Addresses reserved on disk for `network`: (address, "containerID ifname").
    pub fn reservations(&self, network: &str) -> Vec<(String, String)> {
        reservations_in(&self.data_dir().join(network))
    }

    /// The veth host ends on this node.
    pub fn veths(&self) -> Vec<String> {
        self.ns
            .links()
            .into_iter()
            .filter(|l| l.starts_with("veth"))
            .collect()
    }
}

/// Writes at `path` the subnet file `cbrnet-routed` writes for a node holding `families`: each
/// a (subnet, cluster CIDR), IPv4 first, its gateway the subnet's first address.
pub fn write_subnet_file(path: &std::path::Path, families: &[(&str, &str)]) {
    let gw = |s: &str| cbrnet_ipam::cluster::record::gateway_of(s.parse().expect("a subnet")).to_string();
    let (s4, c4) = families[0];
    let mut f = serde_json::json!({"subnet": s4, "gateway": gw(s4), "clusterCIDR": c4});
    if let Some((s6, c6)) = families.get(1) {
        f["ipv6Subnet"] = (*s6).into();
        f["ipv6Gateway"] = gw(s6).into();
        f["ipv6ClusterCIDR"] = (*c6).into();
    }
    let file: cbrnet_ipam::SubnetFile = serde_json::from_value(f).expect("a valid subnet file");
    file.write(path).expect("writing the subnet file");
}

/// The pod address (without prefix) of a result's first IP.
pub fn result_ip(r: &Value) -> String {
    r["ips"][0]["address"]
        .as_str()
        .expect("ips[0].address")
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

/// The reservations of a network's directory: (address, "containerID ifname").
pub fn reservations_in(dir: &std::path::Path) -> Vec<(String, String)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<(String, String)> = rd
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            name.parse::<std::net::IpAddr>().ok()?;
            Some((
                name,
                std::fs::read_link(e.path()).ok()?.to_string_lossy().into_owned(),
            ))
        })
        .collect();
    v.sort();
    v
}
