//! `janus decode-tokens`: image tokens (as `generate --tokens-out` writes them) back into PNGs.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use janus::Parts;

use super::output::{check_out_path, write_pngs};
use crate::engine_args::EngineArgs;

#[derive(Args, Debug)]
pub struct DecodeArgs {
    #[command(flatten)]
    pub model: EngineArgs,

    /// JSON file with one array of token ids per image.
    #[arg(long, env = "JANUS_TOKENS")]
    pub tokens: PathBuf,

    /// A PNG file for one image, else a directory (created).
    #[arg(long, env = "JANUS_OUT")]
    pub out: PathBuf,
}

pub fn run(a: DecodeArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.tokens).with_context(|| format!("reading {}", a.tokens.display()))?;
    let tokens: Vec<Vec<u32>> = serde_json::from_str(&text)
        .with_context(|| format!("{}: expected a JSON array of arrays of token ids", a.tokens.display()))?;
    if tokens.is_empty() {
        bail!("{}: no images in the file", a.tokens.display());
    }
    check_out_path(&a.out, tokens.len())?;
    let model = a.model.load(Parts::Generation)?;
    let images = model.decode_images(&tokens, a.model.decode_chunk)?;
    let paths = write_pngs(&a.out, &images)?;
    eprintln!("wrote {} image(s) to {}", paths.len(), a.out.display());
    Ok(())
}
