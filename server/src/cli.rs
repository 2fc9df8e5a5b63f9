//! Command-line subcommands. Every flag is also an environment variable (`JANUS_*`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::builder::TypedValueParser as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use janus::understand::DEFAULT_QUESTION;
use janus::{Conversation, Janus, Parts, Quant, SamplingParams, TextParams, DEFAULT_MODEL};

#[derive(Parser, Debug)]
#[command(name = "janus", version, about = "Janus-Pro text-to-image and image understanding")]
pub struct Cli {
    /// Log filter (tracing env-filter syntax), e.g. `info` or `janus=debug` (default: `info` for
    /// `serve`, `warn` otherwise).
    #[arg(long, env = "JANUS_LOG", global = true)]
    pub log: Option<String>,

    /// Log lines as `text` or `json` (one object per line).
    #[arg(long, env = "JANUS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Generate images from a text prompt.
    Generate(GenerateArgs),
    /// Turn image tokens (as written by `generate --tokens-out`) back into PNGs.
    DecodeTokens(DecodeArgs),
    /// Describe an image, or answer a question about it (image understanding).
    Describe(DescribeArgs),
    /// Time text-to-image generation (prefill, per-step latency, VQ decode, memory).
    Bench(crate::bench::BenchArgs),
    /// Serve the OpenAI-compatible HTTP API (image generation, chat with images, describe).
    Serve(ServeArgs),
    /// Write a quantized copy of a model (`model.gguf` and its config and tokenizer files), which
    /// `--model DIR` then loads without the original weights.
    Quantize(QuantizeArgs),
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl Cli {
    /// The `--log` filter, or the subcommand's default.
    pub fn log_filter(&self) -> &str {
        match (&self.log, &self.command) {
            (Some(f), _) => f,
            (None, Command::Serve(_)) => "info",
            (None, _) => "warn",
        }
    }
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// Address to listen on (`0.0.0.0` for all interfaces).
    #[arg(long, env = "JANUS_HOST", default_value = "127.0.0.1")]
    pub host: String,

    /// Port to listen on.
    #[arg(long, env = "JANUS_PORT", default_value_t = 8000)]
    pub port: u16,

    /// When set, `/v1/*` requests need `Authorization: Bearer <key>` (compared in constant time).
    #[arg(long, env = "JANUS_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Largest request body in bytes (413 above); the default fits a base64 image of ~12 MB.
    #[arg(long, env = "JANUS_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Most images generated together in one CFG batch (also caps `n`).
    #[arg(long, env = "JANUS_MAX_BATCH_IMAGES", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=256).map(|v| v as usize))]
    pub max_batch_images: usize,

    /// Most requests waiting to start; beyond that, 429 with Retry-After.
    #[arg(long, env = "JANUS_QUEUE_CAPACITY", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub queue_capacity: usize,

    /// Most streamed (`stream: true`) responses open at once; beyond that, 429 with Retry-After.
    #[arg(long, env = "JANUS_MAX_STREAMS", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub max_streams: usize,

    /// When idle, how long to wait for more image requests to batch with the first (ms).
    #[arg(long, env = "JANUS_BATCH_WAIT_MS", default_value_t = 20)]
    pub batch_wait_ms: u64,

    /// Images decoded at once by the VQ decoder (bounds memory).
    #[arg(long, env = "JANUS_DECODE_CHUNK", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub decode_chunk: usize,

    /// Fetch http(s) image URLs in chat messages (public addresses only, no redirects, 10 s,
    /// at most --max-body-bytes); off by default, when only data: URLs are accepted.
    #[arg(long, env = "JANUS_ALLOW_REMOTE_IMAGES")]
    pub allow_remote_images: bool,

    /// How long `response_format=url` images stay downloadable, in seconds.
    #[arg(long, env = "JANUS_FILE_TTL_SECS", default_value_t = 3600)]
    pub file_ttl_secs: u64,

    /// Most `response_format=url` images kept in memory (the oldest go first).
    #[arg(long, env = "JANUS_MAX_FILES", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub max_files: usize,

    /// Base of the image URLs handed out, e.g. `https://janus.example.com` behind a proxy
    /// (default: `http://` + the request's Host header).
    #[arg(long, env = "JANUS_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// On SIGTERM/Ctrl-C, how long in-flight requests may take to finish, in seconds.
    #[arg(long, env = "JANUS_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,

    /// Allow browsers from these origins (comma-separated, `*` for any); CORS is off by default.
    #[arg(long = "cors-origin", env = "JANUS_CORS_ORIGIN", value_delimiter = ',')]
    pub cors_origin: Vec<String>,
}

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

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// The text prompt.
    #[arg(long, env = "JANUS_PROMPT")]
    pub prompt: String,

