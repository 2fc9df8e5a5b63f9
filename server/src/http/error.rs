//! The one place where failures become HTTP statuses (by their kind: engine errors, the
//! library's typed errors, validation), in OpenAI's error envelope
//! `{"error": {"message", "type", "param", "code"}}`; and the JSON body extractor whose
//! rejections (syntax, shape, unknown fields, size) land in the same envelope.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa::{IntoResponses, ToSchema};

use super::AppState;
use janus::{Field, Invalid};

use crate::admission::AdmissionError;
use crate::engine::EngineError;

/// OpenAI's error envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for people; names the field and the limit for bad requests.
    pub message: String,
    /// `invalid_request_error`, `rate_limit_error` or `server_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The offending request field (a JSON path such as `messages[0].content[1].image_url.url`).
    pub param: Option<String>,
    /// A stable machine-readable code, e.g. `invalid_value`, `queue_full`, `model_loading`.
    pub code: Option<String>,
}

/// The error responses every model route can give, for the routes' `#[utoipa::path]` lists
/// (each route adds its own 400, 415 and 429 rows).
#[derive(IntoResponses)]
#[allow(dead_code)] // a documentation type: never built, only read by utoipa
pub enum CommonErrors {
    /// Missing or wrong API key
    #[response(status = 401)]
    Unauthorized(ErrorResponse),
    /// Body over --max-body-bytes
    #[response(status = 413)]
    TooLarge(ErrorResponse),
    /// Internal fault (the server keeps serving)
    #[response(status = 500)]
    Internal(ErrorResponse),
    /// Loading, failed to load, out of memory, or shutting down
    #[response(status = 503)]
    Unavailable(ErrorResponse),
}

/// A failed request. Every handler error is one of these; `into_response` is the only mapping
/// from failures to statuses.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Seconds for `Retry-After` (429 queue full, 503 out of memory).
    pub retry_after: Option<u64>,
}

