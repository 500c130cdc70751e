//! Tests against the real libmodsecurity and the real CRS files. They fail (never skip) when
//! either is missing: install `libmodsecurity-dev` and `modsecurity-crs`.

#![allow(clippy::unwrap_used)]

use std::sync::OnceLock;

use super::*;

fn crs() -> &'static Rules {
    static R: OnceLock<Rules> = OnceLock::new();
    R.get_or_init(|| {
        Rules::from_crs(&CrsConfig::default()).unwrap_or_else(|e| {
            panic!("the OWASP CRS must be installed for these tests (modsecurity-crs): {e}")
        })
    })
}

fn browserish<'a>(method: &'a str, uri: &'a str) -> Request<'a> {
    Request::new(method, uri)
        .header("Host", "api.example.com")
        .header(
            "User-Agent",
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0",
        )
        .header("Accept", "application/json")
}

fn blocked(r: &Rules, req: &Request<'_>) -> Verdict {
    let v = r.inspect(req).unwrap();
    assert!(v.blocked, "expected a block for {req:?}, got {v:?}");
    assert_eq!(v.status, 403);
    assert!(v.rule_ids.contains(&949110), "{v:?}");
    v
}

fn passed(r: &Rules, req: &Request<'_>) -> Verdict {
    let v = r.inspect(req).unwrap();
    assert!(!v.blocked, "expected a pass for {req:?}, got {v:?}");
    v
}

#[test]
fn library_and_crs_are_present() {
    let v = version().unwrap();
    assert!(v.contains("ModSecurity v3."), "{v}");
    assert!(
        crs().rule_count() > 300,
        "CRS loaded {} rules",
        crs().rule_count()
    );
}

#[test]
fn sql_injection_in_query_is_blocked() {
    let v = blocked(crs(), &browserish("GET", "/items?id=1'%20OR%20'1'='1"));
    assert!(
        v.rule_ids.iter().any(|id| (942000..943000).contains(id)),
        "{v:?}"
    );
    assert!(v.anomaly_score.is_some_and(|s| s >= 5), "{v:?}");
}

#[test]
fn xss_in_query_is_blocked() {
    let v = blocked(
        crs(),
        &browserish("GET", "/search?q=%3Cscript%3Ealert(1)%3C/script%3E"),
    );
    assert!(
        v.rule_ids.iter().any(|id| (941000..942000).contains(id)),
        "{v:?}"
    );
}

#[test]
fn path_traversal_is_blocked() {
    let v = blocked(crs(), &browserish("GET", "/files/../../etc/passwd"));
    assert!(
        v.rule_ids.iter().any(|id| (930000..931000).contains(id)),
        "{v:?}"
    );
    let v = blocked(crs(), &browserish("GET", "/download?file=../../etc/passwd"));
    assert!(
        v.rule_ids.iter().any(|id| (930000..931000).contains(id)),
        "{v:?}"
    );
}

#[test]
fn command_injection_is_blocked() {
    let v = blocked(
        crs(),
        &browserish("GET", "/ping?host=127.0.0.1;cat%20/etc/passwd"),
    );
    assert!(
        v.rule_ids.iter().any(|id| (932000..933000).contains(id)),
        "{v:?}"
    );
}

#[test]
fn json_body_sqli_is_blocked() {
    let body = br#"{"user": {"name": "x' UNION SELECT password FROM users --"}}"#;
    let v = blocked(
        crs(),
        &browserish("POST", "/login")
            .header("Content-Type", "application/json")
            .body(body),
    );
    assert!(
        v.rule_ids.iter().any(|id| (942000..943000).contains(id)),
        "{v:?}"
    );
}

#[test]
fn form_body_xss_is_blocked() {
    let body = b"comment=%3Cscript%3Ealert(document.cookie)%3C%2Fscript%3E&x=1";
    let v = blocked(
        crs(),
        &browserish("POST", "/comments")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body),
    );
    assert!(
        v.rule_ids.iter().any(|id| (941000..942000).contains(id)),
        "{v:?}"
    );
}

