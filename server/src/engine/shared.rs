//! What the engine's handle and its thread share: how the engine was started
//! ([`EngineOptions`]) and its live state ([`Shared`]: status, model description, counters).

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Mutex;
use std::time::Duration;

use janus::Prompter;

use super::{EngineStatus, ModelInfo};

/// How to start the engine (the `janus serve` flags that concern the model).
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Local directory or hub id.
    pub model: String,
    /// `auto`, `cpu`, `cuda`, `cuda:N`.
    pub device: String,
    /// `f32`, `bf16`, `f16`; default per device.
    pub dtype: Option<String>,
    /// Storage of the linear layers (`--quant`).
    pub quant: janus::Quant,
    /// Most images generated together in one CFG batch.
    pub max_batch_images: usize,
    /// Most requests waiting to start; beyond that, 429.
    pub queue_capacity: usize,
    /// Images decoded at once by the VQ decoder (and most decoded between two steps).
    pub decode_chunk: usize,
    /// When idle, how long to wait for more image requests to batch with the first.
    pub batch_wait: Duration,
    /// Most text answers decoded together; `None`: as many as the memory holds beside a full
    /// cohort (`budget.rs`), at most `janus::limits::MAX_TEXT_SESSIONS`.
    pub max_text_sessions: Option<usize>,
    /// Whether text answers take their tokens in the LM forward of an image cohort (one pass over
    /// the weights for both) rather than in a step of their own.
    pub shared_steps: bool,
    /// Prompt positions whose keys and values are kept for later answers that start the same way
    /// (`janus::text::prefix_cache`); 0: off.
    pub prefix_cache_positions: usize,
}

/// State shared by the handle and the engine thread.
pub struct Shared {
    pub status: Mutex<EngineStatus>,
    pub info: Mutex<Option<ModelInfo>>,
    pub prompter: Mutex<Option<Prompter>>,
    /// Requests accepted but not started yet (in the channel or the scheduler's waiting lists);
    /// `--queue-capacity` bounds it.
    pub queued: AtomicUsize,
    /// Requests the engine thread holds (waiting for a slot, running or being decoded).
    pub active: AtomicUsize,
    pub accepting: AtomicBool,
    /// The most images one cohort has held (for tests and the batching bench).
    pub largest_batch: AtomicUsize,
    /// Test-only fault injection: this many upcoming image-batch steps fail as a device
    /// out-of-memory would.
    #[cfg(test)]
    pub fail_steps: AtomicUsize,
    /// Test-only: this many upcoming shared steps (a cohort's and text answers' rows together)
    /// fail as a device out-of-memory would.
    #[cfg(test)]
    pub fail_shared_steps: AtomicUsize,
    /// Test-only: the most images decoded in one turn (between two steps).
    #[cfg(test)]
    pub largest_decode_turn: AtomicUsize,
    /// Test-only: steps in which text answers shared a cohort's LM forward.
    #[cfg(test)]
    pub shared_steps: AtomicUsize,
}

impl Shared {
    pub fn set_status(&self, s: EngineStatus) {
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = s;
    }
}
