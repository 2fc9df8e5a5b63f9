//! Text answers on the tiny model: a vanishing temperature is greedy, streamed pieces add up to
//! the answer's text, and tokenizer failures are errors.

mod common;

use common::*;
use janus::{Conversation, Janus, SamplingParams, TextParams};

fn image() -> image::DynamicImage {
    janus::preprocess::load_image(&assets().join("tiny/images/square.png")).expect("test image")
}

fn conversation() -> Conversation {
    let mut conv = Conversation::single(image(), "What is in the picture?");
    conv.system.clear(); // the tiny model's context is 256 tokens
    conv
}

fn params(temperature: f32, seed: u64, max_new_tokens: usize) -> TextParams {
    let sampling = SamplingParams { temperature, ..Default::default() };
    TextParams { max_new_tokens: Some(max_new_tokens), sampling, seed }
}

/// The answer, and the pieces the callback was given.
fn answer(model: &Janus, conv: &Conversation, p: &TextParams) -> (janus::TextOutput, Vec<String>) {
    let mut pieces = Vec::new();
    let out = model
        .answer(conv, p, |piece| {
            pieces.push(piece.to_string());
            true
        })
        .unwrap();
    (out, pieces)
}

/// Temperature 1e-40 makes logits / T overflow; it is treated as greedy (below
/// `limits::GREEDY_BELOW_TEMPERATURE`), so the answer is the greedy one (it used to collapse into
/// one repeated token).
#[test]
fn a_vanishing_temperature_answers_greedily() {
    let model = load_tiny("janus-pro-tiny");
    let conv = conversation();
    let (greedy, _) = answer(&model, &conv, &params(0.0, 0, 24));
    assert!(greedy.token_ids.len() > 1);
    for seed in [0, 1, 2] {
        let (tiny, _) = answer(&model, &conv, &params(1e-40, seed, 24));
        assert_eq!(tiny.token_ids, greedy.token_ids, "seed {seed}");
        assert_eq!(tiny.text, greedy.text);
    }
}
