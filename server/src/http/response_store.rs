//! The responses kept for `previous_response_id` (`POST /v1/responses` with `store` not false):
//! a bounded in-memory map, the least recently used response going first beyond
//! `--response-store-size`. A response keeps its own turn (the input messages of its request and
//! its answer) and a link to the response it continued, so that a long conversation holds each
//! message (and each image's data URL) once, however many of its responses are kept; a kept
//! response keeps the turns before it alive even after they are evicted themselves.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::types::ChatRole;

/// One message of a kept conversation, as a chat message (its content in the Chat Completions
/// shape: a string, or `text` and `image_url` parts).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    pub role: ChatRole,
    pub content: Value,
}

/// A kept response: its turn, after the conversation it continued.
#[derive(Debug)]
pub struct StoredResponse {
    pub parent: Option<Arc<StoredResponse>>,
    /// The request's input messages (not its `instructions`, which a continuation does not
    /// inherit) and the answer.
    pub turn: Vec<StoredMessage>,
}

impl StoredResponse {
    /// The whole conversation up to and including this response's answer, oldest first.
    pub fn history(&self) -> Vec<StoredMessage> {
        let mut chain = vec![self];
        while let Some(parent) = chain.last().and_then(|r| r.parent.as_deref()) {
            chain.push(parent);
        }
        chain.iter().rev().flat_map(|r| r.turn.iter().cloned()).collect()
    }
}

impl Drop for StoredResponse {
    /// Unlinks the chain one response at a time, so that dropping a long one does not recurse.
    fn drop(&mut self) {
        let mut next = self.parent.take();
        while let Some(r) = next {
            next = match Arc::try_unwrap(r) {
                Ok(mut only) => only.parent.take(),
                Err(_) => None,
            };
        }
    }
}

#[derive(Default)]
struct Inner {
    /// Id → (response, its last use).
    entries: HashMap<String, (Arc<StoredResponse>, u64)>,
    /// Last use → id, least recent first.
    order: BTreeMap<u64, String>,
    clock: u64,
}

/// At most `capacity` responses (0 keeps none).
pub struct ResponseStore {
    capacity: usize,
    inner: Mutex<Inner>,
}

impl ResponseStore {
    pub fn new(capacity: usize) -> Self {
        Self { capacity, inner: Mutex::new(Inner::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `response` as `id`, evicting the least recently used beyond the capacity.
    pub fn insert(&self, id: String, response: StoredResponse) {
        if self.capacity == 0 {
            return;
        }
        let evicted = {
            let mut inner = self.lock();
            let mut evicted = Vec::new();
            while inner.entries.len() >= self.capacity {
                let Some((_, old)) = inner.order.pop_first() else { break };
                evicted.extend(inner.entries.remove(&old));
            }
            inner.clock += 1;
            let tick = inner.clock;
            if let Some((_, before)) = inner.entries.insert(id.clone(), (Arc::new(response), tick)) {
                inner.order.remove(&before);
            }
            inner.order.insert(tick, id);
            evicted
        };
        drop(evicted); // outside the lock
    }

    /// The response kept as `id` (now the most recently used), if any.
    pub fn get(&self, id: &str) -> Option<Arc<StoredResponse>> {
        let mut inner = self.lock();
        inner.clock += 1;
        let tick = inner.clock;
        let (response, used) = inner.entries.get_mut(id)?;
        let before = std::mem::replace(used, tick);
        let response = response.clone();
        inner.order.remove(&before);
        inner.order.insert(tick, id.to_string());
        Some(response)
    }

    /// Responses kept now.
    #[allow(dead_code)] // for tests and metrics
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn turn(text: &str) -> StoredResponse {
        StoredResponse { parent: None, turn: vec![StoredMessage { role: ChatRole::User, content: json!(text) }] }
    }

    #[test]
    fn evicts_the_least_recently_used() {
        let store = ResponseStore::new(2);
        store.insert("a".into(), turn("a"));
        store.insert("b".into(), turn("b"));
        assert!(store.get("a").is_some(), "a is now the most recent");
        store.insert("c".into(), turn("c"));
        assert_eq!(store.len(), 2);
        assert!(store.get("b").is_none(), "b was the least recently used");
        assert!(store.get("a").is_some() && store.get("c").is_some());
        ResponseStore::new(0).insert("x".into(), turn("x"));
    }

    #[test]
    fn a_continuation_keeps_its_history_after_the_parent_is_evicted() {
        let store = ResponseStore::new(1);
        store.insert("a".into(), turn("first"));
        let parent = store.get("a");
        let mut second = turn("second");
        second.parent = parent;
        store.insert("b".into(), second);
        assert!(store.get("a").is_none());
        let history = store.get("b").unwrap().history();
        assert_eq!(
            history.iter().map(|m| m.content.clone()).collect::<Vec<_>>(),
            vec![json!("first"), json!("second")]
        );
    }

    #[test]
    fn a_long_chain_drops_without_recursing() {
        let mut r = turn("0");
        for _ in 0..200_000 {
            r = StoredResponse { parent: Some(Arc::new(r)), turn: Vec::new() };
        }
        drop(r);
    }
}
