//! Text answers on the tiny model: a vanishing temperature is greedy, streamed pieces add up to
//! the answer's text, and tokenizer failures are errors.

mod common;

use common::*;
use janus::{Conversation, Janus, SamplingParams, TextParams};

fn image() -> image::DynamicImage {
    janus::input::preprocess::load_image(&assets().join("tiny/images/square.png")).expect("test image")
}

fn conversation() -> Conversation {
    let mut conv = Conversation::single(image(), "What is in the picture?");
    conv.system.clear(); // the tiny model's context is 256 tokens
    conv
}

fn params(temperature: f32, seed: u64, max_new_tokens: usize) -> TextParams {
    let sampling = SamplingParams { temperature, ..Default::default() };
    TextParams { max_new_tokens: Some(max_new_tokens), sampling, seed, ..Default::default() }
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
        while session.completion_tokens() < 10 && !session.is_done() {
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

/// Continuous batching: answers stepped together ([`Janus::step_texts`]) and reading their
/// prompts together ([`Janus::prefill_texts`]), joining and leaving at different steps, with
/// different prompt lengths, images, system prompts and prefill chunks (one of a single
/// position), greedy and sampled, give the tokens and text of each answered alone.
#[test]
fn batched_answers_equal_answers_alone_whatever_joins_and_leaves() {
    let model = load_tiny("janus-pro-tiny");
    let img = |name: &str| janus::input::preprocess::load_image(&assets().join("tiny/images").join(name)).unwrap();
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
    let with_system = {
        let mut c = conv("square.png", "And now?");
        c.system = "Be brief.".into();
        c
    };
    let last_alone = model.prepare(&conv("half.png", "What is this?")).unwrap().ids.len() - 1;
    // (conversation, params, the turn it joins, its prefill chunk)
    let asks = [
        (conv("square.png", "What is in the picture?"), params(0.0, 0, 20), 0, 256),
        (conv("wide.png", "Describe it in detail, please, with every colour you see."), params(0.0, 0, 7), 0, 9),
        (with_system, params(0.0, 0, 10), 0, 256),
        (text_only, params(0.9, 11, 16), 3, 256),
        (conv("tall.jpg", "Colours?"), params(0.7, 5, 12), 5, 256),
        (conv("half.png", "What is this?"), params(0.0, 0, 18), 5, last_alone),
    ];
    let session = |c: &Conversation, p: &TextParams, chunk: usize| {
        let mut s = janus::TextSession::new(&model, c, p).unwrap();
        s.set_prefill_chunk(chunk);
        s.keep_logits();
        s
    };
    let alone: Vec<_> = (asks.iter())
        .map(|(c, p, _, chunk)| {
            let mut s = session(c, p, *chunk);
            while !s.is_done() {
                s.step().unwrap();
            }
            let logits = s.logits().to_vec();
            (s.into_output().unwrap(), logits)
        })
        .collect();

    let mut sessions: Vec<Option<janus::TextSession>> = asks.iter().map(|_| None).collect();
    let mut texts = vec![String::new(); asks.len()];
    let (mut most_together, mut most_prefilling) = (0, 0);
    for turn in 0.. {
        for (i, (c, p, join, chunk)) in asks.iter().enumerate() {
            if *join == turn {
                sessions[i] = Some(session(c, p, *chunk));
            }
        }
        // Answers still reading their prompt take a chunk each, together; the others share one
        // step.
        let reading = |s: &janus::TextSession| !s.is_decoding() && !s.is_done();
        let idx: Vec<usize> = (0..asks.len()).filter(|&i| sessions[i].as_ref().is_some_and(reading)).collect();
        let mut prefilling: Vec<&mut janus::TextSession> =
            sessions.iter_mut().flatten().filter(|s| reading(s)).collect();
        if !prefilling.is_empty() {
            most_prefilling = most_prefilling.max(prefilling.len());
            for (i, piece) in idx.into_iter().zip(model.prefill_texts(&mut prefilling).unwrap()) {
                texts[i].extend(piece.unwrap());
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
        let all_joined = asks.iter().all(|(_, _, j, _)| *j <= turn);
        if all_joined && sessions.iter().flatten().all(|s| s.is_done()) {
            break;
        }
    }
    assert!(most_together >= 3, "answers overlapped ({most_together} at most)");
    assert!(most_prefilling >= 3, "prompts read together ({most_prefilling} at most)");
    for (i, s) in sessions.into_iter().enumerate() {
        let s = s.unwrap();
        let (alone, alone_logits) = (&alone[i].0, &alone[i].1);
        assert_eq!(s.logits().len(), alone_logits.len(), "answer {i}");
        for (step, (got, want)) in s.logits().iter().zip(alone_logits).enumerate() {
            assert!(got.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits()), "answer {i}, token {step}: logits");
        }
        let out = s.into_output().unwrap();
        assert!(!alone.token_ids.is_empty());
        assert_eq!(out.token_ids, alone.token_ids, "answer {i}");
        assert_eq!(out.text, alone.text, "answer {i}");
        assert_eq!(texts[i], alone.text, "answer {i}: streamed pieces");
    }
}

/// A prompt is read a chunk of positions per step (so a long one never holds the engine for
/// more than a chunk), each chunk ending at the latest where a message ends, and answers as
/// reading it in one chunk per message does.
#[test]
fn a_prompt_is_prefilled_in_chunks() {
    let model = load_tiny("janus-pro-tiny");
    model.prefix_cache().set_capacity(0); // every answer reads its whole prompt
    let conv = conversation();
    let p = params(0.0, 0, 12);
    let (whole, _) = answer(&model, &conv, &p);
    let ends = model.prepare(&conv).unwrap().boundaries;
    for chunk in [1, 7, 16, 64] {
        let mut s = janus::TextSession::new(&model, &conv, &p).unwrap();
        s.set_prefill_chunk(chunk);
        let mut starts = vec![0];
        starts.extend(&ends);
        starts.push(s.prompt_tokens());
        let chunks: usize = starts.windows(2).map(|w| (w[1] - w[0]).div_ceil(chunk)).sum();
        assert!(chunks > 2);
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

/// Prefix caching: an answer whose beginning (up to the end of a message: the system prompt,
/// an earlier turn with its image) was computed by an earlier answer copies its keys and values,
/// prefills only the rest, and answers exactly as with the cache off (every logit, bit for bit),
/// greedy and sampled; a follow-up question reuses the first question's prefix, image included
/// (and a follow-up with a new image encodes only that one); another system prompt, or another
/// image, is another prefix.
#[test]
fn a_cached_prefix_changes_no_answer() {
    let model = load_tiny("janus-pro-tiny");
    let question = |img: image::DynamicImage, system: &str| {
        let mut c = Conversation::single(img, "What is in the picture?");
        c.system = system.to_string();
        c
    };
    let default = janus::text::conversation::DEFAULT_SYSTEM_PROMPT;
    let first = question(image(), default);
    let mut follow_up = first.clone();
    follow_up.messages.push(janus::Message::assistant("A square."));
    follow_up.messages.push(janus::Message::user(vec![janus::Part::Text("And its colour?".into())]));
    let other_system = question(image(), "Be brief.");
    // A follow-up with a second image: the first is copied, only the second is encoded (a short
    // system prompt: the tiny model's context is 256 positions).
    let mut second_image = other_system.clone();
    second_image.messages.push(janus::Message::assistant("A square."));
    second_image.messages.push(janus::Message::user(vec![
        janus::Part::Image(janus::input::preprocess::load_image(&assets().join("tiny/images/tall.jpg")).unwrap()),
        janus::Part::Text("And this one?".into()),
    ]));
    let other_image = {
        let img = janus::input::preprocess::load_image(&assets().join("tiny/images/wide.png")).unwrap();
        question(img, default)
    };
    let ends = |c: &Conversation| model.prepare(c).unwrap().boundaries;
    // The system prompt, then each message.
    assert_eq!(ends(&first).len(), 2);
    assert_eq!(ends(&follow_up).len(), 4);
    assert_eq!(ends(&follow_up)[..2], ends(&first)[..], "the follow-up starts with the first question");
    assert_eq!(ends(&other_image), ends(&first), "same ids, another image");
    assert_eq!(ends(&conversation()).len(), 1, "no system prompt: the message alone");
    let last = |c: &Conversation| *ends(c).last().unwrap();

    let run = |c: &Conversation, p: &TextParams| {
        let mut s = janus::TextSession::new(&model, c, p).unwrap();
        s.keep_logits();
        while !s.is_done() {
            s.step().unwrap();
        }
        let logits: Vec<u32> = s.logits().iter().flatten().map(|l| l.to_bits()).collect();
        (s.into_output().unwrap(), logits)
    };
    let cache = model.prefix_cache();
    let asks = [
        (&first, params(0.0, 0, 16)),
        (&first, params(1.5, 4, 24)),
        (&follow_up, params(0.0, 0, 12)),
        (&other_system, params(0.0, 0, 16)),
        (&other_image, params(0.0, 0, 16)),
        (&second_image, params(0.0, 0, 8)),
    ];
    cache.set_capacity(0);
    let off: Vec<_> = asks.iter().map(|(c, p)| run(c, p)).collect();
    assert!(off.iter().all(|(o, _)| o.cached_tokens == 0 && !o.token_ids.is_empty()));
    assert_eq!(cache.positions(), 0);

    cache.set_capacity(janus::limits::DEFAULT_PREFIX_CACHE_POSITIONS);
    let before = cache.stats();
    for round in 0..2 {
        for (k, (c, p)) in asks.iter().enumerate() {
            let (out, logits) = run(c, p);
            let cached = match (round, k) {
                (0, 0) | (0, 3) => 0,   // nothing computed yet
                (0, 2) => last(&first), // the first question, image included
                (0, 5) => last(&other_system),
                (0, 4) => ends(&first)[0], // the system prompt only
                _ => last(c),              // itself, whole
            };
            assert_eq!(out.cached_tokens, cached, "round {round}, answer {k}");
            assert!(logits == off[k].1, "round {round}, answer {k}: logits");
            assert_eq!(out.token_ids, off[k].0.token_ids, "round {round}, answer {k}");
            assert_eq!(out.text, off[k].0.text);
        }
    }
    let after = cache.stats();
    assert_eq!((after.hits - before.hits, after.misses - before.misses), (10, 2));
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
    let img = |name: &str| janus::input::preprocess::load_image(&assets().join("tiny/images").join(name)).unwrap();
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
    let requests: Vec<_> = convs.iter().zip(&ps).map(|(c, p)| model.prompter().text_request(c, p)).collect();
    assert!(matches!(requests[3], Err(janus::Error::Invalid(_))), "max_tokens 0 is refused when prepared");
    let ready: Vec<&janus::TextRequest> = requests.iter().take(3).map(|r| r.as_ref().unwrap()).collect();
    let sessions = model.text_sessions(&ready).unwrap();
    for (i, s) in sessions.into_iter().enumerate() {
        let mut s = s.unwrap();
        while !s.is_done() {
            s.step().unwrap();
        }
        let want = answer(&model, &convs[i], &ps[i]).0;
        assert_eq!(s.into_output().unwrap().token_ids, want.token_ids, "conversation {i}");
    }
}
