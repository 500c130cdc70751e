//! Syntax checks for the string fields of Kong entities: names, hosts, paths, URLs.

/// Kong's `utf8_name`: letters, digits, `.`, `-`, `_`, `~` and any non-ASCII character.
pub fn is_valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '~') || !c.is_ascii()
        })
}

/// A host name or an IPv4 address (no port). IPv6 literals are accepted in brackets or bare.
pub fn is_valid_host(s: &str) -> bool {
    if s.is_empty() || s.len() > 253 {
        return false;
    }
    if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    if s.parse::<std::net::Ipv6Addr>().is_ok() {
        return true;
    }
    s.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

/// Splits `host[:port]` (IPv6 in brackets). Returns `None` when the port is not a number.
pub fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = &rest[..end];
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    // A bare IPv6 address has several colons and no port. (Bytes, not `str` patterns: this
    // runs for every request's Host.)
    let b = s.as_bytes();
    let Some(last) = b.iter().rposition(|&c| c == b':') else {
        return Some((s.to_string(), None));
    };
    if b[..last].contains(&b':') {
        return Some((s.to_string(), None));
    }
    Some((s[..last].to_string(), Some(s[last + 1..].parse().ok()?)))
}

/// A route host pattern: a host with at most one `*` as the whole leftmost or rightmost label,
/// optionally followed by `:port`.
pub fn check_route_host(s: &str) -> Result<(), String> {
    let (host, _port) = split_host_port(s).ok_or_else(|| "invalid port number".to_string())?;
    let stars = host.matches('*').count();
    if stars > 1 {
        return Err("only one wildcard must be specified".into());
    }
    if stars == 1 {
        let ok = host
            .strip_prefix("*.")
            .or_else(|| host.strip_suffix(".*"))
            .map(is_valid_host)
            .unwrap_or(false);
        if !ok {
            return Err("wildcard must be leftmost or rightmost character".into());
        }
        return Ok(());
    }
    if is_valid_host(&host) {
        Ok(())
    } else {
        Err(format!("invalid hostname: {host}"))
    }
}

/// An absolute path: starts with `/`, no control characters or spaces, no empty segments.
pub fn check_path(s: &str) -> Result<(), String> {
    if !s.starts_with('/') {
        return Err("should start with: /".into());
    }
    if s.contains("//") {
        return Err("must not have empty segments".into());
    }
    if s.chars()
        .any(|c| c.is_control() || c == ' ' || c == '?' || c == '#')
    {
        return Err("invalid path: contains a space, control character, '?' or '#'".into());
    }
    Ok(())
}

/// A route prefix path in the form request paths take after [`crate::path::normalise`]
/// (Kong's normal form: well-formed percent triplets, those of unreserved characters decoded,
/// the others in upper case, no dot segments). Kong refuses any other form ("non-normalized
/// path"); here it could never match, since requests are routed by their normalised path.
pub fn check_route_prefix(path: &str) -> Result<(), String> {
    match crate::path::normalise(path) {
        Ok(normalized) if normalized == path => Ok(()),
        Ok(normalized) => Err(format!(
            "non-normalized path, consider use '{normalized}' instead"
        )),
        Err(crate::path::PathError::BadEscape) => {
            let at = path
                .match_indices('%')
                .map(|(i, _)| i)
                .find(|&i| {
                    !path
                        .get(i + 1..i + 3)
                        .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                })
                .unwrap_or(0);
            let shown = path.get(at..(at + 3).min(path.len())).unwrap_or("%");
            Err(format!("invalid url-encoded value: '{shown}'"))
        }
        Err(_) => Err("invalid path: no request path can match it".into()),
    }
}

