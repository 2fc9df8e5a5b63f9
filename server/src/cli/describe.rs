//! `janus describe`: an answer about one image, streamed to stdout (or as JSON).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use janus::limits::{DEFAULT_QUESTION, DEFAULT_TEXT_TEMPERATURE};
use janus::text::constraint::ConstraintSpec;
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

    /// A stop sequence (up to 4, comma-separated in the variable): the answer ends before it.
    #[arg(long, env = "JANUS_STOP", value_delimiter = ',')]
    pub stop: Vec<String>,

    /// OpenAI's frequency penalty, -2..=2.
    #[arg(long, env = "JANUS_FREQUENCY_PENALTY")]
    pub frequency_penalty: Option<f32>,

    /// OpenAI's presence penalty, -2..=2.
    #[arg(long, env = "JANUS_PRESENCE_PENALTY")]
    pub presence_penalty: Option<f32>,

    /// transformers' repetition penalty, above 0 (1 is neutral).
    #[arg(long, env = "JANUS_REPETITION_PENALTY")]
    pub repetition_penalty: Option<f32>,

    /// Answer with a JSON object matching this JSON Schema file (`{}`: any JSON object).
    #[arg(long, env = "JANUS_RESPONSE_SCHEMA", conflicts_with = "regex")]
    pub response_schema: Option<PathBuf>,

    /// Answer with text matching this regular expression.
    #[arg(long, env = "JANUS_REGEX")]
    pub regex: Option<String>,

    /// Print `{"text": ..., "token_ids": [...], "finish_reason": ...}` instead of streaming text.
    #[arg(long, env = "JANUS_JSON")]
    pub json: bool,
}

pub fn run(a: DescribeArgs) -> Result<()> {
    use std::io::Write;
    let constraint = match (&a.response_schema, &a.regex) {
        (Some(path), _) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("--response-schema {}", path.display()))?;
            let schema: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("--response-schema {}: not JSON", path.display()))?;
            Some(match schema.as_object().is_some_and(|o| o.is_empty()) {
                true => ConstraintSpec::JsonObject,
                false => ConstraintSpec::JsonSchema(schema),
            })
        }
        (None, Some(r)) => Some(ConstraintSpec::Regex(r.clone())),
        (None, None) => None,
    };
    let ask = TextAsk {
        temperature: Some(a.temperature),
        top_p: a.top_p,
        seed: None,
        max_tokens: a.max_tokens.map(|n| n.try_into().unwrap_or(i64::MAX)),
        stop: a.stop.clone(),
        logprobs: None,
        top_logprobs: None,
        frequency_penalty: a.frequency_penalty,
        presence_penalty: a.presence_penalty,
        repetition_penalty: a.repetition_penalty,
        constraint,
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
