//! `janus bench` of images: text-to-image speed of one batch, broken down (prefill, per-step latency,
//! VQ decode, memory), after a warm-up. Numbers for docs/PERF.md; never asserted in tests.

use std::time::Instant;

use anyhow::{bail, Result};
use janus::limits::DEFAULT_PREFIX_CACHE_POSITIONS;
use janus::quality::{divergence, guided_log_probs, Divergence, Trace};
use janus::{memory_in_use, Conversation, Janus, Parts, Quant, SamplingParams, T2iBatch, TextParams};
use serde::Serialize;

use super::args::BenchArgs;
use janus::membw;
use crate::engine_args::EngineArgs;
use crate::rss::PeakRss;

#[derive(Serialize)]
struct Report {
    model: String,
    device: String,
    dtype: String,
    quant: Quant,
    n: usize,
    prompt_tokens: usize,
    image_tokens: usize,
    timed_steps: usize,
    load_s: f64,
    prefill_ms: f64,
    /// Prompt rows (2 per image, CFG) per second of the prefill step (which also runs the first
    /// image token's head and draw).
    prompt_rows_per_s: f64,
    step_ms_median: f64,
    step_ms_p90: f64,
    step_ms_mean: f64,
    /// GPU only: the mean step when steps do not wait for each other (as in the engine).
    step_ms_pipelined: Option<f64>,
    /// Prefill + all image-token steps (measured, or extrapolated from `timed_steps`), with the
    /// pipelined step where there is one.
    tokens_secs: f64,
    image_tokens_per_s: f64,
    vq_decode_s: f64,
    images_per_s: f64,
    /// Peak anonymous resident memory of the process during this model's load and run (CPU).
    peak_rss_anon_gib: Option<f64>,
    /// CUDA: the most device memory in use (the driver's count, all processes) seen with the
    /// batch's KV cache still held, and after the VQ decode.
    device_memory_gib: Option<f64>,
    /// With `--quants`: the first quant's mean step time over this one's.
    step_speedup: Option<f64>,
    /// With `--quality`: the distance from the first quant.
    quality: Option<Quality>,
    /// Bytes of weights one image-token step reads (the decoder layers', `gen_head`'s and
    /// `gen_aligner`'s).
    step_weight_bytes: usize,
    /// Bytes of KV cache one step's rows read besides, at the mean position of the timed steps
    /// and of a whole image's (the floor counts the weights only, as the issue that set it).
    step_kv_bytes: usize,
    image_kv_bytes: usize,
    /// CPU: the memory read bandwidth probed just before loading and just after measuring, GB/s
    /// (both `--membw` when given).
    membw_gbps: Option<(f64, f64)>,
    /// CPU: `step_weight_bytes` at the mean of the two bandwidths, ms.
    floor_ms: Option<f64>,
    /// The mean step over the floor.
    floor_ratio: Option<f64>,
}

/// How far a quantized model is from the reference (the first of `--quants`).
#[derive(Serialize)]
struct Quality {
    /// Guided (CFG 5, temperature 1) image-token distributions, teacher-forced along the
    /// reference's sampled image.
    image_tokens: Divergence,
    /// Text distributions along the reference's greedy answers about that image.
    text: Option<Divergence>,
    /// Greedy answers identical to the reference's, of those asked.
    identical_answers: usize,
    answers: usize,
}

/// Questions asked about the reference image for the text side of `--quality`.
const QUALITY_QUESTIONS: [&str; 4] = [
    "Describe this image in detail.",
    "What colors dominate this image?",
    "Is there a person in this image?",
    "What could this picture be used for?",
];
/// Most answer tokens per question (random weights rarely stop by themselves).
const QUALITY_ANSWER_TOKENS: usize = 32;
const QUALITY_SEED: u64 = 7;
const GIB: f64 = (1u64 << 30) as f64;

/// The reference's image and answers, and its distributions along them.
struct QualityReference {
    tokens: Vec<u32>,
    image_trace: Trace,
    image: image::DynamicImage,
    /// Per question: the greedy answer and the distributions along it.
    answers: Vec<(Vec<u32>, Trace)>,
}

