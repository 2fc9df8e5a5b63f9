//! `POST /v1/responses` (OpenAI's Responses API): text answers to text and images, as JSON or
//! as `response.*` server-sent events.
//!
//! A request becomes a Chat Completions request (`instructions` a system message, the messages
//! of a `previous_response_id` next, then `input`; `input_text` parts → `text`, `input_image` →
//! `image_url`, `max_output_tokens` → `max_completion_tokens`, `text.format` → `response_format`)
//! and goes through [`chat::plan`], [`prepare::chat`] and the engine as a chat request does, so
//! every check and limit is the chat route's; their errors are renamed to the Responses fields
//! (`messages[i]` → `input[j]`, `max_completion_tokens` → `max_output_tokens`...). Responses with
//! `store` not false are kept for `previous_response_id` in [`ResponseStore`]; the engine's
//! prefix cache makes the repeated conversation cheap.
//!
//! [`ResponseStore`]: super::response_store::ResponseStore

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::{stream, Stream, StreamExt};
use janus::FinishReason;
use serde_json::{json, Value};

use super::chat::{self, ChatPlan};
use super::error::{ApiJson, CommonErrors, ErrorResponse};
use super::response_store::{ResponseStore, StoredMessage, StoredResponse};
use super::responses_types::{
    IncompleteDetails, OutputMessage, OutputText, ResponseError, ResponseEvent, ResponseObject, ResponseTextConfig,
    ResponseTextParam, ResponseUsage, ResponsesRequest,
};
use super::types::{ChatCompletionRequest, ChatMessage, ChatRole};
use super::{prepare, random_id, structured, unix_now, ApiError, AppState, HttpConfig};
use crate::engine::ChatEvent;

/// Where a message of the chat request came from, to name the Responses field in errors.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Origin {
    Instructions,
    /// The conversation of `previous_response_id`.
    Previous,
    /// `input` as a string.
    Text,
    /// `input[j]`.
    Item(usize),
}

/// A validated Responses request, before its images are read.
pub struct ResponsesPlan {
    pub chat: ChatPlan,
    pub stream: bool,
    /// The response's ids and the request's settings it echoes (`model` left empty).
    shell: Shell,
    /// Which part of the request each chat message came from.
    origins: Vec<Origin>,
    /// What to keep once answered (`None` with `store: false`).
    keep: Option<Keep>,
}

/// A response's turn, to keep once it is answered.
struct Keep {
    parent: Option<Arc<StoredResponse>>,
    turn: Vec<StoredMessage>,
}

impl Keep {
    fn answered(self, store: &ResponseStore, id: &str, text: &str) {
        let Keep { parent, mut turn } = self;
        turn.push(StoredMessage { role: ChatRole::Assistant, content: Value::String(text.to_string()) });
        store.insert(id.to_string(), StoredResponse { parent, turn });
    }
}

/// Checks a Responses request and turns it into a chat plan ([`chat::plan`]'s checks and limits,
/// errors naming the Responses fields); `store` holds the responses `previous_response_id` may
/// name.
pub fn plan(
    req: ResponsesRequest,
    cfg: &HttpConfig,
    store: &ResponseStore,
    context_length: usize,
) -> Result<ResponsesPlan, ApiError> {
    refuse_unsupported(&req)?;
    let (format, response_format) = text_format(req.text)?;
    let metadata = match req.metadata {
        None | Some(Value::Null) => json!({}),
        Some(m @ Value::Object(_)) => m,
        Some(_) => return Err(ApiError::field("metadata", "must be an object of strings")),
    };
    let parent = match &req.previous_response_id {
        Some(id) => Some(store.get(id).ok_or_else(|| previous_not_found(id))?),
        None => None,
    };
    let turn = input_messages(req.input)?;

    let mut messages = Vec::new();
    let mut origins = Vec::new();
    let mut push = |origin, role, content| {
        messages.push(ChatMessage { role, content: Some(content), name: None, refusal: None });
        origins.push(origin);
    };
    if let Some(instructions) = &req.instructions {
        push(Origin::Instructions, ChatRole::System, Value::String(instructions.clone()));
    }
    for m in parent.as_ref().map(|p| p.history()).unwrap_or_default() {
        push(Origin::Previous, m.role, m.content);
    }
    for (origin, m) in &turn {
        push(*origin, m.role, m.content.clone());
    }
    let request = ChatCompletionRequest {
        messages,
        model: None,
        max_tokens: None,
        max_completion_tokens: req.max_output_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        seed: None,
        stream: None,
        stream_options: None,
        n: None,
        stop: None,
        logprobs: None,
        top_logprobs: None,
        frequency_penalty: None,
        presence_penalty: None,
        repetition_penalty: None,
        response_format,
        structured_outputs: None,
        user: None,
        store: None,
        metadata: None,
        service_tier: None,
        parallel_tool_calls: None,
    };
    let chat = chat::plan(request, cfg, context_length).map_err(|e| rename(e, &origins))?;
    let store = req.store.unwrap_or(true);
    let sampling = &chat.params.sampling;
    let shell = Shell {
        id: random_id("resp_"),
        item_id: random_id("msg_"),
        created_at: unix_now(),
        model: String::new(),
        instructions: req.instructions,
        max_output_tokens: req.max_output_tokens,
        temperature: sampling.temperature,
        top_p: sampling.top_p.unwrap_or(1.0),
        format,
        previous_response_id: req.previous_response_id,
        store,
        metadata,
        user: req.user,
    };
    let keep = store.then(|| Keep { parent, turn: turn.into_iter().map(|(_, m)| m).collect() });
    Ok(ResponsesPlan { chat, stream: req.stream.unwrap_or(false), shell, origins, keep })
}

