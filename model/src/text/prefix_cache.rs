//! Prefix caching: the keys and values of a prompt's beginning up to the end of one of its
//! messages (the system prompt; a conversation's earlier turns, images included), computed by the
//! first answer that reads it and copied into every later answer that starts with the same
//! tokens and images, which then prefills only the rest (and does not encode those images).
//!
//! Where a prompt's messages end depends on the prompt alone
//! ([`crate::text::session::PreparedPrompt::boundaries`]), and every answer reads its prompt in
//! chunks that end there, whether a prefix comes from this cache, is computed, or the cache is
//! off. So an answer's numbers never depend on the cache, on what ran before it, or on its batch
//! mates: a copied prefix holds exactly the keys and values the answer would have computed.
//!
//! The cache holds at most `capacity` positions in all; the least recently used prefixes go
//! first. Capacity 0 turns it off.

use std::sync::{Mutex, MutexGuard};

use crate::modules::llm::PrefixKv;

/// A cached prefix found for a prompt: how many positions it covers, and their keys and values.
pub(crate) type Found = (usize, PrefixKv);

/// What a cached prefix is: its token ids, a hash of the pixels of each image among them (whose
/// positions hold placeholder ids), and where its prefill chunks ended (the messages' ends before
/// its own: the same ids cut otherwise would hold other roundings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixKey {
    pub ids: Vec<u32>,
    pub images: Vec<u64>,
    pub ends: Vec<usize>,
}

impl PrefixKey {
    /// Positions the prefix covers.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

struct Entry {
    key: PrefixKey,
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
        self.entries.iter().map(|e| e.key.len()).sum()
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

    /// The longest of `prefixes` (in ascending length) that is cached, with its keys and values
    /// (counted as a hit, or as a miss when there were prefixes and none is cached).
    pub(crate) fn longest(&self, prefixes: &[PrefixKey]) -> Option<Found> {
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        let found = prefixes.iter().rev().find_map(|key| {
            let e = inner.entries.iter_mut().find(|e| &e.key == key)?;
            e.last_used = now;
            Some((key.len(), e.kv.clone()))
        });
        match &found {
            Some((len, _)) => {
                inner.stats.hits += 1;
                inner.stats.hit_positions += *len as u64;
            }
            None if !prefixes.is_empty() => inner.stats.misses += 1,
            None => {}
        }
        found
    }

    /// Keeps the keys and values of the prefix `key`, made by `kv` only when they are not there
    /// already and fit at all.
    pub(crate) fn insert_with(
        &self,
        key: &PrefixKey,
        kv: impl FnOnce() -> crate::Result<PrefixKv>,
    ) -> crate::Result<()> {
        {
            let inner = self.lock();
            if key.len() > inner.capacity || inner.entries.iter().any(|e| &e.key == key) {
                return Ok(());
            }
        }
        let kv = kv()?; // outside the lock: a copy of every layer's keys and values
        let mut inner = self.lock();
        if inner.entries.iter().any(|e| &e.key == key) {
            return Ok(());
        }
        inner.make_room(key.len());
        inner.clock += 1;
        let last_used = inner.clock;
        inner.entries.push(Entry { key: key.clone(), kv, last_used });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn kv() -> crate::Result<PrefixKv> {
        let t = Tensor::zeros((1, 1, 1, 1), candle_core::DType::F32, &Device::Cpu)?;
        Ok(vec![(t.clone(), t)])
    }

    fn key(ids: &[u32]) -> PrefixKey {
        PrefixKey { ids: ids.to_vec(), images: vec![], ends: vec![] }
    }

    fn get(cache: &PrefixCache, ids: &[u32]) -> bool {
        cache.longest(&[key(ids)]).is_some()
    }

    #[test]
    fn keeps_the_most_recently_used_prefixes_within_its_capacity() -> crate::Result<()> {
        let cache = PrefixCache::new(5);
        cache.insert_with(&key(&[1, 2]), kv)?;
        cache.insert_with(&key(&[3, 4]), kv)?;
        assert!(get(&cache, &[1, 2])); // [3, 4] is now the least recently used
        cache.insert_with(&key(&[5, 6]), kv)?;
        assert!(!get(&cache, &[3, 4]));
        assert!(get(&cache, &[1, 2]) && get(&cache, &[5, 6]));
        assert_eq!(cache.positions(), 4);
        cache.insert_with(&key(&[1, 2, 3, 4, 5, 6]), || panic!("longer than the capacity: not even copied"))?;
        cache.insert_with(&key(&[1, 2]), || panic!("there already: not copied again"))?;
        assert_eq!(cache.positions(), 4);
        assert_eq!(cache.stats(), PrefixCacheStats { hits: 3, hit_positions: 6, misses: 1 });
        // The longest cached prefix wins; the same ids with another image are another prefix.
        let (len, _) = cache.longest(&[key(&[1]), key(&[1, 2]), key(&[1, 2, 9])]).expect("cached");
        assert_eq!(len, 2);
        assert!(cache.longest(&[PrefixKey { ids: vec![1, 2], images: vec![7], ends: vec![] }]).is_none());
        assert!(cache.longest(&[PrefixKey { ids: vec![1, 2], images: vec![], ends: vec![1] }]).is_none());
        cache.set_capacity(0);
        assert_eq!(cache.positions(), 0);
        cache.insert_with(&key(&[7]), kv)?;
        assert!(!get(&cache, &[7]));
        Ok(())
    }
}
