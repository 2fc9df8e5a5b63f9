//! `janus generate`: images from a prompt, written as PNGs (and optionally their tokens).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use janus::limits::{DEFAULT_CFG_WEIGHT, DEFAULT_IMAGE_TEMPERATURE, MAX_IMAGES_PER_RUN};
use janus::{ImageAsk, Parts};

use super::invalid;
use super::output::{check_out_path, write_pngs, write_tokens};
use crate::engine_args::EngineArgs;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: EngineArgs,

    /// The text prompt.
    #[arg(long, env = "JANUS_PROMPT")]
    pub prompt: String,

    /// Number of images.
    #[arg(long, short = 'n', env = "JANUS_N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=MAX_IMAGES_PER_RUN as i64))]
    pub n: u32,

    /// Random seed (default: a random one, printed so the run can be repeated).
    #[arg(long, env = "JANUS_SEED")]
    pub seed: Option<u64>,

    /// Classifier-free guidance weight.
    #[arg(long, env = "JANUS_CFG", default_value_t = DEFAULT_CFG_WEIGHT)]
    pub cfg: f32,

    /// Sampling temperature (0 = greedy).
    #[arg(long, env = "JANUS_TEMPERATURE", default_value_t = DEFAULT_IMAGE_TEMPERATURE)]
    pub temperature: f32,

    /// Sample only among the k most likely image tokens.
    #[arg(long, env = "JANUS_TOP_K")]
    pub top_k: Option<usize>,

    /// Sample only within the nucleus of probability p.
    #[arg(long, env = "JANUS_TOP_P")]
    pub top_p: Option<f32>,

    /// Pick the most likely token at every step (deterministic; for tests).
    #[arg(long, env = "JANUS_GREEDY")]
    pub greedy: bool,

    /// A PNG file when n = 1, else a directory (created) that receives 0000.png, 0001.png, ...
    #[arg(long, env = "JANUS_OUT")]
    pub out: PathBuf,

    /// Also write the image tokens as JSON: one array of token ids per image.
    #[arg(long, env = "JANUS_TOKENS_OUT")]
    pub tokens_out: Option<PathBuf>,
}

pub fn run(a: GenerateArgs) -> Result<()> {
    let ask = ImageAsk {
        prompt: a.prompt.clone(),
        n: Some(a.n.into()),
        seed: a.seed,
        cfg_weight: Some(a.cfg),
        temperature: Some(a.temperature),
        top_k: a.top_k.map(|k| k.try_into().unwrap_or(i64::MAX)),
        top_p: a.top_p,
        greedy: a.greedy,
        partial_images: None,
    };
    let req = ask.validate(MAX_IMAGES_PER_RUN).map_err(invalid)?;
    let (n, seed) = (req.n, req.seed);
    check_out_path(&a.out, n)?;
    let model = a.model.load(Parts::Generation)?;
    let jobs = model.t2i_jobs(&req.prompt, n, seed, req.params)?;
    eprintln!("generating {n} image(s) of {0}x{0} with seed {seed}", model.image_size());
    let bar = ProgressBar::new(model.num_image_tokens() as u64).with_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} tokens ({per_sec}, eta {eta})",
        )
        .expect("valid template"),
    );
    let t = Instant::now();
    let tokens = model.generate_tokens(jobs, |done, _| bar.set_position(done as u64))?;
    bar.finish_and_clear();
    let gen_secs = t.elapsed().as_secs_f64();
    if let Some(path) = &a.tokens_out {
        write_tokens(path, &tokens)?;
    }
    let t = Instant::now();
    let images = model.decode_images(&tokens, a.model.decode_chunk)?;
    let paths = write_pngs(&a.out, &images)?;
    eprintln!(
        "wrote {} ({gen_secs:.1}s tokens, {:.1}s decode)",
        paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
