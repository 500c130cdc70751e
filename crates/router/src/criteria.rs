//! Per-route criteria other than paths (methods, hosts, headers, snis),
//! compiled once and evaluated on the candidates the index yields.

use regex::{Regex, RegexBuilder};

use crate::host::{HostName, HostPattern};
use crate::{RequestInfo, RouteSpec, RouterError};

/// One accepted value of a header criterion.
#[derive(Debug)]
enum HeaderValue {
    /// Case-insensitive equality; stored lower-cased.
    Exact(Box<str>),
    /// `~*regex`: case-insensitive, unanchored unless the regex anchors itself.
    Regex(Regex),
}

impl HeaderValue {
    #[inline]
    fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(lowered) => eq_lowercase(value, lowered),
            Self::Regex(re) => re.is_match(value),
        }
    }
}

/// Compares `value` case-insensitively with an already lower-cased string,
/// without allocating.
#[inline]
fn eq_lowercase(value: &str, lowered: &str) -> bool {
    if value.is_ascii() && lowered.is_ascii() {
        return value.eq_ignore_ascii_case(lowered);
    }
    value.chars().flat_map(char::to_lowercase).eq(lowered.chars())
}

fn lowercase(value: &str) -> String {
    value.chars().flat_map(char::to_lowercase).collect()
}

/// A header criterion: the named header must have one of `values`
/// (any value at all when `values` is empty).
#[derive(Debug)]
struct HeaderMatcher {
    name: Box<str>,
    values: Box<[HeaderValue]>,
}

/// A route's non-path criteria. Empty lists mean "any".
#[derive(Debug)]
pub(crate) struct Criteria {
    methods: Box<[Box<str>]>,
    pub(crate) hosts: Box<[HostPattern]>,
    headers: Box<[HeaderMatcher]>,
    snis: Box<[HostName]>,
}

impl Criteria {
    /// Compiles route `id`'s criteria, validating hosts, snis and header regexes.
    pub(crate) fn compile(id: usize, spec: &RouteSpec) -> Result<Self, RouterError> {
        let hosts = spec
            .hosts
            .iter()
            .map(|h| {
                HostPattern::parse(h).map_err(|m| RouterError::InvalidHost {
                    route: id,
                    host: h.clone(),
                    message: m.to_owned(),
                })
            })
            .collect::<Result<_, _>>()?;
        let snis = spec
            .snis
            .iter()
            .map(|s| {
                HostName::parse(s).map_err(|m| RouterError::InvalidSni {
                    route: id,
                    sni: s.clone(),
                    message: m.to_owned(),
                })
            })
            .collect::<Result<_, _>>()?;
        let headers = spec
            .headers
            .iter()
            .map(|(name, values)| compile_header(id, name, values))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            methods: spec.methods.iter().map(|m| m.as_str().into()).collect(),
            hosts,
            headers,
            snis,
        })
    }

    /// True when every non-empty criterion matches `req` (snis only over TLS).
    #[inline]
    pub(crate) fn matches(&self, req: &RequestInfo<'_>) -> bool {
        (self.methods.is_empty() || self.methods.iter().any(|m| **m == *req.method))
            && (self.hosts.is_empty() || self.hosts.iter().any(|h| h.matches(req.host, req.port)))
            && match req.sni {
                Some(sni) if !self.snis.is_empty() => self.snis.iter().any(|s| s.matches(sni)),
                _ => true,
            }
            && self.headers.iter().all(|h| {
                if h.values.is_empty() {
                    return req.headers.any_value(&h.name, &mut |_| true);
                }
                req.headers
                    .any_value(&h.name, &mut |v| h.values.iter().any(|hv| hv.matches(v)))
            })
    }
}

fn compile_header(id: usize, name: &str, values: &[String]) -> Result<HeaderMatcher, RouterError> {
    let values = values
        .iter()
        .map(|v| match v.strip_prefix("~*") {
            Some(re) => RegexBuilder::new(re)
                .case_insensitive(true)
                .build()
                .map(HeaderValue::Regex)
                .map_err(|e| RouterError::InvalidHeaderRegex {
                    route: id,
                    header: name.to_owned(),
                    value: v.clone(),
                    message: e.to_string(),
                }),
            None => Ok(HeaderValue::Exact(lowercase(v).into())),
        })
        .collect::<Result<_, _>>()?;
    Ok(HeaderMatcher {
        name: name.to_ascii_lowercase().into(),
        values,
    })
}

#[cfg(test)]
mod unit {
    use super::eq_lowercase;

    #[test]
    fn case_insensitive_compare() {
        assert!(eq_lowercase("ABC", "abc"));
        assert!(eq_lowercase("ÄBC", "äbc"));
        assert!(!eq_lowercase("ÄBC", "abc"));
        assert!(!eq_lowercase("abcd", "abc"));
    }
}
