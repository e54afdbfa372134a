//! A connection's socket under deadlines, and its buffers given back.
//!
//! - [`Stream`] is the socket, or TLS over it: an enum, so plain HTTP
//!   pays one branch per `read`/`write` call and no indirection.
//! - The TLS handshake has one deadline (`--header-read-timeout-ms`) and
//!   every TLS read makes at most one socket read, so a client that trickles
//!   handshake or record bytes meets the same deadlines as one that trickles
//!   a plain request.
//! - A whole response batch is written within one deadline, not one per
//!   `write` call: a client that reads a few bytes now and then would
//!   otherwise keep each call just alive and hold the batch for ever.
//! - Closing with unread bytes makes the kernel send a reset, which can
//!   destroy the last response before the client reads it (RFC 9112
//!   §9.6), so what still arrives is read and dropped first, for a bounded
//!   time and number of bytes.
//! - Buffers that grew for one large round are given back afterwards, so
//!   an idle connection costs its initial buffers only.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::net::TcpStream;
use rustls::{ServerConfig, ServerConnection};

use crate::limits::{BUF_BYTES_KEPT_MAX, CLOSE_DRAIN_BYTES_MAX, CLOSE_DRAIN_MS};

/// A connection's byte stream.
pub enum Stream {
    /// Plain HTTP: reads and writes go straight to the socket.
    Plain(TcpStream),
    /// TLS: rustls between the socket and HTTP. Boxed: the session state
    /// is large, and plain connections should not carry its size.
    Tls(Box<TlsStream>),
}

/// A TLS session and its socket.
pub struct TlsStream {
    tls: ServerConnection,
    tcp: TcpStream,
}

impl Stream {
    /// `tcp` as a stream: plain, or over TLS with `tls` once its handshake
    /// is done within `handshake` (see [`Stream::handshake`]).
    pub fn open(
        tcp: TcpStream,
        tls: Option<Arc<ServerConfig>>,
        handshake: Duration,
    ) -> io::Result<Stream> {
        match tls {
            None => Ok(Stream::Plain(tcp)),
            Some(config) => Stream::handshake(tcp, config, handshake),
        }
    }

    /// Runs a TLS handshake on `tcp` within `deadline`, one socket read or
    /// write at a time so that the deadline holds however the client
    /// paces its bytes. A client that sends something other than TLS gets
    /// rustls' alert and an error.
    pub fn handshake(
        tcp: TcpStream,
        config: Arc<ServerConfig>,
        deadline: Duration,
    ) -> io::Result<Stream> {
        let tls = ServerConnection::new(config).map_err(io::Error::other)?;
        let mut s = Box::new(TlsStream { tls, tcp });
        let until = Instant::now() + deadline;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            let wait = Some(whole_ms_up(left));
            if s.tls.wants_write() {
                s.tcp.set_write_timeout(wait)?;
                if s.tls.write_tls(&mut s.tcp)? == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                continue;
            }
            if !s.tls.is_handshaking() {
                return Ok(Stream::Tls(s));
            }
            s.tcp.set_read_timeout(wait)?;
            if s.tls.read_tls(&mut s.tcp)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            if let Err(e) = s.tls.process_new_packets() {
                // The alert rustls queued, so the client learns why.
                s.tcp.set_write_timeout(wait)?;
                let _ = s.tls.write_tls(&mut s.tcp);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(s) => &s.tcp,
        }
    }

