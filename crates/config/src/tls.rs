//! PEM checks for certificates and keys, so a bad certificate is refused at validation.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// The certificate chain parses and holds at least one certificate.
pub fn check_cert_chain(pem: &str) -> Result<(), String> {
    let certs: Result<Vec<CertificateDer<'static>>, _> =
        CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
    match certs {
        Ok(c) if !c.is_empty() => Ok(()),
        Ok(_) => Err("invalid certificate: no PEM certificate found".into()),
        Err(e) => Err(format!("invalid certificate: {e}")),
    }
}

/// Exactly one CA certificate.
pub fn check_ca_cert(pem: &str) -> Result<(), String> {
    let certs: Result<Vec<CertificateDer<'static>>, _> =
        CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
    match certs {
        Ok(c) if c.len() == 1 => Ok(()),
        Ok(c) if c.is_empty() => Err("invalid certificate: no PEM certificate found".into()),
        Ok(_) => Err("please submit only one certificate at a time".into()),
        Err(e) => Err(format!("invalid certificate: {e}")),
    }
}

/// The private key parses (PKCS#8, PKCS#1 or SEC1). The error never includes key material.
pub fn check_private_key(pem: &str) -> Result<(), String> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map(|_| ())
        .map_err(|_| "invalid key: expected a PEM private key (PKCS#8, PKCS#1 or SEC1)".into())
}

/// Hex SHA-256 of a string: used for certificate digests and for ids derived from secrets.
pub fn digest(s: &str) -> String {
    let d = Sha256::digest(s.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}
