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

/// Continuous batching: answers stepped together ([`Janus::step_texts`]), joining and leaving
/// at different steps, with different prompt lengths and images, greedy and sampled, give the
/// tokens and text of each answered alone.
#[test]
fn batched_answers_equal_answers_alone_whatever_joins_and_leaves() {
    let model = load_tiny("janus-pro-tiny");
    let img = |name: &str| janus::preprocess::load_image(&assets().join("tiny/images").join(name)).unwrap();
    let conv = |image: &str, q: &str| {
        let mut c = Conversation::single(img(image), q);
        c.system.clear();
        c
    };
    let text_only = {
        let mut c =
            Conversation::new(vec![janus::Message::user(vec![janus::Part::Text("Say something long.".into())])]);
        c.system.clear();
        c
    };
    // (conversation, params, the turn it joins)
    let asks = [
        (conv("square.png", "What is in the picture?"), params(0.0, 0, 20), 0),
        (conv("wide.png", "Describe it in detail, please, with every colour you see."), params(0.0, 0, 7), 0),
        (text_only, params(0.9, 11, 16), 3),
        (conv("tall.jpg", "Colours?"), params(0.7, 5, 12), 5),
        (conv("half.png", "What is this?"), params(0.0, 0, 18), 9),
    ];
    let alone: Vec<_> = asks.iter().map(|(c, p, _)| answer(&model, c, p).0).collect();

    let mut sessions: Vec<Option<janus::TextSession>> = asks.iter().map(|_| None).collect();
    let mut texts = vec![String::new(); asks.len()];
    let mut most_together = 0;
    for turn in 0.. {
        for (i, (c, p, join)) in asks.iter().enumerate() {
            if *join == turn {
                sessions[i] = Some(janus::TextSession::new(&model, c, p).unwrap());
            }
        }
        // Answers still reading their prompt step alone; the others share one step.
        for (i, s) in sessions.iter_mut().enumerate() {
            if let Some(s) = s.as_mut().filter(|s| !s.is_decoding() && !s.is_done()) {
                texts[i].extend(s.step().unwrap());
            }
        }
        let idx: Vec<usize> =
            (0..asks.len()).filter(|&i| sessions[i].as_ref().is_some_and(|s| s.is_decoding())).collect();
        let mut batch: Vec<&mut janus::TextSession> =
            sessions.iter_mut().flatten().filter(|s| s.is_decoding()).collect();
        most_together = most_together.max(batch.len());
        let pieces = model.step_texts(&mut batch).unwrap();
        for (i, piece) in idx.into_iter().zip(pieces) {
            texts[i].extend(piece.unwrap());
        }
        let all_joined = asks.iter().all(|(_, _, j)| *j <= turn);
        if all_joined && sessions.iter().flatten().all(|s| s.is_done()) {
            break;
        }
    }
    assert!(most_together >= 3, "answers overlapped ({most_together} at most)");
    for (i, s) in sessions.into_iter().enumerate() {
        let out = s.unwrap().into_output().unwrap();
        assert!(!alone[i].token_ids.is_empty());
        assert_eq!(out.token_ids, alone[i].token_ids, "answer {i}");
        assert_eq!(out.text, alone[i].text, "answer {i}");
        assert_eq!(texts[i], alone[i].text, "answer {i}: streamed pieces");
    }
}

/// A prompt is read a chunk of positions per step (so a long one never holds the engine for
/// more than a chunk), and answers as reading it whole does.
#[test]
fn a_prompt_is_prefilled_in_chunks() {
    let model = load_tiny("janus-pro-tiny");
    let conv = conversation();
    let p = params(0.0, 0, 12);
    let (whole, _) = answer(&model, &conv, &p);
    for chunk in [1, 7, 16, 64] {
        let mut s = janus::TextSession::new(&model, &conv, &p).unwrap();
        s.set_prefill_chunk(chunk);
        let chunks = s.prompt_tokens().div_ceil(chunk);
        assert!(chunks > 1);
        let mut steps = 0;
        while !s.is_decoding() && !s.is_done() {
            s.step().unwrap();
            steps += 1;
            assert_eq!(s.completion_tokens(), usize::from(steps == chunks), "a token only after the last chunk");
        }
        assert_eq!(steps, chunks);
        while !s.is_done() {
            s.step().unwrap();
        }
        assert_eq!(s.into_output().unwrap().token_ids, whole.token_ids, "chunks of {chunk}");
    }
}

