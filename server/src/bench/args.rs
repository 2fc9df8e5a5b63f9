//! [`BenchArgs`]: the flags of `janus bench`.

use clap::Args;
use janus::limits::DEFAULT_PREFIX_CACHE_POSITIONS;
use janus::Quant;

use crate::engine_args::EngineArgs;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: EngineArgs,

    /// Images in the batch (CFG doubles the rows).
    #[arg(long, short = 'n', env = "JANUS_N", default_value_t = janus::limits::MAX_IMAGES_PER_REQUEST)]
    pub n: usize,

    /// Image-token steps to time (default: a whole image); shorter runs extrapolate.
    #[arg(long, env = "JANUS_BENCH_STEPS")]
    pub steps: Option<usize>,

    /// Warm-up steps before timing (kernels, allocator).
    #[arg(long, env = "JANUS_BENCH_WARMUP", default_value_t = 16)]
    pub warmup: usize,

    #[arg(long, env = "JANUS_PROMPT", default_value = "a photo of a red bicycle leaning against a brick wall")]
    pub prompt: String,

    /// Print the report as JSON.
    #[arg(long, env = "JANUS_JSON")]
    pub json: bool,

    /// Instead: send this many one-image requests through the serving engine at once, then
    /// one by one, and report the batching speed-up.
    #[arg(long, env = "JANUS_BENCH_REQUESTS")]
    pub requests: Option<usize>,

    /// Bench these quantizations one after another in this process (e.g. `none,q8_0,q4k`),
    /// instead of `--quant` alone; speed ratios are against the first.
    #[arg(long, env = "JANUS_BENCH_QUANTS", value_delimiter = ',')]
    pub quants: Vec<Quant>,

    /// The machine's memory read bandwidth in GB/s, instead of probing it before and after each
    /// measurement (CPU only; the step's floor is the bytes of weights it reads over this).
    #[arg(long, env = "JANUS_BENCH_MEMBW")]
    pub membw: Option<f64>,

    /// With `--quants`: also measure each one's distance from the first (teacher-forced KL of
    /// the guided image-token distribution over a whole image, and of text answers about it).
    #[arg(long, env = "JANUS_BENCH_QUALITY")]
    pub quality: bool,

    /// Instead: send this many chat answers through the serving engine at once, then one by
    /// one, and report aggregate tokens/s, time to first token and the ratio; then the same
    /// concurrent answers beside an image request of `-n` images.
    #[arg(long, env = "JANUS_BENCH_CHAT_REQUESTS")]
    pub chat_requests: Option<usize>,

    /// With `--chat-requests`: tokens per answer (sampled, so that a random test model does
    /// not stop early).
    #[arg(long, env = "JANUS_BENCH_CHAT_TOKENS", default_value_t = 64)]
    pub chat_tokens: usize,

    /// With `--chat-requests`: whether the answers share the image batch's LM pass (as
    /// `janus serve --shared-steps`).
    #[arg(long, env = "JANUS_SHARED_STEPS", default_value_t = true, action = clap::ArgAction::Set)]
    pub shared_steps: bool,

    /// With `--chat-requests`: as `janus serve --prefix-cache-positions` (0: off).
    #[arg(long, env = "JANUS_PREFIX_CACHE_POSITIONS", default_value_t = DEFAULT_PREFIX_CACHE_POSITIONS)]
    pub prefix_cache_positions: usize,
}
