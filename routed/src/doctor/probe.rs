//! ICMP echoes to the peers' gateways, of either family: a few echoes per gateway within
//! [`BUDGET`], [`PARALLEL`] gateways at a time, each on a socket of its own connected to its
//! gateway (so that the kernel hands it only that gateway's answers). An unprivileged ICMP socket
//! where the node allows one (`net.ipv4.ping_group_range`, for both families), else a raw one
//! (root).

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long one peer is given, from its first echo.
pub const BUDGET: Duration = Duration::from_secs(1);
/// Echoes per peer, this far apart.
const ECHOES: usize = 3;
const GAP: Duration = Duration::from_millis(250);
/// Peers probed at once.
pub const PARALLEL: usize = 64;
const ECHO_REQUEST: u8 = 8;
const ECHO_REPLY: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;

/// What one peer answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub sent: u32,
    pub received: u32,
    pub rtts: Vec<Duration>,
}

impl Outcome {
    pub fn loss_percent(&self) -> u32 {
        (self.sent - self.received.min(self.sent)) * 100 / self.sent.max(1)
    }

    /// `min/avg/max 0.041/0.052/0.070 ms`, or `-` without answers.
    pub fn rtt_text(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let (Some(min), Some(max)) = (self.rtts.iter().min(), self.rtts.iter().max()) else {
            return "-".into();
        };
        let avg = self.rtts.iter().map(|d| ms(*d)).sum::<f64>() / self.rtts.len() as f64;
        format!("min/avg/max {:.3}/{avg:.3}/{:.3} ms", ms(*min), ms(*max))
    }
}

/// Probes every target; one result per target, in order. Takes about [`BUDGET`] per
/// [`PARALLEL`] targets.
pub fn echo_all(targets: &[IpAddr]) -> Vec<Result<Outcome, String>> {
    let results: Vec<Mutex<Option<Result<Outcome, String>>>> =
        targets.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    // Identifiers differ per target and per run, so that raw sockets, which see every echo
    // reply of the node, keep to their own.
    let base = (std::process::id() as u16).wrapping_mul(64);
    let work = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(target) = targets.get(i) else { break };
        let r = echo(*target, base.wrapping_add(i as u16));
        if let Ok(mut slot) = results[i].lock() {
            *slot = Some(r);
        }
    };
    std::thread::scope(|s| {
        let mut spawned = 0;
        for _ in 0..PARALLEL.min(targets.len()) {
            if std::thread::Builder::new().spawn_scoped(s, work).is_err() {
                break;
            }
            spawned += 1;
        }
        // Without a thread of its own, the probe still runs, one peer at a time.
        if spawned == 0 {
            work();
        }
    });
    results
        .into_iter()
        .map(|m| {
            m.into_inner()
                .ok()
                .flatten()
                .unwrap_or_else(|| Err("not probed".into()))
        })
        .collect()
}

/// An ICMP socket of `v6`'s family: unprivileged where allowed, else raw. Whether it is raw.
fn open(v6: bool) -> Result<(Socket, bool), String> {
    let (domain, protocol) = if v6 {
        (Domain::IPV6, Protocol::ICMPV6)
    } else {
        (Domain::IPV4, Protocol::ICMPV4)
    };
    match Socket::new(domain, Type::DGRAM, Some(protocol)) {
        Ok(s) => Ok((s, false)),
        Err(_) => Socket::new(domain, Type::RAW, Some(protocol))
            .map(|s| (s, true))
            .map_err(|e| {
                format!("an ICMP socket: {e} (ping_group_range forbids an unprivileged one; run as root)")
            }),
    }
}

/// The internet checksum of `b`.
fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An echo request. ICMPv6's checksum covers the IPv6 addresses: the kernel puts it in.
fn request(ident: u16, seq: u16, v6: bool) -> Vec<u8> {
    let mut p = vec![if v6 { ECHO_REQUEST_V6 } else { ECHO_REQUEST }, 0, 0, 0];
    p.extend_from_slice(&ident.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"cbrnet-doctor...");
    if !v6 {
        let c = checksum(&p);
        p[2..4].copy_from_slice(&c.to_be_bytes());
    }
    p
}

/// The sequence number of an echo reply of ours in `b`. A raw IPv4 socket's answers come with
/// their IP header; an IPv6 one's never do.
fn reply_seq(b: &[u8], raw: bool, ident: u16, v6: bool) -> Option<u16> {
    let icmp = if raw && !v6 {
        let ihl = usize::from(b.first()? & 0x0f) * 4;
        b.get(ihl..)?
    } else {
        b
    };
    if *icmp.first()? != if v6 { ECHO_REPLY_V6 } else { ECHO_REPLY } {
        return None;
    }
    let id = u16::from_be_bytes([*icmp.get(4)?, *icmp.get(5)?]);
    // An unprivileged socket's identifier is the kernel's (its port), which also filters.
    if raw && id != ident {
        return None;
    }
    Some(u16::from_be_bytes([*icmp.get(6)?, *icmp.get(7)?]))
}

