//! The HTTP/1.1 client for upstream connections. The request's own task writes the request
//! head (encoded straight from the gateway's view of the request) and reads the response from
//! the socket: no connection task, no channels, no second request representation. A response
//! body that arrived with its head is returned whole, and the connection goes back to the pool
//! before the handler sees the response; longer bodies stream from the connection and return
//! it when they end.
//!
//! Parsing is strict, because a pooled connection that lost track of message boundaries would
//! hand one client another client's response: a Content-Length that does not parse or differs
//! between copies, Transfer-Encoding together with Content-Length, malformed chunk framing, or
//! bytes after a complete response all fail the response and close the connection.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::body::ProxyBody;
use crate::guard::chunked::{Dechunk, Step};
use crate::guard::parse_content_length;
use crate::h1server::WireHead;
use crate::timer::ConnTimer;
use crate::upstream::Slot;

/// Longest response head accepted from an upstream.
const MAX_HEAD: usize = 64 * 1024;
/// Most response header fields accepted from an upstream.
const MAX_HEADERS: usize = 128;
/// Longest trailer section of a chunked response.
const MAX_TRAILERS: usize = 16 * 1024;
/// Bodies up to this size are copied behind the head and sent in one write.
const COALESCE: usize = 16 * 1024;
/// Read size for response bodies.
const BODY_READ: usize = 32 * 1024;

/// The transport under a connection: plain TCP or TLS.
pub enum Io {
    /// Plain text.
    Plain(TcpStream),
    /// rustls over TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    /// The socket failed.
    #[error("upstream connection failed: {0}")]
    Io(#[from] io::Error),
    /// The upstream closed the connection before a complete response.
    #[error("upstream closed the connection before a complete response")]
    Closed,
    /// The response broke HTTP/1.1 framing or syntax.
    #[error("invalid response from upstream: {0}")]
    Invalid(&'static str),
    /// The request body stream failed (client went away or a size limit tripped).
    #[error("request body failed: {0}")]
    RequestBody(String),
    /// No complete response head before the read timeout.
    #[error("upstream timed out")]
    TimedOut,
}

/// A failed exchange.
pub struct SendFailure {
    /// The request body, when nothing of the request was written.
    pub unsent: Option<ProxyBody>,
    /// No byte of a response arrived and the connection was closed or reset: on a reused
    /// connection, the upstream had closed it while idle.
    pub incomplete: bool,
    /// The cause.
    pub error: H1Error,
}

impl SendFailure {
    fn new(error: H1Error, received: bool) -> SendFailure {
        let incomplete = !received
            && match &error {
                H1Error::Closed => true,
                H1Error::Io(e) => matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::BrokenPipe
                        | io::ErrorKind::UnexpectedEof
                ),
                _ => false,
            };
        SendFailure {
            unsent: None,
            incomplete,
            error,
        }
    }
}

/// Where a connection goes when its response has been read.
pub struct Home {
    /// The endpoint's idle connections.
    pub slot: Arc<Slot>,
    /// When the request left: a connection whose whole response came with its head counts
    /// as idle from then (a little early, which only errs towards closing it sooner), so
    /// checking it in reads no clock.
    pub sent_at: std::time::Instant,
}

impl Home {
    /// Returns the connection; idle since the request left.
    fn checkin(self, conn: Box<Conn>) {
        self.slot.checkin_h1(conn, self.sent_at);
    }

    /// Returns the connection after a streamed body: idle from now.
    fn checkin_now(self, conn: Box<Conn>) {
        self.slot.checkin_h1(conn, std::time::Instant::now());
    }
}

/// One upstream HTTP/1.1 connection.
pub struct Conn {
    io: Io,
    /// Bytes read and not yet consumed.
    buf: BytesMut,
    /// The read timeout of the exchange in progress (kept with the connection, so a pooled
    /// connection's requests cost no timer registration).
    timer: ConnTimer,
    /// The longest wait for the next bytes of a response body (the service's `read_timeout`,
    /// which Kong applies between two successive reads).
    read_timeout: Duration,
}

impl Conn {
    /// Wraps a connected transport.
    pub fn new(io: Io) -> Conn {
        Conn {
            io,
            buf: BytesMut::with_capacity(8 * 1024),
            timer: ConnTimer::default(),
            read_timeout: Duration::from_secs(60),
        }
    }

    /// The local port of a plain connection (tests tell connections apart by it).
    #[cfg(test)]
    pub(crate) fn local_port(&self) -> u16 {
        match &self.io {
            Io::Plain(s) => s.local_addr().map_or(0, |a| a.port()),
            Io::Tls(_) => 0,
        }
    }

