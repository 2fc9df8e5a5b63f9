//! `janus describe`: an answer about one image, streamed to stdout (or as JSON).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use janus::limits::{DEFAULT_QUESTION, DEFAULT_TEXT_TEMPERATURE};
use janus::{Conversation, Parts, TextAsk};

use super::invalid;
use crate::engine_args::EngineArgs;

#[derive(Args, Debug)]
pub struct DescribeArgs {
    #[command(flatten)]
    pub model: EngineArgs,

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
    #[arg(long, env = "JANUS_TEMPERATURE", default_value_t = DEFAULT_TEXT_TEMPERATURE)]
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

pub fn run(a: DescribeArgs) -> Result<()> {
    use std::io::Write;
    let ask = TextAsk {
        temperature: Some(a.temperature),
        top_p: a.top_p,
        seed: None,
        max_tokens: a.max_tokens.map(|n| n.try_into().unwrap_or(i64::MAX)),
    };
    // The context is checked, exactly, once the prompt is tokenized.
    let mut params = ask.validate(usize::MAX).map_err(invalid)?;
    params.seed = a.seed;
    let image = janus::input::preprocess::load_image(&a.image)?;
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
