//! The OpenAI-compatible HTTP service (`janus serve`), on axum.
//!
//! Handlers validate requests, have them prepared on the admission stage's workers
//! ([`crate::admission`]: tokenized, images decoded and preprocessed within a memory budget),
//! hand them to an [`Engine`] and turn its events into OpenAI's responses; they never block the
//! runtime (preparation, PNG encoding and base64 run on blocking threads). Dropping a handler's event receiver cancels the
//! request in the engine: this happens when a client disconnects, for plain and streamed
//! responses alike.
//!
//! | file | what |
//! | --- | --- |
//! | `mod.rs` | [`State`], [`router`]: routes and layers |
//! | `config.rs` | [`HttpConfig`] and its defaults |
//! | `error.rs` | [`ApiError`]: the one mapping from failures to statuses, OpenAI's envelope; the JSON extractor |
//! | `types.rs` | OpenAI request/response bodies |
//! | `images.rs` | `/v1/images/generations` (JSON and SSE) |
//! | `describe.rs` | `/v1/images/describe` (multipart); `caption`: the model's description of an image |
//! | `edits.rs` | `/v1/images/edits` (multipart): masked edits with the VQ encoder's tokens kept, or a redraw without a mask |
//! | `variations.rs` | `/v1/images/variations` (multipart): drawn from the model's description of the image |
//! | `image_form.rs` | the multipart forms of edits and variations |
//! | `image_output.rs` | `size` (resized from the native image) and `output_format` (PNG, JPEG, WebP) of returned images |
//! | `chat.rs` | `/v1/chat/completions` (JSON and SSE): messages and content parts → a conversation |
//! | `responses.rs` | `/v1/responses` (JSON and SSE): a Responses request → a chat plan; `responses_types.rs` its bodies and events |
//! | `response_store.rs` | the bounded in-memory store of responses behind `previous_response_id` |
//! | `slots.rs` | the layer that gives every model request a slot (`--max-concurrent-requests`) until its last byte |
//! | `prepare.rs` | requests made ready for the engine on the admission stage's workers: tokenized, images decoded within the image memory |
//! | `image_input.rs` | images in requests: data URLs, http(s) URLs (with `remote.rs`), uploads → their bytes |
//! | `sse.rs` | server-sent event helpers shared by the streamed routes |
//! | `files.rs` | the bounded, expiring in-memory store behind `/v1/files/{id}/content` |
//! | `probes.rs` | `/health`, `/ready`, `/v1/models`, `/metrics`, `/openapi.json`, fallbacks |
//! | `observe.rs` | request ids, access logs, request metrics, the Prometheus recorder; API-key check |
//! | `openapi.rs` | the OpenAPI document, from the handlers' annotations |
//! | `serve.rs` | `janus serve`: flags, runtime, engine, listener, graceful shutdown |
//! | `web.rs` | the browser playground at `/` (`assets/web/`, embedded) |

pub mod chat;
mod config;
pub mod describe;
pub mod edits;
pub mod error;
mod files;
mod image_form;
pub mod image_input;
pub mod image_output;
pub mod images;
mod logprobs;
mod observe;
mod openapi;
pub mod prepare;
mod probes;
pub mod remote;
mod response_store;
pub mod responses;
pub mod responses_types;
mod serve;
mod slots;
pub mod sse;
mod structured;
pub mod types;
pub mod variations;
mod web;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method};
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use config::{HttpConfig, RequestLimits, DEFAULT_IMAGE_MEMORY_BYTES};
pub use error::ApiError;
pub use openapi::ApiDoc;
pub use serve::{run, ServeArgs};

use crate::admission::Admission;
use crate::engine::{Engine, EngineClient, EngineError, EngineStatus, ModelInfo};

/// Shared by all handlers.
pub struct State {
    pub engine: EngineClient,
    pub cfg: HttpConfig,
    /// Request slots, preparation workers and the image memory budget.
    pub admission: Admission,
    pub files: files::FileStore,
    /// Responses kept for `previous_response_id` (`--response-store-size`).
    pub responses: response_store::ResponseStore,
    /// Set when shutdown starts: `/ready` answers 503.
    pub draining: AtomicBool,
    /// One permit per open streamed response (`--max-streams`).
    streams: Arc<Semaphore>,
}

pub type AppState = Arc<State>;

