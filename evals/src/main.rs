//! `janus-eval`: benchmark generation (GenEval, DPG-Bench), GenEval-style scoring and imports of
//! official scores, and comparison of runs, for Janus-Pro and OpenAI-compatible image endpoints.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::builder::TypedValueParser as _;
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use janus_evals::data;
use janus_evals::generate::{
    generate_dpg, generate_geneval, Endpoint, GenerateOptions, ImageBackend, InProcess, RetryPolicy, Shard,
};

#[derive(Parser, Debug)]
#[command(name = "janus-eval", version, about = "GenEval-style evaluation for Janus-Pro")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The GenEval benchmark (553 prompts, 6 tasks).
    Geneval {
        #[command(subcommand)]
        command: GenevalCommand,
    },
    /// DPG-Bench (1065 dense prompts; one <item_id>.png per prompt, a 2x2 grid of 4 samples).
    Dpg {
        #[command(subcommand)]
        command: DpgCommand,
    },
    /// Compare GenEval runs (and published numbers): Markdown on stdout, <out>/report.md and a
    /// self-contained <out>/report.html with a contact sheet.
    Compare(CompareArgs),
    /// Print the provenance and licence notes of the embedded benchmark data.
    Licenses,
}

#[derive(Subcommand, Debug)]
enum DpgCommand {
    /// Generate <out>/<item_id>.png for the DPG-Bench prompts (the first --limit; --tags does not
    /// apply), with the same backends as `geneval generate`.
    Generate(Box<GenerateArgs>),
}

#[derive(Args, Debug)]
struct CompareArgs {
    /// Run folders (each with images from `geneval generate`, and results.jsonl + scores.json
    /// when scored).
    #[arg(required = true, env = "JANUS_EVAL_RUNS", value_delimiter = ',')]
    runs: Vec<PathBuf>,

    /// Add the published rows of key models (official scorer), with their sources.
    #[arg(long, env = "JANUS_EVAL_PUBLISHED")]
    published: bool,

    /// Add every embedded published row.
    #[arg(long, env = "JANUS_EVAL_PUBLISHED_ALL")]
    published_all: bool,

    /// Write report.md and report.html here (created).
    #[arg(long, env = "JANUS_EVAL_REPORT_OUT")]
    out: Option<PathBuf>,

    /// Prompts on the HTML contact sheet.
    #[arg(long, env = "JANUS_EVAL_SAMPLE_PROMPTS", default_value_t = 12)]
    sample_prompts: usize,

    /// Longest side of a contact-sheet thumbnail, in pixels.
    #[arg(long, env = "JANUS_EVAL_THUMB", default_value_t = 160,
          value_parser = clap::value_parser!(u32).range(16..=1024))]
    thumb: u32,
}

fn compare(a: CompareArgs) -> Result<()> {
    use janus_evals::compare::{compare, write_report, CompareOptions};
    let opts = CompareOptions {
        runs: a.runs,
        published: a.published,
        published_all: a.published_all,
        sample_prompts: a.sample_prompts,
        thumb: a.thumb,
    };
    let report = compare(&opts)?;
    print!("{}", report.markdown);
    if let Some(out) = &a.out {
        write_report(&report, out)?;
        eprintln!("wrote {} and {}", out.join("report.md").display(), out.join("report.html").display());
    }
    Ok(())
}

#[derive(Subcommand, Debug)]
enum GenevalCommand {
    /// Generate images in the official layout (<out>/<00000..00552>/{metadata.jsonl,samples/}).
    Generate(Box<GenerateArgs>),
    /// Print the selected prompts' metadata lines (as in evaluation_metadata.jsonl).
    Prompts(SelectArgs),
    /// Score a run folder with DETR + CLIP (GenEval's rules): writes <run>/results.jsonl and
    /// <run>/scores.json.
    Score(Box<ScoreArgs>),
    /// File an official evaluator's results.jsonl under a run folder, with its scores.json.
    Import(ImportArgs),
}

#[derive(Args, Debug)]
struct SelectArgs {
    /// Only the first N selected prompts.
    #[arg(long, env = "JANUS_EVAL_LIMIT")]
    limit: Option<usize>,

    /// Only these tasks (comma-separated): single_object, two_object, counting, colors,
    /// position, color_attr.
    #[arg(long, env = "JANUS_EVAL_TAGS", value_delimiter = ',')]
    tags: Vec<String>,
}

