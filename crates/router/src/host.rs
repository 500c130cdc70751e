//! Host and SNI patterns: exact names, `*.suffix` and `prefix.*` wildcards,
//! and an optional `:port` on hosts; and the host tables of the index.

use crate::hash::FastMap;

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

/// First level of the index: host name patterns to buckets (`V`). A route
/// is filed under one bucket per distinct host name (routes without hosts
/// share one bucket), and a request visits only the buckets its host can
/// match. Built with `V = u32` bucket ids, then mapped to the buckets.
#[derive(Debug)]
pub(crate) struct HostTables<V> {
    exact: FastMap<Box<str>, V>,
    /// Keys are `.example.com` for `*.example.com`.
    suffix: FastMap<Box<str>, V>,
    /// Keys are `example.` for `example.*`.
    prefix: FastMap<Box<str>, V>,
    any_host: Option<V>,
    count: u32,
}

impl<V> Default for HostTables<V> {
    fn default() -> Self {
        Self {
            exact: FastMap::default(),
            suffix: FastMap::default(),
            prefix: FastMap::default(),
            any_host: None,
            count: 0,
        }
    }
}

impl HostTables<u32> {
    /// Number of bucket ids handed out so far.
    pub(crate) fn bucket_count(&self) -> usize {
        self.count as usize
    }

    /// The bucket ids a route with `hosts` is filed under, each with whether
    /// reaching that bucket already proves the route's host criterion (a
    /// pattern with that name and no port exists).
    pub(crate) fn buckets_for(&mut self, hosts: &[HostPattern]) -> Vec<(u32, bool)> {
        if hosts.is_empty() {
            let b = match self.any_host {
                Some(b) => b,
                None => self.next(),
            };
            self.any_host = Some(b);
            return vec![(b, true)];
        }
        let mut keys: Vec<(&HostName, bool)> =
            hosts.iter().map(|h| (&h.name, h.port.is_none())).collect();
        keys.sort_unstable();
        keys.dedup_by(|later, earlier| {
            let same = later.0 == earlier.0;
            earlier.1 |= same && later.1;
            same
        });
        keys.into_iter()
            .map(|(name, proven)| (self.bucket(name), proven))
            .collect()
    }

    fn bucket(&mut self, name: &HostName) -> u32 {
        let next = self.count;
        let (map, key) = match name {
            HostName::Exact(k) => (&mut self.exact, k),
            HostName::Suffix(k) => (&mut self.suffix, k),
            HostName::Prefix(k) => (&mut self.prefix, k),
        };
        let b = *map.entry(key.clone()).or_insert(next);
        if b == next {
            self.count += 1;
        }
        b
    }

    fn next(&mut self) -> u32 {
        self.count += 1;
        self.count - 1
    }
}

impl<V> HostTables<V> {
    /// Replaces every bucket id by `f(id)`.
    pub(crate) fn map<W>(self, mut f: impl FnMut(V) -> W) -> HostTables<W> {
        let mut table = |m: FastMap<Box<str>, V>| -> FastMap<Box<str>, W> {
            m.into_iter().map(|(k, v)| (k, f(v))).collect()
        };
        HostTables {
            exact: table(self.exact),
            suffix: table(self.suffix),
            prefix: table(self.prefix),
            any_host: self.any_host.map(&mut f),
            count: self.count,
        }
    }

    /// Calls `visit` with every bucket whose key `host` can match.
    #[inline]
    pub(crate) fn for_each_bucket(&self, host: &str, mut visit: impl FnMut(&V)) {
        if !self.exact.is_empty() {
            if let Some(b) = self.exact.get(host) {
                visit(b);
            }
        }
        let (suffix, prefix) = (!self.suffix.is_empty(), !self.prefix.is_empty());
        if suffix || prefix {
            // Every suffix key starts with '.', every prefix key ends with one.
            for (i, _) in host.bytes().enumerate().filter(|&(_, c)| c == b'.') {
                let by_suffix = if suffix {
                    self.suffix.get(&host[i..])
                } else {
                    None
                };
                let by_prefix = if prefix {
                    self.prefix.get(&host[..=i])
                } else {
                    None
                };
                by_suffix.into_iter().chain(by_prefix).for_each(&mut visit);
            }
        }
        if let Some(b) = &self.any_host {
            visit(b);
        }
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
