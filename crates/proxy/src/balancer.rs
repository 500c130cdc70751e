//! Load balancing over an upstream's targets: weighted round-robin, consistent hashing and
//! least-connections, skipping targets marked unhealthy by active or passive checks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use portcullis_config::{Algorithm, HashOn, Healthchecks, Upstream};

/// Health of one target, shared across config reloads while the target stays configured.
#[derive(Debug)]
pub struct TargetHealth {
    healthy: AtomicBool,
    counters: Mutex<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    successes: u32,
    tcp_failures: u32,
    timeouts: u32,
    http_failures: u32,
}

impl Default for TargetHealth {
    fn default() -> Self {
        TargetHealth {
            healthy: AtomicBool::new(true),
            counters: Mutex::new(Counters::default()),
        }
    }
}

impl TargetHealth {
    /// Is the target eligible?
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Forces the state (Admin API, tests).
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
        if let Ok(mut c) = self.counters.lock() {
            *c = Counters::default();
        }
    }

    /// Applies one observation against thresholds; `successes_needed` 0 = never heal this way.
    fn observe(&self, outcome: Outcome, t: &Thresholds) {
        let Ok(mut c) = self.counters.lock() else {
            return;
        };
        let is_success = matches!(outcome, Outcome::Status(s) if t.healthy_statuses.contains(&s));
        if is_success {
            c.tcp_failures = 0;
            c.timeouts = 0;
            c.http_failures = 0;
            if !self.is_healthy() && t.successes > 0 {
                c.successes += 1;
                if c.successes >= t.successes {
                    self.healthy.store(true, Ordering::Relaxed);
                    *c = Counters::default();
                    tracing::info!("target marked healthy");
                }
            }
            return;
        }
        c.successes = 0;
        let tripped = match outcome {
            Outcome::TcpFailure => {
                c.tcp_failures += 1;
                t.tcp_failures > 0 && c.tcp_failures >= t.tcp_failures
            }
            Outcome::Timeout => {
                c.timeouts += 1;
                t.timeouts > 0 && c.timeouts >= t.timeouts
            }
            Outcome::Status(s) if t.unhealthy_statuses.contains(&s) => {
                c.http_failures += 1;
                t.http_failures > 0 && c.http_failures >= t.http_failures
            }
            Outcome::Status(_) => false,
        };
        if tripped && self.is_healthy() {
            self.healthy.store(false, Ordering::Relaxed);
            *c = Counters::default();
            tracing::warn!("target marked unhealthy");
        }
    }
}

/// What happened when a target was used or probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Could not connect, or the connection broke.
    TcpFailure,
    /// No answer in time.
    Timeout,
    /// An HTTP status arrived.
    Status(u16),
}

/// Thresholds of one check kind (active or passive).
#[derive(Debug, Clone)]
pub struct Thresholds {
    healthy_statuses: Vec<u16>,
    successes: u32,
    unhealthy_statuses: Vec<u16>,
    tcp_failures: u32,
    timeouts: u32,
    http_failures: u32,
}

impl Thresholds {
    fn passive(h: &Healthchecks) -> Thresholds {
        Thresholds {
            healthy_statuses: h.passive.healthy_http_statuses.clone(),
            successes: h.passive.healthy_successes,
            unhealthy_statuses: h.passive.unhealthy_http_statuses.clone(),
            tcp_failures: h.passive.unhealthy_tcp_failures,
            timeouts: h.passive.unhealthy_timeouts,
            http_failures: h.passive.unhealthy_http_failures,
        }
    }

    /// Thresholds of active probes.
    pub fn active(h: &Healthchecks) -> Thresholds {
        Thresholds {
            healthy_statuses: h.active.healthy_http_statuses.clone(),
            successes: h.active.healthy_successes,
            unhealthy_statuses: h.active.unhealthy_http_statuses.clone(),
            tcp_failures: h.active.unhealthy_tcp_failures,
            timeouts: h.active.unhealthy_timeouts,
            http_failures: h.active.unhealthy_http_failures,
        }
    }

    fn enabled(&self) -> bool {
        self.tcp_failures > 0 || self.timeouts > 0 || self.http_failures > 0 || self.successes > 0
    }
}

/// One target as the balancer sees it.
#[derive(Debug)]
pub struct TargetEntry {
    /// Host name or IP.
    pub host: Arc<str>,
    /// Port.
    pub port: u16,
    /// Weight.
    pub weight: u32,
    /// Shared health state.
    pub health: Arc<TargetHealth>,
    /// Requests in flight (least-connections).
    pub in_flight: AtomicUsize,
}

