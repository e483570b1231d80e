//! Requests that go to the kernel together: built with the rtnetlink message types, written in
//! one `send` on a plain blocking netlink socket, and answered by sequence number. The kernel
//! takes a socket's requests in order, so a later request may depend on an earlier one (a port
//! exists before it is set up; a link is up before its routes). ADD's requests of each namespace
//! are one batch: one write and one read per answer, with no async machinery in between (the
//! rtnetlink connection writes one request per call).

use crate::error::{BridgeError, Result};
use rtnetlink::packet_core::{ErrorMessage, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket};

/// Flags of a request that creates something that must not exist yet.
pub const CREATE: u16 = NLM_F_CREATE | NLM_F_EXCL;
/// Flags of a request that changes something.
pub const CHANGE: u16 = 0;

/// A netlink message header's length.
pub const HEADER: usize = 16;
const NLMSG_ERROR: u16 = 2;

/// A netlink socket in the namespace it was opened in.
pub struct Sock(Socket);

impl Sock {
    /// Opens a socket in the calling thread's current namespace. No bind or connect: the kernel
    /// binds the socket on its first send, which goes to the kernel when no address is given.
    pub fn open() -> Result<Sock> {
        let s = Socket::new(NETLINK_ROUTE).map_err(BridgeError::io("opening a netlink socket"))?;
        Ok(Sock(s))
    }
}

pub fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Splits a receive buffer into (type, seq, payload) messages; stops at anything malformed.
pub fn messages(buf: &[u8]) -> Vec<(u16, u32, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while let (Some(len), Some(kind), Some(seq)) = (u32_at(buf, at), u16_at(buf, at + 4), u32_at(buf, at + 8))
    {
        let len = len as usize;
        if len < HEADER || at + len > buf.len() {
            break;
        }
        out.push((kind, seq, &buf[at + HEADER..at + len]));
        at += (len + 3) & !3;
    }
    out
}

/// Requests to send together, each with what it does (for its error).
#[derive(Default)]
pub struct Batch {
    buf: Vec<u8>,
    what: Vec<String>,
}

impl Batch {
    /// Adds a request; `flags` ([`CREATE`] or [`CHANGE`]) go with NLM_F_REQUEST and NLM_F_ACK.
    pub fn push(&mut self, what: impl Into<String>, msg: RouteNetlinkMessage, flags: u16) {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.what.len() as u32 + 1;
        let mut m = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        m.finalize();
        let at = self.buf.len();
        self.buf.resize(at + m.buffer_len(), 0);
        m.serialize(&mut self.buf[at..]);
        self.what.push(what.into());
    }

    /// Sends every request in one write and returns each one's answer, in the order pushed: the
    /// kernel's error as an `rtnetlink::Error`, so that callers judge it as any other.
    pub fn send(self, sock: &Sock) -> Result<Vec<(String, std::result::Result<(), rtnetlink::Error>)>> {
        let n = self.what.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let io = |e| BridgeError::Io(format!("{} (netlink)", self.what.join(", ")), e);
        sock.0.send(&self.buf, 0).map_err(io)?;
        let mut answers: Vec<Option<std::result::Result<(), rtnetlink::Error>>> = vec![None; n];
        let mut left = n;
        // An error answer echoes its request: room for the largest.
        let mut buf = vec![0u8; 16384 + self.buf.len()];
        while left > 0 {
            let got = sock.0.recv(&mut &mut buf[..], 0).map_err(io)?;
            for (kind, seq, payload) in messages(&buf[..got]) {
                let Some(slot) = (seq as usize).checked_sub(1).and_then(|i| answers.get_mut(i)) else {
                    continue;
                };
                if kind != NLMSG_ERROR || slot.is_some() {
                    continue;
                }
                let code = u32_at(payload, 0).map_or(0, |c| c as i32);
                *slot = Some(match std::num::NonZeroI32::new(code) {
                    None => Ok(()),
                    Some(code) => {
                        let mut e = ErrorMessage::default();
                        e.code = Some(code);
                        Err(rtnetlink::Error::NetlinkError(e))
                    }
                });
                left -= 1;
            }
        }
        Ok(self
            .what
            .into_iter()
            .zip(answers)
            .map(|(w, a)| {
                (
                    w,
                    a.expect("every request was answered: the loop ends when none is left"),
                )
            })
            .collect())
    }
}

/// Sends one request (`flags` as for [`Batch::push`]) and returns the kernel's answer to it;
/// `what` names it in an I/O error.
pub fn request(
    sock: &Sock,
    what: impl Into<String>,
    msg: RouteNetlinkMessage,
    flags: u16,
) -> Result<std::result::Result<(), rtnetlink::Error>> {
    let mut b = Batch::default();
    b.push(what, msg, flags);
    let (_, answer) = b
        .send(sock)?
        .pop()
        .expect("a batch of one request has one answer: send answers every request pushed");
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};

    fn link_by_name(name: &str) -> RouteNetlinkMessage {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.into()));
        RouteNetlinkMessage::SetLink(m)
    }

    #[test]
    fn requests_are_framed_one_after_another_with_their_numbers() {
        let mut b = Batch::default();
        b.push("one", link_by_name("lo"), CHANGE);
        b.push("two", link_by_name("lo"), CREATE);
        let first = u32::from_ne_bytes(b.buf[0..4].try_into().unwrap()) as usize;
        assert_eq!(first % 4, 0);
        let second = &b.buf[first..];
        assert_eq!(u32::from_ne_bytes(b.buf[8..12].try_into().unwrap()), 1);
        assert_eq!(u32::from_ne_bytes(second[8..12].try_into().unwrap()), 2);
        let flags = u16::from_ne_bytes(second[6..8].try_into().unwrap());
        assert_eq!(flags, NLM_F_REQUEST | NLM_F_ACK | CREATE);
        assert_eq!(
            first + u32::from_ne_bytes(second[0..4].try_into().unwrap()) as usize,
            b.buf.len()
        );
    }

    #[test]
    fn each_answer_comes_back_in_order_with_the_kernels_errno() {
        // In a network namespace of the test's own (a thread's, gone with it). Setting `lo` there
        // with no change succeeds; a link that does not exist is ENODEV, and the requests after it
        // still get their own answers.
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            answers_in_order();
        })
        .join()
        .unwrap();
    }

    fn answers_in_order() {
        let sock = Sock::open().unwrap();
        let mut b = Batch::default();
        b.push("lo", link_by_name("lo"), CHANGE);
        b.push("missing", link_by_name("cbrnet-nosuch0"), CHANGE);
        b.push("lo again", link_by_name("lo"), CHANGE);
        let out = b.send(&sock).unwrap();
        assert_eq!(out.len(), 3);
        assert!(out[0].1.is_ok() && out[2].1.is_ok(), "{out:?}");
        assert_eq!(out[1].0, "missing");
        let e = out[1].1.as_ref().unwrap_err();
        assert_eq!(crate::errno(e), Some(crate::error::ENODEV));
    }
}
