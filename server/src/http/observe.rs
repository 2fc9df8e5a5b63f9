//! Cross-cutting layers: request ids, access logs and request metrics; the API-key check; the
//! panic → 500 response; the Prometheus recorder.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use subtle::ConstantTimeEq;
use tracing::Instrument;

use super::{ApiError, AppState};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request latency buckets in seconds: a chat answer takes ~0.1-30 s, a 16-image batch up to minutes.
const LATENCY_BUCKETS: &[f64] = &[0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0];
/// Engine step time buckets in seconds.
const STEP_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28];

/// The global Prometheus recorder, installed on first use (once per process: the engine's
/// `metrics` macros record into it too).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full("janus_http_request_duration_seconds".into()), LATENCY_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full("janus_step_seconds".into()), STEP_BUCKETS))
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full("janus_inter_token_seconds".into()), STEP_BUCKETS))
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full("janus_time_to_first_token_seconds".into()), LATENCY_BUCKETS)
            })
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full("janus_queue_wait_seconds".into()), LATENCY_BUCKETS))
            .expect("valid buckets");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if let Err(e) = metrics::set_global_recorder(recorder) {
            tracing::warn!("metrics recorder not installed (another one is): {e}");
        }
        metrics::describe_counter!("janus_http_requests_total", "HTTP requests by route, method and status");
        metrics::describe_histogram!(
            "janus_http_request_duration_seconds",
            metrics::Unit::Seconds,
            "Time to the response headers (streams: to the first byte), by route, method and status"
        );
        metrics::describe_gauge!("janus_queue_depth", "Requests waiting to start in the engine");
        metrics::describe_gauge!(
            "janus_model_info",
            "1 once the model is loaded; its id, quant, dtype and device as labels"
        );
        metrics::describe_gauge!("janus_batch_images", "Images in the running CFG batch");
        metrics::describe_counter!("janus_image_tokens_total", "Image tokens generated");
        metrics::describe_histogram!("janus_step_seconds", metrics::Unit::Seconds, "Time of one engine decode step");
        metrics::describe_histogram!(
            "janus_decode_seconds",
            metrics::Unit::Seconds,
            "Time of one VQ decode chunk (the longest the engine holds other work for a decode)"
        );
        metrics::describe_histogram!("janus_rows_per_step", "Rows in one engine step, by kind (images, text)");
        metrics::describe_histogram!(
            "janus_time_to_first_token_seconds",
            metrics::Unit::Seconds,
            "From a text request's acceptance to its first token"
        );
        metrics::describe_histogram!(
            "janus_inter_token_seconds",
            metrics::Unit::Seconds,
            "Between two tokens of a text answer"
        );
        metrics::describe_histogram!(
            "janus_queue_wait_seconds",
            metrics::Unit::Seconds,
            "From a request's acceptance to its start, by kind"
        );
        metrics::describe_gauge!("janus_max_text_sessions", "Most text answers decoded together");
        metrics::describe_gauge!(
            "janus_requests_in_flight",
            "Model requests from arrival to their last byte (--max-concurrent-requests bounds them)"
        );
        metrics::describe_gauge!(
            "janus_image_memory_bytes",
            metrics::Unit::Bytes,
            "Bytes of request images decoded or waiting as the model's input (--image-memory-bytes bounds them)"
        );
        metrics::describe_counter!(
            "janus_text_steps_retried_alone_total",
            "Text answers whose batched step failed and that took it again alone"
        );
        metrics::describe_counter!("janus_prompt_tokens_total", "Prompt tokens of finished text answers");
        metrics::describe_counter!(
            "janus_cached_prompt_tokens_total",
            "Prompt tokens of finished text answers read from the prefix cache instead of computed"
        );
        handle
    })
}

/// A client-given request id is kept when it is short and printable, else one is made.
fn request_id(req: &Request) -> HeaderValue {
    req.headers()
        .get(&REQUEST_ID)
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.to_str().is_ok())
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_str(&super::random_id("")).expect("hex is a valid header"))
}

/// Request id (echoed in `x-request-id`), a tracing span around the handler, one access-log
/// line, and the request counter and latency histogram by route, method and status.
pub async fn track(req: Request, next: Next) -> Response {
    prometheus();
    let id = request_id(&req);
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    let method = req.method().to_string();
    let span = tracing::info_span!("request", id = id.to_str().unwrap_or(""), %method, route = %route);
    let start = Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    let secs = start.elapsed().as_secs_f64();
    let status = resp.status().as_u16();
    let labels = [("route", route), ("method", method), ("status", status.to_string())];
    metrics::counter!("janus_http_requests_total", &labels).increment(1);
    metrics::histogram!("janus_http_request_duration_seconds", &labels).record(secs);
    span.in_scope(|| tracing::info!(status, ms = (secs * 1000.0).round() as u64, "served"));
    resp.headers_mut().insert(REQUEST_ID, id);
    resp
}

/// `Authorization: Bearer <key>` when `--api-key` is set; compared in constant time.
pub async fn require_api_key(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(key) = &state.cfg.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim);
        let Some(given) = given else {
            return ApiError::unauthorized(
                "missing API key: send it as `Authorization: Bearer <key>` (the server runs with --api-key)",
            )
            .into_response();
        };
        if !bool::from(given.as_bytes().ct_eq(key.as_bytes())) {
            return ApiError::unauthorized("incorrect API key").into_response();
        }
    }
    next.run(req).await
}

/// A handler that panicked answers 500 in the envelope; the server keeps serving.
pub fn panic_response(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!("handler panicked: {what}");
    ApiError::internal("the request handler panicked").into_response()
}