    /// The client's address (the failed-authentication budget is kept per
    /// address).
    pub fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.tcp().peer_addr()
    }

    /// The socket's read timeout (see `may`: whole milliseconds).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.tcp().set_read_timeout(timeout)
    }

    /// The socket's timeout for one write call.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.tcp().set_write_timeout(timeout)
    }

    /// One step of writing `bytes`: takes what it can of them and makes at
    /// most one socket write. Returns how many of `bytes` were taken; TLS
    /// may take some without writing them yet (see [`Stream::unsent`]).
    fn write_step(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => match tcp.write(bytes) {
                Ok(0) => Err(io::ErrorKind::WriteZero.into()),
                written => written,
            },
            Stream::Tls(s) => {
                let taken = if bytes.is_empty() {
                    0
                } else {
                    s.tls.writer().write(bytes)?
                };
                if s.tls.wants_write() {
                    if s.tls.write_tls(&mut s.tcp)? == 0 {
                        return Err(io::ErrorKind::WriteZero.into());
                    }
                } else if taken == 0 && !bytes.is_empty() {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                Ok(taken)
            }
        }
    }

    /// Bytes taken by a write and not yet on the socket (TLS records).
    fn unsent(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(s) => s.tls.wants_write(),
        }
    }

    /// Ends the sending side: TLS says `close_notify` first, so the client
    /// can tell the end from a truncation.
    pub fn close_write(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(tcp) => {
                tcp.flush()?;
                tcp.shutdown(std::net::Shutdown::Write)
            }
            Stream::Tls(s) => {
                s.tls.send_close_notify();
                while s.tls.wants_write() {
                    if s.tls.write_tls(&mut s.tcp)? == 0 {
                        break;
                    }
                }
                s.tcp.shutdown(std::net::Shutdown::Write)
            }
        }
    }
}

impl Read for Stream {
    /// Plain: one socket read. TLS: the decrypted bytes rustls holds, else
    /// one socket read; if that brought no whole record, `WouldBlock`, so
    /// that the caller checks its deadline before the next read.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let s = match self {
            Stream::Plain(tcp) => return tcp.read(buf),
            Stream::Tls(s) => s,
        };
        for socket_reads in 0..2 {
            match s.tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                // The client closed without close_notify: for HTTP, whose
                // messages carry their own length, that is an end.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && socket_reads == 0 => {}
                Err(e) => return Err(e),
            }
            while s.tls.wants_write() {
                s.tls.write_tls(&mut s.tcp)?;
            }
            if s.tls.read_tls(&mut s.tcp)? == 0 {
                // EOF: what rustls now holds says whether it was clean.
                s.tls.process_new_packets().map_err(io::Error::other)?;
                continue;
            }
            if let Err(e) = s.tls.process_new_packets() {
                let _ = s.tls.write_tls(&mut s.tcp);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
        Err(io::ErrorKind::WouldBlock.into())
    }
}

/// Writes all of `bytes` within `deadline` of the call. The socket's
/// write timeout is `deadline` between calls (see `conn::serve`); after a
/// partial write it is lowered to what is left, and restored at the end.
pub(super) fn write_within(
    stream: &mut Stream,
    mut bytes: &[u8],
    deadline: Duration,
) -> io::Result<()> {
    let until = Instant::now() + deadline;
    let mut lowered = false;
    while !bytes.is_empty() || stream.unsent() {
        match stream.write_step(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if !bytes.is_empty() || stream.unsent() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            stream.set_write_timeout(Some(whole_ms_up(left)))?;
            lowered = true;
        }
    }
    if lowered {
        stream.set_write_timeout(Some(deadline))?;
    }
    Ok(())
}

