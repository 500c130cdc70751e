use super::*;
use crate::auth::Identity;
use crate::catalog::ConsumerInfo;
use http::{HeaderMap, Method};
use serde_json::json;

fn build(v: Value) -> Result<RateLimiting, Vec<String>> {
    let mut e = Errors::default();
    let catalog = Arc::new(Catalog::schema_only());
    RateLimiting::build(&v, "plugins[0].config", Scope::default(), &mut e, &catalog)
        .ok_or_else(|| e.into_vec().iter().map(ToString::to_string).collect())
}

fn ctx(ip: &str) -> Ctx {
    Ctx::new(
        Method::GET,
        "/x".into(),
        None,
        HeaderMap::new(),
        ip.parse().unwrap(),
    )
}

fn header_map(p: &PendingHeaders) -> Vec<(String, String)> {
    p.0.iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
        .collect()
}

#[test]
fn defaults_and_errors() {
    let p = build(json!({"minute": 5})).unwrap();
    assert_eq!(p.limit_by, LimitBy::Consumer);
    assert!(matches!(p.policy, Policy::Local));
    assert!(p.fault_tolerant && !p.hide_client_headers && !p.sliding);
    assert_eq!(p.error_status, 429);
    assert_eq!(p.error_message, "API rate limit exceeded");
    assert_eq!(
        p.key_prefix,
        "ratelimit:00000000-0000-0000-0000-000000000000:00000000-0000-0000-0000-000000000000:"
    );

    let e = build(json!({})).unwrap_err();
    assert_eq!(e, vec!["plugins[0].config: at least one of these fields must be non-empty: 'config.second', 'config.minute', 'config.hour', 'config.day', 'config.month', 'config.year'"]);
    let e = build(
        json!({"minute": 0, "hour": 1.5, "policy": "cluster", "limit_by": "header", "colour": 1}),
    )
    .unwrap_err();
    for want in [
        "plugins[0].config.minute: value must be greater than 0",
        "plugins[0].config.hour: expected an integer",
        "plugins[0].config.policy: expected one of: local, redis",
        "plugins[0].config.header_name: required field missing",
        "plugins[0].config.colour: unknown field",
    ] {
        assert!(e.contains(&want.to_string()), "{want} not in {e:?}");
    }
    let e = build(json!({"minute": 20, "hour": 10})).unwrap_err();
    assert_eq!(
        e,
        vec!["plugins[0].config: The limit for hour(10.0) cannot be lower than the limit for minute(20.0)"]
    );
    let e = build(json!({"minute": 1, "policy": "redis"})).unwrap_err();
    assert_eq!(
        e,
        vec!["plugins[0].config.redis.host: required field missing"]
    );
    let e = build(json!({"minute": 1, "sync_rate": 10})).unwrap_err();
    assert_eq!(
        e,
        vec!["plugins[0].config: sync_rate can only be used with the redis policy"]
    );
    let e = build(json!({"minute": 1, "limit_by": "path", "path": "x"})).unwrap_err();
    assert_eq!(e, vec!["plugins[0].config.path: should start with: /"]);
    let e = build(json!({"minute": 1, "window_type": "rolling"})).unwrap_err();
    assert_eq!(
        e,
        vec!["plugins[0].config.window_type: expected one of: fixed, sliding"]
    );
}

