//! Route matching for Portcullis, compatible with Kong 3.x's
//! `traditional_compatible` router flavour.
//!
//! The crate is pure: no sockets and no HTTP types. A [`Router`] is compiled
//! once per configuration with [`Router::build`] and then shared (it is
//! `Send + Sync`) to answer [`Router::find`] for each request.
//!
//! # Criteria
//!
//! A [`RouteSpec`] matches a request when every non-empty criterion matches:
//!
//! * **methods**: exact, case-sensitive compare (configure them upper-case).
//! * **hosts**: `example.com` (exact), `*.example.com` (the host must end with
//!   `.example.com`, any number of labels before it), `example.*` (the host
//!   must start with `example.`); any of them may carry `:port`, and then the
//!   request port must equal it. IPv6 literals are written in brackets.
//! * **paths**: `/prefix` is a plain byte-string prefix (`/foo` matches `/foo`,
//!   `/foo/x` and `/foobar`); `~regex` is a Rust regex anchored at the start
//!   only (compiled as `^(?:regex)`), with named groups `(?<n>..)`/`(?P<n>..)`.
//! * **headers**: values of one header are OR'ed, different headers AND'ed;
//!   values compare case-insensitively, and a value starting with `~*` is a
//!   case-insensitive regex (unanchored unless it anchors itself). A header
//!   listed with no values only has to be present. As Kong's expressions do,
//!   the configured value (or regex source) is lower-cased ASCII-only, so a
//!   value with a non-ASCII capital never matches and `~*\D` means `\d`; and
//!   `-` and `_` in a header name are the same (a request header spelled with
//!   `_` is read first, the one spelled with `-` otherwise).
//! * **snis**: exact or wildcard names as for hosts (no port; a trailing dot is
//!   ignored), checked only for TLS requests ([`RequestInfo::sni`] is `Some`);
//!   ignored for plain text.
//!
//! # Priority
//!
//! A route with several paths is split into one candidate per path. Among the
//! matching candidates the highest priority wins, compared in this order (as
//! in Kong's `kong/router/transform.lua` `get_priority`):
//!
//! 1. match weight: number of non-empty criteria among methods, hosts,
//!    headers, paths and snis (snis count even for plain-text requests);
//! 2. the route has hosts and none is a wildcard;
//! 3. number of header criteria (counted up to 255);
//! 4. the candidate's path is a regex (beats a prefix);
//! 5. `regex_priority` (regex candidates only; prefix candidates use 0);
//! 6. prefix length in bytes (longer wins);
//!
//! and on a full tie the lower route index wins, then the route's first path.
//! (Kong leaves ties undefined: its atc-router tries equal priorities by
//! descending route id.)
//!
//! # Performance
//!
//! [`Router::build`] compiles every regex and builds a host-keyed index (exact
//! hosts, `*.suffix` and `prefix.*` tables, plus a bucket for routes without
//! hosts); each bucket holds a radix trie of prefix paths and rank-sorted
//! lists of regex and pathless candidates. [`Router::find`] only looks at
//! candidates whose host key and path prefix fit, in priority order with early
//! exit, and allocates only for the returned [`Match`].
//!
//! # Example
//!
//! ```
//! use portcullis_router::{RequestInfo, RouteSpec, Router};
//!
//! let routes = vec![
//!     RouteSpec { paths: vec!["/users".into()], ..Default::default() },
//!     RouteSpec { paths: vec![r"~/users/(?<id>\d+)".into()], ..Default::default() },
//! ];
//! let router = Router::build(&routes)?;
//! let headers: Vec<(&str, &str)> = vec![("accept", "*/*")];
//! let req = RequestInfo {
//!     method: "GET",
//!     host: "example.com",
//!     port: 80,
//!     path: "/users/42/posts",
//!     sni: None,
//!     headers: &headers,
//! };
//! let m = router.find(&req).expect("a route matches");
//! assert_eq!(m.route, 1); // a regex path beats a prefix
//! assert_eq!(m.matched_path, Some(0..9));
//! assert_eq!(m.captures, vec![(Some("id".to_string()), "42".to_string())]);
//! # Ok::<(), portcullis_router::RouterError>(())
//! ```

mod criteria;
mod hash;
mod host;
mod index;
mod priority;
mod tables;
mod trie;

#[cfg(test)]
mod tests;

use std::ops::Range;

/// One route as the router sees it. Its index in the slice given to
/// [`Router::build`] is its id: a lower index is declared earlier and wins
/// ties.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteSpec {
    /// Upper-case methods, exact compare; empty = any.
    pub methods: Vec<String>,
    /// Lower-case hosts: `example.com`, `*.example.com`, `example.*`, each
    /// optionally with `:port`.
    pub hosts: Vec<String>,
    /// `/prefix` (plain string prefix) or `~regex` (anchored at the start).
    pub paths: Vec<String>,
    /// Lower-case header name and its accepted values (`~*` = regex).
    pub headers: Vec<(String, Vec<String>)>,
    /// Lower-case SNIs, exact or `*.x` / `x.*`; checked only over TLS.
    pub snis: Vec<String>,
    /// Orders regex paths among otherwise equal candidates (higher wins).
    pub regex_priority: i64,
}

/// Read access to request headers.
pub trait Headers {
    /// Calls `pred` on each value of header `name` (lower-case name given);
    /// returns true as soon as `pred` returns true.
    fn any_value(&self, name: &str, pred: &mut dyn FnMut(&str) -> bool) -> bool;

