//! [`EngineArgs`]: `--model`, `--device`, `--dtype`, `--quant`, `--decode-chunk`: which model to
//! load, where and how to run it. Every subcommand that loads a model flattens it (`generate`,
//! `decode-tokens`, `describe`, `bench`, `serve`), so each flag is defined, defaulted (from
//! `janus::limits`) and checked once.

use std::time::Instant;

use anyhow::Result;
use clap::builder::TypedValueParser as _;
use clap::Args;
use janus::limits::DEFAULT_DECODE_CHUNK;
use janus::{Janus, Parts, Quant, DEFAULT_MODEL};

/// Which model to load, where and how to run it.
#[derive(Args, Debug, Clone)]
pub struct EngineArgs {
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

    /// Images decoded at once by the VQ decoder (bounds its memory; when serving, also the most
    /// decoded between two steps of other work: 1 is best on a CPU-only server).
    #[arg(long, env = "JANUS_DECODE_CHUNK", default_value_t = DEFAULT_DECODE_CHUNK,
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub decode_chunk: usize,
}

impl EngineArgs {
    /// Loads the `parts` a command uses (the other job's modules stay on disk).
    pub fn load(&self, parts: Parts) -> Result<Janus> {
        let t = Instant::now();
        let model = Janus::open_parts(&self.model, &self.device, self.dtype.as_deref(), self.quant, parts)?;
        tracing::info!(secs = t.elapsed().as_secs_f32(), quant = %model.quant(), "loaded");
        Ok(model)
    }
}