    /// Whether an idle pooled connection can carry a request: not closed by the upstream and
    /// without unsolicited bytes. Costs no system call unless the socket became readable.
    pub fn is_reusable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut one = [0u8; 1];
        let mut rb = ReadBuf::new(&mut one);
        // Pending: nothing to read, so open and idle. Ready: end of stream, an error, or
        // bytes nobody asked for.
        Pin::new(&mut self.io)
            .poll_read(&mut cx, &mut rb)
            .is_pending()
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < want / 4 {
            self.buf.reserve(want);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    /// Sends one request and reads the response head. `head` is the encoded request head
    /// without its final empty line and without any Content-Length or Transfer-Encoding: the
    /// body's framing is added here, from the body itself (in memory: its length) or from
    /// `declared` (a streamed body's one Content-Length, which it must match exactly; none:
    /// chunked). `zero_length` asks for `content-length: 0` on an empty body. `home` is where
    /// the connection goes once the response has been read completely and may be reused.
    ///
    /// The request body is written while the response is read, so an upstream that answers
    /// before it has read the whole body (a 413, say) is heard; the connection is then not
    /// reused. Without a response head within `read_timeout` of `home.sent_at` (the caller's
    /// clock reading as the request leaves) the exchange fails with
    /// [`H1Error::TimedOut`]; the response body then fails the same way when `read_timeout`
    /// passes with no byte of it arriving.
    #[allow(clippy::too_many_arguments)] // one call site; a struct would only rename the list
    pub async fn send(
        mut self: Box<Self>,
        mut head: BytesMut,
        body: ProxyBody,
        declared: Option<u64>,
        zero_length: bool,
        head_request: bool,
        home: Home,
        read_timeout: Duration,
        wire: Option<Wire<'_>>,
    ) -> Result<Response<RawBody>, SendFailure> {
        let deadline = tokio::time::Instant::from_std(home.sent_at) + read_timeout;
        self.read_timeout = read_timeout;
        let chunked = frame_request(&mut head, &body, declared, zero_length);
        head.extend_from_slice(b"\r\n");
        // Small bodies in memory leave in the same write as the head (kept for a retry).
        let (body, coalesced) = match body {
            ProxyBody::Full(Some(b)) if b.len() <= COALESCE => {
                head.extend_from_slice(&b);
                (ProxyBody::Empty, Some(b))
            }
            other => (other, None),
        };
        // Leaves with the other writes of this scheduler pass (see `batch`).
        crate::batch::before_write().await;
        // The first write decides whether anything of the request left.
        let mut written = 0;
        while written < head.len() {
            let res = poll_fn(
                |cx| match Pin::new(&mut self.io).poll_write(cx, &head[written..]) {
                    Poll::Pending if self.timer.passed(deadline, cx) => {
                        Poll::Ready(Err(io::ErrorKind::TimedOut.into()))
                    }
                    p => p,
                },
            )
            .await;
            let error = match res {
                Ok(0) => H1Error::Closed,
                Err(e) if e.kind() == io::ErrorKind::TimedOut => H1Error::TimedOut,
                Ok(n) => {
                    written += n;
                    continue;
                }
                Err(e) => H1Error::Io(e),
            };
            let mut f = SendFailure::new(error, false);
            if written == 0 {
                f.unsent = Some(match coalesced {
                    Some(b) => ProxyBody::Full(Some(b)),
                    None => body,
                });
            }
            return Err(f);
        }
        let mut writer = BodyWriter::new(body, chunked, declared);
        let mut written_all = false;
        let mut write_error: Option<H1Error> = None;
        let mut received = false;
        let parsed = poll_fn(|cx| {
            if !written_all && write_error.is_none() {
                match writer.poll_write(&mut self.io, cx) {
                    Poll::Ready(Ok(())) => written_all = true,
                    // The client's body failed or broke its length: nothing sensible can
                    // follow on this connection.
                    Poll::Ready(Err(e @ H1Error::RequestBody(_))) => {
                        return Poll::Ready(Err(SendFailure::new(e, received)))
                    }
                    // The upstream may have answered early and stopped reading: keep reading.
                    Poll::Ready(Err(e)) => write_error = Some(e),
                    Poll::Pending => {}
                }
            }
            loop {
                if !self.buf.is_empty() {
                    match parse_head(&self.buf, wire) {
                        Err(e) => return Poll::Ready(Err(SendFailure::new(e, true))),
                        Ok(None) if self.buf.len() > MAX_HEAD => {
                            return Poll::Ready(Err(SendFailure::new(
                                H1Error::Invalid("response head too large"),
                                true,
                            )))
                        }
                        Ok(None) => {}
                        Ok(Some(parsed)) => {
                            self.buf.advance(parsed.len);
                            let status = parsed.response.status();
                            if status.is_informational()
                                && status != StatusCode::SWITCHING_PROTOCOLS
                            {
                                continue;
                            }
                            return Poll::Ready(Ok(parsed));
                        }
                    }
                }
                match self.poll_fill(cx, 8 * 1024) {
                    Poll::Pending => break,
                    Poll::Ready(Ok(0)) => {
                        let error = match write_error.take() {
                            Some(e) => e,
                            None if received => {
                                H1Error::Invalid("connection closed inside the response head")
                            }
                            None => H1Error::Closed,
                        };
                        return Poll::Ready(Err(SendFailure::new(error, received)));
                    }
                    Poll::Ready(Ok(_)) => received = true,
                    Poll::Ready(Err(e)) => {
                        return Poll::Ready(Err(SendFailure::new(H1Error::Io(e), received)))
                    }
                }
            }
            if self.timer.passed(deadline, cx) {
                return Poll::Ready(Err(SendFailure::new(H1Error::TimedOut, true)));
            }
            Poll::Pending
        })
        .await?;
        // A response before the whole request was written (an early answer, or after a failed
        // write): the connection's state is unknown, so it is not reused.
        let home = written_all.then_some(home);
        self.start_body(parsed, head_request, home)
            .map_err(|e| SendFailure::new(e, true))
    }

    fn start_body(
        mut self: Box<Self>,
        parsed: Parsed,
        head_request: bool,
        home: Option<Home>,
    ) -> Result<Response<RawBody>, H1Error> {
        let Parsed {
            mut response,
            framing,
            keep_alive,
            wire,
            ..
        } = parsed;
        let status = response.status();
        // The body's per-read timeout starts at its first wait.
        self.timer.clear();
        if status == StatusCode::SWITCHING_PROTOCOLS {
            *response.body_mut() = RawBody {
                state: State::Upgraded(self),
                wire,
            };
            return Ok(response);
        }
        let bodiless =
            head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
        let framing = if bodiless {
            BodyFraming::Length(0)
        } else {
            framing
        };
        let home = home.filter(|_| keep_alive && !matches!(framing, BodyFraming::Close));
        let state = match framing {
            BodyFraming::Length(n) if (self.buf.len() as u64) >= n => {
                // The whole body came with the head (the common case for small responses).
                if self.buf.len() as u64 > n {
                    return Err(H1Error::Invalid("bytes after the response body"));
                }
                let data = self.buf.split().freeze();
                if let Some(home) = home {
                    home.checkin(self);
                }
                State::Whole(Some(data).filter(|d| !d.is_empty()))
            }
            BodyFraming::Length(n) => State::Length {
                conn: self,
                remaining: n,
                home,
            },
            BodyFraming::Chunked => State::Chunked {
                conn: self,
                dec: ResponseDechunk::default(),
                home,
            },
            BodyFraming::Close => State::Close { conn: self },
        };
        *response.body_mut() = RawBody { state, wire };
        Ok(response)
    }
}

/// Adds the body's framing header to the request head; true when the body goes chunked.
fn frame_request(
    head: &mut BytesMut,
    body: &ProxyBody,
    declared: Option<u64>,
    zero_length: bool,
) -> bool {
    let length = match body {
        // A body in memory is always sent with its own length.
        ProxyBody::Full(Some(b)) => Some(b.len() as u64),
        ProxyBody::Empty | ProxyBody::Full(None) => zero_length.then_some(0),
        _ => match declared {
            Some(n) => Some(n),
            None => {
                head.extend_from_slice(b"transfer-encoding: chunked\r\n");
                return true;
            }
        },
    };
    if let Some(n) = length {
        head.extend_from_slice(b"content-length: ");
        head.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    false
}

/// Writes a request body after its head: frames as they come from the client (chunk-encoded,
/// or counted against the declared length), vectored, flushed before waiting for more.
struct BodyWriter {
    body: ProxyBody,
    chunked: bool,
    /// Bytes still owed to a declared Content-Length.
    left: Option<u64>,
    queue: std::collections::VecDeque<Bytes>,
    ended: bool,
}

impl BodyWriter {
    fn new(body: ProxyBody, chunked: bool, declared: Option<u64>) -> BodyWriter {
        let left = match &body {
            ProxyBody::Empty => Some(0),
            ProxyBody::Full(b) => Some(b.as_ref().map_or(0, |b| b.len() as u64)),
            _ if chunked => None,
            _ => declared,
        };
        BodyWriter {
            body,
            chunked,
            left,
            queue: std::collections::VecDeque::new(),
            ended: false,
        }
    }

    /// Ready(Ok) once everything is written and flushed.
    fn poll_write(&mut self, io: &mut Io, cx: &mut Context<'_>) -> Poll<Result<(), H1Error>> {
        loop {
            if !self.queue.is_empty() {
                let mut slices = [io::IoSlice::new(&[]); 4];
                let n = self.queue.len().min(4);
                for (slot, b) in slices.iter_mut().zip(self.queue.iter()) {
                    *slot = io::IoSlice::new(b);
                }
                match Pin::new(&mut *io).poll_write_vectored(cx, &slices[..n]) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(H1Error::Io(e))),
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(H1Error::Closed)),
                    Poll::Ready(Ok(mut k)) => {
                        while k > 0 {
                            let Some(front) = self.queue.front_mut() else {
                                break;
                            };
                            let take = k.min(front.len());
                            front.advance(take);
                            k -= take;
                            if front.is_empty() {
                                self.queue.pop_front();
                            }
                        }
                    }
                }
                continue;
            }
            if self.ended {
                // rustls may hold written bytes until flushed.
                return Pin::new(&mut *io).poll_flush(cx).map_err(H1Error::Io);
            }
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => {
                    // Everything so far leaves before waiting for the client.
                    if let Poll::Ready(Err(e)) = Pin::new(&mut *io).poll_flush(cx) {
                        return Poll::Ready(Err(H1Error::Io(e)));
                    }
                    return Poll::Pending;
                }
                Poll::Ready(None) => {
                    if self.left.is_some_and(|l| l > 0) {
                        return Poll::Ready(Err(H1Error::RequestBody(
                            "body shorter than its Content-Length".into(),
                        )));
                    }
                    if self.chunked {
                        self.queue.push_back(Bytes::from_static(b"0\r\n\r\n"));
                    }
                    self.ended = true;
                }
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Err(H1Error::RequestBody(e.to_string())))
                }
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers are not forwarded to HTTP/1 upstreams.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    if let Some(left) = &mut self.left {
                        let n = data.len() as u64;
                        if n > *left {
                            return Poll::Ready(Err(H1Error::RequestBody(
                                "body longer than its Content-Length".into(),
                            )));
                        }
                        *left -= n;
                    }
                    if self.chunked {
                        self.queue
                            .push_back(Bytes::from(format!("{:X}\r\n", data.len())));
                        self.queue.push_back(data);
                        self.queue.push_back(Bytes::from_static(b"\r\n"));
                    } else {
                        self.queue.push_back(data);
                    }
                }
            }
        }
    }
}

