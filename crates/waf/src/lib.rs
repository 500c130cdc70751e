//! A web application firewall: libmodsecurity 3 with the OWASP Core Rule Set, behind a small
//! safe API.
//!
//! This crate is the only place in the workspace with `unsafe` code, all of it in the private
//! `ffi` module. The rest of the gateway sees:
//!
//! * [`Rules`]: a rule set compiled **once** (per config load) from the CRS plus settings and
//!   custom SecLang rules; `Send + Sync`, shared by every request.
//! * [`Rules::inspect`]: runs one request through its own ModSecurity transaction and returns a
//!   [`Verdict`] (blocked or not, and the ids of every rule that matched). The call is
//!   CPU-bound and synchronous: async callers should run it on a blocking thread.
//! * [`Rules::inspect_response`]: for rule sets built with [`CrsConfig::inspect_response`],
//!   runs an upstream response (status, headers, the first bytes of a text body) through the
//!   CRS response rules (data leakages, 950–959) in a transaction of its own that first
//!   replays the request's phase 1 (connection, URI, headers), because the response rules
//!   depend on the variables the CRS initialisation (REQUEST-901) sets there. Same threading
//!   advice.
//!
//! The engine always runs with `SecRuleEngine On`; whether a disruptive verdict is enforced
//! (block) or only reported (detect) is the caller's choice, so both modes see identical
//! matches.

#![warn(missing_docs)]
// Unsafe code is confined to `ffi`; the rest of the crate may not use it.
#![deny(unsafe_code)]

mod cache;
#[allow(unsafe_code)]
mod ffi;

pub use cache::MAX_KEY_BYTES;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Where Debian's `modsecurity-crs` package installs the CRS rule files.
pub const DEFAULT_CRS_DIR: &str = "/usr/share/modsecurity-crs/rules";

/// Rule ids reserved for the engine setup this crate generates (`200000`–`200005` for body
/// processing, `900000`–`900990` for CRS settings). Custom rules must not use them.
pub const SETUP_RULE_IDS: &[u32] = &[
    200000, 200001, 200002, 200003, 200004, 200005, 900000, 900110, 900200, 900990,
];

/// Methods the CRS allows by default in this gateway: the CRS's own default (`GET HEAD POST
/// OPTIONS`) plus the methods REST APIs use.
pub const DEFAULT_ALLOWED_METHODS: &[&str] =
    &["GET", "HEAD", "POST", "OPTIONS", "PUT", "PATCH", "DELETE"];

/// Response media types whose bodies are inspected (`SecResponseBodyMimeType` of rule sets
/// built with [`CrsConfig::inspect_response`]): text-like types where data leakages (SQL
/// error messages, stack traces, directory listings) show. libmodsecurity matches the
/// Content-Type (without parameters) exactly against this list; [`response_body_inspected`]
/// applies the same test. Streaming types (`text/event-stream`) are deliberately absent.
pub const RESPONSE_BODY_MIME_TYPES: &[&str] = &[
    "text/plain",
    "text/html",
    "text/xml",
    "text/css",
    "text/csv",
    "text/javascript",
    "text/markdown",
    "application/json",
    "application/problem+json",
    "application/hal+json",
    "application/ld+json",
    "application/vnd.api+json",
    "application/xml",
    "application/problem+xml",
    "application/soap+xml",
    "application/xhtml+xml",
    "application/javascript",
    "application/x-javascript",
];

/// Does a response with this `Content-Type` value get its body inspected? The media type
/// (the text before any `;`) must be one of [`RESPONSE_BODY_MIME_TYPES`], compared exactly as
/// libmodsecurity compares it (so `application/json; charset=utf-8` is inspected, and a type
/// the engine would skip is never fed to it).
pub fn response_body_inspected(content_type: &[u8]) -> bool {
    let media = content_type
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default();
    RESPONSE_BODY_MIME_TYPES
        .iter()
        .any(|t| t.as_bytes() == media)
}

