//! The node's own checks: the daemon, the lease, the subnet file, the bridge, forwarding,
//! masquerading, the VXLAN device, MTUs.

use super::{human, Check, Facts};
use crate::backend::{routes, vxlan};
use crate::instance;
use crate::setup::MASQ_TABLE;
use cbrnet_bridge::{bridge, masq, netlink};
use cbrnet_ipam::cluster::record::unix_now;
use ipnetwork::IpNetwork;
use netlink_packet_route::link::InfoKind;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

const RESTART: &str = "systemctl restart cbrnet-routed (journalctl -u cbrnet-routed says what it did)";
/// How long /healthz may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(1);

/// Values as the flags and `ip` list them: `a, b`.
fn list<T: std::fmt::Display>(items: &[T]) -> String {
    items.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

/// The daemon: running (its lock), `/healthz`, and the flags it runs with against ours.
pub fn daemon(f: &Facts<'_>, lock: &Path) -> Vec<Check> {
    let runs = match &f.locked {
        Err(e) => return vec![Check::unknown("daemon", e)],
        Ok(Some(true)) => {
            let pid = instance::lock_holder(lock)
                .or(f.settings.as_ref().map(|s| s.pid))
                .map_or(String::new(), |p| format!(", pid {p}"));
            Check::ok("daemon", format!("running (holds {}{pid})", lock.display()))
        }
        Ok(held) => {
            let why = match held {
                None => "no daemon ever ran with this --subnet-file",
                Some(_) => "nobody holds its lock",
            };
            return vec![Check::fail(
                "daemon",
                format!("not running: {why} ({})", lock.display()),
                "systemctl start cbrnet-routed (if it runs with another --subnet-file, give doctor its flags)",
            )];
        }
    };
    let mut out = vec![runs];
    // The settings are trusted if the daemon that wrote them holds the lock now.
    let holder = instance::lock_holder(lock);
    let settings = f.settings.as_ref().filter(|s| holder.is_none_or(|h| h == s.pid));
    let addr = settings
        .and_then(|s| s.metrics_addr.parse::<SocketAddr>().ok())
        .unwrap_or(f.cfg.args.metrics_addr);
    out.push(healthz(addr));
    out.push(match (settings, &f.settings) {
        (Some(s), _) => flags(f, s),
        (None, Some(s)) => Check::warn(
            "daemon.flags",
            format!(
                "not compared: the settings next to the lock are pid {}'s, not the lock holder's",
                s.pid
            ),
            RESTART,
        ),
        (None, None) => Check::warn(
            "daemon.flags",
            format!(
                "not compared: the daemon published no settings ({}; a cbrnet-routed older than doctor?)",
                instance::settings_path(&f.cfg.args.subnet_file).display()
            ),
            RESTART,
        ),
    });
    out
}

/// GET /healthz over HTTP/1.0 on the metrics address (an unspecified address is reached on the
/// loopback of its family).
fn healthz(mut addr: SocketAddr) -> Check {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            SocketAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        });
    }
    let get = || -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)?;
        s.set_read_timeout(Some(HTTP_TIMEOUT))?;
        s.set_write_timeout(Some(HTTP_TIMEOUT))?;
        s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n")?;
        let mut resp = Vec::new();
        s.take(64 * 1024).read_to_end(&mut resp)?;
        Ok(String::from_utf8_lossy(&resp).into_owned())
    };
    let resp = match get() {
        Ok(r) => r,
        Err(e) => {
            return Check::warn(
                "daemon.health",
                format!("not checked: /healthz on {addr} does not answer: {e}"),
                "is the daemon stuck, or is its --metrics-addr elsewhere? journalctl -u cbrnet-routed",
            )
        }
    };
    let status = resp.split_whitespace().nth(1).unwrap_or("");
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").trim();
    match status {
        "200" => Check::ok("daemon.health", format!("/healthz on {addr}: {body}")),
        "503" => Check::fail(
            "daemon.health",
            format!("/healthz on {addr}: {body}"),
            "the reason above; journalctl -u cbrnet-routed has the details",
        ),
        _ => Check::warn(
            "daemon.health",
            format!(
                "/healthz on {addr} answered {:?}: not cbrnet-routed's metrics server?",
                resp.lines().next().unwrap_or("")
            ),
            "give doctor the daemon's --metrics-addr",
        ),
    }
}

