//! The responses kept for `previous_response_id` (`POST /v1/responses` with `store` not false):
//! a bounded in-memory map, the least recently used response going first beyond
//! `--response-store-size` responses or `--response-store-bytes` bytes (each response counted with
//! the whole conversation it continues: an upper bound of what it keeps alive). A response keeps its own turn (the input messages of its request and
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

    /// Bytes of the whole conversation up to this response (text and data URLs; a little for
    /// each JSON value).
    pub fn history_bytes(&self) -> usize {
        fn value(v: &Value) -> usize {
            16 + match v {
                Value::String(s) => s.len(),
                Value::Array(a) => a.iter().map(value).sum(),
                Value::Object(o) => o.iter().map(|(k, v)| k.len() + value(v)).sum(),
                _ => 0,
            }
        }
        let mut total = 0;
        let mut next = Some(self);
        while let Some(r) = next {
            total += r.turn.iter().map(|m| value(&m.content)).sum::<usize>();
            next = r.parent.as_deref();
        }
        total
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
    /// Id → (response, its last use, its bytes).
    entries: HashMap<String, (Arc<StoredResponse>, u64, usize)>,
    /// The entries' bytes together.
    bytes: usize,
    /// Last use → id, least recent first.
    order: BTreeMap<u64, String>,
    clock: u64,
}

/// At most `capacity` responses (0 keeps none) of at most `max_bytes` in all.
pub struct ResponseStore {
    capacity: usize,
    max_bytes: usize,
    inner: Mutex<Inner>,
}

impl ResponseStore {
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        Self { capacity, max_bytes, inner: Mutex::new(Inner::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `response` as `id`, evicting the least recently used beyond the capacity or the
    /// bytes; one larger than all the bytes is not kept.
    pub fn insert(&self, id: String, response: StoredResponse) {
        let bytes = response.history_bytes();
        if self.capacity == 0 || bytes > self.max_bytes {
            return;
        }
        let evicted = {
            let mut inner = self.lock();
            let mut evicted = Vec::new();
            while inner.entries.len() >= self.capacity || inner.bytes + bytes > self.max_bytes {
                let Some((_, old)) = inner.order.pop_first() else { break };
                if let Some(entry) = inner.entries.remove(&old) {
                    inner.bytes -= entry.2;
                    evicted.push(entry);
                }
            }
            inner.clock += 1;
            let tick = inner.clock;
            if let Some((_, before, b)) = inner.entries.insert(id.clone(), (Arc::new(response), tick, bytes)) {
                inner.order.remove(&before);
                inner.bytes -= b;
            }
            inner.bytes += bytes;
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
        let (response, used, _) = inner.entries.get_mut(id)?;
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
        let store = ResponseStore::new(2, usize::MAX);
        store.insert("a".into(), turn("a"));
        store.insert("b".into(), turn("b"));
        assert!(store.get("a").is_some(), "a is now the most recent");
        store.insert("c".into(), turn("c"));
        assert_eq!(store.len(), 2);
        assert!(store.get("b").is_none(), "b was the least recently used");
        assert!(store.get("a").is_some() && store.get("c").is_some());
        ResponseStore::new(0, usize::MAX).insert("x".into(), turn("x"));
    }

    #[test]
    fn the_bytes_are_bounded_too_with_each_response_counted_with_its_history() {
        let store = ResponseStore::new(100, 1000);
        store.insert("a".into(), turn(&"x".repeat(400)));
        let mut b = turn(&"y".repeat(400));
        b.parent = store.get("a");
        assert!(b.history_bytes() > 800, "b counts a's turn too");
        store.insert("b".into(), b);
        assert!(store.get("a").is_none(), "a went to make room for b and its history");
        assert!(store.get("b").is_some());
        store.insert("huge".into(), turn(&"z".repeat(2000)));
        assert!(store.get("huge").is_none(), "larger than all the bytes: not kept");
        assert!(store.get("b").is_some(), "and nothing went for it");
    }

    #[test]
    fn a_continuation_keeps_its_history_after_the_parent_is_evicted() {
        let store = ResponseStore::new(1, usize::MAX);
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
