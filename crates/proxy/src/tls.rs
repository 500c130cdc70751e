//! TLS: server certificates chosen by SNI (exact, then wildcard, then the default), and client
//! configurations for https upstreams (verification against system or configured CAs,
//! optional client certificate).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring as provider, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The crypto provider used everywhere (ring; modern suites only).
pub fn crypto() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(provider::default_provider()))
        .clone()
}

/// Parses a PEM chain and key into a signing key.
pub fn certified_key(cert_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid certificate: {e}"))?;
    if chain.is_empty() {
        return Err("invalid certificate: none found".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|_| "invalid key: no PEM private key found".to_string())?;
    let signer = provider::sign::any_supported_type(&key).map_err(|_| {
        "invalid key: not an RSA, ECDSA (P-256, P-384) or Ed25519 private key that can be loaded"
            .to_string()
    })?;
    let certified = CertifiedKey::new(chain, signer);
    // Kong's check: a key that is not the certificate's would fail every handshake. (Only a
    // definite mismatch is refused: the comparison parses the certificate with webpki, which
    // refuses some certificates Kong and TLS clients take, such as X.509 v1 ones.)
    if let Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) =
        certified.keys_match()
    {
        return Err("certificate does not match key".into());
    }
    Ok(Arc::new(certified))
}

/// A self-signed certificate for `localhost`, used when no default certificate is configured
/// (as Kong does), so the TLS listener always works.
pub fn self_signed() -> Result<Arc<CertifiedKey>, String> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .map_err(|e| e.to_string())?;
    certified_key(&ck.cert.pem(), &ck.signing_key.serialize_pem())
}

/// A certificate and its optional alternate (Kong's `cert_alt`/`key_alt`, typically an
/// ECDSA certificate next to an RSA one): each handshake gets the first whose key can sign with
/// a scheme the client offers.
#[derive(Clone)]
pub struct CertPair {
    /// `cert` / `key`.
    pub primary: Arc<CertifiedKey>,
    /// `cert_alt` / `key_alt`.
    pub alt: Option<Arc<CertifiedKey>>,
}

impl CertPair {
    /// The certificate for a client offering `schemes`.
    pub fn pick(&self, schemes: &[SignatureScheme]) -> Arc<CertifiedKey> {
        match &self.alt {
            Some(alt) if self.primary.key.choose_scheme(schemes).is_none() => alt.clone(),
            _ => self.primary.clone(),
        }
    }
}

/// Certificates by server name.
#[derive(Default)]
pub struct CertTable {
    exact: HashMap<String, CertPair>,
    /// `*.example.com` stored as `.example.com`.
    suffix: Vec<(String, CertPair)>,
    /// `example.*` stored as `example.`.
    prefix: Vec<(String, CertPair)>,
    /// SNI `*`: Kong's catch-all, for a client naming a server no other SNI matches (a client
    /// that names none gets the node's default certificate, as in Kong).
    any: Option<CertPair>,
}

impl CertTable {
    /// Adds a certificate for an SNI pattern.
    pub fn insert(&mut self, sni: &str, key: CertPair) {
        if sni == "*" {
            self.any = Some(key);
        } else if let Some(rest) = sni.strip_prefix('*') {
            self.suffix.push((rest.to_string(), key));
        } else if let Some(rest) = sni.strip_suffix('*') {
            self.prefix.push((rest.to_string(), key));
        } else {
            self.exact.insert(sni.to_string(), key);
        }
    }

    /// Sorts wildcards so the longest (most specific) pattern wins.
    pub fn finish(&mut self) {
        self.suffix.sort_by_key(|e| std::cmp::Reverse(e.0.len()));
        self.prefix.sort_by_key(|e| std::cmp::Reverse(e.0.len()));
    }