#[test]
fn redis_settings_nested_and_flat() {
    let p = build(json!({"minute": 1, "policy": "redis", "redis": {"host": "127.0.0.1", "port": 6380, "database": 3, "password": "s3cret", "timeout": 50}}))
        .unwrap();
    assert!(matches!(p.policy, Policy::Redis(_)));
    // The deprecated flat fields are accepted too.
    let p = build(json!({"minute": 1, "policy": "redis", "redis_host": "127.0.0.1", "redis_port": 6379, "redis_password": "x", "redis_database": 1, "redis_ssl": false, "redis_timeout": 100}))
        .unwrap();
    assert!(matches!(p.policy, Policy::Redis(_)));
    // Both, agreeing (decK dumps carry both), are fine; disagreeing is an error.
    build(json!({"minute": 1, "policy": "redis", "redis_host": "a", "redis": {"host": "a"}}))
        .unwrap();
    let e = build(
        json!({"minute": 1, "policy": "redis", "redis_host": "a", "redis": {"host": "b", "x": 1}}),
    )
    .unwrap_err();
    assert!(e.contains(&"plugins[0].config.redis.x: unknown field".to_string()));
    assert!(
        e.contains(&"plugins[0].config.redis_host: conflicts with config.redis.host".to_string())
    );
    // The password never shows up in Debug output.
    let cfg = RedisConfig {
        host: "h".into(),
        port: 1,
        username: None,
        password: Some("hunter2".into()),
        database: 0,
        ssl: false,
        ssl_verify: true,
        timeout: Duration::from_secs(1),
    };
    assert!(!format!("{cfg:?}").contains("hunter2"));
}

#[test]
fn identifiers_fall_back_to_the_client_ip() {
    let consumer = Arc::new(ConsumerInfo::new("c-1", None, None));
    let with_identity = |c: &mut Ctx| {
        c.identity = Some(Identity {
            consumer: consumer.clone(),
            credential: Some("cred-1".into()),
            anonymous: false,
        });
    };
    let p = build(json!({"minute": 1})).unwrap();
    assert_eq!(p.identifier(&ctx("10.0.0.1")), "10.0.0.1");
    assert_eq!(p.identifier(&ctx("::ffff:10.0.0.1")), "10.0.0.1");
    let mut c = ctx("10.0.0.1");
    with_identity(&mut c);
    assert_eq!(p.identifier(&c), "c-1");
    let p = build(json!({"minute": 1, "limit_by": "credential"})).unwrap();
    assert_eq!(p.identifier(&c), "cred-1");
    let p = build(json!({"minute": 1, "limit_by": "ip"})).unwrap();
    assert_eq!(p.identifier(&c), "10.0.0.1");
    let p = build(json!({"minute": 1, "limit_by": "header", "header_name": "X-Tenant"})).unwrap();
    assert_eq!(p.identifier(&c), "10.0.0.1");
    c.headers
        .insert("x-tenant", HeaderValue::from_static("acme"));
    assert_eq!(p.identifier(&c), "acme");
    c.headers
        .insert("x-tenant", HeaderValue::from_str(&"a".repeat(500)).unwrap());
    assert_eq!(p.identifier(&c).len(), 64, "long identifiers are hashed");
    let p = build(json!({"minute": 1, "limit_by": "path", "path": "/x"})).unwrap();
    assert_eq!(p.identifier(&c), "/x");
    c.path = "/y".into();
    assert_eq!(p.identifier(&c), "10.0.0.1");
    let p = build(json!({"minute": 1, "limit_by": "service"})).unwrap();
    assert_eq!(p.identifier(&c), "10.0.0.1");
    c.service_id = Some(Arc::from("svc-1"));
    assert_eq!(p.identifier(&c), "svc-1");
}

