//! Real container runtimes from Debian's packages calling our plugins: containerd 1.6 through
//! `ctr run --cni`, and podman 4.3 through its CNI backend.
//!
//! Each runs in a [`Sandbox`]: the node's network namespace, plus a mount namespace and a PID
//! namespace of the test's own. In the mount namespace private directories cover every place the
//! runtimes write outside the roots we give them (`/run`, `/dev/shm`, `/var/tmp`, `/var/lib`,
//! `/opt/cni/bin`, `/etc/cni/net.d`, `/etc/containers`), so the machine's own are never touched.
//! The daemon, the client (the process that executes the CNI plugins), the shims and the
//! containers all live in the PID namespace: killing its init ends every one of them, and the mount
//! namespace goes with its last process. What outlives them, the cgroups runc makes, goes under a
//! cgroup named after the sandbox, which the teardown removes.
//!
//! The image is made offline from Debian's `busybox-static`.

use crate::{bin, Node};
use serde_json::{json, Value};
use std::cell::{Cell, RefCell};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The network the containers of both runtimes join.
pub const NETWORK: &str = "cbtnet";
/// The busybox image, under this name in both runtimes.
pub const IMAGE: &str = "localhost/cbt/busybox:1";
/// The containerd namespace of our containers; `ctr` hands CNI the ID `<namespace>-<id>`.
pub const CTR_NAMESPACE: &str = "cbt";
/// Debian's PATH for root: where the runtimes find runc, conmon and the containerd shim.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How long any one runtime command may take: a hung daemon fails the test instead of hanging it.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Polls `cond` every 20 ms until it holds (true) or `timeout` has passed (false).
pub fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while !cond() {
        if t.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

fn text(out: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A node (network namespace and temporary directory) with a mount and a PID namespace of its
/// own, in which runtimes run. Everything in it ends when it drops (or at [`Sandbox::close`]).
///
/// Create it on the thread that drops it: the holder process dies with that thread.
pub struct Sandbox {
    pub node: Node,
    /// The node namespace's name (`cbt-<tag>-<pid>-<n>`), also the cgroup our containers go under.
    pub name: String,
    /// `unshare`, which made the namespaces and waits for their init.
    holder: Child,
    /// The PID namespace's init (a bash that reaps the orphans the runtimes leave it), as the
    /// machine numbers it: `nsenter` joins its namespaces. 0 until it runs.
    init: u32,
    /// Long-running commands (daemons, foreground `ctr run`s) by label.
    children: RefCell<Vec<(String, Child)>>,
    /// Commands run to their end so far (numbers their output files).
    runs: Cell<u32>,
    closed: bool,
}

impl Sandbox {
    pub fn new(tag: &str) -> Sandbox {
        let node = Node::new(tag);
        let name = node.ns.name.clone();
        let dir = node.dir.path().to_path_buf();
        for d in ["cni-bin", "cni-conf", "overlays", "logs", "tmp", "home"] {
            fs::create_dir_all(dir.join(d)).unwrap();
        }
        let mut cmd = Command::new("unshare");
        // --mount-proc: the runtimes find processes by the PIDs their namespace gives them (the
        // CNI_NETNS `ctr` passes is /proc/<task pid>/ns/net). Propagation is private (unshare's
        // default), so no mount made inside ever shows outside.
        cmd.args(["--mount", "--pid", "--fork", "--kill-child", "--mount-proc"])
            .args(["--", "bash", "-c", "sleep infinity & wait"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(dir.join("logs/unshare.log")).unwrap());
        node.ns.enter(&mut cmd);
        // SAFETY: prctl(2) is async-signal-safe. Should this process die without unwinding, the
        // kernel kills the holder, --kill-child its init, and that the whole PID namespace.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        let holder = cmd.spawn().expect("starting unshare (util-linux)");
        crate::register_daemon(holder.id());
        let mut sb = Sandbox {
            node,
            name,
            holder,
            init: 0,
            children: RefCell::new(Vec::new()),
            runs: Cell::new(0),
            closed: false,
        };
        sb.init = sb.wait_for_init();
        for (at, mode) in [("/run", "755"), ("/dev/shm", "1777"), ("/var/tmp", "1777")] {
            sb.ok(&["mount", "-t", "tmpfs", "-o", &format!("mode={mode}"), "tmpfs", at]);
        }
        // The overlays' upper layers live in a tmpfs: overlayfs refuses an upper directory on
        // overlayfs, which the temporary directory may be on.
        let upper = sb.dir().join("overlays");
        sb.ok(&["mount", "-t", "tmpfs", "tmpfs", &upper.to_string_lossy()]);
        // /var/lib/cni (libcni's cache), /var/lib/containers (podman's blob cache) and the like
        // do not exist on a fresh machine; the runtimes create them.
        sb.overlay("/var/lib");
        sb.bind(&sb.dir().join("cni-bin"), "/opt/cni/bin");
        sb.bind(&sb.dir().join("cni-conf"), "/etc/cni/net.d");
        for p in ["cbrnet", "cbrnet-ipam"] {
            let to = sb.dir().join("cni-bin").join(p);
            // A link is a snapshot: a rebuild meanwhile replaces the file, not our inode.
            if fs::hard_link(bin(p), &to).is_err() {
                fs::copy(bin(p), &to).unwrap_or_else(|e| panic!("copying {p}: {e}"));
            }
        }
        sb
    }

    /// The init's host PID, once it runs bash: unshare has mounted /proc for the namespace by then.
    fn wait_for_init(&mut self) -> u32 {
        let children = format!("/proc/{0}/task/{0}/children", self.holder.id());
        let log = self.dir().join("logs/unshare.log");
        let mut init = 0;
        let mut exited = None;
        let holder = &mut self.holder;
        let ran = poll_until(Duration::from_secs(10), || {
            exited = holder.try_wait().unwrap();
            let pid = fs::read_to_string(&children)
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok());
            init = pid.unwrap_or(0);
            let bash = |p| fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "bash");
            exited.is_some() || pid.is_some_and(bash)
        });
        assert!(
            ran && exited.is_none(),
            "unshare ({exited:?}): {}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        init
    }

    /// The node's temporary directory: the same path inside and outside.
    pub fn dir(&self) -> &Path {
        self.node.dir.path()
    }

    /// `path` as the sandbox's mount namespace sees it, reachable from outside.
    pub fn inside(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{path}", self.init))
    }

    /// `program` to run inside all three namespaces, with a clean environment. Its working
    /// directory is `/` (entering a mount namespace moves there): give absolute paths.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--target={}", self.init))
            .args(["--mount", "--net", "--pid", "--"])
            .arg(program)
            .env_clear()
            .env("PATH", PATH)
            .env("HOME", self.dir().join("home"))
            .env("TMPDIR", self.dir().join("tmp"))
            .stdin(Stdio::null());
        c
    }

    /// Runs `cmd` to its end, within [`COMMAND_TIMEOUT`]. Its output goes through files, which
    /// (unlike pipes) no daemon it starts can keep open.
    pub fn output(&self, cmd: &mut Command) -> Output {
        let n = self.runs.get();
        self.runs.set(n + 1);
        let (o, e) = (
            self.log_path(&format!("run{n}-stdout")),
            self.log_path(&format!("run{n}-stderr")),
        );
        cmd.stdout(File::create(&o).unwrap())
            .stderr(File::create(&e).unwrap());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        let mut status = None;
        let ended = poll_until(COMMAND_TIMEOUT, || {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        if !ended {
            // Only the nsenter: what it started inside ends with the sandbox.
            let _ = child.kill();
            status = child.wait().ok();
        }
        let out = Output {
            status: status.unwrap(),
            stdout: fs::read(&o).unwrap_or_default(),
            stderr: fs::read(&e).unwrap_or_default(),
        };
        assert!(
            ended,
            "{cmd:?} did not end within {COMMAND_TIMEOUT:?}: {}",
            text(&out)
        );
        out
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.output(self.command(args[0]).args(&args[1..]))
    }

    /// Runs a command inside and insists that it succeeds; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?} in {}: {}", self.name, text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Makes `dir` writable without touching the machine's: an overlay whose upper layer is ours.
    fn overlay(&self, dir: &str) {
        let key = dir.trim_matches('/').replace('/', "_");
        let base = self.dir().join("overlays").join(key);
        let (upper, work) = (base.join("upper"), base.join("work"));
        for d in [&upper, &work] {
            fs::create_dir_all(self.inside(&d.to_string_lossy())).unwrap();
        }
        let opts = format!(
            "lowerdir={dir},upperdir={},workdir={}",
            upper.display(),
            work.display()
        );
        self.ok(&["mount", "-t", "overlay", "overlay", "-o", &opts, dir]);
    }

    /// Binds `src` over `at`, creating `at` (in an overlay of its nearest existing ancestor) if
    /// the machine has no such directory.
    pub fn bind(&self, src: &Path, at: &str) {
        if !self.inside(at).is_dir() {
            let mut base = Path::new(at);
            while !self.inside(&base.to_string_lossy()).is_dir() {
                base = base.parent().expect("/ exists");
            }
            self.overlay(&base.to_string_lossy());
            fs::create_dir_all(self.inside(at)).unwrap();
        }
        self.ok(&["mount", "--bind", &src.to_string_lossy(), at]);
    }

    /// Starts a long-running command; its stdout and stderr go to `logs/<label>.log`.
    pub fn spawn(&self, label: &str, mut cmd: Command) {
        let log = File::create(self.log_path(label)).unwrap();
        cmd.stdout(log.try_clone().unwrap()).stderr(log);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("starting {label}: {e}"));
        self.children.borrow_mut().push((label.to_string(), child));
    }

    fn log_path(&self, label: &str) -> PathBuf {
        self.dir().join("logs").join(format!("{label}.log"))
    }

    /// What a spawned command has written so far.
    pub fn log(&self, label: &str) -> String {
        fs::read_to_string(self.log_path(label)).unwrap_or_default()
    }

    /// The exit status of a spawned command, if it has ended.
    pub fn exited(&self, label: &str) -> Option<ExitStatus> {
        let mut children = self.children.borrow_mut();
        let (_, child) = children
            .iter_mut()
            .find(|(l, _)| l == label)
            .unwrap_or_else(|| panic!("no command {label}"));
        child.try_wait().unwrap()
    }

    /// Waits for a spawned command to end.
    pub fn wait_exit(&self, label: &str, timeout: Duration) -> ExitStatus {
        let mut status = None;
        let ended = poll_until(timeout, || {
            status = self.exited(label);
            status.is_some()
        });
        assert!(ended, "{label} still runs: {}", self.log(label));
        status.unwrap()
    }

    /// A `cbrnet` network (in-process IPAM on `subnet`, reservations in the node's data
    /// directory, info-level log in `cbrnet.log`), in the version both runtimes speak.
    pub fn network(&self, subnet: &str) -> Value {
        self.network_with(json!({"subnet": subnet}))
    }

    /// [`Sandbox::network`] with the IPAM keys `ipam` (`ranges`, `subnetFile`, ...) instead.
    pub fn network_with(&self, mut ipam: Value) -> Value {
        ipam["type"] = json!("cbrnet-ipam");
        ipam["dataDir"] = json!(self.node.data_dir());
        json!({
            "cniVersion": "1.0.0", "name": NETWORK,
            "plugins": [{
                "type": "cbrnet", "bridge": "cbr0", "logFile": self.dir().join("cbrnet.log"),
                "ipam": ipam,
            }],
        })
    }

    /// Puts `conf` (a conflist) where both runtimes look for networks.
    pub fn install_network(&self, conf: &Value) {
        let name = conf["name"].as_str().expect("a named network");
        fs::write(
            self.dir().join("cni-conf").join(format!("10-{name}.conflist")),
            conf.to_string(),
        )
        .unwrap();
    }

    /// The plugin's log file (see [`Sandbox::network`]).
    pub fn cbrnet_log(&self) -> String {
        fs::read_to_string(self.dir().join("cbrnet.log")).unwrap_or_default()
    }

    /// The address `owner` (`"<containerID> <ifname>"`) holds in the network, if any.
    pub fn reserved_for(&self, owner: &str) -> Option<String> {
        self.reserved_all(owner).into_iter().next()
    }

    /// Every address `owner` holds in the network (one per family on a dual-stack network).
    pub fn reserved_all(&self, owner: &str) -> Vec<String> {
        self.node
            .reservations(NETWORK)
            .into_iter()
            .filter(|(_, o)| o == owner)
            .map(|(ip, _)| ip)
            .collect()
    }

    /// Ends every process, and removes what they leave outside; returns what could not be
    /// removed (empty when nothing is left behind).
    pub fn close(mut self) -> Vec<String> {
        self.teardown()
    }

    fn teardown(&mut self) -> Vec<String> {
        if std::mem::replace(&mut self.closed, true) {
            return Vec::new();
        }
        let mut left = Vec::new();
        // SIGKILL to the init: the kernel kills every other process in the PID namespace and
        // reaps them all before the init is gone, and unshare, which waits for the init, exits
        // after it. The mount namespace ends with its last process.
        if self.init != 0 && matches!(self.holder.try_wait(), Ok(None)) {
            let pid = nix::unistd::Pid::from_raw(self.init as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        } else {
            let _ = self.holder.kill();
        }
        let _ = self.holder.wait();
        // The nsenters outside the PID namespace, whose children are gone now.
        for (_, c) in self.children.get_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        left.extend(remove_cgroups(&self.name));
        let dir = self.dir().to_string_lossy().into_owned();
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        left.extend(
            mounts
                .lines()
                .filter(|l| l.contains(&dir))
                .map(|l| format!("mount: {l}")),
        );
        left
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for l in self.teardown() {
            eprintln!("{}: left behind: {l}", self.name);
        }
    }
}

/// Removes the cgroup `/<name>` and everything under it, in every hierarchy (cgroup v1's
/// controllers and named hierarchies, v2's unified one); returns the directories that remain.
fn remove_cgroups(name: &str) -> Vec<String> {
    let root = Path::new("/sys/fs/cgroup");
    let mut tops = vec![root.join(name)];
    for e in fs::read_dir(root).into_iter().flatten().flatten() {
        tops.push(e.path().join(name));
    }
    let mut left = Vec::new();
    for t in tops.iter().filter(|t| t.is_dir()) {
        rmdir_tree(t, &mut left);
    }
    left
}

fn rmdir_tree(dir: &Path, left: &mut Vec<String>) {
    // A cgroup directory holds its children as directories and its knobs as files, which go
    // with it.
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            rmdir_tree(&e.path(), left);
        }
    }
    if let Err(e) = fs::remove_dir(dir) {
        left.push(format!("cgroup {}: {e}", dir.display()));
    }
}

/// A busybox image made offline from the machine's statically linked busybox: a layer tarball
/// (what `podman import` takes) and an OCI image layout archive (what `ctr image import` takes).
pub struct BusyboxImage {
    pub layer: PathBuf,
    pub oci_archive: PathBuf,
}

/// The applets the tests use.
const APPLETS: &[&str] = &["sh", "sleep", "ping", "ip", "cat"];

impl BusyboxImage {
    pub fn build(dir: &Path) -> BusyboxImage {
        let busybox = Path::new("/bin/busybox");
        assert!(
            is_static(busybox),
            "{} is missing or dynamically linked: apt-get install busybox-static",
            busybox.display()
        );
        let rootfs = dir.join("rootfs");
        for d in ["bin", "etc", "proc", "sys", "dev", "tmp"] {
            fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
        for a in APPLETS {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(a)).unwrap();
        }
        let layer = dir.join("layer.tar");
        sh(Command::new("tar")
            .args([
                "--sort=name",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "--mtime=@0",
            ])
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&layer)
            .arg("."));

        // The OCI image layout: blobs by digest, a manifest for one platform, an index naming it.
        let layout = dir.join("oci");
        let blobs = layout.join("blobs/sha256");
        fs::create_dir_all(&blobs).unwrap();
        let put = |bytes: &[u8], media: &str| -> Value {
            let digest = sha256(bytes);
            fs::write(blobs.join(&digest), bytes).unwrap();
            json!({"mediaType": media, "digest": format!("sha256:{digest}"), "size": bytes.len()})
        };
        let layer_desc = put(
            &fs::read(&layer).unwrap(),
            "application/vnd.oci.image.layer.v1.tar",
        );
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let config = json!({
            "architecture": arch, "os": "linux",
            "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
            // An uncompressed layer's digest is its diff ID.
            "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]},
        });
        let config_desc = put(
            config.to_string().as_bytes(),
            "application/vnd.oci.image.config.v1+json",
        );
        let manifest = json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config_desc, "layers": [layer_desc],
        });
        let mut manifest_desc = put(
            manifest.to_string().as_bytes(),
            "application/vnd.oci.image.manifest.v1+json",
        );
        manifest_desc["platform"] = json!({"architecture": arch, "os": "linux"});
        manifest_desc["annotations"] = json!({
            "io.containerd.image.name": IMAGE,
            "org.opencontainers.image.ref.name": IMAGE.rsplit(':').next(),
        });
        let index = json!({"schemaVersion": 2, "manifests": [manifest_desc]});
        fs::write(layout.join("index.json"), index.to_string()).unwrap();
        fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let oci_archive = dir.join("image.tar");
        sh(Command::new("tar")
            .arg("-C")
            .arg(&layout)
            .arg("-cf")
            .arg(&oci_archive)
            .args(["oci-layout", "index.json", "blobs"]));
        BusyboxImage { layer, oci_archive }
    }
}

