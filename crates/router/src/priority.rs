//! Candidate priority, after Kong 3.x `kong/router/transform.lua` `get_priority`.

use crate::RouteSpec;

/// How one path of a route matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathSpec<'a> {
    /// Plain string prefix.
    Prefix(&'a str),
    /// Regex source without the leading `~`.
    Regex(&'a str),
}

impl<'a> PathSpec<'a> {
    /// Classifies a configured path: a leading `~` marks a regex.
    pub(crate) fn parse(path: &'a str) -> Self {
        match path.strip_prefix('~') {
            Some(re) => Self::Regex(re),
            None => Self::Prefix(path),
        }
    }
}

/// Kong caps the header count at this when ranking (`get_priority`, `MAX_HEADER_COUNT`).
pub(crate) const MAX_HEADER_COUNT: usize = 255;

/// Priority of one (route, path) candidate. Field order is significance
/// order, so the derived `Ord` compares like the 64-bit layout Kong's
/// `get_priority` describes (greater wins). Ties are broken outside this type by
/// declaration order.
///
/// Known deviation, not reproduced: Kong's `lshift_uint64` rebinds its cdata to
/// the Lua number it is given, so weight, header count and `regex_priority` are
/// shifted with LuaJIT's 32-bit `bit.lshift` (count masked to 5 bits) and the
/// result sign-extended. In Kong itself the plain-host and regex bits therefore
/// outrank the match weight; routes with 4+ criteria, and regex candidates whose
/// `regex_priority` modulo 8192 is 4096 or more (-1, 4096, ...), outrank
/// everything; and `regex_priority` bits overlap the weight and header count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Priority {
    /// Number of non-empty criteria among methods, hosts, headers, paths, snis.
    pub(crate) weight: u8,
    /// The route has hosts and none of them is a wildcard.
    pub(crate) plain_host_only: bool,
    /// Number of header criteria, at most [`MAX_HEADER_COUNT`].
    pub(crate) header_count: usize,
    /// The candidate's path is a regex.
    pub(crate) regex_url: bool,
    /// The route's `regex_priority` for regex candidates, else 0.
    pub(crate) regex_priority: i64,
    /// Prefix length in bytes for prefix candidates, else 0.
    pub(crate) prefix_len: usize,
}

impl Priority {
    /// Priority of `route` split to the single `path` (None for a pathless route).
    pub(crate) fn new(route: &RouteSpec, path: Option<PathSpec<'_>>) -> Self {
        let weight = [
            !route.methods.is_empty(),
            !route.hosts.is_empty(),
            !route.headers.is_empty(),
            path.is_some(),
            !route.snis.is_empty(),
        ]
        .into_iter()
        .filter(|&b| b)
        .count();
        let plain_host_only =
            !route.hosts.is_empty() && route.hosts.iter().all(|h| !h.contains('*'));
        let (regex_url, regex_priority, prefix_len) = match path {
            Some(PathSpec::Regex(_)) => (true, route.regex_priority, 0),
            Some(PathSpec::Prefix(p)) => (false, 0, p.len()),
            None => (false, 0, 0),
        };
        Self {
            // At most 5 criteria, so this never truncates.
            weight: weight as u8,
            plain_host_only,
            header_count: route.headers.len().min(MAX_HEADER_COUNT),
            regex_url,
            regex_priority,
            prefix_len,
        }
    }
}
