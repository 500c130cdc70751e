//! TLS and HTTP/2 test helpers: a test CA issuing leaf certificates (rcgen), TLS client
//! configurations and connections, HTTP/1.1 and HTTP/2 requests over any stream, an HTTPS
//! origin (optionally requiring client certificates) and an h2c gRPC-style origin.

// Test setup helpers: a failed setup step should panic on the spot.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::Reply;

/// Upper bound for any single network step in these helpers, so a broken gateway fails the
/// test instead of hanging it.
pub const STEP: Duration = Duration::from_secs(10);

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate authority created for one test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub pem: String,
    /// The CA certificate, DER.
    pub der: CertificateDer<'static>,
}

/// A certificate issued by a [`TestCa`], with its private key.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Leaf {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivatePkcs8KeyDer::from(self.key_der.clone()).into()
    }
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pem = issuer.pem();
        let der = issuer.der().clone();
        TestCa { issuer, pem, der }
    }

    /// A leaf for `names` (DNS names or IPs), usable for server and client authentication.
    pub fn issue(&self, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }
}

impl TestCa {
    /// A client certificate with subject CN `cn`, the given SANs (`dns:`, `email:` or `uri:`
    /// prefixed) and serial number.
    pub fn issue_client(&self, cn: &str, sans: &[&str], serial: u64) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        for san in sans {
            let (kind, value) = san.split_once(':').unwrap();
            params.subject_alt_names.push(match kind {
                "dns" => rcgen::SanType::DnsName(value.try_into().unwrap()),
                "email" => rcgen::SanType::Rfc822Name(value.try_into().unwrap()),
                "uri" => rcgen::SanType::URI(value.try_into().unwrap()),
                other => panic!("unknown SAN kind {other}"),
            });
        }
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    /// A CRL (PEM) revoking the given serial numbers.
    pub fn crl(&self, revoked: &[u64]) -> String {
        let now = rcgen::date_time_ymd(2026, 1, 1);
        let params = rcgen::CertificateRevocationListParams {
            this_update: now,
            next_update: rcgen::date_time_ymd(2099, 1, 1),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from(*s),
                    revocation_time: now,
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer).unwrap().pem().unwrap()
    }
}

/// A TLS client configuration presenting `leaf` as its client certificate (any server
/// certificate accepted).
pub fn client_with_cert(leaf: &Leaf) -> Arc<ClientConfig> {
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(all_versions())
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny::all()))
        .with_client_auth_cert(vec![leaf.der.clone()], leaf.key())
        .unwrap();
    Arc::new(cfg)
}

impl TestCa {
    /// A server leaf for `name` with an Ed25519 key (for certificate-selection tests).
    pub fn issue_ed25519(&self, name: &str) -> Leaf {
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }
}

/// A TLS 1.3 client that offers only `schemes` for the server's signature (any certificate
/// accepted), to see which certificate a server picks for such a client.
pub fn client_offering(schemes: &[SignatureScheme]) -> Arc<ClientConfig> {
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny::offering(schemes.to_vec())))
        .with_no_client_auth();
    Arc::new(cfg)
}

/// A YAML scalar holding `text` (a JSON string is a valid YAML double-quoted scalar).
pub fn yaml_str(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

/// A TLS client configuration. `roots: None` accepts any server certificate (to inspect what
/// the server sends); `Some` verifies against exactly those roots.
pub fn client_config(
    roots: Option<&[&CertificateDer<'static>]>,
    alpn: &[&str],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap();
    let mut cfg = match roots {
        Some(roots) => {
            let mut store = RootCertStore::empty();
            for r in roots {
                store.add((*r).clone()).unwrap();
            }
            builder.with_root_certificates(store).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny::all()))
            .with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(cfg)
}

/// TLS 1.2 and 1.3.
pub fn all_versions() -> &'static [&'static rustls::SupportedProtocolVersion] {
    rustls::ALL_VERSIONS
}

/// Connects and completes a TLS handshake. `server_name` is sent as SNI unless it is an IP
/// address (rustls never sends an IP as SNI).
pub async fn tls_connect(
    addr: SocketAddr,
    server_name: &str,
    cfg: Arc<ClientConfig>,
) -> Result<TlsStream<TcpStream>, String> {
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    tokio::time::timeout(STEP, TlsConnector::from(cfg).connect(name, tcp))
        .await
        .map_err(|_| "TLS handshake timed out".to_string())?
        .map_err(|e| e.to_string())
}

/// The certificate the server presented (first of its chain).
pub fn peer_leaf(s: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    s.get_ref()
        .1
        .peer_certificates()
        .expect("server sent no certificate")[0]
        .clone()
        .into_owned()
}

/// The negotiated ALPN protocol, as text.
pub fn alpn_of(s: &TlsStream<TcpStream>) -> Option<String> {
    s.get_ref()
        .1
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned())
}

/// Whether `cert` is self-signed and valid for `name`: verified with itself as the only root.
pub fn is_self_signed_for(cert: &CertificateDer<'static>, name: &str) -> bool {
    let mut roots = RootCertStore::empty();
    if roots.add(cert.clone()).is_err() {
        return false;
    }
    let Ok(v) =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
    else {
        return false;
    };
    let name = ServerName::try_from(name.to_string()).unwrap();
    v.verify_server_cert(cert, &[], &name, &[], UnixTime::now())
        .is_ok()
}

fn build_request(
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Request<Full<Bytes>>, String> {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::copy_from_slice(body)))
        .map_err(|e| e.to_string())
}

