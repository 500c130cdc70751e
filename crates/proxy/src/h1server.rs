//! The client-facing HTTP/1.1 server.
//!
//! Every request head is parsed once, with the strict checks of [`crate::guard::head`], and
//! turned straight into the request the handler sees; there is no second parser behind a
//! checking layer. A fault in a head is answered with its status (400, 408, 414, 431) and the
//! connection is closed, after the responses to any earlier pipelined requests. A fault inside
//! a body (bad chunk framing, a body that stops arriving) fails the body stream, so the
//! request never completes towards the upstream, and the client gets the fault's status and a
//! closed connection instead of whatever the handler made of the failure.
//!
//! The connection task reads heads, runs the handler and writes responses. A request body
//! reads from the same connection through a shared handle, only while the handler streams
//! it; a request without a body never takes a lock. `Expect: 100-continue` is answered when
//! the body is first read, so a request refused before that (401, 413, 417) never makes the
//! client send its body. A response is framed by its Content-Length, or chunked, and a small
//! response leaves in one write. A body the handler did not read is skipped when it is
//! already buffered; otherwise the connection closes after the response, reading (and
//! discarding) for a short while first so the close cannot reset the response away.
//!
//! Timeouts: `client_header_timeout` from the first byte of a head (408), the keep-alive
//! timeout between requests (a quiet close), and the body timeout between body bytes (408).
//! One timer per connection, re-armed only when it fires before the current deadline, so a
//! request costs no timer registration.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header;
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{oneshot, watch};

use crate::guard::chunked::{Dechunk, Step};
use crate::guard::head::{self, Framing, Head, HeadError};
use crate::guard::{error_reply, parse_content_length, Limits};
use crate::timer::ConnTimer;

/// Responses up to this size (head and body) are collected and sent in one write.
const COALESCE: usize = 64 * 1024;
/// Most bytes read and discarded while closing a connection with an unread request body.
const LINGER_BYTES: usize = 1024 * 1024;
/// Longest wait for the client to stop sending before such a close.
const LINGER_TIME: Duration = Duration::from_secs(2);
/// The interim response to `Expect: 100-continue`.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A client transport: plain TCP or TLS (or an in-memory pipe in tests).
pub trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> ClientIo for T {}

