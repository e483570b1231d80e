//! ADD: judge everything that can be judged without touching the node, reserve the addresses,
//! plan, apply the plan while recording what was done, and undo exactly that if any step fails.

use crate::config::Loaded;
use crate::error::{ErrorList, PluginError, Result};
use crate::ipam::{Ipam, Reservation};
use crate::netns::NetNs;
use crate::plan::{self, AddPlan};
use crate::{pod, veth};
use cbrnet_bridge::batch::{self, Batch, Sock, CHANGE, CREATE};
use cbrnet_bridge::error::{errno, EEXIST};
use cbrnet_bridge::{bridge, forwarding, masq, BridgeError, Nl};
use cni_spec::{CniResult, Env};
use futures::FutureExt;
use rtnetlink::packet_route::RouteNetlinkMessage;
use serde_json::Value;
use std::panic::AssertUnwindSafe;

/// What an ADD has done so far that its undo must take back, kept outside the steps so that the
/// undo runs whether a step failed or panicked. The bridge, its addresses, forwarding and the
/// masquerade table are shared by every pod and stay.
#[derive(Default)]
struct Done<'a> {
    /// The node's rtnetlink connection, opened only for what the batches do not do (making the
    /// bridge, telling why a port was refused, the undo).
    host: Option<Nl>,
    ipam: Option<Ipam<'a>>,
    reservation: Option<Reservation>,
    /// The host end of the veth pair this ADD created.
    veth: Option<String>,
}

/// The node's rtnetlink connection, opened on first use.
fn nl(slot: &mut Option<Nl>) -> Result<&Nl> {
    match slot {
        Some(nl) => Ok(nl),
        None => Ok(slot.insert(Nl::connect()?)),
    }
}

/// Lets tests stop the plugin (`CBRNET_TEST_STOP_AT`, so that it can be killed there) or make it
/// panic (`CBRNET_TEST_PANIC_AT`) at a named point of ADD.
fn test_point(name: &str) {
    if std::env::var_os("CBRNET_TEST_STOP_AT").is_some_and(|v| v == name) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
    }
    if std::env::var_os("CBRNET_TEST_PANIC_AT").is_some_and(|v| v == name) {
        panic!("injected panic at {name}");
    }
}

pub async fn add(l: &Loaded, env: &Env, stdin: &[u8]) -> Result<Value> {
    let mut done = Done::default();
    let out = AssertUnwindSafe(steps(l, env, stdin, &mut done))
        .catch_unwind()
        .await;
    let error = match out {
        Ok(Ok(result)) => return Ok(result),
        Ok(Err(e)) => e,
        Err(panic) => PluginError::Panic(crate::error::panic_message(&*panic)),
    };
    let mut undo = ErrorList::default();
    if let Some(name) = &done.veth {
        if let Some(host) = undo.keep(nl(&mut done.host)) {
            undo.keep(veth::delete(host, name).await);
        }
    }
    if let (Some(ipam), Some(r)) = (&done.ipam, &done.reservation) {
        ipam.undo(r, l, env, stdin, &mut undo);
    }
    if undo.is_empty() {
        return Err(error);
    }
    for e in &undo.0 {
        tracing::error!(container = %env.container_id, "undoing the failed ADD: {e}");
    }
    Err(PluginError::AddAndUndo {
        error: Box::new(error),
        undo,
    })
}

/// ADD's steps, each recorded in `done` as soon as it has changed something.
async fn steps<'a>(l: &'a Loaded, env: &Env, stdin: &[u8], done: &mut Done<'a>) -> Result<Value> {
    let prev = l
        .conf
        .base
        .prev_result
        .as_ref()
        .map(CniResult::from_value)
        .transpose()?;
    let home = NetNs::current()?;
    let pod_ns = NetNs::open_pod(&env.netns, &home)?;
    let ipam = done.ipam.insert(Ipam::new(l, env)?);
    let host_sock = Sock::open()?;

    let reservation = done.reservation.insert(ipam.add(l, env, stdin)?);
    test_point("reserved");
    let p = plan::plan(l, env, &reservation.granted)?;
    let result = apply(&p, &host_sock, &mut done.host, &pod_ns, &home, &mut done.veth).await?;
    Ok(match prev {
        Some(prev) => plan::chain(prev, result),
        None => result,
    }
    .to_value(l.version))
}

