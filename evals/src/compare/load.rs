//! Reading one run folder for the comparison: `run.json` (what made the images), the images
//! per prompt, and the scores (through [`crate::scores`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::data;
use crate::rules::{self, Summary};
use crate::scores::{self, ScoreManifest, ScorerClass};

/// The images of one prompt in a run.
#[derive(Debug, Clone)]
pub struct PromptImages {
    pub prompt: String,
    pub tag: String,
    /// `samples/*.png` in sample order.
    pub files: Vec<PathBuf>,
}

/// A run's scores.
#[derive(Debug, Clone)]
pub struct Scored {
    /// `scores.json`, when there is one.
    pub manifest: Option<ScoreManifest>,
    /// Recomputed from `results.jsonl`.
    pub summary: Summary,
    /// Per image, keyed by (prompt folder, sample file name): correct, reason.
    pub verdicts: HashMap<(String, String), (bool, String)>,
}

impl Scored {
    pub fn detector(&self) -> &str {
        self.manifest.as_ref().map_or("unknown (no scores.json)", |m| m.detector.as_str())
    }
    pub fn classifier(&self) -> &str {
        self.manifest.as_ref().map_or("unknown (no scores.json)", |m| m.classifier.as_str())
    }
    /// The scorer's class from `scores.json` (see [`ScoreManifest::class`]); `None` without a
    /// `scores.json`.
    pub fn class(&self) -> Option<ScorerClass> {
        self.manifest.as_ref().map(ScoreManifest::class)
    }
    /// Scored by the official evaluator, so comparable with published numbers.
    pub fn official(&self) -> bool {
        self.class() == Some(ScorerClass::Official)
    }
    /// Scored with random-weight test checkpoints: the verdicts mean nothing.
    pub fn test_models(&self) -> bool {
        self.class() == Some(ScorerClass::TestModels)
    }
    /// "official scorer" or "GenEval-style".
    pub fn kind(&self) -> &'static str {
        if self.official() {
            "official scorer"
        } else {
            "GenEval-style"
        }
    }
}

/// One run folder, as read.
#[derive(Debug, Clone)]
pub struct Run {
    pub dir: PathBuf,
    pub label: String,
    /// The image generator (scores.json, else run.json's served or requested model).
    pub model: String,
    /// How the images were made (backend, samples, seed, sampling), from run.json.
    pub setup: String,
    /// A tiny random-weight test model (run.json's `image_size` under 64 px): its numbers mean
    /// nothing.
    pub tiny: bool,
    pub scores: Option<Scored>,
    /// By prompt index (the folder name).
    pub images: BTreeMap<usize, PromptImages>,
    pub notes: Vec<String>,
}