fn sh(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", text(&out));
}

fn sha256(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut c = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum (coreutils)");
    c.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A 64-bit ELF without a program interpreter (PT_INTERP) runs without a libc in the image.
fn is_static(path: &Path) -> bool {
    let Ok(b) = fs::read(path) else {
        return false;
    };
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 || b[5] != 1 {
        return false;
    }
    let phoff = u64::from_le_bytes(b[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        b.get(o..o + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().unwrap()) != 3)
    })
}

/// containerd 1.6 with its socket, root and state in the sandbox's directory (the CRI plugin
/// off), and `ctr` talking to it. `ctr` runs the CNI plugins itself, for `ctr run --cni`: it
/// looks in /opt/cni/bin, then /usr/lib/cni (Debian's addition), for the first config in
/// /etc/cni/net.d.
pub struct Containerd {
    pub sb: Sandbox,
    socket: PathBuf,
    execs: Cell<u32>,
}

impl Containerd {
    pub fn start(tag: &str) -> Containerd {
        let sb = Sandbox::new(tag);
        let root = sb.dir().join("containerd");
        fs::create_dir_all(&root).unwrap();
        let socket = root.join("containerd.sock");
        // Shim sockets (/run/containerd/s) and runc's state (/run/containerd/runc) are fixed
        // paths: they land in the sandbox's /run. The opt plugin would create /opt/containerd.
        let config = format!(
            r#"version = 2
root = "{root}/root"
state = "{root}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "{socket}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"
"#,
            root = root.display(),
            socket = socket.display(),
        );
        fs::write(root.join("config.toml"), config).unwrap();
        let mut cmd = sb.command("containerd");
        cmd.arg("--config").arg(root.join("config.toml"));
        sb.spawn("containerd", cmd);
        let c = Containerd {
            sb,
            socket,
            execs: Cell::new(0),
        };
        // containerd opens its socket once its plugins are loaded.
        let mut died = None;
        let up = poll_until(Duration::from_secs(30), || {
            died = c.sb.exited("containerd");
            c.socket.exists() || died.is_some()
        });
        assert!(
            up && died.is_none(),
            "containerd did not start ({died:?}): {}",
            c.sb.log("containerd")
        );
        c.ctr_ok(&["version"]);
        c
    }

