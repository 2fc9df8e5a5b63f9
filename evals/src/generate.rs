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
//! Resumable: a prompt folder whose metadata and samples are all present is skipped. Samples
//! are written to a temporary name and renamed, so an interrupted run never leaves a truncated
//! PNG under a final name.

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

use crate::data::GenevalPrompt;

/// Something that turns a prompt into `n` PNG files.
pub trait ImageBackend: Sync {
    /// `n` PNG files for `prompt`, sampled from `seed`.
    fn generate(&self, prompt: &str, n: usize, seed: u64) -> Result<Vec<Vec<u8>>>;
    /// What produced the images, for the run manifest (model id or endpoint, settings).
    fn describe(&self) -> Value;
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

/// Unix seconds and an RFC 3339 UTC time.
fn now() -> (u64, String) {
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

/// The part of the manifest that must not change when a run is resumed.
fn manifest_settings(backend: &dyn ImageBackend, opts: &GenerateOptions) -> Value {
    json!({
        "benchmark": "geneval",
        "backend": backend.describe(),
        "samples": opts.samples,
        "seed": opts.seed,
        "seed_policy": "every prompt starts from the same seed, as the official generator re-seeds per prompt",
        "sampling": opts.settings,
    })
}

/// Generates every prompt in `prompts` not already complete under `opts.out`.
pub fn generate_geneval(
    prompts: &[GenevalPrompt],
    backend: &dyn ImageBackend,
    opts: &GenerateOptions,
) -> Result<RunReport> {
    if opts.samples == 0 {
        bail!("--samples must be at least 1");
    }
    fs::create_dir_all(&opts.out).with_context(|| format!("creating {}", opts.out.display()))?;
    let manifest_path = opts.out.join("run.json");
    let settings = manifest_settings(backend, opts);
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

    let todo: Vec<&GenevalPrompt> =
        prompts.iter().filter(|p| !folder_done(&opts.out.join(p.folder_name()), p, opts.samples)).collect();
    let skipped = prompts.len() - todo.len();
    if skipped > 0 && opts.progress {
        eprintln!("{skipped} of {} prompt(s) already complete, skipped", prompts.len());
    }
    let bar = ProgressBar::with_draw_target(
        Some((todo.len() * opts.samples) as u64),
        if opts.progress { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() },
    )
    .with_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} images ({per_sec}, eta {eta}) {msg}",
        )
        .expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(250));

    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let generated = AtomicUsize::new(0);
    let worker = || {
        while !failed.load(Ordering::Relaxed) {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(p) = todo.get(i) else { break };
            match generate_one(p, backend, opts) {
                Ok(()) => {
                    generated.fetch_add(1, Ordering::Relaxed);
                    bar.inc(opts.samples as u64);
                }
                Err(e) => {
                    failed.store(true, Ordering::Relaxed);
                    let mut slot = first_error.lock().unwrap_or_else(|e| e.into_inner());
                    slot.get_or_insert(e.context(format!("prompt {} ({:?})", p.folder_name(), p.metadata.prompt)));
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
    if let Some(e) = first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
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

fn generate_one(p: &GenevalPrompt, backend: &dyn ImageBackend, opts: &GenerateOptions) -> Result<()> {
    let dir = opts.out.join(p.folder_name());
    let samples_dir = dir.join("samples");
    fs::create_dir_all(&samples_dir).with_context(|| format!("creating {}", samples_dir.display()))?;
    write_atomic(&dir.join("metadata.jsonl"), metadata_bytes(p))?;
    let images = backend.generate(&p.metadata.prompt, opts.samples, opts.seed)?;
    if images.len() != opts.samples {
        bail!("the backend returned {} image(s), {} asked", images.len(), opts.samples);
    }
    for (i, png) in images.iter().enumerate() {
        write_atomic(&samples_dir.join(sample_name(i)), png)?;
    }
    Ok(())
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
        params: janus::SamplingParams,
        decode_chunk: usize,
    ) -> Result<Self> {
        params.validate()?;
        let m = janus::Janus::open(model, device, dtype).with_context(|| format!("loading {model}"))?;
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
        Self { base, api_key, model, cfg, temperature, extensions, agent, retries: 3 }
    }

    pub fn url(&self) -> String {
        format!("{}/v1/images/generations", self.base)
    }

    /// The request body for one prompt.
    pub fn body(&self, prompt: &str, n: usize, seed: u64) -> Value {
        let mut b = json!({ "prompt": prompt, "n": n, "response_format": "b64_json" });
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

    fn post_once(&self, body: &str) -> std::result::Result<String, (bool, String)> {
        let mut req = self.agent.post(self.url()).header("content-type", "application/json");
        if let Some(k) = &self.api_key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        let mut resp = req.send(body).map_err(|e| (true, format!("{}: {e}", self.url())))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(512 << 20)
            .read_to_string()
            .map_err(|e| (true, format!("reading the response: {e}")))?;
        if !(200..300).contains(&status) {
            let retry = status == 429 || status >= 500;
            let short: String = text.chars().take(500).collect();
            return Err((retry, format!("{} answered {status}: {short}", self.url())));
        }
        Ok(text)
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
    fn generate(&self, prompt: &str, n: usize, seed: u64) -> Result<Vec<Vec<u8>>> {
        let body = self.body(prompt, n, seed).to_string();
        let mut attempt = 0;
        let text = loop {
            match self.post_once(&body) {
                Ok(t) => break t,
                Err((retry, msg)) if retry && attempt < self.retries => {
                    attempt += 1;
                    eprintln!("{msg}; retrying ({attempt}/{})", self.retries);
                    std::thread::sleep(Duration::from_secs(2u64.pow(attempt)));
                }
                Err((_, msg)) => bail!(msg),
            }
        };
        let v: Value = serde_json::from_str(&text).context("the endpoint's answer is not JSON")?;
        let data = v["data"].as_array().ok_or_else(|| anyhow!("the endpoint's answer has no `data` list"))?;
        data.iter()
            .map(|d| {
                let b64 = d["b64_json"].as_str().ok_or_else(|| anyhow!("an image without `b64_json`"))?;
                to_png(base64::engine::general_purpose::STANDARD.decode(b64).context("bad base64 in `b64_json`")?)
            })
            .collect()
    }

    fn describe(&self) -> Value {
        json!({
            "kind": "endpoint",
            "endpoint": self.url(),
            "model": self.model,
            "extensions": self.extensions,
            "guidance_scale": self.cfg,
            "temperature": self.temperature,
        })
    }
}
