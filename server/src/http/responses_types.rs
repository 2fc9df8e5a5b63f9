//! The Responses API's bodies and streamed events (openai-openapi `CreateResponse`, `Response`,
//! `ResponseStreamEvent`), as far as Janus-Pro answers them: text answers to text and images.
//! The request denies unknown fields; the fields accepted but ignored, and those refused
//! because Janus-Pro cannot honour them, are listed explicitly.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

// ---------------------------------------------------------------- request

/// `POST /v1/responses`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // the accepted-and-ignored fields are only parsed
pub struct ResponsesRequest {
    /// A string (one user message), or an array of messages `{"role", "content"}` whose content
    /// is a string or `input_text` and `input_image` parts (assistant history: `output_text`
    /// parts). It must end with a user message.
    #[schema(value_type = ResponseInput)]
    pub input: Option<Value>,
    /// Accepted for compatibility and ignored: the loaded model answers.
    pub model: Option<String>,
    /// The system prompt (replaces the default one; `""`: none). Not inherited through
    /// `previous_response_id`.
    pub instructions: Option<String>,
    /// Most tokens to generate (default 512, or what fits in the context).
    #[schema(minimum = 1)]
    pub max_output_tokens: Option<i64>,
    /// 0..=2; default 0 (greedy, as the reference).
    #[schema(minimum = 0.0, maximum = 2.0, default = 0.0)]
    pub temperature: Option<f32>,
    /// Nucleus sampling threshold in (0, 1], with a temperature above 0.
    pub top_p: Option<f32>,
    /// The answer's format.
    pub text: Option<ResponseTextParam>,
    /// Send server-sent events (`response.created` ... `response.completed`).
    #[schema(default = false)]
    pub stream: Option<bool>,
    /// Keep the response (in memory, the least recently used going first beyond
    /// `--response-store-size`) so that a later request can continue it with
    /// `previous_response_id`.
    #[schema(default = true)]
    pub store: Option<bool>,
    /// Continue the conversation of a kept response: its input and its answer come before this
    /// request's `input`. An unknown (or evicted) id is a 404.
    pub previous_response_id: Option<String>,
    /// Echoed in the response.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// Echoed in the response.
    pub user: Option<String>,
    /// Only `disabled`: a conversation that does not fit in the context is a 400.
    #[schema(example = "disabled")]
    pub truncation: Option<String>,
    /// Accepted and ignored (no tools).
    pub parallel_tool_calls: Option<bool>,
    /// Accepted and ignored.
    pub service_tier: Option<String>,
    /// Refused unless empty: Janus-Pro has no tools.
    #[schema(value_type = Option<Vec<Object>>)]
    pub tools: Option<Value>,
    /// Refused unless `none`: Janus-Pro has no tools.
    #[schema(value_type = Option<String>)]
    pub tool_choice: Option<Value>,
    /// Refused: Janus-Pro does not reason.
    #[schema(value_type = Option<Object>)]
    pub reasoning: Option<Value>,
    /// Refused unless empty: there is nothing extra to include.
    #[schema(value_type = Option<Vec<String>>)]
    pub include: Option<Value>,
    /// Refused when true: responses are answered in the request.
    pub background: Option<bool>,
    /// Refused: no prompt templates.
    #[schema(value_type = Option<Object>)]
    pub prompt: Option<Value>,
}

/// `text`: the answer's format.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // `verbosity` is only parsed
pub struct ResponseTextParam {
    /// `{"type": "text"}` (default), `{"type": "json_object"}`, or `{"type": "json_schema",
    /// "name", "schema", "strict"}`: the answer is decoded under that constraint, so it parses
    /// (and validates against the schema).
    #[schema(value_type = Option<Object>)]
    pub format: Option<Value>,
    /// Accepted and ignored.
    pub verbosity: Option<String>,
}

/// `input`: text, or messages.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // OpenAPI only; input is parsed by hand for precise errors
pub enum ResponseInput {
    Text(String),
    Items(Vec<InputMessage>),
}

/// A message of `input`.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)] // OpenAPI only
pub struct InputMessage {
    /// `message` (optional).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// `user`, `assistant`, `system` or `developer` (the last two join the system prompt).
    pub role: String,
    /// A string, or parts (images only in user messages).
    pub content: InputContent,
    /// Accepted and ignored (an output item passed back as input has one).
    pub id: Option<String>,
    /// Accepted and ignored.
    pub status: Option<String>,
    /// Accepted and ignored.
    pub phase: Option<String>,
}

