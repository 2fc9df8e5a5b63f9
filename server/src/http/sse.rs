//! Server-sent events: JSON payloads, the error event, and holding a `--max-streams` slot for as
//! long as a stream lives.

use axum::response::sse::Event;

use super::ApiError;

/// An SSE event with a JSON payload.
pub fn json(event: Option<&str>, payload: &impl serde::Serialize) -> Event {
    let data = serde_json::to_string(payload).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    let ev = Event::default().data(data);
    match event {
        Some(name) => ev.event(name),
        None => ev,
    }
}

/// A failure after the stream started: the error envelope as the last event (named `error` for
/// the Images API, unnamed for chat, as OpenAI sends them).
pub fn error(event: Option<&str>, e: ApiError) -> Event {
    tracing::warn!("stream failed: {}", e.message);
    json(event, &e.body())
}

/// `stream`, keeping `slot` until the stream is dropped (finished, or the client went away).
pub fn hold<S: futures_util::Stream, G>(stream: S, slot: G) -> impl futures_util::Stream<Item = S::Item> {
    use futures_util::StreamExt;
    stream.map(move |item| {
        let _slot = &slot;
        item
    })
}
