//! The engine's token log-probabilities → OpenAI's `logprobs` objects: each token's text and
//! UTF-8 bytes from the tokenizer; `-inf` (a token the model gives no chance) as -9999, as
//! OpenAI reports it, since JSON has no infinity.

use janus::input::tokenizer::JanusTokenizer;
use janus::sampling::logprobs::TokenLogprobs;

use super::types::{ChoiceLogprobs, TokenLogprob, TopLogprob};

/// What OpenAI reports for a log-probability of `-inf`.
const NO_CHANCE: f32 = -9999.0;

fn finite(lp: f32) -> f32 {
    if lp.is_finite() {
        lp
    } else {
        NO_CHANCE
    }
}

fn token_text(tokenizer: &JanusTokenizer, id: u32) -> (String, Vec<u8>) {
    let bytes = tokenizer.token_bytes(id);
    (String::from_utf8_lossy(&bytes).into_owned(), bytes)
}

/// The log-probabilities of a run of tokens.
pub fn choice_logprobs(tokenizer: &JanusTokenizer, tokens: &[TokenLogprobs]) -> ChoiceLogprobs {
    let content = (tokens.iter())
        .map(|t| {
            let (token, bytes) = token_text(tokenizer, t.token);
            let top_logprobs = (t.top.iter())
                .map(|&(id, lp)| {
                    let (token, bytes) = token_text(tokenizer, id);
                    TopLogprob { token, logprob: finite(lp), bytes }
                })
                .collect();
            TokenLogprob { token, logprob: finite(t.logprob), bytes, top_logprobs }
        })
        .collect();
    ChoiceLogprobs { content, refusal: None }
}