/// Echoes to one target within [`BUDGET`].
pub fn echo(target: IpAddr, ident: u16) -> Result<Outcome, String> {
    let v6 = target.is_ipv6();
    let (mut sock, raw) = open(v6)?;
    sock.connect(&SockAddr::from(SocketAddr::new(target, 0)))
        .map_err(|e| format!("no way to {target}: {e}"))?;
    let start = Instant::now();
    let deadline = start + BUDGET;
    let mut sent: Vec<Instant> = Vec::with_capacity(ECHOES);
    let mut rtts: Vec<Option<Duration>> = vec![None; ECHOES];
    let mut buf = [0u8; 1500];
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let due = start + GAP * sent.len() as u32;
        if sent.len() < ECHOES && now >= due {
            let seq = sent.len() as u16;
            if let Err(e) = sock.send(&request(ident, seq, v6)) {
                // An unreachable next hop is an answer of sorts: the echo is lost.
                if sent.is_empty() && e.raw_os_error() != Some(nix::libc::EHOSTUNREACH) {
                    return Err(format!("sending to {target}: {e}"));
                }
            }
            sent.push(now);
            continue;
        }
        if sent.len() == ECHOES && rtts.iter().all(Option::is_some) {
            break;
        }
        let wake = if sent.len() < ECHOES {
            due.min(deadline)
        } else {
            deadline
        };
        let wait = wake.saturating_duration_since(now).max(Duration::from_millis(1));
        sock.set_read_timeout(Some(wait))
            .map_err(|e| format!("a timeout on the ICMP socket: {e}"))?;
        // Timeouts, and errors an ICMP error brings back (unreachable): the echo is lost.
        if let Ok(n) = sock.read(&mut buf) {
            let got = Instant::now();
            if let Some(seq) = reply_seq(&buf[..n], raw, ident, v6) {
                let i = usize::from(seq);
                if let (Some(at), Some(slot)) = (sent.get(i), rtts.get_mut(i)) {
                    slot.get_or_insert(got.saturating_duration_since(*at));
                }
            }
        }
    }
    let rtts: Vec<Duration> = rtts.into_iter().flatten().collect();
    Ok(Outcome {
        sent: sent.len() as u32,
        received: rtts.len() as u32,
        rtts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_a_valid_checksum_and_replies_are_matched() {
        let p = request(0x1234, 2, false);
        assert_eq!(checksum(&p), 0, "a packet with its checksum sums to zero");
        assert_eq!(&p[4..8], &[0x12, 0x34, 0, 2]);
        // a raw socket's reply: a 20-byte IP header, then the ICMP echo reply
        let mut r = vec![0x45u8];
        r.resize(20, 0);
        r.extend_from_slice(&[ECHO_REPLY, 0, 0, 0, 0x12, 0x34, 0, 2]);
        assert_eq!(reply_seq(&r, true, 0x1234, false), Some(2));
        assert_eq!(reply_seq(&r, true, 0x9999, false), None, "another prober's");
        assert_eq!(reply_seq(&r[20..], false, 0, false), Some(2));
        assert_eq!(reply_seq(&p, false, 0, false), None, "a request is no reply");
        assert_eq!(reply_seq(&[0x4f], true, 0, false), None, "garbage");
        // ICMPv6: other types; a raw socket's answers without their IP header
        let p6 = request(0x1234, 1, true);
        assert_eq!(p6[0], ECHO_REQUEST_V6);
        assert_eq!(&p6[2..4], &[0, 0], "the kernel's to fill");
        assert_eq!(reply_seq(&p6, true, 0x1234, true), None, "a request is no reply");
        let r6 = [ECHO_REPLY_V6, 0, 0, 0, 0x12, 0x34, 0, 1];
        assert_eq!(reply_seq(&r6, true, 0x1234, true), Some(1));
        assert_eq!(reply_seq(&r6, true, 0x4321, true), None, "another prober's");
        assert_eq!(reply_seq(&r6, false, 0, true), Some(1));
        assert_eq!(reply_seq(&r, true, 0x1234, true), None, "an IPv4 reply");
        let o = Outcome {
            sent: 3,
            received: 2,
            rtts: vec![Duration::from_micros(100), Duration::from_micros(300)],
        };
        assert_eq!(o.loss_percent(), 33);
        assert_eq!(o.rtt_text(), "min/avg/max 0.100/0.200/0.300 ms");
    }
}
