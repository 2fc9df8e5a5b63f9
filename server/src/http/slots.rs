//! The layer in front of the model's routes: a request takes a slot before its body is read
//! (`--max-concurrent-requests`; 429 with `Retry-After` when none is free) and the slot goes with
//! the response's body, so a streamed answer holds it until its last byte or until the client
//! goes away.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};

use super::{ApiError, AppState};
use crate::admission::RequestSlot;

pub async fn hold_slot(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let slot = match state.admission.admit() {
        Ok(slot) => slot,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let (parts, body) = next.run(req).await.into_parts();
    Response::from_parts(parts, Body::new(Held { body, _slot: slot }))
}

/// A response body holding its request's slot (freed when the body is dropped).
struct Held {
    body: Body,
    _slot: RequestSlot,
}

impl http_body::Body for Held {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
