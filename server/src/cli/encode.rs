//! `janus encode`: images into image tokens with the VQ encoder, written as the JSON file
//! `janus decode-tokens` reads (and `generate --tokens-out` writes): one array of token ids per
//! image, raster order.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use janus::Parts;

use super::output::write_tokens;
use crate::engine_args::EngineArgs;

#[derive(Args, Debug)]
pub struct EncodeArgs {
    #[command(flatten)]
    pub model: EngineArgs,

    /// The image: PNG, JPEG, WebP or GIF (first frame); repeat the flag for several. Each is
    /// resized as a whole (aspect not kept, no crop) to the model's generated-image square.
    #[arg(long, env = "JANUS_IMAGE", required = true)]
    pub image: Vec<PathBuf>,

    /// Where to write the tokens (JSON: one array of token ids per image).
    #[arg(long, env = "JANUS_TOKENS_OUT")]
    pub tokens_out: PathBuf,
}

pub fn run(a: EncodeArgs) -> Result<()> {
    let images = (a.image.iter())
        .map(|p| janus::input::preprocess::load_image(p).with_context(|| format!("--image {}", p.display())))
        .collect::<Result<Vec<_>>>()?;
    let model = a.model.load(Parts::Edit)?;
    let tokens = model.encode_image_tokens(&images)?;
    write_tokens(&a.tokens_out, &tokens)?;
    eprintln!(
        "wrote {} token grid(s) of {} tokens ({}×{} pixels) to {}",
        tokens.len(),
        model.num_image_tokens(),
        model.image_size(),
        model.image_size(),
        a.tokens_out.display()
    );
    Ok(())
}