/// Image rows and text rows in one LM forward ([`Janus::step_shared`]): the cohort's image
/// tokens and each answer are those of each stepped on its own.
#[test]
fn image_and_text_rows_sharing_a_step_give_what_each_gives_alone() {
    let model = load_tiny("janus-pro-tiny");
    let jobs = model.t2i_jobs("a red cube on a table", 2, 7, SamplingParams::default()).unwrap();
    let images_alone = model.generate_tokens(jobs.clone(), |_, _| {}).unwrap();
    let text_only = {
        let mut c = Conversation::new(vec![janus::Message::user(vec![janus::Part::Text("Say more.".into())])]);
        c.system.clear();
        c
    };
    let asks = [(conversation(), params(0.0, 0, 20)), (text_only, params(0.9, 3, 30))];
    let alone: Vec<_> = asks.iter().map(|(c, p)| answer(&model, c, p).0).collect();

    let mut batch = janus::T2iBatch::new(&model, jobs).unwrap();
    batch.step().unwrap(); // the prompts
    let mut sessions: Vec<janus::TextSession> =
        asks.iter().map(|(c, p)| janus::TextSession::new(&model, c, p).unwrap()).collect();
    let mut shared_steps = 0;
    while !(batch.is_done() && sessions.iter().all(|s| s.is_done())) {
        for s in sessions.iter_mut().filter(|s| !s.is_decoding() && !s.is_done()) {
            s.step().unwrap();
        }
        let mut decoding: Vec<&mut janus::TextSession> = sessions.iter_mut().filter(|s| s.is_decoding()).collect();
        if batch.is_prefilled() && !decoding.is_empty() {
            let (_, texts) = model.step_shared(&mut batch, &mut decoding).unwrap();
            texts.into_iter().for_each(|t| drop(t.unwrap()));
            shared_steps += 1;
        } else {
            if !batch.is_done() {
                batch.step().unwrap();
            }
            model.step_texts(&mut decoding).unwrap().into_iter().for_each(|t| drop(t.unwrap()));
        }
    }
    assert!(shared_steps >= 10, "{shared_steps} shared steps");
    assert_eq!(batch.into_tokens().unwrap(), images_alone);
    for (s, want) in sessions.into_iter().zip(alone) {
        let out = s.into_output().unwrap();
        assert_eq!(out.token_ids, want.token_ids);
        assert_eq!(out.text, want.text);
    }
}

/// Conversations arriving together have their images encoded in one SigLIP batch; each answer
/// (and a bad conversation's error) is what it is alone.
#[test]
fn sessions_started_together_answer_as_alone() {
    let model = load_tiny("janus-pro-tiny");
    let img = |name: &str| janus::preprocess::load_image(&assets().join("tiny/images").join(name)).unwrap();
    let two_images = {
        let mut c = Conversation::new(vec![janus::Message::user(vec![
            janus::Part::Image(img("wide.png")),
            janus::Part::Image(img("tall.jpg")),
            janus::Part::Text("Compare them.".into()),
        ])]);
        c.system.clear();
        c
    };
    let text_only = {
        let mut c = Conversation::new(vec![janus::Message::user(vec![janus::Part::Text("Hello.".into())])]);
        c.system.clear();
        c
    };
    let convs = [conversation(), two_images, text_only, conversation()];
    let ps = [params(0.0, 0, 12), params(0.0, 0, 10), params(0.8, 4, 9), params(0.0, 0, 0)];
    let asks: Vec<(&Conversation, &TextParams)> = convs.iter().zip(&ps).collect();
    let sessions = model.text_sessions(&asks).unwrap();
    assert!(matches!(sessions[3], Err(janus::Error::Invalid(_))), "max_tokens 0 fails alone");
    for (i, s) in sessions.into_iter().enumerate().take(3) {
        let mut s = s.unwrap();
        while !s.is_done() {
            s.step().unwrap();
        }
        let want = answer(&model, &convs[i], &ps[i]).0;
        assert_eq!(s.into_output().unwrap().token_ids, want.token_ids, "conversation {i}");
    }
}
