//! One client connection: read, decode every complete request, stage the
//! usages of the whole read into one WAL submission (`commit`), write all
//! responses in one go.
//!
//! Timeouts are per phase: a request's headers must arrive within
//! `--header-read-timeout-ms` of its first byte, its body within
//! `--body-read-timeout-ms` of its headers, and an idle keep-alive
//! connection is closed after `--idle-timeout-ms`. A request that misses
//! its deadline gets 408 and the connection closes, so a client trickling
//! bytes holds one coroutine for a bounded time and nothing else
//! (`deadlines`).
//!
//! Memory is bounded in bytes: a round ends after
//! [`PIPELINE_REQUESTS_MAX`] requests or once its responses reach
//! [`PIPELINE_RESPONSE_BYTES_MAX`]; its responses are written within one
//! deadline (`--body-read-timeout-ms`, for the whole round) before the next
//! round is decoded, and buffers that grew for a round are given back after
//! it (`round`, on `socket`).

use std::io::{self, Read};
use std::mem;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use may::net::TcpStream;
use may::sync::mpsc;
use rustls::ServerConfig;

mod batch;
mod commit;
mod deadlines;
mod gate;
use gate::Admit;
mod round;

use super::admission::Admitted;
use super::auth;
use super::request::{self, Body, Head};
use super::response::{self, Conn as ConnHeader};
use super::routes::{self, Action};
use super::socket::Stream;
use super::{ApiError, HttpError};
use super::{chunked, fields};
use crate::app::App;
use crate::ingest::UsageParser;
use crate::limits::{
    BUF_BYTES_KEPT_MAX, HEADER_BYTES_MAX, PIPELINE_REQUESTS_MAX, PIPELINE_RESPONSE_BYTES_MAX,
    READ_BUF_BYTES_INITIAL, STAGED_BYTES_INITIAL, WRITE_BUF_BYTES_INITIAL,
};
use crate::metrics::{self, Route};
use crate::retry_window::Pending;
use crate::wal::{Attached, Reply, Submission};

/// Serves `tcp` until the client leaves, an error closes it, or shutdown;
/// over TLS with `tls`, after a handshake within the header read timeout
/// (a client that stalls in it is dropped as one that stalls in a head).
pub fn serve(
    tcp: TcpStream,
    tls: Option<Arc<ServerConfig>>,
    app: &App,
    admitted: Admitted,
    lane: usize,
) {
    let _ = tcp.set_nodelay(true);
    let handshake = Duration::from_millis(app.config.header_read_timeout_ms);
    // A failed handshake (not TLS, a version refused, too slow): rustls'
    // alert told the client, or it left.
    let Ok(stream) = Stream::open(tcp, tls, handshake) else {
        metrics::GLOBAL
            .tls_handshakes_failed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return;
    };
    let timeout = Duration::from_millis(app.config.body_read_timeout_ms);
    // A client that does not take a round's responses within this is
    // dropped: the deadline covers the whole batch (`socket::write_within`).
    if stream.set_write_timeout(Some(timeout)).is_err() {
        return;
    }
    let mut conn = Connection::new(stream, app, admitted, lane);
    // Errors here are the client's: it went away or stopped reading.
    let _ = conn.run();
}

/// What the connection does after a round of decoding.
enum Next {
    /// Everything buffered is handled; read more.
    Read,
    /// The pipelining bound was reached; write, then decode again.
    Again,
    /// Write what is pending, then close.
    Close,
}