/// Reads into `buf` and drops what still arrives, until the client
/// closes or [`CLOSE_DRAIN_MS`] or [`CLOSE_DRAIN_BYTES_MAX`] run out.
pub(super) fn drain_unread(stream: &mut Stream, buf: &mut [u8]) {
    let until = Instant::now() + Duration::from_millis(CLOSE_DRAIN_MS);
    let mut left = CLOSE_DRAIN_BYTES_MAX;
    while left > 0 {
        let wait = until.saturating_duration_since(Instant::now());
        if wait.is_zero() || stream.set_read_timeout(Some(whole_ms_up(wait))).is_err() {
            return;
        }
        match stream.read(buf) {
            Ok(0) => return,
            Ok(n) => left = left.saturating_sub(n),
            // Part of a TLS record: the deadline above still bounds it.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// Replaces `buf` by an empty one of `initial` capacity if it grew past
/// [`BUF_BYTES_KEPT_MAX`]. Call when its contents are no longer needed.
pub(super) fn give_back(buf: &mut Vec<u8>, initial: usize) {
    if buf.capacity() > BUF_BYTES_KEPT_MAX {
        *buf = Vec::with_capacity(initial);
    }
}

/// may keeps a socket timeout in whole milliseconds, truncated, and takes 0
/// as "no timeout": a remainder under 1 ms would make the read wait forever,
/// and a truncated one fires before the deadline. Rounding up avoids both.
pub(super) fn whole_ms_up(d: Duration) -> Duration {
    Duration::from_millis(d.as_nanos().div_ceil(1_000_000) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_whole_milliseconds_rounded_up() {
        let ms = Duration::from_millis;
        assert_eq!(whole_ms_up(Duration::from_nanos(1)), ms(1));
        assert_eq!(whole_ms_up(Duration::from_micros(299_970)), ms(300));
        assert_eq!(whole_ms_up(ms(75_000)), ms(75_000));
    }

    /// A peer that reads `chunk` bytes every `gap` until the stream ends.
    fn slow_reader(listener: std::net::TcpListener, chunk: usize, gap: Duration) {
        std::thread::spawn(move || {
            let (mut peer, _) = listener.accept().expect("accept");
            let mut buf = vec![0; chunk];
            while matches!(peer.read(&mut buf), Ok(n) if n > 0) {
                std::thread::sleep(gap);
            }
        });
    }

    /// Sets a socket buffer option of `stream` to `bytes`.
    fn set_buffer(socket: &impl std::os::fd::AsRawFd, option: libc::c_int, bytes: libc::c_int) {
        // SAFETY: setsockopt on a socket this test owns and keeps open for
        // the call; the pointer and size describe a live c_int.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&raw const bytes).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "setsockopt");
    }

    #[test]
    fn a_peer_that_keeps_each_write_alive_but_takes_too_long_overall_times_out() {
        const DEADLINE: Duration = Duration::from_millis(300);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        // Inherited by the accepted socket: the window opens after each read.
        set_buffer(&listener, libc::SO_RCVBUF, 4096);
        // 2 KiB every 20 ms is 100 KiB/s: every write call progresses well
        // within the deadline, but 1 MiB takes ten seconds.
        slow_reader(listener, 2048, Duration::from_millis(20));
        let tcp = TcpStream::connect(addr).expect("connect");
        // Small buffers: the writer wakes after a few KiB, not after the
        // megabytes loopback autotuning would allow.
        set_buffer(&tcp, libc::SO_SNDBUF, 8192);
        let mut stream = Stream::Plain(tcp);
        stream.set_write_timeout(Some(DEADLINE)).expect("timeout");
        let started = Instant::now();
        let written = write_within(&mut stream, &vec![b'x'; 1 << 20], DEADLINE);
        let took = started.elapsed();
        assert_eq!(
            written.map_err(|e| e.kind()),
            Err(io::ErrorKind::TimedOut),
            "after {took:?}"
        );
        assert!(took < 10 * DEADLINE, "timed out only after {took:?}");
    }

    #[test]
    fn a_grown_buffer_is_given_back_and_a_small_one_kept() {
        let mut grown = Vec::with_capacity(BUF_BYTES_KEPT_MAX + 1);
        give_back(&mut grown, 1024);
        assert!(grown.capacity() >= 1024 && grown.capacity() <= BUF_BYTES_KEPT_MAX);
        let mut small: Vec<u8> = Vec::with_capacity(BUF_BYTES_KEPT_MAX);
        let at = small.as_ptr();
        give_back(&mut small, 1024);
        assert_eq!(small.as_ptr(), at, "a buffer within the bound was replaced");
    }
}
