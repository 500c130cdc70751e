//! Per-route criteria other than paths (methods, hosts, headers, snis),
//! compiled once and evaluated on the candidates the index yields.

use regex::{Regex, RegexBuilder};

use crate::host::{HostName, HostPattern};
use crate::{RequestInfo, RouteSpec, RouterError};

/// One accepted value of a header criterion. As in Kong (`kong/router/transform.lua`
/// `get_expression`), the configured value is lower-cased ASCII-only (Lua's
/// `string.lower`) and compared with the request value lower-cased (atc-router's
/// `lower()`, Unicode).
#[derive(Debug)]
enum HeaderValue {
    /// Equality with the lower-cased request value; stored ASCII-lower-cased (so a
    /// value with a non-ASCII capital never matches, as in Kong).
    Exact(Box<str>),
    /// `~*regex`: the regex source ASCII-lower-cased (so `\D` reads `\d`, as in Kong),
    /// matched case-insensitively; unanchored unless the regex anchors itself.
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
    value
        .chars()
        .flat_map(char::to_lowercase)
        .eq(lowered.chars())
}

/// A header criterion: the named header must have one of `values`
/// (any value at all when `values` is empty).
///
/// Kong names the field after the header with dashes turned into underscores
/// (`http.headers.x_api_version`) and reads it from `ngx.req.get_headers()`, whose
/// lookup takes a header spelled exactly that way (`x_api_version`) and otherwise
/// the one with underscores turned back into dashes (`x-api-version`). So
/// `x-api-version` and `x_api_version` name the same criterion, and a request
/// header spelled with underscores hides the dashed one.
#[derive(Debug)]
struct HeaderMatcher {
    /// Lower-cased, dashes replaced by underscores: looked up first.
    name: Box<str>,
    /// Lower-cased, underscores replaced by dashes, when that differs from `name`:
    /// looked up when no header is spelled `name`.
    dashed: Option<Box<str>>,
    values: Box<[HeaderValue]>,
}

impl HeaderMatcher {
    /// The request header name this criterion reads in `headers`.
    #[inline]
    fn lookup_name(&self, headers: &dyn crate::Headers) -> &str {
        match &self.dashed {
            Some(dashed) if !headers.contains(&self.name) => dashed,
            _ => &self.name,
        }
    }

    #[inline]
    fn matches(&self, headers: &dyn crate::Headers) -> bool {
        let name = self.lookup_name(headers);
        if self.values.is_empty() {
            return headers.any_value(name, &mut |_| true);
        }
        headers.any_value(name, &mut |v| self.values.iter().any(|hv| hv.matches(v)))
    }
}

/// [`Criteria::checks`] bit: the route has methods.
pub(crate) const METHODS: u8 = 1;
/// [`Criteria::checks`] bit: the route has hosts.
pub(crate) const HOSTS: u8 = 2;
/// [`Criteria::checks`] bit: the route has headers.
pub(crate) const HEADERS: u8 = 4;
/// [`Criteria::checks`] bit: the route has snis.
pub(crate) const SNIS: u8 = 8;

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
                // Kong's `sni_val_transform`: a trailing dot is not used for routing.
                let name = match s.strip_suffix('.') {
                    Some(name) if !name.is_empty() => name,
                    _ => s,
                };
                HostName::parse(name).map_err(|m| RouterError::InvalidSni {
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

    /// Bit set of the non-empty criteria ([`METHODS`], [`HOSTS`], [`HEADERS`], [`SNIS`]).
    pub(crate) fn checks(&self) -> u8 {
        [
            (METHODS, self.methods.is_empty()),
            (HOSTS, self.hosts.is_empty()),
            (HEADERS, self.headers.is_empty()),
            (SNIS, self.snis.is_empty()),
        ]
        .into_iter()
        .filter(|&(_, empty)| !empty)
        .fold(0, |acc, (bit, _)| acc | bit)
    }

    /// True when the criteria selected by `need` (a subset of [`Self::checks`])
    /// all match `req`; snis only count for TLS requests.
    #[inline]
    pub(crate) fn matches(&self, req: &RequestInfo<'_>, need: u8) -> bool {
        (need & METHODS == 0 || self.methods.iter().any(|m| **m == *req.method))
            && (need & HOSTS == 0 || self.hosts.iter().any(|h| h.matches(req.host, req.port)))
            && match req.sni {
                Some(sni) if need & SNIS != 0 => self.snis.iter().any(|s| s.matches(sni)),
                _ => true,
            }
            && (need & HEADERS == 0 || self.headers.iter().all(|h| h.matches(req.headers)))
    }
}

fn compile_header(id: usize, name: &str, values: &[String]) -> Result<HeaderMatcher, RouterError> {
    let values = values
        .iter()
        .map(|v| match v.strip_prefix("~*") {
            Some(re) => RegexBuilder::new(&re.to_ascii_lowercase())
                .case_insensitive(true)
                .build()
                .map(HeaderValue::Regex)
                .map_err(|e| RouterError::InvalidHeaderRegex {
                    route: id,
                    header: name.to_owned(),
                    value: v.clone(),
                    message: e.to_string(),
                }),
            None => Ok(HeaderValue::Exact(v.to_ascii_lowercase().into())),
        })
        .collect::<Result<_, _>>()?;
    let lower = name.to_ascii_lowercase();
    let underscored = lower.replace('-', "_");
    let dashed = underscored.replace('_', "-");
    Ok(HeaderMatcher {
        dashed: (dashed != underscored).then(|| dashed.into()),
        name: underscored.into(),
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
