//! HTTP/1.1 framing, without I/O and without Python: request heads (parsed by
//! httparse), request bodies (Content-Length or chunked, decoded as bytes arrive),
//! response heads and body framing.
use std::cell::RefCell;
use std::time::SystemTime;

/// Most request headers accepted; more is answered with 431.
pub const MAX_HEADERS: usize = 100;
/// Longest chunk-size line (with extensions) or trailer section accepted.
const MAX_CHUNK_LINE: usize = 4096;

#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Malformed request: 400.
    Bad(&'static str),
    /// Request head over the size limit or with too many headers: 431.
    HeadTooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Empty,
    Length(u64),
    Chunked,
}

/// A parsed request head (what the ASGI scope is built from).
#[derive(Debug)]
pub struct Head {
    pub method: String,
    /// The request target's path, as sent (still percent-encoded).
    pub raw_path: Vec<u8>,
    pub query: Vec<u8>,
    pub http10: bool,
    /// Names lowercased, values as sent.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub body: BodyKind,
    pub keep_alive: bool,
    pub expect_continue: bool,
    /// A WebSocket opening handshake (`Upgrade: websocket`, `Connection: upgrade`).
    pub websocket: bool,
}

impl Head {
    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}

fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Parses one request head at the start of `buf`: `Ok(Some((head, length)))`,
/// `Ok(None)` when more bytes are needed, or the error to answer with.
pub fn parse_head(buf: &[u8], max_head: usize) -> Result<Option<(Head, usize)>, ParseError> {
    let mut hdrs = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut hdrs);
    let n = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > max_head {
                Err(ParseError::HeadTooLarge)
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(ParseError::HeadTooLarge),
        Err(_) => return Err(ParseError::Bad("malformed request head")),
    };
    if n > max_head {
        return Err(ParseError::HeadTooLarge);
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(ParseError::Bad("incomplete request line"));
    };
    let http10 = version == 0;
    let target = target.as_bytes();
    // Absolute form (sent to proxies) is accepted; the scope gets its path.
    let target = if let Some(rest) = target
        .strip_prefix(b"http://")
        .or_else(|| target.strip_prefix(b"https://"))
    {
        match rest.iter().position(|&b| b == b'/') {
            Some(i) => &rest[i..],
            None => b"/",
        }
    } else {
        target
    };
    if !(target.starts_with(b"/") || target == b"*") {
        return Err(ParseError::Bad("bad request target"));
    }
    let (raw_path, query) = match target.iter().position(|&b| b == b'?') {
        Some(i) => (&target[..i], &target[i + 1..]),
        None => (target, &b""[..]),
    };
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut conn_close = false;
    let mut conn_keep = false;
    let mut expect_continue = false;
    let mut conn_upgrade = false;
    let mut upgrade_ws = false;
    let mut headers = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name = h.name.as_bytes().to_ascii_lowercase();
        match name.as_slice() {
            b"content-length" => {
                let v = h.value.trim_ascii();
                if v.is_empty() || !v.iter().all(u8::is_ascii_digit) || v.len() > 19 {
                    return Err(ParseError::Bad("bad Content-Length"));
                }
                let v: u64 = std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or(ParseError::Bad("bad Content-Length"))?;
                if length.is_some_and(|l| l != v) {
                    return Err(ParseError::Bad("conflicting Content-Length headers"));
                }
                length = Some(v);
            }
            b"transfer-encoding" => {
                // Only chunked is understood; it must be the final coding.
                let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
                if !last.trim_ascii().eq_ignore_ascii_case(b"chunked") || http10 {
                    return Err(ParseError::Bad("unsupported Transfer-Encoding"));
                }
                chunked = true;
            }
            b"connection" => {
                conn_close |= has_token(h.value, "close");
                conn_keep |= has_token(h.value, "keep-alive");
                conn_upgrade |= has_token(h.value, "upgrade");
            }
            b"upgrade" => upgrade_ws |= has_token(h.value, "websocket"),
            b"expect" => {
                expect_continue = h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
            }
            _ => {}
        }
        headers.push((name, h.value.to_vec()));
    }
    if chunked && length.is_some() {
        // RFC 9112 6.3: a message with both is a smuggling attempt; refuse it.
        return Err(ParseError::Bad("both Content-Length and Transfer-Encoding"));
    }
    let body = match (chunked, length) {
        (true, _) => BodyKind::Chunked,
        (false, Some(0)) | (false, None) => BodyKind::Empty,
        (false, Some(n)) => BodyKind::Length(n),
    };
    let keep_alive = if http10 { conn_keep && !conn_close } else { !conn_close };
    Ok(Some((
        Head {
            method: method.to_owned(),
            raw_path: raw_path.to_vec(),
            query: query.to_vec(),
            http10,
            headers,
            body,
            keep_alive,
            expect_continue: expect_continue && !http10 && body != BodyKind::Empty,
            websocket: conn_upgrade && upgrade_ws && !http10 && method == "GET" && body == BodyKind::Empty,
        },
        n,
    )))
}

