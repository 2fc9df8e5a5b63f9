//! `POST /v1/chat/completions`: text and `data:image/...;base64,` image parts → Janus's
//! understanding path; JSON or `chat.completion.chunk` server-sent events ending with `[DONE]`.
//! The request's size is checked first (messages, characters, images: `--max-messages`,
//! `--max-message-chars`, `--max-request-chars`, `--max-images-per-request`), then it is prepared
//! on a worker (`prepare.rs`) and handed to the engine.

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::{Stream, StreamExt};
use janus::input::tokenizer::JanusTokenizer;
use janus::limits::{MAX_STOP_SEQUENCES, MAX_TEXT_ANSWERS};
use janus::sampling::logprobs::TokenLogprobs;
use janus::text::conversation::DEFAULT_SYSTEM_PROMPT;
use janus::{Conversation, Field, Message, Part, Role, TextAsk, TextParams};
use serde_json::Value;
use std::sync::Arc;

use super::error::{param_name, ApiJson, CommonErrors, ErrorResponse};
use super::image_input::ImageSource;
use super::prepare::{self, PendingImage};
use super::types::{
    finish_reason, AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatRole,
    ChoiceLogprobs, ChunkChoice, ChunkDelta, Usage,
};
use super::{logprobs, structured};
use super::{sse, unix_now, ApiError, AppState, HttpConfig};
use crate::engine::ChatEvent;

const MAX_TEXT_ANSWERS_I64: i64 = MAX_TEXT_ANSWERS as i64;

/// A part before its image is read.
type Pending = Part<PendingImage>;

/// One message's content → parts, with precise errors. An assistant message may have no content
/// (as after a tool call); it is empty then.
fn content_parts(
    content: Option<Value>,
    role: ChatRole,
    i: usize,
    allow_remote: bool,
) -> Result<Vec<Pending>, ApiError> {
    let param = format!("messages[{i}].content");
    let parts = match content {
        None | Some(Value::Null) if role == ChatRole::Assistant => return Ok(Vec::new()),
        None | Some(Value::Null) => return Err(ApiError::field(&param, "required")),
        Some(Value::String(s)) => return Ok(vec![Part::Text(s)]),
        Some(Value::Array(parts)) => parts,
        Some(_) => return Err(ApiError::field(&param, "must be a string or an array of content parts")),
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, part) in parts.into_iter().enumerate() {
        let pp = format!("{param}[{j}]");
        let Value::Object(mut obj) = part else {
            return Err(ApiError::field(&pp, "must be an object such as {\"type\": \"text\", \"text\": \"...\"}"));
        };
        let kind = match obj.remove("type") {
            Some(Value::String(t)) => t,
            _ => return Err(ApiError::field(&format!("{pp}.type"), "required: `text` or `image_url`")),
        };
        let (field, pending) = match kind.as_str() {
            "text" => match obj.remove("text") {
                Some(Value::String(t)) => ("text", Part::Text(t)),
                _ => return Err(ApiError::field(&format!("{pp}.text"), "required: a string")),
            },
            "image_url" => {
                if role != ChatRole::User {
                    return Err(ApiError::field(&pp, "images are only accepted in user messages"));
                }
                let url_param = format!("{pp}.image_url.url");
                let url = match obj.remove("image_url") {
                    Some(Value::String(u)) => u,
                    Some(Value::Object(mut iu)) => {
                        let url = match iu.remove("url") {
                            Some(Value::String(u)) => u,
                            _ => return Err(ApiError::field(&url_param, "required: a string")),
                        };
                        match iu.remove("detail") {
                            None | Some(Value::Null) | Some(Value::String(_)) => {}
                            Some(_) => {
                                return Err(ApiError::field(&format!("{pp}.image_url.detail"), "must be a string"))
                            }
                        }
                        if let Some(k) = iu.keys().next() {
                            return Err(ApiError::field(
                                &format!("{pp}.image_url.{k}"),
                                "unknown field, expected `url` or `detail`",
                            ));
                        }
                        url
                    }
                    _ => return Err(ApiError::field(&url_param, "required: a string")),
                };
                let source = ImageSource::parse(&url, &url_param, allow_remote)?;
                ("image_url", Part::Image(PendingImage { source, param: url_param }))
            }
            other => {
                return Err(ApiError::unsupported(
                    &format!("{pp}.type"),
                    format!("content part type `{other}` is not supported; use `text` or `image_url`"),
                ))
            }
        };
        if let Some(k) = obj.keys().next() {
            return Err(ApiError::field(&format!("{pp}.{k}"), format!("unknown field, expected `type` or `{field}`")));
        }
        out.push(pending);
    }
    Ok(out)
}

/// Validated chat request, before its images are read.
pub struct ChatPlan {
    pub conversation: Conversation<PendingImage>,
    pub params: TextParams,
    /// Answers asked for.
    pub n: usize,
    /// The field the structured-output constraint came from (`response_format` or
    /// `structured_outputs`): a spec that does not compile is its fault.
    pub constraint_param: &'static str,
    pub stream: bool,
    pub include_usage: bool,
}