impl SelectArgs {
    fn prompts(&self) -> Result<Vec<data::GenevalPrompt>> {
        for t in &self.tags {
            if !janus_evals::rules::TAGS.contains(&t.as_str()) {
                bail!("unknown tag {t:?}; the tags are {}", janus_evals::rules::TAGS.join(", "));
            }
        }
        Ok(data::select(data::geneval_prompts(), &self.tags, self.limit))
    }
}

#[derive(Args, Debug)]
struct GenerateArgs {
    /// Output folder (created; an existing run there is resumed).
    #[arg(long, env = "JANUS_EVAL_OUT")]
    out: PathBuf,

    /// Images per prompt (the standard protocol is 4).
    #[arg(long, env = "JANUS_EVAL_SAMPLES", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    samples: u32,

    #[command(flatten)]
    select: SelectArgs,

    /// Seed; every prompt starts from it, as in the official generator.
    #[arg(long, env = "JANUS_EVAL_SEED", default_value_t = 42)]
    seed: u64,

    /// Classifier-free guidance weight (in-process default 5; sent to endpoints only when given).
    #[arg(long, env = "JANUS_EVAL_CFG")]
    cfg: Option<f32>,

    /// Sampling temperature (in-process default 1; sent to endpoints only when given).
    #[arg(long, env = "JANUS_EVAL_TEMPERATURE")]
    temperature: Option<f32>,

    /// In-process: a local model directory or hub id (`id@revision`).
    #[arg(long, env = "JANUS_EVAL_MODEL", conflicts_with = "endpoint", required_unless_present = "endpoint")]
    model: Option<String>,

    /// Generate only shard I of N of the selected prompts (prompt p belongs to shard p mod N);
    /// shards written into one --out folder form one run.
    #[arg(long, env = "JANUS_EVAL_SHARD", value_name = "I/N")]
    shard: Option<Shard>,

    /// Split the selected prompts into N shards and generate the one numbered by
    /// JOB_COMPLETION_INDEX (a Kubernetes Indexed Job sets it).
    #[arg(long, env = "JANUS_EVAL_SHARDS", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    shards: Option<u32>,

    /// In-process: `auto`, `cpu`, `cuda` or `cuda:N`.
    #[arg(long, env = "JANUS_EVAL_DEVICE", default_value = "auto")]
    device: String,

    /// In-process: `f32`, `bf16` or `f16` (default: bf16 on CUDA, f32 on CPU).
    #[arg(long, env = "JANUS_EVAL_DTYPE")]
    dtype: Option<String>,

    /// In-process: quantize the linear layers while loading (`none`, `q8_0`, `q6k`, `q5k`, `q4k`).
    #[arg(long, env = "JANUS_EVAL_QUANT", default_value_t = janus::Quant::None)]
    quant: janus::Quant,

    /// In-process: images decoded at once by the VQ decoder.
    #[arg(long, env = "JANUS_EVAL_DECODE_CHUNK", default_value_t = janus::limits::DEFAULT_DECODE_CHUNK,
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    decode_chunk: usize,

    /// An OpenAI-compatible server root, e.g. http://127.0.0.1:8000 or https://api.openai.com;
    /// several (comma-separated, or the flag repeated): replicas of one server, requests spread
    /// over them (the least busy first) and retried on another.
    #[arg(long, env = "JANUS_EVAL_ENDPOINT", value_delimiter = ',', num_args = 1)]
    endpoint: Vec<String>,

    /// Endpoint: retries of a request that got no answer, or 429/502/503/504 (on another
    /// endpoint when there is one; Retry-After honoured).
    #[arg(long, env = "JANUS_EVAL_RETRIES", default_value_t = RetryPolicy::default().retries)]
    retries: u32,

