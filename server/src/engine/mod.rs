//! The seam between the HTTP layer and the model. Handlers call the [`EngineClient`] facade
//! (`generate_images`, `generate_images_stream`, `chat`, `chat_stream`); it submits to an
//! [`Engine`] and reads the per-request event channel, which handlers never see. Dropping what
//! the client returned (a future or a stream) drops the channel, which cancels the request.
//!
//! | file | what |
//! | --- | --- |
//! | `mod.rs` | [`Engine`] (what a backend implements), [`ModelInfo`], the request and event types |
//! | `error.rs` | [`EngineError`]: typed failures, library errors mapped by kind |
//! | `client.rs` | [`EngineClient`]: the facade handlers call |
//! | `budget.rs` | the memory-aware default of `--max-text-sessions` |
//! | `model_engine.rs` | [`ModelEngine`]: the real engine's handle: bounded queue, the engine thread |
//! | `shared.rs` | [`EngineOptions`] and the state the handle and the thread share (status, counters) |
//! | `scheduler.rs` | the engine thread's loop: admission, one step per cohort and text answer per turn |
//! | `cohort.rs` | image cohorts (one CFG batch), their previews, and VQ decodes one chunk per turn |
//! | `text.rs` | text answers, one token per turn |

mod budget;
mod client;
mod cohort;
mod error;
mod model_engine;
mod scheduler;
mod shared;
#[cfg(test)]
mod tests;
mod text;

pub use client::{AnswerOutput, ChatOutput, EngineClient, ImagesOutput};
pub use error::EngineError;
pub use model_engine::ModelEngine;
pub use shared::EngineOptions;

use image::RgbImage;
use janus::sampling::logprobs::TokenLogprobs;
use janus::{Conversation, FinishReason, Prompter, TextParams, TextRequest};
use tokio::sync::mpsc;

use crate::admission::Reservation;

/// A validated text-to-image request (`janus::ImageAsk::validate`).
pub use janus::ImageRequest;

/// An image request ready for the engine: validated, its prompt tokenized and checked
/// (`janus::Prompter::t2i_prompt_ids`); for an edit, the image to keep where it is not editable.
#[derive(Debug, Clone)]
pub struct ImagesRequest {
    pub request: ImageRequest,
    pub prompt_ids: Vec<u32>,
    pub edit: Option<EditInput>,
}

/// What an edit keeps: the input image as the VQ encoder's input (`[3, S, S]` in [-1, 1],
/// `janus::edit::encoder_pixels`), and per token of the grid whether it is drawn
/// (`janus::edit::editable_grid`). The engine encodes the image and forces the kept tokens.
#[derive(Debug, Clone)]
pub struct EditInput {
    pub pixels: janus::Tensor,
    pub editable: Vec<bool>,
}

impl ImagesRequest {
    /// `request` with its prompt tokenized and checked by `prompter`.
    pub fn new(prompter: &Prompter, request: ImageRequest) -> janus::Result<Self> {
        let prompt_ids = prompter.t2i_prompt_ids(&request.prompt)?;
        Ok(Self { request, prompt_ids, edit: None })
    }
}

/// What the loaded model can do, for validation and `/v1/models`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// The `--model` value (a hub id or a directory), reported as the model id.
    pub id: String,
    /// Unix time the model was loaded.
    pub created: u64,
    /// Side of generated images in pixels (384 for Janus-Pro).
    pub image_size: usize,
    /// Image tokens per generated image (576).
    pub num_image_tokens: usize,
    /// The longest text-to-image prompt, in tokens, template included.
    pub max_prompt_tokens: usize,
    /// The LM context, in tokens.
    pub context_length: usize,
    /// How the linear layers are stored: `none`, `q8_0`, `q6k`, `q5k`, `q4k`.
    pub quant: janus::Quant,
    /// The model dtype (`f32`, `bf16`, `f16`).
    pub dtype: String,
    /// Where the model runs (`cpu`, `cuda:0`).
    pub device: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EngineStatus {
    Loading,
    Ready,
    /// Loading failed; the message says why.
    Failed(String),
}

#[derive(Debug)]
pub enum ImageEvent {
    /// A preview of image `index`: the rows generated so far, the rest grey.
    Partial { index: usize, partial_index: usize, image: RgbImage },
    /// Image `index` is complete.
    Image { index: usize, image: RgbImage },
    /// All images of the request are done (always the last event on success).
    Done { prompt_tokens: usize, image_tokens: usize },
    /// The request failed; no more events follow.
    Failed(EngineError),
}

/// A text request ready for the engine: tokenized, its images preprocessed, its length checked
/// (`janus::Prompter::text_tokens`, `janus::Prompter::image`); `n` answers to it.
#[derive(Debug)]
pub struct ChatRequest {
    pub text: TextRequest,
    /// The image memory the prepared images hold, given back when the engine has read them.
    pub hold: Reservation,
    /// Answers (1 to `janus::limits::MAX_TEXT_ANSWERS`): answer `i` samples on its own seed
    /// stream (`TextParams::answer`). The others start once the first has read the prompt, and
    /// read it from the prefix cache.
    pub n: usize,
}

impl ChatRequest {
    /// A conversation prepared all at once by `prompter`, holding no image memory (for callers
    /// without an admission stage: the benches, the tests).
    pub fn new(prompter: &Prompter, conv: &Conversation, params: &TextParams) -> janus::Result<Self> {
        Ok(Self { text: prompter.text_request(conv, params)?, hold: Reservation::none(), n: 1 })
    }
}

#[derive(Debug)]
pub enum ChatEvent {
    /// The prompt was accepted (sent first, once).
    Started { prompt_tokens: usize },
    /// A new token of answer `index`, the text it makes final (empty while a character is
    /// incomplete or could begin a stop sequence), and its log-probabilities when asked for.
    Delta { index: usize, text: String, logprobs: Vec<TokenLogprobs> },
    /// Answer `index` is complete; the request is once every answer is.
    /// `cached_tokens`: prompt tokens read from the prefix cache.
    Done { index: usize, completion_tokens: usize, cached_tokens: usize, finish_reason: FinishReason },
    /// The request failed; no more events follow.
    Failed(EngineError),
}

/// What a backend implements; handlers use it only through [`EngineClient`].
pub trait Engine: Send + Sync + 'static {
    fn status(&self) -> EngineStatus;
    /// `None` until the model is loaded.
    fn info(&self) -> Option<ModelInfo>;
    /// What prepares requests for the loaded model (`None` until it is loaded).
    fn prompter(&self) -> Option<Prompter>;
    /// Requests waiting to start.
    fn queue_depth(&self) -> usize;
    /// Enqueues an image request without blocking; errors at once when it cannot be queued.
    fn submit_images(&self, req: ImagesRequest) -> Result<mpsc::Receiver<ImageEvent>, EngineError>;
    /// Enqueues a chat request without blocking; errors at once when it cannot be queued.
    fn submit_chat(&self, req: ChatRequest) -> Result<mpsc::Receiver<ChatEvent>, EngineError>;
    /// Stops accepting requests; work already queued or running finishes.
    fn shutdown(&self);
    /// Whether queued and running work has all finished (after `shutdown`).
    fn is_idle(&self) -> bool;
}