/// How a response body is delimited (RFC 9112 §6.3).
enum BodyFraming {
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection.
    Close,
}

struct Parsed {
    len: usize,
    response: Response<RawBody>,
    framing: BodyFraming,
    keep_alive: bool,
    /// Wire mode: the header lines, and which watched names appeared.
    wire: Option<(WireHead, u64)>,
}

/// Room left in a wire head's buffer for the lines the gateway adds (request id, latencies).
const WIRE_EXTRA: usize = 192;

/// Asks for a response's headers as encoded lines ([`WireHead`], carried by the [`RawBody`])
/// instead of a `HeaderMap`: for a response that goes to an HTTP/1 client on a route whose
/// plugins name the few headers they touch (those still go into the map, see [`Wire`]).
/// Hop-by-hop and framing headers are removed either way.
#[derive(Debug, Default)]
pub struct WireRules {
    /// Further names to remove (lower case): the fingerprint headers under response
    /// hardening, and the headers the gateway sets itself (request id, latencies), which
    /// replace the upstream's.
    drop: Vec<HeaderName>,
    /// Names (lower case, at most 64) whose presence in the lines is reported as bits, by
    /// position: the configured security headers, added only when the upstream did not send
    /// them.
    watch: Vec<HeaderName>,
    /// Bit `n` is set when a `drop` or `watch` name is `n` bytes long (bit 63: 63 or more),
    /// so most upstream header names are relayed without a compare against either list.
    lengths: u64,
}