/// Carries out the plan: bridge, veth, pod side, masquerading. Records in `veth` the pair it made,
/// for the undo. The node's requests go out as one batch on `sock`, the pod's as another, then the
/// host end up as a third on `sock`; `host` is connected only if the bridge must be made or a port
/// was refused.
async fn apply(
    p: &AddPlan,
    sock: &Sock,
    host: &mut Option<Nl>,
    pod_ns: &NetNs,
    home: &NetNs,
    veth_made: &mut Option<String>,
) -> Result<CniResult> {
    let br = match bridge::found(&p.bridge)? {
        Some(br) => br,
        None => bridge::ensure(nl(host)?, &p.bridge).await?,
    };
    // The missing gateway addresses, the pair, and IPv6 address generation off on the host end in
    // one batch: the kernel takes a socket's requests in order, so the port exists before it is
    // set up.
    let mtu = p.veth.mtu.unwrap_or(br.mtu);
    let mut b = Batch::default();
    let mut gateways = 0;
    for (gw, subnet) in p
        .gateways
        .iter()
        .filter(|(gw, s)| !bridge::has_gateway(&br, *gw, *s))
    {
        let what = format!("adding {gw}/{} to {}", subnet.prefix(), br.name);
        b.push(
            what,
            RouteNetlinkMessage::NewAddress(bridge::address_message(&br, *gw, *subnet)),
            CREATE,
        );
        gateways += 1;
    }
    let end = &p.veth.host_name;
    b.push(
        format!("creating veth {end}"),
        veth::pair(&p.veth, mtu, &br, pod_ns.fd()),
        CREATE,
    );
    b.push(
        format!("turning off IPv6 link-local on {end}"),
        veth::no_link_local(end),
        CHANGE,
    );
    let mut answers = b.send(sock)?.into_iter();
    let mut changed = br.created;
    let mut gateway_error = None;
    for (what, a) in answers.by_ref().take(gateways) {
        match a {
            Ok(()) => changed = true,
            Err(e) if errno(&e) == Some(EEXIST) => {}
            Err(e) => gateway_error = gateway_error.or(Some(BridgeError::Netlink(what, e))),
        }
    }
    let mut next = || answers.next().expect("Batch::send answers every request pushed");
    let pair = veth::pair_answer(&p.veth, &br, next().1);
    let quiet = veth::no_link_local_answer(end, next().1);
    if pair.is_ok() {
        *veth_made = Some(p.veth.host_name.clone());
    }
    // A port refused by a link that is no bridge: say that, not what the kernel said.
    if let Err(e) = &pair {
        if matches!(e, PluginError::Netlink(..)) && !bridge::is_bridge(nl(host)?, &br.name).await? {
            return Err(BridgeError::NotABridge(br.name.clone()).into());
        }
    }
    if let Some(e) = gateway_error {
        return Err(e.into());
    }
    pair?;
    test_point("veth");
    quiet?;
    // Forwarding can only have been turned off with the bridge or its address gone: reading the
    // sysctl on every ADD costs more the more links the node has.
    if let (Some(v6), true) = (p.forwarding, changed) {
        forwarding::enable(v6)?;
    }
    let (pod, index) = pod::enter(pod_ns, home, &p.veth.pod_ifname)?;
    pod::configure(&pod, &p.veth, index, &p.ips, &p.routes)?;
    // The host end goes up last, with the pod end up and configured: the port then comes up with
    // its carrier at once, instead of coming up without it and getting it from the pod's
    // requests, and an ADD takes about 6% less time.
    let what = format!("setting {end} up");
    batch::request(sock, &what, veth::host_up(end, p.hairpin), CHANGE)?
        .map_err(PluginError::netlink(what))?;
    test_point("pod");
    if let Some(m) = &p.masq {
        masq::ensure(&m.table, &m.rules)?;
    }
    Ok(p.result(&br))
}
