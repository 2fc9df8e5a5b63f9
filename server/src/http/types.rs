//! Request and response bodies, shaped as OpenAI's (openai-openapi `CreateImageRequest`,
//! `ImagesResponse`, `CreateChatCompletionRequest`, ...), plus our extensions. Requests deny
//! unknown fields; the OpenAI fields we accept but ignore are listed explicitly.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

// ---------------------------------------------------------------- images

/// `POST /v1/images/generations`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // the accepted-and-ignored fields are only parsed
pub struct ImageGenerationRequest {
    /// What to draw.
    #[schema(example = "a red bicycle leaning against a brick wall")]
    pub prompt: String,
    /// Accepted for compatibility and ignored: the loaded model answers.
    pub model: Option<String>,
    /// Images to generate, 1..=16 (and at most `--max-batch-images`).
    #[schema(minimum = 1, maximum = 16, default = 1)]
    pub n: Option<i64>,
    /// `auto` (the model's native size, `384x384` for Janus-Pro), the native size, or `256x256`,
    /// `512x512`, `1024x1024`: resized from the native image (Lanczos3), not generated at that size.
    #[schema(example = "1024x1024", default = "auto")]
    pub size: Option<String>,
    /// `b64_json` (default) or `url` (a link to `/v1/files/{id}/content` on this server, kept
    /// for `--file-ttl-secs`).
    #[schema(example = "b64_json", default = "b64_json")]
    pub response_format: Option<String>,
    /// Send server-sent events: partial images, then one `image_generation.completed` per image.
    #[schema(default = false)]
    pub stream: Option<bool>,
    /// Previews per image while streaming, 0..=3.
    #[schema(minimum = 0, maximum = 3, default = 0)]
    pub partial_images: Option<i64>,
    /// Extension: the random seed (image i uses a stream seeded from (seed, i)); random when
    /// absent, and returned as `seed` and in the `x-seed` header.
    pub seed: Option<u64>,
    /// Extension: classifier-free guidance weight, 0..=100 (default 5).
    #[schema(minimum = 0.0, maximum = 100.0, default = 5.0)]
    pub guidance_scale: Option<f32>,
    /// Extension: sampling temperature, 0..=10 (default 1; 0 = greedy).
    #[schema(minimum = 0.0, maximum = 10.0, default = 1.0)]
    pub temperature: Option<f32>,
    /// Extension: sample among the k most likely image tokens (off by default).
    #[schema(minimum = 1)]
    pub top_k: Option<i64>,
    /// Extension: nucleus sampling threshold in (0, 1] (off by default).
    pub top_p: Option<f32>,
    /// Accepted and ignored.
    pub quality: Option<String>,
    /// Accepted and ignored.
    pub style: Option<String>,
    /// Accepted and ignored.
    pub user: Option<String>,
    /// Accepted and ignored.
    pub background: Option<String>,
    /// Accepted and ignored.
    pub moderation: Option<String>,
    /// 0..=100: the JPEG quality (default 100); ignored for PNG and WebP (lossless).
    #[schema(minimum = 0, maximum = 100, default = 100)]
    pub output_compression: Option<i64>,
    /// `png` (default), `jpeg` or `webp` (lossless).
    #[schema(example = "png", default = "png")]
    pub output_format: Option<String>,
}

/// The result of a non-streamed image request.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ImagesResponse {
    /// Unix seconds.
    pub created: u64,
    pub data: Vec<ImageData>,
    /// `png`, `jpeg` or `webp`.
    pub output_format: String,
    /// e.g. `384x384`, or the size asked for.
    pub size: String,
    pub usage: ImageUsage,
    /// The seed used (extension).
    pub seed: u64,
}

/// One image: `b64_json` or `url`, as asked by `response_format`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ImageData {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b64_json: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The prompt actually drawn, where it is not the request's (variations, edits without a mask).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revised_prompt: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ImageUsage {
    /// Prompt tokens (template included).
    pub input_tokens: usize,
    /// Image tokens generated.
    pub output_tokens: usize,
    pub total_tokens: usize,
    pub input_tokens_details: InputTokensDetails,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InputTokensDetails {
    pub text_tokens: usize,
    pub image_tokens: usize,
}

