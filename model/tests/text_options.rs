//! The OpenAI text options on the tiny model: stop sequences (also split across tokens),
//! log-probabilities (the log-softmax of the logits the answer was picked from), and penalties
//! (neutral ones change nothing; others act by their formula).

mod common;

use common::*;
use janus::sampling::penalties::Penalties;
use janus::{Conversation, FinishReason, Janus, SamplingParams, TextOutput, TextParams, TextSession};

fn conversation() -> Conversation {
    let img = janus::input::preprocess::load_image(&assets().join("tiny/images/square.png")).expect("test image");
    let mut conv = Conversation::single(img, "What is in the picture?");
    conv.system.clear(); // the tiny model's context is 256 tokens
    conv
}

fn sampled(seed: u64, max_new_tokens: usize) -> TextParams {
    let sampling = SamplingParams { temperature: 1.0, ..Default::default() };
    TextParams { max_new_tokens: Some(max_new_tokens), sampling, seed, ..Default::default() }
}

/// The answer, its streamed pieces, and the logits of each pick.
fn run(
    model: &Janus,
    p: &TextParams,
) -> (TextOutput, Vec<String>, Vec<Vec<f32>>, Vec<janus::sampling::logprobs::TokenLogprobs>) {
    let mut s = TextSession::new(model, &conversation(), p).unwrap();
    s.keep_logits();
    let (mut pieces, mut logprobs) = (Vec::new(), Vec::new());
    while !s.is_done() {
        pieces.extend(s.step().unwrap());
        logprobs.extend(s.take_logprobs());
    }
    let logits = s.logits().to_vec();
    (s.into_output().unwrap(), pieces, logits, logprobs)
}

/// A stop sequence made of the end of one token's text and the start of the next's is caught:
/// the answer ends just before it, and no streamed piece ever showed any of it.
#[test]
fn a_stop_sequence_split_across_tokens_ends_the_answer_before_it() {
    let model = load_tiny("janus-pro-tiny");
    let tok = model.prompter().tokenizer().clone();
    let mut tried = 0;
    for seed in 0..20 {
        let (free, _, _, _) = run(&model, &sampled(seed, 40));
        // The text after each token, and a two-character sequence across a token boundary whose
        // first occurrence in the answer is there.
        let texts: Vec<String> =
            (1..=free.token_ids.len()).map(|k| tok.decode(&free.token_ids[..k]).unwrap()).collect();
        let Some((at, stop)) = (1..texts.len()).find_map(|k| {
            let (before, after) = (&texts[k - 1], &texts[k]);
            let cut = before.len();
            let (a, b) = (before[..cut].chars().last()?, after.get(cut..)?.chars().next()?);
            let stop = format!("{a}{b}");
            let at = cut - a.len_utf8();
            (free.text.find(&stop) == Some(at) && after.starts_with(before.as_str())).then_some((at, stop))
        }) else {
            continue;
        };
        tried += 1;
        let p = TextParams { stop: vec!["never".into(), stop.clone()], ..sampled(seed, 40) };
        let (out, pieces, _, _) = run(&model, &p);
        assert_eq!(out.text, free.text[..at], "seed {seed}, stop {stop:?}");
        assert_eq!(pieces.concat(), out.text, "the streamed pieces are the answer");
        assert_eq!(out.finish_reason, FinishReason::Stop);
        assert!(out.token_ids.len() < free.token_ids.len());
    }
    assert!(tried >= 5, "only {tried} answers had a sequence across a token boundary");
}

/// Each token's log-probability, and the most likely alternatives, are the log-softmax of the
/// logits it was picked from (before temperature), and the answer is the one without them.
#[test]
fn logprobs_are_the_log_softmax_of_the_logits() {
    let model = load_tiny("janus-pro-tiny");
    let plain = run(&model, &sampled(3, 24)).0;
    let p = TextParams { logprobs: Some(3), ..sampled(3, 24) };
    let (out, _, logits, logprobs) = run(&model, &p);
    assert_eq!(out.token_ids, plain.token_ids, "reporting changes no answer");
    assert_eq!(logprobs.len(), out.token_ids.len(), "one per token of the answer (not the EOS)");
    for (i, (l, row)) in logprobs.iter().zip(&logits).enumerate() {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
        let want = |t: u32| (row[t as usize] as f64 - lse) as f32;
        assert!((l.logprob - want(l.token)).abs() < 1e-5, "step {i}");
        assert_eq!(l.token, out.token_ids[i]);
        let mut order: Vec<u32> = (0..row.len() as u32).collect();
        order.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
        assert_eq!(l.top.iter().map(|t| t.0).collect::<Vec<_>>(), order[..3], "step {i}");
        assert!(l.top.iter().all(|&(t, lp)| (lp - want(t)).abs() < 1e-5));
        assert!(l.logprob <= 0.0);
    }
}