impl WireRules {
    /// Rules from the names to drop and the names to watch (at most 64).
    pub fn new(drop: Vec<HeaderName>, watch: Vec<HeaderName>) -> WireRules {
        let lengths = drop
            .iter()
            .chain(&watch)
            .fold(0, |m, n| m | length_bit(n.as_str().len()));
        WireRules {
            drop,
            watch,
            lengths,
        }
    }

    /// Does some `drop` or `watch` name have `name`'s length (else neither list can hold it)?
    fn may_list(&self, name: &[u8]) -> bool {
        self.lengths & length_bit(name.len()) != 0
    }

    /// Is `name` (any case) one the lines leave out: a header the gateway sets itself, or a
    /// fingerprint under hardening?
    pub fn drops(&self, name: &[u8]) -> bool {
        self.may_list(name)
            && self
                .drop
                .iter()
                .any(|d| name.eq_ignore_ascii_case(d.as_ref()))
    }

    /// `name`'s bit among the watched names (by position; 0 when not watched).
    fn watched(&self, name: &[u8]) -> u64 {
        if !self.may_list(name) {
            return 0;
        }
        self.watch
            .iter()
            .enumerate()
            .filter(|(_, n)| name.eq_ignore_ascii_case(n.as_ref()))
            .fold(0, |bits, (i, _)| bits | 1 << i)
    }
}

/// A name length's bit in [`WireRules::lengths`].
fn length_bit(len: usize) -> u64 {
    1 << len.min(63)
}

/// Wire mode for one exchange: the node's rules and the names the route's plugins touch.
#[derive(Clone, Copy)]
pub struct Wire<'a> {
    /// The node's rules.
    pub rules: &'a WireRules,
    /// Headers put into the response's `HeaderMap` (for the response phase) instead of the
    /// lines.
    pub keep: &'a [HeaderName],
}

