//! Naive linear reference router: checks every (route, path) candidate
//! with straightforward code and keeps the highest priority.

use portcullis_router::{Match, RequestInfo, RouteSpec};
use regex::{Regex, RegexBuilder};

/// A request with owned parts.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub host: String,
    pub port: u16,
    pub path: String,
    pub sni: Option<String>,
    pub headers: Vec<(String, String)>,
}

impl Req {
    pub fn info(&self) -> RequestInfo<'_> {
        RequestInfo {
            method: &self.method,
            host: &self.host,
            port: self.port,
            path: &self.path,
            sni: self.sni.as_deref(),
            headers: &self.headers,
        }
    }
}

fn host_matches(spec: &str, host: &str, port: u16) -> bool {
    let (name, want_port) = match spec.rsplit_once(':') {
        Some((n, p)) => (n, Some(p.parse::<u16>().unwrap())),
        None => (spec, None),
    };
    want_port.is_none_or(|p| p == port) && name_matches(name, host)
}

fn name_matches(pattern: &str, name: &str) -> bool {
    if let Some(suffix) = pattern.strip_prefix('*') {
        name.ends_with(suffix)
    } else if let Some(prefix) = pattern.strip_suffix('*') {
        name.starts_with(prefix)
    } else {
        pattern == name
    }
}

/// Kong lowers the configured value or regex source with Lua's ASCII-only
/// `string.lower` and the request value with atc-router's Unicode `lower()`.
fn header_value_matches(spec: &str, value: &str) -> bool {
    match spec.strip_prefix("~*") {
        Some(re) => RegexBuilder::new(&re.to_ascii_lowercase())
            .case_insensitive(true)
            .build()
            .unwrap()
            .is_match(value),
        None => spec.to_ascii_lowercase() == value.to_lowercase(),
    }
}

/// The request header name Kong reads for a route header `name`: spelled with
/// underscores if the request has it, else with dashes.
fn header_name(name: &str, q: &Req) -> String {
    let under = name.to_ascii_lowercase().replace('-', "_");
    if q.headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case(&under))
    {
        under
    } else {
        under.replace('_', "-")
    }
}

fn sni_matches(pattern: &str, sni: &str) -> bool {
    let pattern = match pattern.strip_suffix('.') {
        Some(p) if !p.is_empty() => p,
        _ => pattern,
    };
    name_matches(pattern, sni)
}

fn non_path_matches(r: &RouteSpec, q: &Req) -> bool {
    (r.methods.is_empty() || r.methods.contains(&q.method))
        && (r.hosts.is_empty() || r.hosts.iter().any(|h| host_matches(h, &q.host, q.port)))
        && (r.snis.is_empty()
            || q.sni
                .as_ref()
                .is_none_or(|s| r.snis.iter().any(|p| sni_matches(p, s))))
        && r.headers.iter().all(|(name, values)| {
            let name = header_name(name, q);
            q.headers.iter().any(|(n, v)| {
                n.eq_ignore_ascii_case(&name)
                    && (values.is_empty()
                        || values.iter().any(|spec| header_value_matches(spec, v)))
            })
        })
}

type Captures = Vec<(Option<String>, String)>;
/// Kong priority as a tuple, most significant first.
type Key = (u8, bool, usize, bool, i64, usize);

/// Matches one path; returns (range, captures) on success.
fn path_matches(p: &str, path: &str) -> Option<(std::ops::Range<usize>, Captures)> {
    let Some(re) = p.strip_prefix('~') else {
        return path.starts_with(p).then(|| (0..p.len(), vec![]));
    };
    let re = Regex::new(&format!("^(?:{re})")).unwrap();
    let caps = re.captures(path)?;
    let list = re
        .capture_names()
        .enumerate()
        .skip(1)
        .filter_map(|(i, n)| {
            caps.get(i)
                .map(|m| (n.map(String::from), m.as_str().to_string()))
        })
        .collect();
    Some((caps.get(0).unwrap().range(), list))
}

pub fn reference(routes: &[RouteSpec], q: &Req) -> Option<Match> {
    let mut best: Option<(Key, Match)> = None;
    for (id, r) in routes.iter().enumerate() {
        if !non_path_matches(r, q) {
            continue;
        }
        let paths: Vec<Option<&String>> = if r.paths.is_empty() {
            vec![None]
        } else {
            r.paths.iter().map(Some).collect()
        };
        for p in paths {
            let (range, captures) = match p {
                None => (None, vec![]),
                Some(p) => match path_matches(p, &q.path) {
                    Some((range, caps)) => (Some(range), caps),
                    None => continue,
                },
            };
            let weight = [
                !r.methods.is_empty(),
                !r.hosts.is_empty(),
                !r.headers.is_empty(),
                p.is_some(),
                !r.snis.is_empty(),
            ]
            .iter()
            .filter(|b| **b)
            .count() as u8;
            let plain = !r.hosts.is_empty() && r.hosts.iter().all(|h| !h.contains('*'));
            let is_regex = p.is_some_and(|p| p.starts_with('~'));
            let prefix_len = p.filter(|_| !is_regex).map_or(0, |p| p.len());
            let key = (
                weight,
                plain,
                r.headers.len().min(255),
                is_regex,
                if is_regex { r.regex_priority } else { 0 },
                prefix_len,
            );
            if best.as_ref().is_none_or(|(k, _)| key > *k) {
                best = Some((
                    key,
                    Match {
                        route: id,
                        matched_path: range,
                        captures,
                    },
                ));
            }
        }
    }
    best.map(|(_, m)| m)
}
