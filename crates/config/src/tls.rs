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
    let der = match certs {
        Ok(mut c) if c.len() == 1 => c.remove(0),
        Ok(c) if c.is_empty() => return Err("invalid certificate: no PEM certificate found".into()),
        Ok(_) => return Err("please submit only one certificate at a time".into()),
        Err(e) => return Err(format!("invalid certificate: {e}")),
    };
    // Kong's entity check (ca_certificates.lua), with its messages.
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|_| "invalid certificate: not a parsable X.509 certificate".to_string())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if cert.validity().not_after.timestamp() < now {
        return Err("certificate expired, \"Not After\" time is in the past".into());
    }
    let is_ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
    if !is_ca {
        return Err(
            "certificate does not appear to be a CA because it is missing the \"CA\" basic constraint"
                .into(),
        );
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(ca: bool, expired: bool) -> String {
        let mut p = rcgen::CertificateParams::new(vec!["t.example".to_string()]).unwrap();
        if ca {
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        if expired {
            p.not_before = rcgen::date_time_ymd(2019, 1, 1);
            p.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().pem()
    }

    /// Kong's ca_certificates entity check: one certificate, not expired, a CA.
    #[test]
    fn ca_certificates_must_be_current_cas() {
        assert_eq!(check_ca_cert(&cert(true, false)), Ok(()));
        assert_eq!(
            check_ca_cert(&cert(false, false)),
            Err("certificate does not appear to be a CA because it is missing the \"CA\" basic constraint".into())
        );
        assert_eq!(
            check_ca_cert(&cert(true, true)),
            Err("certificate expired, \"Not After\" time is in the past".into())
        );
        let two = format!("{}{}", cert(true, false), cert(true, false));
        assert_eq!(
            check_ca_cert(&two),
            Err("please submit only one certificate at a time".into())
        );
    }
}