/// Serves HTTP/1.1 on `io` until the client or the server closes it. `service` turns each
/// request into a response; `shutdown` turning true closes the connection at the next
/// request boundary (an idle connection at once).
pub async fn serve<I, S, Fut, B>(
    io: I,
    limits: Arc<Limits>,
    shutdown: watch::Receiver<bool>,
    mut service: S,
) where
    I: ClientIo,
    S: FnMut(Request<RequestBody>) -> Fut,
    Fut: Future<Output = Response<B>>,
    B: Body<Data = Bytes> + WireBody + Unpin,
{
    // Counted while open, for write batching (see `batch`).
    let _open = crate::batch::Open::new();
    let mut shared = Arc::new(Mutex::new(Conn::new(io, limits)));
    let mut stop_rx = shutdown.clone();
    let mut stop = Box::pin(async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    });
    let mut stopped = false;
    let mut requests = 0u64;
    let mut wbuf = BytesMut::with_capacity(4096);
    loop {
        if stopped || *shutdown.borrow() {
            close(&mut shared, false).await;
            return;
        }
        let outcome = poll_fn(|cx| {
            let polled = with(&mut shared, |c| c.poll_head(cx, requests));
            match polled {
                Poll::Pending if !stopped && with(&mut shared, |c| c.rbuf.is_empty()) => {
                    if stop.as_mut().poll(cx).is_ready() {
                        stopped = true;
                        return Poll::Ready(HeadOutcome::Close);
                    }
                    Poll::Pending
                }
                p => p,
            }
        })
        .await;
        let head = match outcome {
            HeadOutcome::Head(h) => h,
            HeadOutcome::Refuse(status) => {
                let _ = write_all(&mut shared, &error_reply(status)).await;
                close(&mut shared, false).await;
                return;
            }
            HeadOutcome::Close => {
                close(&mut shared, false).await;
                return;
            }
        };
        requests += 1;
        let Head {
            framing,
            method,
            uri,
            version,
            headers,
            expect_continue,
            keep_alive,
            ..
        } = head;
        let mut upgrade_tx = None;
        let body = match framing {
            Framing::None | Framing::Length(0) => RequestBody::empty(),
            Framing::Length(n) => {
                let generation = with(&mut shared, |c| {
                    c.start_body(BodyState::Length(n), expect_continue)
                });
                RequestBody::stream(shared.clone(), generation, SizeHint::with_exact(n))
            }
            Framing::Chunked => {
                let generation = with(&mut shared, |c| {
                    c.start_body(BodyState::Chunked(Dechunk::default()), expect_continue)
                });
                RequestBody::stream(shared.clone(), generation, SizeHint::default())
            }
            Framing::Upgrade => RequestBody::empty(),
        };
        let mut req = Request::new(body);
        *req.method_mut() = method.clone();
        *req.uri_mut() = uri;
        *req.version_mut() = version;
        *req.headers_mut() = headers;
        if framing == Framing::Upgrade {
            let (tx, rx) = oneshot::channel();
            req.extensions_mut()
                .insert(OnUpgrade(Arc::new(Mutex::new(Some(rx)))));
            upgrade_tx = Some(tx);
        }

        let resp = service(req).await;

        let mut keep = keep_alive && !*shutdown.borrow();
        // Another task may still hold the body (hyper's HTTP/2 client sends it from its own
        // task): then nothing of it is skipped, the handle is cut off (it fails from now on,
        // and can never read a later request's body) and the connection closes.
        let held_elsewhere = Arc::strong_count(&shared) > 1;
        let (fault, body_done, continue_sent) = with(&mut shared, |c| {
            let continue_sent = c.owe_continue.take().unwrap_or(0);
            let done = if held_elsewhere {
                let done = matches!(c.body, BodyState::Done);
                c.body = BodyState::Done;
                done
            } else {
                c.skip_body()
            };
            c.generation = c.generation.wrapping_add(1);
            (c.fault.take(), done, continue_sent)
        });
        if continue_sent > 0 && continue_sent < CONTINUE.len() {
            // Half of an interim response is out: finish it, or the final one is garbled.
            if write_all(&mut shared, &CONTINUE[continue_sent..])
                .await
                .is_err()
            {
                return;
            }
        }
        if let Some(status) = fault {
            // The body broke: its status, not the handler's view of the failure.
            let _ = write_all(&mut shared, &error_reply(status)).await;
            close(&mut shared, true).await;
            return;
        }
        if !body_done {
            keep = false;
        }
        let (parts, body) = resp.into_parts();
        let upgrading = upgrade_tx.is_some() && parts.status == StatusCode::SWITCHING_PROTOCOLS;
        // A final response must not be interim (1xx): the client would take the next response
        // as this request's. Only a real upgrade may answer 101.
        if parts.status.is_informational() && !upgrading {
            let _ = write_all(&mut shared, &error_reply(502)).await;
            close(&mut shared, !body_done).await;
            return;
        }
        if upgrade_tx.is_some() && !upgrading {
            // A refused upgrade: the client may already be sending the new protocol.
            keep = false;
        }
        // The gateway's own answer to a request it could not make sense of asks to close
        // (upstream Connection headers never get here: hop-by-hop, removed by the proxy).
        if parts
            .headers
            .get(header::CONNECTION)
            .is_some_and(|v| v == "close")
        {
            keep = false;
        }
        let sent = send_response(
            &mut shared,
            &mut wbuf,
            &method,
            version,
            parts,
            body,
            &mut keep,
            upgrading,
        )
        .await;
        if sent.is_err() {
            return;
        }
        if upgrading {
            let Some(tx) = upgrade_tx else { return };
            if let Ok(m) = Arc::try_unwrap(shared) {
                let conn = m.into_inner().unwrap_or_else(PoisonError::into_inner);
                let _ = tx.send(Upgraded::new(conn.rbuf.freeze(), Box::new(conn.io)));
            }
            return;
        }
        if !keep {
            close(&mut shared, !body_done).await;
            return;
        }
    }
}