/// Errors building a rule set or running a transaction.
#[derive(Debug, thiserror::Error)]
pub enum WafError {
    /// The CRS rule files are not where they were expected.
    #[error("OWASP Core Rule Set not found in {0} (install Debian's modsecurity-crs)")]
    CrsMissing(PathBuf),
    /// A setting is out of range.
    #[error("{0}")]
    Setting(String),
    /// A custom rule uses a directive or action this gateway does not allow.
    #[error("{0}")]
    Forbidden(String),
    /// libmodsecurity refused the rules (syntax error, duplicate id, …).
    #[error("{0}")]
    Rule(String),
    /// The library failed (allocation, NUL byte in a string).
    #[error("libmodsecurity: {0}")]
    Engine(String),
}

/// Settings of a CRS-based rule set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CrsConfig {
    /// Directory with the CRS `*.conf` rule files and their `*.data` files.
    pub crs_dir: PathBuf,
    /// CRS paranoia level, 1 (fewest false positives) to 4 (most rules).
    pub paranoia_level: u8,
    /// Inbound anomaly score at or above which a request is blocked (CRS default 5: one
    /// critical match).
    pub inbound_anomaly_threshold: u32,
    /// Outbound anomaly score threshold (CRS default 4); used by response rules.
    pub outbound_anomaly_threshold: u32,
    /// Rule ids removed from evaluation (`SecRuleRemoveById`).
    pub exclude_rules: Vec<u32>,
    /// SecLang text loaded after the engine setup and *before* the CRS, so a custom
    /// `SecAction` can set CRS variables (e.g. `tx.allowed_request_content_type`) and runtime
    /// exclusions (`ctl:ruleRemoveById`) apply to the CRS rules after them.
    pub custom_rules: Vec<String>,
    /// HTTP methods the CRS allows (rule 911100 flags others).
    pub allowed_methods: Vec<String>,
    /// Request body bytes inspected at most; [`Rules::inspect`] looks at no more than this.
    pub body_limit: usize,
    /// Slots in the verdict cache (0: no cache). The cache is only used when the rule set is
    /// deterministic: see [`Rules::caches_verdicts`].
    pub verdict_cache_size: usize,
    /// Build the rule set for response inspection too ([`Rules::inspect_response`]):
    /// `SecResponseBodyAccess On` for [`RESPONSE_BODY_MIME_TYPES`], so the CRS response rules
    /// (phase 4) run. Off: responses are never evaluated.
    pub inspect_response: bool,
    /// Response body bytes inspected at most (`SecResponseBodyLimit`, processed partially).
    pub response_body_limit: usize,
}

impl Default for CrsConfig {
    fn default() -> Self {
        CrsConfig {
            crs_dir: PathBuf::from(DEFAULT_CRS_DIR),
            paranoia_level: 1,
            inbound_anomaly_threshold: 5,
            outbound_anomaly_threshold: 4,
            exclude_rules: Vec::new(),
            custom_rules: Vec::new(),
            allowed_methods: DEFAULT_ALLOWED_METHODS
                .iter()
                .map(|m| m.to_string())
                .collect(),
            body_limit: 128 * 1024,
            verdict_cache_size: DEFAULT_VERDICT_CACHE_SIZE,
            inspect_response: false,
            response_body_limit: 128 * 1024,
        }
    }
}

/// Default number of verdict cache slots (at most [`MAX_KEY_BYTES`] each).
pub const DEFAULT_VERDICT_CACHE_SIZE: usize = 4096;

/// What [`Rules::inspect`] sees of a request. Header names and values are raw bytes.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// Method, e.g. `GET`.
    pub method: &'a str,
    /// Request target as sent: path and query (`/a?b=c`).
    pub uri: &'a str,
    /// HTTP version without the `HTTP/` prefix: `1.0`, `1.1`, `2.0`.
    pub version: &'static str,
    /// Request headers in order.
    pub headers: Vec<(&'a [u8], &'a [u8])>,
    /// The request body, if it is to be inspected (only the first `body_limit` bytes are).
    pub body: Option<&'a [u8]>,
    /// Client address and port.
    pub client_ip: IpAddr,
    /// Client port (0 when unknown).
    pub client_port: u16,
    /// Address the request arrived on.
    pub server_ip: IpAddr,
    /// Port the request arrived on.
    pub server_port: u16,
}

