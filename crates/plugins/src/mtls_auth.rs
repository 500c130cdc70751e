//! `mtls-auth`: a client certificate, verified against configured CAs, identifies the
//! consumer (Kong Enterprise's plugin, shipped in the open).
//!
//! The TLS listener asks for a certificate while any mtls-auth instance is configured and
//! checks only that the client holds its key. This plugin then verifies the chain against
//! its own `ca_certificates` (webpki: signatures, validity period, `clientAuth` usage, and
//! revocation against the configured CRLs), and maps the certificate to a consumer: first an
//! `mtls_auth_credentials` entry whose `subject_name` equals the subject CN or a SAN (DNS,
//! email, URI), else a consumer whose `custom_id` / `username` (per `consumer_by`) equals one
//! of those names.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portcullis_config::{Errors, Obj};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::auth::{authenticate, Anonymous};
use crate::catalog::{Catalog, ConsumerInfo};
use crate::{Access, Ctx, Flow, Plugin, Response};

const NO_CERT: &str = "No required TLS certificate was sent";
const FAILED: &str = "TLS certificate failed verification";
const CACHE_MAX: usize = 10_000;

/// An `mtls_auth_credentials` entry: consumer, credential id, optional pinned CA id.
type Pinned = (Arc<ConsumerInfo>, String, Option<String>);

/// A compiled `mtls-auth` instance.
pub struct MtlsAuth {
    /// Verifier over all configured CAs.
    verifier: Option<Arc<dyn ClientCertVerifier>>,
    /// Verifier per CA id, for credentials pinned to one CA.
    per_ca: HashMap<String, Arc<dyn ClientCertVerifier>>,
    anonymous: Anonymous,
    skip_consumer_lookup: bool,
    consumer_by: Vec<String>,
    /// Credentials by subject name (several CAs may each have one for the same name).
    credentials: HashMap<String, Vec<Pinned>>,
    /// Consumers for the `consumer_by` fallback.
    catalog: Arc<Catalog>,
    cache_ttl: Duration,
    cache: Mutex<HashMap<[u8; 32], (Instant, bool)>>,
}

impl MtlsAuth {
    /// Validates the config and builds the verifiers and the subject index.
    pub fn build(
        config: &Value,
        path: &str,
        errs: &mut Errors,
        catalog: &Arc<Catalog>,
    ) -> Option<MtlsAuth> {
        let before = errs.len();
        let mut o = Obj::open(config, path, errs)?;
        let present = o.has("ca_certificates");
        let ca_ids = o.str_array("ca_certificates", errs);
        if !present {
            errs.push(o.field_path("ca_certificates"), "required field missing");
        } else if ca_ids.is_empty() {
            errs.push(o.field_path("ca_certificates"), "length must be at least 1");
        }
        let anonymous = Anonymous::read(&mut o, catalog, errs);
        let skip_consumer_lookup = o.bool_or("skip_consumer_lookup", false, errs);
        let consumer_by = if o.has("consumer_by") {
            let list = o.str_array("consumer_by", errs);
            for (i, v) in list.iter().enumerate() {
                if v != "username" && v != "custom_id" {
                    errs.push(
                        format!("{}[{i}]", o.field_path("consumer_by")),
                        "expected one of: username, custom_id",
                    );
                }
            }
            list
        } else {
            let _ = o.get("consumer_by");
            vec!["username".to_string(), "custom_id".to_string()]
        };
        let group_by = o.opt_str("authenticated_group_by", errs);
        if let Some(g) = &group_by {
            if g != "CN" && g != "DN" {
                errs.push(
                    o.field_path("authenticated_group_by"),
                    "expected one of: CN, DN",
                );
            }
        }
        let mode = o
            .opt_str("revocation_check_mode", errs)
            .unwrap_or_else(|| "IGNORE_CA_ERROR".to_string());
        if !["SKIP", "IGNORE_CA_ERROR", "STRICT"].contains(&mode.as_str()) {
            errs.push(
                o.field_path("revocation_check_mode"),
                "expected one of: SKIP, IGNORE_CA_ERROR, STRICT",
            );
        }
        let crl_path = o.field_path("crls");
        let crl_pems = o.str_array("crls", errs);
        let mut crls = Vec::new();
        for (i, pem) in crl_pems.iter().enumerate() {
            match CertificateRevocationListDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(list) if !list.is_empty() => crls.extend(list),
                _ => errs.push(format!("{crl_path}[{i}]"), "invalid PEM CRL"),
            }
        }
        let cache_ttl = o.opt_f64("cert_cache_ttl", errs).unwrap_or(60.0);
        // Kong fields with no effect here (OCSP/CRL download, proxies, hints) are accepted.
        for ignored in [
            "allow_partial_chain",
            "send_ca_dn",
            "cache_ttl",
            "http_timeout",
            "http_proxy_host",
            "http_proxy_port",
            "https_proxy_host",
            "https_proxy_port",
            "ssl_verify",
            "default_consumer",
            "san_dirname_matcher",
        ] {
            let _ = o.get(ignored);
        }
        o.finish(errs);
        if errs.len() > before {
            return None;
        }

