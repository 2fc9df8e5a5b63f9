//! The resumable runner shared by both layouts: the `run.json` manifest (settings checked on
//! resume, one session per process with its shard and traffic, served models; read and written
//! under a file lock so shards can share a folder), skipping finished prompts, shards, progress,
//! prompts in flight at once.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use super::backend::ImageBackend;
use super::layout::Item;
use super::shard::Shard;
use super::util::{now, progress_bar, write_atomic};
use crate::data::{DpgPrompt, GenevalPrompt};

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
    /// Only this share of the prompts (`--shard I/N`); `None`: all of them.
    pub shard: Option<Shard>,
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunReport {
    pub generated: usize,
    pub skipped: usize,
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

/// Reads, changes and writes `<out>/run.json` while holding an exclusive lock on
/// `<out>/.run.json.lock` (hidden; left in place), so that shards running at once in one folder (a shared volume) never
/// lose each other's sessions. `f` gets `None` when there is no manifest yet.
fn update_manifest<T>(out: &Path, f: impl FnOnce(Option<Value>) -> Result<(Value, T)>) -> Result<T> {
    let lock_path = out.join(".run.json.lock");
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    lock.lock().with_context(|| format!("locking {}", lock_path.display()))?;
    let path = out.join("run.json");
    let current = match fs::read(&path) {
        Ok(bytes) => Some(serde_json::from_slice(&bytes).with_context(|| format!("reading {}", path.display()))?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let (manifest, result) = f(current)?;
    write_atomic(&path, &serde_json::to_vec_pretty(&manifest)?)?;
    drop(lock); // unlocks
    Ok(result)
}

/// This machine's name (a pod's name on Kubernetes), for telling sessions apart.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string()))
        .unwrap_or_else(|| "unknown".into())
}

/// The shared runner: manifest, resume, shards, progress, concurrency, atomic writes.
///
/// With `opts.shard`, only the shard's share of `items` is generated; `items` is still the whole
/// selection, so the run is marked finished (`finished` in run.json) once every item of it is
/// complete, whichever shard made it.
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
    let (unix, iso) = now();
    // Unique among the sessions of one folder: host, process, and a count within the process.
    static SESSIONS: AtomicUsize = AtomicUsize::new(0);
    let session_id =
        format!("{}-{}-{}-{}", host_name(), std::process::id(), unix, SESSIONS.fetch_add(1, Ordering::Relaxed));
    let mine: Vec<&I> =
        items.iter().enumerate().filter(|(p, _)| opts.shard.is_none_or(|s| s.takes(*p))).map(|(_, i)| i).collect();
    let mut session = json!({
        "id": session_id, "host": host_name(),
        "started": iso, "started_unix": unix, "version": env!("CARGO_PKG_VERSION"), "selection": opts.selection,
    });
    if let Some(s) = opts.shard {
        session["shard"] = json!({ "index": s.index, "count": s.count, "prompts": mine.len() });
    }
    update_manifest(&opts.out, |current| {
        let mut m = match current {
            Some(m) => {
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
            None => json!({
                "tool": "janus-eval",
                "version": env!("CARGO_PKG_VERSION"),
                "benchmark": bench.name,
                "settings": settings,
                "started": iso,
                "started_unix": unix,
                "finished": null,
                "sessions": [],
            }),
        };
        m["sessions"].as_array_mut().ok_or_else(|| anyhow!("run.json: sessions is not a list"))?.push(session);
        m["finished"] = Value::Null;
        Ok((m, ()))
    })?;

    let todo: Vec<&I> = mine.iter().copied().filter(|p| !p.done(&opts.out, opts.samples)).collect();
    let skipped = mine.len() - todo.len();
    if skipped > 0 && opts.progress {
        eprintln!("{skipped} of {} prompt(s) already complete, skipped", mine.len());
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
    let generated = generated.into_inner();
    let error = first_error.into_inner().unwrap_or_else(|e| e.into_inner());
    let served = backend.served();
    let traffic = backend.traffic();
    // Complete when every selected item is, whichever shard (or session) made it.
    let complete = error.is_none() && items.iter().all(|p| p.done(&opts.out, opts.samples));
    let written = update_manifest(&opts.out, |current| {
        let mut m = current.ok_or_else(|| anyhow!("{} disappeared during the run", manifest_path.display()))?;
        record_served(&mut m, &served);
        let (unix, iso) = now();
        if let Some(s) = m["sessions"].as_array_mut().and_then(|s| s.iter_mut().rev().find(|s| s["id"] == session_id)) {
            s["generated"] = json!(generated);
            s["skipped"] = json!(skipped);
            if !traffic.is_null() {
                s["traffic"] = traffic.clone();
            }
            if error.is_none() {
                s["finished"] = json!(iso);
            } else {
                s["failed"] = json!(iso);
            }
        }
        if complete {
            m["finished"] = json!(iso);
            m["finished_unix"] = json!(unix);
        }
        Ok((m, ()))
    });
    if let Some(e) = error {
        return Err(e);
    }
    written?;
    Ok(RunReport { generated, skipped })
}

fn generate_one<I: Item>(p: &I, backend: &dyn ImageBackend, opts: &GenerateOptions) -> Result<()> {
    let images = backend.generate(p.prompt(), opts.samples, opts.seed)?;
    if images.len() != opts.samples {
        bail!("the backend returned {} image(s), {} asked", images.len(), opts.samples);
    }
    p.write(&opts.out, &images)
}
