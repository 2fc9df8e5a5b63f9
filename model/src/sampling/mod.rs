//! Classifier-free guidance and token sampling on f32 logits.
//!
//! Reference: deepseek-ai/Janus `generation_inference.py` (guided = uncond + w·(cond − uncond),
//! softmax(guided / T), multinomial; no top-k / top-p) and transformers' logits warpers for the
//! optional top-k / top-p (applied after temperature, in that order). Every image has its own
//! RNG, seeded from the request seed and the image index, so an image depends only on its seed.
//!
//! Two implementations of the same rules: [`Sampler`] on the host (`host.rs`: text decoding, and
//! image rows with top-k / top-p, which need a sort) and [`BatchSampler`] (`batch.rs`), which
//! keeps an image batch's logits and picked tokens on the model's device so a decode step needs
//! no host round trip; its draw is `inverse_cdf.rs`. A text answer's penalties
//! (`penalties.rs`) and log-probabilities (`logprobs.rs`) are applied and read around the host
//! draw ([`crate::text::picker`]).

mod batch;
mod host;
mod inverse_cdf;
pub mod logprobs;
pub mod penalties;

pub use batch::BatchSampler;
pub use host::{argmax, Sampler};

use crate::error::{Field, Invalid};
use crate::limits::{
    DEFAULT_CFG_WEIGHT, DEFAULT_IMAGE_TEMPERATURE, GREEDY_BELOW_TEMPERATURE, MAX_CFG_WEIGHT, MAX_IMAGE_TEMPERATURE,
};

/// How image tokens are chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// CFG weight w (the reference default is 5).
    pub cfg_weight: f32,
    /// Softmax temperature (reference default 1). Below [`GREEDY_BELOW_TEMPERATURE`] (1e-5; 0
    /// included) the pick is greedy: the argmax, which is what sampling tends to as T goes to 0,
    /// whereas logits / T would overflow to ±inf there (1e-40, a valid f32, would) and the
    /// softmax would turn into NaN. Both samplers decide this through [`Self::is_greedy`].
    pub temperature: f32,
    /// Keep only the k most likely tokens (off by default, as in the reference).
    pub top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability reaches p (off by default).
    pub top_p: Option<f32>,
    /// Argmax instead of sampling (for tests and parity with transformers' `do_sample=False`).
    pub greedy: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            cfg_weight: DEFAULT_CFG_WEIGHT,
            temperature: DEFAULT_IMAGE_TEMPERATURE,
            top_k: None,
            top_p: None,
            greedy: false,
        }
    }
}

impl SamplingParams {
    /// Checks each value against [`crate::limits`], naming the field at fault.
    pub fn validate(&self) -> std::result::Result<(), Invalid> {
        if !(0.0..=MAX_CFG_WEIGHT).contains(&self.cfg_weight) {
            let why = format!("must be between 0 and {MAX_CFG_WEIGHT}; got {}", self.cfg_weight);
            return Err(Invalid::new(Field::CfgWeight, why));
        }
        if !(0.0..=MAX_IMAGE_TEMPERATURE).contains(&self.temperature) {
            let why = format!("must be between 0 and {MAX_IMAGE_TEMPERATURE}; got {}", self.temperature);
            return Err(Invalid::new(Field::Temperature, why));
        }
        if self.top_k == Some(0) {
            return Err(Invalid::new(Field::TopK, "must be at least 1; got 0"));
        }
        if let Some(p) = self.top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
            return Err(Invalid::new(Field::TopP, format!("must be in (0, 1]; got {p}")));
        }
        Ok(())
    }

    /// Argmax instead of a draw: asked for, or a temperature below
    /// [`GREEDY_BELOW_TEMPERATURE`] (0 included), where logits / T could overflow.
    pub fn is_greedy(&self) -> bool {
        self.greedy || self.temperature < GREEDY_BELOW_TEMPERATURE
    }
}

/// The RNG seed of image `index` of a request with `seed` (a SplitMix64 mix, so nearby seeds
/// and indices give unrelated streams).
pub fn image_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(0x632B_E59B_D9B4_E019);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random f32 in [0, 1) (shared by the submodules' tests).
    pub(super) fn noise(i: usize) -> f32 {
        (image_seed(7, i as u64) >> 40) as f32 / (1u64 << 24) as f32
    }

    #[test]
    fn image_seeds_differ() {
        assert_ne!(image_seed(1, 0), image_seed(1, 1));
        assert_ne!(image_seed(1, 0), image_seed(2, 0));
        assert_eq!(image_seed(42, 3), image_seed(42, 3));
    }

    #[test]
    fn temperatures_below_the_limit_are_valid_and_greedy() {
        for t in [0.0, 1e-40, f32::from_bits(1), 9.9e-6] {
            let p = SamplingParams { temperature: t, ..Default::default() };
            assert!(p.validate().is_ok() && p.is_greedy(), "T = {t:e}");
        }
        assert!(!SamplingParams { temperature: GREEDY_BELOW_TEMPERATURE, ..Default::default() }.is_greedy());
    }
}