/// Streamed event `image_generation.partial_image`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ImagePartialEvent {
    /// `image_generation.partial_image`
    #[serde(rename = "type")]
    pub kind: String,
    /// Which image of the request (0..n); an extension for n > 1.
    pub index: usize,
    /// 0-based preview number for this image.
    pub partial_image_index: usize,
    pub b64_json: String,
    pub created_at: u64,
    pub size: String,
    pub quality: String,
    pub background: String,
    pub output_format: String,
}

/// Streamed event `image_generation.completed`, one per image.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ImageCompletedEvent {
    /// `image_generation.completed`
    #[serde(rename = "type")]
    pub kind: String,
    /// Which image of the request (0..n); an extension for n > 1.
    pub index: usize,
    pub b64_json: String,
    pub created_at: u64,
    pub size: String,
    pub quality: String,
    pub background: String,
    pub output_format: String,
    /// This image's share: the whole prompt, and its own image tokens.
    pub usage: ImageUsage,
    /// The request's seed (extension).
    pub seed: u64,
}

/// `POST /v1/images/describe` form (multipart/form-data).
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // documents the form for OpenAPI; the handler reads the parts directly
pub struct DescribeForm {
    /// PNG, JPEG, WebP or GIF (first frame).
    #[schema(value_type = String, format = Binary)]
    pub image: Vec<u8>,
    /// Default: "Describe this image in detail."
    pub question: Option<String>,
    /// Most tokens to generate (default 512, or what fits in the context).
    #[schema(minimum = 1)]
    pub max_tokens: Option<u32>,
}

/// `POST /v1/images/edits` form (multipart/form-data).
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // documents the form for OpenAPI; the handler reads the parts directly
pub struct ImageEditForm {
    /// The image to edit: PNG, JPEG, WebP or GIF (first frame); several `image[]` may be sent, the
    /// first is edited.
    #[schema(value_type = String, format = Binary)]
    pub image: Vec<u8>,
    /// A PNG of the image's size whose fully transparent pixels mark what to change. Without it the
    /// image is described and redrawn from the description and the prompt (`revised_prompt`).
    #[schema(value_type = Option<String>, format = Binary)]
    pub mask: Option<Vec<u8>>,
    /// What to draw in the masked area (or the instruction for a redraw).
    pub prompt: String,
    /// Images, 1..=16 (and at most `--max-batch-images`).
    pub n: Option<i64>,
    /// `auto` (the image's own size), `384x384`, `256x256`, `512x512` or `1024x1024`.
    pub size: Option<String>,
    /// `b64_json` (default) or `url`.
    pub response_format: Option<String>,
    /// `png` (default), `jpeg` or `webp`.
    pub output_format: Option<String>,
    /// The JPEG quality, 0..=100.
    pub output_compression: Option<i64>,
    /// Extension: the random seed.
    pub seed: Option<u64>,
    /// Extension: classifier-free guidance weight (default 5).
    pub guidance_scale: Option<f32>,
    /// Extension: sampling temperature (default 1).
    pub temperature: Option<f32>,
    /// `transparent` is refused; `opaque` and `auto` accepted. `model`, `user`, `quality`,
    /// `input_fidelity` and `moderation` are accepted and ignored.
    pub background: Option<String>,
}