/// A message's content: text, or parts.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // OpenAPI only
pub enum InputContent {
    Text(String),
    Parts(Vec<InputPart>),
}

/// A content part of an input message.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
#[allow(dead_code)] // OpenAPI only
pub enum InputPart {
    /// `{"type": "input_text", "text": "..."}`
    InputText { text: String },
    /// `{"type": "input_image", "image_url": "data:image/png;base64,..."}`: a data URL; http(s)
    /// URLs are refused unless `--allow-remote-images`. `detail` is accepted and ignored (images
    /// are always resized to the model's input size); `file_id` is refused.
    InputImage { image_url: String, detail: Option<String> },
    /// `{"type": "output_text", "text": "..."}`: an earlier answer (`annotations` and `logprobs`
    /// are accepted and ignored).
    OutputText { text: String },
}

// ---------------------------------------------------------------- response

/// A response (`object: "response"`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResponseObject {
    /// `resp_...`
    pub id: String,
    /// `response`
    pub object: String,
    /// Unix seconds.
    pub created_at: u64,
    /// `in_progress` (streamed events before the end), `completed`, `incomplete` (the answer hit
    /// `max_output_tokens`) or `failed` (streamed only).
    pub status: String,
    /// Why the response is `incomplete`.
    pub incomplete_details: Option<IncompleteDetails>,
    /// What went wrong, when `failed`.
    pub error: Option<ResponseError>,
    /// The loaded model.
    pub model: String,
    /// One assistant message (empty while `in_progress`).
    pub output: Vec<OutputMessage>,
    /// Null while `in_progress`.
    pub usage: Option<ResponseUsage>,
    /// The request's `instructions`.
    pub instructions: Option<String>,
    /// The request's `max_output_tokens`.
    pub max_output_tokens: Option<i64>,
    /// The temperature used.
    pub temperature: f32,
    /// The nucleus threshold used (1: off).
    pub top_p: f32,
    /// The answer's format.
    pub text: ResponseTextConfig,
    pub previous_response_id: Option<String>,
    /// Whether the response is kept for `previous_response_id`.
    pub store: bool,
    /// The request's `metadata` (`{}` when absent).
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// The request's `user`.
    pub user: Option<String>,
    /// `disabled`.
    pub truncation: String,
    /// `false`.
    pub parallel_tool_calls: bool,
    /// `none`.
    pub tool_choice: String,
    /// Empty.
    #[schema(value_type = Vec<Object>)]
    pub tools: Vec<Value>,
    /// `false`.
    pub background: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IncompleteDetails {
    /// `max_output_tokens`
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResponseError {
    /// A stable code, e.g. `server_error`, `internal_error`, `out_of_memory`.
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResponseTextConfig {
    /// The request's `text.format` (`{"type": "text"}` when absent).
    #[schema(value_type = Object)]
    pub format: Value,
}

/// The answer: an assistant message with one `output_text` part.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OutputMessage {
    /// `message`
    #[serde(rename = "type")]
    pub kind: String,
    /// `msg_...`
    pub id: String,
    /// `in_progress`, `completed` or `incomplete`.
    pub status: String,
    /// `assistant`
    pub role: String,
    pub content: Vec<OutputText>,
}

/// `{"type": "output_text", "text", "annotations": [], "logprobs": []}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OutputText {
    /// `output_text`
    #[serde(rename = "type")]
    pub kind: String,
    pub text: String,
    /// Always empty.
    #[schema(value_type = Vec<Object>)]
    pub annotations: Vec<Value>,
    /// Always empty.
    #[schema(value_type = Vec<Object>)]
    pub logprobs: Vec<Value>,
}

