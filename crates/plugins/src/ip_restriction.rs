//! `ip-restriction`: allow or deny clients by address (IPv4, IPv6, CIDR ranges).
//!
//! Kong 3.x semantics: `deny` is checked first, then `allow`; a refusal answers `status`
//! (default 403) with `message` (default `IP address not allowed: <client ip>`). The address
//! checked is [`Ctx::client_ip`]: the socket peer, or the forwarded address only when the peer
//! is one of the node's `trusted_ips`, so a client cannot talk its way past the list with
//! `X-Forwarded-For`. IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) count as IPv4, in the
//! lists and for clients.

use std::net::IpAddr;

use http::StatusCode;
use ipnet::{IpNet, Ipv4Net};
use portcullis_config::{Errors, Obj};
use serde_json::Value;

use crate::{Access, Ctx, Flow, Plugin, Response};

/// A compiled `ip-restriction` instance.
#[derive(Debug)]
pub struct IpRestriction {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    status: StatusCode,
    message: Option<String>,
}

/// Parses `1.2.3.4`, `1.2.3.0/24`, `2001:db8::1`, `2001:db8::/32`; IPv4-mapped IPv6 becomes IPv4.
pub fn parse_ip_or_cidr(s: &str) -> Option<IpNet> {
    let s = s.trim();
    let net = match s.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => IpNet::from(s.parse::<IpAddr>().ok()?),
    };
    Some(canonical_net(net).trunc())
}

fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net {
        if let Some(v4) = v6.addr().to_ipv4_mapped() {
            if v6.prefix_len() >= 96 {
                if let Ok(n) = Ipv4Net::new(v4, v6.prefix_len() - 96) {
                    return IpNet::V4(n);
                }
            }
        }
    }
    net
}

/// Maps IPv4-mapped IPv6 client addresses to IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The address as text (`Display`), without the formatting machinery for the common IPv4
/// case: rate limiting by IP and the proxy's
/// forwarding headers format one on every request.
pub fn ip_text(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut s = String::with_capacity(15);
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    s.push('.');
                }
                if octet >= 100 {
                    s.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    s.push(char::from(b'0' + octet / 10 % 10));
                }
                s.push(char::from(b'0' + octet % 10));
            }
            s
        }
        v6 => v6.to_string(),
    }
}

fn read_list(o: &mut Obj<'_>, key: &str, errs: &mut Errors) -> Vec<IpNet> {
    let list = o.array(key, errs, |v, path, errs| match v {
        Value::String(s) => match parse_ip_or_cidr(s) {
            Some(n) => Some(n),
            None => {
                errs.push(path, format!("invalid ip or cidr range: '{s}'"));
                None
            }
        },
        _ => {
            errs.push(path, "expected a string");
            None
        }
    });
    // Overlapping and adjacent ranges merge into the smallest equivalent set.
    IpNet::aggregate(&list)
}

impl IpRestriction {
    /// Validates the config and compiles the address sets.
    pub fn build(config: &Value, path: &str, errs: &mut Errors) -> Option<IpRestriction> {
        let before = errs.len();
        let mut o = Obj::open(config, path, errs)?;
        let allow = read_list(&mut o, "allow", errs);
        let deny = read_list(&mut o, "deny", errs);
        let status = o.int_or("status", 403, 100, 599, errs) as u16;
        let message = o.opt_str("message", errs);
        if errs.len() == before && allow.is_empty() && deny.is_empty() {
            errs.push(
                o.path().to_string(),
                "at least one of these fields must be non-empty: 'allow', 'deny'",
            );
        }
        o.finish(errs);
        if errs.len() > before {
            return None;
        }
        Some(IpRestriction {
            allow,
            deny,
            status: StatusCode::from_u16(status).ok()?,
            message,
        })
    }

    /// Is this client refused?
    pub fn refuses(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return true;
        }
        !self.allow.is_empty() && !self.allow.iter().any(|n| n.contains(&ip))
    }
}

