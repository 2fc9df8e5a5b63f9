//! Prefix caching: the keys and values of a prompt's shared beginning (its system-prompt
//! section), computed by the first answer that reads it and copied into every later answer that
//! starts with the same tokens, which then prefills only the rest of its prompt.
//!
//! Where a prompt's shared prefix ends depends on the prompt alone
//! ([`crate::understand::PreparedPrompt::shared_prefix`]), and every answer reads its prompt in
//! chunks that end there, whether the prefix comes from this cache, is computed, or the cache is
//! off. So an answer's numbers never depend on the cache, on what ran before it, or on its batch
//! mates: a copied prefix holds exactly the keys and values the answer would have computed.
//!
//! The cache holds at most `capacity` positions in all; the least recently used prefixes go
//! first. Capacity 0 turns it off.

use std::sync::{Mutex, MutexGuard};

use candle_core::Tensor;

/// The keys and values of every layer, `[1, kv heads, positions, head_dim]` each.
pub(crate) type PrefixKv = Vec<(Tensor, Tensor)>;

struct Entry {
    ids: Vec<u32>,
    kv: PrefixKv,
    last_used: u64,
}

#[derive(Default)]
struct Inner {
    capacity: usize,
    entries: Vec<Entry>,
    clock: u64,
    stats: PrefixCacheStats,
}

impl Inner {
    fn used(&self) -> usize {
        self.entries.iter().map(|e| e.ids.len()).sum()
    }

    /// Drops the least recently used prefixes until `extra` more positions fit.
    fn make_room(&mut self, extra: usize) {
        while !self.entries.is_empty() && self.used() + extra > self.capacity {
            let oldest = (0..self.entries.len()).min_by_key(|&i| self.entries[i].last_used).unwrap_or(0);
            self.entries.swap_remove(oldest);
        }
    }
}

/// Counts since the model was loaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixCacheStats {
    /// Answers whose prefix was copied from the cache, and the positions they did not compute.
    pub hits: u64,
    pub hit_positions: u64,
    /// Answers that had a shared prefix and computed it.
    pub misses: u64,
}

/// Shared prompt prefixes of one model (see the module's text).
pub struct PrefixCache {
    inner: Mutex<Inner>,
}

impl PrefixCache {
    pub fn new(capacity: usize) -> Self {
        Self { inner: Mutex::new(Inner { capacity, ..Inner::default() }) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The state stays consistent whatever a panicking holder did (each change is one step).
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Positions the cache may hold (0: off); dropping prefixes if it holds more.
    pub fn set_capacity(&self, positions: usize) {
        let mut inner = self.lock();
        inner.capacity = positions;
        inner.make_room(0);
    }

    pub fn capacity(&self) -> usize {
        self.lock().capacity
    }

    /// Positions held now.
    pub fn positions(&self) -> usize {
        self.lock().used()
    }

    pub fn stats(&self) -> PrefixCacheStats {
        self.lock().stats
    }

    /// The keys and values of the prefix `ids`, if cached (counted as a hit or a miss).
    pub(crate) fn get(&self, ids: &[u32]) -> Option<PrefixKv> {
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        let found = inner.entries.iter_mut().find(|e| e.ids == ids).map(|e| {
            e.last_used = now;
            e.kv.clone()
        });
        match found {
            Some(_) => {
                inner.stats.hits += 1;
                inner.stats.hit_positions += ids.len() as u64;
            }
            None => inner.stats.misses += 1,
        }
        found
    }

    /// Keeps the keys and values just computed for the prefix `ids` (unless they are there
    /// already, or do not fit at all).
    pub(crate) fn insert(&self, ids: &[u32], kv: PrefixKv) {
        let mut inner = self.lock();
        if ids.len() > inner.capacity || inner.entries.iter().any(|e| e.ids == ids) {
            return;
        }
        inner.make_room(ids.len());
        inner.clock += 1;
        let last_used = inner.clock;
        inner.entries.push(Entry { ids: ids.to_vec(), kv, last_used });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn kv() -> PrefixKv {
        let t = Tensor::zeros((1, 1, 1, 1), candle_core::DType::F32, &Device::Cpu).expect("tensor");
        vec![(t.clone(), t)]
    }

    #[test]
    fn keeps_the_most_recently_used_prefixes_within_its_capacity() {
        let cache = PrefixCache::new(5);
        cache.insert(&[1, 2], kv());
        cache.insert(&[3, 4], kv());
        assert!(cache.get(&[1, 2]).is_some()); // [3, 4] is now the least recently used
        cache.insert(&[5, 6], kv());
        assert!(cache.get(&[3, 4]).is_none());
        assert!(cache.get(&[1, 2]).is_some() && cache.get(&[5, 6]).is_some());
        assert_eq!(cache.positions(), 4);
        cache.insert(&[1, 2, 3, 4, 5, 6], kv()); // longer than the capacity: not kept
        assert_eq!(cache.positions(), 4);
        assert_eq!(cache.stats(), PrefixCacheStats { hits: 3, hit_positions: 6, misses: 1 });
        cache.set_capacity(0);
        assert_eq!(cache.positions(), 0);
        cache.insert(&[7], kv());
        assert!(cache.get(&[7]).is_none());
    }
}