/// 400 for what Janus-Pro cannot honour, naming the field.
fn refuse_unsupported(req: &ResponsesRequest) -> Result<(), ApiError> {
    let given = |v: &Option<Value>| match v {
        None | Some(Value::Null) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    };
    if given(&req.tools) {
        return Err(ApiError::unsupported("tools", "tools are not supported: Janus-Pro answers with text only"));
    }
    match &req.tool_choice {
        None | Some(Value::Null) => {}
        // With no tools (they are refused above), `auto` means the same as `none`.
        Some(Value::String(s)) if s == "none" || s == "auto" => {}
        Some(_) => {
            return Err(ApiError::unsupported(
                "tool_choice",
                "only `none` or `auto` (without tools): Janus-Pro has no tools",
            ))
        }
    }
    if given(&req.reasoning) {
        return Err(ApiError::unsupported("reasoning", "Janus-Pro is not a reasoning model; leave `reasoning` out"));
    }
    if given(&req.include) {
        return Err(ApiError::unsupported("include", "no extra output can be included (no tools, no reasoning)"));
    }
    if req.background == Some(true) {
        return Err(ApiError::unsupported("background", "background responses are not supported; ask without it"));
    }
    if given(&req.prompt) {
        return Err(ApiError::unsupported(
            "prompt",
            "prompt templates are not supported; send `input` and `instructions`",
        ));
    }
    match req.truncation.as_deref() {
        None | Some("disabled") => Ok(()),
        Some("auto") => Err(ApiError::unsupported(
            "truncation",
            "only `disabled`: a conversation longer than the context is refused, not shortened",
        )),
        Some(other) => Err(ApiError::field("truncation", format!("`{other}` is not a truncation; use `disabled`"))),
    }
}

/// `text.format`: the format to echo, and chat's `response_format` for it. Checked here, flat, so
/// that errors name `text.format...`; the chat shape nests the `json_schema` fields.
fn text_format(text: Option<ResponseTextParam>) -> Result<(Value, Option<Value>), ApiError> {
    let Some(format) = text.and_then(|t| t.format).filter(|v| !v.is_null()) else {
        return Ok((json!({"type": "text"}), None));
    };
    structured::response_format(format.clone(), "text.format", true)?;
    let chat = match format.clone() {
        Value::Object(mut obj) if obj.get("type").and_then(Value::as_str) == Some("json_schema") => {
            obj.remove("type");
            json!({"type": "json_schema", "json_schema": obj})
        }
        other => other,
    };
    Ok((format, Some(chat)))
}

/// 404 in OpenAI's words for a `previous_response_id` that is not kept.
fn previous_not_found(id: &str) -> ApiError {
    let message = format!(
        "Previous response with id '{id}' not found. Responses are kept in memory, the least recently \
         used going first beyond --response-store-size, and not with `store: false`."
    );
    ApiError {
        param: Some("previous_response_id".into()),
        code: Some("previous_response_not_found"),
        ..ApiError::not_found(message)
    }
}