const INVALID: &str = "invalid_request_error";
const SERVER: &str = "server_error";

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), kind, param: None, code: Some(code), retry_after: None }
    }

    fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// The same error, naming `to` where it named `from` (a field another API calls otherwise).
    pub fn renamed(mut self, from: &str, to: &str) -> Self {
        if self.param.as_deref() == Some(from) && from != to {
            self.param = Some(to.to_string());
            self.message = self.message.replacen(&format!("`{from}`"), &format!("`{to}`"), 1);
        }
        self
    }

    /// 400 for a field outside its limits; the message should name the limit.
    pub fn field(param: &str, message: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, INVALID, "invalid_value", format!("`{param}`: {message}")).with_param(param)
    }

    /// 400 when `count` of `what` in `param` is over `max`, naming the flag that sets it.
    pub fn check_count(param: &str, count: usize, max: usize, what: &str, flag: &str) -> Result<(), Self> {
        if count > max {
            return Err(Self::field(param, format!("at most {max} {what} ({flag}); got {count}")));
        }
        Ok(())
    }

    /// 400 for a request that is wrong as a whole.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, INVALID, "invalid_request", message)
    }

    /// 400 for a body that is not valid JSON.
    pub fn invalid_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, INVALID, "invalid_json", message)
    }

    /// 400 for a field that a request of this server does not support.
    pub fn unsupported(param: &str, message: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, INVALID, "unsupported_value", format!("`{param}`: {message}"))
            .with_param(param)
    }

    /// 400: the image bytes could not be decoded (corrupt, truncated, too many pixels).
    pub fn invalid_image(param: &str, message: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, INVALID, "invalid_image", format!("`{param}`: {message}")).with_param(param)
    }

    /// 415: the image is in a format we do not read.
    pub fn unsupported_image(param: &str, message: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            INVALID,
            "unsupported_image_format",
            format!("`{param}`: {message}"),
        )
        .with_param(param)
    }

    /// 429: `--max-streams` streamed responses are already open.
    pub fn too_many_streams(limit: usize) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "too_many_streams",
                format!(
                    "{limit} streamed responses are open, this server's limit (--max-streams); retry later, \
                     or ask without `stream`"
                ),
            )
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, INVALID, "invalid_api_key", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, INVALID, "not_found", message)
    }

    pub fn method_not_allowed() -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, INVALID, "method_not_allowed", "method not allowed on this path")
    }

    /// 413 with the configured limit.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            INVALID,
            "request_too_large",
            format!("the request body is larger than the limit of {limit} bytes (--max-body-bytes)"),
        )
    }

    /// 500: a fault in this server; it keeps serving.
    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, SERVER, "internal_error", format!("internal error: {message}"))
    }

    pub fn body(&self) -> ErrorResponse {
        ErrorResponse {
            error: ErrorBody {
                message: self.message.clone(),
                kind: self.kind.to_string(),
                param: self.param.clone(),
                code: self.code.map(str::to_string),
            },
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

/// The JSON field that carries a library [`Field`] in this API.
pub fn param_name(field: Field) -> &'static str {
    match field {
        Field::CfgWeight => "guidance_scale",
        other => other.name(),
    }
}

impl From<Invalid> for ApiError {
    /// 400 naming the field as this API calls it.
    fn from(i: Invalid) -> Self {
        Self::field(param_name(i.field), i.reason)
    }
}

impl ApiError {
    /// An image that cannot be used, by the library's error kind: 415 for a format we do not
    /// read, 400 for bytes that do not decode or an image over `--max-image-pixels`; anything
    /// else as [`From<janus::Error>`] maps it.
    pub fn image(param: &str, e: janus::Error) -> Self {
        match e {
            janus::Error::UnsupportedImage { .. } => Self::unsupported_image(param, e),
            janus::Error::InvalidImage(m) => Self::invalid_image(param, m),
            e @ janus::Error::ImageTooLarge { .. } => Self::new(
                StatusCode::BAD_REQUEST,
                INVALID,
                "image_too_large",
                format!("`{param}`: {e} (--max-image-pixels)"),
            )
            .with_param(param),
            other => other.into(),
        }
    }

    /// The admission stage's refusal of an image (`param`): one that could never fit in the
    /// image memory is 400 naming it; the others as [`From<AdmissionError>`] maps them.
    pub fn admission(param: &str, e: AdmissionError) -> Self {
        match e {
            e @ AdmissionError::OverBudget { .. } => {
                Self::new(StatusCode::BAD_REQUEST, INVALID, "image_too_large", format!("`{param}`: {e}"))
                    .with_param(param)
            }
            other => other.into(),
        }
    }
}

impl From<AdmissionError> for ApiError {
    fn from(e: AdmissionError) -> Self {
        let msg = e.to_string();
        let busy = |code| Self {
            retry_after: Some(1),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", code, msg.clone())
        };
        match e {
            AdmissionError::TooManyRequests { .. } => busy("too_many_requests"),
            AdmissionError::MemoryFull { .. } => busy("image_memory_full"),
            AdmissionError::OverBudget { .. } => Self::new(StatusCode::BAD_REQUEST, INVALID, "image_too_large", msg),
            AdmissionError::WorkerFailed(_) => Self::internal(msg),
        }
    }
}

impl From<janus::Error> for ApiError {
    /// The library's errors by kind: a request's fault is a 400 (a field named where the library
    /// names one), the device's or ours as the engine maps them (503 out of memory, else 500).
    fn from(e: janus::Error) -> Self {
        match e {
            e @ (janus::Error::UnsupportedImage { .. }
            | janus::Error::InvalidImage(_)
            | janus::Error::ImageTooLarge { .. }) => Self::bad_request(e.to_string()),
            other => EngineError::from(other).into(),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let msg = e.to_string();
        let unavailable = |code| Self::new(StatusCode::SERVICE_UNAVAILABLE, SERVER, code, msg.clone());
        match e {
            EngineError::QueueFull { retry_after_s, .. } => Self {
                retry_after: Some(retry_after_s.max(1)),
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", "queue_full", msg.clone())
            },
            EngineError::Loading => unavailable("model_loading"),
            EngineError::LoadFailed(_) => unavailable("model_load_failed"),
            EngineError::OutOfMemory(_) => Self { retry_after: Some(1), ..unavailable("out_of_memory") },
            EngineError::ShuttingDown => unavailable("shutting_down"),
            EngineError::Invalid(i) => i.into(),
            EngineError::PromptTooLong { .. } => {
                Self::new(StatusCode::BAD_REQUEST, INVALID, "context_length_exceeded", msg)
            }
            EngineError::Internal(_) => Self::new(StatusCode::INTERNAL_SERVER_ERROR, SERVER, "internal_error", msg),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = self.status.as_u16(), code = self.code, "{}", self.message);
        } else {
            tracing::debug!(status = self.status.as_u16(), code = self.code, "{}", self.message);
        }
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

/// A JSON body parsed with the field path in every error, mapped into the envelope:
/// syntax errors, wrong types, missing or unknown fields → 400 naming the field; a body over
/// `--max-body-bytes` → 413. The content type is not checked (curl users forget it).
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large(state.cfg.max_body_bytes)
            } else {
                ApiError::bad_request(format!("cannot read the request body: {}", e.body_text()))
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Deserializes `bytes`, naming the field at fault.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid_json("the request body is empty; send a JSON object"));
    }
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::invalid_json("the request body must be a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        json_error(path, e.into_inner())
    })?;
    de.end().map_err(|e| json_error(".".into(), e))?;
    Ok(value)
}

fn json_error(path: String, inner: serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match inner.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::invalid_json(format!("the request body is not valid JSON: {inner}"))
        }
        Category::Data => {
            let text = inner.to_string();
            // "unknown field `foo`, expected ...": the field itself is the param.
            // The path names the field, unknown ones included ("." is the body itself).
            let param = path;
            if param == "." {
                ApiError::bad_request(format!("invalid request: {text}"))
            } else {
                ApiError::field(&param, text)
            }
        }
    }
}