/// Sends one HTTP/1.1 request over an established stream (Host must be in `headers`).
pub async fn send_h1<S>(
    io: S,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Reply, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let fut = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = build_request(method, path, headers, body)?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Reply {
            status,
            headers,
            body,
        })
    };
    tokio::time::timeout(STEP, fut)
        .await
        .map_err(|_| "HTTP/1.1 request timed out".to_string())?
}

/// A response received over HTTP/2.
pub struct H2Reply {
    pub reply: Reply,
    pub version: Version,
    pub trailers: Option<HeaderMap>,
}

/// Sends one HTTP/2 request (prior knowledge) over an established stream; `uri` should be
/// absolute so `:scheme` and `:authority` are sent.
pub async fn send_h2<S>(
    io: S,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<H2Reply, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let fut = async {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = build_request(method, uri, headers, body)?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let version = resp.version();
        let headers = resp.headers().clone();
        let collected = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        let trailers = collected.trailers().cloned();
        Ok(H2Reply {
            reply: Reply {
                status,
                headers,
                body: collected.to_bytes(),
            },
            version,
            trailers,
        })
    };
    tokio::time::timeout(STEP, fut)
        .await
        .map_err(|_| "HTTP/2 request timed out".to_string())?
}

/// An HTTPS origin answering with the same JSON echo as [`super::Origin`]; with `client_ca`,
/// it requires a client certificate issued by that CA.
pub struct TlsOrigin {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    /// Completed TLS handshakes.
    pub handshakes: Arc<AtomicUsize>,
    /// Failed TLS handshakes (e.g. no or untrusted client certificate).
    pub failed_handshakes: Arc<AtomicUsize>,
    /// Client certificates presented in completed handshakes (leaf only).
    pub client_certs: Arc<Mutex<Vec<CertificateDer<'static>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsOrigin {
    pub async fn start(name: &str, leaf: &Leaf, client_ca: Option<&TestCa>) -> TlsOrigin {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                roots.add(ca.der.clone()).unwrap();
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut cfg = builder
            .with_single_cert(vec![leaf.der.clone()], leaf.key())
            .unwrap();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(cfg));

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let handshakes = Arc::new(AtomicUsize::new(0));
        let failed_handshakes = Arc::new(AtomicUsize::new(0));
        let client_certs = Arc::new(Mutex::new(Vec::new()));
        let (h, ok, bad, certs, n) = (
            hits.clone(),
            handshakes.clone(),
            failed_handshakes.clone(),
            client_certs.clone(),
            name.to_string(),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (h, ok, bad, certs, n, acceptor) = (
                    h.clone(),
                    ok.clone(),
                    bad.clone(),
                    certs.clone(),
                    n.clone(),
                    acceptor.clone(),
                );
                tokio::spawn(async move {
                    let tls = match acceptor.accept(stream).await {
                        Ok(s) => s,
                        Err(_) => {
                            bad.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    };
                    ok.fetch_add(1, Ordering::SeqCst);
                    if let Some(chain) = tls.get_ref().1.peer_certificates() {
                        certs.lock().unwrap().push(chain[0].clone().into_owned());
                    }
                    let health = Arc::new(AtomicUsize::new(200));
                    let svc = service_fn(move |req| {
                        super::echo(req, h.clone(), health.clone(), n.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        TlsOrigin {
            addr,
            hits,
            handshakes,
            failed_handshakes,
            client_certs,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for TlsOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A request as the h2c origin received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

type GrpcBody =
    StreamBody<futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, Infallible>>>;

/// A cleartext HTTP/2 (prior knowledge) origin behaving like a gRPC server: it answers every
/// request with status 200, `content-type: application/grpc`, the request body echoed and
/// trailers `grpc-status: 0`, `grpc-message: ok`. A request with `x-stall-ms: N` gets its
/// trailers only N ms after the data.
pub struct GrpcOrigin {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl GrpcOrigin {
    pub async fn start() -> GrpcOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| grpc_echo(req, s.clone()));
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        GrpcOrigin { addr, seen, task }
    }

    pub fn url(&self) -> String {
        format!("grpc://127.0.0.1:{}", self.addr.port())
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for GrpcOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn grpc_echo(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<GrpcBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let stall: u64 = parts
        .headers
        .get("x-stall-ms")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        version: parts.version,
        headers: parts.headers,
        body: body.clone(),
    });
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    trailers.insert("grpc-message", "ok".parse().unwrap());
    use futures_util::StreamExt;
    let data = futures_util::stream::iter([Ok(Frame::data(body))]);
    let end = futures_util::stream::once(async move {
        tokio::time::sleep(Duration::from_millis(stall)).await;
        Ok(Frame::trailers(trailers))
    });
    Ok(Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(StreamBody::new(data.chain(end).boxed()))
        .unwrap())
}

/// A length-prefixed gRPC message (uncompressed).
pub fn grpc_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Accepts any server certificate; signatures are still checked. Offers the provider's
/// signature schemes, or only the given ones (to see which certificate a server picks).
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>, Vec<SignatureScheme>);

impl AcceptAny {
    fn all() -> AcceptAny {
        let p = provider();
        let schemes = p.signature_verification_algorithms.supported_schemes();
        AcceptAny(p, schemes)
    }

    fn offering(schemes: Vec<SignatureScheme>) -> AcceptAny {
        AcceptAny(provider(), schemes)
    }
}

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.1.clone()
    }
}
