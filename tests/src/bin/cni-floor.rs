//! `cni-floor`: the floor `cni-bench` measures `cbrnet` against. The same kernel work as a `cbrnet`
//! ADD or DEL (veth pair born with its pod end in the pod, the host end on the bridge and up,
//! hairpin, neither end with an IPv6 link-local address; in the pod: link up, address, default
//! route), done by the smallest process that can:
//! no runtime, no IPAM (the address comes as `CNI_ARGS=IP=a.b.c.d/len;GW=a.b.c.d`), hand-encoded
//! netlink in three writes as cbrnet makes them (the node's, the pod's, the host end up). A
//! benchmark tool, not a plugin.
//!
//! A dual-stack pod (`IP6=x::y/len;GW6=x::1` besides): also the IPv6 address (without duplicate
//! address detection) and an IPv6 default route, in the same pod write, and the pod end keeps its
//! IPv6 link-local address, as cbrnet gives a pod with an IPv6 address (`LL6=0` takes it away
//! too, to tell what it costs).

use std::fs::File;
use std::io::Read;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd};

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_SETLINK: u16 = 19;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const IFF_UP: u32 = 1;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IFA_F_NODAD: u8 = 2;

fn fail(msg: &str) -> ! {
    println!("{{\"cniVersion\":\"1.0.0\",\"code\":999,\"msg\":\"{msg}\"}}");
    std::process::exit(1);
}

/// A netlink message being built: header, fixed part, attributes (nested ones by offset).
struct Msg(Vec<u8>);

