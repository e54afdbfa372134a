//! Latency without `sch_netem`: a netfilter queue (`iptables -j NFQUEUE`)
//! read over raw netlink, whose reader lets each packet go a fixed time
//! after the kernel queued it.
//!
//! The kernel keeps a queued packet until userspace gives a verdict for its
//! id; packets leave in the order they came, since every one waits the same
//! time. The messages are those of `linux/netfilter/nfnetlink_queue.h`:
//! `NFQNL_MSG_CONFIG` binds queue `N` and asks for metadata only, each
//! `NFQNL_MSG_PACKET` carries a packet id, and `NFQNL_MSG_VERDICT` accepts
//! one id. Queues belong to a network namespace, so the reader joins the
//! test host's namespace (`setns`, on its own thread) before it binds.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_META: u8 = 1;
const NF_ACCEPT: u32 = 1;
/// `struct nlmsghdr` and `struct nfgenmsg`, which every message opens with.
const NLMSG_HEADER_BYTES: usize = 16;
const NFGENMSG_BYTES: usize = 4;
/// Packets the kernel may hold for us: a delay of 200 ms at a few thousand
/// packets a second is far below it, and a full queue would drop packets.
const QUEUE_PACKETS_MAX: u32 = 65_536;
/// Socket receive buffer, so a burst of packet messages is not lost
/// (`ENOBUFS`) while the reader sleeps towards the next release.
const RECEIVE_BUFFER_BYTES: i32 = 8 << 20;
/// How long the reader waits for packets at most before it looks at its
/// stop flag again.
const POLL_MS_MAX: u64 = 10;

/// A bound queue and the thread that reads it. Dropping it lets every held
/// packet go at once.
pub struct DelayQueue {
    stop: Arc<AtomicBool>,
    held: Arc<AtomicU64>,
    overruns: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl DelayQueue {
    /// Binds queue `queue` in the namespace at `netns` (`/run/netns/NAME`)
    /// and starts holding each packet for `delay`. Fails with the reason if
    /// the kernel refuses the queue.
    pub fn bind(netns: &Path, queue: u16, delay: Duration) -> Result<DelayQueue, String> {
        let ns = File::open(netns).map_err(|e| format!("open {}: {e}", netns.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let held = Arc::new(AtomicU64::new(0));
        let overruns = Arc::new(AtomicU64::new(0));
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let reader = Reader {
            stop: stop.clone(),
            held: held.clone(),
            overruns: overruns.clone(),
            delay,
            queue,
        };
        let thread = std::thread::spawn(move || {
            let sock = match join_and_bind(&ns, queue) {
                Ok(sock) => sock,
                Err(e) => {
                    let _ = bound_tx.send(Err(e));
                    return;
                }
            };
            let _ = bound_tx.send(Ok(()));
            reader.run(&sock);
        });
        let bound = bound_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|e| format!("the queue reader did not start: {e}"))?;
        let q = DelayQueue {
            stop,
            held,
            overruns,
            thread: Some(thread),
        };
        bound.map(|()| q)
    }

    /// Packets held so far.
    pub fn held(&self) -> u64 {
        self.held.load(Relaxed)
    }

    /// Times the kernel could not hand the reader a packet (its socket
    /// buffer was full): each is a packet dropped, not delayed.
    pub fn overruns(&self) -> u64 {
        self.overruns.load(Relaxed)
    }
}

impl Drop for DelayQueue {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The reader thread's state.
struct Reader {
    stop: Arc<AtomicBool>,
    held: Arc<AtomicU64>,
    overruns: Arc<AtomicU64>,
    delay: Duration,
    queue: u16,
}

impl Reader {
    /// Reads packet ids and accepts each `delay` after it came, until
    /// stopped; then accepts everything still held.
    fn run(&self, sock: &OwnedFd) {
        let mut due: VecDeque<(Instant, u32)> = VecDeque::new();
        let mut buf = vec![0u8; 1 << 16];
        while !self.stop.load(Relaxed) {
            let wait = due
                .front()
                .map_or(Duration::from_millis(POLL_MS_MAX), |(at, _)| {
                    at.saturating_duration_since(Instant::now())
                });
            poll_in(sock, wait.min(Duration::from_millis(POLL_MS_MAX)));
            loop {
                match recv(sock, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let at = Instant::now() + self.delay;
                        for id in packet_ids(&buf[..n]) {
                            due.push_back((at, id));
                            self.held.fetch_add(1, Relaxed);
                        }
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        self.overruns.fetch_add(1, Relaxed);
                    }
                    Err(_) => break,
                }
            }
            let now = Instant::now();
            while due.front().is_some_and(|(at, _)| *at <= now) {
                if let Some((_, id)) = due.pop_front() {
                    self.accept(sock, id);
                }
            }
        }
        for (_, id) in due {
            self.accept(sock, id);
        }
    }

    fn accept(&self, sock: &OwnedFd, id: u32) {
        let mut verdict = NF_ACCEPT.to_be_bytes().to_vec();
        verdict.extend(id.to_be_bytes());
        let m = message(
            NFQNL_MSG_VERDICT,
            0,
            self.queue,
            &[(NFQA_VERDICT_HDR, &verdict)],
        );
        // A verdict that cannot be sent leaves the packet queued until the
        // queue is unbound (the socket closes), which then drops it: the
        // test sees loss, not a hang.
        let _ = send(sock, &m);
    }
}

/// Joins the namespace `ns` (this thread only), opens a netlink socket there
/// and binds queue `queue`, metadata only.
fn join_and_bind(ns: &File, queue: u16) -> Result<OwnedFd, String> {
    // SAFETY: setns on a descriptor we hold open; it changes only the
    // calling thread's network namespace, and this thread is ours.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns: {}", io::Error::last_os_error()));
    }
    // SAFETY: plain socket(2); the descriptor is owned right below.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_NETFILTER) };
    if fd < 0 {
        return Err(format!("netlink socket: {}", io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let size = RECEIVE_BUFFER_BYTES;
    // SAFETY: setsockopt reads `size_of::<i32>()` bytes from `&size`. As
    // root, SO_RCVBUFFORCE may pass the system's rmem_max.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        );
    }
    let mut cmd = vec![NFQNL_CFG_CMD_BIND, 0];
    cmd.extend((libc::AF_INET as u16).to_be_bytes());
    let mut params = 0u32.to_be_bytes().to_vec();
    params.push(NFQNL_COPY_META);
    let maxlen = QUEUE_PACKETS_MAX.to_be_bytes();
    for attr in [
        (NFQA_CFG_CMD, cmd.as_slice()),
        (NFQA_CFG_PARAMS, params.as_slice()),
        (NFQA_CFG_QUEUE_MAXLEN, maxlen.as_slice()),
    ] {
        let m = message(NFQNL_MSG_CONFIG, libc::NLM_F_ACK as u16, queue, &[attr]);
        send(&sock, &m).map_err(|e| format!("netlink send: {e}"))?;
        acknowledged(&sock).map_err(|e| format!("binding netfilter queue {queue}: {e}"))?;
    }
    Ok(sock)
}

/// Waits for the kernel's answer to a request sent with `NLM_F_ACK`.
fn acknowledged(sock: &OwnedFd) -> io::Result<()> {
    let mut buf = [0u8; 4096];
    poll_in(sock, Duration::from_secs(5));
    let n = recv(sock, &mut buf)?;
    if n < NLMSG_HEADER_BYTES + 4
        || u16::from_ne_bytes([buf[4], buf[5]]) != libc::NLMSG_ERROR as u16
    {
        return Err(io::Error::other("no acknowledgement from the kernel"));
    }
    let code = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
    match code {
        0 => Ok(()),
        c => Err(io::Error::from_raw_os_error(-c)),
    }
}

/// One nfnetlink message to the queue subsystem: headers, then attributes
/// (each `len: u16, type: u16`, padded to 4 bytes).
fn message(kind: u16, flags: u16, queue: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut m = vec![0u8; NLMSG_HEADER_BYTES];
    m.extend([libc::AF_UNSPEC as u8, 0]);
    m.extend(queue.to_be_bytes());
    for (kind, payload) in attrs {
        m.extend(((4 + payload.len()) as u16).to_ne_bytes());
        m.extend(kind.to_ne_bytes());
        m.extend(*payload);
        m.resize(m.len().next_multiple_of(4), 0);
    }
    let len = m.len() as u32;
    m[0..4].copy_from_slice(&len.to_ne_bytes());
    m[4..6].copy_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | kind).to_ne_bytes());
    m[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16 | flags).to_ne_bytes());
    m
}

