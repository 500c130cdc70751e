//! A strict HTTP/1 framing guard in front of hyper's server.
//!
//! hyper accepts several ambiguous requests (both Content-Length and Transfer-Encoding, a
//! missing or duplicated Host, bare-LF line ends, lower-case methods) and has no header read
//! timeout without a timer. Every byte a client sends passes through [`GuardedIo`] first: it
//! parses each request head with httparse, checks it, follows the body framing (including every
//! chunk size line), and only then hands the bytes to hyper. When it finds a fault it answers
//! with the matching status itself and closes the connection, so nothing ambiguous is forwarded:
//!
//! - at a message boundary, hyper sees end-of-stream; it finishes any earlier pipelined
//!   response (the server runs with half-close allowed) and shuts the connection down, and the
//!   guard writes its answer just before the shutdown;
//! - inside a body, the guard writes the answer at once and hyper sees an I/O error, so the
//!   request is never completed towards the upstream.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

pub(crate) mod chunked;
mod head;
#[cfg(test)]
mod tests;

use chunked::{ChunkStep, Chunked};
pub(crate) use head::parse_content_length;
pub use head::Limits;
use head::{Framing, HeadError};

/// Shared between the guard and the request handler of one connection: the handler says
/// whether an upgrade request was accepted (101) or refused.
#[derive(Default)]
pub struct UpgradeSignal {
    state: AtomicU8,
    waker: AtomicWaker,
}

const ACCEPTED: u8 = 1;
const REFUSED: u8 = 2;

impl UpgradeSignal {
    /// The upstream answered 101: the connection becomes a tunnel.
    pub fn accept(&self) {
        self.state.store(ACCEPTED, Ordering::Release);
        self.waker.wake();
    }

    /// The upgrade did not happen: the connection is closed after the response.
    pub fn refuse(&self) {
        self.state.store(REFUSED, Ordering::Release);
        self.waker.wake();
    }
}

enum State {
    /// Waiting for (the rest of) a request head.
    Head { started: bool },
    /// Inside a Content-Length body.
    Body(u64),
    /// Inside a chunked body.
    Chunked(Chunked),
    /// After an upgrade request: hold bytes until the handler decides.
    AwaitUpgrade,
    /// Upgraded: bytes pass through unchecked.
    Tunnel,
}

/// Wraps a client connection; see the module docs.
pub struct GuardedIo<T> {
    inner: T,
    limits: Arc<Limits>,
    upgrade: Arc<UpgradeSignal>,
    state: State,
    /// Bytes read from the client and not yet given to hyper; the first `ready` are checked.
    stash: BytesMut,
    ready: usize,
    /// An answer to send before closing, and how much of it is written.
    reply: Option<(Vec<u8>, usize)>,
    /// The connection is finished as far as hyper is concerned: report end-of-stream.
    ended: bool,
    /// Mid-body fault: report one error to hyper.
    fail_next_read: bool,
    /// When the current state times out; `None` until first needed in this state.
    deadline: Option<Instant>,
    /// One timer per connection, never earlier than needed: it is only re-armed when it
    /// fires before `deadline`, so a request costs no timer registration.
    timer: Option<Pin<Box<Sleep>>>,
    requests: u64,
    /// After a mid-body fault our answer is final: hyper may not write another response.
    writes_closed: bool,
}

impl<T> GuardedIo<T> {
    /// Guards `inner` with the given limits.
    pub fn new(inner: T, limits: Arc<Limits>, upgrade: Arc<UpgradeSignal>) -> Self {
        GuardedIo {
            inner,
            limits,
            upgrade,
            state: State::Head { started: false },
            stash: BytesMut::with_capacity(8 * 1024),
            ready: 0,
            reply: None,
            ended: false,
            fail_next_read: false,
            deadline: None,
            timer: None,
            requests: 0,
            writes_closed: false,
        }
    }

