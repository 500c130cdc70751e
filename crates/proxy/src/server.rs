//! Listeners and client connections: plain text (HTTP/1.1 through [`crate::h1server`], or h2c
//! with prior knowledge through hyper) and TLS (ALPN picks h2 or HTTP/1.1), with graceful
//! shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::body::ClientBody;
use crate::gateway::Gateway;
use crate::guard::Limits;
use crate::handler::{handle, ConnInfo};
use crate::settings::secs;

/// Per-connection view of the shutdown signal.
type Shutdown = watch::Receiver<bool>;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Bound listeners, ready to serve.
pub struct Listeners {
    /// Plain-text proxy listener.
    pub http: TcpListener,
    /// TLS proxy listener.
    pub https: Option<TcpListener>,
}

impl Listeners {
    /// Binds the proxy listeners from the settings.
    pub async fn bind(gw: &Gateway) -> std::io::Result<Listeners> {
        let http = bind(gw.settings.proxy_listen)?;
        let https = Some(bind(gw.settings.proxy_tls_listen)?);
        Ok(Listeners { http, https })
    }
}

/// Binds with SO_REUSEADDR and a large backlog.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

/// Serves until `shutdown` turns true, then drains in-flight requests for up to the
/// configured shutdown timeout.
pub async fn serve(
    gw: Arc<Gateway>,
    listeners: Listeners,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let tls_cfg = crate::tls::server_config(gw.resolver.clone(), gw.client_auth.clone())
        .map_err(anyhow::Error::msg)?;
    let acceptor = TlsAcceptor::from(Arc::new(tls_cfg));
    let limits = Arc::new(Limits {
        max_header_count: gw.settings.max_header_count,
        max_header_bytes: gw.settings.max_header_bytes,
        max_uri_length: gw.settings.max_uri_length,
        header_timeout: gw.settings.header_timeout(),
        keepalive_timeout: gw.settings.keepalive(),
        body_timeout: gw.settings.header_timeout(),
        send_timeout: gw.settings.header_timeout(),
    });
    crate::batch::set_enabled(gw.settings.batch_writes);
    // Settings validation allows it with one worker only (the current-thread runtime).
    if gw.settings.busy_polling {
        crate::busy::start(secs(gw.settings.busy_polling_window));
    }
    gw.ready.store(true, Ordering::Release);
    loop {
        let accepted = tokio::select! {
            a = listeners.http.accept() => a.map(|(s, p)| (s, p, false)),
            a = accept_opt(listeners.https.as_ref()) => a.map(|(s, p)| (s, p, true)),
            _ = shutdown.changed() => break,
        };
        let (stream, peer, is_tls) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let gw = gw.clone();
        let limits = limits.clone();
        let acceptor = acceptor.clone();
        let watcher = shutdown.clone();
        tokio::spawn(async move {
            gw.stats.connections_active.fetch_add(1, Ordering::Relaxed);
            // Decremented on every exit, a panic in the connection task included.
            let _active = ActiveConn(gw.clone());
            gw.stats
                .connections_accepted
                .fetch_add(1, Ordering::Relaxed);
            let _ = stream.set_nodelay(true);
            let local = stream.local_addr().unwrap_or(peer);
            if is_tls {
                serve_tls(gw.clone(), stream, peer, local, acceptor, limits, watcher).await;
            } else {
                serve_plain(gw.clone(), stream, peer, local, limits, watcher).await;
            }
        });
    }
    gw.ready.store(false, Ordering::Release);
    drop(listeners);
    tracing::info!("draining connections");
    let drained = async {
        while gw.stats.connections_active.load(Ordering::Relaxed) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    match tokio::time::timeout(secs(gw.settings.shutdown_timeout), drained).await {
        Ok(()) => tracing::info!("all connections closed"),
        Err(_) => tracing::warn!("shutdown timeout reached; closing remaining connections"),
    }
    Ok(())
}

/// Counts an open client connection for as long as it lives.
struct ActiveConn(Arc<Gateway>);

impl Drop for ActiveConn {
    fn drop(&mut self) {
        self.0
            .stats
            .connections_active
            .fetch_sub(1, Ordering::Relaxed);
    }
}

async fn accept_opt(l: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Waits until the first bytes tell whether this is an h2c prior-knowledge connection.
async fn is_h2c(stream: &TcpStream, timeout: Duration) -> bool {
    let mut buf = [0u8; 24];
    let check = async {
        loop {
            let n = match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            if buf[..n] != H2_PREFACE[..n] {
                return false;
            }
            if n == H2_PREFACE.len() {
                return true;
            }
            if stream.readable().await.is_err() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(timeout, check).await.unwrap_or(false)
}

async fn serve_plain(
    gw: Arc<Gateway>,
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    limits: Arc<Limits>,
    watcher: Shutdown,
) {
    if is_h2c(&stream, limits.header_timeout).await {
        let info = Arc::new(ConnInfo::new(peer, local, false, None, None, None));
        serve_h2(gw, stream, info, watcher).await;
    } else {
        serve_h1(gw, stream, peer, local, None, limits, watcher).await;
    }
}

async fn serve_tls(
    gw: Arc<Gateway>,
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    acceptor: TlsAcceptor,
    limits: Arc<Limits>,
    watcher: Shutdown,
) {
    let tls = match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, %peer, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let (_, session) = tls.get_ref();
    let h2 = session.alpn_protocol() == Some(b"h2");
    let sni = session.server_name().map(|s| s.to_ascii_lowercase());
    let client_certs = session.peer_certificates().map(|chain| {
        Arc::new(
            chain
                .iter()
                .map(|c| bytes::Bytes::copy_from_slice(c.as_ref()))
                .collect::<Vec<_>>(),
        )
    });
    let version = match session.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => Some("TLSv1.3"),
        Some(rustls::ProtocolVersion::TLSv1_2) => Some("TLSv1.2"),
        _ => None,
    };
    if h2 {
        let info = Arc::new(ConnInfo::new(peer, local, true, sni, version, client_certs));
        serve_h2(gw, tls, info, watcher).await;
    } else {
        let tls_conn = TlsFacts {
            sni,
            version,
            client_certs,
        };
        serve_h1(gw, tls, peer, local, Some(tls_conn), limits, watcher).await;
    }
}

/// What the TLS handshake established.
struct TlsFacts {
    sni: Option<String>,
    version: Option<&'static str>,
    client_certs: Option<Arc<Vec<bytes::Bytes>>>,
}

async fn serve_h1<I>(
    gw: Arc<Gateway>,
    io: I,
    peer: SocketAddr,
    local: SocketAddr,
    tls: Option<TlsFacts>,
    limits: Arc<Limits>,
    watcher: Shutdown,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let is_tls = tls.is_some();
    let (sni, tls_version, client_certs) = match tls {
        Some(t) => (t.sni, t.version, t.client_certs),
        None => (None, None, None),
    };
    let info = Arc::new(ConnInfo::new(
        peer,
        local,
        is_tls,
        sni,
        tls_version,
        client_certs,
    ));
    crate::h1server::serve(io, limits, watcher, |req| {
        handle(&gw, &info, req.map(ClientBody::H1))
    })
    .await;
}

async fn serve_h2<I>(gw: Arc<Gateway>, io: I, info: Arc<ConnInfo>, watcher: Shutdown)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Counted while open, for write batching (see `batch`).
    let _open = crate::batch::Open::new();
    let settings = gw.settings.clone();
    let svc = service_fn(move |req| {
        let gw = gw.clone();
        let info = info.clone();
        async move { Ok::<_, Infallible>(handle(&gw, &info, req.map(ClientBody::H2)).await) }
    });
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.h2_max_concurrent_streams)
        .max_pending_accept_reset_streams(settings.h2_max_pending_resets)
        .max_local_error_reset_streams(settings.h2_max_local_error_resets)
        .max_header_list_size(settings.max_header_bytes as u32)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let mut watcher = watcher;
    let finished = tokio::select! {
        r = conn.as_mut() => Some(r),
        _ = async { let _ = watcher.wait_for(|stop| *stop).await; } => None,
    };
    let res = match finished {
        Some(r) => r,
        None => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = res {
        tracing::debug!(error = %e, "h2 client connection ended with an error");
    }
}