impl<'a> Request<'a> {
    /// A request with no headers or body, from and to 127.0.0.1.
    pub fn new(method: &'a str, uri: &'a str) -> Request<'a> {
        Request {
            method,
            uri,
            version: "1.1",
            headers: Vec::new(),
            body: None,
            client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            client_port: 0,
            server_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            server_port: 0,
        }
    }

    /// Adds a header (builder style).
    pub fn header(mut self, name: &'a str, value: &'a str) -> Request<'a> {
        self.headers.push((name.as_bytes(), value.as_bytes()));
        self
    }

    /// Sets the body (builder style).
    pub fn body(mut self, body: &'a [u8]) -> Request<'a> {
        self.body = Some(body);
        self
    }
}

/// What [`Rules::inspect_response`] sees of an upstream response. Header names and values
/// are raw bytes.
#[derive(Debug, Clone)]
pub struct Response<'a> {
    /// Status code.
    pub status: u16,
    /// HTTP version without the `HTTP/` prefix: `1.0`, `1.1`, `2.0`.
    pub version: &'a str,
    /// Response headers in order (as received, hop-by-hop headers removed).
    pub headers: Vec<(&'a [u8], &'a [u8])>,
    /// The first bytes of the body, if it is to be inspected (only the first
    /// `response_body_limit` bytes are, and only for [`RESPONSE_BODY_MIME_TYPES`]).
    pub body: Option<&'a [u8]>,
}

impl<'a> Response<'a> {
    /// A response with this status and no headers or body.
    pub fn new(status: u16) -> Response<'a> {
        Response {
            status,
            version: "1.1",
            headers: Vec::new(),
            body: None,
        }
    }

    /// Adds a header (builder style).
    pub fn header(mut self, name: &'a str, value: &'a str) -> Response<'a> {
        self.headers.push((name.as_bytes(), value.as_bytes()));
        self
    }

    /// Sets the body (builder style).
    pub fn body(mut self, body: &'a [u8]) -> Response<'a> {
        self.body = Some(body);
        self
    }
}

/// The outcome of one inspection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdict {
    /// A rule asked for a disruptive action (deny, drop, redirect): the request should not
    /// reach the upstream when enforcing.
    pub blocked: bool,
    /// The status the rules asked for (informational; the gateway answers 403 itself).
    pub status: u16,
    /// Ids of every rule that matched and logged, in evaluation order, without repeats
    /// (scoring rules such as 942100, and the blocking evaluation 949110 when the anomaly
    /// score reached the threshold).
    pub rule_ids: Vec<u32>,
    /// The anomaly score the blocking evaluation reported: inbound (949110) for a request,
    /// outbound (959100) for a response.
    pub anomaly_score: Option<u32>,
}

/// A compiled rule set: the CRS (or plain SecLang) with this gateway's engine setup.
///
/// Built once per config load; [`Rules::inspect`] may be called from many threads at once.
pub struct Rules {
    set: ffi::RuleSet,
    /// Held for the whole transaction when custom rules write persistent collections: in
    /// libmodsecurity 3.0.9 collection reads are unlocked, so such transactions must not run
    /// concurrently.
    serial: Option<Mutex<()>>,
    body_limit: usize,
    /// `Some(limit)` when built with [`CrsConfig::inspect_response`].
    response_body_limit: Option<usize>,
    rule_count: usize,
    /// Verdicts of requests seen before, when the rule set is deterministic.
    cache: Option<cache::VerdictCache>,
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rules")
            .field("rule_count", &self.rule_count)
            .field("body_limit", &self.body_limit)
            .field("response_body_limit", &self.response_body_limit)
            .field("serialised", &self.serial.is_some())
            .field("caches_verdicts", &self.cache.is_some())
            .finish()
    }
}

/// The ModSecurity version linked, e.g. `ModSecurity v3.0.9 (Linux)`.
pub fn version() -> Result<String, WafError> {
    ffi::version().map_err(WafError::Engine)
}

