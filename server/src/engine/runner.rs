//! The real engine: one OS thread owns the model and runs a step loop over all active work.
//! (Skeleton; being implemented.)

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{ChatEvent, ChatRequest, Engine, EngineError, EngineStatus, ImageEvent, ImageRequest, ModelInfo};

/// How to start the engine (the `janus serve` flags that concern the model).
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Local directory or hub id.
    pub model: String,
    /// `auto`, `cpu`, `cuda`, `cuda:N`.
    pub device: String,
    /// `f32`, `bf16`, `f16`; default per device.
    pub dtype: Option<String>,
    /// Most images generated together in one CFG batch.
    pub max_batch_images: usize,
    /// Most requests waiting to start; beyond that, 429.
    pub queue_capacity: usize,
    /// Images decoded at once by the VQ decoder.
    pub decode_chunk: usize,
    /// When idle, how long to wait for more image requests to batch with the first.
    pub batch_wait: Duration,
}

pub struct ModelEngine {}

impl ModelEngine {
    /// Starts the engine thread, which loads the model in the background (status `Loading`).
    pub fn start(_opts: EngineOptions) -> Arc<Self> {
        Arc::new(Self {})
    }
}

impl Engine for ModelEngine {
    fn status(&self) -> EngineStatus {
        EngineStatus::Loading
    }
    fn info(&self) -> Option<ModelInfo> {
        None
    }
    fn queue_depth(&self) -> usize {
        0
    }
    fn submit_images(&self, _req: ImageRequest) -> Result<mpsc::Receiver<ImageEvent>, EngineError> {
        Err(EngineError::Loading)
    }
    fn submit_chat(&self, _req: ChatRequest) -> Result<mpsc::Receiver<ChatEvent>, EngineError> {
        Err(EngineError::Loading)
    }
    fn shutdown(&self) {}
    fn is_idle(&self) -> bool {
        true
    }
}
