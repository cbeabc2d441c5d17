//! One worker's HTTP/1.1 server: its listeners, its connections and their request
//! and response state, driven by a mio `Poll` whose epoll fd the worker's event
//! loop watches (`add_reader`). Everything here runs on the worker's own thread,
//! inside calls from its loop: no other thread, no Python object (the FFI layer,
//! `ffi.rs`, turns the [`Event`]s into Python objects).
//!
//! A connection serves one request at a time: the next pipelined request is
//! parsed when the current response is complete. While a request is in flight its
//! body is moved (decoded) from the read buffer into `body_buf`, which the app
//! takes with `recv`; reading pauses when `body_buf` or the read buffer are full.
use super::group::{Group, WorkerStats};
use super::http::{self, BodyKind, Chunked, Framing, Head, ParseError, RespHead};
use super::tls::{TlsInfo, TlsIo};
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAKER: Token = Token(usize::MAX);
/// Listener `i` has token `LISTENER0 + i`; connections have their slab key.
const LISTENER0: usize = usize::MAX - 1024;
const READ_CHUNK: usize = 64 * 1024;
/// Reading pauses while this much input waits to be processed (pipelined
/// requests, a body the app does not take).
const READ_HIGH: usize = 256 * 1024;
/// Body bytes buffered for the app before reading pauses.
const BODY_HIGH: usize = 1 << 20;
/// `send` waits for the connection to drain above this much unsent output.
const WRITE_HIGH: usize = 256 * 1024;
/// How long a closed-for-writing connection keeps reading (and dropping) what the
/// client still sends, so that our last response is not destroyed by a reset.
const LINGER: Duration = Duration::from_secs(2);
/// While draining, how long a connection may stay open without sending a request.
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// `send_body` flags for the caller.
pub const GONE: u32 = 1;
pub const WAIT_DRAIN: u32 = 2;
pub const HAS_EVENTS: u32 = 4;

pub struct Limits {
    pub max_head: usize,
    /// 0: no limit.
    pub max_body: u64,
    pub keep_alive: Duration,
    pub slow_client: Duration,
    /// Requests in flight in this worker before new ones get 503 (0: no limit).
    pub max_inflight: usize,
}

pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Read for Sock {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.read(b),
            Sock::Unix(s) => s.read(b),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.write(b),
            Sock::Unix(s) => s.write(b),
        }
    }
    fn write_vectored(&mut self, b: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.write_vectored(b),
            Sock::Unix(s) => s.write_vectored(b),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A connection's byte stream: the socket, through TLS when the server has a
/// certificate. The state machine reads and writes plaintext either way.
struct Io {
    sock: Sock,
    tls: Option<Box<TlsIo>>,
}

impl Io {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        match &mut self.tls {
            Some(t) => t.read(&mut self.sock, b),
            None => self.sock.read(b),
        }
    }
    /// The socket's bytes as they are (lingering: read and dropped).
    fn read_raw(&mut self, b: &mut [u8]) -> io::Result<usize> {
        self.sock.read(b)
    }
    fn write_vectored(&mut self, b: &[IoSlice<'_>]) -> io::Result<usize> {
        match &mut self.tls {
            Some(t) => t.write_vectored(&mut self.sock, b),
            None => self.sock.write_vectored(b),
        }
    }
    /// Pushes what TLS holds for the socket (handshake, records, alerts); the
    /// bytes written.
    fn push(&mut self) -> io::Result<usize> {
        match &mut self.tls {
            Some(t) => t.push(&mut self.sock),
            None => Ok(0),
        }
    }
    /// TLS holds bytes the socket has not taken yet.
    fn pending(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.pending())
    }
    /// Queues TLS's `close_notify` the first time (true: push it before closing).
    fn close_notify(&mut self) -> bool {
        self.tls.as_mut().is_some_and(|t| t.close_notify())
    }
    fn tls_info(&self) -> Option<TlsInfo> {
        self.tls.as_ref().and_then(|t| t.info())
    }
    fn shutdown_write(&self) {
        let _ = match &self.sock {
            Sock::Tcp(s) => s.shutdown(Shutdown::Write),
            Sock::Unix(s) => s.shutdown(Shutdown::Write),
        };
    }
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match &mut self.sock {
            Sock::Tcp(s) => s,
            Sock::Unix(s) => s,
        }
    }
}

