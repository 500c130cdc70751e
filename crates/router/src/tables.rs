//! First level of the index: tables from host keys to buckets.

use crate::hash::FastMap;
use crate::host::{HostName, HostPattern};

/// Set of key lengths, so lookups can skip hashing a slice no key could equal.
#[derive(Debug, Default, Clone, Copy)]
struct LenSet {
    bits: [u64; 4],
    /// Some key is 256 bytes or longer.
    long: bool,
}

impl LenSet {
    fn insert(&mut self, len: usize) {
        match self.bits.get_mut(len / 64) {
            Some(word) => *word |= 1 << (len % 64),
            None => self.long = true,
        }
    }

    #[inline]
    fn contains(&self, len: usize) -> bool {
        match self.bits.get(len / 64) {
            Some(word) => word & (1 << (len % 64)) != 0,
            None => self.long,
        }
    }
}

/// String-keyed table that knows its key lengths.
#[derive(Debug)]
struct KeyTable<V> {
    map: FastMap<Box<str>, V>,
    lens: LenSet,
}

impl<V> Default for KeyTable<V> {
    fn default() -> Self {
        Self {
            map: FastMap::default(),
            lens: LenSet::default(),
        }
    }
}

impl<V> KeyTable<V> {
    #[inline]
    fn get(&self, key: &str) -> Option<&V> {
        if self.lens.contains(key.len()) {
            self.map.get(key)
        } else {
            None
        }
    }

    fn map<W>(self, f: &mut impl FnMut(V) -> W) -> KeyTable<W> {
        KeyTable {
            map: self.map.into_iter().map(|(k, v)| (k, f(v))).collect(),
            lens: self.lens,
        }
    }
}

/// First level of the index: host name patterns to buckets (`V`). A route
/// is filed under one bucket per distinct host name (routes without hosts
/// share one bucket), and a request visits only the buckets its host can
/// match. Built with `V = u32` bucket ids, then mapped to the buckets.
#[derive(Debug)]
pub(crate) struct HostTables<V> {
    exact: KeyTable<V>,
    /// Keys are `.example.com` for `*.example.com`.
    suffix: KeyTable<V>,
    /// Keys are `example.` for `example.*`.
    prefix: KeyTable<V>,
    any_host: Option<V>,
    count: u32,
}

impl<V> Default for HostTables<V> {
    fn default() -> Self {
        Self {
            exact: KeyTable::default(),
            suffix: KeyTable::default(),
            prefix: KeyTable::default(),
            any_host: None,
            count: 0,
        }
    }
}

impl HostTables<u32> {
    /// Number of bucket ids handed out so far.
    pub(crate) fn bucket_count(&self) -> usize {
        self.count as usize
    }

    /// The bucket ids a route with `hosts` is filed under, each with whether
    /// reaching that bucket already proves the route's host criterion (a
    /// pattern with that name and no port exists).
    pub(crate) fn buckets_for(&mut self, hosts: &[HostPattern]) -> Vec<(u32, bool)> {
        if hosts.is_empty() {
            let b = match self.any_host {
                Some(b) => b,
                None => self.next(),
            };
            self.any_host = Some(b);
            return vec![(b, true)];
        }
        let mut keys: Vec<(&HostName, bool)> =
            hosts.iter().map(|h| (&h.name, h.port.is_none())).collect();
        keys.sort_unstable();
        keys.dedup_by(|later, earlier| {
            let same = later.0 == earlier.0;
            earlier.1 |= same && later.1;
            same
        });
        keys.into_iter()
            .map(|(name, proven)| (self.bucket(name), proven))
            .collect()
    }

    fn bucket(&mut self, name: &HostName) -> u32 {
        let next = self.count;
        let (table, key) = match name {
            HostName::Exact(k) => (&mut self.exact, k),
            HostName::Suffix(k) => (&mut self.suffix, k),
            HostName::Prefix(k) => (&mut self.prefix, k),
        };
        table.lens.insert(key.len());
        let b = *table.map.entry(key.clone()).or_insert(next);
        if b == next {
            self.count += 1;
        }
        b
    }

    fn next(&mut self) -> u32 {
        self.count += 1;
        self.count - 1
    }
}

impl<V> HostTables<V> {
    /// Replaces every bucket id by `f(id)`.
    pub(crate) fn map<W>(self, mut f: impl FnMut(V) -> W) -> HostTables<W> {
        HostTables {
            exact: self.exact.map(&mut f),
            suffix: self.suffix.map(&mut f),
            prefix: self.prefix.map(&mut f),
            any_host: self.any_host.map(&mut f),
            count: self.count,
        }
    }

    /// Calls `visit` with every bucket whose key `host` can match.
    #[inline]
    pub(crate) fn for_each_bucket(&self, host: &str, mut visit: impl FnMut(&V)) {
        if let Some(b) = self.exact.get(host) {
            visit(b);
        }
        let (suffix, prefix) = (!self.suffix.map.is_empty(), !self.prefix.map.is_empty());
        if suffix || prefix {
            // Every suffix key starts with '.', every prefix key ends with one.
            for (i, _) in host.bytes().enumerate().filter(|&(_, c)| c == b'.') {
                if let Some(b) = self.suffix.get(&host[i..]) {
                    visit(b);
                }
                if let Some(b) = self.prefix.get(&host[..=i]) {
                    visit(b);
                }
            }
        }
        if let Some(b) = &self.any_host {
            visit(b);
        }
    }
}

#[cfg(test)]
mod unit {
    use super::LenSet;

    #[test]
    fn len_set() {
        let mut set = LenSet::default();
        for len in [0, 63, 64, 255] {
            assert!(!set.contains(len));
            set.insert(len);
            assert!(set.contains(len));
        }
        assert!(!set.contains(1) && !set.contains(65) && !set.contains(300));
        set.insert(1000);
        assert!(set.contains(300), "long keys are not tracked one by one");
    }
}
