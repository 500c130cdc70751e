//! Connections to upstream targets: connect (TCP, optional TLS), HTTP/1.1 ([`crate::h1client`])
//! or HTTP/2 (hyper), and a keep-alive pool. Connecting is separate from sending so a failed connect
//! can be retried on another target with the request still in hand.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

use crate::body::ProxyBody;
use crate::h1client::{self, Conn};

/// The body type of upstream requests.
pub type UpBody = ProxyBody;

/// How to reach a target.
#[derive(Clone)]
pub struct Endpoint {
    /// Host name or IP.
    pub host: Arc<str>,
    /// Port.
    pub port: u16,
    /// TLS settings when the service is https/grpcs/wss.
    pub tls: Option<Arc<TlsClient>>,
    /// Server name for SNI and verification.
    pub sni: Arc<str>,
    /// Speak HTTP/2 (gRPC services).
    pub h2: bool,
}

/// A TLS client configuration with a stable fingerprint used as part of the pool key.
pub struct TlsClient {
    /// rustls config (ALPN set for the protocol).
    pub config: Arc<rustls::ClientConfig>,
    /// Identifies the settings (CA ids, verification, client certificate).
    pub fingerprint: u64,
}

/// Identifies interchangeable connections in the pool.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    host: Arc<str>,
    port: u16,
    sni: Arc<str>,
    tls: u64,
    h2: bool,
}

impl PoolKey {
    /// The key of an endpoint.
    pub fn of(ep: &Endpoint) -> PoolKey {
        PoolKey {
            host: ep.host.clone(),
            port: ep.port,
            sni: ep.sni.clone(),
            tls: ep.tls.as_ref().map_or(0, |t| t.fingerprint),
            h2: ep.h2,
        }
    }
}

/// A ready-to-use connection.
pub enum Sender {
    /// One request at a time, sent by the request's own task.
    H1(Box<Conn>),
    /// Multiplexed (hyper's client, with its connection task).
    H2(http2::SendRequest<UpBody>),
}

impl Sender {
    /// Still open (an HTTP/1 connection: not closed by the upstream and without unsolicited
    /// bytes, see `Conn::is_reusable`).
    fn is_open(&mut self) -> bool {
        match self {
            Sender::H1(c) => c.is_reusable(),
            Sender::H2(s) => !s.is_closed(),
        }
    }

    /// Can take a request now (an HTTP/2 connection may have no stream free).
    fn is_ready(&self) -> bool {
        match self {
            Sender::H1(_) => true,
            Sender::H2(s) => s.is_ready(),
        }
    }

    fn duplicate(&self) -> Option<Sender> {
        match self {
            Sender::H2(s) => Some(Sender::H2(s.clone())),
            Sender::H1(_) => None,
        }
    }
}

/// A failed HTTP/2 send.
pub struct SendError {
    /// The request, when it was not sent at all.
    pub unsent: Option<http::Request<UpBody>>,
    /// The cause.
    pub error: hyper::Error,
}

/// Sends a request on a shared HTTP/2 connection; on failure before the request left, hands
/// it back.
pub async fn send_h2(
    s: &mut http2::SendRequest<UpBody>,
    req: http::Request<UpBody>,
) -> Result<http::Response<hyper::body::Incoming>, SendError> {
    s.try_send_request(req).await.map_err(|mut e| SendError {
        unsent: e.take_message(),
        error: e.into_error(),
    })
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No connection within the connect timeout.
    #[error("connect timed out")]
    Timeout,
    /// Refused, unreachable, TLS or handshake failure.
    #[error("connect failed: {0}")]
    Failed(String),
    /// The target's host name did not resolve.
    #[error("name resolution failed: {0}")]
    Resolve(String),
}

struct Idle {
    sender: Sender,
    since: Instant,
}

/// The idle connections to one endpoint (one [`PoolKey`]). The pool hands out one slot per
/// key, shared by every config snapshot; a compiled service keeps its targets' slots, so a
/// request finds its connections without building, hashing or comparing a key.
pub struct Slot {
    idle: Mutex<VecDeque<Idle>>,
    max: usize,
    idle_timeout: Duration,
}