/// A compiled balancer for one upstream, or for a service's single host.
#[derive(Debug)]
pub struct Balancer {
    /// The upstream name (or `host:port` for a plain service).
    pub name: String,
    /// Built from an upstream entity (not a service's plain host).
    pub is_upstream: bool,
    algorithm: Algorithm,
    /// Hash inputs.
    pub hash_on: HashOn,
    /// Fallback hash input.
    pub hash_fallback: HashOn,
    /// Host header override.
    pub host_header: Option<String>,
    targets: Vec<TargetEntry>,
    schedule: Vec<u32>,
    cursor: AtomicUsize,
    ring: Vec<(u64, u32)>,
    passive: Option<Thresholds>,
    /// Active-check config, when enabled.
    pub healthchecks: Option<Healthchecks>,
    threshold: f64,
}

/// Health states keyed by (upstream name, host:port), carried from one config to the next.
pub type HealthRegistry = HashMap<(String, String), Arc<TargetHealth>>;

impl Balancer {
    /// A balancer for an upstream entity with its targets.
    pub fn for_upstream(
        u: &Upstream,
        targets: Vec<(String, u16, u32)>,
        previous: &HealthRegistry,
    ) -> Balancer {
        let passive = Thresholds::passive(&u.healthchecks);
        let active_on = u.healthchecks.active.healthy_interval > 0.0
            || u.healthchecks.active.unhealthy_interval > 0.0;
        let entries: Vec<TargetEntry> = targets
            .into_iter()
            .map(|(host, port, weight)| {
                let key = (u.name.clone(), format!("{host}:{port}"));
                TargetEntry {
                    health: previous.get(&key).cloned().unwrap_or_default(),
                    host: Arc::from(host.as_str()),
                    port,
                    weight,
                    in_flight: AtomicUsize::new(0),
                }
            })
            .collect();
        Balancer {
            name: u.name.clone(),
            is_upstream: true,
            algorithm: u.algorithm,
            hash_on: u.hash_on.clone(),
            hash_fallback: u.hash_fallback.clone(),
            host_header: u.host_header.clone(),
            schedule: wrr_schedule(&entries),
            ring: ketama(&entries),
            targets: entries,
            cursor: AtomicUsize::new(0),
            passive: passive.enabled().then_some(passive),
            healthchecks: active_on.then(|| u.healthchecks.clone()),
            threshold: u.healthchecks.threshold,
        }
    }

    /// A balancer with one target: a service pointing at a host directly.
    pub fn single(host: &str, port: u16) -> Balancer {
        let entries = vec![TargetEntry {
            host: Arc::from(host),
            port,
            weight: 100,
            health: Arc::default(),
            in_flight: AtomicUsize::new(0),
        }];
        Balancer {
            name: format!("{host}:{port}"),
            is_upstream: false,
            algorithm: Algorithm::RoundRobin,
            hash_on: HashOn::None,
            hash_fallback: HashOn::None,
            host_header: None,
            schedule: vec![0],
            ring: Vec::new(),
            targets: entries,
            cursor: AtomicUsize::new(0),
            passive: None,
            healthchecks: None,
            threshold: 0.0,
        }
    }

    /// Are active or passive health checks on?
    pub fn health_checked(&self) -> bool {
        self.healthchecks.is_some() || self.passive.is_some()
    }

    /// Does the algorithm read the targets' in-flight counts (so requests must keep them)?
    pub fn counts_in_flight(&self) -> bool {
        matches!(
            self.algorithm,
            Algorithm::LeastConnections | Algorithm::Latency
        )
    }

    /// Targets, in config order.
    pub fn targets(&self) -> &[TargetEntry] {
        &self.targets
    }

    /// Health states to carry into the next config.
    pub fn export_health(&self, into: &mut HealthRegistry) {
        for t in &self.targets {
            into.insert(
                (self.name.clone(), format!("{}:{}", t.host, t.port)),
                t.health.clone(),
            );
        }
    }

    fn eligible(&self, i: usize, exclude: &[usize]) -> bool {
        let t = &self.targets[i];
        t.weight > 0 && t.health.is_healthy() && !exclude.contains(&i)
    }

    /// Kong's balancer health: healthy capacity at or above the upstream's `threshold`
    /// percentage (always, with the default threshold 0).
    pub fn above_threshold(&self) -> bool {
        !self.below_threshold()
    }