    /// Number of images.
    #[arg(long, short = 'n', env = "JANUS_N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub n: u32,

    /// Random seed (default: a random one, printed so the run can be repeated).
    #[arg(long, env = "JANUS_SEED")]
    pub seed: Option<u64>,

    /// Classifier-free guidance weight.
    #[arg(long, env = "JANUS_CFG", default_value_t = 5.0)]
    pub cfg: f32,

    /// Sampling temperature (0 = greedy).
    #[arg(long, env = "JANUS_TEMPERATURE", default_value_t = 1.0)]
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

    /// Images decoded at once by the VQ decoder (bounds memory).
    #[arg(long, env = "JANUS_DECODE_CHUNK", default_value_t = 4)]
    pub decode_chunk: usize,

    /// A PNG file when n = 1, else a directory (created) that receives 0000.png, 0001.png, ...
    #[arg(long, env = "JANUS_OUT")]
    pub out: PathBuf,

    /// Also write the image tokens as JSON: one array of token ids per image.
    #[arg(long, env = "JANUS_TOKENS_OUT")]
    pub tokens_out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct DecodeArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// JSON file with one array of token ids per image.
    #[arg(long, env = "JANUS_TOKENS")]
    pub tokens: PathBuf,

    /// A PNG file for one image, else a directory (created).
    #[arg(long, env = "JANUS_OUT")]
    pub out: PathBuf,

    /// Images decoded at once by the VQ decoder (bounds memory).
    #[arg(long, env = "JANUS_DECODE_CHUNK", default_value_t = 4)]
    pub decode_chunk: usize,
}

#[derive(Args, Debug)]
pub struct DescribeArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// The image: PNG, JPEG, WebP or GIF (first frame).
    #[arg(long, env = "JANUS_IMAGE")]
    pub image: PathBuf,

    /// The question about the image.
    #[arg(long, env = "JANUS_QUESTION", default_value = DEFAULT_QUESTION)]
    pub question: String,

    /// Most tokens to generate (default: 512, or what fits in the context).
    #[arg(long, env = "JANUS_MAX_TOKENS")]
    pub max_tokens: Option<usize>,

    /// Sampling temperature; 0 (the default, as in the reference) is greedy.
    #[arg(long, env = "JANUS_TEMPERATURE", default_value_t = 0.0)]
    pub temperature: f32,

    /// Nucleus sampling threshold (with a temperature above 0).
    #[arg(long, env = "JANUS_TOP_P")]
    pub top_p: Option<f32>,

    /// Random seed for sampling.
    #[arg(long, env = "JANUS_SEED", default_value_t = 0)]
    pub seed: u64,

    /// Print `{"text": ..., "token_ids": [...], "finish_reason": ...}` instead of streaming text.
    #[arg(long, env = "JANUS_JSON")]
    pub json: bool,
}

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

pub fn init_logging(filter: &str, format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => fmt.init(),
        LogFormat::Json => fmt.json().with_current_span(true).with_span_list(false).init(),
    }
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Generate(a) => generate(a),
        Command::DecodeTokens(a) => decode_tokens(a),
        Command::Describe(a) => describe(a),
        Command::Bench(a) => crate::bench::run(a),
        Command::Serve(a) => crate::http::run(a),
        Command::Quantize(a) => quantize(a),
    }
}

