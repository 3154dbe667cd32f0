//! Hash maps over what clients choose (label sets, label values) and over the planner's
//! own ids: ahash, keyed per process from the standard library's random keys (ahash is
//! built without its own runtime RNG, as arrow builds it), so crafted label sets cannot
//! aim at one bucket. SipHash, the standard library's, was a third of a million-series
//! startup and a third of lowering `sum by (job) (...)` over 10k series.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;

/// ahash's state, keyed per call of [`keyed`].
pub type KeyedState = ahash::RandomState;
/// A map hashed with [`keyed`] keys.
pub type KeyedMap<K, V> = HashMap<K, V, KeyedState>;
/// A set hashed with [`keyed`] keys.
pub type KeyedSet<K> = HashSet<K, KeyedState>;

/// Fresh random keys: the standard library's per-thread keys, stepped (no system call).
pub fn keyed() -> KeyedState {
    let std = std::collections::hash_map::RandomState::new();
    let k = |i: u64| std.hash_one(i);
    ahash::RandomState::with_seeds(k(0), k(1), k(2), k(3))
}

/// An empty [`KeyedMap`] with room for `n` entries.
pub fn map<K, V>(n: usize) -> KeyedMap<K, V> {
    HashMap::with_capacity_and_hasher(n, keyed())
}

/// An empty [`KeyedSet`] with room for `n` entries.
pub fn set<K>(n: usize) -> KeyedSet<K> {
    HashSet::with_capacity_and_hasher(n, keyed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_per_state() {
        // Two states hash one value differently: the keys are random, not ahash's
        // built-in constants (which a client could aim collisions at).
        let (a, b) = (keyed(), keyed());
        assert_ne!(a.hash_one("job"), b.hash_one("job"));
        assert_eq!(a.hash_one("job"), a.hash_one("job"));
    }
}