/// The packet ids of the `NFQNL_MSG_PACKET` messages in one datagram.
fn packet_ids(mut buf: &[u8]) -> Vec<u32> {
    let mut ids = Vec::new();
    while buf.len() >= NLMSG_HEADER_BYTES {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < NLMSG_HEADER_BYTES || len > buf.len() {
            break;
        }
        if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET {
            ids.extend(packet_id(&buf[NLMSG_HEADER_BYTES + NFGENMSG_BYTES..len]));
        }
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
    }
    ids
}

/// The id in a packet message's `NFQA_PACKET_HDR` attribute.
fn packet_id(mut attrs: &[u8]) -> Option<u32> {
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
        if len < 4 || len > attrs.len() {
            return None;
        }
        if kind == NFQA_PACKET_HDR && len >= 8 {
            return Some(u32::from_be_bytes([attrs[4], attrs[5], attrs[6], attrs[7]]));
        }
        attrs = &attrs[len.next_multiple_of(4).min(attrs.len())..];
    }
    None
}

fn poll_in(sock: &OwnedFd, wait: Duration) {
    let mut p = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll(2) on one pollfd that lives across the call.
    unsafe { libc::poll(&mut p, 1, wait.as_millis() as libc::c_int) };
}

/// One datagram without waiting; `Ok(0)` when none is pending.
fn recv(sock: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: recv(2) writes at most `buf.len()` bytes into `buf`.
    let n = unsafe {
        libc::recv(
            sock.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n >= 0 {
        return Ok(n as usize);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) => Ok(0),
        _ => Err(e),
    }
}

/// Sends one message to the kernel (netlink port 0).
fn send(sock: &OwnedFd, m: &[u8]) -> io::Result<()> {
    // SAFETY: an all-zero sockaddr_nl is the kernel's address; then only
    // the family is set.
    let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: sendto(2) reads `m.len()` bytes of `m` and the whole `to`.
    let n = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            m.as_ptr().cast(),
            m.len(),
            0,
            (&to as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
