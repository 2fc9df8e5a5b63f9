//! `POST /v1/chat/completions`: text and `data:image/...;base64,` image parts → Janus's
//! understanding path; JSON or `chat.completion.chunk` server-sent events ending with `[DONE]`.

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use futures_util::{stream, Stream, StreamExt};
use image::DynamicImage;
use janus::understand::DEFAULT_SYSTEM_PROMPT;
use janus::{Conversation, FinishReason, Message, Part, Role, SamplingParams, TextParams};
use serde_json::Value;
use tokio::sync::mpsc;

use super::error::{ApiJson, CommonErrors, ErrorResponse};
use super::images::sse_json;
use super::types::{
    AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatRole, ChunkChoice,
    ChunkDelta, Usage,
};
use super::{blocking, unix_now, ApiError, AppState, MAX_CHAT_IMAGES};
use crate::engine::{ChatEvent, ChatRequest};

pub fn finish_reason(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Length => "length",
        FinishReason::Stop | FinishReason::Cancelled => "stop",
    }
}

/// `max_tokens`-style limit: 1..=context length; `None` lets the engine pick (512 or what fits).
pub fn max_tokens(given: Option<i64>, param: &str, context_length: usize) -> Result<Option<usize>, ApiError> {
    match given {
        None => Ok(None),
        Some(n) if n >= 1 && n as u64 <= context_length as u64 => Ok(Some(n as usize)),
        Some(n) => Err(ApiError::field(
            param,
            format!("must be between 1 and {context_length} (the model's context length); got {n}"),
        )),
    }
}

/// Decodes image bytes (blocking; call inside `spawn_blocking`). Formats we do not read → 415;
/// corrupt, truncated or oversized images → 400.
pub fn decode_image(bytes: &[u8], param: &str) -> Result<DynamicImage, ApiError> {
    janus::preprocess::decode_image(bytes).map_err(|e| {
        let msg = match e {
            janus::Error::Image(m) => m,
            other => other.to_string(),
        };
        if msg.contains("not supported") || msg.contains("unrecognised image format") {
            ApiError::unsupported_image(param, msg)
        } else {
            ApiError::invalid_image(param, msg)
        }
    })
}

/// Base64 with or without padding, ignoring line breaks; the URL-safe alphabet as a fallback.
pub fn decode_base64(data: &str) -> Result<Vec<u8>, base64::DecodeError> {
    const CFG: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, CFG);
    const URL: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, CFG);
    let cleaned: String;
    let data = if data.bytes().any(|b| b.is_ascii_whitespace()) {
        cleaned = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        cleaned.as_str()
    } else {
        data
    };
    STD.decode(data).or_else(|e| if data.contains(['-', '_']) { URL.decode(data) } else { Err(e) })
}

/// A part before its image is decoded.
pub enum Pending {
    Text(String),
    /// An image, and the JSON path for errors.
    Image {
        source: ImageSource,
        param: String,
    },
}

/// Where a chat image comes from.
pub enum ImageSource {
    /// The base64 payload of a data URL.
    Base64(String),
    /// An http(s) URL to fetch (only with `--allow-remote-images`).
    Remote(String),
}

/// The image behind a `data:image/...;base64,` URL (or, when allowed, an http(s) URL), or the
/// 400 that explains what to send.
pub fn image_source(url: &str, param: &str, allow_remote: bool) -> Result<ImageSource, ApiError> {
    const HOW: &str = "send the image inline as a `data:image/<format>;base64,<data>` URL";
    if let Some(rest) = url.strip_prefix("data:") {
        let Some((meta, data)) = rest.split_once(',') else {
            return Err(ApiError::field(param, format!("malformed data URL (no comma); {HOW}")));
        };
        let mut meta = meta.split(';');
        let mime = meta.next().unwrap_or("").trim();
        if !mime.to_ascii_lowercase().starts_with("image/") {
            return Err(ApiError::field(param, format!("the data URL holds `{mime}`, not an image; {HOW}")));
        }
        if !meta.any(|p| p.trim().eq_ignore_ascii_case("base64")) {
            return Err(ApiError::field(param, format!("the data URL is not base64-encoded; {HOW}")));
        }
        return Ok(ImageSource::Base64(data.to_string()));
    }
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        if allow_remote {
            return Ok(ImageSource::Remote(url.to_string()));
        }
        return Err(ApiError::unsupported(
            param,
            format!("remote image URLs are refused by this server (see --allow-remote-images); {HOW}"),
        ));
    }
    Err(ApiError::field(param, format!("not an image URL; {HOW}")))
}

