//! One body type for both directions, so no request or response body is boxed.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::access_log::AccessLog;
use crate::balancer::Balancer;

/// Counts a request against a target's in-flight total until the response body ends.
pub struct InFlight {
    balancer: Arc<Balancer>,
    target: usize,
}

impl InFlight {
    /// Starts counting.
    pub fn new(balancer: Arc<Balancer>, target: usize) -> InFlight {
        if let Some(t) = balancer.targets().get(target) {
            t.in_flight.fetch_add(1, Ordering::Relaxed);
        }
        InFlight { balancer, target }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(t) = self.balancer.targets().get(self.target) {
            let _ = t
                .in_flight
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
        }
    }
}

/// A request or response body.
pub enum ProxyBody {
    /// Nothing.
    Empty,
    /// A body held in memory (sent once, then end).
    Full(Option<Bytes>),
    /// Streamed from the peer.
    Stream(Incoming),
    /// Streamed from the client with a size limit (request-size-limiting on a body without a
    /// Content-Length): past the limit the stream fails and the flag is set, so the handler
    /// answers 413 instead of forwarding a truncated body.
    Limited(Incoming, u64, Arc<AtomicBool>),
    /// Streamed from an upstream, with its in-flight count and the request's access-log
    /// record (written when the body ends or the client goes away).
    Upstream(Incoming, InFlight, Option<Box<AccessLog>>),
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
    /// The body grew past its limit.
    #[error("body exceeds the size limit")]
    TooLarge,
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
            ProxyBody::Upstream(s, _, log) => {
                let polled = Pin::new(s).poll_frame(cx);
                if let (Some(log), Poll::Ready(Some(Ok(frame)))) = (log.as_mut(), &polled) {
                    if let Some(d) = frame.data_ref() {
                        log.response_bytes += d.len() as u64;
                    }
                }
                polled.map_err(BodyError::from)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Empty => true,
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Stream(s) | ProxyBody::Upstream(s, _, _) | ProxyBody::Limited(s, _, _) => {
                s.is_end_stream()
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Empty => SizeHint::with_exact(0),
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Stream(s) | ProxyBody::Upstream(s, _, _) | ProxyBody::Limited(s, _, _) => {
                s.size_hint()
            }
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