/// `input` → chat messages (their content in the chat shape), each with where it came from.
fn input_messages(input: Option<Value>) -> Result<Vec<(Origin, StoredMessage)>, ApiError> {
    match input {
        Some(Value::String(s)) => Ok(vec![(Origin::Text, StoredMessage { role: ChatRole::User, content: s.into() })]),
        Some(Value::Array(items)) => {
            (items.into_iter().enumerate()).map(|(j, item)| Ok((Origin::Item(j), input_item(item, j)?))).collect()
        }
        None | Some(Value::Null) => Err(ApiError::field("input", "required: a string or an array of messages")),
        Some(_) => Err(ApiError::field("input", "must be a string or an array of messages")),
    }
}

/// One item of `input`: a message.
fn input_item(item: Value, j: usize) -> Result<StoredMessage, ApiError> {
    let p = format!("input[{j}]");
    let Value::Object(mut obj) = item else {
        return Err(ApiError::field(&p, "must be a message such as {\"role\": \"user\", \"content\": \"...\"}"));
    };
    match obj.remove("type") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if t == "message" => {}
        Some(Value::String(t)) => {
            return Err(ApiError::unsupported(
                &format!("{p}.type"),
                format!("input item type `{t}` is not supported; only `message` (Janus-Pro has no tools)"),
            ))
        }
        Some(_) => return Err(ApiError::field(&format!("{p}.type"), "must be `message`")),
    }
    let role = match obj.remove("role") {
        Some(Value::String(r)) => match r.as_str() {
            "user" => ChatRole::User,
            "assistant" => ChatRole::Assistant,
            "system" => ChatRole::System,
            "developer" => ChatRole::Developer,
            other => {
                let why = format!("`{other}` is not a role; use `user`, `assistant`, `system` or `developer`");
                return Err(ApiError::field(&format!("{p}.role"), why));
            }
        },
        _ => {
            return Err(ApiError::field(&format!("{p}.role"), "required: `user`, `assistant`, `system` or `developer`"))
        }
    };
    let content = obj.remove("content");
    // An output item passed back as input carries these.
    for ignored in ["id", "status", "phase"] {
        obj.remove(ignored);
    }
    if let Some(k) = obj.keys().next() {
        let why = "unknown field, expected `role`, `content`, `type`, `id`, `status` or `phase`";
        return Err(ApiError::field(&format!("{p}.{k}"), why));
    }
    let content = match content {
        Some(Value::Array(parts)) => Value::Array(
            (parts.into_iter().enumerate())
                .map(|(k, part)| content_part(part, &format!("{p}.content[{k}]")))
                .collect::<Result<_, _>>()?,
        ),
        // A string, or what the chat checks refuse (or an assistant message leaves out).
        other => other.unwrap_or(Value::Null),
    };
    Ok(StoredMessage { role, content })
}

/// A content part → its chat shape: `input_text` and `output_text` → `text`, `input_image` →
/// `image_url` (the chat checks read them; their errors are renamed to `param`'s).
fn content_part(part: Value, p: &str) -> Result<Value, ApiError> {
    let Value::Object(mut obj) = part else {
        return Err(ApiError::field(p, "must be an object such as {\"type\": \"input_text\", \"text\": \"...\"}"));
    };
    let required = "required: `input_text`, `input_image` or `output_text`";
    let kind = match obj.remove("type") {
        Some(Value::String(t)) => t,
        _ => return Err(ApiError::field(&format!("{p}.type"), required)),
    };
    let (out, expected) = match kind.as_str() {
        "input_text" => (json!({"type": "text", "text": obj.remove("text")}), "`type` or `text`"),
        "output_text" => {
            obj.remove("annotations");
            obj.remove("logprobs");
            (json!({"type": "text", "text": obj.remove("text")}), "`type`, `text`, `annotations` or `logprobs`")
        }
        "input_image" => {
            if obj.remove("file_id").is_some_and(|v| !v.is_null()) {
                return Err(ApiError::unsupported(
                    &format!("{p}.file_id"),
                    "file ids are not supported; send the image as a data URL in `image_url`",
                ));
            }
            let detail = obj.remove("detail").unwrap_or(Value::Null);
            if !detail.is_null() && !detail.is_string() {
                return Err(ApiError::field(&format!("{p}.detail"), "must be `auto`, `low` or `high`"));
            }
            let url = obj.remove("image_url").unwrap_or(Value::Null);
            (json!({"type": "image_url", "image_url": {"url": url}}), "`type`, `image_url`, `detail` or `file_id`")
        }
        other => {
            let why = format!("content part type `{other}` is not supported; use `input_text` or `input_image`");
            return Err(ApiError::unsupported(&format!("{p}.type"), why));
        }
    };
    if let Some(k) = obj.keys().next() {
        return Err(ApiError::field(&format!("{p}.{k}"), format!("unknown field, expected {expected}")));
    }
    Ok(out)
}