pub enum Event {
    Request {
        token: u64,
        head: Head,
        client: Option<SocketAddr>,
        server: Option<SocketAddr>,
        /// TLS version, cipher suite and client certificates, on a TLS server.
        tls: Option<TlsInfo>,
    },
    /// Body bytes (or the body's end) are ready for a `recv` that found none.
    Body(u64),
    /// The request's connection is gone (or the server dropped it).
    Disconnect(u64),
    /// Output went below the high-water mark after `send_body` said `WAIT_DRAIN`.
    Drain(u64),
    /// The group is stopping: shut down gracefully.
    Stop,
}

pub enum Recv {
    Gone,
    Wait,
    Data(Vec<u8>, bool),
}

enum Resp {
    NotStarted,
    /// `http.response.start` received; the head waits for the first body message
    /// (so that a one-message body gets a Content-Length and one write).
    Pending(RespHead),
    Sending(Framing),
    Done,
}

enum BodyState {
    Length(u64),
    Chunked(Chunked),
    Done,
    /// After a protocol upgrade (WebSocket): every byte the client sends, unframed,
    /// until it closes.
    Raw,
}

struct Req {
    token: u64,
    head_request: bool,
    http10: bool,
    keep_alive: bool,
    body: BodyState,
    body_buf: Vec<u8>,
    body_seen: u64,
    recv_waiting: bool,
    expect_continue: bool,
    resp: Resp,
    status: u16,
    drain_waiting: bool,
    started: Instant,
    /// Last time the client sent body bytes or took response bytes.
    progress: Instant,
}

struct Conn {
    io: Io,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    wpos: usize,
    gen: u32,
    req: Option<Req>,
    client: Option<SocketAddr>,
    server: Option<SocketAddr>,
    eof: bool,
    /// Close once the output is written.
    closing: bool,
    /// Closed for writing; reading and dropping input until EOF or `LINGER`.
    lingering: bool,
    /// Readable, but reading paused before `WouldBlock` (edge-triggered: resume
    /// by reading, not by waiting for an event).
    read_more: bool,
    /// Start of the current wait: idle (keep-alive), a head arriving, lingering.
    since: Instant,
    wprogress: Instant,
}

impl Conn {
    fn unsent(&self) -> usize {
        self.wbuf.len() - self.wpos
    }
    /// Output waits: in our buffer, or encrypted in TLS's.
    fn has_output(&self) -> bool {
        self.unsent() > 0 || self.io.pending()
    }
}

pub struct Server {
    poll: Poll,
    events: Events,
    ready: Vec<(Token, bool, bool)>,
    listeners: Vec<Listener>,
    conns: Slab<Conn>,
    pending: VecDeque<Event>,
    scratch: Box<[u8]>,
    limits: Limits,
    group: Arc<Group>,
    index: usize,
    waker: Arc<Waker>,
    draining: bool,
    stop_sent: bool,
    inflight: usize,
    tls: Option<Arc<rustls::ServerConfig>>,
}

fn now() -> Instant {
    Instant::now()
}

