//! One body type for both directions, so no request or response body is boxed.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::access_log::AccessLog;
use crate::balancer::Balancer;
use crate::h1client::{H1Error, RawBody};
use crate::h1server::{BodyFault, RequestBody, WireBody, WireHead};
use crate::timer::ConnTimer;

/// Counts a request against a target's in-flight total until the response body ends.
pub struct InFlight(Option<(Arc<Balancer>, usize)>);

impl InFlight {
    /// Starts counting, for a balancer whose algorithm reads the counts (least-connections,
    /// latency); the others need neither the count nor a reference to the balancer.
    pub fn new(balancer: &Arc<Balancer>, target: usize) -> InFlight {
        if !balancer.counts_in_flight() {
            return InFlight(None);
        }
        if let Some(t) = balancer.targets().get(target) {
            t.in_flight.fetch_add(1, Ordering::Relaxed);
        }
        InFlight(Some((balancer.clone(), target)))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some((balancer, target)) = &self.0 {
            if let Some(t) = balancer.targets().get(*target) {
                let _ = t
                    .in_flight
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
            }
        }
    }
}

/// A body as a connection delivers it: from this crate's HTTP/1 code (`B`) or from hyper's
/// HTTP/2 stream (`C`).
pub enum H1OrH2<B, C = Incoming> {
    /// From an HTTP/1 connection.
    H1(B),
    /// From an HTTP/2 stream.
    H2(C),
}

/// An upstream response body (see [`crate::h1client`]).
pub type Rest = H1OrH2<RawBody, TimedIncoming>;

/// An upstream's HTTP/2 response body with the service's `read_timeout` as the longest wait
/// for its next frame (the HTTP/1 client keeps the same timeout on its connection's timer).
pub struct TimedIncoming {
    inner: Incoming,
    read_timeout: Duration,
    /// Allocated at the first wait only.
    timer: ConnTimer,
}

impl TimedIncoming {
    /// `inner` with `read_timeout` between frames.
    pub fn new(inner: Incoming, read_timeout: Duration) -> TimedIncoming {
        TimedIncoming {
            inner,
            read_timeout,
            timer: ConnTimer::default(),
        }
    }
}

impl Body for TimedIncoming {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending if this.timer.expired(this.read_timeout, cx) => {
                Poll::Ready(Some(Err(BodyError::TimedOut)))
            }
            Poll::Pending => Poll::Pending,
            Poll::Ready(frame) => {
                this.timer.clear();
                Poll::Ready(frame.map(|f| f.map_err(BodyError::from)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A client's request body (see [`crate::h1server`]).
pub type ClientBody = H1OrH2<RequestBody>;

impl<B, C> Body for H1OrH2<B, C>
where
    B: Body<Data = Bytes> + Unpin,
    C: Body<Data = Bytes> + Unpin,
    BodyError: From<B::Error> + From<C::Error>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            H1OrH2::H1(b) => Pin::new(b).poll_frame(cx).map_err(BodyError::from),
            H1OrH2::H2(b) => Pin::new(b).poll_frame(cx).map_err(BodyError::from),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            H1OrH2::H1(b) => b.is_end_stream(),
            H1OrH2::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            H1OrH2::H1(b) => b.size_hint(),
            H1OrH2::H2(b) => b.size_hint(),
        }
    }
}

/// An upstream response body whose first frames may already have been read (response
/// inspection reads a prefix before anything is sent): those frames are sent first, then the
/// rest of the stream.
pub struct UpstreamBody {
    read: VecDeque<Frame<Bytes>>,
    rest: Rest,
    /// `rest` has ended (returned `None`) while reading ahead.
    ended: bool,
}

impl UpstreamBody {
    /// Nothing read ahead yet (no allocation).
    pub fn new(rest: Rest) -> UpstreamBody {
        UpstreamBody {
            read: VecDeque::new(),
            rest,
            ended: false,
        }
    }

    fn read_bytes(&self) -> usize {
        self.read
            .iter()
            .filter_map(|f| f.data_ref().map(Bytes::len))
            .sum()
    }