/// Percent-decodes a path (ASGI's `path`; invalid UTF-8 becomes U+FFFD, as
/// `urllib.parse.unquote` does).
pub fn decode_path(raw: &[u8]) -> String {
    if !raw.contains(&b'%') {
        return String::from_utf8_lossy(raw).into_owned();
    }
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' && i + 2 < raw.len() {
            if let (Some(h), Some(l)) = (hex(raw[i + 1]), hex(raw[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Debug)]
enum ChunkState {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

/// Incremental decoder of a chunked request body.
#[derive(Debug)]
pub struct Chunked {
    state: ChunkState,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked {
            state: ChunkState::Size,
        }
    }
}

impl Chunked {
    pub fn is_done(&self) -> bool {
        matches!(self.state, ChunkState::Done)
    }

    /// Decodes from `input` into `out` (at most `room` data bytes); returns how many
    /// input bytes were consumed.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>, room: usize) -> Result<usize, ParseError> {
        let mut pos = 0;
        let mut room = room;
        loop {
            let rest = &input[pos..];
            match self.state {
                ChunkState::Done => return Ok(pos),
                ChunkState::Size => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((n, size))) => {
                        pos += n;
                        self.state = if size == 0 {
                            ChunkState::Trailers
                        } else {
                            ChunkState::Data(size)
                        };
                    }
                    Ok(httparse::Status::Partial) => {
                        if rest.len() > MAX_CHUNK_LINE {
                            return Err(ParseError::Bad("chunk size line too long"));
                        }
                        return Ok(pos);
                    }
                    Err(_) => return Err(ParseError::Bad("bad chunk size")),
                },
                ChunkState::Data(left) => {
                    let take = (left.min(rest.len() as u64) as usize).min(room);
                    if take == 0 {
                        return Ok(pos);
                    }
                    out.extend_from_slice(&rest[..take]);
                    pos += take;
                    room -= take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::DataEnd => {
                    if rest.len() < 2 {
                        return Ok(pos);
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(ParseError::Bad("chunk data not followed by CRLF"));
                    }
                    pos += 2;
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    // Trailer fields are read and dropped; an empty line ends them.
                    match rest.windows(2).position(|w| w == b"\r\n") {
                        Some(0) => {
                            pos += 2;
                            self.state = ChunkState::Done;
                        }
                        Some(i) => pos += i + 2,
                        None => {
                            if rest.len() > MAX_CHUNK_LINE {
                                return Err(ParseError::Bad("trailer section too long"));
                            }
                            return Ok(pos);
                        }
                    }
                }
            }
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

thread_local! {
    static DATE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
}

/// Appends `date: <now>\r\n`, formatted at most once a second per thread.
fn push_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs || d.1.is_empty() {
            *d = (secs, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(d.1.as_bytes());
        out.extend_from_slice(b"\r\n");
    });
}

/// How a response body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body bytes are written (HEAD, 1xx, 204, 304).
    None,
    /// Content-Length: this many bytes are still expected.
    Length(u64),
    Chunked,
    /// HTTP/1.0 without a length: the body ends when the connection closes.
    UntilClose,
}

/// A response head being built from the app's `http.response.start`.
#[derive(Debug)]
pub struct RespHead {
    pub status: u16,
    buf: Vec<u8>,
    length: Option<u64>,
    app_chunked: bool,
    app_close: bool,
    has_server: bool,
    has_date: bool,
}

impl RespHead {
    pub fn new(status: u16) -> Result<Self, &'static str> {
        if !(100..=999).contains(&status) {
            return Err("status must be an int in 100..999");
        }
        if status == 101 {
            return Err("status 101 (protocol upgrade) is not supported on http connections");
        }
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(b"HTTP/1.1 ");
        buf.extend_from_slice(status.to_string().as_bytes());
        buf.push(b' ');
        buf.extend_from_slice(reason(status).as_bytes());
        buf.extend_from_slice(b"\r\n");
        Ok(RespHead {
            status,
            buf,
            length: None,
            app_chunked: false,
            app_close: false,
            has_server: false,
            has_date: false,
        })
    }

    pub fn header(&mut self, name: &[u8], value: &[u8]) -> Result<(), &'static str> {
        let token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
        if name.is_empty() || !name.iter().all(token) {
            return Err("invalid response header name");
        }
        if value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
            return Err("response header value contains CR, LF or NUL");
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let v = std::str::from_utf8(value.trim_ascii())
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or("invalid content-length response header")?;
            self.length = Some(v);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if !has_token(value, "chunked") {
                return Err("only 'chunked' transfer-encoding is supported in responses");
            }
            // The server writes the chunk framing itself (and this header, below).
            self.app_chunked = true;
            return Ok(());
        } else if name.eq_ignore_ascii_case(b"connection") {
            self.app_close |= has_token(value, "close");
            if !has_token(value, "close") {
                return Ok(()); // hop-by-hop: the server decides keep-alive
            }
        } else if name.eq_ignore_ascii_case(b"server") {
            self.has_server = true;
        } else if name.eq_ignore_ascii_case(b"date") {
            self.has_date = true;
        }
        self.buf.extend_from_slice(name);
        self.buf.extend_from_slice(b": ");
        self.buf.extend_from_slice(value);
        self.buf.extend_from_slice(b"\r\n");
        Ok(())
    }

    /// Ends the head: picks the framing and writes the head into `out`.
    /// `final_len` is the body's whole length when the first body message is also
    /// the last; `keep_alive` may be turned off (close-delimited body).
    pub fn finish(
        mut self,
        out: &mut Vec<u8>,
        head_request: bool,
        http10: bool,
        final_len: Option<u64>,
        keep_alive: &mut bool,
    ) -> Framing {
        let no_body = head_request || self.status < 200 || self.status == 204 || self.status == 304;
        let framing = if let Some(n) = self.length {
            if no_body {
                Framing::None
            } else {
                Framing::Length(n)
            }
        } else if self.status < 200 || self.status == 204 || self.status == 304 {
            Framing::None
        } else if let (Some(n), false) = (final_len, self.app_chunked) {
            self.buf.extend_from_slice(b"content-length: ");
            self.buf.extend_from_slice(n.to_string().as_bytes());
            self.buf.extend_from_slice(b"\r\n");
            if no_body {
                Framing::None
            } else {
                Framing::Length(n)
            }
        } else if !http10 {
            self.buf.extend_from_slice(b"transfer-encoding: chunked\r\n");
            if no_body {
                Framing::None
            } else {
                Framing::Chunked
            }
        } else {
            *keep_alive = false;
            if no_body {
                Framing::None
            } else {
                Framing::UntilClose
            }
        };
        if self.app_close {
            *keep_alive = false;
        } else if !*keep_alive {
            self.buf.extend_from_slice(b"connection: close\r\n");
        } else if http10 {
            self.buf.extend_from_slice(b"connection: keep-alive\r\n");
        }
        if !self.has_server {
            self.buf.extend_from_slice(b"server: interloop\r\n");
        }
        if !self.has_date {
            push_date(&mut self.buf);
        }
        self.buf.extend_from_slice(b"\r\n");
        if out.is_empty() {
            *out = self.buf;
        } else {
            out.extend_from_slice(&self.buf);
        }
        framing
    }
}