/// A route path from a `_format_version` 1.1 / 2.1 file, migrated as Kong migrates it on
/// load: made only of `A-Za-z0-9.-_~/%` it is a prefix (normalised); anything
/// else was a regex then and becomes `~` + the regex, with percent-encoded triplets decoded
/// (reserved characters stay encoded, in upper case; regex metacharacters are escaped).
pub fn migrate_legacy_path(path: &str) -> String {
    let plain = path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-~/%".contains(&b));
    if plain {
        // Kong's `normalize`; a path it refuses is left for validation to report.
        return crate::path::normalise(path).unwrap_or_else(|_| path.to_string());
    }
    let mut out = String::with_capacity(path.len() + 1);
    out.push('~');
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let triplet = (bytes[i] == b'%')
            .then(|| path.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match triplet {
            Some(b) if b"!#$%&'()*+,/:;=?@[]".contains(&b) => {
                out.push_str(&path[i..i + 3].to_ascii_uppercase());
                i += 3;
            }
            Some(b) if b.is_ascii() && !b.is_ascii_control() => {
                if b".^-{}\\|".contains(&b) {
                    out.push('\\');
                }
                out.push(b as char);
                i += 3;
            }
            _ => {
                let c = path[i..].chars().next().unwrap_or_default();
                out.push(c);
                i += c.len_utf8().max(1);
            }
        }
    }
    out
}

/// The parts of a service `url` shorthand.
#[derive(Debug, PartialEq, Eq)]
pub struct UrlParts {
    /// Scheme, lower case.
    pub scheme: String,
    /// Host.
    pub host: String,
    /// Explicit port, if any.
    pub port: Option<u16>,
    /// Path, if any.
    pub path: Option<String>,
}

/// Parses `scheme://host[:port][/path][?query][#fragment]`. A query string and fragment are
/// dropped, as Kong's `url` shorthand drops them (it keeps protocol, host, port and path).
pub fn parse_url(s: &str) -> Result<UrlParts, String> {
    let (scheme, rest) = s
        .split_once("://")
        .ok_or_else(|| "missing scheme (expected scheme://host)".to_string())?;
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(rest[i..].to_string())),
        None => (rest, None),
    };
    if authority.contains('@') {
        return Err("credentials in the url are not allowed".into());
    }
    let (host, port) = split_host_port(authority).ok_or_else(|| "invalid port".to_string())?;
    if !is_valid_host(&host) {
        return Err(format!("invalid host: {host}"));
    }
    Ok(UrlParts {
        scheme: scheme.to_ascii_lowercase(),
        host,
        port,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert!(check_route_host("example.com").is_ok());
        assert!(check_route_host("*.example.com").is_ok());
        assert!(check_route_host("example.*").is_ok());
        assert!(check_route_host("example.com:8080").is_ok());
        assert!(check_route_host("ex*ample.com").is_err());
        assert!(check_route_host("*.*.com").is_err());
        assert!(check_route_host("a b").is_err());
    }

    #[test]
    fn urls() {
        let u = parse_url("https://api.example.com:8443/v1").unwrap();
        assert_eq!(u.scheme, "https");
        assert_eq!(u.host, "api.example.com");
        assert_eq!(u.port, Some(8443));
        assert_eq!(u.path.as_deref(), Some("/v1"));
        let u = parse_url("http://[::1]:9000").unwrap();
        assert_eq!(u.host, "::1");
        assert!(parse_url("nohost").is_err());
        // Kong's shorthand keeps protocol, host, port and path: a query or fragment is dropped.
        let u = parse_url("http://h:81/p/q?x=1&y=2#frag").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("h", Some(81)));
        assert_eq!(u.path.as_deref(), Some("/p/q"));
        let u = parse_url("http://h?x=/y").unwrap();
        assert_eq!((u.host.as_str(), u.path), ("h", None));
        assert_eq!(parse_url("http://h#f").unwrap().host, "h");
        assert!(parse_url("http://u:p@h").is_err());
    }

    #[test]
    fn paths() {
        assert!(check_path("/a/b").is_ok());
        assert!(check_path("a").is_err());
        assert!(check_path("/a//b").is_err());
    }

    #[test]
    fn hosts_split_from_ports() {
        let split = |s: &str| split_host_port(s);
        assert_eq!(split("example.com"), Some(("example.com".into(), None)));
        assert_eq!(
            split("example.com:8000"),
            Some(("example.com".into(), Some(8000)))
        );
        assert_eq!(split("[::1]:8443"), Some(("::1".into(), Some(8443))));
        assert_eq!(split("[::1]"), Some(("::1".into(), None)));
        assert_eq!(split("::1"), Some(("::1".into(), None)));
        assert_eq!(split("fe80::1:2"), Some(("fe80::1:2".into(), None)));
        assert_eq!(split("example.com:"), None);
        assert_eq!(split("example.com:99999"), None);
        assert_eq!(split("example.com:x"), None);
        assert_eq!(split("[::1]x"), None);
    }
}