impl Slot {
    /// A pooled connection that is ready at `now` (the caller's clock reading), if any.
    pub fn checkout(&self, now: Instant) -> Option<Sender> {
        let mut queue = self.idle.lock().ok()?;
        // Most recently used first: it is the likeliest to be open. Busy HTTP/2 connections
        // (no stream free) go to the back.
        for _ in 0..queue.len() {
            let mut entry = queue.pop_back()?;
            if now.duration_since(entry.since) > self.idle_timeout || !entry.sender.is_open() {
                continue;
            }
            if !entry.sender.is_ready() {
                queue.push_front(entry);
                continue;
            }
            if let Some(dup) = entry.sender.duplicate() {
                queue.push_back(entry);
                return Some(dup);
            }
            return Some(entry.sender);
        }
        None
    }

    /// Returns an HTTP/1 connection whose response has been read completely, idle since
    /// `since`.
    pub fn checkin_h1(&self, conn: Box<Conn>, since: Instant) {
        let Ok(mut queue) = self.idle.lock() else {
            return;
        };
        if queue.len() >= self.max {
            queue.pop_front();
        }
        queue.push_back(Idle {
            sender: Sender::H1(conn),
            since,
        });
    }

    fn keep_shared(&self, sender: &Sender) {
        if let (Some(dup), Ok(mut queue)) = (sender.duplicate(), self.idle.lock()) {
            queue.retain_mut(|e| e.sender.is_open());
            queue.push_back(Idle {
                sender: dup,
                since: Instant::now(),
            });
        }
    }

    /// Drops closed and expired connections; true when some are left.
    fn sweep(&self, now: Instant) -> bool {
        let Ok(mut queue) = self.idle.lock() else {
            return true;
        };
        queue
            .retain_mut(|e| now.duration_since(e.since) <= self.idle_timeout && e.sender.is_open());
        !queue.is_empty()
    }

    /// Idle connections held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.idle.lock().map_or(0, |q| q.len())
    }

    /// No idle connection held.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Keep-alive pool of upstream connections: one [`Slot`] per endpoint.
pub struct Pool {
    slots: Mutex<FxHashMap<PoolKey, Arc<Slot>>>,
    max_per_key: usize,
    idle_timeout: Duration,
}

impl Pool {
    /// A pool keeping at most `max_per_key` idle connections per endpoint.
    pub fn new(max_per_key: usize, idle_timeout: Duration) -> Pool {
        Pool {
            slots: Mutex::new(FxHashMap::default()),
            max_per_key,
            idle_timeout,
        }
    }

    /// The slot of an endpoint (made on first use; the same slot for the same key).
    pub fn slot(&self, key: PoolKey) -> Arc<Slot> {
        let make = || {
            Arc::new(Slot {
                idle: Mutex::new(VecDeque::new()),
                max: self.max_per_key,
                idle_timeout: self.idle_timeout,
            })
        };
        match self.slots.lock() {
            Ok(mut slots) => slots.entry(key).or_insert_with(make).clone(),
            // A poisoned map still leaves a working (unshared) slot.
            Err(_) => make(),
        }
    }

    /// Drops closed and expired connections (run periodically), and the slots nobody holds
    /// that are left empty.
    pub fn sweep(&self) {
        if let Ok(mut slots) = self.slots.lock() {
            let now = Instant::now();
            slots.retain(|_, slot| slot.sweep(now) || Arc::strong_count(slot) > 1);
        }
    }

    /// Opens a new connection to `ep`; an HTTP/2 one is also shared through `slot`.
    pub async fn connect(
        ep: &Endpoint,
        slot: &Slot,
        timeout: Duration,
    ) -> Result<Sender, ConnectError> {
        let sender = tokio::time::timeout(timeout, connect(ep))
            .await
            .map_err(|_| ConnectError::Timeout)??;
        if ep.h2 {
            slot.keep_shared(&sender);
        }
        Ok(sender)
    }
}

/// Round-robin position for a host with `n` addresses (process-wide counter per host).
fn next_rotation(host: &str, n: usize) -> usize {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Mutex, OnceLock};
    static COUNTERS: OnceLock<Mutex<HashMap<String, Arc<AtomicUsize>>>> = OnceLock::new();
    let counters = COUNTERS.get_or_init(|| Mutex::new(HashMap::new()));
    let counter = match counters.lock() {
        Ok(mut m) => {
            if m.len() > 10_000 {
                m.clear();
            }
            m.entry(host.to_string()).or_default().clone()
        }
        Err(_) => return 0,
    };
    counter.fetch_add(1, Ordering::Relaxed) % n
}

