//! `correlation-id` (Kong's plugin): a per-request id in a header, sent upstream and
//! optionally back to the client.
//!
//! Generators: `uuid` (random v4), `uuid#counter` (a per-process UUID and a counter, Kong's
//! default) and `tracker` (process id, counter and time). Unlike Kong, a value the client sent
//! in the header is replaced unless `keep_client_id: true`, so ids in logs cannot be chosen
//! by clients (log injection, collisions with other requests).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use http::header::{HeaderName, HeaderValue};
use portcullis_config::{Errors, Obj};
use serde_json::Value;

use crate::{Access, Ctx, Flow, Plugin, ResponseHead};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Generator {
    Uuid,
    UuidCounter,
    Tracker,
}

/// A compiled `correlation-id` instance.
#[derive(Debug)]
pub struct CorrelationId {
    header: HeaderName,
    generator: Generator,
    echo_downstream: bool,
    keep_client_id: bool,
}

/// The id chosen for this request (kept for the response phase).
#[derive(Clone)]
struct Chosen(HeaderValue);

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn process_uuid() -> &'static str {
    static U: OnceLock<String> = OnceLock::new();
    U.get_or_init(|| uuid(rand::random()))
}

/// Formats 128 random bits as a version-4 UUID.
fn uuid(bits: u128) -> String {
    let b = (bits & !(0xF << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let h = format!("{b:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

impl CorrelationId {
    /// Validates the config.
    pub fn build(config: &Value, path: &str, errs: &mut Errors) -> Option<CorrelationId> {
        let before = errs.len();
        let mut o = Obj::open(config, path, errs)?;
        let name = o
            .opt_str("header_name", errs)
            .unwrap_or_else(|| "Kong-Request-ID".into());
        let header = match HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
            Ok(h) => h,
            Err(_) => {
                errs.push(o.field_path("header_name"), "invalid header name");
                HeaderName::from_static("kong-request-id")
            }
        };
        let generator = match o.opt_str("generator", errs).as_deref() {
            None | Some("uuid#counter") => Generator::UuidCounter,
            Some("uuid") => Generator::Uuid,
            Some("tracker") => Generator::Tracker,
            Some(_) => {
                errs.push(
                    o.field_path("generator"),
                    "expected one of: uuid, uuid#counter, tracker",
                );
                Generator::Uuid
            }
        };
        let echo_downstream = o.bool_or("echo_downstream", false, errs);
        let keep_client_id = o.bool_or("keep_client_id", false, errs);
        o.finish(errs);
        if errs.len() > before {
            return None;
        }
        Some(CorrelationId {
            header,
            generator,
            echo_downstream,
            keep_client_id,
        })
    }

    fn generate(&self) -> String {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed) + 1;
        match self.generator {
            Generator::Uuid => uuid(rand::random()),
            Generator::UuidCounter => format!("{}#{n}", process_uuid()),
            Generator::Tracker => {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                format!(
                    "{}-{n}-{}.{:03}",
                    std::process::id(),
                    t.as_secs(),
                    t.subsec_millis()
                )
            }
        }
    }
}

impl Plugin for CorrelationId {
    fn response_header_names(&self) -> Option<Vec<HeaderName>> {
        Some(vec![self.header.clone()])
    }

    fn name(&self) -> &'static str {
        "correlation-id"
    }

    fn access<'a>(&'a self, ctx: &'a mut Ctx) -> Access<'a> {
        let kept = self
            .keep_client_id
            .then(|| ctx.headers.get(&self.header).cloned())
            .flatten()
            .filter(|v| !v.is_empty() && v.len() <= 256);
        let value = match kept {
            Some(v) => v,
            None => match HeaderValue::from_str(&self.generate()) {
                Ok(v) => v,
                Err(_) => return Access::Now(Flow::Continue),
            },
        };
        ctx.headers.insert(self.header.clone(), value.clone());
        ctx.state.insert(Chosen(value));
        Access::Now(Flow::Continue)
    }

    fn response_headers(&self, ctx: &mut Ctx, head: &mut ResponseHead) {
        if self.echo_downstream {
            if let Some(Chosen(v)) = ctx.state.get::<Chosen>() {
                head.headers.insert(self.header.clone(), v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_version_4() {
        let u = uuid(u128::MAX);
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
        let u = uuid(0);
        assert_eq!(u, "00000000-0000-4000-8000-000000000000");
    }

    #[test]
    fn generators() {
        let mut errs = Errors::default();
        let p = CorrelationId::build(&serde_json::json!({}), "c", &mut errs).unwrap();
        let (a, b) = (p.generate(), p.generate());
        let (ua, na) = a.split_once('#').unwrap();
        let (ub, nb) = b.split_once('#').unwrap();
        assert_eq!(ua, ub);
        assert!(nb.parse::<u64>().unwrap() > na.parse::<u64>().unwrap());
        let errs_cfg = serde_json::json!({"generator": "snowflake", "header_name": "bad header"});
        let mut errs = Errors::default();
        assert!(CorrelationId::build(&errs_cfg, "p.config", &mut errs).is_none());
        let text: Vec<String> = errs.into_vec().iter().map(|e| e.to_string()).collect();
        assert!(text.iter().any(|e| e.contains("p.config.generator")));
        assert!(text.iter().any(|e| e.contains("p.config.header_name")));
    }
}