/// Parses a complete response head at the start of `buf`; `None` when more bytes are needed.
/// With `wire`, the headers come as encoded lines (see [`WireRules`]) and the response's
/// `HeaderMap` holds only the `keep` names.
fn parse_head(buf: &[u8], wire: Option<Wire<'_>>) -> Result<Option<Parsed>, H1Error> {
    let mut slots: [MaybeUninit<httparse::Header<'_>>; MAX_HEADERS] =
        [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, buf, &mut slots)
    {
        // A head that arrived complete in one last read is held to the same bound.
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => {
            return Err(H1Error::Invalid("response head too large"))
        }
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(H1Error::Invalid("too many response headers"))
        }
        Err(_) => return Err(H1Error::Invalid("malformed response head")),
    };
    let status = res
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(H1Error::Invalid("bad status code"))?;
    let version = match res.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    // Framing and connection handling first: `Connection` may name headers that come before
    // it, and those are dropped below like every other hop-by-hop header.
    let mut length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut chunked = false;
    let mut close = version == Version::HTTP_10;
    let mut named: Vec<&[u8]> = Vec::new();
    // Each name's kind, worked out once for both passes.
    let mut kinds = [Kind::Other; MAX_HEADERS];
    for (h, k) in res.headers.iter().zip(kinds.iter_mut()) {
        *k = kind(h.name.as_bytes());
        if *k == Kind::ContentLength {
            let n = parse_content_length(h.value).ok_or(H1Error::Invalid("bad content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(H1Error::Invalid("conflicting content-length"));
            }
            length = Some(n);
        } else if *k == Kind::TransferEncoding {
            transfer_encoding = true;
            // Only the final coding decides; a later header continues the list.
            chunked = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if *k == Kind::Connection {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    if version == Version::HTTP_10 {
                        close = false;
                    }
                } else if !token.is_empty() {
                    named.push(token);
                }
            }
        }
    }
    // A 101's Connection and Upgrade headers are what the client needs to see.
    let keep_hop_by_hop = status == StatusCode::SWITCHING_PROTOCOLS;
    let relayed = |raw: &[u8], k: Kind| {
        keep_hop_by_hop
            || !(matches!(
                k,
                Kind::Connection | Kind::HopByHop | Kind::TransferEncoding
            ) || named.iter().any(|n| n.eq_ignore_ascii_case(raw)))
    };
    // A route whose plugins name response headers will add some: room for them up front
    // (growing a map rehashes it). Otherwise no allocation at all.
    let mut headers = match wire {
        Some(w) if !w.keep.is_empty() => HeaderMap::with_capacity(w.keep.len() + 4),
        _ => HeaderMap::new(),
    };
    let mut wire_head = None;
    if let Some(Wire { rules, keep }) = wire {
        // The lines as they will be sent, with room for the gateway's own.
        let mut w = WireHead {
            lines: BytesMut::with_capacity(len + WIRE_EXTRA),
            date: false,
            // Reported (for HEAD and 304) only when the header itself would be relayed, as the
            // map path does.
            length: length.filter(|_| relayed(b"content-length", Kind::ContentLength)),
        };
        let mut watched = 0u64;
        for (h, &k) in res.headers.iter().zip(kinds.iter()) {
            let raw = h.name.as_bytes();
            if !relayed(raw, k) || k == Kind::ContentLength || rules.drops(raw) {
                continue;
            }
            if keep.iter().any(|n| raw.eq_ignore_ascii_case(n.as_ref())) {
                let name =
                    HeaderName::from_bytes(raw).map_err(|_| H1Error::Invalid("bad header name"))?;
                let value = HeaderValue::from_bytes(h.value)
                    .map_err(|_| H1Error::Invalid("bad header value"))?;
                headers.append(name, value);
                continue;
            }
            watched |= rules.watched(raw);
            w.date |= k == Kind::Date;
            w.push(raw, h.value);
        }
        wire_head = Some((w, watched));
    } else {
        // One copy of the head; header values are slices of it.
        let block = Bytes::copy_from_slice(&buf[..len]);
        let base = buf.as_ptr() as usize;
        // Room for the headers the gateway adds (request id, latencies, plugins' headers)
        // without growing and rehashing the map.
        headers.reserve(res.headers.len() + 12);
        for (h, &k) in res.headers.iter().zip(kinds.iter()) {
            let raw = h.name.as_bytes();
            if !relayed(raw, k) {
                continue;
            }
            let name =
                HeaderName::from_bytes(raw).map_err(|_| H1Error::Invalid("bad header name"))?;
            let start = h.value.as_ptr() as usize - base;
            let value = HeaderValue::from_maybe_shared(block.slice(start..start + h.value.len()))
                .map_err(|_| H1Error::Invalid("bad header value"))?;
            headers.append(name, value);
        }
    }
    let framing = match (transfer_encoding, length) {
        (true, Some(_)) => {
            return Err(H1Error::Invalid(
                "both transfer-encoding and content-length",
            ))
        }
        // HTTP/1.0 has no transfer codings: such a message is read, then its connection
        // closed (RFC 9112 §6.1).
        (true, None) if chunked && version == Version::HTTP_10 => {
            close = true;
            BodyFraming::Chunked
        }
        (true, None) if chunked => BodyFraming::Chunked,
        (true, None) => BodyFraming::Close,
        (false, Some(n)) => BodyFraming::Length(n),
        (false, None) => BodyFraming::Close,
    };
    let mut response = Response::new(RawBody {
        state: State::Whole(None),
        wire: None,
    });
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    Ok(Some(Parsed {
        len,
        response,
        framing,
        keep_alive: !close,
        wire: wire_head,
    }))
}

/// What a response header name means to the parser.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Other,
    ContentLength,
    TransferEncoding,
    Connection,
    /// Another hop-by-hop header (RFC 9110 §7.6.1).
    HopByHop,
    Date,
}

/// `name` equals `lower` ignoring case, for `lower` made of lower-case letters and `-` only.
/// `name` is an httparse-checked token, so setting bit 5 folds its letters and aliases no
/// other token byte onto a letter or `-` (only control characters would).
fn is_name(name: &[u8], lower: &[u8]) -> bool {
    name.len() == lower.len() && name.iter().zip(lower).all(|(a, b)| a | 0x20 == *b)
}