/// Writes one response; `keep` turns false when the connection cannot carry another.
#[allow(clippy::too_many_arguments)] // one call site
async fn send_response<I: ClientIo, B>(
    shared: &mut Arc<Mutex<Conn<I>>>,
    wbuf: &mut BytesMut,
    method: &Method,
    version: Version,
    parts: http::response::Parts,
    mut body: B,
    keep: &mut bool,
    upgrading: bool,
) -> io::Result<()>
where
    B: Body<Data = Bytes> + WireBody + Unpin,
{
    // Leaves with the other writes of this scheduler pass (see `batch`).
    crate::batch::before_write().await;
    let wire = body.take_wire();
    let status = parts.status;
    let bodiless = *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| parse_content_length(v.as_bytes()))
        .or(wire.as_ref().and_then(|w| w.length));
    let framing = if bodiless {
        Out::None
    } else if let Some(n) = declared {
        Out::Length(n)
    } else if let Some(n) = body.size_hint().exact() {
        Out::Length(n)
    } else if version == Version::HTTP_11 {
        Out::Chunked
    } else {
        *keep = false;
        Out::Close
    };

    wbuf.clear();
    wbuf.extend_from_slice(b"HTTP/1.1 ");
    wbuf.extend_from_slice(status.as_str().as_bytes());
    wbuf.extend_from_slice(b" ");
    wbuf.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    wbuf.extend_from_slice(b"\r\n");
    // The gateway's own 426 names the upgrade it asks for (`Connection: Upgrade` with
    // `Upgrade: TLS/1.2, HTTP/1.1`, as Kong sends); upstream Connection headers never reach
    // here (hop-by-hop, removed by the proxy).
    let upgrade_offer =
        status == StatusCode::UPGRADE_REQUIRED && parts.headers.contains_key(header::CONNECTION);
    for (name, value) in &parts.headers {
        if *name == header::CONTENT_LENGTH
            || *name == header::TRANSFER_ENCODING
            || (*name == header::CONNECTION && !upgrading && !upgrade_offer)
        {
            continue;
        }
        put_header(wbuf, name.as_str().as_bytes(), value.as_bytes());
    }
    let wire_date = match &wire {
        Some(w) => {
            wbuf.extend_from_slice(&w.lines);
            w.date
        }
        None => false,
    };
    if !wire_date && !parts.headers.contains_key(header::DATE) {
        put_date(wbuf);
    }
    let mut digits = itoa::Buffer::new();
    match framing {
        Out::Length(n) => put_header(wbuf, b"content-length", digits.format(n).as_bytes()),
        Out::Chunked => put_header(wbuf, b"transfer-encoding", b"chunked"),
        // A HEAD or 304 response describes the body it does not carry.
        Out::None if status != StatusCode::NO_CONTENT && !status.is_informational() => {
            let known = declared.or_else(|| {
                let n = body.size_hint().exact()?;
                (*method == Method::HEAD && n > 0).then_some(n)
            });
            if let Some(n) = known {
                put_header(wbuf, b"content-length", digits.format(n).as_bytes());
            }
        }
        Out::None | Out::Close => {}
    }
    if !upgrading {
        if !*keep {
            put_header(wbuf, b"connection", b"close");
        } else if version == Version::HTTP_10 && !upgrade_offer {
            put_header(wbuf, b"connection", b"keep-alive");
        }
    }
    wbuf.extend_from_slice(b"\r\n");
    if matches!(framing, Out::None) {
        drop(body);
        return write_all(shared, wbuf).await;
    }

    let mut left = match framing {
        Out::Length(n) => Some(n),
        _ => None,
    };
    loop {
        let next = poll_fn(|cx| match Pin::new(&mut body).poll_frame(cx) {
            // Nothing more for now: send what is collected while waiting.
            Poll::Pending if !wbuf.is_empty() => Poll::Ready(Next::Flush),
            Poll::Pending => Poll::Pending,
            Poll::Ready(frame) => Poll::Ready(Next::Frame(frame)),
        })
        .await;
        let data = match next {
            Next::Flush => {
                write_all(shared, wbuf).await?;
                wbuf.clear();
                continue;
            }
            Next::Frame(None) => break,
            Next::Frame(Some(Err(_))) => {
                // The body failed midway: what was sent stays short (or unterminated).
                *keep = false;
                if !wbuf.is_empty() {
                    write_all(shared, wbuf).await?;
                }
                return Ok(());
            }
            Next::Frame(Some(Ok(frame))) => match frame.into_data() {
                Ok(d) if !d.is_empty() => d,
                // Empty data and trailers (HTTP/1 clients get no trailers).
                _ => continue,
            },
        };
        let data = match &mut left {
            Some(left) => {
                // Never more than declared: extra bytes would be read as another response.
                let take = (data.len() as u64).min(*left) as usize;
                *left -= take as u64;
                if take < data.len() {
                    *keep = false;
                }
                data.slice(..take)
            }
            None => data,
        };
        if matches!(framing, Out::Chunked) {
            wbuf.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        }
        if wbuf.len() + data.len() <= COALESCE {
            wbuf.extend_from_slice(&data);
        } else {
            write_all(shared, wbuf).await?;
            wbuf.clear();
            write_all(shared, &data).await?;
        }
        if matches!(framing, Out::Chunked) {
            wbuf.extend_from_slice(b"\r\n");
        }
        if left == Some(0) {
            break;
        }
    }
    match framing {
        Out::Chunked => wbuf.extend_from_slice(b"0\r\n\r\n"),
        Out::Length(_) if left != Some(0) => *keep = false,
        _ => {}
    }
    if !wbuf.is_empty() {
        write_all(shared, wbuf).await?;
    }
    Ok(())
}