impl State {
    pub fn new(engine: Arc<dyn Engine>, cfg: HttpConfig) -> AppState {
        let files = files::FileStore::new(cfg.max_files, cfg.file_ttl);
        let streams = Arc::new(Semaphore::new(cfg.max_streams.max(1)));
        let admission = Admission::new(cfg.max_concurrent_requests, cfg.prepare_workers, cfg.image_memory_bytes);
        let engine = EngineClient::new(engine);
        let responses = response_store::ResponseStore::new(cfg.response_store_size, cfg.response_store_bytes);
        Arc::new(Self { engine, cfg, admission, files, responses, draining: AtomicBool::new(false), streams })
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// A slot for one streamed response, to be held by the stream (see [`sse::hold`]) until it ends
    /// or the client goes away; 429 when `--max-streams` streams are open.
    pub fn stream_slot(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.streams.clone().try_acquire_owned().map_err(|_| ApiError::too_many_streams(self.cfg.max_streams))
    }

    /// Streamed responses open now.
    pub fn open_streams(&self) -> usize {
        self.cfg.max_streams.max(1) - self.streams.available_permits()
    }

    /// The model's description, or the 503 that says why there is none yet.
    pub fn model_info(&self) -> Result<ModelInfo, ApiError> {
        if self.is_draining() {
            return Err(EngineError::ShuttingDown.into());
        }
        match self.engine.status() {
            EngineStatus::Ready => {
                self.engine.info().ok_or_else(|| ApiError::internal("the engine is ready but describes no model"))
            }
            EngineStatus::Loading => Err(EngineError::Loading.into()),
            EngineStatus::Failed(m) => Err(EngineError::LoadFailed(m).into()),
        }
    }

    /// What prepares requests for the loaded model, or the 503 that says why there is none.
    pub fn prompter(&self) -> Result<janus::Prompter, ApiError> {
        self.model_info()?;
        self.engine.prompter().ok_or_else(|| ApiError::internal("the engine is ready but has no prompter"))
    }

    /// What preparing a request with `prompter` takes from this server's state and flags.
    pub fn preparer<'a>(&'a self, prompter: &'a janus::Prompter) -> prepare::Preparer<'a> {
        prepare::Preparer {
            prompter,
            memory: self.admission.memory(),
            limits: &self.cfg.limits,
            max_fetch_bytes: self.cfg.max_body_bytes,
        }
    }
}

/// The whole service for an engine, without binding a port (tests drive it with `oneshot`).
#[allow(dead_code)] // for tests and embedders; `serve` builds the state itself
pub fn router(engine: Arc<dyn Engine>, cfg: HttpConfig) -> Router {
    app(State::new(engine, cfg))
}

/// Routes and layers over existing state.
///
/// Auth: every `/v1/*` route needs the key when `--api-key` is set, except
/// `/v1/files/{id}/content`, whose unguessable id is itself the credential (as OpenAI's image
/// URLs are signed links that a browser can open). `/health`, `/ready`, `/metrics` and
/// `/openapi.json` are open, for probes and scrapers.
pub fn app(state: AppState) -> Router {
    // The model's routes: each request holds a slot from arrival to its last byte.
    let model = Router::new()
        .route("/v1/images/generations", post(images::generate))
        .route("/v1/images/describe", post(describe::describe))
        .route("/v1/images/edits", post(edits::edit))
        .route("/v1/images/variations", post(variations::create))
        .route("/v1/chat/completions", post(chat::completions))
        .route("/v1/responses", post(responses::create))
        .route_layer(middleware::from_fn_with_state(state.clone(), slots::hold_slot));
    let protected = Router::new()
        .merge(model)
        .route("/v1/models", get(probes::models))
        .route("/v1/models/{*id}", get(probes::model))
        .route_layer(middleware::from_fn_with_state(state.clone(), observe::require_api_key));
    let open = Router::new()
        .route("/health", get(probes::health))
        .route("/ready", get(probes::ready))
        .route("/metrics", get(probes::metrics))
        .route("/openapi.json", get(probes::openapi))
        .route("/v1/files/{id}/content", get(files::content));
    let mut app = Router::new()
        .merge(protected)
        .merge(open)
        .merge(web::routes())
        .fallback(probes::not_found)
        .method_not_allowed_fallback(probes::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.cfg.max_body_bytes))
        .layer(CatchPanicLayer::custom(observe::panic_response))
        .layer(middleware::from_fn(observe::track));
    if let Some(cors) = cors_layer(&state.cfg.cors_origins) {
        app = app.layer(cors);
    }
    app.with_state(state)
}

fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers([
                axum::http::header::AUTHORIZATION,
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderName::from_static("x-request-id"),
            ])
            .expose_headers([
                axum::http::HeaderName::from_static("x-request-id"),
                axum::http::HeaderName::from_static("x-seed"),
            ]),
    )
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A random 128-bit id in hex, after `prefix` (unguessable: file ids are credentials).
pub fn random_id(prefix: &str) -> String {
    format!("{prefix}{:032x}", rand::random::<u128>())
}

/// Runs blocking work (image decode, PNG encode) off the async runtime.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::internal(format!("a worker task failed: {e}")))
}