impl Plugin for IpRestriction {
    fn name(&self) -> &'static str {
        "ip-restriction"
    }

    fn response_header_names(&self) -> Option<Vec<http::HeaderName>> {
        // No response phase.
        Some(Vec::new())
    }

    fn access<'a>(&'a self, ctx: &'a mut Ctx) -> Access<'a> {
        if !self.refuses(ctx.client_ip) {
            return Access::Now(Flow::Continue);
        }
        let ip = canonical_ip(ctx.client_ip);
        tracing::warn!(client_ip = %ip, "ip-restriction: address not allowed");
        let message = match &self.message {
            Some(m) => m.clone(),
            None => format!("IP address not allowed: {ip}"),
        };
        Access::Now(Flow::Respond(Response::message(self.status, &message)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, Method};
    use serde_json::json;

    fn build(v: Value) -> Result<IpRestriction, Vec<String>> {
        let mut e = Errors::default();
        IpRestriction::build(&v, "plugins[0].config", &mut e)
            .ok_or_else(|| e.into_vec().iter().map(ToString::to_string).collect())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn allow_list_with_cidrs_and_ipv6() {
        let p = build(json!({"allow": ["10.0.0.0/8", "192.168.1.7", "2001:db8::/32"]})).unwrap();
        assert!(!p.refuses(ip("10.1.2.3")));
        assert!(!p.refuses(ip("192.168.1.7")));
        assert!(p.refuses(ip("192.168.1.8")));
        assert!(!p.refuses(ip("2001:db8:1::5")));
        assert!(p.refuses(ip("2001:db9::1")));
        // IPv4-mapped IPv6 clients are IPv4.
        assert!(!p.refuses(ip("::ffff:10.9.9.9")));
        assert!(p.refuses(ip("::ffff:11.0.0.1")));
    }

    #[test]
    fn deny_wins_over_allow() {
        let p = build(json!({"allow": ["10.0.0.0/8"], "deny": ["10.0.0.5"]})).unwrap();
        assert!(p.refuses(ip("10.0.0.5")));
        assert!(!p.refuses(ip("10.0.0.6")));
        let p = build(json!({"deny": ["::ffff:127.0.0.1", "fe80::/10"]})).unwrap();
        assert!(p.refuses(ip("127.0.0.1")));
        assert!(p.refuses(ip("fe80::1")));
        assert!(!p.refuses(ip("127.0.0.2")));
    }

    #[test]
    fn host_bits_in_cidr_are_ignored() {
        let p = build(json!({"allow": ["10.0.0.1/8"]})).unwrap();
        assert!(!p.refuses(ip("10.200.0.1")));
    }

    fn refusal(p: &IpRestriction, client: &str) -> Option<Response> {
        let mut c = Ctx::new(Method::GET, "/".into(), None, HeaderMap::new(), ip(client));
        let out = match p.access(&mut c) {
            Access::Now(Flow::Respond(r)) => Some(r),
            Access::Now(Flow::Continue) => None,
            Access::Later(_) => panic!("sync plugin"),
        };
        out
    }

    #[test]
    fn default_and_custom_refusals() {
        let p = build(json!({"deny": ["127.0.0.1"]})).unwrap();
        let r = refusal(&p, "127.0.0.1").unwrap();
        assert_eq!(r.status, 403);
        assert_eq!(
            &r.body[..],
            br#"{"message":"IP address not allowed: 127.0.0.1"}"#
        );
        let r = refusal(&p, "::ffff:127.0.0.1").unwrap();
        assert_eq!(
            &r.body[..],
            br#"{"message":"IP address not allowed: 127.0.0.1"}"#
        );
        assert!(refusal(&p, "127.0.0.2").is_none());
        let p = build(json!({"deny": ["127.0.0.1"], "status": 451, "message": "nope"})).unwrap();
        let r = refusal(&p, "127.0.0.1").unwrap();
        assert_eq!(r.status, 451);
        assert_eq!(&r.body[..], br#"{"message":"nope"}"#);
    }

    #[test]
    fn errors_carry_paths() {
        let e = build(json!({"allow": ["10.0.0.0/33", "nope", 5], "x": 1})).unwrap_err();
        assert!(e.contains(
            &"plugins[0].config.allow[0]: invalid ip or cidr range: '10.0.0.0/33'".to_string()
        ));
        assert!(
            e.contains(&"plugins[0].config.allow[1]: invalid ip or cidr range: 'nope'".to_string())
        );
        assert!(e.contains(&"plugins[0].config.allow[2]: expected a string".to_string()));
        assert!(e.contains(&"plugins[0].config.x: unknown field".to_string()));
        let e = build(json!({})).unwrap_err();
        assert_eq!(
            e,
            vec![
                "plugins[0].config: at least one of these fields must be non-empty: 'allow', 'deny'"
            ]
        );
        let e = build(json!({"allow": [], "deny": []})).unwrap_err();
        assert_eq!(e.len(), 1);
    }
}
