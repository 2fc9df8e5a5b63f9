//! Command-line subcommands. Every flag is also an environment variable (`JANUS_*`).
//!
//! | file | what |
//! | --- | --- |
//! | `mod.rs` | [`Cli`], [`Command`], logging, dispatch; a field error worded with its flag |
//! | `generate.rs` | `janus generate` |
//! | `decode.rs` | `janus decode-tokens` |
//! | `encode.rs` | `janus encode` |
//! | `describe.rs` | `janus describe` |
//! | `quantize.rs` | `janus quantize` |
//! | `output.rs` | PNG and token files out |
//!
//! `janus bench` is in `bench.rs` and `janus serve` in `http/serve.rs`; `--model` and its
//! companions in `model_args.rs`.

mod decode;
mod describe;
mod encode;
mod generate;
mod output;
mod quantize;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use janus::{Field, Invalid};

pub use decode::DecodeArgs;
pub use describe::DescribeArgs;
pub use encode::EncodeArgs;
pub use generate::GenerateArgs;
pub use quantize::QuantizeArgs;

use crate::http::ServeArgs;

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
    /// Turn images into image tokens (the VQ encoder), in the file `decode-tokens` reads.
    Encode(EncodeArgs),
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
        Command::Generate(a) => generate::run(a),
        Command::DecodeTokens(a) => decode::run(a),
        Command::Encode(a) => encode::run(a),
        Command::Describe(a) => describe::run(a),
        Command::Bench(a) => crate::bench::run(a),
        Command::Serve(a) => crate::http::run(a),
        Command::Quantize(a) => quantize::run(a),
    }
}

/// The command-line flag that sets a library [`Field`].
fn flag(field: Field) -> &'static str {
    match field {
        Field::Prompt => "--prompt",
        Field::N => "-n",
        Field::Seed => "--seed",
        Field::CfgWeight => "--cfg",
        Field::Temperature => "--temperature",
        Field::TopK => "--top-k",
        Field::TopP => "--top-p",
        Field::PartialImages => "--partial-images",
        Field::MaxTokens => "--max-tokens",
        Field::Messages | Field::Question => "--question",
        Field::Stop => "--stop",
        Field::TopLogprobs => "--top-logprobs",
        Field::FrequencyPenalty => "--frequency-penalty",
        Field::PresencePenalty => "--presence-penalty",
        Field::RepetitionPenalty => "--repetition-penalty",
        Field::ResponseFormat => "--response-schema / --regex",
    }
}

/// A field error worded with its flag, for the one error line.
fn invalid(e: Invalid) -> anyhow::Error {
    anyhow::anyhow!("{}: {}", flag(e.field), e.reason)
}
