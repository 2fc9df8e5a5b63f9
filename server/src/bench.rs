//! `janus bench`: text-to-image speed of one batch, broken down (prefill, per-step latency,
//! VQ decode, memory), after a warm-up. Numbers for docs/PERF.md; never asserted in tests.

use std::time::Instant;

use anyhow::Result;
use clap::Args;
use janus::{memory_in_use, SamplingParams, T2iBatch};
use serde::Serialize;

use crate::cli::ModelArgs;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// Images in the batch (CFG doubles the rows).
    #[arg(long, short = 'n', env = "JANUS_N", default_value_t = 16)]
    pub n: usize,

    /// Image-token steps to time (default: a whole image); shorter runs extrapolate.
    #[arg(long, env = "JANUS_BENCH_STEPS")]
    pub steps: Option<usize>,

    /// Warm-up steps before timing (kernels, allocator).
    #[arg(long, env = "JANUS_BENCH_WARMUP", default_value_t = 16)]
    pub warmup: usize,

    #[arg(long, env = "JANUS_PROMPT", default_value = "a photo of a red bicycle leaning against a brick wall")]
    pub prompt: String,

    /// Images decoded at once by the VQ decoder.
    #[arg(long, env = "JANUS_DECODE_CHUNK", default_value_t = 4)]
    pub decode_chunk: usize,

    /// Print the report as JSON.
    #[arg(long, env = "JANUS_JSON")]
    pub json: bool,

    /// Instead: send this many one-image requests through the serving engine at once, then
    /// one by one, and report the batching speed-up.
    #[arg(long, env = "JANUS_BENCH_REQUESTS")]
    pub requests: Option<usize>,
}

#[derive(Serialize)]
struct Report {
    model: String,
    device: String,
    dtype: String,
    n: usize,
    prompt_tokens: usize,
    image_tokens: usize,
    timed_steps: usize,
    load_s: f64,
    prefill_ms: f64,
    step_ms_median: f64,
    step_ms_p90: f64,
    step_ms_mean: f64,
    /// GPU only: the mean step when steps do not wait for each other (as in the engine).
    step_ms_pipelined: Option<f64>,
    /// Prefill + all image-token steps (measured, or extrapolated from `timed_steps`), with the
    /// pipelined step where there is one.
    tokens_s: f64,
    image_tokens_per_s: f64,
    vq_decode_s: f64,
    images_per_s: f64,
    peak_memory_gib: Option<f64>,
}

pub fn run(a: BenchArgs) -> Result<()> {
    if let Some(r) = a.requests {
        return run_engine_batching(&a, r);
    }
    let t = Instant::now();
    let model = a.model.load()?;
    let load_s = t.elapsed().as_secs_f64();
    let total = model.num_image_tokens();
    let steps = a.steps.unwrap_or(total).clamp(1, total);
    let params = SamplingParams::default();

    // Warm-up: a few steps of a same-sized batch and one decode.
    let jobs = model.t2i_jobs(&a.prompt, a.n, 0, params)?;
    let mut warm = T2iBatch::new(&model, jobs)?;
    for _ in 0..a.warmup.min(total) {
        warm.step()?;
    }
    drop(warm);
    model.decode_images(&[vec![0; total]], 1)?;

    // Step latencies: each step waits for the device (a no-op on the CPU).
    let jobs = model.t2i_jobs(&a.prompt, a.n, 1, params)?;
    let prompt_tokens = jobs[0].prompt_ids.len();
    let mut batch = T2iBatch::new(&model, jobs.clone())?;
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
        let mut free = T2iBatch::new(&model, jobs)?;
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
    let tokens_s = prefill + step_ms_pipelined.map_or(mean, |ms| ms / 1e3) * (total - 1) as f64;

    // Decode full grids (unfinished images padded with token 0).
    let tokens = batch.padded_tokens(0..batch.num_images())?;
    let t = Instant::now();
    model.decode_images(&tokens, a.decode_chunk)?;
    let vq_decode_s = t.elapsed().as_secs_f64();

    let r = Report {
        model: a.model.model.clone(),
        device: format!("{:?}", model.device()),
        dtype: format!("{:?}", model.dtype()),
        n: a.n,
        prompt_tokens,
        image_tokens: total,
        timed_steps: steps,
        load_s,
        prefill_ms: prefill * 1e3,
        step_ms_median: pick(0.5) * 1e3,
        step_ms_p90: pick(0.9) * 1e3,
        step_ms_mean: mean * 1e3,
        step_ms_pipelined,
        tokens_s,
        image_tokens_per_s: (a.n * total) as f64 / tokens_s,
        vq_decode_s,
        images_per_s: a.n as f64 / (tokens_s + vq_decode_s),
        peak_memory_gib: memory_in_use(model.device()).map(|b| b as f64 / (1u64 << 30) as f64),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "{} on {} ({}), n = {}, prompt {} tokens, {} image tokens ({} timed)\n\
             load {:.2} s | prefill {:.1} ms | step median {:.2} ms, p90 {:.2} ms{}\n\
             tokens {:.2} s ({:.0} image tokens/s) | VQ decode {:.2} s | {:.2} images/s | memory {}",
            r.model,
            r.device,
            r.dtype,
            r.n,
            r.prompt_tokens,
            r.image_tokens,
            r.timed_steps,
            r.load_s,
            r.prefill_ms,
            r.step_ms_median,
            r.step_ms_p90,
            r.step_ms_pipelined.map_or(String::new(), |ms| format!(", pipelined {ms:.2} ms")),
            r.tokens_s,
            r.image_tokens_per_s,
            r.vq_decode_s,
            r.images_per_s,
            r.peak_memory_gib.map_or("n/a".into(), |g| format!("{g:.2} GiB")),
        );
    }
    Ok(())
}

/// `janus bench --requests R`: R one-image requests through the serving engine, all at once
/// (batched) and then one after another, with the same seeds.
pub fn run_engine_batching(a: &BenchArgs, requests: usize) -> Result<()> {
    use crate::engine::runner::{EngineOptions, ModelEngine};
    use crate::engine::{Engine, EngineStatus, ImageEvent, ImageRequest};

    let engine = ModelEngine::start(EngineOptions {
        model: a.model.model.clone(),
        device: a.model.device.clone(),
        dtype: a.model.dtype.clone(),
        max_batch_images: requests.max(1),
        queue_capacity: requests.max(1) * 2,
        decode_chunk: a.decode_chunk,
        batch_wait: std::time::Duration::from_millis(50),
    });
    while engine.status() == EngineStatus::Loading {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    if let EngineStatus::Failed(m) = engine.status() {
        anyhow::bail!("{m}");
    }
    let req = |seed: u64| ImageRequest {
        prompt: a.prompt.clone(),
        n: 1,
        seed,
        params: SamplingParams::default(),
        partial_images: 0,
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
    wait(engine.submit_images(req(0))?)?; // warm-up
    let t = Instant::now();
    let rxs = (0..requests).map(|i| engine.submit_images(req(i as u64))).collect::<Result<Vec<_>, _>>()?;
    rxs.into_iter().try_for_each(&wait)?;
    let together = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for i in 0..requests {
        wait(engine.submit_images(req(i as u64))?)?;
    }
    let sequential = t.elapsed().as_secs_f64();
    println!(
        "{requests} one-image requests: concurrent {together:.2} s (largest batch {}), one by one {sequential:.2} s, speed-up {:.2}x",
        engine.largest_batch(),
        sequential / together
    );
    Ok(())
}