async fn connect(ep: &Endpoint) -> Result<Sender, ConnectError> {
    let mut addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((&*ep.host, ep.port))
        .await
        .map_err(|e| ConnectError::Resolve(e.to_string()))?
        .collect();
    // A name with several addresses (A/AAAA records) is balanced round-robin over new
    // connections, like Kong's DNS balancer; the others remain fallbacks when one is down.
    if addrs.len() > 1 {
        let start = next_rotation(&ep.host, addrs.len());
        addrs.rotate_left(start);
    }
    let mut last = String::from("no address");
    let mut tcp = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = e.to_string(),
        }
    }
    let tcp = tcp.ok_or(ConnectError::Failed(last))?;
    let _ = tcp.set_nodelay(true);
    let io = match &ep.tls {
        None => h1client::Io::Plain(tcp),
        Some(tls) => {
            let name = ServerName::try_from(ep.sni.to_string())
                .map_err(|_| ConnectError::Failed("invalid server name".into()))?;
            let stream = tokio_rustls::TlsConnector::from(tls.config.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| ConnectError::Failed(format!("TLS handshake failed: {e}")))?;
            h1client::Io::Tls(Box::new(stream))
        }
    };
    if !ep.h2 {
        return Ok(Sender::H1(Box::new(Conn::new(io))));
    }
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
        .await
        .map_err(|e| ConnectError::Failed(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Sender::H2(sender))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16) -> PoolKey {
        PoolKey::of(&Endpoint {
            host: "127.0.0.1".into(),
            port,
            tls: None,
            sni: "127.0.0.1".into(),
            h2: false,
        })
    }

    async fn conn(listener: &tokio::net::TcpListener) -> (Box<Conn>, TcpStream) {
        let addr = listener.local_addr().unwrap();
        let (c, s) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (
            Box::new(Conn::new(h1client::Io::Plain(c.unwrap()))),
            s.unwrap().0,
        )
    }

    #[tokio::test]
    async fn one_slot_per_endpoint_and_connections_come_back_newest_first() {
        let pool = Pool::new(2, Duration::from_secs(60));
        let a = pool.slot(key(1));
        assert!(Arc::ptr_eq(&a, &pool.slot(key(1))));
        assert!(!Arc::ptr_eq(&a, &pool.slot(key(2))));

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (c1, _s1) = conn(&listener).await;
        let (c2, _s2) = conn(&listener).await;
        let (c3, _s3) = conn(&listener).await;
        let p2 = c2.local_port();
        let p3 = c3.local_port();
        a.checkin_h1(c1, Instant::now());
        a.checkin_h1(c2, Instant::now());
        // Over the limit of 2: the oldest goes.
        a.checkin_h1(c3, Instant::now());
        assert_eq!(a.len(), 2);
        let ports: Vec<u16> = std::iter::from_fn(|| match a.checkout(Instant::now()) {
            Some(Sender::H1(c)) => Some(c.local_port()),
            _ => None,
        })
        .collect();
        assert_eq!(ports, [p3, p2]);
    }

    #[tokio::test]
    async fn sweeping_drops_expired_connections_and_unheld_empty_slots() {
        let pool = Pool::new(4, Duration::ZERO);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let held = pool.slot(key(1));
        let (c, _s) = conn(&listener).await;
        held.checkin_h1(c, Instant::now());
        let (c, _s2) = conn(&listener).await;
        pool.slot(key(2)).checkin_h1(c, Instant::now());
        tokio::time::sleep(Duration::from_millis(5)).await;
        pool.sweep();
        assert!(held.is_empty());
        // The unheld slot, left empty, is gone from the map; the held one stays the
        // endpoint's slot.
        assert_eq!(pool.slots.lock().unwrap().len(), 1);
        assert!(pool.slots.lock().unwrap().contains_key(&key(1)));
        assert!(Arc::ptr_eq(&held, &pool.slot(key(1))));
    }
}