/// `POST /v1/images/variations` form (multipart/form-data).
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // documents the form for OpenAPI; the handler reads the parts directly
pub struct ImageVariationForm {
    /// PNG, JPEG, WebP or GIF (first frame).
    #[schema(value_type = String, format = Binary)]
    pub image: Vec<u8>,
    /// Images, 1..=16 (and at most `--max-batch-images`).
    pub n: Option<i64>,
    /// `auto` (`384x384`), `256x256`, `512x512` or `1024x1024`.
    pub size: Option<String>,
    /// `b64_json` (default) or `url`.
    pub response_format: Option<String>,
    /// `png` (default), `jpeg` or `webp`.
    pub output_format: Option<String>,
    /// The JPEG quality, 0..=100.
    pub output_compression: Option<i64>,
    /// Extension: the random seed.
    pub seed: Option<u64>,
    /// Extension: classifier-free guidance weight (default 5).
    pub guidance_scale: Option<f32>,
    /// Extension: sampling temperature (default 1).
    pub temperature: Option<f32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DescribeResponse {
    pub text: String,
    /// `stop` (end of answer) or `length` (hit `max_tokens`).
    pub finish_reason: String,
    pub usage: Usage,
}

// ---------------------------------------------------------------- chat

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // the accepted-and-ignored fields are only parsed
pub struct ChatCompletionRequest {
    /// The conversation; it must end with a user message. A system (or developer) message
    /// replaces the default system prompt.
    pub messages: Vec<ChatMessage>,
    /// Accepted for compatibility and ignored: the loaded model answers.
    pub model: Option<String>,
    /// Most tokens to generate (deprecated name of `max_completion_tokens`).
    #[schema(minimum = 1)]
    pub max_tokens: Option<i64>,
    /// Most tokens to generate (default 512, or what fits in the context).
    #[schema(minimum = 1)]
    pub max_completion_tokens: Option<i64>,
    /// 0..=2; default 0 (greedy, as the reference).
    #[schema(minimum = 0.0, maximum = 2.0, default = 0.0)]
    pub temperature: Option<f32>,
    /// Nucleus sampling threshold in (0, 1], with a temperature above 0.
    pub top_p: Option<f32>,
    /// Seed for sampling (random when absent and the temperature is above 0).
    pub seed: Option<i64>,
    /// Send `chat.completion.chunk` server-sent events ending with `data: [DONE]`.
    #[schema(default = false)]
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    /// Answers, 1..=8, decoded together: answer i samples from its own seed stream (seed, i).
    #[schema(minimum = 1, maximum = 8, default = 1)]
    pub n: Option<i64>,
    /// A string or up to 4 strings (1..=256 characters each): the answer ends before the first
    /// occurrence, which is not included (`finish_reason: "stop"`).
    #[schema(value_type = Option<Object>)]
    pub stop: Option<serde_json::Value>,
    /// Return each token's log-probability: the model's log-softmax before penalties,
    /// structured-output masks, temperature and top-p.
    pub logprobs: Option<bool>,
    /// With `logprobs`, the 0..=20 most likely tokens at each position.
    #[schema(minimum = 0, maximum = 20)]
    pub top_logprobs: Option<i64>,
    /// -2..=2: subtracted from a token's logit once per earlier use in the answer.
    #[schema(minimum = -2.0, maximum = 2.0, default = 0.0)]
    pub frequency_penalty: Option<f32>,
    /// -2..=2: subtracted from a token's logit if the answer has used it.
    #[schema(minimum = -2.0, maximum = 2.0, default = 0.0)]
    pub presence_penalty: Option<f32>,
    /// Extension (transformers', vLLM's): above 0, at most 10, neutral 1; the logits of tokens in
    /// the prompt or the answer are divided by it (multiplied when negative).
    #[schema(default = 1.0)]
    pub repetition_penalty: Option<f32>,
    /// `{"type": "text"}`, `{"type": "json_object"}`, or `{"type": "json_schema", "json_schema":
    /// {"name", "schema", "strict"}}`: the answer is decoded under that constraint, so it parses
    /// (and validates against the schema).
    #[schema(value_type = Option<Object>)]
    pub response_format: Option<serde_json::Value>,
    /// Extension (vLLM's): exactly one of `{"choice": [...]}`, `{"regex": "..."}`, `{"grammar":
    /// "..."}` (Lark), `{"json": {schema}}` or `{"json_object": true}`.
    #[schema(value_type = Option<Object>)]
    pub structured_outputs: Option<serde_json::Value>,
    /// Accepted and ignored.
    pub user: Option<String>,
    /// Accepted and ignored.
    pub store: Option<bool>,
    /// Accepted and ignored.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// Accepted and ignored.
    pub service_tier: Option<String>,
    /// Accepted and ignored (no tools).
    pub parallel_tool_calls: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    /// Send a last chunk with `usage` (and empty `choices`) before `[DONE]`.
    pub include_usage: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChatRole {
    System,
    Developer,
    User,
    Assistant,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // the accepted-and-ignored fields are only parsed
pub struct ChatMessage {
    pub role: ChatRole,
    /// A string, or an array of `text` and `image_url` parts (images only in user messages).
    /// Empty content is a turn with no text; an assistant message may leave it out or null (as
    /// after a tool call). A special token's string in text (`<image_placeholder>`,
    /// `<|User|>`...) is plain text.
    #[schema(value_type = MessageContent)]
    pub content: Option<serde_json::Value>,
    /// Accepted and ignored.
    pub name: Option<String>,
    /// Accepted and ignored (assistant messages).
    pub refusal: Option<String>,
}

/// Message content: text, or parts.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // OpenAPI only; content is parsed by hand for precise errors
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// A content part.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
#[allow(dead_code)] // OpenAPI only
pub enum ContentPart {
    /// `{"type": "text", "text": "..."}`
    Text { text: String },
    /// `{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}`
    ImageUrl { image_url: ImageUrl },
}

#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)] // OpenAPI only
pub struct ImageUrl {
    /// `data:image/<format>;base64,<data>`. http(s) URLs are refused unless
    /// `--allow-remote-images`.
    pub url: String,
    /// `auto`, `low` or `high`; accepted and ignored (images are always resized to the
    /// model's input size).
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    pub prompt_tokens_details: PromptTokensDetails,
}

/// As OpenAI's: how many prompt tokens were read from the prefix cache (the system prompt's
/// keys and values, computed by an earlier answer) instead of computed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
pub struct PromptTokensDetails {
    pub cached_tokens: usize,
}

impl Usage {
    pub fn new(prompt_tokens: usize, completion_tokens: usize, cached_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: PromptTokensDetails { cached_tokens },
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChatCompletion {
    /// `chatcmpl-...`
    pub id: String,
    /// `chat.completion`
    pub object: String,
    pub created: u64,
    /// The loaded model.
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChatChoice {
    pub index: usize,
    pub message: AssistantMessage,
    /// `stop` or `length`.
    pub finish_reason: String,
    /// With `logprobs: true`.
    pub logprobs: Option<ChoiceLogprobs>,
}

/// A choice's log-probabilities, one entry per token.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChoiceLogprobs {
    pub content: Vec<TokenLogprob>,
    /// Always null.
    pub refusal: Option<Vec<TokenLogprob>>,
}

/// One token's log-probability (its `-inf` reported as -9999, as OpenAI does).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenLogprob {
    /// The token's text (a token that is part of a character shows U+FFFD).
    pub token: String,
    pub logprob: f32,
    /// The token's UTF-8 bytes.
    pub bytes: Vec<u8>,
    /// The most likely tokens at this position, most likely first.
    pub top_logprobs: Vec<TopLogprob>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AssistantMessage {
    /// `assistant`
    pub role: String,
    pub content: String,
    pub refusal: Option<String>,
}

/// One streamed `chat.completion.chunk`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChatCompletionChunk {
    pub id: String,
    /// `chat.completion.chunk`
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    /// Only on the last chunk, when `stream_options.include_usage` is true.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChunkChoice {
    pub index: usize,
    pub delta: ChunkDelta,
    pub finish_reason: Option<String>,
    /// The log-probabilities of this chunk's tokens, with `logprobs: true`.
    pub logprobs: Option<ChoiceLogprobs>,
}

#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct ChunkDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

// ---------------------------------------------------------------- models, probes

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModelList {
    /// `list`
    pub object: String,
    pub data: Vec<ModelCard>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModelCard {
    /// The `--model` value.
    pub id: String,
    /// `model`
    pub object: String,
    /// Unix seconds when the model was loaded.
    pub created: u64,
    pub owned_by: String,
    /// Extension: how the linear layers are stored (`none`, `q8_0`, `q6k`, `q5k`, `q4k`).
    pub quant: String,
    /// Extension: the model dtype (`f32`, `bf16`, `f16`).
    pub dtype: String,
    /// Extension: where the model runs (`cpu`, `cuda:0`).
    pub device: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HealthResponse {
    /// `ok`
    pub status: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReadyResponse {
    /// `ready`
    pub status: String,
    pub model: String,
}

/// The `finish_reason` OpenAI uses for ours.
pub fn finish_reason(r: janus::FinishReason) -> &'static str {
    match r {
        janus::FinishReason::Length => "length",
        janus::FinishReason::Stop | janus::FinishReason::Cancelled => "stop",
    }
}