/// The daemon's flags against this command's.
fn flags(f: &Facts<'_>, theirs: &instance::Settings) -> Check {
    let ours = f.cfg.settings();
    let diff: Vec<String> = theirs
        .compared()
        .into_iter()
        .zip(ours.compared())
        .filter(|((_, a), (_, b))| a != b)
        .map(|((flag, a), (_, b))| format!("{flag}: the daemon runs with {a}, this command has {b}"))
        .collect();
    if !diff.is_empty() {
        return Check::fail(
            "daemon.flags",
            diff.join("; "),
            "give doctor the daemon's environment (set -a; . /etc/default/cbrnet-routed), or fix that \
             file and restart the daemon",
        );
    }
    if theirs.version != ours.version {
        return Check::warn(
            "daemon.flags",
            format!(
                "same flags; the daemon is cbrnet-routed {}, this command {}",
                theirs.version, ours.version
            ),
            "restart the daemon after an upgrade: systemctl restart cbrnet-routed",
        );
    }
    Check::ok(
        "daemon.flags",
        format!(
            "the same as this command's (--cluster-cidr {}, --backend {}, --store {})",
            ours.cluster_cidr, ours.backend, ours.store
        ),
    )
}

/// The lease: held in the store by this node, by this daemon instance, time left.
pub fn lease(f: &Facts<'_>) -> Check {
    let name = &f.cfg.args.node_name;
    let listing = match &f.listing {
        Ok(l) => l,
        Err(e) => {
            return Check::warn(
                "lease",
                format!("not checked: {e}"),
                "check --store and the etcd flags (cbrnet-routed leases shows what the store holds)",
            )
        }
    };
    let now = unix_now();
    let mine: Vec<_> = listing
        .leases
        .iter()
        .filter(|v| v.lease.node_name == *name)
        .collect();
    let Some(l) = f.own_lease() else {
        return Check::fail(
            "lease",
            format!("node {name} holds no lease in the store"),
            "start the daemon (it acquires one): systemctl start cbrnet-routed",
        );
    };
    if l.expired(now) {
        return Check::fail(
            "lease",
            format!(
                "{} of node {name} expired {} ago",
                l.subnet,
                human(now - l.expires)
            ),
            "the daemon renews it: is it running, and does it reach the store (daemon.health)?",
        );
    }
    if let Err(why) = f.cfg.leases.check(l) {
        return Check::fail(
            "lease",
            format!("{} of node {name} does not fit this cluster: {why}", l.subnet),
            "give doctor the daemon's --cluster-cidr/--subnet-len, or release the lease and restart the daemon",
        );
    }
    let me = instance::holder();
    if let Some(h) = l.holder.as_deref().filter(|h| *h != me) {
        return Check::fail(
            "lease",
            format!(
                "{} of node {name} is held by another daemon instance ({h}; this one is {me})",
                l.subnet
            ),
            "two machines or namespaces run under one --node-name: give one of them another name",
        );
    }
    let subnets = list(&l.subnets());
    let left = l.expires - now;
    let ttl = f.cfg.args.lease_ttl.as_secs();
    let every = f.cfg.leases.renew_every().as_secs();
    // The daemon's renewal gives a record of one family the other.
    if let Some(v6) = f
        .cfg
        .cluster_cidr_of(false)
        .filter(|_| l.subnet.is_ipv4() && l.ipv6_subnet.is_none())
    {
        return Check::fail(
            "lease",
            format!(
                "{subnets} of node {name} has no IPv6 subnet, though --cluster-cidr has {v6}: its pods get no IPv6 address"
            ),
            format!(
                "the daemon adds one at its next renewal (every {}); if it does not, journalctl -u cbrnet-routed says why (an IPv6 CIDR with no room left?)",
                human(every)
            ),
        );
    }
    // Peers route to the node IPs the lease publishes.
    let published: Vec<IpAddr> = std::iter::once(l.node_ip)
        .chain(l.node_ip_v6.map(IpAddr::V6))
        .collect();
    if published != f.cfg.node_ips() {
        return Check::fail(
            "lease",
            format!(
                "{subnets} of node {name} publishes node IP {}, not --node-ip {}",
                list(&published),
                list(&f.cfg.node_ips())
            ),
            format!("the daemon writes its node IPs at start: {RESTART}"),
        );
    }
    let found = format!(
        "{subnets} held by node {name} ({}), {} left",
        list(&f.cfg.node_ips()),
        human(left)
    );
    if mine.len() > 1 {
        return Check::warn(
            "lease",
            format!("{found}; and {} more leases under this name", mine.len() - 1),
            "cbrnet-routed leases; release what this node no longer holds",
        );
    }
    // Renewed every `every`: two renewals missed is news.
    if left + 2 * every < ttl && f.cfg.args.lease_ttl > Duration::ZERO {
        return Check::warn(
            "lease",
            format!(
                "{found}: not renewed for {} (renewed every {})",
                human(ttl - left),
                human(every)
            ),
            "is the daemon running and does it reach the store? journalctl -u cbrnet-routed",
        );
    }
    Check::ok("lease", found)
}

