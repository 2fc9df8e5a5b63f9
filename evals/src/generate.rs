//! `geneval generate`: images for the GenEval prompts, in the folder layout the official
//! evaluator reads (`docs/geneval-rules.md` §1.3):
//!
//! ```text
//! <out>/run.json                  this tool's run manifest (settings, times)
//! <out>/00000/metadata.jsonl      the prompt's JSON object, exactly as the official
//!                                 generator writes it (`json.dump`: the source line, no newline)
//! <out>/00000/samples/0000.png    sample 0, 1, ... (the evaluator takes `\d+\.png`)
//! ...
//! <out>/00552/...
//! ```
//!
//! `dpg generate`: DPG-Bench's layout (`docs/geneval-rules.md` §2.2, TencentQQGYLab/ELLA
//! `dpg_bench/compute_dpg_bench.py`): one `<out>/<item_id>.png` per prompt holding the 4 samples
//! as a 2×2 grid of equal tiles, row-major (sample 0 top left, 1 top right, 2 bottom left,
//! 3 bottom right), each tile at the model's own resolution; with `--samples 1` the image itself.
//!
//! Both share one runner ([`generate_items`]): resumable (a finished prompt is skipped), `run.json`
//! manifest, progress bar, prompts in flight at once. Files are written to a temporary name and
//! renamed, so an interrupted run never leaves a truncated PNG under a final name.
//!
//! Backends: [`InProcess`] (a loaded Janus model) and [`Endpoint`] (any OpenAI-compatible
//! `POST /v1/images/generations`, following OpenAI's Images API reference: `n`, `response_format`,
//! `b64_json` or `url` answers, the `{"error": {"message", "param"}}` envelope). Endpoint quirks
//! handled: servers that accept only `n=1` (DALL·E 3), servers that refuse `response_format`
//! (gpt-image-1), `url` answers; the served model is recorded in `run.json`.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

use crate::data::{DpgPrompt, GenevalPrompt};

/// Something that turns a prompt into `n` PNG files.
pub trait ImageBackend: Sync {
    /// `n` PNG files for `prompt`, sampled from `seed`.
    fn generate(&self, prompt: &str, n: usize, seed: u64) -> Result<Vec<Vec<u8>>>;
    /// What produced the images, for the run manifest (model id or endpoint, settings). It must
    /// not change while a run is resumed.
    fn describe(&self) -> Value;
    /// What the backend learned while serving, recorded in the manifest at the end of a session:
    /// `{"models": [...], "notes": [...]}` (the models that answered; adaptations made).
    fn served(&self) -> Value {
        Value::Null
    }
}

/// The seed of sample `index` of a prompt whose samples are requested in several parts:
/// sample 0 keeps the run seed, the others are spread by a golden-ratio stride so that the runs
/// of nearby seeds (42, 43) do not share samples.
pub fn sample_seed(seed: u64, index: usize) -> u64 {
    seed.wrapping_add((index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// The name of sample `i` inside `samples/` (the GenEval README's 4-digit form; the evaluator
/// accepts any `\d+\.png`).
pub fn sample_name(i: usize) -> String {
    format!("{i:04}.png")
}

/// The bytes the official generator writes to `metadata.jsonl`: `json.dump(metadata, fp)` of
/// the object parsed from the source line. With Python's default separators and ASCII
/// escaping that reproduces the source line (which was itself written by `json.dumps`)
/// byte for byte, with no trailing newline.
pub fn metadata_bytes(p: &GenevalPrompt) -> &'static [u8] {
    p.line.as_bytes()
}

/// Whether a prompt folder is complete for `samples` images.
pub fn folder_done(dir: &Path, p: &GenevalPrompt, samples: usize) -> bool {
    fs::read(dir.join("metadata.jsonl")).is_ok_and(|b| b == metadata_bytes(p))
        && (0..samples).all(|i| dir.join("samples").join(sample_name(i)).is_file())
}

/// Settings of a generation run.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub out: PathBuf,
    pub samples: usize,
    /// Every prompt starts from this seed, as the official generator re-seeds per prompt.
    pub seed: u64,
    /// Prompts in flight at once (1 for in-process generation).
    pub concurrency: usize,
    /// Sampling settings for the manifest (cfg, temperature, ...).
    pub settings: Value,
    /// How the prompts were selected (tags, limit), for the manifest.
    pub selection: Value,
    pub progress: bool,
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunReport {
    pub generated: usize,
    pub skipped: usize,
}

/// Writes through a `.partial` file and a rename, so readers never see half a file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("partial");
    let mut f = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all().ok();
    drop(f);
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// A progress bar with ETA on stderr for `n` units named `what` (hidden unless `show`).
pub(crate) fn progress_bar(n: usize, show: bool, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(n as u64),
        if show { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() },
    )
    .with_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} [{{elapsed_precise}}] {{bar:40}} {{pos}}/{{len}} {what} ({{per_sec}}, eta {{eta}}) {{msg}}"
        ))
        .expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