/// A chat error with the Responses request's names: `messages[i]...` → where message `i` came
/// from, `messages` → `input`, `max_completion_tokens` → `max_output_tokens`, `response_format`
/// → `text.format`.
fn rename(e: ApiError, origins: &[Origin]) -> ApiError {
    let Some(old) = e.param.clone() else { return e };
    let new = responses_param(&old, origins);
    e.renamed(&old, &new)
}

fn responses_param(param: &str, origins: &[Origin]) -> String {
    let message = param.strip_prefix("messages[").and_then(|rest| {
        let (i, rest) = rest.split_once(']')?;
        Some((*origins.get(i.parse::<usize>().ok()?)?, rest))
    });
    if let Some((origin, rest)) = message {
        return match origin {
            Origin::Instructions => "instructions".into(),
            Origin::Previous => "previous_response_id".into(),
            Origin::Text => "input".into(),
            Origin::Item(j) => match rest.strip_suffix(".image_url.url") {
                Some(part) => format!("input[{j}]{part}.image_url"),
                None => format!("input[{j}]{rest}"),
            },
        };
    }
    match param {
        "messages" => "input".into(),
        "max_tokens" | "max_completion_tokens" => "max_output_tokens".into(),
        p => match p.strip_prefix("response_format") {
            Some(rest) => format!("text.format{}", rest.strip_prefix(".json_schema").unwrap_or(rest)),
            None => p.into(),
        },
    }
}

/// What a response says besides its answer: its ids, and the request's settings echoed.
#[derive(Debug, Clone)]
struct Shell {
    id: String,
    item_id: String,
    created_at: u64,
    model: String,
    instructions: Option<String>,
    max_output_tokens: Option<i64>,
    temperature: f32,
    top_p: f32,
    format: Value,
    previous_response_id: Option<String>,
    store: bool,
    metadata: Value,
    user: Option<String>,
}

impl Shell {
    fn object(&self, status: &str, output: Vec<OutputMessage>, usage: Option<ResponseUsage>) -> ResponseObject {
        ResponseObject {
            id: self.id.clone(),
            object: "response".into(),
            created_at: self.created_at,
            status: status.into(),
            incomplete_details: None,
            error: None,
            model: self.model.clone(),
            output,
            usage,
            instructions: self.instructions.clone(),
            max_output_tokens: self.max_output_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            text: ResponseTextConfig { format: self.format.clone() },
            previous_response_id: self.previous_response_id.clone(),
            store: self.store,
            metadata: self.metadata.clone(),
            user: self.user.clone(),
            truncation: "disabled".into(),
            parallel_tool_calls: false,
            tool_choice: "none".into(),
            tools: Vec::new(),
            background: false,
        }
    }

    fn message(&self, status: &str, content: Vec<OutputText>) -> OutputMessage {
        OutputMessage {
            kind: "message".into(),
            id: self.item_id.clone(),
            status: status.into(),
            role: "assistant".into(),
            content,
        }
    }

    /// The answered response: `incomplete` when the answer hit its token limit.
    fn finished(&self, text: String, finish: FinishReason, usage: ResponseUsage) -> ResponseObject {
        let incomplete = finish == FinishReason::Length;
        let status = if incomplete { "incomplete" } else { "completed" };
        let mut response = self.object(status, vec![self.message(status, vec![OutputText::new(text)])], Some(usage));
        if incomplete {
            response.incomplete_details = Some(IncompleteDetails { reason: "max_output_tokens".into() });
        }
        response
    }
}