/// The subnet file: there, valid, and naming the held subnet and this cluster.
pub fn subnet_file(f: &Facts<'_>) -> Check {
    let path = f.cfg.args.subnet_file.display();
    let file = match &f.file {
        Ok(file) => file,
        Err(e) => {
            return Check::fail(
                "subnet-file",
                format!("{e}: pods cannot start (ADD fails with code 11, try again later)"),
                format!("the daemon writes {path} once it holds a lease: {RESTART}"),
            )
        }
    };
    let show = |s: Option<IpNetwork>| s.map_or("none".into(), |s| s.to_string());
    let mut wrong = Vec::new();
    match f.own_lease() {
        Some(l) => {
            let want = crate::setup::subnet_file(f.cfg, l, file.mtu);
            if want.subnet != file.subnet {
                wrong.push(format!("subnet {}, the lease {}", file.subnet, want.subnet));
            }
            if want.ipv6_subnet != file.ipv6_subnet {
                wrong.push(format!(
                    "ipv6Subnet {}, the lease {}",
                    show(file.ipv6_subnet),
                    show(want.ipv6_subnet)
                ));
            }
        }
        None => {
            if let Some(v6) = f
                .cfg
                .cluster_cidr_of(false)
                .filter(|_| file.subnet.is_ipv4() && file.ipv6_subnet.is_none())
            {
                wrong.push(format!("no ipv6Subnet, though --cluster-cidr has {v6}"));
            }
        }
    }
    // Each family's gateway and cluster CIDR, as the daemon writes them.
    let families = [
        (
            "gateway",
            "clusterCIDR",
            Some(file.subnet),
            Some(file.gateway),
            file.cluster_cidr,
        ),
        (
            "ipv6Gateway",
            "ipv6ClusterCIDR",
            file.ipv6_subnet,
            file.ipv6_gateway,
            file.ipv6_cluster_cidr,
        ),
    ];
    for (gw_key, cidr_key, subnet, gw, cidr) in families {
        let Some(subnet) = subnet else { continue };
        let want_gw = cbrnet_ipam::cluster::record::gateway_of(subnet);
        if gw != Some(want_gw) {
            let gw = gw.map_or("none".into(), |g| g.to_string());
            wrong.push(format!("{gw_key} {gw}, not {want_gw}"));
        }
        let want_cidr = f.cfg.cluster_cidr_of(subnet.is_ipv4());
        if cidr != want_cidr {
            wrong.push(format!(
                "{cidr_key} {}, not --cluster-cidr {}",
                show(cidr),
                show(want_cidr)
            ));
        }
    }
    let mtu = file.mtu.map_or("none".into(), |m| m.to_string());
    let v6 = match (file.ipv6_subnet, file.ipv6_gateway) {
        (Some(s), Some(g)) => format!(", {s} gateway {g}"),
        _ => String::new(),
    };
    if wrong.is_empty() {
        Check::ok(
            "subnet-file",
            format!("{path}: {} gateway {}{v6} mtu {mtu}", file.subnet, file.gateway),
        )
    } else {
        Check::fail(
            "subnet-file",
            format!("{path}: {}", wrong.join("; ")),
            format!("the daemon rewrites it at its next resync; if it does not: {RESTART}"),
        )
    }
}