/// Unix seconds and an RFC 3339 UTC time.
pub(crate) fn now() -> (u64, String) {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    (secs, format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60))
}

/// One thing to generate: a prompt and the files its samples become.
pub trait Item: Sync {
    /// How messages name it (the folder or file name).
    fn name(&self) -> String;
    fn prompt(&self) -> &str;
    /// Whether its files under `out` are complete for `samples` images.
    fn done(&self, out: &Path, samples: usize) -> bool;
    /// Writes its files under `out` from exactly `samples` PNGs.
    fn write(&self, out: &Path, images: &[Vec<u8>]) -> Result<()>;
}

impl Item for GenevalPrompt {
    fn name(&self) -> String {
        self.folder_name()
    }
    fn prompt(&self) -> &str {
        &self.metadata.prompt
    }
    fn done(&self, out: &Path, samples: usize) -> bool {
        folder_done(&out.join(self.folder_name()), self, samples)
    }
    fn write(&self, out: &Path, images: &[Vec<u8>]) -> Result<()> {
        let dir = out.join(self.folder_name());
        let samples_dir = dir.join("samples");
        fs::create_dir_all(&samples_dir).with_context(|| format!("creating {}", samples_dir.display()))?;
        write_atomic(&dir.join("metadata.jsonl"), metadata_bytes(self))?;
        for (i, png) in images.iter().enumerate() {
            write_atomic(&samples_dir.join(sample_name(i)), png)?;
        }
        Ok(())
    }
}

/// The DPG-Bench file of an item: `<item_id>.png`.
pub fn dpg_file_name(p: &DpgPrompt) -> String {
    format!("{}.png", p.item_id)
}

/// Tiles equal-sized images into a `cols`-wide grid, row-major.
pub fn grid(images: &[image::RgbImage], cols: usize) -> Result<image::RgbImage> {
    let first = images.first().ok_or_else(|| anyhow!("no image to tile"))?;
    let (w, h) = first.dimensions();
    if let Some(o) = images.iter().find(|i| i.dimensions() != (w, h)) {
        bail!("the samples differ in size ({w}x{h} and {}x{}); a grid needs equal tiles", o.width(), o.height());
    }
    let cols = cols.max(1);
    let rows = images.len().div_ceil(cols);
    let mut out = image::RgbImage::new(w * cols as u32, h * rows as u32);
    for (i, img) in images.iter().enumerate() {
        image::imageops::replace(&mut out, img, (i % cols) as i64 * w as i64, (i / cols) as i64 * h as i64);
    }
    Ok(out)
}

impl Item for DpgPrompt {
    fn name(&self) -> String {
        dpg_file_name(self)
    }
    fn prompt(&self) -> &str {
        &self.prompt
    }
    fn done(&self, out: &Path, _samples: usize) -> bool {
        out.join(dpg_file_name(self)).is_file()
    }
    fn write(&self, out: &Path, images: &[Vec<u8>]) -> Result<()> {
        if self.item_id.is_empty() || !self.item_id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            bail!("DPG item id {:?} is not a plain file name", self.item_id);
        }
        let png = match images {
            [one] => one.clone(),
            _ => {
                let tiles = images
                    .iter()
                    .map(|b| Ok(image::load_from_memory(b).context("a sample is not a readable image")?.to_rgb8()))
                    .collect::<Result<Vec<_>>>()?;
                janus::image::png_bytes(&grid(&tiles, 2)?)?
            }
        };
        write_atomic(&out.join(dpg_file_name(self)), &png)
    }
}