fn setup(cfg: &CrsConfig) -> String {
    let limit = cfg.body_limit.max(1);
    format!(
        r#"SecRuleEngine On
SecRequestBodyAccess On
SecRequestBodyLimit {limit}
SecRequestBodyNoFilesLimit {limit}
SecRequestBodyLimitAction ProcessPartial
{response}
SecAuditEngine Off
SecArgumentSeparator &
SecCookieFormat 0
SecDefaultAction "phase:1,log,auditlog,pass"
SecDefaultAction "phase:2,log,auditlog,pass"
SecRule REQUEST_HEADERS:Content-Type "@rx ^(?:application(?:/soap\+|/)|text/)xml" "id:200000,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=XML"
SecRule REQUEST_HEADERS:Content-Type "@rx ^application/(?:[a-z0-9.-]+\+)?json" "id:200001,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
SecRule REQBODY_ERROR "!@eq 0" "id:200002,phase:2,t:none,log,deny,status:403,msg:'Failed to parse request body'"
SecRule MULTIPART_STRICT_ERROR "!@eq 0" "id:200003,phase:2,t:none,log,deny,status:403,msg:'Multipart request body failed strict validation'"
SecRule MULTIPART_UNMATCHED_BOUNDARY "@eq 1" "id:200004,phase:2,t:none,log,deny,status:403,msg:'Multipart parser detected a possible unmatched boundary'"
SecRule TX:/^MSC_/ "!@streq 0" "id:200005,phase:2,t:none,log,deny,status:403,msg:'ModSecurity internal error flagged'"
SecAction "id:900000,phase:1,nolog,pass,t:none,setvar:tx.paranoia_level={pl}"
SecAction "id:900110,phase:1,nolog,pass,t:none,setvar:tx.inbound_anomaly_score_threshold={inbound},setvar:tx.outbound_anomaly_score_threshold={outbound}"
SecAction "id:900200,phase:1,nolog,pass,t:none,setvar:'tx.allowed_methods={methods}'"
SecAction "id:900990,phase:1,nolog,pass,t:none,setvar:tx.crs_setup_version=334"
"#,
        pl = cfg.paranoia_level,
        inbound = cfg.inbound_anomaly_threshold,
        outbound = cfg.outbound_anomaly_threshold,
        methods = cfg.allowed_methods.join(" "),
        response = response_setup(cfg),
    )
}

/// The response half of the engine setup: off, or body access for the text-like types.
fn response_setup(cfg: &CrsConfig) -> String {
    if !cfg.inspect_response {
        return "SecResponseBodyAccess Off".to_string();
    }
    format!(
        "SecResponseBodyAccess On\nSecResponseBodyMimeType {}\nSecResponseBodyLimit {}\nSecResponseBodyLimitAction ProcessPartial",
        RESPONSE_BODY_MIME_TYPES.join(" "),
        cfg.response_body_limit.max(1)
    )
}

fn check_settings(cfg: &CrsConfig) -> Result<(), WafError> {
    if !(1..=4).contains(&cfg.paranoia_level) {
        return Err(WafError::Setting(
            "paranoia_level must be between 1 and 4".into(),
        ));
    }
    if cfg.inbound_anomaly_threshold == 0 || cfg.outbound_anomaly_threshold == 0 {
        return Err(WafError::Setting(
            "anomaly thresholds must be at least 1".into(),
        ));
    }
    for m in &cfg.allowed_methods {
        if m.is_empty()
            || !m
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(WafError::Setting(format!("invalid method name {m:?}")));
        }
    }
    Ok(())
}

/// SecLang directives a custom rule may use: rules and exclusions. Everything that configures
/// the engine, writes files or fetches over the network is refused.
const ALLOWED_DIRECTIVES: &[&str] = &[
    "SecRule",
    "SecAction",
    "SecMarker",
    "SecRuleRemoveById",
    "SecRuleRemoveByTag",
    "SecRuleRemoveByMsg",
    "SecRuleUpdateTargetById",
    "SecRuleUpdateTargetByTag",
    "SecRuleUpdateTargetByMsg",
    "SecRuleUpdateActionById",
];

/// Operators and actions refused in custom rules: they run programs or scripts
/// (`@inspectFile`, `exec:`) or read data from the network.
const FORBIDDEN_FRAGMENTS: &[(&str, &str)] = &[
    (
        "@inspectfile",
        "the @inspectFile operator runs external programs",
    ),
    ("exec:", "the exec action runs scripts"),
    ("fromfile http:", "rules may not load data over the network"),
    (
        "fromfile https:",
        "rules may not load data over the network",
    ),
];