/// The bridge: a bridge, up, with the held subnet's gateway and no other address of the cluster.
pub async fn bridge(f: &Facts<'_>) -> Check {
    let name = &f.cfg.args.bridge;
    let nl = match &f.nl {
        Ok(nl) => nl,
        Err(e) => return Check::unknown("bridge", e),
    };
    let l = match nl.link(name).await {
        Ok(Some(l)) => l,
        Ok(None) => {
            return Check::fail(
                "bridge",
                format!("{name} does not exist"),
                format!("the daemon makes it at once; if it does not: {RESTART}"),
            )
        }
        Err(e) => return Check::unknown("bridge", e),
    };
    if netlink::kind(&l) != Some(&InfoKind::Bridge) {
        let kind = netlink::kind(&l).map_or("unknown".into(), |k| format!("{k:?}").to_lowercase());
        return Check::fail(
            "bridge",
            format!("{name} is a {kind} link, not a bridge"),
            format!("remove it (ip link del {name}) and let the daemon make the bridge, or give --bridge another name"),
        );
    }
    let subnets = f.subnets();
    if subnets.is_empty() {
        return Check::warn(
            "bridge",
            format!("{name} is a bridge; its gateway not checked: the node holds no subnet"),
            "see lease and subnet-file",
        );
    }
    let want = crate::setup::gateways(&subnets);
    let have = match bridge::addresses(nl, l.header.index).await {
        Ok(a) => a,
        Err(e) => return Check::unknown("bridge", e),
    };
    let mut wrong = Vec::new();
    let mut fixes = Vec::new();
    if !netlink::is_up(&l) {
        wrong.push("down".to_string());
        fixes.push(format!("ip link set {name} up"));
    }
    for w in want.iter().filter(|w| !have.contains(w)) {
        wrong.push(format!("no gateway {w}"));
        // As the daemon adds it: the subnet is the node's alone, DAD only delays the pods.
        let nodad = if w.is_ipv6() { " nodad" } else { "" };
        fixes.push(format!("ip addr add {w} dev {name}{nodad}"));
    }
    for a in have.iter().filter(|a| crate::setup::is_stale(f.cfg, &want, a)) {
        wrong.push(format!("stale address {a} (a subnet this node does not hold)"));
        fixes.push(format!("ip addr del {a} dev {name}"));
    }
    // The daemon adds the IPv6 gateway without duplicate address detection: one still in it (or
    // failed) was added otherwise, and the pods' IPv6 traffic waits on it (or has no gateway).
    let unusable = match bridge::unusable_addresses(nl, l.header.index).await {
        Ok(a) => a,
        Err(e) => return Check::unknown("bridge", e),
    };
    for w in want.iter().filter(|w| unusable.contains(w)) {
        wrong.push(format!(
            "gateway {w} is tentative or failed duplicate address detection"
        ));
        fixes.push(format!(
            "ip addr del {w} dev {name}; ip addr add {w} dev {name} nodad"
        ));
    }
    if wrong.is_empty() {
        Check::ok("bridge", format!("{name}: bridge, up, gateway {}", list(&want)))
    } else {
        Check::fail(
            "bridge",
            format!("{name}: {}", wrong.join("; ")),
            format!(
                "the daemon repairs it at once; if it does not, restart it, or by hand: {}",
                fixes.join("; ")
            ),
        )
    }
}

/// Forwarding on for each family of the cluster, as the daemon turns it on; with IPv6, the
/// underlay links still taking router advertisements.
pub async fn forwarding(f: &Facts<'_>) -> Vec<Check> {
    let mut out = Vec::new();
    if f.cfg.cluster_cidr_of(true).is_some() {
        out.push(sysctl_is_on(
            "forwarding.ipv4",
            "/proc/sys/net/ipv4/ip_forward",
            "net.ipv4.ip_forward",
        ));
    }
    if f.cfg.cluster_cidr_of(false).is_some() {
        let c = sysctl_is_on(
            "forwarding.ipv6",
            "/proc/sys/net/ipv6/conf/all/forwarding",
            "net.ipv6.conf.all.forwarding",
        );
        out.push(match (&f.nl, &f.links) {
            (Ok(nl), Ok(links)) if c.status == super::Status::Ok => {
                let names = routes::link_names(&nl.handle, links, &f.cfg.node_ips()).await;
                router_advertisements(c, &names)
            }
            _ => c,
        });
    }
    out
}