/// Which benchmark a run is for: its manifest name and layout note.
#[derive(Debug, Clone, Copy)]
pub struct Benchmark {
    pub name: &'static str,
    /// A layout note for the manifest settings (none for GenEval, whose settings predate it).
    layout: Option<&'static str>,
}

pub const GENEVAL: Benchmark = Benchmark { name: "geneval", layout: None };
pub const DPG: Benchmark = Benchmark {
    name: "dpg",
    layout: Some("one <item_id>.png per prompt: its samples as a 2x2 grid of equal tiles, row-major (or the image itself with 1 sample)"),
};

/// The part of the manifest that must not change when a run is resumed.
fn manifest_settings(bench: Benchmark, backend: &dyn ImageBackend, opts: &GenerateOptions) -> Value {
    let mut s = json!({
        "benchmark": bench.name,
        "backend": backend.describe(),
        "samples": opts.samples,
        "seed": opts.seed,
        "seed_policy": "every prompt starts from the same seed, as the official generator re-seeds per prompt",
        "sampling": opts.settings,
    });
    if let Some(l) = bench.layout {
        s["layout"] = json!(l);
    }
    s
}

/// Generates every prompt in `prompts` not already complete under `opts.out` (GenEval layout).
pub fn generate_geneval(
    prompts: &[GenevalPrompt],
    backend: &dyn ImageBackend,
    opts: &GenerateOptions,
) -> Result<RunReport> {
    generate_items(GENEVAL, prompts, backend, opts)
}

/// Generates every DPG-Bench prompt in `prompts` not already under `opts.out` (4 samples as a
/// 2×2 grid, or 1 sample as it is).
pub fn generate_dpg(prompts: &[DpgPrompt], backend: &dyn ImageBackend, opts: &GenerateOptions) -> Result<RunReport> {
    if opts.samples != 4 && opts.samples != 1 {
        bail!("DPG-Bench takes 4 samples per prompt (a 2x2 grid) or 1; --samples {} is neither", opts.samples);
    }
    generate_items(DPG, prompts, backend, opts)
}

/// Records what the backend learned (`served`) in the manifest: `served_model` (one name, or
/// several joined by ", "), `served_models` and `served_notes`, merged with earlier sessions'.
fn record_served(manifest: &mut Value, served: &Value) {
    let merge = |manifest: &mut Value, key: &str, new: &Value| {
        let mut all: BTreeSet<String> =
            manifest[key].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(String::from)).collect();
        all.extend(new.as_array().into_iter().flatten().filter_map(|v| v.as_str().map(String::from)));
        if !all.is_empty() {
            manifest[key] = json!(all);
        }
    };
    merge(manifest, "served_models", &served["models"]);
    merge(manifest, "served_notes", &served["notes"]);
    if let Some(models) = manifest["served_models"].as_array() {
        let names: Vec<&str> = models.iter().filter_map(Value::as_str).collect();
        manifest["served_model"] = json!(names.join(", "));
    }
}