/// Neutral penalties leave answers bit-identical; a frequency, presence or repetition penalty
/// changes each greedy pick exactly as its formula says.
#[test]
fn penalties_act_by_their_formulas_and_neutral_ones_change_nothing() {
    let model = load_tiny("janus-pro-tiny");
    let greedy = TextParams { max_new_tokens: Some(32), ..Default::default() };
    let (plain, _, plain_logits, _) = run(&model, &greedy);
    let neutral =
        TextParams { penalties: Penalties { repetition: 1.0, frequency: 0.0, presence: 0.0 }, ..greedy.clone() };
    let (same, _, same_logits, _) = run(&model, &neutral);
    assert_eq!((same.token_ids, same_logits), (plain.token_ids.clone(), plain_logits));
    let prompt = model.prompter().text_request(&conversation(), &greedy).unwrap().prompt.ids;
    for penalties in [
        Penalties { frequency: 1.5, ..Default::default() },
        Penalties { presence: 2.0, ..Default::default() },
        Penalties { repetition: 1.5, ..Default::default() },
    ] {
        let (out, _, logits, _) = run(&model, &TextParams { penalties, ..greedy.clone() });
        assert_ne!(out.token_ids, plain.token_ids, "{penalties:?} acts");
        for (i, row) in logits.iter().enumerate() {
            let used = &out.token_ids[..i];
            let adjusted: Vec<f32> = (row.iter().enumerate())
                .map(|(t, &x)| {
                    let t = t as u32;
                    let mut x = x;
                    if prompt.contains(&t) || used.contains(&t) {
                        x = if x > 0.0 { x / penalties.repetition } else { x * penalties.repetition };
                    }
                    let n = used.iter().filter(|&&u| u == t).count() as f32;
                    x - n * penalties.frequency - if n > 0.0 { penalties.presence } else { 0.0 }
                })
                .collect();
            let want = janus::sampling::argmax(&adjusted) as u32;
            let got = out.token_ids.get(i).copied().unwrap_or(model.prompter().tokenizer().special.eos);
            assert_eq!(got, want, "{penalties:?}, step {i}");
        }
    }
}

/// Structured outputs in a batch: constrained answers (a JSON schema, a choice, a regex, any
/// JSON object), sampled and greedy, share every step with free ones; each constrained answer
/// validates, and each free one is bit for bit what it is alone.
#[test]
fn constrained_answers_validate_and_free_ones_beside_them_are_unchanged() {
    use janus::text::constraint::ConstraintSpec;
    let model = load_tiny("janus-pro-tiny");
    let conv = conversation();
    let schema = serde_json::json!({
        "type": "object",
        "properties": {"colour": {"enum": ["red", "green", "blue"]}, "round": {"type": "boolean"}},
        "required": ["colour", "round"],
        "additionalProperties": false,
    });
    let constrained = |spec: ConstraintSpec, seed: u64| TextParams { constraint: Some(spec), ..sampled(seed, 60) };
    let asks: Vec<TextParams> = vec![
        constrained(ConstraintSpec::JsonSchema(schema.clone()), 1),
        TextParams { max_new_tokens: Some(30), ..Default::default() },
        constrained(ConstraintSpec::Choice(vec!["yes".into(), "no".into()]), 2),
        sampled(4, 30),
        constrained(ConstraintSpec::Regex("[0-9]{3}-[a-c]+".into()), 3),
        TextParams {
            constraint: Some(ConstraintSpec::JsonSchema(schema.clone())),
            max_new_tokens: Some(60),
            ..Default::default()
        },
        constrained(ConstraintSpec::JsonObject, 5),
    ];
    let free = |p: &TextParams| p.constraint.is_none();
    let alone: Vec<_> = asks.iter().map(|p| run(&model, p)).collect();
    let requests: Vec<_> = asks.iter().map(|p| model.prompter().text_request(&conv, p).unwrap()).collect();
    let mut sessions: Vec<TextSession> =
        model.text_sessions(&requests.iter().collect::<Vec<_>>()).unwrap().into_iter().map(Result::unwrap).collect();
    sessions.iter_mut().for_each(|s| s.keep_logits());
    while !sessions.iter().all(|s| s.is_done()) {
        let mut reading: Vec<&mut TextSession> = sessions.iter_mut().filter(|s| s.is_prefilling()).collect();
        if !reading.is_empty() {
            model.prefill_texts(&mut reading).unwrap().into_iter().for_each(|r| drop(r.unwrap()));
        }
        let mut batch: Vec<&mut TextSession> = sessions.iter_mut().filter(|s| s.is_decoding()).collect();
        model.step_texts(&mut batch).unwrap().into_iter().for_each(|r| drop(r.unwrap()));
    }
    for (i, (s, p)) in sessions.into_iter().zip(&asks).enumerate() {
        let logits = s.logits().to_vec();
        let out = s.into_output().unwrap();
        if free(p) {
            assert_eq!((&out.token_ids, &logits), (&alone[i].0.token_ids, &alone[i].2), "free answer {i}");
            continue;
        }
        assert_eq!(out.finish_reason, FinishReason::Stop, "answer {i} ended by its grammar: {:?}", out.text);
        match p.constraint.as_ref().unwrap() {
            ConstraintSpec::JsonSchema(_) => {
                let v: serde_json::Value =
                    serde_json::from_str(&out.text).unwrap_or_else(|e| panic!("{e}: {}", out.text));
                assert!(["red", "green", "blue"].contains(&v["colour"].as_str().unwrap()), "{v}");
                assert!(v["round"].is_boolean() && v.as_object().unwrap().len() == 2, "{v}");
            }
            ConstraintSpec::JsonObject => {
                let v: serde_json::Value =
                    serde_json::from_str(&out.text).unwrap_or_else(|e| panic!("{e}: {}", out.text));
                assert!(v.is_object());
            }
            ConstraintSpec::Choice(c) => assert!(c.contains(&out.text), "{:?}", out.text),
            ConstraintSpec::Regex(_) => {
                let (digits, letters) = out.text.split_once('-').unwrap();
                assert!(digits.len() == 3 && digits.bytes().all(|b| b.is_ascii_digit()), "{:?}", out.text);
                assert!(!letters.is_empty() && letters.bytes().all(|b| (b'a'..=b'c').contains(&b)), "{:?}", out.text);
            }
            ConstraintSpec::Lark(_) => unreachable!(),
        }
        assert_eq!(out.text, alone[i].0.text, "constrained answer {i} is what it is alone");
    }
}