/// Checks a custom rule against the gateway's policy, without parsing it.
fn check_policy(text: &str) -> Result<(), WafError> {
    // Join continuation lines, then look at the first word of each directive.
    let joined = text.replace("\\\r\n", " ").replace("\\\n", " ");
    let mut directives = 0;
    for line in joined.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        directives += 1;
        let word = line.split_whitespace().next().unwrap_or_default();
        if !ALLOWED_DIRECTIVES
            .iter()
            .any(|d| d.eq_ignore_ascii_case(word))
        {
            return Err(WafError::Forbidden(format!(
                "directive '{word}' is not allowed in custom rules (allowed: {})",
                ALLOWED_DIRECTIVES.join(", ")
            )));
        }
    }
    if directives == 0 {
        return Err(WafError::Rule("no directive in rule text".into()));
    }
    let lower = joined.to_ascii_lowercase();
    let squeezed: String = lower
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '\'' && *c != '"')
        .collect();
    for (frag, why) in FORBIDDEN_FRAGMENTS {
        let frag_squeezed: String = frag.chars().filter(|c| !c.is_whitespace()).collect();
        if lower.contains(frag) || squeezed.contains(&frag_squeezed) {
            return Err(WafError::Forbidden(format!(
                "not allowed in custom rules: {why}"
            )));
        }
    }
    for id in rule_ids_declared(&lower) {
        if SETUP_RULE_IDS.contains(&id) {
            return Err(WafError::Forbidden(format!(
                "rule id {id} is reserved for the gateway's engine setup"
            )));
        }
    }
    Ok(())
}

/// Ids declared with `id:N` (or `id:'N'`) in lower-case rule text.
fn rule_ids_declared(squeezed: &str) -> Vec<u32> {
    let mut ids = Vec::new();
    let mut rest = squeezed;
    while let Some(i) = rest.find("id:") {
        let before_ok = i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric();
        rest = &rest[i + 3..];
        let digits: String = rest
            .trim_start_matches(|c: char| c == '\'' || c == '"' || c.is_whitespace())
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        if before_ok {
            if let Ok(n) = digits.parse() {
                ids.push(n);
            }
        }
    }
    ids
}

/// True when rule text may write a persistent collection (anything but `tx.` through
/// `setvar`, or any `expirevar`/`deprecatevar`/`initcol`/`setsid`/`setuid`).
fn writes_persistent_collections(text: &str) -> bool {
    let squeezed: String = text
        .to_ascii_lowercase()
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '\'' && *c != '"')
        .collect();
    if [
        "expirevar:",
        "deprecatevar:",
        "initcol:",
        "setsid:",
        "setuid:",
    ]
    .iter()
    .any(|a| squeezed.contains(a))
    {
        return true;
    }
    squeezed.match_indices("setvar:").any(|(i, _)| {
        let target = squeezed[i + "setvar:".len()..].trim_start_matches('!');
        !target.starts_with("tx.")
    })
}

/// Checks one custom rule: the gateway's policy (allowed directives, no external programs or
/// network), then the SecLang parser on its own. Does not load the CRS, so it is cheap and
/// its error names this rule alone.
pub fn check_custom_rule(text: &str) -> Result<(), WafError> {
    check_policy(text)?;
    let mut set = ffi::RuleSet::new().map_err(WafError::Engine)?;
    set.add(text)
        .map(|_| ())
        .map_err(|e| WafError::Rule(clean_parser_error(&e)))
}

/// libmodsecurity's parser errors start with the (meaningless) "file" name of inline text.
fn clean_parser_error(e: &str) -> String {
    e.trim().replace(
        "Rules error. File: <<reference missing or not informed>>. ",
        "",
    )
}