/// The shared runner: manifest, resume, progress, concurrency, atomic writes.
pub fn generate_items<I: Item>(
    bench: Benchmark,
    items: &[I],
    backend: &dyn ImageBackend,
    opts: &GenerateOptions,
) -> Result<RunReport> {
    if opts.samples == 0 {
        bail!("--samples must be at least 1");
    }
    fs::create_dir_all(&opts.out).with_context(|| format!("creating {}", opts.out.display()))?;
    let manifest_path = opts.out.join("run.json");
    let settings = manifest_settings(bench, backend, opts);
    let mut manifest = match fs::read(&manifest_path) {
        Ok(bytes) => {
            let m: Value =
                serde_json::from_slice(&bytes).with_context(|| format!("reading {}", manifest_path.display()))?;
            if m.get("settings") != Some(&settings) {
                bail!(
                    "{} was made with other settings:\n  there: {}\n  now:   {}\nuse another --out, or the same settings to resume",
                    manifest_path.display(),
                    m.get("settings").unwrap_or(&Value::Null),
                    settings
                );
            }
            m
        }
        Err(_) => {
            let (unix, iso) = now();
            json!({
                "tool": "janus-eval",
                "version": env!("CARGO_PKG_VERSION"),
                "benchmark": bench.name,
                "settings": settings,
                "started": iso,
                "started_unix": unix,
                "finished": null,
                "sessions": [],
            })
        }
    };
    let (unix, iso) = now();
    manifest["sessions"].as_array_mut().ok_or_else(|| anyhow!("run.json: sessions is not a list"))?.push(json!({
        "started": iso, "started_unix": unix, "version": env!("CARGO_PKG_VERSION"), "selection": opts.selection,
    }));
    manifest["finished"] = Value::Null;
    write_atomic(&manifest_path, &serde_json::to_vec_pretty(&manifest)?)?;

    let todo: Vec<&I> = items.iter().filter(|p| !p.done(&opts.out, opts.samples)).collect();
    let skipped = items.len() - todo.len();
    if skipped > 0 && opts.progress {
        eprintln!("{skipped} of {} prompt(s) already complete, skipped", items.len());
    }
    let bar = progress_bar(todo.len() * opts.samples, opts.progress, "images");

    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let generated = AtomicUsize::new(0);
    let worker = || {
        while !failed.load(Ordering::Relaxed) {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(p) = todo.get(i) else { break };
            match generate_one(*p, backend, opts) {
                Ok(()) => {
                    generated.fetch_add(1, Ordering::Relaxed);
                    bar.inc(opts.samples as u64);
                }
                Err(e) => {
                    failed.store(true, Ordering::Relaxed);
                    let mut slot = first_error.lock().unwrap_or_else(|e| e.into_inner());
                    slot.get_or_insert(e.context(format!("prompt {} ({:?})", p.name(), p.prompt())));
                }
            }
        }
    };
    std::thread::scope(|s| {
        for _ in 1..opts.concurrency.max(1).min(todo.len().max(1)) {
            s.spawn(worker);
        }
        worker();
    });
    bar.finish_and_clear();
    record_served(&mut manifest, &backend.served());
    if let Some(e) = first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        write_atomic(&manifest_path, &serde_json::to_vec_pretty(&manifest)?).ok();
        return Err(e);
    }
    let generated = generated.into_inner();
    let (unix, iso) = now();
    if let Some(last) = manifest["sessions"].as_array_mut().and_then(|s| s.last_mut()) {
        last["finished"] = json!(iso);
        last["generated"] = json!(generated);
        last["skipped"] = json!(skipped);
    }
    manifest["finished"] = json!(iso);
    manifest["finished_unix"] = json!(unix);
    write_atomic(&manifest_path, &serde_json::to_vec_pretty(&manifest)?)?;
    Ok(RunReport { generated, skipped })
}

fn generate_one<I: Item>(p: &I, backend: &dyn ImageBackend, opts: &GenerateOptions) -> Result<()> {
    let images = backend.generate(p.prompt(), opts.samples, opts.seed)?;
    if images.len() != opts.samples {
        bail!("the backend returned {} image(s), {} asked", images.len(), opts.samples);
    }
    p.write(&opts.out, &images)
}

// ------------------------------------------------------------------ backends

/// In-process generation on a loaded Janus model (one prompt at a time; its samples form one
/// CFG batch).
pub struct InProcess {
    model: Mutex<janus::Janus>,
    model_id: String,
    params: janus::SamplingParams,
    decode_chunk: usize,
}

impl InProcess {
    pub fn open(
        model: &str,
        device: &str,
        dtype: Option<&str>,
        quant: janus::Quant,
        params: janus::SamplingParams,
        decode_chunk: usize,
    ) -> Result<Self> {
        params.validate()?;
        let m = janus::Janus::open_parts(model, device, dtype, quant, janus::Parts::Generation)
            .with_context(|| format!("loading {model}"))?;
        Ok(Self { model: Mutex::new(m), model_id: model.to_string(), params, decode_chunk: decode_chunk.max(1) })
    }
}

