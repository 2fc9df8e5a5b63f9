//! `POST /v1/images/describe`: a multipart upload (`image`, optional `question` and
//! `max_tokens`) → the model's answer about the image (for `curl -F image=@photo.jpg`).

use axum::body::Bytes;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, State};
use axum::Json;
use janus::limits::{CAPTION_MAX_TOKENS, DEFAULT_MAX_NEW_TOKENS, DEFAULT_QUESTION};
use janus::{Conversation, Message, Part, TextAsk};

use super::error::{CommonErrors, ErrorResponse};
use super::image_form::form_error;
use super::image_input::ImageSource;
use super::prepare::{self, PendingImage};
use super::types::{finish_reason, DescribeForm, DescribeResponse, Usage};
use super::{blocking, ApiError, AppState};
use crate::engine::AnswerOutput;

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
    let (answer, usage) = answer(&state, image, question, max_tokens_given, DEFAULT_MAX_NEW_TOKENS).await?;
    Ok(Json(DescribeResponse {
        text: answer.text,
        finish_reason: finish_reason(answer.finish_reason.unwrap_or(janus::FinishReason::Cancelled)).into(),
        usage,
    }))
}

/// The model's greedy answer to `question` about an uploaded image: at most `max_tokens`, or
/// when not given at most `default_max_tokens` where the context has room.
async fn answer(
    state: &AppState,
    image: Bytes,
    question: String,
    max_tokens: Option<i64>,
    default_max_tokens: usize,
) -> Result<(AnswerOutput, Usage), ApiError> {
    let info = state.model_info()?;
    let mut params = TextAsk { max_tokens, ..TextAsk::default() }.validate(info.context_length)?;
    params.default_max_new_tokens = default_max_tokens;
    let image = PendingImage { source: ImageSource::Upload(image), param: "image".into() };
    let conversation = Conversation::new(vec![Message::user(vec![Part::Image(image), Part::Text(question)])]);
    let request = prepare::chat(state, conversation, params).await?;
    let mut out = state.engine.chat(request).await?;
    let usage = Usage::new(out.prompt_tokens, out.completion_tokens(), out.cached_tokens);
    Ok((out.answers.pop().unwrap_or_default(), usage))
}

/// A text-to-image prompt from what the image shows, in the model's own words (its greedy answer
/// to [`DEFAULT_QUESTION`], at most [`CAPTION_MAX_TOKENS`] tokens, on one line), after
/// `instruction` when one is given: what variations and edits without a mask are drawn from. The
/// description loses words from its end until the prompt fits the model's context with the
/// image; an empty one stands as "an image".
pub async fn caption_prompt(state: &AppState, image: Bytes, instruction: Option<String>) -> Result<String, ApiError> {
    let (answer, _) = answer(state, image, DEFAULT_QUESTION.into(), None, CAPTION_MAX_TOKENS).await?;
    let mut words: Vec<String> = answer.text.split_whitespace().map(str::to_string).collect();
    if words.is_empty() {
        words.push("an image".into());
    }
    let prompter = state.prompter()?;
    blocking(move || {
        let prompt = |k: usize| match &instruction {
            Some(i) => format!("{i}. {}", words[..k].join(" ")),
            None => words[..k].join(" "),
        };
        let fits = |k: usize| prompter.t2i_prompt_ids(&prompt(k)).is_ok();
        // The most words that fit (at least one: a prompt that cannot fit is refused later).
        let (mut lo, mut hi) = (1, words.len());
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if fits(mid) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        prompt(lo)
    })
    .await
}
