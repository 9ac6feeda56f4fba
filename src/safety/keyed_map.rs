//! A map from string keys to shared per-key state, searched by `&str` without allocating.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;

/// Seeded per map, so keys chosen by outsiders (tenants) cannot be aimed at one bucket.
pub(crate) type Hasher = foldhash::quality::RandomState;

/// Sweeps start once a map holds this many keys.
const FIRST_SWEEP_AT: usize = 1024;

pub(crate) struct KeyedMap<V> {
    map: RwLock<HashMap<Box<str>, Arc<V>, Hasher>>,
    /// Sweep idle entries when an insert brings the map to this size.
    sweep_at: AtomicUsize,
}

impl<V> KeyedMap<V> {
    pub(crate) fn new() -> Self {
        Self {
            map: RwLock::new(HashMap::with_hasher(Hasher::default())),
            sweep_at: AtomicUsize::new(FIRST_SWEEP_AT),
        }
    }

    /// The entry for `key`, if there is one.
    pub(crate) fn get(&self, key: &str) -> Option<Arc<V>> {
        self.map.read().get(key).cloned()
    }

    /// The entry for `key`, made by `make` if there is none. When the insert grows the map
    /// past its sweep mark, entries for which `keep` says false are removed first (memory
    /// stays bounded by the keys in use, not by every key ever seen).
    #[inline]
    pub(crate) fn get_or_insert_with(
        &self,
        key: &str,
        make: impl FnOnce(&str) -> V,
        keep: impl Fn(&Arc<V>) -> bool,
    ) -> Arc<V> {
        if let Some(v) = self.map.read().get(key) {
            return Arc::clone(v);
        }
        self.insert_slow(key, make, keep)
    }

    #[cold]
    fn insert_slow(
        &self,
        key: &str,
        make: impl FnOnce(&str) -> V,
        keep: impl Fn(&Arc<V>) -> bool,
    ) -> Arc<V> {
        let mut map = self.map.write();
        if let Some(v) = map.get(key) {
            return Arc::clone(v);
        }
        if map.len() + 1 >= self.sweep_at.load(Ordering::Relaxed) {
            map.retain(|_, v| keep(v));
            map.shrink_to_fit();
            let next = (map.len() * 2).max(FIRST_SWEEP_AT);
            self.sweep_at.store(next, Ordering::Relaxed);
        }
        let value = Arc::new(make(key));
        map.insert(key.into(), Arc::clone(&value));
        value
    }

    /// Keep only the entries for which `keep` says true.
    pub(crate) fn retain(&self, keep: impl Fn(&Arc<V>) -> bool) {
        self.map.write().retain(|_, v| keep(v));
    }

    /// Every entry, in no particular order.
    pub(crate) fn entries(&self) -> Vec<Arc<V>> {
        self.map.read().values().cloned().collect()
    }

    /// How many keys are held.
    pub(crate) fn len(&self) -> usize {
        self.map.read().len()
    }
}

/// The first key a wrapper sees, with its entry: a wrapper usually serves one kind (or one
/// backend), so most calls find their entry here without touching the shared map.
pub(crate) struct HotKey<V>(OnceLock<(Box<str>, Arc<V>)>);

impl<V> HotKey<V> {
    pub(crate) fn new() -> Self {
        Self(OnceLock::new())
    }

    /// The entry for `key`: the cached one if `key` is the cached key, else `cold()`'s (which
    /// is cached if nothing is yet).
    #[inline]
    pub(crate) fn get<'a>(&'a self, key: &str, cold: impl FnOnce() -> Arc<V>) -> Found<'a, V> {
        if let Some((hot, value)) = self.0.get() {
            if **hot == *key {
                return Found::Hot(value);
            }
            return Found::Cold(cold());
        }
        let value = cold();
        let _ = self.0.set((key.into(), Arc::clone(&value)));
        Found::Cold(value)
    }
}

impl<V> Clone for HotKey<V> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

/// An entry found through a [`HotKey`]: borrowed from the cache, or owned.
pub(crate) enum Found<'a, V> {
    Hot(&'a Arc<V>),
    Cold(Arc<V>),
}

impl<V> Deref for Found<'_, V> {
    type Target = Arc<V>;

    fn deref(&self) -> &Arc<V> {
        match self {
            Found::Hot(v) => v,
            Found::Cold(v) => v,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_by_str_and_sweeps_idle_entries() {
        let map: KeyedMap<u32> = KeyedMap::new();
        let a = map.get_or_insert_with("a", |_| 1, |_| true);
        assert_eq!(*a, 1);
        assert_eq!(*map.get_or_insert_with("a", |_| 2, |_| true), 1);
        assert!(map.get("b").is_none());
        // Fill to the sweep mark; entries held only by the map are swept.
        for i in 0..FIRST_SWEEP_AT {
            let _ = map.get_or_insert_with(&format!("k{i}"), |_| 0, |v| Arc::strong_count(v) > 1);
        }
        assert!(map.len() < FIRST_SWEEP_AT);
        assert!(map.get("a").is_some(), "an entry still in use is kept");
        map.retain(|_| false);
        assert_eq!(map.len(), 0);
    }

    #[test]
    fn hot_key_caches_the_first_key_only() {
        let map: KeyedMap<u32> = KeyedMap::new();
        let hot = HotKey::new();
        let lookups = std::cell::Cell::new(0);
        let find = |key: &str| {
            hot.get(key, || {
                lookups.set(lookups.get() + 1);
                map.get_or_insert_with(key, |_| key.len() as u32, |_| true)
            })
        };
        assert_eq!(**find("abc"), 3);
        assert_eq!(**find("abc"), 3);
        assert_eq!(lookups.get(), 1, "the second call hit the cache");
        assert_eq!(**find("de"), 2);
        assert_eq!(**find("de"), 2);
        assert_eq!(lookups.get(), 3, "another key goes to the map");
    }
}
