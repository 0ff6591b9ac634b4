//! Hash maps and sets keyed by message ID, for the judge's per-ID passes over millions of
//! events: a fast non-cryptographic hasher instead of SipHash, which was most of the judge's
//! time on large runs.
//!
//! Invariant: only for keys from the run's own evidence (the harness's workload, a local
//! sink), where hash flooding is not a concern.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A fast non-cryptographic hasher for the ID maps (the multiply-rotate scheme of rustc's
/// FxHasher). IDs come from the harness's own workload and from a local sink, so hash
/// flooding is not a concern, and SipHash would be most of the judge's time on large runs.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl IdHasher {
    const K: u64 = 0xf135_7aea_2e62_a9c5;

    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(26) ^ word).wrapping_mul(Self::K);
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A map keyed by message ID, hashed with [`IdHasher`].
pub(crate) type IdMap<'a, V> = HashMap<&'a str, V, BuildHasherDefault<IdHasher>>;

/// A set of message IDs, hashed with [`IdHasher`].
pub(crate) type IdSet<'a> = HashSet<&'a str, BuildHasherDefault<IdHasher>>;