    /// `ctr` with the sandbox's containerd, namespace and snapshotter. The native snapshotter
    /// (plain copies; the image is 2 MB) works on any filesystem.
    pub fn ctr_command(&self) -> Command {
        let mut c = self.sb.command("ctr");
        c.env("CONTAINERD_ADDRESS", &self.socket)
            .env("CONTAINERD_NAMESPACE", CTR_NAMESPACE)
            .env("CONTAINERD_SNAPSHOTTER", "native");
        c
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        self.sb.output(self.ctr_command().args(args))
    }

    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(out.status.success(), "ctr {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn import(&self, image: &BusyboxImage) {
        self.ctr_ok(&["image", "import", &image.oci_archive.to_string_lossy()]);
    }

    /// The container ID `ctr` gives the CNI plugins for container `id`.
    pub fn cni_id(id: &str) -> String {
        format!("{CTR_NAMESPACE}-{id}")
    }

    fn run_args(&self, id: &str) -> Vec<String> {
        // runc makes the container's cgroups under the sandbox's, which the teardown removes.
        let cgroup = format!("/{}/{id}", self.sb.name);
        ["run", "--cni", "--cgroup", &cgroup]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// Starts `ctr run --rm --cni` in the foreground (spawned as `ctr-<id>`): ctr sets up the
    /// network before it starts the task and, once the task has exited, calls DEL and removes
    /// the container. [`Containerd::wait_running`] waits for the first half.
    pub fn run_rm(&self, id: &str, argv: &[&str]) {
        let mut cmd = self.ctr_command();
        cmd.args(self.run_args(id))
            .arg("--rm")
            .args([IMAGE, id])
            .args(argv);
        self.sb.spawn(&format!("ctr-{id}"), cmd);
    }

    /// `ctr run --rm --cni` of a command that ends by itself, to its end.
    pub fn run_rm_to_end(&self, id: &str, argv: &[&str]) -> Output {
        let mut cmd = self.ctr_command();
        cmd.args(self.run_args(id))
            .arg("--rm")
            .args([IMAGE, id])
            .args(argv);
        self.sb.output(&mut cmd)
    }

    /// `ctr run --detach --cni`: returns once the task runs; ctr never calls DEL for it.
    pub fn run_detached(&self, id: &str, argv: &[&str]) -> Output {
        let mut cmd = self.ctr_command();
        cmd.args(self.run_args(id))
            .arg("--detach")
            .args([IMAGE, id])
            .args(argv);
        self.sb.output(&mut cmd)
    }

    /// Waits until the task of a [`Containerd::run_rm`] runs (its network is set up by then).
    pub fn wait_running(&self, id: &str) {
        let label = format!("ctr-{id}");
        let mut died = None;
        let mut tasks = String::new();
        let up = poll_until(Duration::from_secs(30), || {
            died = self.sb.exited(&label);
            tasks = String::from_utf8_lossy(&self.ctr(&["task", "ls"]).stdout).into_owned();
            died.is_some()
                || tasks.lines().any(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.first() == Some(&id) && f.last() == Some(&"RUNNING")
                })
        });
        assert!(up, "task {id} does not run: {tasks}{}", self.sb.log(&label));
        if let Some(st) = died {
            panic!("ctr run {id} exited ({st}): {}", self.sb.log(&label));
        }
    }