impl Rules {
    /// Compiles the OWASP CRS from `cfg.crs_dir` with the given settings, custom rules and
    /// exclusions. This is the expensive step (hundreds of rules, regexes and data files):
    /// do it once per config load and share the result.
    pub fn from_crs(cfg: &CrsConfig) -> Result<Rules, WafError> {
        check_settings(cfg)?;
        for rule in &cfg.custom_rules {
            check_policy(rule)?;
        }
        let files = crs_files(&cfg.crs_dir)?;
        check_ids(&cfg.custom_rules, &files)?;
        let mut set = ffi::RuleSet::new().map_err(WafError::Engine)?;
        let mut count = 0;
        count += set.add(&setup(cfg)).map_err(WafError::Engine)?;
        for rule in &cfg.custom_rules {
            count += set
                .add(rule)
                .map_err(|e| WafError::Rule(clean_parser_error(&e)))?;
        }
        for f in &files {
            let path = f.to_string_lossy();
            count += set
                .add_file(&path)
                .map_err(|e| WafError::Engine(format!("loading {path}: {}", e.trim())))?;
        }
        if !cfg.exclude_rules.is_empty() {
            let ids: Vec<String> = cfg.exclude_rules.iter().map(|i| i.to_string()).collect();
            set.add(&format!("SecRuleRemoveById {}\n", ids.join(" ")))
                .map_err(|e| WafError::Rule(clean_parser_error(&e)))?;
        }
        let serial = cfg
            .custom_rules
            .iter()
            .any(|r| writes_persistent_collections(r))
            .then(|| Mutex::new(()));
        // The CRS with this crate's setup is deterministic: its stateful parts (IP reputation
        // blocking, DoS protection, sampling) stay off unless custom rules switch them on.
        let deterministic = !cfg.custom_rules.iter().any(|r| cache::nondeterministic(r));
        Ok(Rules {
            set,
            serial,
            body_limit: cfg.body_limit,
            response_body_limit: cfg.inspect_response.then(|| cfg.response_body_limit.max(1)),
            rule_count: count,
            cache: (deterministic && cfg.verdict_cache_size > 0)
                .then(|| cache::VerdictCache::new(cfg.verdict_cache_size)),
        })
    }

    /// Compiles plain SecLang (no CRS) on top of the engine setup of `cfg` (body processors,
    /// limits). `cfg.custom_rules` and `cfg.crs_dir` are ignored; `text` is trusted (no
    /// policy check). Meant for tests and tools.
    pub fn from_seclang(cfg: &CrsConfig, text: &str) -> Result<Rules, WafError> {
        check_settings(cfg)?;
        let mut set = ffi::RuleSet::new().map_err(WafError::Engine)?;
        let mut count = set.add(&setup(cfg)).map_err(WafError::Engine)?;
        count += set
            .add(text)
            .map_err(|e| WafError::Rule(clean_parser_error(&e)))?;
        Ok(Rules {
            serial: writes_persistent_collections(text).then(|| Mutex::new(())),
            set,
            body_limit: cfg.body_limit,
            response_body_limit: cfg.inspect_response.then(|| cfg.response_body_limit.max(1)),
            rule_count: count,
            cache: (!cache::nondeterministic(text) && cfg.verdict_cache_size > 0)
                .then(|| cache::VerdictCache::new(cfg.verdict_cache_size)),
        })
    }

    /// Number of rules and directives loaded.
    pub fn rule_count(&self) -> usize {
        self.rule_count
    }

    /// Largest number of body bytes [`Rules::inspect`] looks at.
    pub fn body_limit(&self) -> usize {
        self.body_limit
    }

    /// Whether verdicts are cached: a cache size above 0 and no custom rule that could make a
    /// verdict depend on more than the request's own bytes (persistent collections, time,
    /// randomness, the client port, the CRS's stateful features).
    pub fn caches_verdicts(&self) -> bool {
        self.cache.is_some()
    }

    /// Number of verdicts currently cached (for tests and diagnostics; takes every slot lock).
    pub fn cached_verdicts(&self) -> usize {
        self.cache.as_ref().map_or(0, cache::VerdictCache::len)
    }

    /// The cache key of `req`, when this rule set caches verdicts and the request is small
    /// enough (at most [`MAX_KEY_BYTES`] of inputs) to be cached.
    pub fn cache_key(&self, req: &Request<'_>) -> Option<Vec<u8>> {
        self.cache.as_ref()?;
        cache::key(req, self.body_limit)
    }

    /// The verdict given before to the request with this key, if it is still cached. Cheap
    /// (a hash, one uncontended lock and a key comparison): fine on an async reactor.
    pub fn cached(&self, key: &[u8]) -> Option<Verdict> {
        self.cache.as_ref()?.get(key)
    }