    fn lookup(&self, name: &str) -> Option<CertPair> {
        let name = name.to_ascii_lowercase();
        if let Some(k) = self.exact.get(&name) {
            return Some(k.clone());
        }
        // A wildcard stands for one label, as in Kong (`*.example.com` does not cover
        // `a.b.example.com`) and in RFC 6125 certificate matching.
        self.suffix
            .iter()
            .find(|(s, _)| {
                name.strip_suffix(s.as_str())
                    .is_some_and(|label| !label.is_empty() && !label.contains('.'))
            })
            .or_else(|| {
                self.prefix.iter().find(|(p, _)| {
                    name.strip_prefix(p.as_str())
                        .is_some_and(|label| !label.is_empty() && !label.contains('.'))
                })
            })
            .map(|(_, k)| k.clone())
            .or_else(|| self.any.clone())
    }
}

/// Picks the certificate for each handshake from the current table; swapped on reload.
pub struct SniResolver {
    /// Current certificates.
    pub table: ArcSwap<CertTable>,
    /// Used when no SNI matches or none was sent.
    pub default: Arc<CertifiedKey>,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SniResolver")
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let table = self.table.load();
        match hello.server_name().and_then(|n| table.lookup(n)) {
            Some(pair) => Some(pair.pick(hello.signature_schemes())),
            None => Some(self.default.clone()),
        }
    }
}

/// The listener's TLS config: TLS 1.2 and 1.3, ALPN h2 and http/1.1.
pub fn server_config(
    resolver: Arc<SniResolver>,
    client_auth: Arc<ClientCertRequest>,
) -> Result<rustls::ServerConfig, String> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(crypto())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(client_auth)
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

fn system_roots() -> Arc<RootCertStore> {
    static R: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    R.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        Arc::new(roots)
    })
    .clone()
}

/// Builds an upstream client config. `cas` empty = the bundled public roots.
pub fn client_config(
    cas: &[&str],
    verify: bool,
    client_cert: Option<(&str, &str)>,
    h2: bool,
) -> Result<rustls::ClientConfig, String> {
    let builder = rustls::ClientConfig::builder_with_provider(crypto())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?;
    let builder = if !verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(crypto())))
    } else if cas.is_empty() {
        builder.with_root_certificates(system_roots())
    } else {
        let mut roots = RootCertStore::empty();
        for pem in cas {
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| format!("invalid CA certificate: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("invalid CA certificate: {e}"))?;
            }
        }
        builder.with_root_certificates(roots)
    };
    let mut cfg = match client_cert {
        // Loaded as the server certificates are (`certified_key`): rustls's own
        // `with_client_auth_cert` refuses certificates webpki cannot parse, such as X.509 v1.
        Some((cert, key)) => {
            let ck = certified_key(cert, key).map_err(|e| format!("client certificate: {e}"))?;
            builder.with_client_cert_resolver(Arc::new(OneClientCert(ck)))
        }
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = if h2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(cfg)
}

/// The one client certificate of an upstream TLS config, offered to every server that asks.
#[derive(Debug)]
struct OneClientCert(Arc<CertifiedKey>);