    /// True when the current state's deadline has passed; otherwise makes sure the timer
    /// will wake the task by then.
    fn timed_out(&mut self, after: Duration, cx: &mut Context<'_>) -> bool {
        let deadline = *self.deadline.get_or_insert_with(|| Instant::now() + after);
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() > deadline {
            timer.as_mut().reset(deadline);
        }
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            if Instant::now() >= deadline {
                return true;
            }
            // Fired for an earlier state's deadline: wait for this one.
            timer.as_mut().reset(deadline);
        }
    }

    /// Stop the connection at a message boundary with `status`.
    fn refuse_at_boundary(&mut self, status: u16) {
        self.reply = Some((error_reply(status), 0));
        self.ended = true;
        // Checked bytes of earlier pipelined requests still reach hyper; nothing after them.
        self.stash.truncate(self.ready);
    }

    /// Stop the connection inside a body with `status`.
    fn refuse_mid_body(&mut self, status: u16) {
        self.refuse_at_boundary(status);
        self.fail_next_read = true;
        self.writes_closed = true;
    }

    /// Checks the unchecked bytes of the stash, advancing `ready` and the state.
    fn scan(&mut self) {
        loop {
            let pending = &self.stash[self.ready..];
            if pending.is_empty() {
                return;
            }
            match &mut self.state {
                State::Head { started } => {
                    if !*started {
                        // The head's own timeout runs from its first byte.
                        *started = true;
                        self.deadline = None;
                    }
                    match head::check(pending, &self.limits) {
                        Ok(None) => return,
                        Ok(Some((len, framing))) => {
                            self.ready += len;
                            self.requests += 1;
                            self.deadline = None;
                            self.state = match framing {
                                Framing::None => State::Head { started: false },
                                Framing::Length(n) if n > 0 => State::Body(n),
                                Framing::Length(_) => State::Head { started: false },
                                Framing::Chunked => State::Chunked(Chunked::default()),
                                Framing::Upgrade => State::AwaitUpgrade,
                            };
                        }
                        Err(HeadError(status)) => {
                            self.refuse_at_boundary(status);
                            return;
                        }
                    }
                }
                State::Body(remaining) => {
                    let take = (*remaining).min(pending.len() as u64);
                    *remaining -= take;
                    self.ready += take as usize;
                    if *remaining == 0 {
                        self.state = State::Head { started: false };
                    }
                }
                State::Chunked(c) => match c.advance(pending, self.limits.max_header_bytes) {
                    ChunkStep::Consumed(n) => {
                        self.ready += n;
                        return;
                    }
                    ChunkStep::Done(n) => {
                        self.ready += n;
                        self.state = State::Head { started: false };
                    }
                    ChunkStep::Invalid => {
                        self.refuse_mid_body(400);
                        return;
                    }
                },
                State::AwaitUpgrade => return,
                State::Tunnel => {
                    self.ready = self.stash.len();
                    return;
                }
            }
        }
    }

    /// Which timeout applies now, if any.
    fn timeout_for_state(&self) -> Option<Duration> {
        match &self.state {
            State::Head { started: false } if self.stash.is_empty() => {
                Some(if self.requests == 0 {
                    self.limits.header_timeout
                } else {
                    self.limits.keepalive_timeout
                })
            }
            State::Head { .. } => Some(self.limits.header_timeout),
            State::Body(_) | State::Chunked(_) => Some(self.limits.body_timeout),
            State::AwaitUpgrade | State::Tunnel => None,
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> GuardedIo<T> {
    /// Writes the pending reply, if any.
    fn poll_reply(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.reply {
            if *written >= bytes.len() {
                self.reply = None;
                break;
            }
            let n =
                std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                self.reply = None;
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn on_timeout(&mut self) {
        match &self.state {
            // An idle keep-alive connection: close quietly.
            State::Head { started: false } if self.stash.is_empty() => {
                self.ended = true;
            }
            State::Head { .. } => self.refuse_at_boundary(408),
            _ => self.refuse_mid_body(408),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for GuardedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ready > 0 {
                let n = this.ready.min(buf.remaining());
                buf.put_slice(&this.stash[..n]);
                this.stash.advance(n);
                this.ready -= n;
                return Poll::Ready(Ok(()));
            }
            if this.fail_next_read {
                // Answer first, then fail the read so hyper abandons the request.
                let _ = this.poll_reply(cx);
                this.fail_next_read = false;
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "malformed request body",
                )));
            }
            if this.ended {
                return Poll::Ready(Ok(()));
            }
            match this.state {
                State::Tunnel => return Pin::new(&mut this.inner).poll_read(cx, buf),
                State::AwaitUpgrade => {
                    this.upgrade.waker.register(cx.waker());
                    match this.upgrade.state.load(Ordering::Acquire) {
                        ACCEPTED => {
                            this.state = State::Tunnel;
                            this.ready = this.stash.len();
                            continue;
                        }
                        REFUSED => {
                            this.ended = true;
                            continue;
                        }
                        _ => return Poll::Pending,
                    }
                }
                _ => {}
            }
            if let Some(after) = this.timeout_for_state() {
                if this.timed_out(after, cx) {
                    this.deadline = None;
                    this.on_timeout();
                    continue;
                }
            }
            if this.stash.capacity() - this.stash.len() < 4096 {
                this.stash.reserve(8 * 1024);
            }
            let n = std::task::ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut this.inner),
                cx,
                &mut this.stash
            ))?;
            if n == 0 {
                // Client closed its side: hyper decides what an early end means.
                this.ended = true;
                this.stash.clear();
                this.ready = 0;
                continue;
            }
            // Any byte resets the inactivity deadline inside a body.
            if matches!(this.state, State::Body(_) | State::Chunked(_)) {
                this.deadline = None;
            }
            this.scan();
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for GuardedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.writes_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        Pin::new(&mut this.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.writes_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_reply(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// A complete HTTP/1.1 error response with Kong's message for `status`, closing the connection.
pub fn error_reply(status: u16) -> Vec<u8> {
    let (reason, message) = match status {
        408 => ("Request Timeout", "Request timeout"),
        413 => ("Payload Too Large", "Payload too large"),
        414 => ("URI Too Long", "URI too long"),
        431 => (
            "Request Header Fields Too Large",
            "Request header or cookie too large",
        ),
        501 => ("Not Implemented", "Not implemented"),
        _ => ("Bad Request", "Bad request"),
    };
    let body = format!("{{\"message\":\"{message}\"}}");
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