/// Create a response: a text answer to text and images (OpenAI's Responses API). With
/// `stream: true`, server-sent `response.*` events (each named by its `type`, with an increasing
/// `sequence_number`); a failure after the stream started ends it with `response.failed`.
/// Not supported: tools, reasoning, background responses, prompt templates, `include`, and
/// retrieving or deleting responses.
#[utoipa::path(
    post,
    path = "/v1/responses",
    tag = "responses",
    security(("api_key" = [])),
    request_body = ResponsesRequest,
    responses(
        (status = 200, description = "The response (JSON), or with `stream: true` an event stream of \
            ResponseEvent", body = ResponseObject),
        (status = 400, description = "A field is invalid or over its limit (named in `param`: \
            --max-messages, --max-message-chars, --max-request-chars, --max-images-per-request, \
            --max-image-pixels), a field Janus-Pro cannot honour (`tools`, `reasoning`, \
            `background`...), the prompt does not fit in the context, or an image cannot be decoded",
            body = ErrorResponse),
        (status = 404, description = "`previous_response_id` is not kept (unknown, evicted beyond \
            --response-store-size, or answered with `store: false`): `previous_response_not_found`",
            body = ErrorResponse),
        (status = 415, description = "An image format we do not read", body = ErrorResponse),
        (status = 429, description = "Queue full, --max-streams streams or --max-concurrent-requests \
            requests open, or --image-memory-bytes full; see Retry-After", body = ErrorResponse),
        CommonErrors,
    )
)]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ResponsesRequest>,
) -> Result<Response, ApiError> {
    // The context bounds max_output_tokens; while the model loads, the 503 below answers first.
    let context_length = state.engine.info().map_or(usize::MAX, |i| i.context_length);
    let ResponsesPlan { chat, stream, mut shell, origins, keep } =
        plan(req, &state.cfg, &state.responses, context_length)?;
    let named = |e: ApiError| rename(e, &origins);
    shell.model = state.model_info()?.id;
    let request = prepare::chat(&state, chat.conversation, chat.params).await.map_err(named)?;
    if stream {
        let slot = state.stream_slot()?;
        let (prompt_tokens, events) = state.engine.chat_stream(request).await.map_err(|e| named(e.into()))?;
        let streamer = Streamer { state: state.clone(), shell, keep, seq: 0, text: String::new(), prompt_tokens };
        let events = super::sse::hold(streamer.events(events), slot);
        return Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response());
    }
    let out = state.engine.chat(request).await.map_err(|e| named(e.into()))?;
    let answer = (out.answers.into_iter().next()).ok_or_else(|| ApiError::internal("the engine gave no answer"))?;
    let usage = ResponseUsage::new(out.prompt_tokens, answer.completion_tokens, out.cached_tokens);
    if let Some(keep) = keep {
        keep.answered(&state.responses, &shell.id, &answer.text);
    }
    let finish = answer.finish_reason.unwrap_or(FinishReason::Cancelled);
    Ok(Json(shell.finished(answer.text, finish, usage)).into_response())
}

/// A streamed response's state: the next sequence number and the text so far.
struct Streamer {
    state: AppState,
    shell: Shell,
    keep: Option<Keep>,
    seq: u64,
    text: String,
    prompt_tokens: usize,
}

impl Streamer {
    /// Engine events → `response.*` events: the response and its empty message and part first,
    /// then the text as it comes, then the finished part, message and response (kept when
    /// `store`). The SSE stream owns the event stream, so a client that goes away cancels the
    /// answer.
    fn events(
        mut self,
        events: impl Stream<Item = ChatEvent> + Send + 'static,
    ) -> impl Stream<Item = Result<Event, Infallible>> {
        let first = self.start();
        let rest = events.flat_map(move |ev| {
            let out = match ev {
                ChatEvent::Started { .. } => Vec::new(),
                ChatEvent::Delta { text, .. } if text.is_empty() => Vec::new(),
                ChatEvent::Delta { text, .. } => vec![self.delta(text)],
                ChatEvent::Done { completion_tokens, cached_tokens, finish_reason, .. } => {
                    self.done(ResponseUsage::new(self.prompt_tokens, completion_tokens, cached_tokens), finish_reason)
                }
                ChatEvent::Failed(e) => vec![self.failed(e.into())],
            };
            stream::iter(out.into_iter().map(Ok))
        });
        stream::iter(first.into_iter().map(Ok)).chain(rest)
    }

    /// The next event, numbered.
    fn event(&mut self, make: impl FnOnce(u64) -> ResponseEvent) -> Event {
        let ev = make(self.seq);
        self.seq += 1;
        super::sse::json(Some(ev.kind()), &ev)
    }