impl ImageBackend for InProcess {
    fn generate(&self, prompt: &str, n: usize, seed: u64) -> Result<Vec<Vec<u8>>> {
        let m = self.model.lock().unwrap_or_else(|e| e.into_inner());
        let jobs = m.t2i_jobs(prompt, n, seed, self.params)?;
        let tokens = m.generate_tokens(jobs, |_, _| {})?;
        let images = m.decode_images(&tokens, self.decode_chunk)?;
        images.iter().map(|img| Ok(janus::image::png_bytes(img)?)).collect()
    }

    fn describe(&self) -> Value {
        let m = self.model.lock().unwrap_or_else(|e| e.into_inner());
        json!({
            "kind": "in-process",
            "model": self.model_id,
            "device": format!("{:?}", m.device()),
            "dtype": format!("{:?}", m.dtype()),
            "quant": m.quant().name(),
            "image_size": m.image_size(),
        })
    }
}

/// An OpenAI-compatible `POST /v1/images/generations` endpoint (janus serve, OpenAI, ...).
pub struct Endpoint {
    base: String,
    api_key: Option<String>,
    model: Option<String>,
    cfg: Option<f32>,
    temperature: Option<f32>,
    extensions: bool,
    agent: ureq::Agent,
    retries: u32,
    /// The most images one request asks for (`--endpoint-max-n`); `None`: a prompt's samples at once.
    max_n: Option<usize>,
    /// Whether `response_format: b64_json` is sent at all (`--endpoint-no-response-format`).
    response_format: bool,
    /// Learned: the server answered 400 about `n`, so one image per request from now on.
    learned_single: AtomicBool,
    /// Learned: the server refused `response_format`, so it is no longer sent.
    learned_no_response_format: AtomicBool,
    /// The models that answered (the response's `model`, else the requested one).
    served_models: Mutex<BTreeSet<String>>,
}

/// Why a request failed.
enum Failure {
    /// A 4xx about `n` (the server takes fewer images per request).
    N(String),
    /// A 4xx about `response_format` (the server refuses the field).
    ResponseFormat(String),
    /// Anything else; `true` when worth retrying (429, 5xx, transport).
    Other(bool, String),
}

/// The `error.message` and `error.param` of an OpenAI error envelope (also accepts a plain
/// `{"message"}` or `{"error": "text"}`).
fn error_fields(text: &str) -> (Option<String>, Option<String>) {
    let Ok(v) = serde_json::from_str::<Value>(text) else { return (None, None) };
    let e = if v["error"].is_null() { &v } else { &v["error"] };
    let message = e["message"].as_str().or(e.as_str()).or(v["detail"].as_str()).map(String::from);
    (message, e["param"].as_str().map(String::from))
}

/// Whether `text` names the parameter `word` as a whole token (`'n'`, `` `n` ``, `n must`, ...).
fn mentions(text: &str, word: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).any(|t| t == word)
}

/// One line: whitespace collapsed, at most `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let s = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > max {
        format!("{}…", s.chars().take(max).collect::<String>())
    } else {
        s
    }
}

