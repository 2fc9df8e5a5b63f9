//! The seam between the HTTP layer and the model. Handlers submit requests and read events from
//! a per-request channel; they never touch tensors. Dropping the receiver cancels the request.
//! [`runner::ModelEngine`] is the real engine (one thread owns the model); tests use fakes.

pub mod runner;

use image::RgbImage;
use janus::{Conversation, FinishReason, SamplingParams, TextParams};
use tokio::sync::mpsc;

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

/// `n` images for one prompt.
#[derive(Debug, Clone)]
pub struct ImageRequest {
    pub prompt: String,
    pub n: usize,
    /// Image `i` samples with its own RNG seeded from (seed, i).
    pub seed: u64,
    pub params: SamplingParams,
    /// Previews per image sent while generating (0..=3), decoded from the tokens so far.
    pub partial_images: usize,
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

#[derive(Debug)]
pub struct ChatRequest {
    pub conversation: Conversation,
    pub params: TextParams,
}

#[derive(Debug)]
pub enum ChatEvent {
    /// The prompt was accepted (sent first).
    Started { prompt_tokens: usize },
    /// New text.
    Delta(String),
    /// The answer is complete (always the last event on success).
    Done { completion_tokens: usize, finish_reason: FinishReason },
    /// The request failed; no more events follow.
    Failed(EngineError),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    /// The queue is full: 429 with Retry-After.
    #[error("the server is busy ({queued} requests waiting); retry in {retry_after_s} s")]
    QueueFull { queued: usize, retry_after_s: u64 },
    /// 503 while the model loads.
    #[error("the model is still loading")]
    Loading,
    /// 503: the model could not be loaded.
    #[error("the model failed to load: {0}")]
    LoadFailed(String),
    /// 400: the request cannot be served as asked (prompt too long, bad parameter...).
    #[error("{0}")]
    InvalidRequest(String),
    /// 503: the device ran out of memory for this batch; the server keeps serving.
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// 500: a fault inside the engine; the server keeps serving.
    #[error("internal error: {0}")]
    Internal(String),
    /// 503: the server is draining for shutdown.
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// What the HTTP layer needs from an engine.
pub trait Engine: Send + Sync + 'static {
    fn status(&self) -> EngineStatus;
    /// `None` until the model is loaded.
    fn info(&self) -> Option<ModelInfo>;
    /// Requests waiting to start.
    fn queue_depth(&self) -> usize;
    /// Enqueues an image request without blocking; errors at once when it cannot be queued.
    fn submit_images(&self, req: ImageRequest) -> Result<mpsc::Receiver<ImageEvent>, EngineError>;
    /// Enqueues a chat request without blocking; errors at once when it cannot be queued.
    fn submit_chat(&self, req: ChatRequest) -> Result<mpsc::Receiver<ChatEvent>, EngineError>;
    /// Stops accepting requests; work already queued or running finishes.
    fn shutdown(&self);
    /// Whether queued and running work has all finished (after `shutdown`).
    fn is_idle(&self) -> bool;
}
