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

/// The pieces streamed to the callback add up to the answer's text, which is the decode of its
/// tokens, for sampled answers full of byte tokens (the tiny tokenizer is byte-level: ids 94..256
/// are the non-ASCII bytes, so characters arrive split) and of ids the tokenizer does not know.
#[test]
fn streamed_pieces_add_up_to_the_answer() {
    let model = load_tiny("janus-pro-tiny");
    let conv = conversation();
    let (mut split_bytes, mut multi_byte_chars) = (0, 0);
    for seed in 0..12 {
        let (out, pieces) = answer(&model, &conv, &params(1.5, seed, 48));
        let full = model.tokenizer.decode(&out.token_ids).unwrap();
        assert_eq!(pieces.concat(), out.text, "seed {seed}");
        assert_eq!(out.text, full, "seed {seed}");
        split_bytes += out.token_ids.iter().filter(|&&t| (94..256).contains(&t)).count();
        multi_byte_chars += full.chars().filter(|c| c.len_utf8() > 1 && *c != '\u{FFFD}').count();
    }
    assert!(split_bytes > 20 && multi_byte_chars > 0, "{split_bytes} byte tokens, {multi_byte_chars} characters");
}

/// A cancelled answer's output holds what was streamed and what was still held back.
#[test]
fn a_cancelled_answer_keeps_its_text() {
    let model = load_tiny("janus-pro-tiny");
    let conv = conversation();
    for seed in 0..6 {
        let mut session = janus::TextSession::new(&model, &conv, &params(1.5, seed, 48)).unwrap();
        let mut streamed = String::new();
        for _ in 0..10 {
            streamed.extend(session.step().unwrap());
        }
        session.cancel();
        assert_eq!(session.step().unwrap(), None);
        let out = session.into_output().unwrap();
        assert_eq!(out.finish_reason == janus::FinishReason::Stop, out.token_ids.len() < 10);
        assert!(out.text.starts_with(&streamed), "seed {seed}");
        assert_eq!(out.text, model.tokenizer.decode(&out.token_ids).unwrap(), "seed {seed}");
    }
}