/// One message's content → parts, with precise errors.
fn content_parts(
    content: Option<Value>,
    role: ChatRole,
    i: usize,
    allow_remote: bool,
) -> Result<Vec<Pending>, ApiError> {
    let param = format!("messages[{i}].content");
    let parts = match content {
        None | Some(Value::Null) => return Err(ApiError::field(&param, "required")),
        Some(Value::String(s)) => return Ok(vec![Pending::Text(s)]),
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
                Some(Value::String(t)) => ("text", Pending::Text(t)),
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
                let source = image_source(&url, &url_param, allow_remote)?;
                ("image_url", Pending::Image { source, param: url_param })
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

/// Validated chat request, before images are decoded.
pub struct ChatPlan {
    pub system: Option<String>,
    pub turns: Vec<(Role, Vec<Pending>)>,
    pub temperature: f32,
    pub top_p: Option<f32>,
    pub seed: u64,
    pub stream: bool,
    pub include_usage: bool,
}

/// Checks every field and content part of a chat request (the handler's first step).
pub fn plan(req: ChatCompletionRequest, allow_remote: bool) -> Result<ChatPlan, ApiError> {
    let temperature = req.temperature.unwrap_or(0.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::field("temperature", format!("must be between 0 and 2; got {temperature}")));
    }
    if let Some(p) = req.top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
        return Err(ApiError::field("top_p", format!("must be in (0, 1]; got {p}")));
    }
    if let Some(n) = req.n.filter(|n| *n != 1) {
        return Err(ApiError::unsupported("n", format!("only 1 choice per request is supported; got {n}")));
    }
    if req.stop.as_ref().is_some_and(|s| !s.is_null()) {
        return Err(ApiError::unsupported("stop", "stop sequences are not supported"));
    }
    if req.logprobs == Some(true) {
        return Err(ApiError::unsupported("logprobs", "log probabilities are not supported"));
    }
    if req.messages.is_empty() {
        return Err(ApiError::field("messages", "must hold at least one user message"));
    }
    let mut system: Option<Vec<String>> = None;
    let mut turns = Vec::new();
    let mut images = 0;
    for (i, m) in req.messages.into_iter().enumerate() {
        let parts = content_parts(m.content, m.role, i, allow_remote)?;
        match m.role {
            ChatRole::System | ChatRole::Developer => {
                let texts = parts.into_iter().filter_map(|p| match p {
                    Pending::Text(t) => Some(t),
                    Pending::Image { .. } => None,
                });
                system.get_or_insert_with(Vec::new).extend(texts);
            }
            ChatRole::User => {
                images += parts.iter().filter(|p| matches!(p, Pending::Image { .. })).count();
                turns.push((Role::User, parts));
            }
            ChatRole::Assistant => turns.push((Role::Assistant, parts)),
        }
    }
    match turns.last() {
        Some((Role::User, _)) => {}
        Some(_) => return Err(ApiError::field("messages", "the last message must be from the user")),
        None => return Err(ApiError::field("messages", "must hold at least one user message")),
    }
    if images > MAX_CHAT_IMAGES {
        return Err(ApiError::field("messages", format!("at most {MAX_CHAT_IMAGES} images per request; got {images}")));
    }
    let seed = match req.seed {
        Some(s) => s as u64,
        None if temperature > 0.0 => super::random_seed(),
        None => 0,
    };
    Ok(ChatPlan {
        system: system.map(|s| s.join("\n")),
        turns,
        temperature,
        top_p: req.top_p,
        seed,
        stream: req.stream.unwrap_or(false),
        include_usage: req.stream_options.and_then(|o| o.include_usage).unwrap_or(false),
    })
}

