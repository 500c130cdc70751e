//! `bot-detection`: refuse requests whose `User-Agent` matches a deny regex or the built-in list
//! of scanners and abusive bots, unless an allow regex matches first.
//!
//! Kong semantics: the User-Agent (trimmed) is checked against `allow` (wins), then `deny`, then
//! the built-in list; a match of either of the last two answers 403 `{"message":"Forbidden"}`.
//! Requests without a User-Agent pass; more than one User-Agent header is a 400. Regexes are
//! unanchored searches, case-sensitive unless they say `(?i)`.

use http::StatusCode;
use portcullis_config::{Errors, Obj};
use regex::{Regex, RegexSet, RegexSetBuilder};
use serde_json::Value;

use crate::{Access, Ctx, Flow, Plugin, Response};

/// Scanners, exploit kits and brute-forcers seen in the wild, matched case-insensitively at
/// the start of a word anywhere in the User-Agent.
const BUILTIN: &[&str] = &[
    "sqlmap",
    "nikto",
    "nmap",
    "masscan",
    "zgrab",
    "nuclei",
    "dirbuster",
    "dirb/",
    "gobuster",
    "feroxbuster",
    "wpscan",
    "joomscan",
    "droopescan",
    "acunetix",
    "netsparker",
    "w3af",
    "arachni",
    "skipfish",
    "openvas",
    "nessus",
    "havij",
    "commix",
    "jaeles",
    "ffuf",
    "fuzz faster u fool",
    "wfuzz",
    "xsser",
    "fimap",
    "zmeu",
    "morfeus",
    "sqlninja",
    "bsqlbf",
    "webinspect",
    "appscan",
    "httprint",
    "metasploit",
    "jorgee",
    "blackwidow",
    "interactsh",
];

/// The built-in list as one regex (compiled per config load).
fn builtin_regex() -> Option<Regex> {
    let alternatives: Vec<String> = BUILTIN.iter().map(|s| regex::escape(s)).collect();
    Regex::new(&format!(r"(?i)\b(?:{})", alternatives.join("|"))).ok()
}

/// A compiled `bot-detection` instance.
#[derive(Debug)]
pub struct BotDetection {
    allow: RegexSet,
    deny: RegexSet,
    builtin: Regex,
}

/// What a User-Agent matched.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Verdict {
    /// Matched nothing.
    Unknown,
    /// Matched an allow regex.
    Allowed,
    /// Matched a deny regex.
    Denied,
    /// Matched the built-in list.
    Bot,
}

fn regex_list(o: &mut Obj<'_>, key: &str, errs: &mut Errors) -> Option<RegexSet> {
    let list = o.array(key, errs, |v, path, errs| match v {
        Value::String(s) => match Regex::new(s) {
            Ok(_) => Some(s.clone()),
            Err(_) => {
                errs.push(path, format!("not a valid regex: {s}"));
                None
            }
        },
        _ => {
            errs.push(path, "expected a string");
            None
        }
    });
    RegexSetBuilder::new(list).build().ok()
}

impl BotDetection {
    /// Validates the config and compiles the regexes.
    pub fn build(config: &Value, path: &str, errs: &mut Errors) -> Option<BotDetection> {
        let before = errs.len();
        let mut o = Obj::open(config, path, errs)?;
        let allow = regex_list(&mut o, "allow", errs);
        let deny = regex_list(&mut o, "deny", errs);
        o.finish(errs);
        if errs.len() > before {
            return None;
        }
        Some(BotDetection {
            allow: allow?,
            deny: deny?,
            builtin: builtin_regex()?,
        })
    }

    /// Classifies a User-Agent.
    pub fn examine(&self, user_agent: &str) -> Verdict {
        let ua = user_agent.trim();
        if self.allow.is_match(ua) {
            Verdict::Allowed
        } else if self.deny.is_match(ua) {
            Verdict::Denied
        } else if self.builtin.is_match(ua) {
            Verdict::Bot
        } else {
            Verdict::Unknown
        }
    }
}

