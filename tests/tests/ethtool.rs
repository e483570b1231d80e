//! `cbrnet_bridge::ethtool` against the kernel: TX checksum offload of a VXLAN device and of a veth
//! pair, read and set through SIOCETHTOOL and compared with what `ethtool -k` says, all inside a
//! namespace of the test's own.

use cbrnet_bridge::ethtool::{set_tx_checksum, tx_checksum};
use cbrnet_tests::Netns;

/// `tx-checksumming` as `ethtool -k` reports it in `ns` (`on`, `off`, maybe with ` [fixed]`).
fn ethtool_k(ns: &Netns, dev: &str) -> bool {
    let out = ns.ok(&["ethtool", "-k", dev]);
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("tx-checksumming: "))
        .unwrap_or_else(|| panic!("no tx-checksumming in ethtool -k {dev}: {out}"));
    match line.split_whitespace().next() {
        Some("on") => true,
        Some("off") => false,
        _ => panic!("ethtool -k {dev}: tx-checksumming: {line}"),
    }
}

/// Off, off again, on, on again: each read through the ioctl and through `ethtool -k`.
fn round_trip(ns: &Netns, dev: &str) {
    let start = ns.in_thread(|| tx_checksum(dev)).expect("reading");
    assert_eq!(
        start,
        ethtool_k(ns, dev),
        "{dev}: the ioctl and ethtool -k disagree"
    );

    let changed = ns.in_thread(|| set_tx_checksum(dev, false)).expect("off");
    assert_eq!(changed, start, "{dev}: off changes it only if it was on");
    assert!(!ns.in_thread(|| tx_checksum(dev)).expect("reading"), "{dev}");
    assert!(!ethtool_k(ns, dev), "{dev}: ethtool -k still says on");
    assert!(
        !ns.in_thread(|| set_tx_checksum(dev, false)).expect("off again"),
        "{dev}: off twice changed something"
    );

    assert!(ns.in_thread(|| set_tx_checksum(dev, true)).expect("on"), "{dev}");
    assert!(ns.in_thread(|| tx_checksum(dev)).expect("reading"), "{dev}");
    assert!(ethtool_k(ns, dev), "{dev}: ethtool -k still says off");
    assert!(
        !ns.in_thread(|| set_tx_checksum(dev, true)).expect("on again"),
        "{dev}: on twice changed something"
    );
}

#[test]
fn vxlan_tx_checksum_goes_off_and_stays_off() {
    let ns = Netns::new("etv");
    // The local address sits on a veth end, not a dummy: kernels built without modules (this
    // lab's) may have no dummy driver, and any link can hold the address.
    ns.add_veth("und0", "und1");
    ns.ok(&["ip", "addr", "add", "192.168.77.1/24", "dev", "und0"]);
    ns.ok(&["ip", "link", "set", "und0", "up"]);
    ns.ok(&[
        "ip",
        "link",
        "add",
        "vxt0",
        "type",
        "vxlan",
        "id",
        "42",
        "dstport",
        "4789",
        "local",
        "192.168.77.1",
        "nolearning",
    ]);
    round_trip(&ns, "vxt0");
    // Up, as the daemon's device is: the setting holds on a running link too.
    ns.ok(&["ip", "link", "set", "vxt0", "up"]);
    round_trip(&ns, "vxt0");
    // What the daemon does: off, and a later reconcile finds nothing to do.
    assert!(ns.in_thread(|| set_tx_checksum("vxt0", false)).expect("off"));
    assert!(!ns
        .in_thread(|| set_tx_checksum("vxt0", false))
        .expect("reconcile"));
    assert!(!ethtool_k(&ns, "vxt0"));
}

#[test]
fn veth_ends_are_set_independently() {
    let ns = Netns::new("etve");
    ns.add_veth("vea0", "veb0");
    round_trip(&ns, "vea0");
    round_trip(&ns, "veb0");
    assert!(ns.in_thread(|| set_tx_checksum("vea0", false)).expect("off"));
    assert!(!ethtool_k(&ns, "vea0"));
    assert!(ethtool_k(&ns, "veb0"), "turning one end off touched its peer");
    assert!(ns.in_thread(|| tx_checksum("veb0")).expect("reading"));
}

#[test]
fn missing_and_invalid_links_are_errors_not_panics() {
    let ns = Netns::new("etno");
    for e in [
        ns.in_thread(|| tx_checksum("nosuch0")).expect_err("read"),
        ns.in_thread(|| set_tx_checksum("nosuch0", false))
            .expect_err("set"),
    ] {
        assert_eq!(e.raw_os_error(), Some(nix::libc::ENODEV), "{e}");
    }
    // Loopback's checksumming is fixed: the driver says no, and nothing changed.
    let e = ns
        .in_thread(|| set_tx_checksum("lo", false))
        .expect_err("lo is fixed");
    assert_eq!(e.raw_os_error(), Some(nix::libc::EOPNOTSUPP), "{e}");
    assert!(ns.in_thread(|| tx_checksum("lo")).expect("reading lo"));
    // `lo` exists in every namespace, so a wrong name must not fall back to it.
    let e = ns
        .in_thread(|| set_tx_checksum("lo\0", false))
        .expect_err("NUL in the name");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    let e = ns
        .in_thread(|| tx_checksum("sixteen-bytes-xx"))
        .expect_err("too long");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
}