enum Next<F> {
    Flush,
    Frame(Option<F>),
}

/// How a response body is delimited on the wire.
#[derive(Clone, Copy)]
enum Out {
    None,
    Length(u64),
    Chunked,
    Close,
}

/// Header lines a response carries already encoded for HTTP/1 (`name: value\r\n` each): an
/// upstream's headers relayed as they came, with the gateway's own lines added, when no
/// plugin needs them as a `HeaderMap` (see `h1client::WireRules`). They are written after
/// the response's `HeaderMap` (then normally empty). Never framing or hop-by-hop headers:
/// those are removed when the lines are made.
#[derive(Debug, Default)]
pub struct WireHead {
    /// The encoded lines.
    pub lines: BytesMut,
    /// The lines include a `Date`.
    pub date: bool,
    /// The upstream's `Content-Length`, which a bodiless (HEAD, 304) response still reports.
    pub length: Option<u64>,
}

impl WireHead {
    /// Appends one line.
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        put_header(&mut self.lines, name, value);
    }
}

/// A response body that may carry its head's header lines already encoded.
pub trait WireBody {
    /// The encoded header lines, if any (taken once).
    fn take_wire(&mut self) -> Option<WireHead> {
        None
    }
}

impl WireBody for http_body_util::Full<Bytes> {}
impl WireBody for http_body_util::Empty<Bytes> {}
impl<S> WireBody for http_body_util::StreamBody<S> {}

/// One `name: value` line of an HTTP/1 head (the server's responses, the client's requests).
pub(crate) fn put_header(buf: &mut BytesMut, name: &[u8], value: &[u8]) {
    buf.extend_from_slice(name);
    buf.extend_from_slice(b": ");
    buf.extend_from_slice(value);
    buf.extend_from_slice(b"\r\n");
}

/// `date: ...` (RFC 9110 §6.6.1), formatted at most once a second per thread.
fn put_date(buf: &mut BytesMut) {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static CACHE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs || c.1.is_empty() {
            *c = (secs, httpdate::fmt_http_date(now));
        }
        put_header(buf, b"date", c.1.as_bytes());
    });
}

