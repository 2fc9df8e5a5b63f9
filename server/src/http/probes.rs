//! Probes, the model list, metrics, the OpenAPI document and the fallbacks.

use std::sync::OnceLock;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use utoipa::OpenApi;

use super::error::ErrorResponse;
use super::types::{HealthResponse, ModelCard, ModelList, ReadyResponse};
use super::{ApiError, AppState};
use crate::engine::ModelInfo;

/// Alive: always 200 while the process serves HTTP (loading or not).
#[utoipa::path(get, path = "/health", tag = "probes", responses((status = 200, description = "Alive", body = HealthResponse)))]
pub async fn health() -> Json<HealthResponse> {
    Json(HealthResponse { status: "ok".into() })
}

/// Ready for traffic: 200 once the model is loaded; 503 (with the reason) while loading, after
/// a failed load, and while shutting down.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "probes",
    responses(
        (status = 200, description = "The model is loaded", body = ReadyResponse),
        (status = 503, description = "Loading, failed to load, or shutting down", body = ErrorResponse),
    )
)]
pub async fn ready(State(state): State<AppState>) -> Result<Json<ReadyResponse>, ApiError> {
    let info = state.model_info()?;
    Ok(Json(ReadyResponse { status: "ready".into(), model: info.id }))
}

fn card(info: ModelInfo) -> ModelCard {
    ModelCard {
        id: info.id,
        object: "model".into(),
        created: info.created,
        owned_by: "deepseek-ai".into(),
        quant: info.quant.to_string(),
        dtype: info.dtype,
        device: info.device,
    }
}

/// The loaded model, in OpenAI's list shape.
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "models",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The loaded model", body = ModelList),
        (status = 401, description = "Missing or wrong API key", body = ErrorResponse),
        (status = 503, description = "Loading, failed to load, or shutting down", body = ErrorResponse),
    )
)]
pub async fn models(State(state): State<AppState>) -> Result<Json<ModelList>, ApiError> {
    let info = state.model_info()?;
    Ok(Json(ModelList { object: "list".into(), data: vec![card(info)] }))
}

/// One model, by id.
#[utoipa::path(
    get,
    path = "/v1/models/{id}",
    tag = "models",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "The model id (the `--model` value)")),
    responses(
        (status = 200, description = "The model", body = ModelCard),
        (status = 401, description = "Missing or wrong API key", body = ErrorResponse),
        (status = 404, description = "Unknown model id", body = ErrorResponse),
        (status = 503, description = "Loading, failed to load, out of memory, or shutting down", body = ErrorResponse),
    )
)]
pub async fn model(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<ModelCard>, ApiError> {
    let info = state.model_info()?;
    if info.id != id {
        return Err(ApiError::not_found(format!("no model `{id}`; this server serves `{}`", info.id)));
    }
    Ok(Json(card(info)))
}

/// Prometheus text: request counts and latency by route, method and status; queue depth; the
/// engine's batch sizes, image tokens and step times.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "probes",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String))
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let handle = super::observe::prometheus();
    metrics::gauge!("janus_queue_depth").set(state.engine.queue_depth() as f64);
    metrics::gauge!("janus_requests_in_flight").set(state.admission.in_flight() as f64);
    metrics::gauge!("janus_image_memory_bytes").set(state.admission.memory().in_use() as f64);
    if let Some(info) = state.engine.info() {
        let labels =
            [("model", info.id), ("quant", info.quant.to_string()), ("dtype", info.dtype), ("device", info.device)];
        metrics::gauge!("janus_model_info", &labels).set(1.0);
    }
    handle.run_upkeep();
    let mut resp = handle.render().into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    resp
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "probes",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object))
)]
pub async fn openapi() -> Response {
    static DOC: OnceLock<String> = OnceLock::new();
    let doc = DOC.get_or_init(|| super::ApiDoc::openapi().to_pretty_json().expect("the document serializes"));
    let mut resp = doc.clone().into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for `{}`", uri.path()))
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}