fn quantize(a: QuantizeArgs) -> Result<()> {
    if a.quant == Quant::None {
        bail!("--quant none writes nothing new; pick q8_0, q6k, q5k or q4k");
    }
    let t = Instant::now();
    let files = janus::ModelFiles::resolve(&a.model)?;
    let path = janus::gguf::write_quantized(&files, a.quant, &a.out)?;
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

fn describe(a: DescribeArgs) -> Result<()> {
    use std::io::Write;
    let params = TextParams {
        max_new_tokens: a.max_tokens,
        sampling: SamplingParams { temperature: a.temperature, top_p: a.top_p, ..Default::default() },
        seed: a.seed,
    };
    params.sampling.validate()?;
    if a.max_tokens == Some(0) {
        bail!("--max-tokens must be at least 1");
    }
    let image = janus::preprocess::load_image(&a.image)?;
    let model = a.model.load(Parts::Understanding)?;
    let conv = Conversation::single(image, &a.question);
    let mut stdout = std::io::stdout().lock();
    let out = model.answer(&conv, &params, |piece| {
        if !a.json {
            // A closed stdout (e.g. `| head`) stops the generation.
            return write!(stdout, "{piece}").and_then(|_| stdout.flush()).is_ok();
        }
        true
    })?;
    if a.json {
        let finish = match out.finish_reason {
            janus::FinishReason::Stop => "stop",
            janus::FinishReason::Length => "length",
            janus::FinishReason::Cancelled => "cancelled",
        };
        let json = serde_json::json!({
            "text": out.text,
            "token_ids": out.token_ids,
            "finish_reason": finish,
            "prompt_tokens": out.prompt_tokens,
        });
        writeln!(stdout, "{json}")?;
    } else {
        writeln!(stdout)?;
    }
    Ok(())
}

fn generate(a: GenerateArgs) -> Result<()> {
    let params = SamplingParams {
        cfg_weight: a.cfg,
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        greedy: a.greedy,
    };
    params.validate()?;
    let n = a.n as usize;
    check_out_path(&a.out, n)?;
    let seed = a.seed.unwrap_or_else(rand_seed);
    let model = a.model.load(Parts::Generation)?;
    let jobs = model.t2i_jobs(&a.prompt, n, seed, params)?;
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
    let images = model.decode_images(&tokens, a.decode_chunk)?;
    let paths = write_pngs(&a.out, &images)?;
    eprintln!(
        "wrote {} ({gen_secs:.1}s tokens, {:.1}s decode)",
        paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn decode_tokens(a: DecodeArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.tokens).with_context(|| format!("reading {}", a.tokens.display()))?;
    let tokens: Vec<Vec<u32>> = serde_json::from_str(&text)
        .with_context(|| format!("{}: expected a JSON array of arrays of token ids", a.tokens.display()))?;
    if tokens.is_empty() {
        bail!("{}: no images in the file", a.tokens.display());
    }
    check_out_path(&a.out, tokens.len())?;
    let model = a.model.load(Parts::Generation)?;
    let images = model.decode_images(&tokens, a.decode_chunk)?;
    let paths = write_pngs(&a.out, &images)?;
    eprintln!("wrote {} image(s) to {}", paths.len(), a.out.display());
    Ok(())
}

/// Refuses, before any work, an output path that cannot hold `n` images.
fn check_out_path(out: &Path, n: usize) -> Result<()> {
    if n == 1 {
        if out.is_dir() {
            return Ok(());
        }
        if out.extension().is_none_or(|e| !e.eq_ignore_ascii_case("png")) {
            bail!("--out {}: for one image, give a .png file or an existing directory", out.display());
        }
        return Ok(());
    }
    if (out.exists() && !out.is_dir()) || out.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")) {
        bail!("--out {}: for {n} images, give a directory", out.display());
    }
    Ok(())
}

/// Writes images to `out` (one file, or `NNNN.png` in a directory) and returns the paths.
fn write_pngs(out: &Path, images: &[image::RgbImage]) -> Result<Vec<PathBuf>> {
    let paths: Vec<PathBuf> = if images.len() == 1 && !out.is_dir() {
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        vec![out.to_path_buf()]
    } else {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        (0..images.len()).map(|i| out.join(format!("{i:04}.png"))).collect()
    };
    for (img, path) in images.iter().zip(&paths) {
        let bytes = janus::image::png_bytes(img)?;
        std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(paths)
}

fn write_tokens(path: &Path, tokens: &[Vec<u32>]) -> Result<()> {
    let json = serde_json::to_string(tokens)?;
    std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))
}

fn rand_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish() >> 11 // keep it exactly representable as a JSON number
}
