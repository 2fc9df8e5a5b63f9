//! `janus bench --chat-requests N`: text answers through the serving engine, to measure
//! continuous batching. N answers of `--chat-tokens` tokens at once, then the same N one after
//! another, then the N at once each held to a JSON object (structured outputs), then the N at
//! once again beside an image request of `-n` images. Reports aggregate
//! tokens/s, time to first token (p50/p90) and the ratios. Each round asks other questions (with
//! the same system prompt), so that the prefix cache helps every round alike.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use janus::text::constraint::ConstraintSpec;
use janus::{Conversation, Message, Part, SamplingParams, TextParams};
use tokio::sync::mpsc;

use super::args::BenchArgs;
use crate::engine::{ChatEvent, ChatRequest, Engine, EngineOptions, ImageEvent, ModelEngine};

/// One answer as the client saw it.
struct Timed {
    ttft: Duration,
    tokens: usize,
}

/// What a set of answers came to.
struct Round {
    secs: f64,
    tokens: usize,
    ttft: Vec<Duration>,
}

impl Round {
    fn tokens_per_s(&self) -> f64 {
        self.tokens as f64 / self.secs
    }

    fn ttft_ms(&self, q: f64) -> f64 {
        let mut t = self.ttft.clone();
        t.sort();
        t.get(((t.len() - 1) as f64 * q).round() as usize).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    }

    fn line(&self, what: &str) -> String {
        format!(
            "{what}: {} tokens in {:.2} s = {:.1} tokens/s, TTFT p50 {:.0} ms, p90 {:.0} ms",
            self.tokens,
            self.secs,
            self.tokens_per_s(),
            self.ttft_ms(0.5),
            self.ttft_ms(0.9)
        )
    }
}

fn request(engine: &ModelEngine, i: usize, tokens: usize, constraint: Option<&ConstraintSpec>) -> Result<ChatRequest> {
    let question = format!("Question {i}: tell me a long story about a lighthouse keeper.");
    let conversation = Conversation::new(vec![Message::user(vec![Part::Text(question)])]);
    let sampling = SamplingParams { temperature: 1.0, ..SamplingParams::default() };
    let constraint = constraint.cloned();
    let params =
        TextParams { max_new_tokens: Some(tokens), sampling, seed: i as u64, constraint, ..TextParams::default() };
    let prompter = engine.prompter().context("the engine has no model")?;
    Ok(ChatRequest::new(&prompter, &conversation, &params)?)
}

/// Reads one answer to the end, timing its first token from `start`.
fn read(mut rx: mpsc::Receiver<ChatEvent>, start: Instant) -> Result<Timed> {
    let mut ttft = None;
    while let Some(ev) = rx.blocking_recv() {
        match ev {
            ChatEvent::Started { .. } => {}
            ChatEvent::Delta { .. } => {
                ttft.get_or_insert_with(|| start.elapsed());
            }
            ChatEvent::Done { completion_tokens, .. } => {
                let ttft = ttft.unwrap_or_else(|| start.elapsed());
                return Ok(Timed { ttft, tokens: completion_tokens });
            }
            ChatEvent::Failed(e) => bail!("{e}"),
        }
    }
    bail!("the engine closed the answer")
}

/// `n` answers submitted at once: questions `first..first + n`, each held to `constraint`.
fn together(
    engine: &ModelEngine,
    first: usize,
    n: usize,
    tokens: usize,
    constraint: Option<&ConstraintSpec>,
) -> Result<Round> {
    let start = Instant::now();
    let rxs = (first..first + n)
        .map(|i| Ok(engine.submit_chat(request(engine, i, tokens, constraint)?)?))
        .collect::<Result<Vec<_>>>()?;
    let readers: Vec<_> = rxs.into_iter().map(|rx| std::thread::spawn(move || read(rx, start))).collect();
    let timed = readers.into_iter().map(|h| h.join().expect("reader thread")).collect::<Result<Vec<_>>>()?;
    Ok(Round {
        secs: start.elapsed().as_secs_f64(),
        tokens: timed.iter().map(|t| t.tokens).sum(),
        ttft: timed.iter().map(|t| t.ttft).collect(),
    })
}

/// `n` answers (questions `first..first + n`), each submitted when the previous one is done.
fn one_by_one(engine: &ModelEngine, first: usize, n: usize, tokens: usize) -> Result<Round> {
    let start = Instant::now();
    let mut timed = Vec::new();
    for i in first..first + n {
        let t = Instant::now();
        timed.push(read(engine.submit_chat(request(engine, i, tokens, None)?)?, t)?);
    }
    Ok(Round {
        secs: start.elapsed().as_secs_f64(),
        tokens: timed.iter().map(|t| t.tokens).sum(),
        ttft: timed.iter().map(|t| t.ttft).collect(),
    })
}

pub fn run(a: &BenchArgs, n: usize) -> Result<()> {
    let engine = ModelEngine::start(EngineOptions {
        model: a.model.model.clone(),
        device: a.model.device.clone(),
        dtype: a.model.dtype.clone(),
        quant: a.model.quant,
        max_batch_images: a.n.max(1),
        queue_capacity: 2 * n + 2,
        decode_chunk: a.model.decode_chunk,
        batch_wait: Duration::ZERO,
        max_text_sessions: Some(n.max(1)),
        shared_steps: a.shared_steps,
        prefix_cache_positions: a.prefix_cache_positions,
    });
    engine.wait_loaded()?;
    let tokens = a.chat_tokens.max(1);
    together(&engine, 0, 1, 4, None)?; // warm-up
    let concurrent = together(&engine, 1, n, tokens, None)?;
    let sequential = one_by_one(&engine, 1 + n, n, tokens)?;
    println!("{n} chat answers of up to {tokens} tokens ({}):", a.model.model);
    println!("  {}", concurrent.line("concurrent"));
    println!("  {}", sequential.line("one by one"));
    println!("  aggregate speed-up {:.2}x", concurrent.tokens_per_s() / sequential.tokens_per_s());
    // The same, every answer held to a JSON object (its mask computed per row, every step).
    let json = together(&engine, 1 + 3 * n, n, tokens, Some(&ConstraintSpec::JsonObject))?;
    println!("  {}", json.line("concurrent, each a JSON object"));
    println!("  constrained tokens/s: {:.0}% of free", 100.0 * json.tokens_per_s() / concurrent.tokens_per_s());

    // The same answers beside an image request that runs from before they start to after.
    let images = crate::engine::ImageRequest {
        prompt: a.prompt.clone(),
        n: a.n.max(1),
        seed: 1,
        params: SamplingParams::default(),
        partial_images: 0,
    };
    let prompter = engine.prompter().context("the engine has no model")?;
    let mut image_rx = engine.submit_images(crate::engine::ImagesRequest::new(&prompter, images)?)?;
    std::thread::sleep(Duration::from_millis(500));
    let beside = together(&engine, 1 + 2 * n, n, tokens, None)?;
    let image_busy = matches!(image_rx.try_recv(), Err(mpsc::error::TryRecvError::Empty));
    println!("  {}", beside.line(&format!("concurrent, beside {} images", a.n.max(1))));
    println!(
        "  chat tokens/s beside images: {:.0}% of alone{}",
        100.0 * beside.tokens_per_s() / concurrent.tokens_per_s(),
        if image_busy { "" } else { " (the image request finished before the answers: make -n larger)" }
    );
    while let Some(ev) = image_rx.blocking_recv() {
        match ev {
            ImageEvent::Done { .. } => break,
            ImageEvent::Failed(e) => bail!("{e}"),
            _ => {}
        }
    }
    Ok(())
}