/// Runs `f` on the connection: directly when no request body holds it, else under its lock.
fn with<I, R>(shared: &mut Arc<Mutex<Conn<I>>>, f: impl FnOnce(&mut Conn<I>) -> R) -> R {
    match Arc::get_mut(shared) {
        Some(m) => f(m.get_mut().unwrap_or_else(PoisonError::into_inner)),
        None => f(&mut shared.lock().unwrap_or_else(PoisonError::into_inner)),
    }
}

/// Writes `buf` whole. A client that takes nothing for the send timeout (nginx's
/// `send_timeout`: the time between two successful writes) fails the write.
async fn write_all<I: ClientIo>(shared: &mut Arc<Mutex<Conn<I>>>, buf: &[u8]) -> io::Result<()> {
    let mut pos = 0;
    with(shared, |c| c.timer.clear());
    poll_fn(|cx| {
        with(shared, |c| {
            while pos < buf.len() {
                match Pin::new(&mut c.io).poll_write(cx, &buf[pos..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        pos += n;
                        c.timer.clear();
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return c.stalled(cx),
                }
            }
            // rustls holds written bytes until flushed.
            match Pin::new(&mut c.io).poll_flush(cx) {
                Poll::Pending => c.stalled(cx),
                done => {
                    // The next wait (a head, a body) starts its own timeout.
                    c.timer.clear();
                    done
                }
            }
        })
    })
    .await
}

/// Closes the connection; with `linger`, first reads and discards what the client is still
/// sending (an unread body), so closing with unread bytes does not reset the response away.
async fn close<I: ClientIo>(shared: &mut Arc<Mutex<Conn<I>>>, linger: bool) {
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        poll_fn(|cx| with(shared, |c| Pin::new(&mut c.io).poll_shutdown(cx))),
    )
    .await;
    if !linger {
        return;
    }
    let mut discarded = 0usize;
    let drain = poll_fn(|cx| {
        with(shared, |c| loop {
            c.rbuf.clear();
            if c.rbuf.capacity() < 8192 {
                c.rbuf.reserve(8192);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut c.io), cx, &mut c.rbuf) {
                Poll::Ready(Ok(n)) if n > 0 && discarded < LINGER_BYTES => discarded += n,
                Poll::Ready(_) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        })
    });
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

// Boxing the head would cost an allocation per request; the outcome lives on the stack.
#[allow(clippy::large_enum_variant)]
enum HeadOutcome {
    Head(Head),
    Refuse(u16),
    Close,
}

/// The request body being read, if any.
enum BodyState {
    Done,
    Length(u64),
    Chunked(Dechunk),
}

/// The connection and its read buffer, shared with the current request's body.
struct Conn<I> {
    io: I,
    rbuf: BytesMut,
    eof: bool,
    limits: Arc<Limits>,
    body: BodyState,
    /// `100 Continue` is owed before the body is read; how much of it is written.
    owe_continue: Option<usize>,
    /// A fault inside the body, answered instead of the handler's response.
    fault: Option<u16>,
    /// Which request's body may be read: a body handle of an earlier request fails.
    generation: u64,
    timer: ConnTimer,
}

impl<I: ClientIo> Conn<I> {
    fn new(io: I, limits: Arc<Limits>) -> Self {
        Conn {
            io,
            rbuf: BytesMut::with_capacity(8 * 1024),
            eof: false,
            limits,
            body: BodyState::Done,
            owe_continue: None,
            fault: None,
            generation: 0,
            timer: ConnTimer::default(),
        }
    }

    /// A write that cannot proceed: fails once the send timeout has passed since the last
    /// progress, else waits.
    fn stalled<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if self.timer.expired(self.limits.send_timeout, cx) {
            Poll::Ready(Err(io::ErrorKind::TimedOut.into()))
        } else {
            Poll::Pending
        }
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.rbuf.capacity() - self.rbuf.len() < 4096 {
            self.rbuf.reserve(16 * 1024);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf)
    }

    fn poll_head(&mut self, cx: &mut Context<'_>, served: u64) -> Poll<HeadOutcome> {
        loop {
            if !self.rbuf.is_empty() {
                match head::parse(&mut self.rbuf, &self.limits) {
                    Ok(Some(h)) => {
                        self.timer.clear();
                        return Poll::Ready(HeadOutcome::Head(h));
                    }
                    Ok(None) => {}
                    Err(HeadError(status)) => return Poll::Ready(HeadOutcome::Refuse(status)),
                }
            }
            if self.eof {
                return Poll::Ready(HeadOutcome::Close);
            }
            let idle = self.rbuf.is_empty();
            let after = if idle && served > 0 {
                self.limits.keepalive_timeout
            } else {
                self.limits.header_timeout
            };
            if self.timer.expired(after, cx) {
                self.timer.clear();
                return Poll::Ready(if idle {
                    HeadOutcome::Close
                } else {
                    HeadOutcome::Refuse(408)
                });
            }
            match std::task::ready!(self.poll_fill(cx)) {
                Ok(0) => self.eof = true,
                Ok(_) if idle => {
                    // The head's own timeout runs from its first byte.
                    self.timer.clear();
                }
                Ok(_) => {}
                Err(_) => return Poll::Ready(HeadOutcome::Close),
            }
        }
    }

    /// Starts reading a request body; returns the generation its handle reads.
    fn start_body(&mut self, state: BodyState, expect_continue: bool) -> u64 {
        self.body = state;
        self.fault = None;
        self.timer.clear();
        // A client that sent body bytes already is not waiting for permission.
        self.owe_continue = (expect_continue && self.rbuf.is_empty()).then_some(0);
        self.generation
    }

    fn fail(&mut self, status: u16) -> Poll<Option<Result<Bytes, BodyFault>>> {
        self.fault = Some(status);
        self.body = BodyState::Done;
        Poll::Ready(Some(Err(BodyFault(status))))
    }

    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyFault>>> {
        if let Some(status) = self.fault {
            return Poll::Ready(Some(Err(BodyFault(status))));
        }
        while let Some(written) = self.owe_continue {
            if written < CONTINUE.len() {
                match Pin::new(&mut self.io).poll_write(cx, &CONTINUE[written..]) {
                    Poll::Ready(Ok(n)) if n > 0 => self.owe_continue = Some(written + n),
                    Poll::Ready(_) => return self.fail(400),
                    Poll::Pending if self.timer.expired(self.limits.send_timeout, cx) => {
                        return self.fail(408)
                    }
                    Poll::Pending => return Poll::Pending,
                }
            } else {
                match Pin::new(&mut self.io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => {
                        self.owe_continue = None;
                        self.timer.clear();
                    }
                    Poll::Ready(Err(_)) => return self.fail(400),
                    Poll::Pending if self.timer.expired(self.limits.send_timeout, cx) => {
                        return self.fail(408)
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
        }
        loop {
            match &mut self.body {
                BodyState::Done => return Poll::Ready(None),
                BodyState::Length(left) => {
                    if !self.rbuf.is_empty() {
                        let n = (*left).min(self.rbuf.len() as u64) as usize;
                        *left -= n as u64;
                        if *left == 0 {
                            self.body = BodyState::Done;
                        }
                        return Poll::Ready(Some(Ok(self.rbuf.split_to(n).freeze())));
                    }
                }
                BodyState::Chunked(dec) => {
                    match dec.step(&mut self.rbuf, self.limits.max_header_bytes) {
                        Ok(Step::Data(d)) => return Poll::Ready(Some(Ok(d))),
                        Ok(Step::End) => {
                            self.body = BodyState::Done;
                            return Poll::Ready(None);
                        }
                        Ok(Step::More) => {}
                        Err(_) => return self.fail(400),
                    }
                }
            }
            if self.eof {
                // The client stopped sending in the middle of its body.
                return self.fail(400);
            }
            if self.timer.expired(self.limits.body_timeout, cx) {
                self.timer.clear();
                return self.fail(408);
            }
            match std::task::ready!(self.poll_fill(cx)) {
                Ok(0) => self.eof = true,
                // Any byte restarts the body's inactivity timeout.
                Ok(_) => self.timer.clear(),
                Err(_) => return self.fail(400),
            }
        }
    }

    /// Skips what is left of the request body when it is already buffered; false when the
    /// connection cannot be reused because part of the body is still to come (or broken).
    fn skip_body(&mut self) -> bool {
        match &mut self.body {
            BodyState::Done => true,
            BodyState::Length(left) => {
                if (self.rbuf.len() as u64) < *left {
                    return false;
                }
                self.rbuf.advance(*left as usize);
                self.body = BodyState::Done;
                true
            }
            BodyState::Chunked(dec) => loop {
                match dec.step(&mut self.rbuf, self.limits.max_header_bytes) {
                    Ok(Step::Data(_)) => {}
                    Ok(Step::End) => {
                        self.body = BodyState::Done;
                        return true;
                    }
                    Ok(Step::More) | Err(_) => return false,
                }
            },
        }
    }
}

/// A request body failed: malformed framing, the client stopped sending or went away. The
/// status is what the client is answered.
#[derive(Debug, thiserror::Error)]
#[error("client request body failed (answered {0})")]
pub struct BodyFault(pub u16);

/// Reads a request body through the shared connection.
trait Source: Send + Sync {
    /// The body of request `generation`; a later request's body is never read.
    fn poll_data(
        &self,
        generation: u64,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, BodyFault>>>;
}

impl<I: ClientIo> Source for Mutex<Conn<I>> {
    fn poll_data(
        &self,
        generation: u64,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, BodyFault>>> {
        let mut conn = self.lock().unwrap_or_else(PoisonError::into_inner);
        if conn.generation != generation {
            // Held past its request's response: cut off, without touching the socket.
            return Poll::Ready(Some(Err(BodyFault(400))));
        }
        conn.poll_body(cx)
    }
}

/// An HTTP/1.1 request body, read from the client connection as it is polled.
pub struct RequestBody {
    src: Option<Arc<dyn Source>>,
    generation: u64,
    hint: SizeHint,
}

impl RequestBody {
    fn empty() -> Self {
        RequestBody {
            src: None,
            generation: 0,
            hint: SizeHint::with_exact(0),
        }
    }

    fn stream<I: ClientIo>(conn: Arc<Mutex<Conn<I>>>, generation: u64, hint: SizeHint) -> Self {
        RequestBody {
            src: Some(conn),
            generation,
            hint,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyFault;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyFault>>> {
        let this = self.get_mut();
        let Some(src) = &this.src else {
            return Poll::Ready(None);
        };
        match std::task::ready!(src.poll_data(this.generation, cx)) {
            Some(Ok(d)) => {
                let n = d.len() as u64;
                if let Some(exact) = this.hint.exact() {
                    this.hint = SizeHint::with_exact(exact.saturating_sub(n));
                } else {
                    this.hint.set_lower(this.hint.lower().saturating_sub(n));
                }
                Poll::Ready(Some(Ok(Frame::data(d))))
            }
            end => {
                // Ended or failed: let go of the connection.
                this.src = None;
                this.hint = SizeHint::with_exact(0);
                Poll::Ready(end.map(|r| r.map(Frame::data)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.src.is_none() || self.hint.exact() == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

/// Put in the extensions of a WebSocket upgrade request: yields the client connection once
/// the server has sent the handler's 101 response.
#[derive(Clone)]
pub struct OnUpgrade(Arc<Mutex<Option<oneshot::Receiver<Upgraded>>>>);

impl OnUpgrade {
    /// Waits for the connection (`None`: the response was not a 101 or could not be sent).
    pub async fn upgraded(self) -> Option<Upgraded> {
        let rx = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        rx.await.ok()
    }
}

/// A client connection after a 101: bytes the client sent after its request head first.
pub type Upgraded = crate::upgrade::Upgraded<Box<dyn ClientIo>>;

#[cfg(test)]
mod tests;