struct Connection<'a> {
    stream: Stream,
    app: &'a App,
    /// Which WAL lane this connection's submissions go to.
    lane: usize,
    /// Read buffer: `rbuf[rpos..rend]` is received and not yet handled.
    rbuf: Vec<u8>,
    rpos: usize,
    rend: usize,
    /// Responses of the current round, written in one call.
    wbuf: Vec<u8>,
    parser: UsageParser,
    /// `parser` took a body over [`BUF_BYTES_KEPT_MAX`] this round: its
    /// buffers grew to that body's size and are given back after the round.
    parser_grew: bool,
    /// De-chunked body of the current request.
    scratch: Vec<u8>,
    /// How far the chunked body of the request at `rpos` is decoded into
    /// `scratch`, so that a read decodes only what it brought.
    chunked: chunked::Progress,
    /// Usages of this round in staged WAL form, and each one's Connection
    /// header: they become one submission and then their 201s.
    staged: Vec<u8>,
    staged_conns: Vec<ConnHeader>,
    /// The staged usages that carry an eventId, for the retry window once
    /// their commit is acknowledged.
    pending: Pending,
    reply_tx: mpsc::Sender<Reply>,
    reply_rx: mpsc::Receiver<Reply>,
    /// The 100 Continue for the request at `rpos` has been sent.
    continue_sent: bool,
    /// When the first byte of the request at `rpos` arrived.
    request_started: Option<Instant>,
    /// When the head of the request at `rpos` was complete.
    head_done: Option<Instant>,
    /// When the connection last became idle.
    idle_since: Instant,
    /// The read timeout last given to the socket.
    read_timeout: Option<Duration>,
    /// Counts this connection among the WAL's submitters, which the
    /// commit pacer reads: a commit every submitter waits on is not held.
    _submitter: Attached<'a>,
    /// The API keys as this connection last saw them (see [`auth::View`]).
    keys: auth::View,
    /// When the WAL last answered this connection's submission.
    last_reply: Option<Instant>,
    /// Counts this connection in the server's [`Admission`]: open while it
    /// lives, and among the requests in flight while bytes of a request
    /// are buffered or being handled. Shutdown waits for those to finish.
    ///
    /// [`Admission`]: super::Admission
    admitted: Admitted,
}

impl<'a> Connection<'a> {
    fn new(stream: Stream, app: &'a App, admitted: Admitted, lane: usize) -> Self {
        let (reply_tx, reply_rx) = mpsc::channel();
        Connection {
            stream,
            app,
            lane,
            rbuf: vec![0; READ_BUF_BYTES_INITIAL],
            rpos: 0,
            rend: 0,
            wbuf: Vec::with_capacity(WRITE_BUF_BYTES_INITIAL),
            parser: UsageParser::new(),
            parser_grew: false,
            scratch: Vec::new(),
            chunked: chunked::Progress::default(),
            staged: Vec::with_capacity(STAGED_BYTES_INITIAL),
            staged_conns: Vec::with_capacity(64),
            pending: Pending::default(),
            reply_tx,
            reply_rx,
            continue_sent: false,
            request_started: None,
            head_done: None,
            idle_since: Instant::now(),
            read_timeout: None,
            _submitter: app.lanes.attach(),
            last_reply: None,
            keys: app.auth.view(),
            admitted,
        }
    }

    fn set_busy(&mut self, busy: bool) {
        self.admitted.set_request_in_flight(busy);
    }

    fn run(&mut self) -> io::Result<()> {
        loop {
            let next = self.decode_buffered();
            self.commit_staged();
            if !self.wbuf.is_empty() {
                self.write_out()?;
                fail::fail_point!("http::after_response");
            }
            self.give_back_buffers();
            // At shutdown keep-alive ends with the next response, which says
            // `Connection: close` (see `conn_header`). A response already
            // sent with keep-alive is honoured: closing right after it would
            // race a client that is reusing the connection this moment.
            match next {
                Next::Close => return self.close(),
                Next::Again => continue,
                Next::Read => {}
            }
            if !self.read_more()? {
                return self.close();
            }
        }
    }

    /// Handles every complete request in the buffer.
    fn decode_buffered(&mut self) -> Next {
        let rbuf = mem::take(&mut self.rbuf);
        let next = self.decode_from(&rbuf);
        self.rbuf = rbuf;
        next
    }