    /// Reads ahead until at least `n` data bytes are held or the body ends. Returns the first
    /// (at most) `n` bytes and whether they are the whole body. What was read is still sent.
    pub async fn peek(&mut self, n: usize) -> Result<(Bytes, bool), BodyError> {
        let mut have = self.read_bytes();
        while have < n && !self.ended {
            if self.rest.is_end_stream() {
                self.ended = true;
                break;
            }
            match self.rest.frame().await {
                None => self.ended = true,
                Some(Ok(frame)) => {
                    have += frame.data_ref().map_or(0, Bytes::len);
                    self.read.push_back(frame);
                }
                Some(Err(e)) => return Err(e),
            }
        }
        if self.rest.is_end_stream() {
            self.ended = true;
        }
        let complete = self.ended && have <= n;
        let mut data = self.read.iter().filter_map(Frame::data_ref);
        let prefix = match (data.next(), data.next()) {
            (None, _) => Bytes::new(),
            (Some(only), None) => only.slice(..only.len().min(n)),
            _ => {
                let mut buf = BytesMut::with_capacity(have.min(n));
                for d in self.read.iter().filter_map(Frame::data_ref) {
                    let take = d.len().min(n - buf.len());
                    buf.extend_from_slice(&d[..take]);
                    if buf.len() == n {
                        break;
                    }
                }
                buf.freeze()
            }
        };
        Ok((prefix, complete))
    }
}

impl UpstreamBody {
    /// The upstream response's header lines, when they came in wire mode.
    fn take_wire(&mut self) -> Option<WireHead> {
        match &mut self.rest {
            H1OrH2::H1(raw) => raw.take_wire(),
            H1OrH2::H2(_) => None,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if let Some(f) = this.read.pop_front() {
            return Poll::Ready(Some(Ok(f)));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        Pin::new(&mut this.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.read.is_empty() && (self.ended || self.rest.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let held = self.read_bytes() as u64;
        if self.ended {
            return SizeHint::with_exact(held);
        }
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + held);
        if let Some(u) = rest.upper() {
            hint.set_upper(u + held);
        }
        hint
    }
}

/// A request or response body.
pub enum ProxyBody {
    /// Nothing.
    Empty,
    /// A body held in memory (sent once, then end).
    Full(Option<Bytes>),
    /// Streamed from the client.
    Stream(ClientBody),
    /// Streamed from the client with a size limit (request-size-limiting on a body without a
    /// Content-Length): past the limit the stream fails and the flag is set, so the handler
    /// answers 413 instead of forwarding a truncated body.
    Limited(ClientBody, u64, Arc<AtomicBool>),
    /// A client body whose first frames were read ahead (a chunked body that outgrew the
    /// request buffer, or that carried trailers), then the rest of the stream.
    Prefixed(std::collections::VecDeque<Frame<Bytes>>, ClientBody),
    /// Streamed from an upstream, with its in-flight count and the request's access-log
    /// record (written when the body ends or the client goes away).
    Upstream(UpstreamBody, InFlight, Option<Box<AccessLog>>),
}

impl ProxyBody {
    /// A body from bytes.
    pub fn full(b: impl Into<Bytes>) -> ProxyBody {
        let b = b.into();
        if b.is_empty() {
            ProxyBody::Empty
        } else {
            ProxyBody::Full(Some(b))
        }
    }

    /// A copy for a retry, when the body is in memory.
    pub fn replay(&self) -> Option<ProxyBody> {
        match self {
            ProxyBody::Empty => Some(ProxyBody::Empty),
            ProxyBody::Full(b) => Some(ProxyBody::Full(b.clone())),
            _ => None,
        }
    }
}

/// Why a body stream failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The peer's stream failed.
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    /// An HTTP/1 upstream's response failed.
    #[error(transparent)]
    Upstream(#[from] H1Error),
    /// An HTTP/1 client's request body failed.
    #[error(transparent)]
    Client(#[from] BodyFault),
    /// The body grew past its limit.
    #[error("body exceeds the size limit")]
    TooLarge,
    /// An upstream's body stalled for longer than the service's `read_timeout`.
    #[error("upstream timed out")]
    TimedOut,
}

impl WireBody for ProxyBody {
    fn take_wire(&mut self) -> Option<WireHead> {
        match self {
            ProxyBody::Upstream(b, ..) => b.take_wire(),
            _ => None,
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ProxyBody::Empty => Poll::Ready(None),
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Stream(s) => Pin::new(s).poll_frame(cx).map_err(BodyError::from),
            ProxyBody::Limited(s, remaining, tripped) => {
                let polled = Pin::new(s).poll_frame(cx);
                if let Poll::Ready(Some(Ok(frame))) = &polled {
                    if let Some(d) = frame.data_ref() {
                        let n = d.len() as u64;
                        if n > *remaining {
                            tripped.store(true, Ordering::Relaxed);
                            return Poll::Ready(Some(Err(BodyError::TooLarge)));
                        }
                        *remaining -= n;
                    }
                }
                polled.map_err(BodyError::from)
            }
            ProxyBody::Prefixed(frames, s) => match frames.pop_front() {
                Some(f) => Poll::Ready(Some(Ok(f))),
                None => Pin::new(s).poll_frame(cx).map_err(BodyError::from),
            },
            ProxyBody::Upstream(s, _, log) => {
                let polled = Pin::new(s).poll_frame(cx);
                if let (Some(log), Poll::Ready(Some(Ok(frame)))) = (log.as_mut(), &polled) {
                    if let Some(d) = frame.data_ref() {
                        log.response_bytes += d.len() as u64;
                    }
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Empty => true,
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Stream(s) | ProxyBody::Limited(s, _, _) => s.is_end_stream(),
            ProxyBody::Prefixed(f, s) => f.is_empty() && s.is_end_stream(),
            ProxyBody::Upstream(s, _, _) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Empty => SizeHint::with_exact(0),
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Stream(s) | ProxyBody::Limited(s, _, _) => s.size_hint(),
            ProxyBody::Prefixed(f, s) => {
                let ahead: u64 = f
                    .iter()
                    .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
                    .sum();
                let rest = s.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower().saturating_add(ahead));
                if let Some(u) = rest.upper() {
                    hint.set_upper(u.saturating_add(ahead));
                }
                hint
            }
            ProxyBody::Upstream(s, _, _) => s.size_hint(),
        }
    }
}

/// Shared counters shown by `/status`.
#[derive(Default, Debug)]
pub struct Stats {
    /// Open client connections.
    pub connections_active: AtomicUsize,
    /// Accepted client connections.
    pub connections_accepted: AtomicUsize,
    /// Requests handled.
    pub requests_total: AtomicUsize,
    /// Requests being handled (routing, plugins, waiting for the upstream's response head).
    pub requests_in_flight: AtomicUsize,
}

/// Counts a request in [`Stats::requests_in_flight`] while alive.
pub struct InFlightRequest<'a>(&'a Stats);

impl<'a> InFlightRequest<'a> {
    /// Starts counting.
    pub fn new(stats: &'a Stats) -> Self {
        stats.requests_in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightRequest(stats)
    }
}

impl Drop for InFlightRequest<'_> {
    fn drop(&mut self) {
        self.0.requests_in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