    /// Runs `argv` in task `id` (`ctr task exec`).
    pub fn exec(&self, id: &str, argv: &[&str]) -> Output {
        // Exec IDs must be unique among the task's processes.
        let n = self.execs.get();
        self.execs.set(n + 1);
        let exec_id = format!("x{n}");
        let mut args = vec!["task", "exec", "--exec-id", &exec_id, id];
        args.extend_from_slice(argv);
        self.ctr(&args)
    }

    pub fn exec_ok(&self, id: &str, argv: &[&str]) -> String {
        let out = self.exec(id, argv);
        assert!(out.status.success(), "{argv:?} in {id}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Kills task `id` (sleep, its PID 1, ignores SIGTERM).
    pub fn kill(&self, id: &str) {
        self.ctr_ok(&["task", "kill", "--signal", "SIGKILL", id]);
    }

    pub fn close(self) -> Vec<String> {
        self.sb.close()
    }
}

/// podman 4.3 with its CNI backend: configuration, storage and state of the sandbox's own. podman
/// runs the CNI plugins itself, from `podman run` (ADD) and `podman rm` or the `podman container
/// cleanup` conmon starts when a container exits (DEL).
pub struct Podman {
    pub sb: Sandbox,
}

impl Podman {
    pub fn new(tag: &str) -> Podman {
        let sb = Sandbox::new(tag);
        let etc = sb.dir().join("containers");
        fs::create_dir_all(&etc).unwrap();
        // Debian's defaults (/usr/share/containers/containers.conf, and the libpod.conf its podman
        // ships) assume systemd, journald and crun; here there may be none of them.
        let containers_conf = format!(
            r#"[containers]
# Explicit limits, rather than the ones podman copies from the machine, which vary.
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
# On a machine with AppArmor, podman would load its default profile into the kernel.
apparmor_profile = "unconfined"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"

[network]
network_backend = "cni"
cni_plugin_dirs = ["/opt/cni/bin"]
network_config_dir = "/etc/cni/net.d"
# Our network as the default: podman does not make up one of its own.
default_network = "{NETWORK}"
"#
        );
        fs::write(etc.join("containers.conf"), containers_conf).unwrap();
        // vfs (plain copies) works on any filesystem; graphroot is ours, runroot in the /run of
        // the sandbox.
        let storage = format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"/run/containers/storage\"\n",
            sb.dir().join("storage").display()
        );
        fs::write(etc.join("storage.conf"), storage).unwrap();
        fs::write(
            etc.join("policy.json"),
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )
        .unwrap();
        // No registries: nothing ever pulls from the network.
        fs::write(
            etc.join("registries.conf"),
            "unqualified-search-registries = []\n",
        )
        .unwrap();
        // Every podman in the sandbox (also the ones conmon starts) reads this, and only this.
        sb.bind(&etc, "/etc/containers");
        Podman { sb }
    }

    pub fn podman(&self, args: &[&str]) -> Output {
        self.sb.output(self.sb.command("podman").args(args))
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.podman(args);
        assert!(out.status.success(), "podman {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn import(&self, image: &BusyboxImage) {
        self.ok(&["import", &image.layer.to_string_lossy(), IMAGE]);
    }

    /// The arguments of `podman run` up to the image.
    fn run_args(&self, name: &str) -> Vec<String> {
        let parent = format!("/{}", self.sb.name);
        [
            "run",
            "--name",
            name,
            "--network",
            NETWORK,
            // busybox's ping needs a raw socket (podman's default capabilities lack NET_RAW).
            "--cap-add",
            "NET_RAW",
            // Its cgroups (and conmon's) go under the sandbox's, which the teardown removes.
            "--cgroup-parent",
            &parent,
            "--pull",
            "never",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// `podman run --detach`: returns the container's ID once it runs.
    pub fn run_detached(&self, name: &str, argv: &[&str]) -> String {
        let mut args = self.run_args(name);
        args.extend(["--detach", IMAGE].map(String::from));
        args.extend(argv.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.ok(&args).trim().to_string()
    }

    /// `podman run --rm` of a command that ends by itself, to its end.
    pub fn run_rm_to_end(&self, name: &str, argv: &[&str]) -> Output {
        let mut args = self.run_args(name);
        args.extend(["--rm", IMAGE].map(String::from));
        args.extend(argv.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.podman(&args)
    }

    /// The address podman has for container `name` on our network.
    pub fn ip(&self, name: &str) -> String {
        self.network_setting(name, "IPAddress")
    }

    /// The IPv6 address podman has for container `name` on our network.
    pub fn ip6(&self, name: &str) -> String {
        self.network_setting(name, "GlobalIPv6Address")
    }

    fn network_setting(&self, name: &str, key: &str) -> String {
        let format = format!("{{{{(index .NetworkSettings.Networks \"{NETWORK}\").{key}}}}}");
        self.ok(&["inspect", "--format", &format, name])
            .trim()
            .to_string()
    }

    pub fn exec_ok(&self, name: &str, argv: &[&str]) -> String {
        let mut args = vec!["exec", name];
        args.extend_from_slice(argv);
        self.ok(&args)
    }

    pub fn close(self) -> Vec<String> {
        self.sb.close()
    }
}
