//! Host and SNI patterns: exact names, `*.suffix` and `prefix.*` wildcards,
//! and an optional `:port` on hosts.

/// A host or SNI name pattern, lower-cased at build time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum HostName {
    /// The request name must equal this.
    Exact(Box<str>),
    /// `*.example.com`, stored as `.example.com`: the request name must end with it.
    Suffix(Box<str>),
    /// `example.*`, stored as `example.`: the request name must start with it.
    Prefix(Box<str>),
}

impl HostName {
    /// Parses a name (no port). Errors carry a human-readable reason.
    pub(crate) fn parse(name: &str) -> Result<Self, &'static str> {
        let name = name.to_lowercase();
        if name.is_empty() {
            return Err("empty name");
        }
        if let Some(rest) = name.strip_prefix("*.") {
            if rest.is_empty() || rest.contains('*') {
                return Err(
                    "only one wildcard, as the whole leftmost or rightmost label, is allowed",
                );
            }
            return Ok(Self::Suffix(name[1..].into()));
        }
        if let Some(rest) = name.strip_suffix(".*") {
            if rest.is_empty() || rest.contains('*') {
                return Err(
                    "only one wildcard, as the whole leftmost or rightmost label, is allowed",
                );
            }
            return Ok(Self::Prefix(name[..name.len() - 1].into()));
        }
        if name.contains('*') {
            return Err("a wildcard must be the whole leftmost or rightmost label");
        }
        Ok(Self::Exact(name.into()))
    }

    /// True when `name` (lower-case) matches this pattern.
    #[inline]
    pub(crate) fn matches(&self, name: &str) -> bool {
        match self {
            Self::Exact(h) => **h == *name,
            Self::Suffix(s) => name.ends_with(&**s),
            Self::Prefix(p) => name.starts_with(&**p),
        }
    }
}

/// A route host: a name pattern plus an optional port the request must use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostPattern {
    pub(crate) name: HostName,
    pub(crate) port: Option<u16>,
}

impl HostPattern {
    /// Parses `name`, `name:port`, `[v6]` or `[v6]:port`, with wildcards allowed in `name`.
    pub(crate) fn parse(spec: &str) -> Result<Self, &'static str> {
        let (name, port) = split_port(spec)?;
        Ok(Self {
            name: HostName::parse(name)?,
            port,
        })
    }

    /// True when the request host (lower-case, no port) and port match.
    #[inline]
    pub(crate) fn matches(&self, host: &str, port: u16) -> bool {
        self.port.is_none_or(|p| p == port) && self.name.matches(host)
    }
}

/// Splits an optional `:port` suffix off a host spec.
fn split_port(spec: &str) -> Result<(&str, Option<u16>), &'static str> {
    if let Some(rest) = spec.strip_prefix('[') {
        let close = rest.find(']').ok_or("unterminated '[' in IPv6 host")?;
        let name = &spec[..close + 2];
        let after = &rest[close + 1..];
        if after.is_empty() {
            return Ok((name, None));
        }
        let port = after
            .strip_prefix(':')
            .ok_or("unexpected text after IPv6 host")?;
        return Ok((name, Some(parse_port(port)?)));
    }
    match spec.rsplit_once(':') {
        None => Ok((spec, None)),
        Some((name, _)) if name.contains(':') => Err("IPv6 hosts must be written in brackets"),
        Some((name, port)) => Ok((name, Some(parse_port(port)?))),
    }
}

fn parse_port(port: &str) -> Result<u16, &'static str> {
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err("port must be a decimal number");
    }
    port.parse().map_err(|_| "port must be in 0..=65535")
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn parses_shapes() {
        let p = HostPattern::parse("*.Example.com:8000").unwrap();
        assert_eq!(p.name, HostName::Suffix(".example.com".into()));
        assert_eq!(p.port, Some(8000));
        let p = HostPattern::parse("example.*").unwrap();
        assert_eq!(p.name, HostName::Prefix("example.".into()));
        let p = HostPattern::parse("[::1]:80").unwrap();
        assert_eq!(p.name, HostName::Exact("[::1]".into()));
        assert_eq!(p.port, Some(80));
        for bad in [
            "", "*", "*.", "a.*.b", "*.a.*", "a:x", "a:99999", "::1", "[::1", "[::1]x",
        ] {
            assert!(
                HostPattern::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn matching() {
        let p = HostPattern::parse("*.a.com").unwrap();
        assert!(p.matches("x.a.com", 1));
        assert!(p.matches("y.x.a.com", 1));
        assert!(!p.matches("a.com", 1));
        let p = HostPattern::parse("a.*:81").unwrap();
        assert!(p.matches("a.org", 81));
        assert!(!p.matches("a.org", 80));
        assert!(!p.matches("b.a.org", 81));
    }
}