impl Server {
    pub fn new(group: Arc<Group>, index: usize, mut listeners: Vec<Listener>, limits: Limits) -> io::Result<Self> {
        if index >= group.workers.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "worker index out of range"));
        }
        let poll = Poll::new()?;
        for (i, l) in listeners.iter_mut().enumerate() {
            let t = Token(LISTENER0 + i);
            match l {
                Listener::Tcp(l) => poll.registry().register(l, t, Interest::READABLE)?,
                Listener::Unix(l) => poll.registry().register(l, t, Interest::READABLE)?,
            }
        }
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        group.add_waker(waker.clone());
        Ok(Server {
            poll,
            events: Events::with_capacity(256),
            ready: Vec::with_capacity(256),
            listeners,
            conns: Slab::new(),
            pending: VecDeque::new(),
            scratch: vec![0u8; READ_CHUNK].into_boxed_slice(),
            limits,
            index,
            waker,
            draining: false,
            stop_sent: false,
            inflight: 0,
            tls: group.tls(),
            group,
        })
    }

    pub fn fd(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.poll.as_raw_fd()
    }

    fn stats(&self) -> &WorkerStats {
        &self.group.workers[self.index]
    }

    /// (requests in flight, open connections).
    pub fn load(&self) -> (usize, usize) {
        (self.inflight, self.conns.len())
    }

    /// Handles whatever is ready (without blocking) and, with `timers`, the
    /// timeouts; appends the resulting events to `out`.
    pub fn poll(&mut self, out: &mut Vec<Event>, timers: bool) {
        match self.poll.poll(&mut self.events, Some(Duration::ZERO)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {}
        }
        self.ready.clear();
        for e in self.events.iter() {
            self.ready.push((
                e.token(),
                e.is_readable() || e.is_read_closed() || e.is_error(),
                e.is_writable() || e.is_write_closed(),
            ));
        }
        for i in 0..self.ready.len() {
            let (t, readable, writable) = self.ready[i];
            if t == WAKER {
                if self.group.stopping() && !self.stop_sent {
                    self.stop_sent = true;
                    self.pending.push_back(Event::Stop);
                }
            } else if t.0 >= LISTENER0 {
                self.accept_all(t.0 - LISTENER0);
            } else {
                if writable {
                    self.flush(t.0);
                }
                if readable {
                    self.read(t.0);
                }
            }
        }
        if timers {
            self.tick();
        }
        out.extend(self.pending.drain(..));
    }

    fn accept_all(&mut self, i: usize) {
        loop {
            let accepted = match self.listeners.get_mut(i) {
                None => return,
                Some(Listener::Tcp(l)) => l.accept().map(|(s, a)| {
                    let _ = s.set_nodelay(true);
                    let local = s.local_addr().ok();
                    (Sock::Tcp(s), Some(a), local)
                }),
                Some(Listener::Unix(l)) => l.accept().map(|(s, _)| (Sock::Unix(s), None, None)),
            };
            match accepted {
                Ok((sock, client, server)) => {
                    if self.draining {
                        continue; // dropped: closed at once
                    }
                    let tls = match &self.tls {
                        None => None,
                        Some(cfg) => match TlsIo::new(cfg) {
                            Ok(t) => Some(Box::new(t)),
                            Err(_) => continue,
                        },
                    };
                    let io = Io { sock, tls };
                    let t = now();
                    let entry = self.conns.vacant_entry();
                    let key = entry.key();
                    if key >= LISTENER0 {
                        continue;
                    }
                    let c = entry.insert(Conn {
                        io,
                        rbuf: Vec::new(),
                        wbuf: Vec::new(),
                        wpos: 0,
                        gen: 0,
                        req: None,
                        client,
                        server,
                        eof: false,
                        closing: false,
                        lingering: false,
                        read_more: false,
                        since: t,
                        wprogress: t,
                    });
                    let ok = self
                        .poll
                        .registry()
                        .register(c.io.source(), Token(key), Interest::READABLE | Interest::WRITABLE)
                        .is_ok();
                    if ok {
                        self.stats().connections.fetch_add(1, Ordering::Relaxed);
                    } else {
                        self.conns.remove(key);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // WouldBlock: drained. Anything else (EMFILE...): try again on the
                // next readiness event rather than spin here.
                Err(_) => return,
            }
        }
    }

    fn read(&mut self, key: usize) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        loop {
            if c.rbuf.len() >= READ_HIGH && !c.lingering {
                c.read_more = true;
                break;
            }
            let r = if c.lingering {
                c.io.read_raw(&mut self.scratch)
            } else {
                c.io.read(&mut self.scratch)
            };
            match r {
                Ok(0) => {
                    c.eof = true;
                    c.read_more = false;
                    break;
                }
                Ok(n) => {
                    if !c.lingering {
                        c.rbuf.extend_from_slice(&self.scratch[..n]);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.read_more = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close(key);
                    return;
                }
            }
        }
        if c.lingering {
            if c.eof {
                self.close(key);
            }
            return;
        }
        self.advance(key);
    }

    /// Moves the connection forward after input: body bytes to the app, the next
    /// request head, errors.
    fn advance(&mut self, key: usize) {
        let (max_head, max_body, max_inflight) =
            (self.limits.max_head, self.limits.max_body, self.limits.max_inflight);
        loop {
            let Some(c) = self.conns.get_mut(key) else {
                return;
            };
            if c.closing || c.lingering {
                return;
            }
            if let Some(req) = c.req.as_mut() {
                let before = req.body_buf.len();
                let room = BODY_HIGH.saturating_sub(before);
                let mut err = None;
                let was_done = matches!(req.body, BodyState::Done);
                match &mut req.body {
                    BodyState::Length(left) => {
                        let take = (*left).min(c.rbuf.len() as u64).min(room as u64) as usize;
                        req.body_buf.extend_from_slice(&c.rbuf[..take]);
                        c.rbuf.drain(..take);
                        *left -= take as u64;
                        if *left == 0 {
                            req.body = BodyState::Done;
                        }
                    }
                    BodyState::Chunked(d) => match d.decode(&c.rbuf, &mut req.body_buf, room) {
                        Ok(used) => {
                            c.rbuf.drain(..used);
                            if d.is_done() {
                                req.body = BodyState::Done;
                            }
                        }
                        Err(ParseError::Bad(m)) => err = Some((400, m)),
                        Err(ParseError::HeadTooLarge) => err = Some((400, "bad chunked body")),
                    },
                    BodyState::Raw => {
                        let take = c.rbuf.len().min(room);
                        req.body_buf.extend_from_slice(&c.rbuf[..take]);
                        c.rbuf.drain(..take);
                    }
                    BodyState::Done => {}
                }
                let moved = req.body_buf.len() - before;
                let done = matches!(req.body, BodyState::Done);
                let raw = matches!(req.body, BodyState::Raw);
                if moved > 0 {
                    req.body_seen += moved as u64;
                    req.progress = now();
                    if max_body > 0 && req.body_seen > max_body && !raw {
                        err = Some((413, "request body too large"));
                    }
                }
                if let Some((status, msg)) = err {
                    self.fail_request(key, status, msg);
                    return;
                }
                if (moved > 0 || (done && !was_done)) && req.recv_waiting {
                    req.recv_waiting = false;
                    self.pending.push_back(Event::Body(req.token));
                }
                if c.eof {
                    // The client went away (or closed its sending side, which
                    // HTTP/1.1 clients do only when they leave): the app is told.
                    self.close(key);
                }
                return;
            }
            if c.rbuf.is_empty() {
                // Draining: a connection that already served its requests is done;
                // a new one may still be sending its first (see `tick`).
                if c.eof || (self.draining && c.gen > 0) {
                    self.close(key);
                }
                return;
            }
            let (head, n) = match http::parse_head(&c.rbuf, max_head) {
                Ok(None) => {
                    if c.eof {
                        self.close(key);
                    }
                    return;
                }
                Ok(Some(v)) => v,
                Err(ParseError::Bad(m)) => return self.refuse(key, 400, m),
                Err(ParseError::HeadTooLarge) => {
                    return self.refuse(key, 431, "request header fields too large")
                }
            };
            c.rbuf.drain(..n);
            if let BodyKind::Length(l) = head.body {
                if max_body > 0 && l > max_body {
                    return self.refuse(key, 413, "request body too large");
                }
            }
            if max_inflight > 0 && self.inflight >= max_inflight {
                return self.refuse(key, 503, "service unavailable: too many requests in flight");
            }
            c.gen = c.gen.wrapping_add(1);
            let token = (key as u64) << 32 | c.gen as u64;
            let t = now();
            c.req = Some(Req {
                token,
                head_request: head.is_head(),
                http10: head.http10,
                keep_alive: head.keep_alive,
                body: match head.body {
                    BodyKind::Empty => BodyState::Done,
                    BodyKind::Length(n) => BodyState::Length(n),
                    BodyKind::Chunked => BodyState::Chunked(Chunked::default()),
                },
                body_buf: Vec::new(),
                body_seen: 0,
                recv_waiting: false,
                expect_continue: head.expect_continue,
                resp: Resp::NotStarted,
                status: 0,
                drain_waiting: false,
                started: t,
                progress: t,
            });
            let (client, server, tls) = (c.client, c.server, c.io.tls_info());
            self.inflight += 1;
            self.group.workers[self.index].inflight.fetch_add(1, Ordering::Relaxed);
            self.pending.push_back(Event::Request {
                token,
                head,
                client,
                server,
                tls,
            });
        }
    }

    /// Answers with an error and closes (no request in flight).
    fn refuse(&mut self, key: usize, status: u16, msg: &str) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        c.wbuf.extend_from_slice(&http::simple_response(status, msg));
        c.closing = true;
        c.rbuf.clear();
        if status >= 500 {
            self.stats().stats.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.flush(key);
    }

    /// The request in flight cannot go on (bad or oversized body): answer with an
    /// error if nothing was sent yet, tell the app, close.
    fn fail_request(&mut self, key: usize, status: u16, msg: &str) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let started = c.req.as_ref().is_some_and(|r| !matches!(r.resp, Resp::NotStarted));
        if started {
            self.close(key);
            return;
        }
        self.end_request(key, true);
        self.refuse(key, status, msg);
    }

    /// The request in flight is over (answered, or abandoned): counts it and, if
    /// `disconnect`, tells the app its connection is gone.
    fn end_request(&mut self, key: usize, disconnect: bool) -> Option<Req> {
        let req = self.conns.get_mut(key)?.req.take()?;
        self.inflight -= 1;
        let st = self.stats();
        st.inflight.fetch_sub(1, Ordering::Relaxed);
        if matches!(req.resp, Resp::Done) {
            st.stats.completed.fetch_add(1, Ordering::Relaxed);
            st.stats.record_latency(req.started.elapsed());
            if req.status >= 500 {
                st.stats.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        if disconnect {
            self.pending.push_back(Event::Disconnect(req.token));
        }
        Some(req)
    }

    /// Closes now; a request in flight is told its connection is gone.
    fn close(&mut self, key: usize) {
        if !self.conns.contains(key) {
            return;
        }
        self.end_request(key, true);
        let mut c = self.conns.remove(key);
        let _ = self.poll.registry().deregister(c.io.source());
        self.stats().connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Writes what it can of the output (and `extra` after it, whose unsent rest
    /// is buffered). Closes the connection on error, or when it is closing and
    /// everything is written.
    fn write_out(&mut self, key: usize, extra: &[u8]) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let mut extra_sent = 0;
        let mut failed = match c.io.push() {
            Ok(0) => false,
            Ok(_) => {
                c.wprogress = now();
                false
            }
            Err(_) => true,
        };
        while !failed && (c.unsent() > 0 || extra_sent < extra.len()) {
            let bufs = [IoSlice::new(&c.wbuf[c.wpos..]), IoSlice::new(&extra[extra_sent..])];
            match c.io.write_vectored(&bufs) {
                Ok(0) => {
                    failed = true;
                    break;
                }
                Ok(mut n) => {
                    c.wprogress = now();
                    let from_buf = n.min(c.unsent());
                    c.wpos += from_buf;
                    n -= from_buf;
                    extra_sent += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            self.close(key);
            return;
        }
        if c.unsent() == 0 {
            c.wbuf.clear();
            c.wpos = 0;
        } else if c.wpos > READ_CHUNK && c.wpos * 2 > c.wbuf.len() {
            c.wbuf.drain(..c.wpos);
            c.wpos = 0;
        }
        c.wbuf.extend_from_slice(&extra[extra_sent..]);
        if c.unsent() == 0 && c.closing && c.io.close_notify() && c.io.push().is_err() {
            self.close(key);
            return;
        }
        if c.unsent() == 0 && c.closing && !c.io.pending() {
            // Everything is written (TLS: with its close_notify): close for
            // writing, then read until the client closes too (or `LINGER`), so
            // unread input does not turn our close into a reset that destroys
            // the response.
            c.io.shutdown_write();
            c.lingering = true;
            c.since = now();
            c.rbuf = Vec::new();
            if c.eof {
                self.close(key);
            } else {
                self.read(key);
            }
            return;
        }
        if let Some(req) = c.req.as_mut() {
            if req.drain_waiting && c.wbuf.len() - c.wpos <= WRITE_HIGH {
                req.drain_waiting = false;
                self.pending.push_back(Event::Drain(req.token));
            }
        }
    }

    fn flush(&mut self, key: usize) {
        self.write_out(key, &[]);
    }

    /// The connection and its request in flight for `token`, if still current.
    fn find(&mut self, token: u64) -> Option<(usize, &mut Conn)> {
        let key = (token >> 32) as usize;
        let c = self.conns.get_mut(key)?;
        match &c.req {
            Some(r) if r.token == token => Some((key, c)),
            _ => None,
        }
    }

    pub fn recv(&mut self, token: u64) -> Recv {
        let Some((key, c)) = self.find(token) else {
            return Recv::Gone;
        };
        let req = c.req.as_mut().expect("found");
        let done = matches!(req.body, BodyState::Done);
        if req.body_buf.is_empty() && !done {
            req.recv_waiting = true;
            if req.expect_continue && matches!(req.resp, Resp::NotStarted) {
                req.expect_continue = false;
                c.wbuf.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                self.flush(key);
            }
            return Recv::Wait;
        }
        let data = std::mem::take(&mut req.body_buf);
        if !done {
            // Room again: resume a paused read, move buffered input.
            req.progress = now();
            if c.read_more {
                self.read(key);
            } else if !c.rbuf.is_empty() {
                self.advance(key);
            }
        }
        Recv::Data(data, !done)
    }

    /// Switches the request's connection to another protocol: writes `head` (the
    /// complete `101 Switching Protocols` response) and from then on hands the app
    /// every byte received (`recv`) and writes its bytes as they are (`body`; the
    /// last one closes the connection).
    pub fn upgrade(&mut self, token: u64, head: &[u8]) -> Result<bool, &'static str> {
        let Some((key, c)) = self.find(token) else {
            return Ok(false);
        };
        let req = c.req.as_mut().expect("found");
        if !matches!(req.resp, Resp::NotStarted) || !matches!(req.body, BodyState::Done) {
            return Err("the connection cannot be upgraded after a response started");
        }
        req.status = 101;
        req.resp = Resp::Sending(Framing::UntilClose);
        req.body = BodyState::Raw;
        req.keep_alive = false;
        c.wbuf.extend_from_slice(head);
        self.flush(key);
        self.advance(key);
        Ok(self.find(token).is_some())
    }

    pub fn start(&mut self, token: u64, head: RespHead) -> Result<bool, &'static str> {
        let Some((_, c)) = self.find(token) else {
            return Ok(false);
        };
        let req = c.req.as_mut().expect("found");
        if !matches!(req.resp, Resp::NotStarted) {
            return Err("http.response.start sent twice");
        }
        req.status = head.status;
        req.resp = Resp::Pending(head);
        Ok(true)
    }

    pub fn body(&mut self, token: u64, data: &[u8], more: bool) -> Result<u32, &'static str> {
        let draining = self.draining;
        let Some((key, c)) = self.find(token) else {
            return Ok(GONE | self.events_flag());
        };
        let req = c.req.as_mut().expect("found");
        let framing = match std::mem::replace(&mut req.resp, Resp::Done) {
            Resp::NotStarted => {
                req.resp = Resp::NotStarted;
                return Err("http.response.body sent before http.response.start");
            }
            Resp::Done => return Err("http.response.body sent after the response was complete"),
            Resp::Pending(h) => {
                let mut keep = req.keep_alive && !draining;
                let final_len = if more { None } else { Some(data.len() as u64) };
                let f = h.finish(&mut c.wbuf, req.head_request, req.http10, final_len, &mut keep);
                req.keep_alive = keep;
                f
            }
            Resp::Sending(f) => f,
        };
        let mut framing = framing;
        let mut direct: &[u8] = &[];
        match &mut framing {
            Framing::None => {}
            Framing::Length(left) => {
                if data.len() as u64 > *left {
                    req.resp = Resp::Sending(framing);
                    return Err("response body longer than its content-length");
                }
                *left -= data.len() as u64;
                direct = data;
            }
            Framing::UntilClose => direct = data,
            Framing::Chunked => {
                if !data.is_empty() {
                    c.wbuf.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                    c.wbuf.extend_from_slice(data);
                    c.wbuf.extend_from_slice(b"\r\n");
                }
                if !more {
                    c.wbuf.extend_from_slice(b"0\r\n\r\n");
                }
            }
        }
        if more {
            req.resp = Resp::Sending(framing);
        } else {
            if let Framing::Length(left) = framing {
                if left > 0 {
                    req.keep_alive = false; // short body: only closing can end it
                }
            }
            if matches!(framing, Framing::UntilClose) {
                req.keep_alive = false;
            }
        }
        self.write_out(key, direct);
        let Some((key, c)) = self.find(token) else {
            return Ok(GONE | self.events_flag());
        };
        let mut flags = 0;
        if more {
            let req = c.req.as_mut().expect("found");
            if c.wbuf.len() - c.wpos > WRITE_HIGH {
                req.drain_waiting = true;
                flags |= WAIT_DRAIN;
            }
        } else {
            self.finish_response(key);
        }
        Ok(flags | self.events_flag())
    }

    fn events_flag(&self) -> u32 {
        if self.pending.is_empty() {
            0
        } else {
            HAS_EVENTS
        }
    }

    /// The response is complete: the connection takes its next request (already
    /// buffered: pipelining) or closes.
    fn finish_response(&mut self, key: usize) {
        let draining = self.draining;
        let Some(req) = self.end_request(key, false) else {
            return;
        };
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let body_done = matches!(req.body, BodyState::Done);
        if !req.keep_alive || !body_done || draining || c.eof && c.rbuf.is_empty() {
            c.closing = true;
            self.flush(key);
            return;
        }
        c.since = now();
        if c.read_more {
            self.read(key);
        } else {
            self.advance(key);
        }
    }

    /// The app failed after starting its response (or abandoned it): the
    /// connection cannot carry a valid response any more, so it is closed.
    pub fn abort(&mut self, token: u64) {
        if let Some((key, _)) = self.find(token) {
            self.end_request(key, false);
            self.close(key);
        }
    }

    /// Graceful shutdown: stops accepting, closes idle connections; requests in
    /// flight finish, and their connections close after them.
    pub fn drain(&mut self) {
        // Connections already queued on our listeners are taken in (closing the
        // listener would reset them), and whatever every connection has sent is
        // read: requests that reached us are served.
        for i in 0..self.listeners.len() {
            self.accept_all(i);
        }
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for k in keys {
            self.read(k);
        }
        self.draining = true;
        for l in self.listeners.iter_mut() {
            let _ = match l {
                Listener::Tcp(l) => self.poll.registry().deregister(l),
                Listener::Unix(l) => self.poll.registry().deregister(l),
            };
        }
        self.listeners.clear();
        let idle: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.req.is_none() && !c.has_output() && c.rbuf.is_empty() && c.gen > 0)
            .map(|(k, _)| k)
            .collect();
        for k in idle {
            self.close(k);
        }
    }

    /// Closes every connection (requests still in flight are told).
    pub fn close_all(&mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for k in keys {
            self.close(k);
        }
    }

    fn tick(&mut self) {
        let t = now();
        let l = &self.limits;
        let mut expired = Vec::new();
        for (k, c) in self.conns.iter() {
            let stalled_write = c.has_output() && t - c.wprogress > l.slow_client;
            let late = if c.lingering {
                t - c.since > LINGER
            } else if let Some(r) = &c.req {
                // An upgraded connection waits for its client as long as the app does.
                let raw = matches!(r.body, BodyState::Raw);
                (r.recv_waiting && !raw && t - r.progress > l.slow_client) || stalled_write
            } else if c.rbuf.is_empty() && !c.has_output() {
                // Draining: a connection that has sent nothing yet had its chance.
                t - c.since > if self.draining { DRAIN_GRACE } else { l.keep_alive }
            } else if c.rbuf.is_empty() {
                // The last response is still being taken: as long as it moves.
                stalled_write
            } else {
                t - c.since > l.slow_client || stalled_write
            };
            if late {
                expired.push(k);
            }
        }
        for k in expired {
            self.close(k);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.close_all();
        self.group.remove_waker(&self.waker);
    }
}