/// `stop`: null, a string, or an array of strings (their number and lengths are checked with
/// the other parameters).
fn stop_sequences(stop: Option<Value>) -> Result<Vec<String>, ApiError> {
    let bad = || ApiError::field("stop", format!("must be a string or an array of up to {MAX_STOP_SEQUENCES} strings"));
    match stop {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s]),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(bad()),
            })
            .collect(),
        Some(_) => Err(bad()),
    }
}

/// Checks every field and content part of a chat request, and its size against `cfg.limits`
/// (the handler's first step); `context_length` bounds `max_tokens`.
pub fn plan(req: ChatCompletionRequest, cfg: &HttpConfig, context_length: usize) -> Result<ChatPlan, ApiError> {
    let (max_tokens, max_tokens_param) = match (req.max_completion_tokens, req.max_tokens) {
        (Some(n), _) => (Some(n), "max_completion_tokens"),
        (None, n) => (n, param_name(Field::MaxTokens)),
    };
    let (constraint, constraint_param) = structured::chat_constraint(req.response_format, req.structured_outputs)?;
    let ask = TextAsk {
        temperature: req.temperature,
        top_p: req.top_p,
        seed: req.seed,
        max_tokens,
        stop: stop_sequences(req.stop)?,
        logprobs: req.logprobs,
        top_logprobs: req.top_logprobs,
        frequency_penalty: req.frequency_penalty,
        presence_penalty: req.presence_penalty,
        repetition_penalty: req.repetition_penalty,
        constraint,
    };
    let params = ask.validate(context_length).map_err(|e| match e.field {
        Field::MaxTokens => ApiError::field(max_tokens_param, e.reason),
        _ => e.into(),
    })?;
    let n = match req.n.unwrap_or(1) {
        n @ 1..=MAX_TEXT_ANSWERS_I64 => n as usize,
        n => return Err(ApiError::field("n", format!("must be between 1 and {MAX_TEXT_ANSWERS}; got {n}"))),
    };
    let limits = &cfg.limits;
    ApiError::check_count("messages", req.messages.len(), limits.max_messages, "messages", "--max-messages")?;
    let mut system: Option<Vec<String>> = None;
    let mut messages = Vec::new();
    let (mut images, mut chars) = (0, 0);
    for (i, m) in req.messages.into_iter().enumerate() {
        let parts = content_parts(m.content, m.role, i, cfg.allow_remote_images)?;
        let message_chars: usize = (parts.iter())
            .map(|p| match p {
                Part::Text(t) => t.chars().count(),
                Part::Image(_) => 0,
            })
            .sum();
        let param = format!("messages[{i}].content");
        ApiError::check_count(&param, message_chars, limits.max_message_chars, "characters", "--max-message-chars")?;
        chars += message_chars;
        ApiError::check_count("messages", chars, limits.max_request_chars, "characters in all", "--max-request-chars")?;
        match m.role {
            ChatRole::System | ChatRole::Developer => {
                let texts = parts.into_iter().filter_map(|p| match p {
                    Part::Text(t) => Some(t),
                    Part::Image(_) => None,
                });
                system.get_or_insert_with(Vec::new).extend(texts);
            }
            ChatRole::User => {
                images += parts.iter().filter(|p| matches!(p, Part::Image(_))).count();
                ApiError::check_count(
                    "messages",
                    images,
                    limits.max_images,
                    "images per request",
                    "--max-images-per-request",
                )?;
                messages.push(Message { role: Role::User, parts });
            }
            ChatRole::Assistant => messages.push(Message { role: Role::Assistant, parts }),
        }
    }
    match messages.last() {
        Some(Message { role: Role::User, .. }) => {}
        Some(_) => return Err(ApiError::field("messages", "the last message must be from the user")),
        None => return Err(ApiError::field("messages", "must hold at least one user message")),
    }
    let system = system.map_or_else(|| DEFAULT_SYSTEM_PROMPT.to_string(), |s| s.join("\n"));
    Ok(ChatPlan {
        conversation: Conversation { system, messages },
        params,
        n,
        constraint_param,
        stream: req.stream.unwrap_or(false),
        include_usage: req.stream_options.and_then(|o| o.include_usage).unwrap_or(false),
    })
}