/// Decodes every image (and, for remote URLs, fetches it, at most `max_bytes`) and builds the
/// conversation: blocking work.
pub fn conversation(
    system: Option<String>,
    turns: Vec<(Role, Vec<Pending>)>,
    max_bytes: usize,
) -> Result<Conversation, ApiError> {
    let mut messages = Vec::with_capacity(turns.len());
    for (role, pending) in turns {
        let mut parts = Vec::with_capacity(pending.len());
        for p in pending {
            parts.push(match p {
                Pending::Text(t) => Part::Text(t),
                Pending::Image { source, param } => {
                    let bytes = match source {
                        ImageSource::Base64(b64) => decode_base64(&b64).map_err(|e| {
                            ApiError::invalid_image(&param, format!("the data URL is not valid base64: {e}"))
                        })?,
                        ImageSource::Remote(url) => {
                            super::remote::fetch(&url, max_bytes).map_err(|m| ApiError::invalid_image(&param, m))?
                        }
                    };
                    Part::Image(decode_image(&bytes, &param)?)
                }
            });
        }
        messages.push(Message { role, parts });
    }
    Ok(Conversation { system: system.unwrap_or_else(|| DEFAULT_SYSTEM_PROMPT.to_string()), messages })
}

/// Waits for `Started` and returns the prompt's token count.
pub async fn started(rx: &mut mpsc::Receiver<ChatEvent>) -> Result<usize, ApiError> {
    match rx.recv().await {
        Some(ChatEvent::Started { prompt_tokens }) => Ok(prompt_tokens),
        Some(ChatEvent::Failed(e)) => Err(e.into()),
        Some(other) => Err(ApiError::internal(format!("the engine sent {other:?} before Started"))),
        None => Err(ApiError::internal("the engine dropped the request")),
    }
}

pub struct TextResult {
    pub text: String,
    pub completion_tokens: usize,
    pub finish_reason: FinishReason,
}

/// Reads the rest of an answer.
pub async fn collect_text(rx: &mut mpsc::Receiver<ChatEvent>) -> Result<TextResult, ApiError> {
    let mut text = String::new();
    loop {
        match rx.recv().await {
            Some(ChatEvent::Started { .. }) => {}
            Some(ChatEvent::Delta(d)) => text.push_str(&d),
            Some(ChatEvent::Done { completion_tokens, finish_reason }) => {
                return Ok(TextResult { text, completion_tokens, finish_reason })
            }
            Some(ChatEvent::Failed(e)) => return Err(e.into()),
            None => return Err(ApiError::internal("the engine dropped the request")),
        }
    }
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
        (status = 400, description = "A field is invalid (named in `param`), or an image cannot be decoded", body = ErrorResponse),
        (status = 415, description = "An image format we do not read", body = ErrorResponse),
        (status = 429, description = "Queue full, or --max-streams streams open; see Retry-After", body = ErrorResponse),
        CommonErrors,
    )
)]
pub async fn completions(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let (given, param) = match (req.max_completion_tokens, req.max_tokens) {
        (Some(n), _) => (Some(n), "max_completion_tokens"),
        (None, n) => (n, "max_tokens"),
    };
    let plan = plan(req, state.cfg.allow_remote_images)?;
    let info = state.model_info()?;
    let max_new_tokens = max_tokens(given, param, info.context_length)?;
    let (system, turns) = (plan.system, plan.turns);
    let max_bytes = state.cfg.max_body_bytes;
    let conversation = blocking(move || conversation(system, turns, max_bytes)).await??;
    let params = TextParams {
        max_new_tokens,
        sampling: SamplingParams { temperature: plan.temperature, top_p: plan.top_p, ..SamplingParams::default() },
        seed: plan.seed,
    };
    params.sampling.validate().map_err(|e| ApiError::bad_request(e.to_string()))?;
    let slot = if plan.stream { Some(state.stream_slot()?) } else { None };
    let mut rx = state.engine.submit_chat(ChatRequest { conversation, params })?;
    let prompt_tokens = started(&mut rx).await?;
    let ids = Ids { id: super::random_id("chatcmpl-"), created: unix_now(), model: info.id };
    if plan.stream {
        let events = super::hold(chunk_events(rx, ids, prompt_tokens, plan.include_usage), slot);
        return Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response());
    }
    let out = collect_text(&mut rx).await?;
    Ok(Json(ChatCompletion {
        id: ids.id,
        object: "chat.completion".into(),
        created: ids.created,
        model: ids.model,
        choices: vec![ChatChoice {
            index: 0,
            message: AssistantMessage { role: "assistant".into(), content: out.text, refusal: None },
            finish_reason: finish_reason(out.finish_reason).into(),
            logprobs: None,
        }],
        usage: Usage::new(prompt_tokens, out.completion_tokens),
    })
    .into_response())
}