impl Msg {
    fn new(kind: u16, flags: u16, fixed: &[u8]) -> Msg {
        let mut b = vec![0u8; 16];
        b[4..6].copy_from_slice(&kind.to_ne_bytes());
        b[6..8].copy_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        b.extend_from_slice(fixed);
        Msg(b)
    }
    fn attr(&mut self, kind: u16, v: &[u8]) -> &mut Msg {
        let len = 4 + v.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(v);
        self.0.resize(self.0.len() + (4 - len % 4) % 4, 0);
        self
    }
    /// Opens a nested attribute; `close` with the offset it returns.
    fn open(&mut self, kind: u16) -> usize {
        let at = self.0.len();
        self.0.extend_from_slice(&[0, 0]);
        self.0.extend_from_slice(&kind.to_ne_bytes());
        at
    }
    fn close(&mut self, at: usize) {
        let len = (self.0.len() - at) as u16;
        self.0[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }
    /// Raw bytes inside the current nest (a fixed struct such as a peer's ifinfomsg).
    fn raw(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    fn done(mut self, seq: u32) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[0..4].copy_from_slice(&len.to_ne_bytes());
        self.0[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.0
    }
}

fn ifinfomsg(index: i32, flags: u32, change: u32) -> Vec<u8> {
    let mut b = vec![0u8; 16];
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b[8..12].copy_from_slice(&flags.to_ne_bytes());
    b[12..16].copy_from_slice(&change.to_ne_bytes());
    b
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// Sends every message in one write on `fd` and waits for each acknowledgement; the first error.
fn exchange(fd: i32, msgs: Vec<Vec<u8>>) -> Result<(), i32> {
    let batch: Vec<u8> = msgs.concat();
    // SAFETY: fd is a netlink socket from `netlink_socket`; the buffer outlives the call.
    let sent = unsafe { nix::libc::send(fd, batch.as_ptr().cast(), batch.len(), 0) };
    if sent < 0 {
        return Err(-1);
    }
    let mut acks = 0;
    let mut first = Ok(());
    let mut buf = [0u8; 8192];
    while acks < msgs.len() {
        // SAFETY: as above, with a buffer of the size given.
        let n = unsafe { nix::libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            return Err(-1);
        }
        let mut at = 0usize;
        while at + 16 <= n as usize {
            let len = u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap_or_default()) as usize;
            let kind = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().unwrap_or_default());
            if len < 16 {
                break;
            }
            if kind == 2 {
                acks += 1;
                let e = i32::from_ne_bytes(buf[at + 16..at + 20].try_into().unwrap_or_default());
                if e != 0 && first.is_ok() {
                    first = Err(-e);
                }
            }
            at += (len + 3) & !3;
        }
    }
    first
}

/// A NETLINK_ROUTE socket in the calling thread's network namespace.
fn netlink_socket() -> i32 {
    // SAFETY: plain socket(2); the result is checked.
    let fd = unsafe {
        nix::libc::socket(
            nix::libc::AF_NETLINK,
            nix::libc::SOCK_RAW | nix::libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        fail("socket");
    }
    fd
}

fn main() {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let cmd = var("CNI_COMMAND");
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);
    // Named like cbrnet's host ends, from the container ID.
    let host = format!("vf{:013x}", fnv(&var("CNI_CONTAINERID")) >> 12);
    let ifname = var("CNI_IFNAME");
    if cmd == "DEL" {
        let mut m = Msg::new(RTM_DELLINK, 0, &ifinfomsg(0, 0, 0));
        m.attr(3, &cstr(&host));
        // Gone already is fine.
        let _ = exchange(netlink_socket(), vec![m.done(1)]);
        return;
    }
    let args = var("CNI_ARGS");
    let get = |k: &str| {
        args.split(';')
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
            .unwrap_or_default()
            .to_string()
    };
    let ip_arg = get("IP");
    let (ip, len) = ip_arg.split_once('/').unwrap_or_else(|| fail("IP=a.b.c.d/len"));
    let ip: Ipv4Addr = ip.parse().unwrap_or_else(|_| fail("IP"));
    let len: u8 = len.parse().unwrap_or_else(|_| fail("len"));
    let gw: Ipv4Addr = get("GW").parse().unwrap_or_else(|_| fail("GW"));
    let ip6_arg = get("IP6");
    let v6: Option<(Ipv6Addr, u8, Ipv6Addr)> = (!ip6_arg.is_empty()).then(|| {
        let (ip, len) = ip6_arg.split_once('/').unwrap_or_else(|| fail("IP6=x::y/len"));
        (
            ip.parse().unwrap_or_else(|_| fail("IP6")),
            len.parse().unwrap_or_else(|_| fail("IP6 len")),
            get("GW6").parse().unwrap_or_else(|_| fail("GW6")),
        )
    });
    // cbrnet keeps the pod's IPv6 link-local address when the pod has an IPv6 address.
    let pod_link_local = v6.is_some() && get("LL6") != "0";
    let netns = File::open(var("CNI_NETNS")).unwrap_or_else(|_| fail("netns"));
    let bridge = nix::net::if_::if_nametoindex("cbr0").unwrap_or_else(|_| fail("bridge")) as i32;

    // Host: the pair (pod end born in the pod, host end on the bridge), no IPv6 link-local on the
    // host end; the host end goes up with hairpin after the pod side.
    let mut m = Msg::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &ifinfomsg(0, 0, 0));
    m.attr(3, &cstr(&host));
    m.attr(10, &bridge.to_ne_bytes());
    let linkinfo = m.open(18);
    m.attr(1, b"veth\0");
    let data = m.open(2);
    let peer = m.open(1);
    m.raw(&ifinfomsg(0, 0, 0));
    m.attr(3, &cstr(&ifname));
    m.attr(28, &netns.as_raw_fd().to_ne_bytes());
    m.close(peer);
    m.close(data);
    m.close(linkinfo);
    let pair = m.done(1);
    let quiet = no_link_local(0, &host).done(2);
    // The port up, and its hairpin flag, by name: IFLA_LINKINFO { slave kind "bridge", slave data
    // { IFLA_BRPORT_MODE = 1 } }.
    let mut m = Msg::new(RTM_NEWLINK, 0, &ifinfomsg(0, IFF_UP, IFF_UP));
    m.attr(3, &cstr(&host));
    let linkinfo = m.open(18);
    m.attr(4, b"bridge\0");
    let slave = m.open(5);
    m.attr(4, &[1]);
    m.close(slave);
    m.close(linkinfo);
    let hairpin = m.done(3);
    let host_sock = netlink_socket();
    if let Err(e) = exchange(host_sock, vec![pair, quiet]) {
        fail(&format!("host side: errno {e}"));
    }