impl Run {
    pub fn image_count(&self) -> usize {
        self.images.values().map(|p| p.files.len()).sum()
    }
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The (prompt folder, file name) a result row's `filename` points at, e.g.
/// `/x/run/00012/samples/0003.png` → ("00012", "0003.png").
pub fn image_key(filename: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = filename.split(['/', '\\']).filter(|p| !p.is_empty()).collect();
    let n = parts.len();
    if n >= 3 && parts[n - 2] == "samples" && digits(parts[n - 3]) {
        Some((parts[n - 3].to_string(), parts[n - 1].to_string()))
    } else {
        None
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{}: not JSON", path.display()))
}

/// What `run.json` says made the images: (model, setup).
fn describe_run(m: &Value) -> (Option<String>, String) {
    let s = &m["settings"];
    let b = &s["backend"];
    let served = m["served_model"].as_str().filter(|x| !x.is_empty()).map(String::from);
    let model = served.or_else(|| b["model"].as_str().map(String::from));
    let mut setup = match b["kind"].as_str() {
        Some("in-process") => {
            let mut x = format!(
                "in-process, {}, {}",
                b["device"].as_str().unwrap_or("?").to_lowercase(),
                b["dtype"].as_str().unwrap_or("?").to_lowercase()
            );
            if let Some(q) = b["quant"].as_str().filter(|q| *q != "none") {
                let _ = write!(x, ", {q}");
            }
            if let Some(px) = b["image_size"].as_u64() {
                let _ = write!(x, ", {px} px");
            }
            x
        }
        Some("endpoint") => format!("endpoint {}", b["endpoint"].as_str().unwrap_or("?")),
        Some(k) => k.to_string(),
        None => "unknown backend".to_string(),
    };
    if let Some(n) = s["samples"].as_u64() {
        let _ = write!(setup, "; {n} sample(s)/prompt");
    }
    if let Some(seed) = s["seed"].as_u64() {
        let _ = write!(setup, ", seed {seed}");
    }
    if let Some(sampling) = s["sampling"].as_object() {
        for (k, v) in sampling {
            if k != "note" && !v.is_null() {
                let _ = write!(setup, ", {k} {v}");
            }
        }
    }
    (model, setup)
}

/// Reads one run folder: `run.json`, the images, and the scores (through [`crate::scores`]).
pub fn load_run(dir: &Path) -> Result<Run> {
    if !dir.is_dir() {
        bail!("{}: not a folder", dir.display());
    }
    let label = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| dir.display().to_string());
    let mut notes = Vec::new();

    let manifest_path = dir.join("run.json");
    let manifest = if manifest_path.is_file() { Some(read_json(&manifest_path)?) } else { None };
    if let Some(m) = &manifest {
        let bench = m["benchmark"].as_str().or(m["settings"]["benchmark"].as_str()).unwrap_or("geneval");
        if bench != "geneval" {
            bail!("{}: a {bench} run; compare reads GenEval runs", dir.display());
        }
    }

    let results_path = dir.join(scores::RESULTS_FILE);
    let scores_path = dir.join(scores::MANIFEST_FILE);
    let score_manifest = if scores_path.is_file() { Some(scores::read_manifest(&scores_path)?) } else { None };
    if let Some(s) = &score_manifest {
        if s.benchmark != "geneval" {
            bail!("{}: scored for {:?}; compare reads GenEval scores", scores_path.display(), s.benchmark);
        }
    }
    let scores = if results_path.is_file() {
        let lines = scores::read_results(&results_path)?;
        let rows: Vec<_> = lines.iter().map(|l| l.row()).collect();
        let summary = rules::summarize(&rows);
        let verdicts =
            lines.iter().filter_map(|l| image_key(&l.filename).map(|k| (k, (l.correct, l.reason.clone())))).collect();
        if lines.is_empty() {
            notes.push(format!("{} is empty", scores::RESULTS_FILE));
        }
        Some(Scored { manifest: score_manifest.clone(), summary, verdicts })
    } else {
        if score_manifest.is_some() {
            notes.push(format!("{} without {}: not scored", scores::MANIFEST_FILE, scores::RESULTS_FILE));
        }
        None
    };

    let all_prompts = data::geneval_prompts();
    let mut images = BTreeMap::new();
    let entries = fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let samples = e.path().join("samples");
        if !digits(&name) || !samples.is_dir() {
            continue;
        }
        let Ok(index) = name.parse::<usize>() else { continue };
        let mut files: Vec<(u64, PathBuf)> = fs::read_dir(&samples)
            .with_context(|| format!("reading {}", samples.display()))?
            .flatten()
            .filter_map(|f| {
                let n = f.file_name().to_string_lossy().into_owned();
                let stem = n.strip_suffix(".png")?;
                digits(stem).then(|| (stem.parse().unwrap_or(u64::MAX), f.path()))
            })
            .collect();
        if files.is_empty() {
            continue;
        }
        files.sort();
        let meta =
            fs::read(e.path().join("metadata.jsonl")).ok().and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        let (prompt, tag) = match (&meta, all_prompts.get(index)) {
            (Some(m), _) if m["prompt"].is_string() => {
                (m["prompt"].as_str().unwrap_or("").to_string(), m["tag"].as_str().unwrap_or("").to_string())
            }
            (_, Some(p)) => (p.metadata.prompt.clone(), p.metadata.tag.clone()),
            _ => ("(unknown prompt)".to_string(), String::new()),
        };
        images.insert(index, PromptImages { prompt, tag, files: files.into_iter().map(|f| f.1).collect() });
    }

    if manifest.is_none() && scores.is_none() && images.is_empty() {
        bail!("{}: no run.json, images or {}: not a GenEval run folder", dir.display(), scores::RESULTS_FILE);
    }
    let (run_model, setup) = manifest.as_ref().map_or((None, "no run.json".to_string()), describe_run);
    let model = score_manifest
        .as_ref()
        .map(|s| s.model.clone())
        .filter(|m| !m.is_empty())
        .or(run_model)
        .unwrap_or_else(|| "unknown".to_string());
    let tiny = manifest.as_ref().and_then(|m| m["settings"]["backend"]["image_size"].as_u64()).is_some_and(|s| s < 64);
    Ok(Run { dir: dir.to_path_buf(), label, model, setup, tiny, scores, images, notes })
}
