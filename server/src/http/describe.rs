//! `POST /v1/images/describe`: a multipart upload (`image`, optional `question` and
//! `max_tokens`) → the model's answer about the image (for `curl -F image=@photo.jpg`).

use axum::extract::multipart::{MultipartError, MultipartRejection};
use axum::extract::{Multipart, State};
use axum::Json;
use janus::limits::DEFAULT_QUESTION;
use janus::{Conversation, Message, Part, TextAsk};

use super::error::{CommonErrors, ErrorResponse};
use super::image_input::ImageSource;
use super::prepare::{self, PendingImage};
use super::types::{finish_reason, DescribeForm, DescribeResponse, Usage};
use super::{ApiError, AppState};

fn form_error(e: MultipartError, limit: usize) -> ApiError {
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large(limit)
    } else {
        ApiError::bad_request(format!("cannot read the multipart form: {}", e.body_text()))
    }
}

/// The fields of a describe form, checked (the image is not decoded yet).
#[derive(Debug)]
pub struct DescribeInput {
    pub image: axum::body::Bytes,
    pub question: String,
    /// As given; checked against the model's context by `TextAsk::validate`.
    pub max_tokens: Option<i64>,
}

/// Reads and checks the describe form: one `image` file, optional `question` and `max_tokens`,
/// nothing else; over `limit` bytes → 413.
pub async fn describe_form(mut form: Multipart, limit: usize) -> Result<DescribeInput, ApiError> {
    let (mut image, mut question, mut max_tokens_text) = (None, None, None);
    while let Some(field) = form.next_field().await.map_err(|e| form_error(e, limit))? {
        let name = field.name().unwrap_or("").to_string();
        match name.as_str() {
            "image" if image.is_none() => image = Some(field.bytes().await.map_err(|e| form_error(e, limit))?),
            "question" if question.is_none() => question = Some(field.text().await.map_err(|e| form_error(e, limit))?),
            "max_tokens" if max_tokens_text.is_none() => {
                max_tokens_text = Some(field.text().await.map_err(|e| form_error(e, limit))?)
            }
            "image" | "question" | "max_tokens" => return Err(ApiError::field(&name, "given more than once")),
            _ => {
                return Err(ApiError::field(&name, "unknown form field; expected `image`, `question` or `max_tokens`"))
            }
        }
    }
    let image = image.ok_or_else(|| ApiError::field("image", "required: attach the image file as `image`"))?;
    let question = match question {
        None => DEFAULT_QUESTION.to_string(),
        Some(q) if q.trim().is_empty() => return Err(ApiError::field("question", "must not be empty")),
        Some(q) => q,
    };
    let max_tokens_given = match max_tokens_text {
        None => None,
        Some(t) => Some(
            t.trim()
                .parse::<i64>()
                .map_err(|_| ApiError::field("max_tokens", format!("must be an integer; got `{t}`")))?,
        ),
    };
    Ok(DescribeInput { image, question, max_tokens: max_tokens_given })
}

/// Describe an uploaded image, or answer a question about it (multipart form: `image` file,
/// optional `question` and `max_tokens`). For `curl -F image=@photo.jpg`.
#[utoipa::path(
    post,
    path = "/v1/images/describe",
    tag = "images",
    security(("api_key" = [])),
    request_body(content = DescribeForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The answer", body = DescribeResponse),
        (status = 400, description = "A missing or invalid form field, an undecodable image, or one \
            over --max-image-pixels", body = ErrorResponse),
        (status = 415, description = "An image format we do not read", body = ErrorResponse),
        (status = 429, description = "Queue full, --max-concurrent-requests requests open, or \
            --image-memory-bytes full; see Retry-After", body = ErrorResponse),
        CommonErrors,
    )
)]
pub async fn describe(
    State(state): State<AppState>,
    form: Result<Multipart, MultipartRejection>,
) -> Result<Json<DescribeResponse>, ApiError> {
    let form = form.map_err(|e| {
        ApiError::bad_request(format!(
            "send a multipart/form-data body with an `image` file (and optional `question`, `max_tokens`): {}",
            e.body_text()
        ))
    })?;
    let DescribeInput { image, question, max_tokens: max_tokens_given } =
        describe_form(form, state.cfg.max_body_bytes).await?;
    let (chars, max_chars) = (question.chars().count(), state.cfg.limits.max_message_chars);
    ApiError::check_count("question", chars, max_chars, "characters", "--max-message-chars")?;
    let info = state.model_info()?;
    let params = TextAsk { max_tokens: max_tokens_given, ..TextAsk::default() }.validate(info.context_length)?;
    let image = PendingImage { source: ImageSource::Upload(image), param: "image".into() };
    let conversation = Conversation::new(vec![Message::user(vec![Part::Image(image), Part::Text(question)])]);
    let request = prepare::chat(&state, conversation, params).await?;
    let mut out = state.engine.chat(request).await?;
    let usage = Usage::new(out.prompt_tokens, out.completion_tokens(), out.cached_tokens);
    let answer = out.answers.pop().unwrap_or_default();
    Ok(Json(DescribeResponse {
        text: answer.text,
        finish_reason: finish_reason(answer.finish_reason.unwrap_or(janus::FinishReason::Cancelled)).into(),
        usage,
    }))
}
