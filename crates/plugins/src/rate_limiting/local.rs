//! The `local` policy: in-process counters, shared by every config load of this node (like
//! Kong's shared dict, they survive reloads), sharded so concurrent requests for different
//! clients rarely meet on a lock. A request is checked and counted under one short lock, so
//! counts are exact under concurrency.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Mutex, OnceLock};

use super::window::{sliding_weight, Observed, Period};

const SHARDS: usize = 64;
/// Entries per shard before expired ones are swept (and, if still full, the shard is trimmed).
const SHARD_CAPACITY: usize = 50_000;
/// Sweep a shard for expired entries every this many requests that touch it.
const SWEEP_EVERY: u32 = 4096;

#[derive(Debug, Default, Clone, Copy)]
struct Window {
    start: i64,
    current: u64,
    previous: u64,
}

#[derive(Debug)]
struct Entry {
    windows: [Window; 6],
    expires_ms: i64,
}

/// Keys hold client-chosen text (an address, a header value), so the hash is seeded per
/// process (foldhash: keyed, and several times cheaper than SipHash on these ~100-byte keys).
type Hasher = foldhash::fast::RandomState;

#[derive(Default)]
struct Shard {
    map: HashMap<String, Entry, Hasher>,
    ops: u32,
}

/// The node-wide counter store.
pub struct LocalStore {
    shards: Vec<Mutex<Shard>>,
    hasher: Hasher,
}

/// One period to check: its limit.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    /// The period.
    pub period: Period,
    /// Requests allowed per window.
    pub limit: u64,
}

impl LocalStore {
    fn new() -> LocalStore {
        LocalStore {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: Hasher::default(),
        }
    }

    /// The store of this process.
    pub fn global() -> &'static LocalStore {
        static STORE: OnceLock<LocalStore> = OnceLock::new();
        STORE.get_or_init(LocalStore::new)
    }

    /// Checks every limit for `key` at `now_ms` and, when all admit the request, counts it.
    /// Returns what was observed before counting and whether the request was admitted.
    pub fn hit(
        &self,
        key: &str,
        limits: &[Limit],
        sliding: bool,
        now_ms: i64,
    ) -> (Vec<Observed>, bool) {
        let idx = (self.hasher.hash_one(key) as usize) % SHARDS;
        let Some(shard) = self.shards.get(idx) else {
            return (Vec::new(), true);
        };
        // A poisoned lock only means another request panicked mid-update; counters stay usable.
        let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        shard.ops = shard.ops.wrapping_add(1);
        if shard.ops % SWEEP_EVERY == 0 || shard.map.len() >= SHARD_CAPACITY {
            shard.map.retain(|_, e| e.expires_ms > now_ms);
            if shard.map.len() >= SHARD_CAPACITY {
                // Still full of live entries (e.g. a flood of distinct header values): forget
                // an arbitrary half rather than grow without bound.
                let mut n = 0usize;
                shard.map.retain(|_, _| {
                    n += 1;
                    n & 1 == 0
                });
            }
        }
        // A known client (the common case): one lookup, no key copy.
        if let Some(entry) = shard.map.get_mut(key) {
            return count(entry, limits, sliding, now_ms);
        }
        let entry = shard.map.entry(key.to_string()).or_insert(Entry {
            windows: [Window::default(); 6],
            expires_ms: 0,
        });
        count(entry, limits, sliding, now_ms)
    }
}