/// Classifies a header name: by length first, so most names are settled without a compare.
fn kind(name: &[u8]) -> Kind {
    match name.len() {
        2 if is_name(name, b"te") => Kind::HopByHop,
        4 if is_name(name, b"date") => Kind::Date,
        // Not hop-by-hop by RFC, but never forwarded, as Kong clears it: a client's `Proxy`
        // header would become `HTTP_PROXY` in a CGI-style upstream ("httpoxy").
        5 if is_name(name, b"proxy") => Kind::HopByHop,
        7 if is_name(name, b"trailer") || is_name(name, b"upgrade") => Kind::HopByHop,
        10 if is_name(name, b"connection") => Kind::Connection,
        10 if is_name(name, b"keep-alive") => Kind::HopByHop,
        14 if is_name(name, b"content-length") => Kind::ContentLength,
        16 if is_name(name, b"proxy-connection") => Kind::HopByHop,
        17 if is_name(name, b"transfer-encoding") => Kind::TransferEncoding,
        _ => Kind::Other,
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) and `Proxy`, never relayed. `name` is a token (a parsed or
/// `HeaderName` name), as [`kind`] requires.
pub(crate) fn is_hop_by_hop(name: &[u8]) -> bool {
    matches!(
        kind(name),
        Kind::Connection | Kind::HopByHop | Kind::TransferEncoding
    )
}

/// A response body read from an upstream connection.
pub struct RawBody {
    state: State,
    /// Wire mode: the response's header lines and which watched names appeared (see
    /// [`WireRules`]).
    wire: Option<(WireHead, u64)>,
}

enum State {
    /// Held in memory (or empty); the connection is already back in the pool.
    Whole(Option<Bytes>),
    Length {
        conn: Box<Conn>,
        remaining: u64,
        home: Option<Home>,
    },
    Chunked {
        conn: Box<Conn>,
        dec: ResponseDechunk,
        home: Option<Home>,
    },
    Close {
        conn: Box<Conn>,
    },
    /// A 101 response: the connection now belongs to the tunnel.
    Upgraded(Box<Conn>),
    Done,
}

impl RawBody {
    /// Wire mode: the response's header lines (to add the gateway's own) and which of the
    /// rules' watched names the upstream sent, as bits by position.
    pub fn wire_mut(&mut self) -> Option<(&mut WireHead, u64)> {
        self.wire.as_mut().map(|(w, seen)| (w, *seen))
    }

    /// Wire mode: the header lines, for the server to write.
    pub fn take_wire(&mut self) -> Option<WireHead> {
        self.wire.take().map(|(w, _)| w)
    }

    /// The connection after a 101 response, as a byte stream that first yields what the
    /// upstream sent after its response head.
    pub fn into_upgraded(self) -> Option<Upgraded> {
        match self.state {
            State::Upgraded(conn) => {
                let conn = *conn;
                Some(Upgraded::new(conn.buf.freeze(), conn.io))
            }
            _ => None,
        }
    }

    fn finish(&mut self) {
        let state = std::mem::replace(&mut self.state, State::Done);
        match state {
            State::Length {
                conn,
                home: Some(home),
                ..
            }
            | State::Chunked {
                conn,
                home: Some(home),
                ..
            } if conn.buf.is_empty() => home.checkin_now(conn),
            _ => {}
        }
    }
}

impl Body for RawBody {
    type Data = Bytes;
    type Error = H1Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        let this = self.get_mut();
        loop {
            // First what the bytes already read give; `break` when more are needed.
            match &mut this.state {
                State::Whole(data) => {
                    let out = data.take();
                    if out.is_none() {
                        this.state = State::Done;
                    }
                    return Poll::Ready(out.map(|d| Ok(Frame::data(d))));
                }
                State::Done | State::Upgraded(_) => return Poll::Ready(None),
                State::Length {
                    conn, remaining, ..
                } => {
                    if *remaining == 0 {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    if !conn.buf.is_empty() {
                        let take = (conn.buf.len() as u64).min(*remaining) as usize;
                        let data = conn.buf.split_to(take).freeze();
                        *remaining -= take as u64;
                        if *remaining == 0 {
                            if conn.buf.is_empty() {
                                this.finish();
                            } else {
                                // More bytes than the length announced: the connection is out
                                // of step and is dropped.
                                this.state = State::Done;
                            }
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                State::Chunked { conn, dec, .. } => match dec.step(&mut conn.buf) {
                    Err(e) => {
                        this.state = State::Done;
                        return Poll::Ready(Some(Err(e)));
                    }
                    Ok(Step::Data(d)) => return Poll::Ready(Some(Ok(Frame::data(d)))),
                    Ok(Step::End) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Step::More) => {}
                },
                State::Close { conn } => {
                    if !conn.buf.is_empty() {
                        let data = conn.buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
            }
            // Then one more read from the connection.
            let until_close = matches!(this.state, State::Close { .. });
            let read = match &mut this.state {
                State::Length { conn, .. }
                | State::Chunked { conn, .. }
                | State::Close { conn } => conn.poll_fill(cx, BODY_READ),
                _ => return Poll::Ready(None),
            };
            match read {
                Poll::Pending => {
                    let timed_out = match &mut this.state {
                        State::Length { conn, .. }
                        | State::Chunked { conn, .. }
                        | State::Close { conn } => conn.timer.expired(conn.read_timeout, cx),
                        _ => false,
                    };
                    if timed_out {
                        this.state = State::Done;
                        return Poll::Ready(Some(Err(H1Error::TimedOut)));
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Ok(n)) if n > 0 => {
                    if let State::Length { conn, .. }
                    | State::Chunked { conn, .. }
                    | State::Close { conn } = &mut this.state
                    {
                        conn.timer.clear();
                    }
                    continue;
                }
                // The end of a close-delimited body is the end of the connection.
                Poll::Ready(Ok(_)) if until_close => {
                    this.state = State::Done;
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(_)) => {
                    this.state = State::Done;
                    return Poll::Ready(Some(Err(H1Error::Closed)));
                }
                Poll::Ready(Err(e)) => {
                    this.state = State::Done;
                    return Poll::Ready(Some(Err(H1Error::Io(e))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            State::Whole(d) => d.is_none(),
            State::Done | State::Upgraded(_) => true,
            State::Length { remaining, .. } => *remaining == 0,
            _ => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Whole(d) => SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64)),
            State::Done | State::Upgraded(_) => SizeHint::with_exact(0),
            State::Length { remaining, .. } => SizeHint::with_exact(*remaining),
            _ => SizeHint::default(),
        }
    }
}

/// An upgraded (101) upstream connection.
pub type Upgraded = crate::upgrade::Upgraded<Io>;

/// Chunked response decoder: the guard's [`Dechunk`] with this client's trailer bound.
#[derive(Default)]
struct ResponseDechunk(Dechunk);

impl ResponseDechunk {
    fn step(&mut self, buf: &mut BytesMut) -> Result<Step, H1Error> {
        self.0
            .step(buf, MAX_TRAILERS)
            .map_err(|_| H1Error::Invalid("malformed chunked body"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dechunk_all(input: &[u8]) -> Result<(Vec<u8>, bool, usize), H1Error> {
        let mut buf = BytesMut::from(input);
        let mut dec = ResponseDechunk::default();
        let mut out = Vec::new();
        loop {
            match dec.step(&mut buf)? {
                Step::Data(d) => out.extend_from_slice(&d),
                Step::End => return Ok((out, true, buf.len())),
                Step::More => return Ok((out, false, buf.len())),
            }
        }
    }

    #[test]
    fn wire_heads_report_only_a_relayed_length_and_keep_the_size_bound() {
        let rules = WireRules::default();
        let wire = Some(Wire {
            rules: &rules,
            keep: &[],
        });
        let length = |head: &[u8]| {
            let p = parse_head(head, wire).unwrap().unwrap();
            p.wire.unwrap().0.length
        };
        assert_eq!(
            length(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
            Some(5)
        );
        // A Connection-named Content-Length is not relayed, so not reported either (a HEAD
        // answer then carries none, as on the map path).
        assert_eq!(
            length(b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\n"),
            None
        );
        // A head over the bound fails even when it arrived complete in one read.
        let mut big = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        big.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
        assert!(parse_head(&big, wire).is_err());
        assert!(parse_head(&big, None).is_err());
    }

    #[test]
    fn header_names_are_classified_ignoring_case() {
        for (name, want) in [
            (&b"Content-Length"[..], Kind::ContentLength),
            (b"CONTENT-LENGTH", Kind::ContentLength),
            (b"transfer-Encoding", Kind::TransferEncoding),
            (b"Connection", Kind::Connection),
            (b"Keep-Alive", Kind::HopByHop),
            (b"TE", Kind::HopByHop),
            (b"Trailer", Kind::HopByHop),
            (b"Upgrade", Kind::HopByHop),
            (b"Proxy-Connection", Kind::HopByHop),
            (b"DATE", Kind::Date),
            // Same lengths, other names.
            (b"Content-Type", Kind::Other),
            (b"Content-Lengtx", Kind::Other),
            (b"tf", Kind::Other),
            (b"Dates", Kind::Other),
            (b"keep_alive", Kind::Other),
            (b"Connectio\x0e", Kind::Other),
        ] {
            assert!(kind(name) == want, "{}", String::from_utf8_lossy(name));
        }
    }

    #[test]
    fn chunked_bodies_decode_with_extensions_and_trailers() {
        let (body, end, rest) =
            dechunk_all(b"5;a=b\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT").unwrap();
        assert_eq!(body, b"hello world");
        assert!(end);
        assert_eq!(rest, 4, "bytes after the body stay in the buffer");
    }

    proptest::proptest! {
        /// Any body, cut into any chunks and delivered in any pieces, decodes to itself; the
        /// bytes after the body stay in the buffer.
        #[test]
        fn chunked_round_trip(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            cuts in proptest::collection::vec(1usize..64, 1..20),
            reads in proptest::collection::vec(1usize..40, 1..40),
        ) {
            let mut wire = Vec::new();
            let mut rest = &body[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = cuts[i % cuts.len()].min(rest.len());
                wire.extend_from_slice(format!("{n:X};e=1\r\n").as_bytes());
                wire.extend_from_slice(&rest[..n]);
                wire.extend_from_slice(b"\r\n");
                rest = &rest[n..];
                i += 1;
            }
            wire.extend_from_slice(b"0\r\nT: v\r\n\r\nNEXT");
            let mut dec = ResponseDechunk::default();
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            let mut pos = 0;
            let mut r = 0;
            let mut ended = false;
            while !ended {
                match dec.step(&mut buf).unwrap() {
                    Step::Data(d) => out.extend_from_slice(&d),
                    Step::End => ended = true,
                    Step::More => {
                        proptest::prop_assert!(pos < wire.len(), "ran out of input");
                        let n = reads[r % reads.len()].min(wire.len() - pos);
                        buf.extend_from_slice(&wire[pos..pos + n]);
                        pos += n;
                        r += 1;
                    }
                }
            }
            proptest::prop_assert_eq!(out, body);
            let mut left = buf.to_vec();
            left.extend_from_slice(&wire[pos..]);
            proptest::prop_assert_eq!(left, b"NEXT".to_vec());
        }

        /// Arbitrary bytes, and valid heads with bytes flipped, never panic the parsers.
        #[test]
        fn parsers_never_panic(
            junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            at in 0usize..80,
            byte in proptest::prelude::any::<u8>(),
        ) {
            let _ = parse_head(&junk, None);
            let _ = ResponseDechunk::default().step(&mut BytesMut::from(&junk[..]));
            let mut head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\nConnection: x-a\r\n\r\nhello".to_vec();
            let at = at % head.len();
            head[at] = byte;
            let _ = parse_head(&head, None);
        }
    }

    #[test]
    fn chunked_decoding_is_incremental() {
        let input = b"a\r\n0123456789\r\n0\r\n\r\n";
        let mut dec = ResponseDechunk::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut ended = false;
        for &b in input.iter() {
            buf.extend_from_slice(&[b]);
            loop {
                match dec.step(&mut buf).unwrap() {
                    Step::Data(d) => out.extend_from_slice(&d),
                    Step::End => {
                        ended = true;
                        break;
                    }
                    Step::More => break,
                }
            }
        }
        assert_eq!(out, b"0123456789");
        assert!(ended);
    }

    #[test]
    fn malformed_chunks_are_refused() {
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"zz\r\n",
            b"5\r\nhelloX\r\n",
            b"11111111111111111\r\n",
            b"0\r\nX: 1\n\r\n",
        ] {
            assert!(
                dechunk_all(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn response_heads_parse_with_their_framing() {
        let p = parse_head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello",
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.len, 46);
        assert!(matches!(p.framing, BodyFraming::Length(5)));
        assert!(p.keep_alive);
        assert_eq!(p.response.headers()["x-a"], "b");

        let p = parse_head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            None,
        )
        .unwrap()
        .unwrap();
        assert!(matches!(p.framing, BodyFraming::Chunked));

        let p = parse_head(b"HTTP/1.0 200 OK\r\n\r\n", None)
            .unwrap()
            .unwrap();
        assert!(matches!(p.framing, BodyFraming::Close));
        assert!(!p.keep_alive);

        let p = parse_head(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            None,
        )
        .unwrap()
        .unwrap();
        assert!(!p.keep_alive);

        // Hop-by-hop headers, and those Connection names (before or after it), are dropped;
        // a 101 keeps its Connection and Upgrade.
        let p = parse_head(
            b"HTTP/1.1 200 OK\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive, X-Secret, X-Later\r\nX-Later: 2\r\nX-Kept: 3\r\nContent-Length: 0\r\n\r\n", None)
        .unwrap()
        .unwrap();
        let names: Vec<&str> = p.response.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept", "content-length"]);
        let p = parse_head(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", None)
        .unwrap()
        .unwrap();
        assert_eq!(p.response.headers()["upgrade"], "websocket");
        assert_eq!(p.response.headers()["connection"], "Upgrade");

        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le", None)
            .unwrap()
            .is_none());
    }

    #[test]
    fn http10_responses_with_transfer_encoding_are_not_kept() {
        let p = parse_head(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n",
            None,
        )
        .unwrap()
        .unwrap();
        assert!(matches!(p.framing, BodyFraming::Chunked));
        assert!(!p.keep_alive);
        // Without Transfer-Encoding the same keep-alive response is reusable.
        let p = parse_head(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            None,
        )
        .unwrap()
        .unwrap();
        assert!(p.keep_alive);
    }

    /// A request whose first write fails hands its body back whole, also when a small body
    /// had been copied behind the head (so a retry on a fresh connection sends it again).
    #[tokio::test]
    async fn a_request_that_never_left_returns_its_body() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = tokio::spawn(async move { listener.accept().await });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let _peer = accept.await.unwrap().unwrap();
        // Our own write side closed: the first write fails before a byte leaves.
        let tcp = tcp.into_std().unwrap();
        tcp.shutdown(std::net::Shutdown::Write).unwrap();
        let tcp = TcpStream::from_std(tcp).unwrap();
        let ep = crate::upstream::Endpoint {
            host: "127.0.0.1".into(),
            port: addr.port(),
            tls: None,
            sni: "127.0.0.1".into(),
            h2: false,
        };
        let pool = crate::upstream::Pool::new(4, std::time::Duration::from_secs(60));
        let home = Home {
            slot: pool.slot(crate::upstream::PoolKey::of(&ep)),
            sent_at: std::time::Instant::now(),
        };
        let conn = Box::new(Conn::new(Io::Plain(tcp)));
        let head = BytesMut::from(&b"POST / HTTP/1.1\r\nhost: x\r\n"[..]);
        let body = ProxyBody::full(Bytes::from_static(b"{\"amount\":100}"));
        let Err(failure) = conn
            .send(
                head,
                body,
                None,
                true,
                false,
                home,
                std::time::Duration::from_secs(5),
                None,
            )
            .await
        else {
            panic!("a write on a closed socket succeeded");
        };
        assert!(failure.incomplete);
        match failure.unsent {
            Some(ProxyBody::Full(Some(b))) => assert_eq!(&b[..], b"{\"amount\":100}"),
            _ => panic!("the body was not handed back"),
        }
    }

    #[test]
    fn ambiguous_response_framing_is_refused() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        ] {
            assert!(
                parse_head(bad, None).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // Equal copies are one length.
        let p = parse_head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            None,
        )
        .unwrap()
        .unwrap();
        assert!(matches!(p.framing, BodyFraming::Length(5)));
    }
}
