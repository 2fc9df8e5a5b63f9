//! `janus quantize`: a quantized copy of a model (`model.gguf` plus its config and tokenizer
//! files).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use janus::{Quant, DEFAULT_MODEL};

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// The original model: a local directory or a hub id.
    #[arg(long, env = "JANUS_MODEL", default_value = DEFAULT_MODEL)]
    pub model: String,

    /// The quantization: `q8_0`, `q6k`, `q5k` or `q4k`.
    #[arg(long, env = "JANUS_QUANT")]
    pub quant: Quant,

    /// The directory to write (created; an existing model.gguf there is replaced).
    #[arg(long, env = "JANUS_OUT")]
    pub out: PathBuf,
}

pub fn run(a: QuantizeArgs) -> Result<()> {
    if a.quant == Quant::None {
        bail!("--quant none writes nothing new; pick q8_0, q6k, q5k or q4k");
    }
    let t = Instant::now();
    let files = janus::ModelFiles::resolve(&a.model)?;
    let path = janus::quantize::write_quantized(&files, a.quant, &a.out)?;
    let bytes = std::fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?.len();
    eprintln!(
        "wrote {} ({:.2} GB, {}) in {:.1} s; load it with --model {}",
        path.display(),
        bytes as f64 / 1e9,
        a.quant,
        t.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(())
}