impl Plugin for BotDetection {
    fn name(&self) -> &'static str {
        "bot-detection"
    }

    fn response_header_names(&self) -> Option<Vec<http::HeaderName>> {
        // No response phase.
        Some(Vec::new())
    }

    fn access<'a>(&'a self, ctx: &'a mut Ctx) -> Access<'a> {
        let mut values = ctx.headers.get_all(http::header::USER_AGENT).iter();
        let Some(first) = values.next() else {
            return Access::Now(Flow::Continue);
        };
        if values.next().is_some() {
            return Access::Now(Flow::Respond(Response::message(
                StatusCode::BAD_REQUEST,
                "Only one User-Agent header allowed",
            )));
        }
        let ua = String::from_utf8_lossy(first.as_bytes());
        match self.examine(&ua) {
            Verdict::Denied | Verdict::Bot => Access::Now(Flow::Respond(Response::message(
                StatusCode::FORBIDDEN,
                "Forbidden",
            ))),
            Verdict::Allowed | Verdict::Unknown => Access::Now(Flow::Continue),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn build(v: Value) -> Result<BotDetection, Vec<String>> {
        let mut e = Errors::default();
        BotDetection::build(&v, "plugins[0].config", &mut e)
            .ok_or_else(|| e.into_vec().iter().map(ToString::to_string).collect())
    }

    #[test]
    fn builtin_list_catches_scanners_not_browsers() {
        let p = build(json!({})).unwrap();
        for ua in [
            "sqlmap/1.7.2#stable (https://sqlmap.org)",
            "Mozilla/5.00 (Nikto/2.1.6) (Evasions:None) (Test:000003)",
            "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)",
            "masscan/1.3 (https://github.com/robertdavidgraham/masscan)",
            "Mozilla/5.0 zgrab/0.x",
            "Nuclei - Open-source project (github.com/projectdiscovery/nuclei)",
            "DirBuster-1.0-RC1 (http://www.owasp.org/index.php/Category:OWASP_DirBuster_Project)",
            "gobuster/3.6",
            "WPScan v3.8.22 (https://wpscan.com/wordpress-security-scanner)",
            "acunetix_wvs_security_test",
            "Fuzz Faster U Fool v2.1.0-dev",
            "  sqlmap/1.0  ",
        ] {
            assert_eq!(p.examine(ua), Verdict::Bot, "{ua}");
        }
        for ua in [
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
            "curl/8.5.0",
            "python-requests/2.31.0",
            "",
        ] {
            assert_eq!(p.examine(ua), Verdict::Unknown, "{ua}");
        }
    }

    #[test]
    fn allow_beats_deny_and_builtin() {
        let p = build(
            json!({"allow": ["^sqlmap/1\\.7", "InternalScanner"], "deny": ["BadBot", "(?i)evil"]}),
        )
        .unwrap();
        assert_eq!(p.examine("sqlmap/1.7.2"), Verdict::Allowed);
        assert_eq!(p.examine("sqlmap/1.6"), Verdict::Bot);
        assert_eq!(p.examine("BadBot/1.0 InternalScanner"), Verdict::Allowed);
        assert_eq!(p.examine("BadBot/1.0"), Verdict::Denied);
        assert_eq!(p.examine("badbot/1.0"), Verdict::Unknown);
        assert_eq!(p.examine("an EVIL agent"), Verdict::Denied);
    }

    #[test]
    fn invalid_regex_is_refused_with_its_path() {
        let e = build(json!({"deny": ["ok", "(unclosed"], "allow": ["(?<=x)y"], "zz": true}))
            .unwrap_err();
        assert!(e.contains(&"plugins[0].config.deny[1]: not a valid regex: (unclosed".to_string()));
        assert!(e.contains(&"plugins[0].config.allow[0]: not a valid regex: (?<=x)y".to_string()));
        assert!(e.contains(&"plugins[0].config.zz: unknown field".to_string()));
    }
}