impl Endpoint {
    /// `base` is the server root (`http://host:port`; a trailing `/v1` is accepted). Without
    /// `extensions` only OpenAI's own fields are sent (no seed, guidance_scale, temperature).
    pub fn new(
        base: &str,
        api_key: Option<String>,
        model: Option<String>,
        cfg: Option<f32>,
        temperature: Option<f32>,
        extensions: bool,
    ) -> Self {
        let base = base.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base).to_string();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(900)))
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            base,
            api_key,
            model,
            cfg,
            temperature,
            extensions,
            agent,
            retries: 3,
            max_n: None,
            response_format: true,
            learned_single: AtomicBool::new(false),
            learned_no_response_format: AtomicBool::new(false),
            served_models: Mutex::new(BTreeSet::new()),
        }
    }

    /// At most `n` images per request (DALL·E 3 takes 1): a prompt's samples are split into
    /// several requests, sample `i` of a prompt seeded with [`sample_seed`]`(seed, i)`.
    pub fn with_max_n(mut self, n: Option<usize>) -> Self {
        self.max_n = n.map(|n| n.max(1));
        self
    }

    /// Whether to send `response_format: b64_json` (gpt-image-1 refuses the field and always
    /// answers with `b64_json`).
    pub fn with_response_format(mut self, send: bool) -> Self {
        self.response_format = send;
        self
    }

    /// Retries of a request answered 429, 5xx or not at all (default 3, backing off 2, 4, 8 s).
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    pub fn url(&self) -> String {
        format!("{}/v1/images/generations", self.base)
    }

    fn sends_response_format(&self) -> bool {
        self.response_format && !self.learned_no_response_format.load(Ordering::Relaxed)
    }

    /// The most images the next request may ask for.
    fn per_request(&self) -> usize {
        if self.learned_single.load(Ordering::Relaxed) {
            1
        } else {
            self.max_n.unwrap_or(usize::MAX)
        }
    }

    /// The request body for `n` images of a prompt.
    pub fn body(&self, prompt: &str, n: usize, seed: u64) -> Value {
        let mut b = json!({ "prompt": prompt, "n": n });
        if self.sends_response_format() {
            b["response_format"] = json!("b64_json");
        }
        if let Some(m) = &self.model {
            b["model"] = json!(m);
        }
        if self.extensions {
            b["seed"] = json!(seed);
            if let Some(c) = self.cfg {
                b["guidance_scale"] = json!(c);
            }
            if let Some(t) = self.temperature {
                b["temperature"] = json!(t);
            }
        }
        b
    }

    fn post_once(&self, body: &str) -> std::result::Result<String, Failure> {
        let mut req = self.agent.post(self.url()).header("content-type", "application/json");
        if let Some(k) = &self.api_key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        let mut resp = req.send(body).map_err(|e| Failure::Other(true, format!("{}: {e}", self.url())))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(512 << 20)
            .read_to_string()
            .map_err(|e| Failure::Other(true, format!("{}: reading the answer: {e}", self.url())))?;
        if (200..300).contains(&status) {
            return Ok(text);
        }
        let (message, param) = error_fields(&text);
        let msg = format!("{} answered {status}: {}", self.url(), one_line(message.as_deref().unwrap_or(&text), 300));
        if (400..500).contains(&status) && status != 429 {
            let about =
                |word: &str| param.as_deref() == Some(word) || message.as_deref().is_some_and(|m| mentions(m, word));
            if about("response_format") {
                return Err(Failure::ResponseFormat(msg));
            }
            if about("n") {
                return Err(Failure::N(msg));
            }
        }
        Err(Failure::Other(status == 429 || status >= 500, msg))
    }

    /// One request for `n` images, retried on 429/5xx/transport errors.
    fn request(&self, prompt: &str, n: usize, seed: u64) -> std::result::Result<Vec<Vec<u8>>, Failure> {
        let body = self.body(prompt, n, seed).to_string();
        let mut attempt = 0;
        let text = loop {
            match self.post_once(&body) {
                Ok(t) => break t,
                Err(Failure::Other(true, msg)) if attempt < self.retries => {
                    attempt += 1;
                    eprintln!("{msg}; retrying ({attempt}/{})", self.retries);
                    std::thread::sleep(Duration::from_secs(2u64.pow(attempt)));
                }
                Err(f) => return Err(f),
            }
        };
        let fatal = |e: anyhow::Error| Failure::Other(false, format!("{}: {e:#}", self.url()));
        let v: Value = serde_json::from_str(&text).map_err(|_| fatal(anyhow!("the answer is not JSON")))?;
        let data = v["data"].as_array().ok_or_else(|| fatal(anyhow!("the answer has no `data` list")))?;
        let served = v["model"].as_str().map(String::from).or_else(|| self.model.clone());
        if let Some(m) = served {
            self.served_models.lock().unwrap_or_else(|e| e.into_inner()).insert(m);
        }
        data.iter().map(|d| self.image(d).map_err(fatal)).collect()
    }

    /// The PNG bytes of one `data` entry: `b64_json`, or `url` downloaded (`data:` URLs decoded).
    fn image(&self, d: &Value) -> Result<Vec<u8>> {
        if let Some(b64) = d["b64_json"].as_str() {
            return to_png(base64::engine::general_purpose::STANDARD.decode(b64).context("bad base64 in `b64_json`")?);
        }
        let url = d["url"].as_str().ok_or_else(|| anyhow!("an image with neither `b64_json` nor `url`"))?;
        if let Some(rest) = url.strip_prefix("data:") {
            let (_, b64) = rest.split_once(";base64,").ok_or_else(|| anyhow!("a `data:` url that is not base64"))?;
            return to_png(
                base64::engine::general_purpose::STANDARD.decode(b64).context("bad base64 in a `data:` url")?,
            );
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!("an image url that is neither http(s) nor data: {}", one_line(url, 100));
        }
        let short = one_line(url.split('?').next().unwrap_or(url), 100);
        let mut resp = self.agent.get(url).call().map_err(|e| anyhow!("downloading {short}: {e}"))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            bail!("downloading {short}: answered {status}");
        }
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_vec()
            .map_err(|e| anyhow!("downloading {short}: {e}"))?;
        to_png(bytes)
    }
}

