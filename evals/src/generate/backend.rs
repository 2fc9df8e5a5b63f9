//! The backend interface: [`ImageBackend`] (a prompt in, `n` PNG files out), and the seed policy
//! of a prompt whose samples are requested in several parts.

use anyhow::Result;
use serde_json::Value;

/// Something that turns a prompt into `n` PNG files.
pub trait ImageBackend: Sync {
    /// `n` PNG files for `prompt`, sampled from `seed`.
    fn generate(&self, prompt: &str, n: usize, seed: u64) -> Result<Vec<Vec<u8>>>;
    /// What produced the images, for the run manifest (model id or endpoint, settings). It must
    /// not change while a run is resumed.
    fn describe(&self) -> Value;
    /// What the backend learned while serving, recorded in the manifest at the end of a session:
    /// `{"models": [...], "notes": [...]}` (the models that answered; adaptations made).
    fn served(&self) -> Value {
        Value::Null
    }
    /// Requests this process sent and how they fared, recorded in its session of the manifest
    /// (`{"requests", "retries", "endpoints": {...}}` for endpoints; nothing in-process).
    fn traffic(&self) -> Value {
        Value::Null
    }
}

/// The seed of sample `index` of a prompt whose samples are requested in several parts:
/// sample 0 keeps the run seed, the others are spread by a golden-ratio stride so that the runs
/// of nearby seeds (42, 43) do not share samples.
pub fn sample_seed(seed: u64, index: usize) -> u64 {
    seed.wrapping_add((index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}
