//! `--model`, `--device`, `--dtype`, `--quant`: which model to load and where to run it, shared by
//! every subcommand that loads one (and by `janus serve`).

use std::time::Instant;

use anyhow::Result;
use clap::Args;
use janus::{Janus, Parts, Quant, DEFAULT_MODEL};

/// Which model to load and where to run it.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// A local model directory, or a Hugging Face hub id (optionally `id@revision`).
    #[arg(long, env = "JANUS_MODEL", default_value = DEFAULT_MODEL)]
    pub model: String,

    /// `auto` (CUDA if available), `cpu`, `cuda` or `cuda:N`.
    #[arg(long, env = "JANUS_DEVICE", default_value = "auto")]
    pub device: String,

    /// Weights dtype: `f32`, `bf16` or `f16` (default: bf16 on CUDA, f32 on CPU).
    #[arg(long, env = "JANUS_DTYPE")]
    pub dtype: Option<String>,

    /// Quantize the language model's and the generation head's linear layers while loading:
    /// `none` (exact), `q8_0`, `q6k`, `q5k` or `q4k`. A checkpoint written by `janus quantize`
    /// loads as it was quantized.
    #[arg(long, env = "JANUS_QUANT", default_value_t = Quant::None)]
    pub quant: Quant,
}

impl ModelArgs {
    /// Loads the `parts` a command uses (the other job's modules stay on disk).
    pub fn load(&self, parts: Parts) -> Result<Janus> {
        let t = Instant::now();
        let model = Janus::open_parts(&self.model, &self.device, self.dtype.as_deref(), self.quant, parts)?;
        tracing::info!(secs = t.elapsed().as_secs_f32(), quant = %model.quant(), "loaded");
        Ok(model)
    }
}