    /// Endpoint: the first backoff before a retry when the server gives no Retry-After, in
    /// milliseconds; it doubles with each retry, up to 30 s.
    #[arg(long, env = "JANUS_EVAL_RETRY_BACKOFF_MS",
          default_value_t = RetryPolicy::default().backoff.as_millis() as u64)]
    retry_backoff_ms: u64,

    /// Endpoint: the longest one request may take (sending, generating, reading the answer)
    /// before it counts as failed and is retried, in seconds.
    #[arg(long, env = "JANUS_EVAL_REQUEST_TIMEOUT_SECS", default_value_t = 900,
          value_parser = clap::value_parser!(u64).range(1..))]
    request_timeout_secs: u64,

    /// Endpoint: bearer API key.
    #[arg(long, env = "JANUS_EVAL_API_KEY", hide_env_values = true)]
    api_key: Option<String>,

    /// Endpoint: the `model` field of the request (e.g. dall-e-3); omitted when not given.
    #[arg(long, env = "JANUS_EVAL_ENDPOINT_MODEL")]
    endpoint_model: Option<String>,

    /// Endpoint: send only OpenAI's own fields (no seed, guidance_scale, temperature).
    #[arg(long, env = "JANUS_EVAL_NO_EXTENSIONS")]
    no_extensions: bool,

    /// Endpoint: at most N images per request (1 for DALL-E 3); a prompt's samples are split, and
    /// request i's seed is derived from --seed and its first sample's index. A 400 whose error
    /// names `param: "n"` switches to 1 on its own.
    #[arg(long, env = "JANUS_EVAL_ENDPOINT_MAX_N", value_parser = clap::value_parser!(u32).range(1..=64))]
    endpoint_max_n: Option<u32>,

    /// Endpoint: do not send `response_format` (gpt-image-1 refuses it and answers b64_json). A 400
    /// whose error names `param: "response_format"` drops it on its own.
    #[arg(long, env = "JANUS_EVAL_ENDPOINT_NO_RESPONSE_FORMAT")]
    endpoint_no_response_format: bool,

    /// Endpoint: prompts in flight at once.
    #[arg(long, env = "JANUS_EVAL_CONCURRENCY", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    concurrency: u32,

    /// No progress bar.
    #[arg(long, env = "JANUS_EVAL_QUIET")]
    quiet: bool,
}