fn sysctl_is_on(check: &str, path: &str, sysctl: &str) -> Check {
    match std::fs::read(path) {
        Ok(v) if v.first() == Some(&b'1') => Check::ok(check, format!("{sysctl} = 1")),
        Ok(v) => Check::fail(
            check,
            format!(
                "{sysctl} = {}: pods cannot reach other nodes",
                String::from_utf8_lossy(&v).trim()
            ),
            format!("sysctl -w {sysctl}=1 (the daemon sets it at its next resync)"),
        ),
        Err(e) => Check::unknown(check, format!("reading {path}: {e}")),
    }
}

/// `ok` (IPv6 forwarding on) with each underlay link's `accept_ra`: a forwarding link ignores
/// router advertisements at 1, which the daemon turns into 2.
fn router_advertisements(ok: Check, links: &[String]) -> Check {
    let mut found = ok.found;
    let mut ignored = Vec::new();
    for name in links {
        let Ok(v) = std::fs::read(format!("/proc/sys/net/ipv6/conf/{name}/accept_ra")) else {
            continue;
        };
        let v = String::from_utf8_lossy(&v).trim().to_string();
        found += &format!("; accept_ra of {name} = {v}");
        if v == "1" {
            ignored.push(name);
        }
    }
    match ignored.first() {
        None => Check::ok(ok.check, found),
        Some(name) => Check::warn(
            ok.check,
            format!("{found}: with forwarding on, router advertisements on {name} are ignored"),
            format!("sysctl -w net.ipv6.conf.{name}.accept_ra=2 (the daemon sets it at its next resync)"),
        ),
    }
}