    fn decode_from(&mut self, rbuf: &[u8]) -> Next {
        for _ in 0..PIPELINE_REQUESTS_MAX {
            let buf = &rbuf[self.rpos..self.rend];
            if buf.is_empty() {
                return Next::Read;
            }
            let head = match request::parse_head(buf) {
                Ok(Some(head)) => head,
                Ok(None) => return Next::Read,
                Err(e) => return self.fail(Route::Other, e.into(), false),
            };
            self.head_done.get_or_insert_with(Instant::now);
            let (route, action) = routes::route(&head, self.admitted.exposure());
            let body_max = self.body_cap(&head, &action, &buf[head.len.min(buf.len())..]);
            let decoded =
                request::parse_body(buf, &head, body_max, &mut self.scratch, &mut self.chunked);
            let (body, len) = match decoded {
                Ok(Some(found)) => found,
                Ok(None) => return self.await_body(&head, route, action),
                Err(e) => return self.fail(route, e.into(), head.method == request::Method::Head),
            };
            // A de-chunked body is moved out of `self` while `self` handles
            // it, and its allocation put back after.
            let chunked_body = mem::take(&mut self.scratch);
            let body = match body {
                Body::Slice(range) => &buf[range],
                Body::Scratch => &chunked_body[..],
            };
            self.parser_grew |= body.len() > BUF_BYTES_KEPT_MAX;
            if matches!(action, Ok(Action::Ingest))
                && let Some(e) = self.body_over_cap(&head, body)
            {
                self.scratch = chunked_body;
                return self.fail(route, e.into(), false);
            }
            let conn = self.conn_header(&head);
            let conn = self.handle(&head, route, action, body, conn);
            self.scratch = chunked_body;
            self.rpos += len;
            self.request_done();
            if conn == ConnHeader::Close {
                return Next::Close;
            }
            if self.pending_response_bytes() >= PIPELINE_RESPONSE_BYTES_MAX {
                return Next::Again;
            }
        }
        Next::Again
    }

    /// Bytes of responses this round holds: those written, and the 201s
    /// the staged usages will get.
    fn pending_response_bytes(&self) -> usize {
        self.wbuf.len() + self.staged_conns.len() * response::CREATED_BYTES_MAX
    }

    /// The body is not all here yet. Answer `Expect: 100-continue` now, or
    /// refuse now if the request cannot succeed whatever its body.
    fn await_body(
        &mut self,
        head: &Head<'_>,
        route: Route,
        action: Result<Action, ApiError>,
    ) -> Next {
        if head.expect_continue && !self.continue_sent {
            let refused = action.and_then(|a| {
                self.authorize(head, a, Admit::Later)?;
                routes::precheck(head, a, self.app)
            });
            if let Err(e) = refused {
                return self.fail(route, e, head.method == request::Method::Head);
            }
            self.commit_staged();
            response::write_continue(&mut self.wbuf);
            self.continue_sent = true;
        }
        Next::Read
    }

    /// Handles one whole request; returns the Connection header its
    /// response went out with.
    fn handle(
        &mut self,
        head: &Head<'_>,
        route: Route,
        action: Result<Action, ApiError>,
        body: &[u8],
        conn: ConnHeader,
    ) -> ConnHeader {
        let outcome = action.and_then(|a| {
            // A batch is charged its usages once they are counted.
            let batch = a == Action::Ingest && batch::batch_form(head, body).is_some();
            let admit = if batch { Admit::Later } else { Admit::Now };
            let who = self.authorize(head, a, admit)?;
            routes::precheck(head, a, self.app).map(|()| (a, who))
        });
        match outcome {
            Ok((Action::Ingest, who)) => {
                if let Some(form) = batch::batch_form(head, body) {
                    self.handle_batch(head, form, body, conn, who);
                    return conn;
                }
                let usage = self.parser.parse(body).map_err(ApiError::from);
                match usage.and_then(|u| Ok(fields::keyed(u, head.idempotency_key)?)) {
                    Ok(usage) => {
                        if let Some(event) = usage.event_id {
                            let mut digits = itoa::Buffer::new();
                            let patient = usage.patient_id.as_bytes(&mut digits);
                            let event = event.as_bytes();
                            if let Some(id) = self.app.retries.first_id(patient, event) {
                                self.answer_retry(id, conn);
                                return conn;
                            }
                            self.pending.push(self.staged_conns.len(), patient, event);
                        }
                        let source = who.as_ref().map(|v| v.id.as_str());
                        Submission::stage(&mut self.staged, &usage, source, now_ms());
                        self.staged_conns.push(conn);
                    }
                    Err(e) => self.respond_error(route, &e, conn, false),
                }
            }
            Ok((other, _)) => {
                self.commit_staged();
                let status = routes::respond(
                    other,
                    self.app,
                    self.admitted.admission(),
                    &mut self.wbuf,
                    conn,
                    head.method == request::Method::Head,
                );
                metrics::count_request(route, status);
            }
            Err(e) => {
                let conn = if e.closes_connection() {
                    ConnHeader::Close
                } else {
                    conn
                };
                self.respond_error(route, &e, conn, head.method == request::Method::Head);
                return conn;
            }
        }
        conn
    }