    fn start(&mut self) -> Vec<Event> {
        let response = self.shell.object("in_progress", Vec::new(), None);
        let item = self.shell.message("in_progress", Vec::new());
        let item_id = self.shell.item_id.clone();
        let r = response.clone();
        vec![
            self.event(|sequence_number| ResponseEvent::Created { sequence_number, response: r }),
            self.event(|sequence_number| ResponseEvent::InProgress { sequence_number, response }),
            self.event(|sequence_number| ResponseEvent::OutputItemAdded { sequence_number, output_index: 0, item }),
            self.event(|sequence_number| ResponseEvent::ContentPartAdded {
                sequence_number,
                item_id,
                output_index: 0,
                content_index: 0,
                part: OutputText::new(String::new()),
            }),
        ]
    }

    fn delta(&mut self, delta: String) -> Event {
        self.text.push_str(&delta);
        let item_id = self.shell.item_id.clone();
        self.event(|sequence_number| ResponseEvent::OutputTextDelta {
            sequence_number,
            item_id,
            output_index: 0,
            content_index: 0,
            delta,
            logprobs: Vec::new(),
        })
    }

    fn done(&mut self, usage: ResponseUsage, finish: FinishReason) -> Vec<Event> {
        let text = std::mem::take(&mut self.text);
        if let Some(keep) = self.keep.take() {
            keep.answered(&self.state.responses, &self.shell.id, &text);
        }
        let response = self.shell.finished(text.clone(), finish, usage);
        let item = response.output[0].clone();
        let incomplete = response.status == "incomplete";
        let (item_id, item_id2) = (self.shell.item_id.clone(), self.shell.item_id.clone());
        let part = OutputText::new(text.clone());
        vec![
            self.event(|sequence_number| ResponseEvent::OutputTextDone {
                sequence_number,
                item_id,
                output_index: 0,
                content_index: 0,
                text,
                logprobs: Vec::new(),
            }),
            self.event(|sequence_number| ResponseEvent::ContentPartDone {
                sequence_number,
                item_id: item_id2,
                output_index: 0,
                content_index: 0,
                part,
            }),
            self.event(|sequence_number| ResponseEvent::OutputItemDone { sequence_number, output_index: 0, item }),
            self.event(|sequence_number| match incomplete {
                true => ResponseEvent::Incomplete { sequence_number, response },
                false => ResponseEvent::Completed { sequence_number, response },
            }),
        ]
    }

    /// A failure after the stream started: the response, `failed`, with its error.
    fn failed(&mut self, e: ApiError) -> Event {
        tracing::warn!("stream failed: {}", e.message);
        let mut response = self.shell.object("failed", Vec::new(), None);
        response.error = Some(ResponseError { code: e.code.unwrap_or("server_error").into(), message: e.message });
        self.event(|sequence_number| ResponseEvent::Failed { sequence_number, response })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_params_are_renamed_to_the_responses_fields() {
        let origins = [Origin::Instructions, Origin::Previous, Origin::Item(0), Origin::Item(2), Origin::Text];
        let name = |p: &str| responses_param(p, &origins);
        assert_eq!(name("messages[0].content"), "instructions");
        assert_eq!(name("messages[1].content[0].image_url.url"), "previous_response_id");
        assert_eq!(name("messages[3].content[1].image_url.url"), "input[2].content[1].image_url");
        assert_eq!(name("messages[3].content[1]"), "input[2].content[1]");
        assert_eq!(name("messages[2].content"), "input[0].content");
        assert_eq!(name("messages[4].content"), "input");
        assert_eq!(name("messages"), "input");
        assert_eq!(name("max_completion_tokens"), "max_output_tokens");
        assert_eq!(name("response_format"), "text.format");
        assert_eq!(name("response_format.json_schema.schema"), "text.format.schema");
        assert_eq!(name("temperature"), "temperature");
        let e = rename(ApiError::field("messages[2].content", "too long"), &origins);
        assert_eq!(
            (e.param.as_deref(), e.message.as_str()),
            (Some("input[0].content"), "`input[0].content`: too long")
        );
    }

    #[test]
    fn text_format_is_checked_flat_and_passed_nested() {
        let text = |format| Some(ResponseTextParam { format: Some(format), verbosity: None });
        let schema = json!({"type": "object"});
        let (echo, chat) =
            text_format(text(json!({"type": "json_schema", "name": "x", "schema": schema, "strict": true}))).unwrap();
        assert_eq!(echo["name"], "x");
        assert_eq!(
            chat.unwrap(),
            json!({"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": true}})
        );
        assert_eq!(text_format(None).unwrap(), (json!({"type": "text"}), None));
        let e = text_format(text(json!({"type": "json_schema", "schema": 3}))).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("text.format.schema"));
    }
}