        let mut per_ca = HashMap::new();
        let mut all = RootCertStore::empty();
        if catalog.is_complete() {
            for (i, id) in ca_ids.iter().enumerate() {
                let at = format!("{path}.ca_certificates[{i}]");
                let Some(pem) = catalog.ca_certificate(id) else {
                    errs.push(at, format!("ca_certificate '{id}' does not exist"));
                    continue;
                };
                let mut one = RootCertStore::empty();
                for der in CertificateDer::pem_slice_iter(pem.as_bytes()).flatten() {
                    let _ = one.add(der.clone());
                    let _ = all.add(der);
                }
                match verifier(one, &crls, &mode) {
                    Ok(v) => {
                        per_ca.insert(id.to_ascii_lowercase(), v);
                    }
                    Err(e) => errs.push(at, e),
                }
            }
        }
        let verifier = if catalog.is_complete() && errs.len() == before {
            match verifier(all, &crls, &mode) {
                Ok(v) => Some(v),
                Err(e) => {
                    errs.push(format!("{path}.ca_certificates"), e);
                    None
                }
            }
        } else {
            None
        };
        if errs.len() > before {
            return None;
        }

        let mut credentials = HashMap::new();
        for cred in catalog.credentials("mtls_auth_credentials") {
            let Some(subject) = cred.fields.get("subject_name").and_then(Value::as_str) else {
                continue;
            };
            let ca = cred
                .fields
                .get("ca_certificate")
                .and_then(|v| v.get("id").or(Some(v)))
                .and_then(Value::as_str)
                .map(str::to_ascii_lowercase);
            if let Some(consumer) = catalog.consumer(&cred.consumer) {
                credentials
                    .entry(subject.to_string())
                    .or_insert_with(Vec::new)
                    .push((consumer, cred.id.clone(), ca));
            }
        }
        Some(MtlsAuth {
            verifier,
            per_ca,
            anonymous,
            skip_consumer_lookup,
            consumer_by,
            credentials,
            catalog: catalog.clone(),
            cache_ttl: Duration::from_secs_f64(cache_ttl.clamp(0.0, 86_400.0)),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Verifies the chain with `v`, caching the verdict per chain for `cert_cache_ttl`.
    fn verified(&self, v: &Arc<dyn ClientCertVerifier>, chain: &[bytes::Bytes], tag: &str) -> bool {
        let mut h = Sha256::new();
        h.update(tag.as_bytes());
        for c in chain {
            h.update((c.len() as u64).to_be_bytes());
            h.update(c);
        }
        let key: [u8; 32] = h.finalize().into();
        let now = Instant::now();
        if let Ok(cache) = self.cache.lock() {
            if let Some((at, ok)) = cache.get(&key) {
                if now.duration_since(*at) < self.cache_ttl {
                    return *ok;
                }
            }
        }
        let Some((leaf, rest)) = chain.split_first() else {
            return false;
        };
        let end = CertificateDer::from(leaf.as_ref());
        let intermediates: Vec<CertificateDer<'_>> = rest
            .iter()
            .map(|c| CertificateDer::from(c.as_ref()))
            .collect();
        let ok = v
            .verify_client_cert(&end, &intermediates, UnixTime::now())
            .is_ok();
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
            cache.insert(key, (now, ok));
        }
        ok
    }

    fn decide(&self, ctx: &mut Ctx) -> Flow {
        if self.anonymous.skip(ctx) {
            return Flow::Continue;
        }
        let Some(chain) = ctx.client_certs.clone().filter(|c| !c.is_empty()) else {
            return self.anonymous.fail(ctx, refuse(NO_CERT));
        };
        let Some(verifier) = &self.verifier else {
            return self.anonymous.fail(ctx, refuse(FAILED));
        };
        if !self.verified(verifier, &chain, "") {
            return self.anonymous.fail(ctx, refuse(FAILED));
        }
        if self.skip_consumer_lookup {
            return Flow::Continue;
        }
        let names = subject_names(&chain[0]);
        let mut pin_failed = false;
        for name in &names {
            let Some(candidates) = self.credentials.get(name) else {
                continue;
            };
            for (consumer, cred_id, ca) in candidates {
                let pinned_ok = match ca {
                    None => true,
                    Some(id) => self
                        .per_ca
                        .get(id)
                        .is_some_and(|v| self.verified(v, &chain, id)),
                };
                if pinned_ok {
                    authenticate(ctx, consumer.clone(), cred_id.clone());
                    return Flow::Continue;
                }
                pin_failed = true;
            }
        }
        // A name claimed by a CA-pinned credential, from another trusted CA: refused, never
        // matched again by consumer_by (another CA must not mint that identity).
        if pin_failed {
            return self.anonymous.fail(ctx, refuse(FAILED));
        }
        for field in &self.consumer_by {
            let found = names.iter().find_map(|n| {
                if field == "username" {
                    self.catalog.consumer_by_username(n, false)
                } else {
                    self.catalog.consumer_by_custom_id(n)
                }
            });
            if let Some(c) = found {
                authenticate(ctx, c.clone(), c.id.to_string());
                return Flow::Continue;
            }
        }
        self.anonymous.fail(ctx, refuse(FAILED))
    }
}

/// Kong's 401 (no challenge header: there is no scheme to retry with).
fn refuse(message: &str) -> Response {
    Response::message(http::StatusCode::UNAUTHORIZED, message)
}

fn verifier(
    roots: RootCertStore,
    crls: &[CertificateRevocationListDer<'static>],
    mode: &str,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    if roots.is_empty() {
        return Err("no usable CA certificate".into());
    }
    let mut b = WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    );
    if mode != "SKIP" && !crls.is_empty() {
        b = b.with_crls(crls.iter().cloned());
        if mode == "IGNORE_CA_ERROR" {
            b = b.allow_unknown_revocation_status();
        }
    }
    b.build()
        .map_err(|e| format!("cannot build the verifier: {e}"))
}

/// The subject CN and the DNS, email and URI SANs of a certificate.
pub fn subject_names(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                    names.push((*s).to_string())
                }
                _ => {}
            }
        }
    }
    names
}

impl Plugin for MtlsAuth {
    fn response_header_names(&self) -> Option<Vec<http::HeaderName>> {
        // No response phase.
        Some(Vec::new())
    }

    fn name(&self) -> &'static str {
        "mtls-auth"
    }

    fn access<'a>(&'a self, ctx: &'a mut Ctx) -> Access<'a> {
        Access::Now(self.decide(ctx))
    }
}