    /// True when healthy capacity is below the upstream's threshold percentage.
    fn below_threshold(&self) -> bool {
        if self.threshold <= 0.0 {
            return false;
        }
        let total: u64 = self.targets.iter().map(|t| u64::from(t.weight)).sum();
        let healthy: u64 = self
            .targets
            .iter()
            .filter(|t| t.health.is_healthy())
            .map(|t| u64::from(t.weight))
            .sum();
        total == 0 || (healthy as f64 * 100.0 / total as f64) < self.threshold
    }

    /// Picks a target index, or `None` when no healthy target is left. `hash_key` is used by
    /// consistent hashing; `exclude` lists targets that already failed for this request.
    pub fn select(&self, hash_key: Option<&[u8]>, exclude: &[usize]) -> Option<usize> {
        if self.below_threshold() {
            return None;
        }
        let pick = self.select_inner(hash_key, exclude);
        // With every target tried once, retries go to a healthy one again (Kong retries the
        // same single target of a plain service).
        pick.or_else(|| {
            if exclude.is_empty() {
                None
            } else {
                self.select_inner(hash_key, &[])
            }
        })
    }

    fn select_inner(&self, hash_key: Option<&[u8]>, exclude: &[usize]) -> Option<usize> {
        match (self.algorithm, hash_key) {
            (Algorithm::ConsistentHashing, Some(key)) if !self.ring.is_empty() => {
                let h = hash64(key);
                let start = self.ring.partition_point(|(p, _)| *p < h);
                (0..self.ring.len())
                    .map(|k| self.ring[(start + k) % self.ring.len()].1 as usize)
                    .find(|&i| self.eligible(i, exclude))
            }
            (Algorithm::LeastConnections | Algorithm::Latency, _) => self
                .targets
                .iter()
                .enumerate()
                .filter(|(i, _)| self.eligible(*i, exclude))
                .min_by(|(_, a), (_, b)| {
                    // Compare in_flight/weight without division: a.f * b.w vs b.f * a.w.
                    let la = a.in_flight.load(Ordering::Relaxed) as u64 * u64::from(b.weight);
                    let lb = b.in_flight.load(Ordering::Relaxed) as u64 * u64::from(a.weight);
                    la.cmp(&lb)
                })
                .map(|(i, _)| i),
            _ => {
                if self.schedule.is_empty() {
                    return None;
                }
                let n = self.schedule.len();
                let start = self.cursor.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|k| self.schedule[(start + k) % n] as usize)
                    .find(|&i| self.eligible(i, exclude))
            }
        }
    }

    /// Records the outcome of a proxied request for passive checks.
    pub fn report(&self, target: usize, outcome: Outcome) {
        if let (Some(t), Some(th)) = (self.targets.get(target), &self.passive) {
            t.health.observe(outcome, th);
        }
    }

    /// Records the outcome of an active probe.
    pub fn report_active(&self, target: usize, outcome: Outcome, th: &Thresholds) {
        if let Some(t) = self.targets.get(target) {
            t.health.observe(outcome, th);
        }
    }
}

/// Smooth weighted round-robin (nginx's algorithm), unrolled into a schedule once per config.
fn wrr_schedule(targets: &[TargetEntry]) -> Vec<u32> {
    let weights: Vec<u64> = targets.iter().map(|t| u64::from(t.weight)).collect();
    let g = weights.iter().copied().filter(|&w| w > 0).fold(0, gcd);
    if g == 0 {
        return Vec::new();
    }
    let mut reduced: Vec<i64> = weights.iter().map(|w| (w / g) as i64).collect();
    let mut total: i64 = reduced.iter().sum();
    // Keep the schedule small: scale weights down when their sum is large.
    const MAX: i64 = 10_000;
    if total > MAX {
        for w in reduced.iter_mut() {
            if *w > 0 {
                *w = (*w * MAX / total).max(1);
            }
        }
        total = reduced.iter().sum();
    }
    let mut current = vec![0i64; reduced.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..reduced.len() {
            current[i] += reduced[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u32);
    }
    out
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// A consistent-hash ring: each target gets points in proportion to its weight, so removing a
/// target only moves the keys it owned.
fn ketama(targets: &[TargetEntry]) -> Vec<(u64, u32)> {
    let max_w = targets.iter().map(|t| t.weight).max().unwrap_or(0).max(1);
    let mut ring = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        if t.weight == 0 {
            continue;
        }
        let points = (160 * u64::from(t.weight) / u64::from(max_w)).max(1);
        for p in 0..points {
            ring.push((
                hash64(format!("{}:{}#{p}", t.host, t.port).as_bytes()),
                i as u32,
            ));
        }
    }
    ring.sort_unstable();
    ring
}

/// A stable 64-bit hash (FNV-1a with a splitmix64 finaliser): the same on every node.
pub fn hash64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests;
