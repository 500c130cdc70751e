//! Sealed cookies: the browser session and the short-lived authorization state are JSON,
//! encrypted and authenticated with AES-256-GCM under a key derived from `session_secret`
//! (or a random per-load key when none is set). The cookie name is bound as associated data,
//! so a value cannot be moved from one cookie to another.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Largest cookie value accepted for decryption.
const MAX_COOKIE: usize = 8192;

/// Encrypts and decrypts cookie values.
pub struct Sealer {
    cipher: Aes256Gcm,
}

impl Sealer {
    /// A sealer keyed from `secret`, or from fresh random bytes.
    pub fn new(secret: Option<&str>) -> Sealer {
        let key: [u8; 32] = match secret {
            Some(s) => {
                let mut h = Sha256::new();
                h.update(b"portcullis openid-connect cookie key v1\0");
                h.update(s.as_bytes());
                h.finalize().into()
            }
            None => rand::random(),
        };
        Sealer {
            cipher: Aes256Gcm::new(&key.into()),
        }
    }

    /// Seals `value` for the cookie `name`.
    pub fn seal<T: Serialize>(&self, name: &str, value: &T) -> Option<String> {
        let plain = serde_json::to_vec(value).ok()?;
        let nonce: [u8; 12] = rand::random();
        let ct = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: name.as_bytes(),
                },
            )
            .ok()?;
        let mut out = Vec::with_capacity(13 + ct.len());
        out.push(1u8);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out))
    }

    /// Opens a value sealed for `name`; `None` when forged, altered, or from another key.
    pub fn open<T: DeserializeOwned>(&self, name: &str, sealed: &str) -> Option<T> {
        if sealed.len() > MAX_COOKIE {
            return None;
        }
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sealed)
            .ok()?;
        let (version, rest) = raw.split_first()?;
        if *version != 1 || rest.len() < 12 + 16 {
            return None;
        }
        let (nonce, ct) = rest.split_at(12);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: name.as_bytes(),
                },
            )
            .ok()?;
        serde_json::from_slice(&plain).ok()
    }
}

/// The browser session kept in the session cookie.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// Random session id (revocation on logout).
    pub sid: String,
    /// Access token.
    pub at: String,
    /// Access token expiry (unix seconds), when known.
    pub exp: Option<i64>,
    /// Refresh token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rt: Option<String>,
    /// ID token (for logout's id_token_hint and the upstream id token header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub it: Option<String>,
    /// When the session was created (absolute timeout).
    pub created: i64,
    /// When the cookie was last (re)issued (rolling timeout).
    pub renewed: i64,
}

/// What the gateway remembers between the redirect to the provider and the callback.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthState {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
    /// The URI to return to after login.
    pub uri: String,
    /// The redirect_uri sent to the provider (the code exchange must repeat it).
    pub redirect_uri: String,
    pub created: i64,
}

/// A random URL-safe string with `n` bytes of entropy.
pub fn random_token(n: usize) -> String {
    let bytes: Vec<u8> = (0..n).map(|_| rand::random::<u8>()).collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// PKCE S256 challenge of a verifier.
pub fn pkce_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample() -> Session {
        Session {
            sid: "s".into(),
            at: "token".into(),
            exp: Some(10),
            rt: None,
            it: None,
            created: 1,
            renewed: 1,
        }
    }

    #[test]
    fn round_trip_and_tamper() {
        let s = Sealer::new(Some("0123456789abcdef0123456789abcdef"));
        let sealed = s.seal("session", &sample()).unwrap();
        assert!(!sealed.contains("token"));
        let back: Session = s.open("session", &sealed).unwrap();
        assert_eq!(back.at, "token");
        // Another cookie name (associated data) does not open it.
        assert!(s.open::<Session>("authorization", &sealed).is_none());
        // A flipped byte does not open.
        let mut raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&sealed)
            .unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        assert!(s.open::<Session>("session", &forged).is_none());
        // Another key does not open.
        let other = Sealer::new(Some("another-secret-another-secret-xx"));
        assert!(other.open::<Session>("session", &sealed).is_none());
        // Garbage does not open.
        assert!(s.open::<Session>("session", "!!!").is_none());
        assert!(s.open::<Session>("session", "").is_none());
    }

    #[test]
    fn pkce_matches_rfc7636_example() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