    /// [`Rules::inspect`], answering from the verdict cache when `key` (from
    /// [`Rules::cache_key`] for this same request) was seen before, and caching the result
    /// otherwise.
    pub fn inspect_cached(
        &self,
        req: &Request<'_>,
        key: Option<&[u8]>,
    ) -> Result<Verdict, WafError> {
        if let (Some(cache), Some(key)) = (&self.cache, key) {
            if let Some(v) = cache.get(key) {
                return Ok(v);
            }
            let v = self.inspect(req)?;
            cache.put(key, &v);
            return Ok(v);
        }
        self.inspect(req)
    }

    /// A fresh transaction that has seen the connection and the request line (phase 1 not yet
    /// run), with the lock that serialises rule sets writing persistent collections.
    fn begin(
        &self,
        req: &Request<'_>,
    ) -> Result<(Option<std::sync::MutexGuard<'_, ()>>, ffi::Transaction<'_>), WafError> {
        let guard = self
            .serial
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()));
        let mut tx = self.set.transaction().map_err(WafError::Engine)?;
        tx.connection(
            &req.client_ip.to_string(),
            req.client_port,
            &req.server_ip.to_string(),
            req.server_port,
        )
        .map_err(WafError::Engine)?;
        tx.uri(req.uri, req.method, req.version)
            .map_err(WafError::Engine)?;
        Ok((guard, tx))
    }

    /// Runs one request through a fresh transaction: connection, URI, headers, then (if
    /// given and no earlier phase already blocked) the first `body_limit` bytes of the body,
    /// then the logging phase. Blocking work (regexes over the whole request): call it from a
    /// thread that may block.
    pub fn inspect(&self, req: &Request<'_>) -> Result<Verdict, WafError> {
        // The transaction (bound last) is freed before the lock is released.
        let (_guard, mut tx) = self.begin(req)?;
        let mut hit = tx.intervention();
        if hit.is_none() {
            for (name, value) in &req.headers {
                tx.header(name, value);
            }
            tx.process_headers();
            hit = tx.intervention();
        }
        if hit.is_none() {
            if let Some(body) = req.body {
                let body = &body[..body.len().min(self.body_limit)];
                if !body.is_empty() {
                    tx.body(body);
                }
            }
            // Phase 2 runs even without a body: the CRS blocking evaluation (949110) and
            // most argument checks are phase-2 rules.
            tx.process_body();
            hit = tx.intervention();
        }
        tx.process_logging();
        Ok(verdict_of(&tx, hit, 949110))
    }
}

impl Rules {
    /// Was this rule set built for response inspection ([`CrsConfig::inspect_response`])?
    pub fn inspects_responses(&self) -> bool {
        self.response_body_limit.is_some()
    }

    /// Largest number of response body bytes [`Rules::inspect_response`] looks at (0 when the
    /// rule set was built without response inspection).
    pub fn response_body_limit(&self) -> usize {
        self.response_body_limit.unwrap_or(0)
    }

    /// Runs an upstream response through the response rules (data leakages, the outbound
    /// blocking evaluation 959100), in a fresh transaction that first replays `req`'s phase 1
    /// — connection, URI and headers, *not* its body — so the CRS initialisation (REQUEST-901:
    /// paranoia level, thresholds, runtime exclusions written as phase-1 rules) is in place.
    /// The replay's own matches and any request-side intervention are discarded: the request
    /// was judged by [`Rules::inspect`]. Then the response headers (phase 3) and, for
    /// [`RESPONSE_BODY_MIME_TYPES`], the first `response_body_limit` bytes of `resp.body`
    /// (phase 4), then the logging phase. The verdict lists only the response-side rules.
    ///
    /// Fails with [`WafError::Setting`] when the rule set was not built with
    /// [`CrsConfig::inspect_response`]. Blocking work: call it from a thread that may block.
    pub fn inspect_response(
        &self,
        req: &Request<'_>,
        resp: &Response<'_>,
    ) -> Result<Verdict, WafError> {
        let Some(limit) = self.response_body_limit else {
            return Err(WafError::Setting(
                "this rule set was built without response inspection".into(),
            ));
        };
        // The transaction (bound last) is freed before the lock is released.
        let (_guard, mut tx) = self.begin(req)?;
        for (name, value) in &req.headers {
            tx.header(name, value);
        }
        tx.process_headers();
        // Already judged on the request side: read (which resets it) and forget.
        drop(tx.intervention());
        tx.clear_matches();

        for (name, value) in &resp.headers {
            tx.response_header(name, value);
        }
        tx.process_response_headers(resp.status, &format!("HTTP/{}", resp.version))
            .map_err(WafError::Engine)?;
        let mut hit = tx.intervention();
        if hit.is_none() {
            let content_type = resp
                .headers
                .iter()
                .rev()
                .find(|(n, _)| n.eq_ignore_ascii_case(b"content-type"))
                .map(|(_, v)| *v);
            if let Some(body) = resp
                .body
                .filter(|_| content_type.is_some_and(response_body_inspected))
            {
                let body = &body[..body.len().min(limit)];
                if !body.is_empty() {
                    tx.response_body(body);
                }
            }
            // Phase 4 runs even without body bytes (a compressed body is not fed): the
            // outbound blocking evaluation (959100) is a phase-4 rule. libmodsecurity itself
            // skips phase 4 for types outside `SecResponseBodyMimeType`.
            tx.process_response_body();
            hit = tx.intervention();
        }
        tx.process_logging();
        Ok(verdict_of(&tx, hit, 959100))
    }
}