/// A complete error response the server sends on its own (then closes).
pub fn simple_response(status: u16, body: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut h = RespHead::new(status).expect("valid status");
    h.header(b"content-type", b"text/plain; charset=utf-8").expect("valid header");
    let mut keep = false;
    h.finish(&mut out, false, false, Some(body.len() as u64), &mut keep);
    out.extend_from_slice(body.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_head_and_its_framing() {
        let raw = b"POST /a%20b/c?x=1&y=2 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nX-Y: z\r\n\r\nhello";
        let (h, n) = parse_head(raw, 65536).unwrap().unwrap();
        assert_eq!(n, raw.len() - 5);
        assert_eq!(h.method, "POST");
        assert_eq!(h.raw_path, b"/a%20b/c");
        assert_eq!(decode_path(&h.raw_path), "/a b/c");
        assert_eq!(h.query, b"x=1&y=2");
        assert_eq!(h.body, BodyKind::Length(5));
        assert!(h.keep_alive && !h.http10);
        assert_eq!(h.headers[2], (b"x-y".to_vec(), b"z".to_vec()));
    }

    #[test]
    fn partial_bad_and_oversized_heads() {
        assert!(parse_head(b"GET / HTTP/1.1\r\nHost:", 65536).unwrap().is_none());
        assert!(matches!(parse_head(b"GET / HTTP/1.1\r\nHo st: x\r\n\r\n", 65536), Err(ParseError::Bad(_))));
        assert!(matches!(parse_head(b"GARBAGE\r\n\r\n", 65536), Err(ParseError::Bad(_))));
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(200));
        assert_eq!(parse_head(big.as_bytes(), 100).unwrap_err(), ParseError::HeadTooLarge);
        assert_eq!(parse_head(&big.as_bytes()[..150], 100).unwrap_err(), ParseError::HeadTooLarge);
        let many: String = (0..150).map(|i| format!("X{i}: v\r\n")).collect();
        let req = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse_head(req.as_bytes(), 1 << 20).unwrap_err(), ParseError::HeadTooLarge);
        let smuggle = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(parse_head(smuggle, 65536), Err(ParseError::Bad(_))));
        let two = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n";
        assert!(matches!(parse_head(two, 65536), Err(ParseError::Bad(_))));
    }

    #[test]
    fn keep_alive_rules() {
        let k = |r: &[u8]| parse_head(r, 65536).unwrap().unwrap().0.keep_alive;
        assert!(k(b"GET / HTTP/1.1\r\n\r\n"));
        assert!(!k(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!k(b"GET / HTTP/1.0\r\n\r\n"));
        let ws = |r: &[u8]| parse_head(r, 65536).unwrap().unwrap().0.websocket;
        assert!(ws(b"GET / HTTP/1.1\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n\r\n"));
        assert!(!ws(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"));
        assert!(!ws(b"POST / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"));
        assert!(k(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    }

    #[test]
    fn chunked_bodies_decode_across_splits() {
        let body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        for split in 0..body.len() {
            let mut d = Chunked::default();
            let mut out = Vec::new();
            let mut buf = body[..split].to_vec();
            let used = d.decode(&buf, &mut out, usize::MAX).unwrap();
            buf.drain(..used);
            buf.extend_from_slice(&body[split..]);
            let used = d.decode(&buf, &mut out, usize::MAX).unwrap();
            assert!(d.is_done(), "split {split}");
            assert_eq!(out, b"hello world");
            assert_eq!(&buf[used..], b"NEXT");
        }
        let mut d = Chunked::default();
        assert!(d.decode(b"zz\r\n", &mut Vec::new(), 10).is_err());
        let mut d = Chunked::default();
        assert!(d.decode(b"2\r\nabXY", &mut Vec::new(), 10).is_err());
    }

    #[test]
    fn response_framing() {
        let mut out = Vec::new();
        let mut keep = true;
        let h = RespHead::new(200).unwrap();
        assert_eq!(h.finish(&mut out, false, false, Some(3), &mut keep), Framing::Length(3));
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 200 OK\r\ncontent-length: 3\r\nserver: interloop\r\ndate: "));
        let mut out = Vec::new();
        assert_eq!(RespHead::new(200).unwrap().finish(&mut out, false, false, None, &mut keep), Framing::Chunked);
        let mut out = Vec::new();
        assert_eq!(RespHead::new(200).unwrap().finish(&mut out, true, false, Some(9), &mut keep), Framing::None);
        assert!(String::from_utf8(out).unwrap().contains("content-length: 9\r\n"));
        let mut out = Vec::new();
        assert_eq!(RespHead::new(200).unwrap().finish(&mut out, false, true, None, &mut keep), Framing::UntilClose);
        assert!(!keep);
        let mut h = RespHead::new(200).unwrap();
        assert!(h.header(b"x", b"a\r\nb").is_err());
        assert!(h.header(b"bad name", b"v").is_err());
        assert!(RespHead::new(42).is_err());
    }
}