/// One batch of `-n` images timed on each quantization asked for.
pub fn run(a: BenchArgs) -> Result<()> {
    let quants = if a.quants.is_empty() { vec![a.model.quant] } else { a.quants.clone() };
    if a.quality && quants.len() < 2 {
        bail!("--quality compares quantizations: give at least two with --quants (the first is the reference)");
    }
    let peak = PeakRss::start();
    let mut reports: Vec<Report> = Vec::new();
    let mut reference: Option<QualityReference> = None;
    for quant in quants {
        // The bandwidth before loading (the probe's buffer is freed before the model's peak).
        let cpu = janus::select_device(&a.model.device)?.is_cpu();
        let membw_before = cpu.then(|| a.membw.unwrap_or_else(membw::probe));
        if let Some(p) = &peak {
            p.reset();
        }
        let t = Instant::now();
        let parts = if a.quality { Parts::All } else { Parts::Generation };
        let model = EngineArgs { quant, ..a.model.clone() }.load(parts)?;
        let load_s = t.elapsed().as_secs_f64();
        let mut r = time_batch(&a, &model, load_s)?;
        if a.quality {
            match &reference {
                None => reference = Some(QualityReference::make(&model, &a.prompt)?),
                Some(rf) => r.quality = Some(rf.compare(&model, &a.prompt)?),
            }
        }
        r.peak_rss_anon_gib = peak.as_ref().map(|p| p.peak() as f64 / GIB);
        drop(model);
        if let Some(before) = membw_before {
            let after = a.membw.unwrap_or_else(membw::probe);
            let floor = membw::floor_ms(r.step_weight_bytes, (before + after) / 2.0);
            (r.membw_gbps, r.floor_ms, r.floor_ratio) =
                (Some((before, after)), Some(floor), Some(r.step_ms_mean / floor));
        }
        r.step_speedup = reports.first().map(|first| first.step_ms_mean / r.step_ms_mean);
        if !a.json {
            print_report(&r);
        }
        reports.push(r);
    }
    match (a.json, a.quants.is_empty()) {
        // one object for one model, an array for `--quants`
        (true, true) => println!("{}", serde_json::to_string_pretty(&reports[0])?),
        (true, false) => println!("{}", serde_json::to_string_pretty(&reports)?),
        (false, _) if reports.len() > 1 => print_comparison(&reports),
        _ => {}
    }
    Ok(())
}