#[test]
fn malformed_json_body_is_blocked() {
    // A JSON body the parser rejects would otherwise hide its content from the rules.
    let v = crs()
        .inspect(
            &browserish("POST", "/api")
                .header("Content-Type", "application/json")
                .body(b"{\"a\": "),
        )
        .unwrap();
    assert!(v.blocked, "{v:?}");
    assert!(v.rule_ids.contains(&200002), "{v:?}");
}

#[test]
fn benign_requests_pass() {
    for req in [
        browserish("GET", "/"),
        browserish("GET", "/items?id=42&sort=name&q=hello%20world"),
        browserish("DELETE", "/items/42"),
        browserish("PUT", "/items/42")
            .header("Content-Type", "application/json")
            .body(br#"{"name": "O'Brien's shop", "tags": ["a", "b"], "price": 9.5}"#),
        browserish("POST", "/form")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(b"name=Alice&city=Paris&note=see+you+at+5"),
        browserish("PATCH", "/items/42")
            .header("Content-Type", "application/json; charset=utf-8")
            .body(br#"{"name": "new"}"#),
    ] {
        let v = passed(crs(), &req);
        assert!(
            !v.rule_ids.iter().any(|id| (930000..945000).contains(id)),
            "attack rule matched a benign request {req:?}: {v:?}"
        );
    }
}

#[test]
fn body_is_inspected_only_up_to_the_limit() {
    let cfg = CrsConfig {
        body_limit: 64,
        ..CrsConfig::default()
    };
    let rules = Rules::from_crs(&cfg).unwrap();
    let mut body = "a=".to_string();
    body.push_str(&"x".repeat(100));
    body.push_str("&b=%3Cscript%3Ealert(1)%3C%2Fscript%3E");
    let req = browserish("POST", "/")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body.as_bytes());
    assert!(!rules.inspect(&req).unwrap().blocked);
    blocked(crs(), &req);
}

#[test]
fn exclusions_remove_rules() {
    let attack = browserish("GET", "/search?q=%3Cscript%3Ealert(1)%3C/script%3E");
    let v = blocked(crs(), &attack);
    // Remove every XSS rule that matched: the request is no longer blocked.
    let xss: Vec<u32> = v
        .rule_ids
        .iter()
        .copied()
        .filter(|id| (941000..942000).contains(id))
        .collect();
    assert!(!xss.is_empty());
    let rules = Rules::from_crs(&CrsConfig {
        exclude_rules: xss.clone(),
        ..CrsConfig::default()
    })
    .unwrap();
    let v = rules.inspect(&attack).unwrap();
    assert!(!xss.iter().any(|id| v.rule_ids.contains(id)), "{v:?}");
    assert!(!v.blocked, "{v:?}");
}

#[test]
fn custom_rules_block_and_can_tune_the_crs() {
    let rules = Rules::from_crs(&CrsConfig {
        custom_rules: vec![
            r#"SecRule REQUEST_HEADERS:X-Internal "@streq yes" "id:10001,phase:1,deny,status:403,log,msg:'internal header from outside'""#
                .to_string(),
            // Runs before the CRS: relaxes the content types the CRS allows.
            "SecAction \"id:10002,phase:1,nolog,pass,setvar:'tx.allowed_request_content_type=|application/json| |text/plain|'\""
                .to_string(),
        ],
        ..CrsConfig::default()
    })
    .unwrap();
    let v = rules
        .inspect(&browserish("GET", "/").header("X-Internal", "yes"))
        .unwrap();
    assert!(v.blocked);
    assert_eq!(v.rule_ids, vec![10001]);
    passed(&rules, &browserish("GET", "/").header("X-Internal", "no"));

    let plain = browserish("POST", "/")
        .header("Content-Type", "text/plain")
        .body(b"hello");
    let v = crs().inspect(&plain).unwrap();
    assert!(
        v.rule_ids.contains(&920420),
        "CRS default refuses text/plain: {v:?}"
    );
    let v = rules.inspect(&plain).unwrap();
    assert!(!v.rule_ids.contains(&920420), "{v:?}");
}

#[test]
fn paranoia_level_changes_what_matches() {
    // 920300 (request missing an Accept header) is a paranoia-level-2 rule.
    let req = Request::new("GET", "/")
        .header("Host", "api.example.com")
        .header("User-Agent", "curl/8.0");
    let v = passed(crs(), &req);
    assert!(!v.rule_ids.contains(&920300), "{v:?}");
    let pl2 = Rules::from_crs(&CrsConfig {
        paranoia_level: 2,
        ..CrsConfig::default()
    })
    .unwrap();
    let v = pl2.inspect(&req).unwrap();
    assert!(v.rule_ids.contains(&920300), "{v:?}");
}

#[test]
fn thresholds_decide_blocking() {
    // A lone PL1 warning (numeric Host: 920350, 3 points) passes at 5, blocks at 3.
    let req = Request::new("GET", "/")
        .header("Host", "10.0.0.1")
        .header("User-Agent", "curl/8.0")
        .header("Accept", "*/*");
    let v = passed(crs(), &req);
    assert!(v.rule_ids.contains(&920350), "{v:?}");
    let strict = Rules::from_crs(&CrsConfig {
        inbound_anomaly_threshold: 3,
        ..CrsConfig::default()
    })
    .unwrap();
    let v = strict.inspect(&req).unwrap();
    assert!(v.blocked, "{v:?}");
    assert_eq!(v.anomaly_score, Some(3));
}

#[test]
fn custom_rule_policy_and_syntax() {
    assert!(check_custom_rule(r#"SecRule ARGS:x "@streq 1" "id:10010,phase:2,deny,log""#).is_ok());
    let e = check_custom_rule(r#"SecRule ARGS "@rx x" "id:10011,phase:2,denyy""#).unwrap_err();
    assert!(matches!(e, WafError::Rule(_)), "{e:?}");
    let e = check_custom_rule("SecRulee ARGS foo").unwrap_err();
    assert!(matches!(e, WafError::Forbidden(_)), "{e:?}");
    for bad in [
        "SecRuleEngine Off",
        "Include /etc/shadow",
        "SecAuditLog /tmp/x",
        r#"SecRule FILES_TMPNAMES "@inspectFile /bin/sh" "id:10012,phase:2,deny""#,
        r#"SecAction "id:10013,phase:1,pass,exec:/tmp/x.lua""#,
        r#"SecRule ARGS "@pmFromFile https://example.com/list" "id:10014,phase:2,deny""#,
        r#"SecAction "id:900000,phase:1,pass" "#,
    ] {
        let e = check_custom_rule(bad);
        assert!(e.is_err(), "{bad} accepted");
    }
    // A duplicate CRS id is found when the whole set is compiled.
    let e = Rules::from_crs(&CrsConfig {
        custom_rules: vec![r#"SecAction "id:942100,phase:1,pass,nolog""#.to_string()],
        ..CrsConfig::default()
    })
    .unwrap_err();
    assert!(
        matches!(e, WafError::Rule(_) | WafError::Engine(_)),
        "{e:?}"
    );
}

#[test]
fn settings_are_checked() {
    for cfg in [
        CrsConfig {
            paranoia_level: 0,
            ..CrsConfig::default()
        },
        CrsConfig {
            paranoia_level: 5,
            ..CrsConfig::default()
        },
        CrsConfig {
            inbound_anomaly_threshold: 0,
            ..CrsConfig::default()
        },
        CrsConfig {
            allowed_methods: vec!["GET POST".into()],
            ..CrsConfig::default()
        },
    ] {
        assert!(matches!(Rules::from_crs(&cfg), Err(WafError::Setting(_))));
    }
    let e = Rules::from_crs(&CrsConfig {
        crs_dir: "/nonexistent/crs".into(),
        ..CrsConfig::default()
    })
    .unwrap_err();
    assert!(matches!(e, WafError::CrsMissing(_)), "{e:?}");
}

#[test]
fn persistent_collection_writers_are_detected() {
    assert!(!writes_persistent_collections(
        "SecAction \"id:1,pass,setvar:tx.a=1,setvar:'tx.b=2'\""
    ));
    assert!(writes_persistent_collections(
        "SecAction \"id:1,pass,setvar:'ip.a=1'\""
    ));
    assert!(writes_persistent_collections(
        "SecAction \"id:1,pass,setvar:!global.a\""
    ));
    assert!(writes_persistent_collections(
        "SecAction \"id:1,pass,expirevar:tx.a=10\""
    ));
}

#[test]
fn concurrent_transactions_share_one_rule_set() {
    let rules = crs();
    std::thread::scope(|s| {
        for t in 0..4 {
            s.spawn(move || {
                for i in 0..25 {
                    let uri = format!("/t{t}/{i}?id=1'%20OR%20'1'='1");
                    let v = rules.inspect(&browserish("GET", &uri)).unwrap();
                    assert!(v.blocked);
                    let ok = format!("/t{t}/{i}?id={i}");
                    assert!(!rules.inspect(&browserish("GET", &ok)).unwrap().blocked);
                }
            });
        }
    });
}

#[test]
fn log_fields_are_parsed() {
    let line = r#"ModSecurity: Access denied with code 403 (phase 2). [file "/x.conf"] [line "80"] [id "949110"] [rev ""] [msg "Inbound Anomaly Score Exceeded (Total Score: 10)"]"#;
    assert_eq!(field(line, "id"), Some("949110"));
    assert_eq!(field(line, "msg").and_then(total_score), Some(10));
    assert_eq!(field("no fields", "id"), None);
    assert_eq!(
        rule_ids_declared("secrule \"id:12,phase:1\" \"id:'3'\" \"xid:4\""),
        vec![12, 3]
    );
}

#[test]
fn documented_tuning_examples_work() {
    // The custom rules shown in docs/plugins/waf.md.
    let rules = Rules::from_crs(&CrsConfig {
        custom_rules: vec![
            "SecAction \"id:10001,phase:1,nolog,pass,setvar:'tx.allowed_request_content_type=|application/json| |application/merge-patch+json| |application/x-www-form-urlencoded| |multipart/form-data|'\"".to_string(),
            "SecRule REQUEST_FILENAME \"@streq /login\" \"id:10002,phase:1,pass,nolog,ctl:ruleRemoveTargetByTag=attack-sqli;ARGS:password\"".to_string(),
        ],
        ..CrsConfig::default()
    })
    .unwrap();
    let patch = browserish("PATCH", "/items/1")
        .header("Content-Type", "application/merge-patch+json")
        .body(br#"{"name": "new"}"#);
    assert!(crs().inspect(&patch).unwrap().blocked);
    passed(&rules, &patch);
    let login = |path| {
        browserish("POST", path)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(b"user=bob&password=1'%20OR%20'1'='1")
    };
    passed(&rules, &login("/login"));
    blocked(&rules, &login("/other"));
}

// ---- Response inspection ----

fn crs_resp() -> &'static Rules {
    static R: OnceLock<Rules> = OnceLock::new();
    R.get_or_init(|| {
        Rules::from_crs(&CrsConfig {
            inspect_response: true,
            ..CrsConfig::default()
        })
        .unwrap()
    })
}

const MYSQL_ERROR: &str = "<html><body><h1>Error</h1><p>You have an error in your SQL syntax; check the manual that corresponds to your MySQL server version for the right syntax to use near ''' at line 1</p></body></html>";

const JAVA_TRACE: &str = "HTTP Status 500\njava.lang.NullPointerException\n\tat com.example.shop.ItemService.find(ItemService.java:42)\n\tat org.apache.catalina.core.ApplicationFilterChain.doFilter(ApplicationFilterChain.java:166)\n";

fn leaky(resp: Response<'_>) -> Verdict {
    let v = crs_resp()
        .inspect_response(&browserish("GET", "/items/1"), &resp)
        .unwrap();
    assert!(v.blocked, "expected a block for {resp:?}, got {v:?}");
    assert!(v.rule_ids.contains(&959100), "{v:?}");
    assert!(v.anomaly_score.is_some_and(|s| s >= 4), "{v:?}");
    v
}

fn clean(rules: &Rules, req: &Request<'_>, resp: Response<'_>) -> Verdict {
    let v = rules.inspect_response(req, &resp).unwrap();
    assert!(!v.blocked, "expected a pass for {resp:?}, got {v:?}");
    v
}

#[test]
fn sql_error_message_in_a_response_is_flagged() {
    let v = leaky(
        Response::new(500)
            .header("Content-Type", "text/html; charset=utf-8")
            .body(MYSQL_ERROR.as_bytes()),
    );
    assert!(
        v.rule_ids.iter().any(|id| (951000..952000).contains(id)),
        "{v:?}"
    );
    // Inside a JSON error document too.
    let json = format!(r#"{{"error": "{}"}}"#, "You have an error in your SQL syntax; check the manual that corresponds to your MySQL server version for the right syntax to use near 'x' at line 1");
    leaky(
        Response::new(500)
            .header("Content-Type", "application/json")
            .body(json.as_bytes()),
    );
}

#[test]
fn java_stack_trace_in_a_response_is_flagged() {
    let v = leaky(
        Response::new(500)
            .header("Content-Type", "text/plain")
            .body(JAVA_TRACE.as_bytes()),
    );
    assert!(
        v.rule_ids.iter().any(|id| (952000..953000).contains(id)),
        "{v:?}"
    );
}

#[test]
fn benign_responses_pass_without_matches() {
    for (ct, body) in [
        (
            "application/json",
            r#"{"id": 1, "name": "O'Brien's shop", "select": "from the menu", "tags": ["a", "b"]}"#,
        ),
        (
            "text/html; charset=utf-8",
            "<html><body><h1>Items</h1><ul><li>one</li></ul></body></html>",
        ),
        (
            "application/problem+json",
            r#"{"title": "Not Found", "status": 404}"#,
        ),
    ] {
        let v = clean(
            crs_resp(),
            &browserish("GET", "/items/1"),
            Response::new(200)
                .header("Content-Type", ct)
                .body(body.as_bytes()),
        );
        assert!(v.rule_ids.is_empty(), "{ct}: {v:?}");
    }
}

#[test]
fn only_text_like_bodies_are_inspected() {
    // The same leak in a body the rules are not given: a binary type.
    let v = clean(
        crs_resp(),
        &browserish("GET", "/img"),
        Response::new(200)
            .header("Content-Type", "image/png")
            .body(MYSQL_ERROR.as_bytes()),
    );
    assert!(v.rule_ids.is_empty(), "{v:?}");
    assert!(response_body_inspected(b"application/json"));
    assert!(response_body_inspected(b"application/json; charset=utf-8"));
    assert!(response_body_inspected(b"text/html;charset=UTF-8"));
    assert!(response_body_inspected(b"application/problem+json"));
    for t in [
        &b"image/png"[..],
        b"application/octet-stream",
        b"text/event-stream",
        b"application/grpc",
        b"",
    ] {
        assert!(!response_body_inspected(t), "{t:?}");
    }
}

#[test]
fn response_body_is_inspected_only_up_to_its_limit() {
    let rules = Rules::from_crs(&CrsConfig {
        inspect_response: true,
        response_body_limit: 256,
        ..CrsConfig::default()
    })
    .unwrap();
    assert_eq!(rules.response_body_limit(), 256);
    let mut body = "x".repeat(300);
    body.push_str(MYSQL_ERROR);
    let resp = || {
        Response::new(200)
            .header("Content-Type", "text/html")
            .body(body.as_bytes())
    };
    clean(&rules, &browserish("GET", "/"), resp());
    leaky(resp());
}

#[test]
fn outbound_threshold_decides_blocking() {
    let lenient = Rules::from_crs(&CrsConfig {
        inspect_response: true,
        outbound_anomaly_threshold: 100,
        ..CrsConfig::default()
    })
    .unwrap();
    let v = clean(
        &lenient,
        &browserish("GET", "/"),
        Response::new(500)
            .header("Content-Type", "text/html")
            .body(MYSQL_ERROR.as_bytes()),
    );
    assert!(
        v.rule_ids.iter().any(|id| (951000..952000).contains(id)),
        "matched below the threshold: {v:?}"
    );
    assert!(!v.rule_ids.contains(&959100), "{v:?}");
}

#[test]
fn request_matches_are_not_reported_again_for_the_response() {
    // Numeric Host: 920350 matches the request (and its replay), not the response.
    let req = Request::new("GET", "/")
        .header("Host", "10.0.0.1")
        .header("User-Agent", "curl/8.0")
        .header("Accept", "*/*");
    assert!(crs_resp().inspect(&req).unwrap().rule_ids.contains(&920350));
    let v = clean(
        crs_resp(),
        &req,
        Response::new(200)
            .header("Content-Type", "application/json")
            .body(b"{}"),
    );
    assert!(v.rule_ids.is_empty(), "{v:?}");
    // Even a request the rules deny (detect mode lets it through) does not block its
    // response: it was judged on the request side.
    let attack = browserish("GET", "/items?id=1'%20OR%20'1'='1");
    assert!(crs_resp().inspect(&attack).unwrap().blocked);
    let v = clean(
        crs_resp(),
        &attack,
        Response::new(200)
            .header("Content-Type", "application/json")
            .body(b"{}"),
    );
    assert!(v.rule_ids.is_empty(), "{v:?}");
}

#[test]
fn replayed_request_phase_carries_runtime_exclusions_and_custom_response_rules() {
    let rules = Rules::from_crs(&CrsConfig {
        inspect_response: true,
        custom_rules: vec![
            // A runtime exclusion decided on the request (phase 1) applies to the response.
            r#"SecRule REQUEST_FILENAME "@beginsWith /debug" "id:10020,phase:1,pass,nolog,ctl:ruleRemoveByTag=attack-disclosure""#.to_string(),
            // A response-header rule (phase 3) runs for every response, text or not.
            r#"SecRule RESPONSE_HEADERS:X-Debug-Token "@rx ." "id:10021,phase:3,deny,log,msg:'debug token leaked'""#.to_string(),
        ],
        ..CrsConfig::default()
    })
    .unwrap();
    let leak = || {
        Response::new(500)
            .header("Content-Type", "text/html")
            .body(MYSQL_ERROR.as_bytes())
    };
    let v = rules
        .inspect_response(&browserish("GET", "/items"), &leak())
        .unwrap();
    assert!(v.blocked, "{v:?}");
    clean(&rules, &browserish("GET", "/debug/items"), leak());
    let v = rules
        .inspect_response(
            &browserish("GET", "/img"),
            &Response::new(200)
                .header("Content-Type", "image/png")
                .header("X-Debug-Token", "abc"),
        )
        .unwrap();
    assert!(v.blocked, "{v:?}");
    assert_eq!(v.rule_ids, vec![10021]);
}

#[test]
fn response_inspection_needs_a_rule_set_built_for_it() {
    assert!(!crs().inspects_responses());
    assert!(crs_resp().inspects_responses());
    let e = crs()
        .inspect_response(&browserish("GET", "/"), &Response::new(200))
        .unwrap_err();
    assert!(matches!(e, WafError::Setting(_)), "{e:?}");
    // And requests are judged exactly as before.
    blocked(crs_resp(), &browserish("GET", "/items?id=1'%20OR%20'1'='1"));
    passed(crs_resp(), &browserish("GET", "/items?id=42"));
}