impl OutputText {
    pub fn new(text: String) -> Self {
        Self { kind: "output_text".into(), text, annotations: Vec::new(), logprobs: Vec::new() }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
pub struct ResponseUsage {
    /// Prompt tokens (template, system prompt, conversation and images included).
    pub input_tokens: usize,
    pub input_tokens_details: ResponseInputTokensDetails,
    pub output_tokens: usize,
    pub output_tokens_details: OutputTokensDetails,
    pub total_tokens: usize,
}

/// How many input tokens were read from the prefix cache instead of computed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
pub struct ResponseInputTokensDetails {
    pub cached_tokens: usize,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
pub struct OutputTokensDetails {
    /// Always 0.
    pub reasoning_tokens: usize,
}

impl ResponseUsage {
    pub fn new(input_tokens: usize, output_tokens: usize, cached_tokens: usize) -> Self {
        Self {
            input_tokens,
            input_tokens_details: ResponseInputTokensDetails { cached_tokens },
            output_tokens,
            output_tokens_details: OutputTokensDetails { reasoning_tokens: 0 },
            total_tokens: input_tokens + output_tokens,
        }
    }
}

// ---------------------------------------------------------------- streamed events

/// A streamed event: sent as `event: <type>` and `data: <this>`; `sequence_number` increases
/// from 0 through the stream. In order: `response.created`, `response.in_progress`,
/// `response.output_item.added`, `response.content_part.added`, a `response.output_text.delta`
/// per piece of text, `response.output_text.done`, `response.content_part.done`,
/// `response.output_item.done`, then `response.completed` (or `response.incomplete` when the
/// answer hit `max_output_tokens`); a failure after the stream started ends it with
/// `response.failed`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type")]
pub enum ResponseEvent {
    /// The response, `in_progress`, with no output yet.
    #[serde(rename = "response.created")]
    Created { sequence_number: u64, response: ResponseObject },
    #[serde(rename = "response.in_progress")]
    InProgress { sequence_number: u64, response: ResponseObject },
    /// The assistant message, `in_progress`, with no content yet.
    #[serde(rename = "response.output_item.added")]
    OutputItemAdded { sequence_number: u64, output_index: usize, item: OutputMessage },
    /// The `output_text` part, empty.
    #[serde(rename = "response.content_part.added")]
    ContentPartAdded {
        sequence_number: u64,
        item_id: String,
        output_index: usize,
        content_index: usize,
        part: OutputText,
    },
    /// More text.
    #[serde(rename = "response.output_text.delta")]
    OutputTextDelta {
        sequence_number: u64,
        item_id: String,
        output_index: usize,
        content_index: usize,
        delta: String,
        /// Always empty.
        #[schema(value_type = Vec<Object>)]
        logprobs: Vec<Value>,
    },
    /// The whole text.
    #[serde(rename = "response.output_text.done")]
    OutputTextDone {
        sequence_number: u64,
        item_id: String,
        output_index: usize,
        content_index: usize,
        text: String,
        /// Always empty.
        #[schema(value_type = Vec<Object>)]
        logprobs: Vec<Value>,
    },
    #[serde(rename = "response.content_part.done")]
    ContentPartDone {
        sequence_number: u64,
        item_id: String,
        output_index: usize,
        content_index: usize,
        part: OutputText,
    },
    #[serde(rename = "response.output_item.done")]
    OutputItemDone { sequence_number: u64, output_index: usize, item: OutputMessage },
    /// The finished response, as answered without `stream`.
    #[serde(rename = "response.completed")]
    Completed { sequence_number: u64, response: ResponseObject },
    /// The finished response, `incomplete` (it hit `max_output_tokens`).
    #[serde(rename = "response.incomplete")]
    Incomplete { sequence_number: u64, response: ResponseObject },
    /// The response, `failed`, with its `error`.
    #[serde(rename = "response.failed")]
    Failed { sequence_number: u64, response: ResponseObject },
}

impl ResponseEvent {
    /// The event's `type` (also its SSE event name).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Created { .. } => "response.created",
            Self::InProgress { .. } => "response.in_progress",
            Self::OutputItemAdded { .. } => "response.output_item.added",
            Self::ContentPartAdded { .. } => "response.content_part.added",
            Self::OutputTextDelta { .. } => "response.output_text.delta",
            Self::OutputTextDone { .. } => "response.output_text.done",
            Self::ContentPartDone { .. } => "response.content_part.done",
            Self::OutputItemDone { .. } => "response.output_item.done",
            Self::Completed { .. } => "response.completed",
            Self::Incomplete { .. } => "response.incomplete",
            Self::Failed { .. } => "response.failed",
        }
    }
}