/// PNG bytes as they are, anything else the image crate reads converted to PNG.
fn to_png(bytes: Vec<u8>) -> Result<Vec<u8>> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Ok(bytes);
    }
    let img = image::load_from_memory(&bytes).context("the endpoint returned an image that cannot be decoded")?;
    Ok(janus::image::png_bytes(&img.to_rgb8())?)
}

impl ImageBackend for Endpoint {
    /// `n` images, in requests of at most [`Endpoint::with_max_n`] images; a 400 about `n` turns
    /// to one image per request, a 400 about `response_format` drops the field, for this prompt
    /// and the rest of the run.
    fn generate(&self, prompt: &str, n: usize, seed: u64) -> Result<Vec<Vec<u8>>> {
        let mut images = Vec::with_capacity(n);
        while images.len() < n {
            let i = images.len();
            let k = (n - i).min(self.per_request());
            match self.request(prompt, k, sample_seed(seed, i)) {
                Ok(got) if got.len() == k => images.extend(got),
                Ok(got) => bail!("{} returned {} image(s) for n={k}", self.url(), got.len()),
                Err(Failure::N(msg)) if k > 1 => {
                    if !self.learned_single.swap(true, Ordering::Relaxed) {
                        eprintln!("{msg}; asking one image per request from now on");
                    }
                }
                Err(Failure::ResponseFormat(msg)) if self.sends_response_format() => {
                    if !self.learned_no_response_format.swap(true, Ordering::Relaxed) {
                        eprintln!("{msg}; no longer sending response_format");
                    }
                }
                Err(Failure::N(msg) | Failure::ResponseFormat(msg) | Failure::Other(_, msg)) => bail!(msg),
            }
        }
        Ok(images)
    }

    fn describe(&self) -> Value {
        json!({
            "kind": "endpoint",
            "endpoint": self.url(),
            "model": self.model,
            "extensions": self.extensions,
            "guidance_scale": self.cfg,
            "temperature": self.temperature,
            "max_n": self.max_n,
            "response_format": if self.response_format { "b64_json" } else { "omitted" },
            "seed_policy": "a prompt split into several requests seeds the request starting at sample i with seed + i * 0x9E3779B97F4A7C15 (wrapping; sample 0 keeps the seed)",
        })
    }

    fn served(&self) -> Value {
        let mut notes = Vec::new();
        if self.learned_single.load(Ordering::Relaxed) {
            notes.push("the server refused n > 1: one image per request");
        }
        if self.learned_no_response_format.load(Ordering::Relaxed) {
            notes.push("the server refused response_format: not sent");
        }
        let models = self.served_models.lock().unwrap_or_else(|e| e.into_inner()).clone();
        json!({ "models": models, "notes": notes })
    }
}
