//! What decides where a node's pods' traffic goes is written by root only: the `file:` lease
//! store, the subnet file, the daemon's lock and the IPAM data directory get tight modes whatever
//! the umask, and a store directory or subnet file that others could write is refused, naming
//! the path and its mode.

use cbrnet_tests::lab::{Lab, StoreKind};
use cbrnet_tests::{routed, Call, Netns, Node};
use serde_json::json;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .mode()
        & 0o7777
}

fn chmod(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

#[test]
fn the_store_the_subnet_file_the_lock_and_ipam_are_written_with_tight_modes() {
    // a umask that would leave everything open to everyone, for the daemon and the plugin
    let mut lab = Lab::new("modes", StoreKind::File);
    let i = lab.add_node();
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    lab.start(i);
    lab.add_pod(i);
    nix::sys::stat::umask(old);
    let store = lab.store_dir();
    assert_eq!(mode(&store), 0o755);
    // the store's lock is made by the first update, if one came yet
    if store.join(".lock").exists() {
        assert_eq!(mode(&store.join(".lock")), 0o600);
    }
    let records: Vec<_> = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(mode(&records[0]), 0o644);
    let n = &lab.nodes[i].node;
    assert_eq!(mode(&n.subnet_file()), 0o644);
    assert_eq!(mode(&n.dir.path().join(".subnet.json.lock")), 0o600);
    assert_eq!(mode(&n.data_dir()), 0o755);
    assert_eq!(mode(&n.data_dir().join("labnet")), 0o755);
    assert_eq!(mode(&n.data_dir().join("labnet").join("lock")), 0o600);
    for p in [&store, &n.subnet_file(), &n.data_dir()] {
        assert_eq!(std::fs::metadata(p).unwrap().uid(), 0, "{}", p.display());
    }
}

#[test]
fn a_store_directory_others_can_write_is_refused() {
    let mut lab = Lab::new("modes-st", StoreKind::File);
    let i = lab.add_node();
    let store = lab.store_dir();
    std::fs::create_dir_all(&store).unwrap();
    chmod(&store, 0o777);
    let why = format!("{} is writable by others (mode 0777)", store.display());
    // the reading commands refuse it
    for cmd in [&["leases"][..], &["release", "--node-name", "n1"][..]] {
        let args: Vec<String> = cmd
            .iter()
            .map(|s| s.to_string())
            .chain(["--store".to_string(), lab.store.clone()])
            .collect();
        let (code, err) = routed(&lab.nodes[i].node.ns, &args);
        assert_ne!(code, 0, "{cmd:?}: {err}");
        assert!(err.contains(&why), "{cmd:?}: {err}");
    }
    // and so does the daemon, which takes no lease and publishes no subnet
    lab.spawn(i);
    lab.expect_logged(i, Duration::from_secs(10), &why);
    let st = lab.nodes[i].daemon.as_mut().unwrap().wait().unwrap();
    assert!(!st.success());
    assert!(lab.nodes[i].subnet().is_none());
    assert!(
        std::fs::read_dir(&store).unwrap().next().is_none(),
        "something was written"
    );
}

#[test]
fn a_subnet_file_others_can_write_is_refused_by_the_plugins() {
    let node = Node::new("modes-sf");
    std::fs::write(
        node.subnet_file(),
        r#"{"subnet":"10.244.23.0/24","gateway":"10.244.23.1","clusterCIDR":"10.244.0.0/16"}"#,
    )
    .unwrap();
    chmod(&node.subnet_file(), 0o666);
    let pod = Netns::new("modes-sf-pod");
    let why = format!(
        "{} is writable by others (mode 0666)",
        node.subnet_file().display()
    );
    for ty in ["cbrnet", "cbrnet-ipam"] {
        let conf = json!({
            "cniVersion": "1.1.0", "name": "testnet", "type": ty,
            "ipam": {"type": "cbrnet-ipam", "subnetFile": node.subnet_file(), "dataDir": node.data_dir()},
        });
        let out = Call::new("ADD", "c1", pod.path(), "eth0").run(&node.ns, &conf);
        assert_eq!(out.code(), 7, "{ty}: {}", out.json);
        let text = out.json.to_string();
        assert!(text.contains(&why), "{ty}: {text}");
    }
    assert!(node.veths().is_empty());
    // made root's again, it is used
    chmod(&node.subnet_file(), 0o644);
    let conf = json!({
        "cniVersion": "1.1.0", "name": "testnet", "type": "cbrnet",
        "ipam": {"type": "cbrnet-ipam", "subnetFile": node.subnet_file(), "dataDir": node.data_dir()},
    });
    Call::new("ADD", "c1", pod.path(), "eth0")
        .run(&node.ns, &conf)
        .expect_ok();
    Call::new("DEL", "c1", pod.path(), "eth0")
        .run(&node.ns, &conf)
        .expect_ok();
}