/// Times one batch of `a.n` images on a loaded model.
fn time_batch(a: &BenchArgs, model: &Janus, load_s: f64) -> Result<Report> {
    let total = model.num_image_tokens();
    let steps = a.steps.unwrap_or(total).clamp(1, total);
    let params = SamplingParams::default();
    // Warm-up: a few steps of a same-sized batch and one decode.
    let jobs = model.t2i_jobs(&a.prompt, a.n, 0, params)?;
    let mut warm = T2iBatch::new(model, jobs)?;
    for _ in 0..a.warmup.min(total) {
        warm.step()?;
    }
    drop(warm);
    model.decode_images(&[vec![0; total]], 1)?;

    // Step latencies: each step waits for the device (a no-op on the CPU).
    let jobs = model.t2i_jobs(&a.prompt, a.n, 1, params)?;
    let prompt_tokens = jobs[0].prompt_ids.len();
    let mut batch = T2iBatch::new(model, jobs.clone())?;
    let mut times = Vec::with_capacity(steps);
    for _ in 0..steps {
        let t = Instant::now();
        batch.step()?;
        model.device().synchronize()?;
        times.push(t.elapsed().as_secs_f64());
    }
    let prefill = times[0];
    let mut decode_steps: Vec<f64> = times[1..].to_vec();
    decode_steps.sort_by(f64::total_cmp);
    let pick =
        |q: f64| decode_steps.get(((decode_steps.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(prefill);
    let mean =
        if decode_steps.is_empty() { prefill } else { decode_steps.iter().sum::<f64>() / decode_steps.len() as f64 };

    // On a GPU, generation does not wait between steps (the tokens stay on the device), so the
    // time a batch takes is measured again the way the engine runs it: one wait, at the end.
    let step_ms_pipelined = if model.device().is_cpu() || steps < 2 {
        None
    } else {
        let mut free = T2iBatch::new(model, jobs)?;
        let t = Instant::now();
        free.step()?;
        model.device().synchronize()?;
        let prefill_end = t.elapsed().as_secs_f64();
        for _ in 1..steps {
            free.step()?;
        }
        free.tokens()?;
        Some((t.elapsed().as_secs_f64() - prefill_end) / (steps - 1) as f64 * 1e3)
    };
    let tokens_secs = prefill + step_ms_pipelined.map_or(mean, |ms| ms / 1e3) * (total - 1) as f64;

    // Decode full grids (unfinished images padded with token 0).
    let tokens = batch.padded_tokens(0..batch.num_images())?;
    let device_memory = |now: Option<f64>| {
        memory_in_use(model.device()).map(|b| b as f64 / GIB).into_iter().chain(now).reduce(f64::max)
    };
    let with_cache = device_memory(None);
    let t = Instant::now();
    model.decode_images(&tokens, a.model.decode_chunk)?;
    let vq_decode_s = t.elapsed().as_secs_f64();

    // every row (2 per image) reads its cache up to its position
    let kv_bytes = |position: usize| 2 * a.n * model.llm().config().kv_bytes_per_position(model.dtype()) * position;
    let r = Report {
        model: a.model.model.clone(),
        device: janus::device::device_name(model.device()),
        dtype: janus::device::dtype_name(model.dtype()).into(),
        quant: model.quant(),
        n: a.n,
        prompt_tokens,
        image_tokens: total,
        timed_steps: steps,
        load_s,
        prefill_ms: prefill * 1e3,
        prompt_rows_per_s: (2 * a.n * prompt_tokens) as f64 / prefill,
        step_ms_median: pick(0.5) * 1e3,
        step_ms_p90: pick(0.9) * 1e3,
        step_ms_mean: mean * 1e3,
        step_ms_pipelined,
        tokens_secs,
        image_tokens_per_s: (a.n * total) as f64 / tokens_secs,
        vq_decode_s,
        images_per_s: a.n as f64 / (tokens_secs + vq_decode_s),
        peak_rss_anon_gib: None,
        device_memory_gib: device_memory(with_cache),
        step_speedup: None,
        quality: None,
        step_weight_bytes: model.image_step_weight_bytes(),
        step_kv_bytes: kv_bytes(prompt_tokens + steps / 2),
        image_kv_bytes: kv_bytes(prompt_tokens + total / 2),
        membw_gbps: None,
        floor_ms: None,
        floor_ratio: None,
    };
    Ok(r)
}

fn print_report(r: &Report) {
    println!(
        "{} on {} ({}, quant {}), n = {}, prompt {} tokens, {} image tokens ({} timed)\n\
         load {:.2} s | prefill {:.1} ms ({:.0} prompt rows/s) | step median {:.2} ms, p90 {:.2} ms{}\n\
         tokens {:.2} s ({:.0} image tokens/s) | VQ decode {:.2} s | {:.2} images/s | peak RssAnon {}{}",
        r.model,
        r.device,
        r.dtype,
        r.quant,
        r.n,
        r.prompt_tokens,
        r.image_tokens,
        r.timed_steps,
        r.load_s,
        r.prefill_ms,
        r.prompt_rows_per_s,
        r.step_ms_median,
        r.step_ms_p90,
        r.step_ms_pipelined.map_or(String::new(), |ms| format!(", pipelined {ms:.2} ms")),
        r.tokens_secs,
        r.image_tokens_per_s,
        r.vq_decode_s,
        r.images_per_s,
        r.peak_rss_anon_gib.map_or("n/a".into(), |g| format!("{g:.2} GiB")),
        r.device_memory_gib.map_or(String::new(), |g| format!(" | device memory {g:.2} GiB")),
    );
    if let (Some((before, after)), Some(floor), Some(ratio)) = (r.membw_gbps, r.floor_ms, r.floor_ratio) {
        println!(
            "floor: {:.1} MB of weights per step at {before:.1} / {after:.1} GB/s (before / after) = {floor:.1} ms; \
             the step is {ratio:.2}× the floor; its rows' KV cache adds {:.1} MB here ({:.1} MB at a whole image's mean)",
            r.step_weight_bytes as f64 / 1e6,
            r.step_kv_bytes as f64 / 1e6,
            r.image_kv_bytes as f64 / 1e6,
        );
    }
    if let Some(q) = &r.quality {
        let d = &q.image_tokens;
        println!(
            "quality vs the first: image tokens KL mean {:.4}, p99 {:.4}, top-1 agreement {:.1}% ({} steps)",
            d.mean_kl,
            d.p99_kl,
            d.top1_agreement * 100.0,
            d.steps
        );
        if let Some(t) = &q.text {
            println!(
                "                      text KL mean {:.4}, p99 {:.4}, top-1 {:.1}% ({} tokens); identical greedy answers {}/{}",
                t.mean_kl,
                t.p99_kl,
                t.top1_agreement * 100.0,
                t.steps,
                q.identical_answers,
                q.answers
            );
        }
    }
}

/// One Markdown row per quant, for docs/PERF.md.
fn print_comparison(reports: &[Report]) {
    println!("\n| quant | step ms (mean) | × first | floor ms (GB/s before / after) | × floor | tokens s | VQ s | peak RssAnon GiB | image KL mean / p99 | top-1 | text KL mean / p99 | same answers |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in reports {
        let (img, top1, text, same) = match &r.quality {
            Some(q) => (
                format!("{:.4} / {:.4}", q.image_tokens.mean_kl, q.image_tokens.p99_kl),
                format!("{:.1}%", q.image_tokens.top1_agreement * 100.0),
                q.text.map_or("–".into(), |t| format!("{:.4} / {:.4}", t.mean_kl, t.p99_kl)),
                format!("{}/{}", q.identical_answers, q.answers),
            ),
            None => ("–".into(), "–".into(), "–".into(), "–".into()),
        };
        let floor = match (r.floor_ms, r.membw_gbps) {
            (Some(f), Some((b, a))) => format!("{f:.1} ({b:.0} / {a:.0})"),
            _ => "–".into(),
        };
        println!(
            "| {} | {:.1} | {:.2} | {floor} | {} | {:.1} | {:.2} | {} | {img} | {top1} | {text} | {same} |",
            r.quant,
            r.step_ms_mean,
            r.step_speedup.unwrap_or(1.0),
            r.floor_ratio.map_or("–".into(), |x| format!("{x:.2}")),
            r.tokens_secs,
            r.vq_decode_s,
            r.peak_rss_anon_gib.map_or("n/a".into(), |g| format!("{g:.2}")),
        );
    }
}

impl QualityReference {
    /// Samples one image (CFG 5, temperature 1, as the reference does) with its distributions,
    /// then answers each question greedily about it.
    fn make(model: &Janus, prompt: &str) -> Result<Self> {
        let params = SamplingParams::default();
        let mut batch = T2iBatch::new(model, model.t2i_jobs(prompt, 1, QUALITY_SEED, params)?)?;
        let mut image_trace = Vec::with_capacity(batch.total_steps());
        while !batch.is_done() {
            // the guided distribution of this step, from the logits the sampler drew from
            image_trace.extend(guided_log_probs(&batch.step()?.logits, params.cfg_weight)?);
        }
        let tokens = batch.into_tokens()?.remove(0);
        let image = image::DynamicImage::ImageRgb8(model.decode_images(std::slice::from_ref(&tokens), 1)?.remove(0));
        let mut answers = Vec::new();
        for q in QUALITY_QUESTIONS {
            let conv = Conversation::single(image.clone(), q);
            let ids = greedy_answer(model, &conv)?;
            let trace = model.text_trace(&conv, &ids)?;
            answers.push((ids, trace));
        }
        Ok(Self { tokens, image_trace, image, answers })
    }

    fn compare(&self, model: &Janus, prompt: &str) -> Result<Quality> {
        let trace = model.t2i_trace(prompt, SamplingParams::default().cfg_weight, &self.tokens)?;
        let image_tokens = divergence(&self.image_trace, &trace)?;
        let (mut reference, mut other, mut identical) = (Vec::new(), Vec::new(), 0);
        for (q, (ids, ref_trace)) in QUALITY_QUESTIONS.iter().zip(&self.answers) {
            let conv = Conversation::single(self.image.clone(), q);
            identical += usize::from(greedy_answer(model, &conv)? == *ids);
            if !ids.is_empty() {
                other.extend(model.text_trace(&conv, ids)?);
                reference.extend(ref_trace.iter().cloned());
            }
        }
        let text = if reference.is_empty() { None } else { Some(divergence(&reference, &other)?) };
        Ok(Quality { image_tokens, text, identical_answers: identical, answers: self.answers.len() })
    }
}

fn greedy_answer(model: &Janus, conv: &Conversation) -> Result<Vec<u32>> {
    let params = TextParams { max_new_tokens: Some(QUALITY_ANSWER_TOKENS), ..Default::default() };
    Ok(model.answer(conv, &params, |_| true)?.token_ids)
}

/// `janus bench --requests R`: R one-image requests through the serving engine, all at once
/// (batched) and then one after another, with the same seeds.
pub fn run_engine_batching(a: &BenchArgs, requests: usize) -> Result<()> {
    use crate::engine::{Engine, ImageEvent, ImageRequest, ImagesRequest};
    use crate::engine::{EngineOptions, ModelEngine};

    let engine = ModelEngine::start(EngineOptions {
        model: a.model.model.clone(),
        device: a.model.device.clone(),
        dtype: a.model.dtype.clone(),
        quant: a.model.quant,
        max_batch_images: requests.max(1),
        queue_capacity: requests.max(1) * 2,
        decode_chunk: a.model.decode_chunk,
        batch_wait: std::time::Duration::from_millis(50),
        max_text_sessions: None,
        shared_steps: true,
        prefix_cache_positions: DEFAULT_PREFIX_CACHE_POSITIONS,
    });
    engine.wait_loaded()?;
    let prompter = engine.prompter().ok_or_else(|| anyhow::anyhow!("the engine has no model"))?;
    let req = |seed: u64| {
        let request =
            ImageRequest { prompt: a.prompt.clone(), n: 1, seed, params: SamplingParams::default(), partial_images: 0 };
        ImagesRequest::new(&prompter, request)
    };
    let wait = |mut rx: tokio::sync::mpsc::Receiver<ImageEvent>| -> Result<()> {
        while let Some(ev) = rx.blocking_recv() {
            match ev {
                ImageEvent::Done { .. } => return Ok(()),
                ImageEvent::Failed(e) => anyhow::bail!("{e}"),
                _ => {}
            }
        }
        anyhow::bail!("the engine closed the request")
    };
    wait(engine.submit_images(req(0)?)?)?; // warm-up
    let t = Instant::now();
    let rxs = (0..requests).map(|i| Ok(engine.submit_images(req(i as u64)?)?)).collect::<Result<Vec<_>>>()?;
    rxs.into_iter().try_for_each(&wait)?;
    let together = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for i in 0..requests {
        wait(engine.submit_images(req(i as u64)?)?)?;
    }
    let sequential = t.elapsed().as_secs_f64();
    println!(
        "{requests} one-image requests: concurrent {together:.2} s (largest batch {}), one by one {sequential:.2} s, speed-up {:.2}x",
        engine.largest_batch(),
        sequential / together
    );
    Ok(())
}