/// Chat with text and images (OpenAI's Chat Completions API). With `stream: true`, server-sent
/// `chat.completion.chunk` events ending with `data: [DONE]`; a failure after the stream started
/// is sent as `data: {"error": {...}}`.
#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    tag = "chat",
    security(("api_key" = [])),
    request_body = ChatCompletionRequest,
    responses(
        (status = 200, description = "The answer (JSON), or with `stream: true` an event stream of \
            ChatCompletionChunk ending with `data: [DONE]`", body = ChatCompletion),
        (status = 400, description = "A field is invalid or over its limit (named in `param`: \
            --max-messages, --max-message-chars, --max-request-chars, --max-images-per-request, \
            --max-image-pixels), the prompt does not fit in the context, or an image cannot be \
            decoded", body = ErrorResponse),
        (status = 415, description = "An image format we do not read", body = ErrorResponse),
        (status = 429, description = "Queue full, --max-streams streams or --max-concurrent-requests \
            requests open, or --image-memory-bytes full; see Retry-After", body = ErrorResponse),
        CommonErrors,
    )
)]
pub async fn completions(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    // The context bounds max_tokens; while the model loads, the 503 below answers first.
    let context_length = state.engine.info().map_or(usize::MAX, |i| i.context_length);
    let ChatPlan { conversation, params, n, constraint_param, stream, include_usage } =
        plan(req, &state.cfg, context_length)?;
    let info = state.model_info()?;
    let tokenizer = state.prompter()?.tokenizer().clone();
    let logprobs = params.logprobs.is_some();
    let mut request = (prepare::chat(&state, conversation, params).await)
        .map_err(|e| e.renamed(param_name(Field::ResponseFormat), constraint_param))?;
    request.n = n;
    let ids = Ids { id: super::random_id("chatcmpl-"), created: unix_now(), model: info.id, tokenizer, logprobs };
    if stream {
        let slot = state.stream_slot()?;
        let (prompt_tokens, events) = state.engine.chat_stream(request).await?;
        let events = sse::hold(chunk_events(events, ids, n, prompt_tokens, include_usage), slot);
        return Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response());
    }
    let out = state.engine.chat(request).await?;
    let usage = Usage::new(out.prompt_tokens, out.completion_tokens(), out.cached_tokens);
    let choices = (out.answers.into_iter().enumerate())
        .map(|(index, a)| ChatChoice {
            index,
            logprobs: ids.logprobs(&a.logprobs),
            message: AssistantMessage { role: "assistant".into(), content: a.text, refusal: None },
            finish_reason: finish_reason(a.finish_reason.unwrap_or(janus::FinishReason::Cancelled)).into(),
        })
        .collect();
    Ok(Json(ChatCompletion {
        id: ids.id,
        object: "chat.completion".into(),
        created: ids.created,
        model: ids.model,
        choices,
        usage,
    })
    .into_response())
}

struct Ids {
    id: String,
    created: u64,
    model: String,
    tokenizer: Arc<JanusTokenizer>,
    /// Whether the request asked for log-probabilities.
    logprobs: bool,
}

impl Ids {
    fn event(&self, choices: Vec<ChunkChoice>, usage: Option<Usage>) -> Event {
        sse::json(
            None,
            &ChatCompletionChunk {
                id: self.id.clone(),
                object: "chat.completion.chunk".into(),
                created: self.created,
                model: self.model.clone(),
                choices,
                usage,
            },
        )
    }

    fn chunk(&self, index: usize, delta: ChunkDelta, finish: Option<&str>, logprobs: Option<ChoiceLogprobs>) -> Event {
        let choice = ChunkChoice { index, delta, finish_reason: finish.map(str::to_string), logprobs };
        self.event(vec![choice], None)
    }

    /// OpenAI's `logprobs` of some tokens, when the request asked for them.
    fn logprobs(&self, tokens: &[TokenLogprobs]) -> Option<ChoiceLogprobs> {
        self.logprobs.then(|| logprobs::choice_logprobs(&self.tokenizer, tokens))
    }

    fn usage_chunk(&self, usage: Usage) -> Event {
        self.event(vec![], Some(usage))
    }
}

/// Engine events → `chat.completion.chunk` events: each answer's role first, then its text (and
/// log-probabilities) as it comes and its finish reason; once all `n` are done, the usage (if
/// asked) and `[DONE]`. The SSE stream owns the event stream, so a client that goes away cancels
/// the answers.
fn chunk_events(
    events: impl Stream<Item = ChatEvent> + Send + 'static,
    ids: Ids,
    n: usize,
    prompt_tokens: usize,
    include_usage: bool,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let role = || ChunkDelta { role: Some("assistant".into()), content: Some(String::new()) };
    let first: Vec<Event> = (0..n).map(|i| ids.chunk(i, role(), None, None)).collect();
    let (mut left, mut completion, mut cached) = (n, 0, 0);
    let rest = events.flat_map(move |ev| {
        let events = match ev {
            ChatEvent::Started { .. } => vec![],
            ChatEvent::Delta { text, logprobs, .. } if text.is_empty() && logprobs.is_empty() => vec![],
            ChatEvent::Delta { index, text, logprobs } => {
                let delta = ChunkDelta { role: None, content: Some(text) };
                vec![ids.chunk(index, delta, None, ids.logprobs(&logprobs))]
            }
            ChatEvent::Done { index, completion_tokens, cached_tokens, finish_reason: r } => {
                let mut ev = vec![ids.chunk(index, ChunkDelta::default(), Some(finish_reason(r)), None)];
                left -= 1;
                completion += completion_tokens;
                if index == 0 {
                    cached = cached_tokens;
                }
                if left == 0 {
                    if include_usage {
                        ev.push(ids.usage_chunk(Usage::new(prompt_tokens, completion, cached)));
                    }
                    ev.push(Event::default().data("[DONE]"));
                }
                ev
            }
            ChatEvent::Failed(e) => vec![sse::error(None, e.into())],
        };
        futures_util::stream::iter(events.into_iter().map(Ok))
    });
    futures_util::stream::iter(first.into_iter().map(Ok)).chain(rest)
}