/// Checks every limit against one client's windows at `now_ms` and, when all admit the
/// request, counts it. Runs under the shard's lock.
fn count(entry: &mut Entry, limits: &[Limit], sliding: bool, now_ms: i64) -> (Vec<Observed>, bool) {
    let mut observed = Vec::with_capacity(limits.len());
    let mut expires = entry.expires_ms;
    for l in limits {
        let len = l.period.seconds() * 1000;
        let start = if sliding {
            l.period.sliding_start(now_ms)
        } else {
            l.period.fixed_start(now_ms)
        };
        let Some(w) = entry.windows.get_mut(l.period.index()) else {
            continue;
        };
        if w.start != start {
            w.previous = if sliding && w.start == start - len {
                w.current
            } else {
                0
            };
            w.current = 0;
            w.start = start;
        }
        let weight = if sliding {
            sliding_weight(now_ms, start, len)
        } else {
            0.0
        };
        observed.push(Observed {
            period: l.period,
            limit: l.limit,
            current: w.current,
            previous: w.previous,
            weight,
        });
        let keep = if sliding { 2 * len } else { len };
        expires = expires.max(start + keep);
    }
    let admitted = observed.iter().all(Observed::admits);
    if admitted {
        for l in limits {
            if let Some(w) = entry.windows.get_mut(l.period.index()) {
                w.current += 1;
            }
        }
    }
    entry.expires_ms = expires;
    (observed, admitted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn minute(limit: u64) -> Vec<Limit> {
        vec![Limit {
            period: Period::Minute,
            limit,
        }]
    }

    #[test]
    fn fixed_window_counts_exactly_and_resets() {
        let s = LocalStore::new();
        let t0 = 1_700_000_080_000; // 40 s into a minute
        for i in 0..5 {
            let (o, ok) = s.hit("k", &minute(5), false, t0 + i);
            assert!(ok);
            assert_eq!(o[0].current, i as u64);
        }
        let (o, ok) = s.hit("k", &minute(5), false, t0 + 10);
        assert!(!ok);
        assert_eq!(o[0].current, 5);
        // Refused requests are not counted.
        let (o, _) = s.hit("k", &minute(5), false, t0 + 11);
        assert_eq!(o[0].current, 5);
        // Other keys are independent.
        assert!(s.hit("other", &minute(5), false, t0).1);
        // Next minute: fresh window, fixed mode forgets the previous one.
        let (o, ok) = s.hit("k", &minute(5), false, t0 + 20_000);
        assert!(ok);
        assert_eq!((o[0].current, o[0].previous), (0, 0));
    }

    #[test]
    fn sliding_window_blocks_the_boundary_burst() {
        let s = LocalStore::new();
        let second = vec![Limit {
            period: Period::Second,
            limit: 5,
        }];
        let t0 = 1_700_000_000_900; // late in a second
        let passed = (0..5)
            .filter(|i| s.hit("k", &second, true, t0 + i).1)
            .count();
        assert_eq!(passed, 5);
        // 150 ms later, just past the boundary: the previous second still weighs 4.75.
        let passed = (0..5)
            .filter(|i| s.hit("k", &second, true, t0 + 150 + i).1)
            .count();
        assert_eq!(passed, 0);
        // Fixed mode lets the second burst through (what sliding mode prevents).
        let f = LocalStore::new();
        let total = (0..5)
            .filter(|i| f.hit("k", &second, false, t0 + i).1)
            .count()
            + (0..5)
                .filter(|i| f.hit("k", &second, false, t0 + 150 + i).1)
                .count();
        assert_eq!(total, 10);
        // Later in the new second the previous one weighs less and traffic resumes.
        let (o, ok) = s.hit("k", &second, true, t0 + 100 + 700);
        assert!(ok, "{o:?}");
    }

    #[test]
    fn every_period_must_admit_and_all_are_counted() {
        let s = LocalStore::new();
        let limits = vec![
            Limit {
                period: Period::Second,
                limit: 2,
            },
            Limit {
                period: Period::Hour,
                limit: 3,
            },
        ];
        let t = 1_700_000_000_000;
        assert!(s.hit("k", &limits, false, t).1);
        assert!(s.hit("k", &limits, false, t).1);
        assert!(!s.hit("k", &limits, false, t).1); // second exhausted
        assert!(s.hit("k", &limits, false, t + 1000).1);
        let (o, ok) = s.hit("k", &limits, false, t + 2000);
        assert!(!ok); // hour exhausted
        assert_eq!(o[1].current, 3);
    }

    #[test]
    fn exact_under_concurrency() {
        let s = Arc::new(LocalStore::new());
        let admitted = Arc::new(AtomicUsize::new(0));
        let t = 1_700_000_000_000;
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (s, admitted) = (s.clone(), admitted.clone());
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        if s.hit("shared", &minute(1000), false, t).1 {
                            admitted.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        assert_eq!(admitted.load(Ordering::SeqCst), 1000);
    }

    #[test]
    fn expired_entries_are_swept() {
        let s = LocalStore::new();
        let t = 1_700_000_000_000;
        let shard_of = |k: &str| (s.hasher.hash_one(k) as usize) % SHARDS;
        let target = shard_of("x");
        let mut stale = 0;
        for i in 0..5000 {
            let k = format!("k{i}");
            if shard_of(&k) == target {
                s.hit(&k, &minute(5), false, t);
                stale += 1;
            }
        }
        assert!(stale > 10);
        // Two minutes later, enough traffic on the shard triggers a sweep.
        for _ in 0..SWEEP_EVERY {
            s.hit("x", &minute(u64::MAX), false, t + 120_000);
        }
        let left = s.shards[target].lock().unwrap().map.len();
        assert_eq!(left, 1, "only the live key stays");
    }
}