#[test]
fn headers_like_kong() {
    let p = build(json!({"second": 2, "minute": 5})).unwrap();
    let now = 1_700_000_080_250; // 40.25 s into a minute
    let obs = |sec, min| {
        vec![
            Observed {
                period: Period::Second,
                limit: 2,
                current: sec,
                previous: 0,
                weight: 0.0,
            },
            Observed {
                period: Period::Minute,
                limit: 5,
                current: min,
                previous: 0,
                weight: 0.0,
            },
        ]
    };
    // Admitted: every remaining counts this request; the most restrictive window is reported.
    let h = header_map(&p.headers(&obs(0, 3), true, now));
    assert_eq!(
        h,
        vec![
            ("x-ratelimit-limit-second".into(), "2".into()),
            ("x-ratelimit-remaining-second".into(), "1".into()),
            ("x-ratelimit-limit-minute".into(), "5".into()),
            ("x-ratelimit-remaining-minute".into(), "1".into()),
            ("ratelimit-limit".into(), "5".into()),
            ("ratelimit-remaining".into(), "1".into()),
            ("ratelimit-reset".into(), "20".into()),
        ]
    );
    // Refused by the second window: Retry-After is that window's reset.
    let h = header_map(&p.headers(&obs(2, 3), false, now));
    assert_eq!(
        h,
        vec![
            ("x-ratelimit-limit-second".into(), "2".into()),
            ("x-ratelimit-remaining-second".into(), "0".into()),
            ("x-ratelimit-limit-minute".into(), "5".into()),
            ("x-ratelimit-remaining-minute".into(), "2".into()),
            ("ratelimit-limit".into(), "2".into()),
            ("ratelimit-remaining".into(), "0".into()),
            ("ratelimit-reset".into(), "1".into()),
            ("retry-after".into(), "1".into()),
        ]
    );
    // Both exhausted: the longer window wins the tie, so Retry-After covers both.
    let h = header_map(&p.headers(&obs(2, 5), false, now));
    assert!(h.contains(&("retry-after".into(), "20".into())), "{h:?}");
}

#[tokio::test]
async fn local_policy_refuses_with_kong_body() {
    let p = build(
        json!({"minute": 2, "limit_by": "ip", "error_code": 503, "error_message": "slow down"}),
    )
    .unwrap();
    // A unique client so other tests sharing the global store do not interfere.
    let ip = "198.51.100.77";
    for _ in 0..2 {
        let mut c = ctx(ip);
        let flow = match p.access(&mut c) {
            Access::Now(f) => f,
            Access::Later(_) => panic!("local policy is synchronous"),
        };
        assert!(matches!(flow, Flow::Continue));
        assert!(c.state.get::<PendingHeaders>().is_some());
    }
    let mut c = ctx(ip);
    let flow = match p.access(&mut c) {
        Access::Now(f) => f,
        Access::Later(_) => panic!("local policy is synchronous"),
    };
    let Flow::Respond(r) = flow else {
        panic!("expected a refusal")
    };
    assert_eq!(r.status, 503);
    assert_eq!(&r.body[..], br#"{"message":"slow down"}"#);
    assert!(r.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn redis_unreachable_is_fault_tolerant_by_default() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = |ft: bool| {
        json!({"minute": 1, "policy": "redis", "fault_tolerant": ft,
               "redis": {"host": "127.0.0.1", "port": port, "timeout": 200}})
    };
    for (ft, want) in [(true, None), (false, Some(500))] {
        let p = build(conf(ft)).unwrap();
        let mut c = ctx("10.0.0.1");
        let flow = match p.access(&mut c) {
            Access::Later(f) => f.await,
            Access::Now(_) => panic!("redis policy awaits"),
        };
        match (flow, want) {
            (Flow::Continue, None) => {}
            (Flow::Respond(r), Some(code)) => {
                assert_eq!(r.status, code);
                assert_eq!(
                    &r.body[..],
                    br#"{"message":"An unexpected error occurred"}"#
                );
            }
            (f, w) => panic!("unexpected {f:?} for {w:?}"),
        }
    }
}

#[test]
fn ip_text_matches_display() {
    for ip in [
        "0.0.0.0",
        "127.0.0.1",
        "10.20.30.40",
        "255.255.255.255",
        "1.100.99.9",
        "::1",
        "2001:db8::7",
    ] {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        assert_eq!(crate::ip_restriction::ip_text(ip), ip.to_string());
    }
}

#[test]
fn small_header_numbers_from_the_table_equal_formatted_ones() {
    for n in [-1i64, 0, 1, 59, 60, 61, 3600, i64::MAX] {
        assert_eq!(super::small_value(n), http::HeaderValue::from(n), "{n}");
    }
}