impl rustls::client::ResolvesClientCert for OneClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Accepts any server certificate: only for services with `tls_verify: false`.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
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
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Asks TLS clients for a certificate while any `mtls-auth` plugin is configured (like Kong,
/// the route is not known during the handshake), never requires one, and checks only that
/// the client holds the certificate's private key. Whether the certificate is trusted, and
/// by which CAs, is the plugin's decision for the matched route.
#[derive(Debug, Default)]
pub struct ClientCertRequest {
    /// Request certificates (set from the snapshot on every config load).
    pub enabled: std::sync::atomic::AtomicBool,
}

impl rustls::server::danger::ClientCertVerifier for ClientCertRequest {
    fn offer_client_auth(&self) -> bool {
        self.enabled.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        // Trust is decided per route by mtls-auth; see the type's documentation.
        Ok(rustls::server::danger::ClientCertVerified::assertion())
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
            &crypto().signature_verification_algorithms,
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
            &crypto().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        crypto()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod key_tests {
    use super::*;

    #[test]
    fn a_key_must_be_the_certificates_own() {
        let a = rcgen::generate_simple_self_signed(vec!["a.example".to_string()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b.example".to_string()]).unwrap();
        assert!(certified_key(&a.cert.pem(), &a.signing_key.serialize_pem()).is_ok());
        assert_eq!(
            certified_key(&a.cert.pem(), &b.signing_key.serialize_pem())
                .err()
                .as_deref(),
            Some("certificate does not match key")
        );
        let e = certified_key(
            &a.cert.pem(),
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .err()
        .unwrap();
        assert!(e.starts_with("invalid key: "), "{e}");
    }

    /// An X.509 v1 certificate (made for this test with `openssl x509 -req`, no extensions):
    /// webpki cannot parse it to compare keys, Kong and TLS clients take it, so it loads.
    const V1_CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBJjCBzQIUUs7fm+Fr+gXYKYSLfMeFCcUdoKEwCgYIKoZIzj0EAwIwFTETMBEG\nA1UEAwwKdjEuZXhhbXBsZTAgFw0yNjEyMDYwNTM5NDRaGA8yMTI2MTExMjA1Mzk0\nNFowFTETMBEGA1UEAwwKdjEuZXhhbXBsZTBZMBMGByqGSM49AgEGCCqGSM49AwEH\nA0IABA3F6+WeE3uWiPdRic0aFOOsHNMdEZNWWZw3lmYJCWFeALoO2oFCJiX1UEPa\nfFs1PqBnKY407UgOJW9kP1AaA3swCgYIKoZIzj0EAwIDSAAwRQIgawsnI+rNjDYI\nVZB3yjcAW0OFBJrHTyfC8jFygTccNvICIQDgZM7PvaHcaj6Rffj5cSJk6IFK+WRO\ndvF4XF7Kl6jFYA==\n-----END CERTIFICATE-----";
    const V1_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgb87Z332EA/kCEZGq\nzsWTiC84Fh+/+Mwwd9MKhLQ3epKhRANCAAQNxevlnhN7loj3UYnNGhTjrBzTHRGT\nVlmcN5ZmCQlhXgC6DtqBQiYl9VBD2nxbNT6gZymONO1IDiVvZD9QGgN7\n-----END PRIVATE KEY-----";

    /// Kong's SNI lookup: exact, then a wildcard standing for one label (left or right),
    /// then the catch-all `*`; nothing at all without a `*`.
    #[test]
    fn sni_lookup_order() {
        let pair = |name: &str| {
            let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
            CertPair {
                primary: certified_key(&c.cert.pem(), &c.signing_key.serialize_pem()).unwrap(),
                alt: None,
            }
        };
        let (exact, left, right, any) = (pair("a"), pair("b"), pair("c"), pair("d"));
        let mut t = CertTable::default();
        t.insert("www.example.com", exact.clone());
        t.insert("*.example.com", left.clone());
        t.insert("example.*", right.clone());
        t.finish();
        let got = |t: &CertTable, n: &str| t.lookup(n).map(|p| p.primary.clone());
        let is = |t: &CertTable, n: &str, want: &CertPair| {
            got(t, n).is_some_and(|k| Arc::ptr_eq(&k, &want.primary))
        };
        assert!(is(&t, "WWW.example.com", &exact));
        assert!(is(&t, "api.example.com", &left));
        assert!(is(&t, "example.org", &right));
        for n in [
            "a.b.example.com",
            "example.co.uk",
            "example.com.",
            "other.test",
        ] {
            assert!(got(&t, n).is_none(), "{n}");
        }
        t.insert("*", any.clone());
        t.finish();
        assert!(is(&t, "a.b.example.com", &any));
        assert!(is(&t, "other.test", &any));
        assert!(is(&t, "api.example.com", &left));
    }

    #[test]
    fn version_1_certificates_load() {
        assert!(certified_key(V1_CERT, V1_KEY).is_ok());
        // Also as an upstream client certificate; a mismatched pair is still refused there.
        assert!(client_config(&[], false, Some((V1_CERT, V1_KEY)), false).is_ok());
        let a = rcgen::generate_simple_self_signed(vec!["a.example".to_string()]).unwrap();
        let e = client_config(&[], false, Some((&a.cert.pem(), V1_KEY)), false)
            .err()
            .unwrap();
        assert_eq!(e, "client certificate: certificate does not match key");
    }
}