/// The masquerade table of `--ip-masq`.
pub fn masquerade(f: &Facts<'_>) -> Check {
    if !f.cfg.args.ip_masq {
        return Check::ok("masquerade", "off (no --ip-masq)");
    }
    let subnets = f.subnets();
    if subnets.is_empty() {
        return Check::warn(
            "masquerade",
            "not checked: the node holds no subnet",
            "see lease and subnet-file",
        );
    }
    let rules = crate::setup::masq_rules(f.cfg, &subnets);
    match masq::is_in_place(MASQ_TABLE, &rules) {
        Ok(true) => Check::ok(
            "masquerade",
            format!(
                "table inet {MASQ_TABLE}: {}",
                rules
                    .iter()
                    .map(|r| format!("{} masqueraded outside {}", r.subnet, r.cluster))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        ),
        Ok(false) => Check::fail(
            "masquerade",
            format!(
                "table inet {MASQ_TABLE} is missing or not exactly the rule of each of {}",
                list(&subnets)
            ),
            format!("the daemon replaces it at its next resync; to see it: nft list table inet {MASQ_TABLE}"),
        ),
        Err(e) => Check::unknown("masquerade", format!("listing nftables: {e}")),
    }
}

/// The underlay link (the one with the node IP): index, MTU.
async fn underlay(f: &Facts<'_>) -> Option<(u32, u32)> {
    let links = f.links.as_ref().ok()?;
    let nl = f.nl.as_ref().ok()?;
    let (_, index) = links.iter().find(|(n, _)| n.ip() == f.cfg.node_ip)?;
    let mut s = nl.handle.link().get().match_index(*index).execute();
    let l = futures::TryStreamExt::try_next(&mut s).await.ok()??;
    Some((*index, netlink::mtu(&l)?))
}

/// The VXLAN device's MTU the daemon gives it: the underlay's less the encapsulation.
fn vxlan_mtu(f: &Facts<'_>, underlay: u32) -> u32 {
    vxlan::device_mtu(underlay, f.cfg.node_ip, f.cfg.cluster_cidr_of(false).is_some())
}

/// The VXLAN device: ours, as the daemon makes it (or none, on host-gw).
pub async fn vxlan_device(f: &Facts<'_>) -> Check {
    let args = &f.cfg.args;
    let nl = match &f.nl {
        Ok(nl) => nl,
        Err(e) => return Check::unknown("vxlan.device", e),
    };
    let l = match nl.link(vxlan::DEVICE).await {
        Ok(l) => l,
        Err(e) => return Check::unknown("vxlan.device", e),
    };
    if !args.backend.uses_vxlan() {
        return match l {
            None => Check::ok("vxlan.device", "none (--backend host-gw)"),
            Some(l) => match vxlan::drift(&l, &spec(f, 0)) {
                Err(_) => Check::ok(
                    "vxlan.device",
                    format!("none of ours (--backend host-gw; {} is another's)", vxlan::DEVICE),
                ),
                Ok(_) => Check::warn(
                    "vxlan.device",
                    format!(
                        "{} of VNI {} is still there on --backend host-gw",
                        vxlan::DEVICE,
                        args.vxlan_vni
                    ),
                    format!(
                        "the daemon deletes it at its next resync; or: ip link del {}",
                        vxlan::DEVICE
                    ),
                ),
            },
        };
    }
    let Some(l) = l else {
        return Check::fail(
            "vxlan.device",
            format!(
                "{} does not exist: peers across networks are cut off",
                vxlan::DEVICE
            ),
            format!("the daemon makes it at once; if it does not: {RESTART}"),
        );
    };
    let Some((_, u)) = underlay(f).await else {
        return Check::warn(
            "vxlan.device",
            format!("not checked: --node-ip {} is on no link here", f.cfg.node_ip),
            "bring the node's address up, or give doctor the daemon's --node-ip",
        );
    };
    let spec = spec(f, vxlan_mtu(f, u));
    let drift = match vxlan::drift(&l, &spec) {
        Ok(mut d) => {
            d.extend(vxlan_offload(args.vxlan_tx_csum_offload));
            let have = match bridge::addresses(nl, l.header.index).await {
                Ok(a) => a,
                Err(e) => return Check::unknown("vxlan.device", e),
            };
            let (missing, stale) = vxlan::address_drift(&spec, &have);
            d.extend(missing.iter().map(|w| format!("address {w} missing")));
            d.extend(stale.iter().map(|a| format!("stale address {a}")));
            Ok(d)
        }
        e => e,
    };
    match drift {
        Err(why) => Check::fail(
            "vxlan.device",
            why.clone(),
            why.split(" (")
                .nth(1)
                .map_or("remove or rename it, or run --backend host-gw".into(), |s| {
                    s.trim_end_matches(')').to_string()
                }),
        ),
        Ok(d) if d.is_empty() => Check::ok(
            "vxlan.device",
            format!(
                "{}: VNI {}, port {}, local {}, MTU {}, TX checksum offload {}, up",
                vxlan::DEVICE,
                args.vxlan_vni,
                args.vxlan_port,
                f.cfg.node_ip,
                vxlan_mtu(f, u),
                on_off(args.vxlan_tx_csum_offload)
            ),
        ),
        Ok(d) => Check::fail(
            "vxlan.device",
            format!("{}: {}", vxlan::DEVICE, d.join("; ")),
            format!("the daemon puts it right at once; if it does not: {RESTART}"),
        ),
    }
}

fn on_off(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
}

/// The device's TX checksum offload against `--vxlan-tx-csum-offload`, in words if it differs.
fn vxlan_offload(want: bool) -> Option<String> {
    match cbrnet_bridge::ethtool::tx_checksum(vxlan::DEVICE) {
        Ok(on) if on == want => None,
        Ok(on) => Some(format!(
            "TX checksum offload {}, not --vxlan-tx-csum-offload {}",
            on_off(on),
            on_off(want)
        )),
        Err(e) => Some(format!("TX checksum offload unreadable: {e}")),
    }
}

fn spec(f: &Facts<'_>, mtu: u32) -> vxlan::Spec {
    let args = &f.cfg.args;
    vxlan::Spec {
        vni: args.vxlan_vni,
        port: args.vxlan_port,
        local: f.cfg.node_ip,
        mac: vxlan::vtep_mac(&args.node_name),
        mtu,
        // The network address of each subnet the node serves (the source of what the node
        // itself sends through the device), as the daemon gives it.
        addresses: f.subnets().iter().map(IpNetwork::network).collect(),
        cluster_cidrs: f.cfg.cluster_cidrs().collect(),
        tx_csum_offload: args.vxlan_tx_csum_offload,
    }
}

/// MTUs: the underlay, the VXLAN device, the subnet file and the pods' host ends agree.
pub async fn mtu(f: &Facts<'_>) -> Check {
    let args = &f.cfg.args;
    let nl = match &f.nl {
        Ok(nl) => nl,
        Err(e) => return Check::unknown("mtu", e),
    };
    let Some((_, u)) = underlay(f).await else {
        return Check::warn(
            "mtu",
            format!("not checked: --node-ip {} is on no link here", f.cfg.node_ip),
            "bring the node's address up, or give doctor the daemon's --node-ip",
        );
    };
    let mut found = vec![format!("underlay {u}")];
    let mut wrong = Vec::new();
    let vx = if args.backend.uses_vxlan() {
        let want = vxlan_mtu(f, u);
        match nl
            .link(vxlan::DEVICE)
            .await
            .ok()
            .flatten()
            .and_then(|l| netlink::mtu(&l))
        {
            Some(m) if m == want => found.push(format!("{} {m}", vxlan::DEVICE)),
            Some(m) => wrong.push(format!(
                "{} {m}, not {want} (underlay less {})",
                vxlan::DEVICE,
                vxlan::overhead(f.cfg.node_ip)
            )),
            None => {}
        }
        Some(want)
    } else {
        None
    };
    // The pods' MTU as the daemon publishes it.
    let pods_want = args.mtu.or(vx);
    if let Ok(file) = &f.file {
        if file.mtu == pods_want {
            found.push(format!(
                "subnet file {}",
                file.mtu.map_or("none (the bridge's)".into(), |m| m.to_string())
            ));
        } else {
            wrong.push(format!(
                "subnet file {}, not {}",
                file.mtu.map_or("none".into(), |m| m.to_string()),
                pods_want.map_or("none".into(), |m| m.to_string())
            ));
        }
    }
    if let (Some(m), Some(v)) = (args.mtu, vx) {
        if m > v {
            wrong.push(format!(
                "--mtu {m} is more than the VXLAN path carries ({v}): full-size packets to peers across networks are dropped"
            ));
        }
    }
    // The pods' host ends: ports of the bridge.
    let ports = match host_ends(f).await {
        Ok(p) => p,
        Err(e) => return Check::unknown("mtu", e),
    };
    let pods = pods_want.unwrap_or(1500);
    let odd: Vec<String> = ports
        .iter()
        .filter(|(_, m)| *m != pods)
        .map(|(n, m)| format!("{n} {m}"))
        .collect();
    if ports.is_empty() {
        found.push("no pods".into());
    } else if odd.is_empty() {
        found.push(format!("{} pod(s) {pods}", ports.len()));
    }
    if !wrong.is_empty() {
        return Check::fail(
            "mtu",
            format!("{}; {}", wrong.join("; "), found.join(", ")),
            format!(
                "the daemon follows the underlay at once; if it does not: {RESTART}; --mtu must fit the underlay less {} on vxlan/auto",
                vxlan::overhead(f.cfg.node_ip)
            ),
        );
    }
    if !odd.is_empty() {
        return Check::warn(
            "mtu",
            format!(
                "{}; {} of {} pods' host ends not at {pods}: {}",
                found.join(", "),
                odd.len(),
                ports.len(),
                super::some(&odd, 5)
            ),
            "pods started before the MTU changed keep their MTU: recreate them",
        );
    }
    Check::ok("mtu", found.join(", "))
}

/// The bridge's ports that are veths (the pods' host ends): name, MTU.
async fn host_ends(f: &Facts<'_>) -> Result<Vec<(String, u32)>, String> {
    let nl = f.nl.as_ref().map_err(String::clone)?;
    let Some(br) = nl.link(&f.cfg.args.bridge).await.map_err(|e| e.to_string())? else {
        return Ok(Vec::new());
    };
    let mut s = nl.handle.link().get().execute();
    let mut out = Vec::new();
    while let Some(l) = futures::TryStreamExt::try_next(&mut s)
        .await
        .map_err(|e| format!("listing links: {e}"))?
    {
        if netlink::controller(&l) == Some(br.header.index) && netlink::kind(&l) == Some(&InfoKind::Veth) {
            let name = l
                .attributes
                .iter()
                .find_map(|a| match a {
                    netlink_packet_route::link::LinkAttribute::IfName(n) => Some(n.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            out.push((name, netlink::mtu(&l).unwrap_or(0)));
        }
    }
    out.sort();
    Ok(out)
}
