//! A small, fast, unkeyed hasher for the host tables.
//!
//! The tables are built from configuration and never modified afterwards, so
//! request-controlled keys can only probe them; there is no insertion path an
//! attacker could use to provoke collisions, and SipHash's keying buys nothing.

use std::hash::{BuildHasherDefault, Hasher};

/// Multiply-rotate hash in the style of rustc's `FxHasher`, 8 bytes at a time.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FastHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        let len = rest.len();
        if len > 0 {
            // Overlapping fixed-size reads (no variable-length copy); the
            // length is mixed in so different tails cannot collide trivially.
            let word = if len >= 4 {
                u64::from(read_u32(&rest[..4])) | u64::from(read_u32(&rest[len - 4..])) << 32
            } else {
                u64::from(rest[0]) | u64::from(rest[len / 2]) << 8 | u64::from(rest[len - 1]) << 16
            };
            self.add(word ^ ((len as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn finish(&self) -> u64 {
        // Final avalanche so hashbrown's top-7-bit tags are well mixed.
        let h = self.hash;
        (h ^ (h >> 29)).wrapping_mul(SEED) ^ (h >> 32)
    }
}

#[inline]
fn read_u32(bytes: &[u8]) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(bytes);
    u32::from_le_bytes(word)
}

/// `HashMap` with [`FastHasher`].
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<FastHasher>>;

#[cfg(test)]
mod unit {
    use std::hash::{BuildHasher, BuildHasherDefault};

    use super::FastHasher;

    fn hash(s: &str) -> u64 {
        BuildHasherDefault::<FastHasher>::default().hash_one(s)
    }

    #[test]
    fn stable_and_spread() {
        assert_eq!(hash("svc1.example.com"), hash("svc1.example.com"));
        let names: Vec<String> = (0..2000).map(|i| format!("svc{i}.example.com")).collect();
        let mut tags: Vec<u64> = names.iter().map(|n| hash(n)).collect();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), names.len());
        // Tails of every length 0..=16 hash differently from their neighbours.
        let all: Vec<u64> = (0..=16).map(|n| hash(&"abcdefghijklmnop"[..n])).collect();
        for w in all.windows(2) {
            assert_ne!(w[0], w[1]);
        }
    }
}