fn generate(a: GenerateArgs, dpg: bool) -> Result<()> {
    let (prompts, dpg_prompts) = if dpg {
        if !a.select.tags.is_empty() {
            bail!("--tags is for GenEval; DPG-Bench prompts have no tags (use --limit)");
        }
        (Vec::new(), data::dpg_prompts().into_iter().take(a.select.limit.unwrap_or(usize::MAX)).collect())
    } else {
        (a.select.prompts()?, Vec::new())
    };
    let selected = prompts.len() + dpg_prompts.len();
    if selected == 0 {
        bail!("no prompt selected");
    }
    let shard =
        Shard::resolve(a.shard, a.shards.map(|n| n as usize), std::env::var("JOB_COMPLETION_INDEX").ok().as_deref())?;
    let (backend, settings, concurrency): (Box<dyn ImageBackend>, _, usize) = match (&a.model, a.endpoint.as_slice()) {
        (Some(model), []) => {
            let cfg = a.cfg.unwrap_or(janus::limits::DEFAULT_CFG_WEIGHT);
            let temperature = a.temperature.unwrap_or(janus::limits::DEFAULT_IMAGE_TEMPERATURE);
            let settings = json!({ "cfg": cfg, "temperature": temperature });
            let b = InProcess::open(model, &a.device, a.dtype.as_deref(), a.quant, (cfg, temperature), a.decode_chunk)?;
            (Box::new(b), settings, 1)
        }
        (None, endpoints) if !endpoints.is_empty() => {
            let ext = !a.no_extensions;
            let settings = json!({
                "cfg": if ext { a.cfg } else { None },
                "temperature": if ext { a.temperature } else { None },
                "note": "values not given are the endpoint's defaults",
            });
            let retry = RetryPolicy {
                retries: a.retries,
                backoff: std::time::Duration::from_millis(a.retry_backoff_ms),
                ..RetryPolicy::default()
            };
            let b = Endpoint::pool(endpoints, a.api_key.clone(), a.endpoint_model.clone(), a.cfg, a.temperature, ext)
                .with_max_n(a.endpoint_max_n.map(|n| n as usize))
                .with_response_format(!a.endpoint_no_response_format)
                .with_retry_policy(retry)
                .with_timeout(std::time::Duration::from_secs(a.request_timeout_secs));
            (Box::new(b), settings, a.concurrency as usize)
        }
        _ => bail!("give exactly one of --model and --endpoint"),
    };
    let opts = GenerateOptions {
        out: a.out.clone(),
        samples: a.samples as usize,
        seed: a.seed,
        concurrency,
        settings,
        selection: json!({ "tags": a.select.tags, "limit": a.select.limit, "prompts": selected }),
        progress: !a.quiet,
        shard,
    };
    let t = std::time::Instant::now();
    let r = if dpg {
        generate_dpg(&dpg_prompts, backend.as_ref(), &opts)?
    } else {
        generate_geneval(&prompts, backend.as_ref(), &opts)?
    };
    eprintln!(
        "{}{}: {} prompt(s) generated, {} already complete ({:.1}s)",
        a.out.display(),
        shard.map(|s| format!(" (shard {s})")).unwrap_or_default(),
        r.generated,
        r.skipped,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

#[derive(Args, Debug)]
struct ScoreArgs {
    /// The run folder (<run>/<00000..>/metadata.jsonl + samples/*.png).
    #[arg(env = "JANUS_EVAL_RUN")]
    run: PathBuf,

    /// Object detector: a DETR hub id (`id@revision`) or a local directory with config.json
    /// and model.safetensors / pytorch_model.bin.
    #[arg(long, env = "JANUS_EVAL_DETECTOR", default_value = janus_evals::detector::DEFAULT_DETR)]
    detector: String,

    /// Colour classifier: a CLIP hub id or a local directory (config.json, tokenizer.json,
    /// weights).
    #[arg(long, env = "JANUS_EVAL_CLIP", default_value = janus_evals::clip::DEFAULT_CLIP)]
    clip: String,

    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    #[arg(long, env = "JANUS_EVAL_DEVICE", default_value = "auto")]
    device: String,

    /// The image generator's name for scores.json (default: from <run>/run.json).
    #[arg(long, env = "JANUS_EVAL_MODEL_NAME")]
    model_name: Option<String>,

    /// Overwrite imported official scores in the run folder.
    #[arg(long, env = "JANUS_EVAL_FORCE")]
    force: bool,

    /// No progress bar.
    #[arg(long, env = "JANUS_EVAL_QUIET")]
    quiet: bool,
}

#[derive(Args, Debug)]
struct ImportArgs {
    /// The official evaluator's results.jsonl (evaluation/evaluate_images.py --outfile).
    #[arg(env = "JANUS_EVAL_RESULTS")]
    results: PathBuf,

    /// The run folder to file it under (created if needed).
    #[arg(long, env = "JANUS_EVAL_RUN")]
    run: PathBuf,

    /// The image generator's name for scores.json (default: from <run>/run.json).
    #[arg(long, env = "JANUS_EVAL_MODEL_NAME")]
    model_name: Option<String>,

    /// Overwrite an existing results.jsonl in the run folder.
    #[arg(long, env = "JANUS_EVAL_FORCE")]
    force: bool,
}

fn score(a: ScoreArgs) -> Result<()> {
    use janus_evals::score::{report, score_run, ScoreOptions};
    // Check the run before loading models (minutes on a cold cache).
    janus_evals::score::list_run(&a.run)?;
    if a.model_name.is_none() {
        janus_evals::score::model_from_run_json(&a.run)?;
    }
    let dev = janus::select_device(&a.device)?;
    let t = std::time::Instant::now();
    let detector = janus_evals::detector::Detr::open(&a.detector, &dev)?;
    let clip = janus_evals::clip::Clip::open(&a.clip, &dev)?;
    eprintln!(
        "scoring {} with {} and {} ({:?}; models loaded in {:.1}s)",
        a.run.display(),
        janus_evals::rules::Detector::name(&detector),
        janus_evals::rules::ColorClassifier::name(&clip),
        dev,
        t.elapsed().as_secs_f64()
    );
    let opts = ScoreOptions {
        run: a.run.clone(),
        model_name: a.model_name.clone(),
        rules: Default::default(),
        progress: !a.quiet,
        force: a.force,
    };
    let m = score_run(&detector, &clip, &opts)?;
    print!("{}", report(&m));
    eprintln!("wrote {} and {}", a.run.join("results.jsonl").display(), a.run.join("scores.json").display());
    Ok(())
}

fn import(a: ImportArgs) -> Result<()> {
    let m = janus_evals::score::import_official(&a.results, &a.run, a.model_name.as_deref(), a.force)?;
    print!("{}", janus_evals::score::report(&m));
    eprintln!("wrote {} and {}", a.run.join("results.jsonl").display(), a.run.join("scores.json").display());
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Geneval { command: GenevalCommand::Generate(a) } => generate(*a, false),
        Command::Dpg { command: DpgCommand::Generate(a) } => generate(*a, true),
        Command::Compare(a) => compare(a),
        Command::Geneval { command: GenevalCommand::Prompts(s) } => {
            for p in s.prompts()? {
                println!("{}", p.line);
            }
            Ok(())
        }
        Command::Geneval { command: GenevalCommand::Score(a) } => score(*a),
        Command::Geneval { command: GenevalCommand::Import(a) } => import(a),
        Command::Licenses => {
            println!("{}\n\n{}", data::GENEVAL_SOURCE, data::DPG_SOURCE);
            Ok(())
        }
    }
}