    /// Whether a header `name` (lower-case name given) is present, whatever its value.
    fn contains(&self, name: &str) -> bool {
        self.any_value(name, &mut |_| true)
    }
}

/// `(name, value)` pairs, one entry per header value; names compare
/// ASCII-case-insensitively. (Behind a `&dyn Headers`, pass a `Vec`, an
/// array, or a `&&[..]`.)
impl<N: AsRef<str>, V: AsRef<str>> Headers for [(N, V)] {
    fn any_value(&self, name: &str, pred: &mut dyn FnMut(&str) -> bool) -> bool {
        self.iter()
            .any(|(n, v)| n.as_ref().eq_ignore_ascii_case(name) && pred(v.as_ref()))
    }
}

/// Same as the slice implementation.
impl<N: AsRef<str>, V: AsRef<str>, const K: usize> Headers for [(N, V); K] {
    fn any_value(&self, name: &str, pred: &mut dyn FnMut(&str) -> bool) -> bool {
        self.as_slice().any_value(name, pred)
    }
}

/// Same as the slice implementation.
impl<N: AsRef<str>, V: AsRef<str>> Headers for Vec<(N, V)> {
    fn any_value(&self, name: &str, pred: &mut dyn FnMut(&str) -> bool) -> bool {
        self.as_slice().any_value(name, pred)
    }
}

/// Forwards to the referenced value.
impl<T: Headers + ?Sized> Headers for &T {
    fn any_value(&self, name: &str, pred: &mut dyn FnMut(&str) -> bool) -> bool {
        (**self).any_value(name, pred)
    }

    fn contains(&self, name: &str) -> bool {
        (**self).contains(name)
    }
}

/// The parts of a request the router looks at.
#[derive(Clone, Copy)]
pub struct RequestInfo<'a> {
    /// Request method, as sent.
    pub method: &'a str,
    /// Lower-case host, without port (IPv6 literals in brackets).
    pub host: &'a str,
    /// Port the request's Host header named, or the listener port.
    pub port: u16,
    /// Normalised path without query string.
    pub path: &'a str,
    /// SNI, `Some` only for TLS connections: `Some("")` for a TLS connection
    /// whose client sent no SNI, which (as in Kong) matches no route with snis.
    pub sni: Option<&'a str>,
    /// Request headers.
    pub headers: &'a dyn Headers,
}

impl std::fmt::Debug for RequestInfo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestInfo")
            .field("method", &self.method)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("path", &self.path)
            .field("sni", &self.sni)
            .finish_non_exhaustive()
    }
}

/// The winning route of a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// Index into the slice given to [`Router::build`].
    pub route: usize,
    /// Byte range of the path that matched: `0..prefix.len()` for a prefix,
    /// the regex match range (starting at 0) for a regex; `None` when the
    /// route has no paths.
    pub matched_path: Option<Range<usize>>,
    /// Regex captures `(name if named, value)`, group 0 excluded and
    /// unmatched optional groups skipped; empty for prefix paths.
    pub captures: Vec<(Option<String>, String)>,
}

/// Why a configuration could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// A `~regex` path does not compile.
    #[error("route {route}: invalid regex path {path:?}: {message}")]
    InvalidRegex {
        /// Index of the route.
        route: usize,
        /// The configured path, with its `~`.
        path: String,
        /// The regex compiler's message.
        message: String,
    },
    /// A `~*regex` header value does not compile.
    #[error("route {route}: invalid regex {value:?} for header {header:?}: {message}")]
    InvalidHeaderRegex {
        /// Index of the route.
        route: usize,
        /// Header name.
        header: String,
        /// The configured value, with its `~*`.
        value: String,
        /// The regex compiler's message.
        message: String,
    },
    /// A host is malformed (bad port, misplaced wildcard, empty).
    #[error("route {route}: invalid host {host:?}: {message}")]
    InvalidHost {
        /// Index of the route.
        route: usize,
        /// The configured host.
        host: String,
        /// What is wrong with it.
        message: String,
    },
    /// An SNI is malformed (misplaced wildcard, empty).
    #[error("route {route}: invalid sni {sni:?}: {message}")]
    InvalidSni {
        /// Index of the route.
        route: usize,
        /// The configured SNI.
        sni: String,
        /// What is wrong with it.
        message: String,
    },
    /// The route set is too large to index (about 2^31 paths, counting a
    /// route once per distinct host name, plus their bytes).
    #[error("route set too large to index: size {size} exceeds {max}")]
    TooLarge {
        /// Estimated index size.
        size: usize,
        /// Largest size supported.
        max: usize,
    },
}

/// A compiled set of routes. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Router {
    index: index::Index,
}

impl Router {
    /// Compiles `routes` (regexes, host tables, path index).
    pub fn build(routes: &[RouteSpec]) -> Result<Router, RouterError> {
        Ok(Router {
            index: index::Index::build(routes)?,
        })
    }

    /// Returns the highest-priority route matching `req`, if any.
    pub fn find(&self, req: &RequestInfo<'_>) -> Option<Match> {
        self.index.find(req)
    }

    /// Number of routes the router was built from.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when the router was built from no routes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// Compile-time check: a `Router` can be shared across threads behind an `Arc`.
const _: fn() = || {
    fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<Router>();
};
