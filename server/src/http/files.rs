//! `response_format=url` images: a bounded in-memory store with expiry behind
//! `GET /v1/files/{id}/content`. Ids are random 128-bit values, so a URL is its own credential.
//! When full, the oldest image goes first; expired ones are purged on every insert and lookup.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::Response;

use super::{ApiError, AppState};

struct Entry {
    bytes: Bytes,
    content_type: &'static str,
    expires: Instant,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// Ids, oldest first.
    order: VecDeque<String>,
}

pub struct FileStore {
    max_files: usize,
    ttl: Duration,
    inner: Mutex<Inner>,
}

impl FileStore {
    pub fn new(max_files: usize, ttl: Duration) -> Self {
        Self { max_files: max_files.max(1), ttl, inner: Mutex::new(Inner::default()) }
    }

    /// Stores an encoded image and returns the new id.
    pub fn insert(&self, bytes: Vec<u8>, content_type: &'static str) -> String {
        let id = super::random_id("img-");
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        Self::purge(&mut inner, now);
        while inner.order.len() >= self.max_files {
            if let Some(old) = inner.order.pop_front() {
                inner.entries.remove(&old);
            }
        }
        inner.entries.insert(id.clone(), Entry { bytes: Bytes::from(bytes), content_type, expires: now + self.ttl });
        inner.order.push_back(id.clone());
        id
    }

    /// The bytes, their content type and the time left, unless unknown or expired.
    pub fn get(&self, id: &str) -> Option<(Bytes, &'static str, Duration)> {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        Self::purge(&mut inner, now);
        inner.entries.get(id).map(|e| (e.bytes.clone(), e.content_type, e.expires - now))
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap().entries.len()
    }

    /// Entries expire in insertion order (one TTL for all), so purging pops from the front.
    fn purge(inner: &mut Inner, now: Instant) {
        while let Some(id) = inner.order.front() {
            match inner.entries.get(id) {
                Some(e) if e.expires > now => break,
                _ => {
                    let id = inner.order.pop_front().expect("front exists");
                    inner.entries.remove(&id);
                }
            }
        }
    }
}

/// A generated image stored for `response_format=url`.
#[utoipa::path(
    get,
    path = "/v1/files/{id}/content",
    tag = "images",
    params(("id" = String, Path, description = "The id from an image URL")),
    responses(
        (status = 200, description = "The image (PNG, JPEG or WebP, as its request's `output_format`)",
            content_type = "image/png", body = Vec<u8>),
        (status = 404, description = "Unknown or expired id", body = super::error::ErrorResponse),
    )
)]
pub async fn content(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let Some((bytes, content_type, left)) = state.files.get(&id) else {
        return Err(ApiError::not_found(format!(
            "no file `{id}`: unknown, or expired (images are kept {} s)",
            state.files.ttl().as_secs()
        )));
    };
    let mut resp = Response::new(Body::from(bytes));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_str(&format!("private, max-age={}", left.as_secs())).expect("ascii"),
    );
    Ok(resp)
}
