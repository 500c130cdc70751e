use super::*;
use portcullis_config::{default_healthchecks, Upstream};

fn upstream(alg: Algorithm) -> Upstream {
    Upstream {
        id: "u".into(),
        name: "up".into(),
        algorithm: alg,
        hash_on: HashOn::Ip,
        hash_fallback: HashOn::None,
        slots: 10000,
        host_header: None,
        client_certificate: None,
        healthchecks: default_healthchecks(),
        tags: vec![],
    }
}

fn targets(ws: &[u32]) -> Vec<(String, u16, u32)> {
    ws.iter()
        .enumerate()
        .map(|(i, w)| (format!("10.0.0.{i}"), 80, *w))
        .collect()
}

#[test]
fn weighted_round_robin_follows_weights_smoothly() {
    let b = Balancer::for_upstream(
        &upstream(Algorithm::RoundRobin),
        targets(&[300, 100]),
        &HashMap::new(),
    );
    let picks: Vec<usize> = (0..8).map(|_| b.select(None, &[]).unwrap()).collect();
    assert_eq!(picks.iter().filter(|&&i| i == 0).count(), 6);
    // Smooth: never more than three of the heavy target in a row.
    assert!(
        !picks.windows(4).any(|w| w.iter().all(|&i| i == 0)),
        "{picks:?}"
    );
}

#[test]
fn zero_weight_and_unhealthy_targets_are_skipped() {
    let b = Balancer::for_upstream(
        &upstream(Algorithm::RoundRobin),
        targets(&[100, 0, 100]),
        &HashMap::new(),
    );
    b.targets()[2].health.set_healthy(false);
    for _ in 0..10 {
        assert_eq!(b.select(None, &[]), Some(0));
    }
    b.targets()[0].health.set_healthy(false);
    assert_eq!(b.select(None, &[]), None);
}

#[test]
fn exclusion_moves_retries_to_another_target() {
    let b = Balancer::for_upstream(
        &upstream(Algorithm::RoundRobin),
        targets(&[100, 100, 100]),
        &HashMap::new(),
    );
    let first = b.select(None, &[]).unwrap();
    let second = b.select(None, &[first]).unwrap();
    assert_ne!(first, second);
    // All tried: fall back to any healthy target.
    assert!(b.select(None, &[0, 1, 2]).is_some());
}

#[test]
fn consistent_hashing_is_stable_and_moves_few_keys() {
    let b = Balancer::for_upstream(
        &upstream(Algorithm::ConsistentHashing),
        targets(&[100, 100, 100, 100]),
        &HashMap::new(),
    );
    let keys: Vec<String> = (0..1000).map(|i| format!("client-{i}")).collect();
    let before: Vec<usize> = keys
        .iter()
        .map(|k| b.select(Some(k.as_bytes()), &[]).unwrap())
        .collect();
    let again: Vec<usize> = keys
        .iter()
        .map(|k| b.select(Some(k.as_bytes()), &[]).unwrap())
        .collect();
    assert_eq!(before, again);
    for i in 0..4 {
        let share = before.iter().filter(|&&t| t == i).count();
        assert!(share > 100 && share < 450, "target {i} got {share}");
    }
    b.targets()[1].health.set_healthy(false);
    let after: Vec<usize> = keys
        .iter()
        .map(|k| b.select(Some(k.as_bytes()), &[]).unwrap())
        .collect();
    let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    let owned = before.iter().filter(|&&t| t == 1).count();
    assert_eq!(moved, owned, "only the keys of the removed target move");
}

#[test]
fn least_connections_prefers_idle_targets() {
    let b = Balancer::for_upstream(
        &upstream(Algorithm::LeastConnections),
        targets(&[100, 100]),
        &HashMap::new(),
    );
    b.targets()[0].in_flight.store(5, Ordering::Relaxed);
    assert_eq!(b.select(None, &[]), Some(1));
}

#[test]
fn passive_checks_trip_and_active_heal() {
    let mut u = upstream(Algorithm::RoundRobin);
    u.healthchecks.passive.unhealthy_tcp_failures = 2;
    u.healthchecks.active.healthy_successes = 2;
    let b = Balancer::for_upstream(&u, targets(&[100]), &HashMap::new());
    b.report(0, Outcome::TcpFailure);
    assert!(b.targets()[0].health.is_healthy());
    b.report(0, Outcome::TcpFailure);
    assert!(!b.targets()[0].health.is_healthy());
    let active = Thresholds::active(&u.healthchecks);
    b.report_active(0, Outcome::Status(200), &active);
    assert!(!b.targets()[0].health.is_healthy());
    b.report_active(0, Outcome::Status(200), &active);
    assert!(b.targets()[0].health.is_healthy());
}

#[test]
fn health_survives_reload() {
    let u = upstream(Algorithm::RoundRobin);
    let b = Balancer::for_upstream(&u, targets(&[100, 100]), &HashMap::new());
    b.targets()[1].health.set_healthy(false);
    let mut reg = HashMap::new();
    b.export_health(&mut reg);
    let b2 = Balancer::for_upstream(&u, targets(&[100, 100]), &reg);
    assert!(!b2.targets()[1].health.is_healthy());
}