    // Pod: no IPv6 link-local (unless kept), up, addresses, default routes, in one write.
    nix::sched::setns(netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap_or_else(|_| fail("setns"));
    let index = nix::net::if_::if_nametoindex(ifname.as_str()).unwrap_or_else(|_| fail("pod link")) as i32;
    let mut pod = Vec::new();
    if !pod_link_local {
        pod.push(no_link_local(index, &ifname).done(4));
    }
    pod.push(Msg::new(RTM_SETLINK, 0, &ifinfomsg(index, IFF_UP, IFF_UP)).done(5));
    pod.push(address(index, AF_INET, &ip.octets(), len, 0).done(6));
    if let Some((ip6, len6, _)) = v6 {
        pod.push(address(index, AF_INET6, &ip6.octets(), len6, IFA_F_NODAD).done(7));
    }
    pod.push(default_route(index, AF_INET, &gw.octets()).done(8));
    if let Some((_, _, gw6)) = v6 {
        pod.push(default_route(index, AF_INET6, &gw6.octets()).done(9));
    }
    if let Err(e) = exchange(netlink_socket(), pod) {
        fail(&format!("pod side: errno {e}"));
    }
    // The host end up last, on the socket opened in the node, with the pod end already up.
    if let Err(e) = exchange(host_sock, vec![hairpin]) {
        fail(&format!("host side: errno {e}"));
    }
    let ip6 = v6.map_or(String::new(), |(a, l, g)| {
        format!(",{{\"address\":\"{a}/{l}\",\"gateway\":\"{g}\"}}")
    });
    println!(
        "{{\"cniVersion\":\"1.0.0\",\"ips\":[{{\"address\":\"{ip}/{len}\",\"gateway\":\"{gw}\"}}{ip6}]}}"
    );
}

/// NEWADDR of `addr/len` (IFA_LOCAL and IFA_ADDRESS) on link `index`.
fn address(index: i32, family: u8, addr: &[u8], len: u8, flags: u8) -> Msg {
    // ifaddrmsg: family, prefixlen, flags, scope, index (u32).
    let mut ifaddr = vec![family, len, flags, 0];
    ifaddr.extend_from_slice(&(index as u32).to_ne_bytes());
    let mut m = Msg::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, &ifaddr);
    m.attr(2, addr);
    m.attr(1, addr);
    m
}

/// NEWROUTE of the default route via `gw` out of link `index`.
fn default_route(index: i32, family: u8, gw: &[u8]) -> Msg {
    // rtmsg: family, dst_len, src_len, tos, table (main), protocol (boot), scope (universe), type
    // (unicast), flags.
    let mut m = Msg::new(
        RTM_NEWROUTE,
        NLM_F_CREATE | NLM_F_EXCL,
        &[family, 0, 0, 0, 254, 3, 0, 1, 0, 0, 0, 0],
    );
    m.attr(5, gw);
    m.attr(4, &(index as u32).to_ne_bytes());
    m
}

/// SETLINK of a down link: IFLA_AF_SPEC { AF_INET6 { IFLA_INET6_ADDR_GEN_MODE = NONE } }, by index
/// or, with index 0, by name.
fn no_link_local(index: i32, name: &str) -> Msg {
    let mut m = Msg::new(RTM_SETLINK, 0, &ifinfomsg(index, 0, 0));
    if index == 0 {
        m.attr(3, &cstr(name));
    }
    let spec = m.open(26);
    let inet6 = m.open(10);
    m.attr(8, &[1]);
    m.close(inet6);
    m.close(spec);
    m
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}