struct Ids {
    id: String,
    created: u64,
    model: String,
}

impl Ids {
    fn event(&self, choices: Vec<ChunkChoice>, usage: Option<Usage>) -> Event {
        sse_json(
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

    fn chunk(&self, delta: ChunkDelta, finish: Option<&str>) -> Event {
        let choice = ChunkChoice { index: 0, delta, finish_reason: finish.map(str::to_string), logprobs: None };
        self.event(vec![choice], None)
    }

    fn usage_chunk(&self, usage: Usage) -> Event {
        self.event(vec![], Some(usage))
    }
}

/// Engine events → `chat.completion.chunk` events: the role first, then the text as it comes,
/// the finish reason, the usage (if asked) and `[DONE]`. The stream owns the receiver, so a
/// client that goes away cancels the answer.
fn chunk_events(
    rx: mpsc::Receiver<ChatEvent>,
    ids: Ids,
    prompt_tokens: usize,
    include_usage: bool,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let first = ids.chunk(ChunkDelta { role: Some("assistant".into()), content: Some(String::new()) }, None);
    let rest = stream::unfold(Some((rx, ids)), move |st| async move {
        let (mut rx, ids) = st?;
        loop {
            let (events, done) = match rx.recv().await {
                Some(ChatEvent::Started { .. }) => continue,
                Some(ChatEvent::Delta(d)) if d.is_empty() => continue,
                Some(ChatEvent::Delta(d)) => {
                    (vec![ids.chunk(ChunkDelta { role: None, content: Some(d) }, None)], false)
                }
                Some(ChatEvent::Done { completion_tokens, finish_reason: r }) => {
                    let mut ev = vec![ids.chunk(ChunkDelta::default(), Some(finish_reason(r)))];
                    if include_usage {
                        ev.push(ids.usage_chunk(Usage::new(prompt_tokens, completion_tokens)));
                    }
                    ev.push(Event::default().data("[DONE]"));
                    (ev, true)
                }
                Some(ChatEvent::Failed(e)) => (vec![stream_error(e.into())], true),
                None => (vec![stream_error(ApiError::internal("the engine dropped the request"))], true),
            };
            let next = if done { None } else { Some((rx, ids)) };
            return Some((stream::iter(events.into_iter().map(Ok)), next));
        }
    })
    .flatten();
    stream::once(async move { Ok(first) }).chain(rest)
}

fn stream_error(e: ApiError) -> Event {
    tracing::warn!("chat stream failed: {}", e.message);
    sse_json(None, &e.body())
}