    /// Answers an error and closes if the error leaves the stream unusable.
    fn fail(&mut self, route: Route, e: ApiError, head_only: bool) -> Next {
        self.respond_error(route, &e, ConnHeader::Close, head_only);
        Next::Close
    }

    fn respond_error(&mut self, route: Route, e: &ApiError, conn: ConnHeader, head_only: bool) {
        self.commit_staged();
        e.write(&mut self.wbuf, conn, head_only);
        metrics::count_request(route, e.status());
    }

    fn conn_header(&self, head: &Head<'_>) -> ConnHeader {
        if !head.keep_alive || self.app.is_shutting_down() {
            ConnHeader::Close
        } else if head.http10 {
            ConnHeader::KeepAlive10
        } else {
            ConnHeader::KeepAlive
        }
    }

    fn request_done(&mut self) {
        self.continue_sent = false;
        self.chunked = chunked::Progress::default();
        self.head_done = None;
        self.request_started = (self.rpos < self.rend).then(Instant::now);
    }

    /// Reads more bytes. `Ok(false)`: the connection should close (the
    /// client closed, or a timeout fired and was answered).
    fn read_more(&mut self) -> io::Result<bool> {
        self.compact();
        // A batch may be the largest body; chunked framing can quadruple it.
        let body_bytes_max = self
            .app
            .config
            .max_body_bytes
            .max(self.app.config.batch_max_bytes);
        let request_bytes_max = HEADER_BYTES_MAX + 4 * body_bytes_max;
        if self.rend - self.rpos >= request_bytes_max {
            let e = HttpError::BodyTooLarge {
                max_bytes: self.app.config.max_body_bytes,
            };
            self.fail(Route::Other, e.into(), false);
            self.write_out()?;
            return Ok(false);
        }
        if self.rend == self.rbuf.len() {
            self.rbuf.resize(
                (self.rbuf.len() * 2).min(request_bytes_max + READ_BUF_BYTES_INITIAL),
                0,
            );
        }
        let Some(timeout) = self.next_timeout() else {
            return self.timed_out();
        };
        if self.read_timeout != Some(timeout) {
            self.stream.set_read_timeout(Some(timeout))?;
            self.read_timeout = Some(timeout);
        }
        match self.stream.read(&mut self.rbuf[self.rend..]) {
            Ok(0) => Ok(false),
            Ok(n) => {
                if self.rpos == self.rend {
                    self.request_started = Some(Instant::now());
                    self.set_busy(true);
                }
                self.rend += n;
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if self.next_timeout().is_some() {
                    Ok(true)
                } else {
                    self.timed_out()
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Moves unhandled bytes to the front of the buffer.
    fn compact(&mut self) {
        // Idle, a read buffer grown for one large request is given back.
        if self.rpos == self.rend && self.rbuf.len() > BUF_BYTES_KEPT_MAX {
            self.rbuf = vec![0; READ_BUF_BYTES_INITIAL];
        }
        if self.rpos == self.rend {
            if self.rend != 0 {
                self.idle_since = Instant::now();
            }
            self.set_busy(false);
            self.rpos = 0;
            self.rend = 0;
        } else if self.rpos > 0 {
            self.rbuf.copy_within(self.rpos..self.rend, 0);
            self.rend -= self.rpos;
            self.rpos = 0;
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