/// libmodsecurity 3.0.9 finds duplicate rule ids only within one parse; custom rules are
/// parsed separately from the CRS, so their ids are checked here.
fn check_ids(custom: &[String], crs: &[PathBuf]) -> Result<(), WafError> {
    let mut seen = std::collections::HashSet::new();
    for rule in custom {
        for id in rule_ids_declared(&rule.to_ascii_lowercase()) {
            if !seen.insert(id) {
                return Err(WafError::Rule(format!(
                    "rule id {id} is declared twice in custom rules"
                )));
            }
        }
    }
    if seen.is_empty() {
        return Ok(());
    }
    for f in crs {
        let text = std::fs::read_to_string(f)
            .map_err(|e| WafError::Engine(format!("reading {}: {e}", f.display())))?;
        for id in rule_ids_declared(&text.to_ascii_lowercase()) {
            if seen.contains(&id) {
                return Err(WafError::Rule(format!(
                    "rule id {id} is already used by the Core Rule Set ({})",
                    f.file_name().unwrap_or_default().to_string_lossy()
                )));
            }
        }
    }
    Ok(())
}

/// The verdict of a finished transaction: the intervention (if any), and the ids of every rule
/// that matched; the anomaly score comes from `evaluation_rule` (the CRS blocking evaluation,
/// 949110 inbound or 959100 outbound).
fn verdict_of(
    tx: &ffi::Transaction<'_>,
    hit: Option<ffi::Intervention>,
    evaluation_rule: u32,
) -> Verdict {
    let mut verdict = Verdict {
        blocked: hit.is_some(),
        status: hit.as_ref().map_or(200, |h| h.status),
        ..Verdict::default()
    };
    // Scoring rules report through the log callback; the disruptive rule's message comes with
    // the intervention.
    let disruptive = hit.and_then(|h| h.log);
    for line in tx.matches().lines.iter().chain(disruptive.iter()) {
        if let Some(id) = field(line, "id").and_then(|v| v.parse::<u32>().ok()) {
            if !verdict.rule_ids.contains(&id) {
                verdict.rule_ids.push(id);
            }
            if id == evaluation_rule {
                verdict.anomaly_score = field(line, "msg").and_then(total_score);
            }
        }
    }
    verdict
}

/// The value of `[name "value"]` in a ModSecurity log line.
fn field<'l>(line: &'l str, name: &str) -> Option<&'l str> {
    let start = line.find(&format!("[{name} \""))? + name.len() + 3;
    let len = line[start..].find("\"]")?;
    Some(&line[start..start + len])
}

/// `Inbound Anomaly Score Exceeded (Total Score: 10)` → 10.
fn total_score(msg: &str) -> Option<u32> {
    let start = msg.find("Total Score: ")? + "Total Score: ".len();
    let digits: String = msg[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// The CRS rule files in load order (their names sort in the order the CRS requires).
fn crs_files(dir: &Path) -> Result<Vec<PathBuf>, WafError> {
    let missing = || WafError::CrsMissing(dir.to_path_buf());
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|_| missing())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    files.sort();
    let has_init = files.iter().any(|f| {
        f.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("REQUEST-901-"))
    });
    if !has_init {
        return Err(missing());
    }
    Ok(files)
}

#[cfg(test)]
mod tests;
