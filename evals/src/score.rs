//! `geneval score` and `geneval import`: the files of [`crate::scores`] for a run folder.
//!
//! `score` walks the official layout (`docs/geneval-rules.md` §1.3) as djghosh13/geneval
//! `evaluation/evaluate_images.py` does: every all-digit sub-folder, its `metadata.jsonl` (one
//! JSON object), every `samples/` file whose name matches `\d+\.png` at its start; each image is
//! judged by [`rules::evaluate_image`] with the DETR detector and the CLIP colour classifier, and
//! written as the evaluator writes its rows: `filename` is the path as reached from the run
//! folder given, `metadata` is `json.dumps` of the prompt's metadata (the file's own text, which
//! the official generator wrote with `json.dump`), `details` a JSON *string* of the kept boxes per
//! class in COCO order, `[x1, y1, x2, y2, score]` each. Images are visited in sorted order (the
//! evaluator's `os.listdir` order is arbitrary; the summary does not depend on it).
//!
//! `import` takes an official `results.jsonl`, checks every row, and files it under a run folder
//! with a manifest naming the official models.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use crate::clip::Clip;
use crate::data;
use crate::detector::Detr;
use crate::rules::{self, ColorClassifier, Detection, Detector, Kept, Metadata, RuleOptions, Summary};
use crate::scores::{self, ResultLine, ScoreManifest, ScorerClass, IMPORTED_SCORER, MANIFEST_FILE, RESULTS_FILE};

pub const OFFICIAL_DETECTOR: &str = "Mask2Former Swin-S (mmdet, official evaluator)";
pub const OFFICIAL_CLASSIFIER: &str = "CLIP ViT-L/14 (open_clip openai, official evaluator)";

/// One image of a run, with its prompt.
#[derive(Debug, Clone)]
pub struct RunImage {
    /// The path as the evaluator writes it: `<run as given>/<folder>/samples/<name>`.
    pub filename: String,
    pub path: PathBuf,
    pub metadata: Metadata,
    /// `json.dumps(metadata)`.
    pub metadata_json: String,
}

/// Whether a `samples/` entry is one the evaluator reads (`re.match(r"\d+\.png", name)`).
pub fn is_sample_name(name: &str) -> bool {
    let digits = name.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && name[digits..].starts_with(".png")
}

/// Every image of a run in the official layout, sorted by folder then file name.
pub fn list_run(run: &Path) -> Result<Vec<RunImage>> {
    if !run.is_dir() {
        bail!("{}: no such run folder", run.display());
    }
    let mut folders: Vec<(String, PathBuf)> = fs::read_dir(run)
        .with_context(|| format!("listing {}", run.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            (!name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) && e.path().is_dir())
                .then(|| (name, e.path()))
        })
        .collect();
    folders.sort();
    if folders.is_empty() {
        bail!(
            "{}: no prompt folders (expected 00000/, 00001/, ... each with metadata.jsonl and samples/, \
             as `janus-eval geneval generate` writes them)",
            run.display()
        );
    }
    let mut images = Vec::new();
    for (name, dir) in folders {
        let meta_path = dir.join("metadata.jsonl");
        let text =
            fs::read_to_string(&meta_path).map_err(|e| anyhow!("{}: cannot read it: {e}", meta_path.display()))?;
        let metadata: Metadata = serde_json::from_str(text.trim())
            .map_err(|e| anyhow!("{}: not one GenEval metadata object: {e}", meta_path.display()))?;
        if !rules::TAGS.contains(&metadata.tag.as_str()) {
            bail!("{}: unknown tag {:?}", meta_path.display(), metadata.tag);
        }
        let samples = dir.join("samples");
        let mut names: Vec<String> = fs::read_dir(&samples)
            .map_err(|e| anyhow!("{}: cannot list it: {e}", samples.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| is_sample_name(n))
            .collect();
        names.sort();
        for n in names {
            let filename = format!("{}/{name}/samples/{n}", run.display().to_string().trim_end_matches('/'));
            images.push(RunImage {
                filename,
                path: samples.join(&n),
                metadata: metadata.clone(),
                metadata_json: text.trim().to_string(),
            });
        }
    }
    if images.is_empty() {
        bail!("{}: the prompt folders hold no samples/<digits>.png images", run.display());
    }
    Ok(images)
}

/// The model named by `<run>/run.json` (`janus-eval geneval generate`'s manifest).
pub fn model_from_run_json(run: &Path) -> Result<String> {
    let path = run.join("run.json");
    let bytes = fs::read(&path)
        .map_err(|_| anyhow!("{} is missing: pass --model-name to say which model made the images", path.display()))?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| anyhow!("{}: not JSON: {e}", path.display()))?;
    // `generate` writes the backend under `settings`, and what an endpoint answered as `served_model`.
    let b = &v["settings"]["backend"];
    let s = |k: &str| b[k].as_str().filter(|s| !s.is_empty()).map(str::to_string);
    let served = v["served_model"].as_str().filter(|s| !s.is_empty()).map(str::to_string);
    match b["kind"].as_str() {
        Some("endpoint") => match (served.or_else(|| s("model")), s("endpoint")) {
            (Some(m), Some(e)) => Ok(format!("{m} ({e})")),
            (Some(m), None) => Ok(m),
            (None, Some(e)) => Ok(e),
            _ => bail!("{}: backend names no model; pass --model-name", path.display()),
        },
        _ => s("model").ok_or_else(|| anyhow!("{}: backend names no model; pass --model-name", path.display())),
    }
}

/// The kept boxes per class, as the evaluator's `details` string (COCO order).
pub fn details_json(kept: &Kept, class_names: &[&str]) -> String {
    // Python's `json.dumps` separators, keys in COCO order (a serde_json map would sort them).
    let body: Vec<String> = class_names
        .iter()
        .filter_map(|name| {
            let dets = kept.get(*name)?;
            let rows: Vec<Value> = dets
                .iter()
                .map(|d| {
                    json!([d.bbox[0] as f64, d.bbox[1] as f64, d.bbox[2] as f64, d.bbox[3] as f64, d.score as f64])
                })
                .collect();
            Some(format!("{}: {}", Value::String(name.to_string()), python_list(&Value::Array(rows))))
        })
        .collect();
    format!("{{{}}}", body.join(", "))
}

/// A JSON array as Python's `json.dumps` prints it (", " separators).
fn python_list(v: &Value) -> String {
    match v {
        Value::Array(a) => format!("[{}]", a.iter().map(python_list).collect::<Vec<_>>().join(", ")),
        other => other.to_string(),
    }
}

/// Detections computed beforehand (so detector errors reach the caller).
struct Precomputed(Vec<Detection>, String);

impl Detector for Precomputed {
    fn detect(&self, _img: &image::RgbImage) -> Vec<Detection> {
        self.0.clone()
    }
    fn name(&self) -> String {
        self.1.clone()
    }
}

/// Settings of `geneval score`.
#[derive(Debug, Clone)]
pub struct ScoreOptions {
    pub run: PathBuf,
    /// The image generator's name; from `run.json` when `None`.
    pub model_name: Option<String>,
    pub rules: RuleOptions,
    pub progress: bool,
    /// Overwrite an imported (official) `scores.json` in the run folder.
    pub force: bool,
}

/// Scores every image of a run; writes `results.jsonl` and `scores.json`; returns the manifest.
pub fn score_run(detector: &Detr, clip: &Clip, opts: &ScoreOptions) -> Result<ScoreManifest> {
    let run = &opts.run;
    let model = match &opts.model_name {
        Some(m) => m.clone(),
        None => model_from_run_json(run)?,
    };
    let images = list_run(run)?;
    check_not_imported(run, opts.force)?;
    let names = data::object_names();
    let bar = crate::generate::progress_bar(images.len(), opts.progress, "images scored");
    let mut rows = Vec::with_capacity(images.len());
    for im in &images {
        let img =
            image::open(&im.path).map_err(|e| anyhow!("{}: cannot read the image: {e}", im.path.display()))?.to_rgb8();
        let dets = detector.try_detect(&img).with_context(|| format!("{}: detection failed", im.path.display()))?;
        let pre = Precomputed(dets, detector.name());
        let v = rules::evaluate_image(&img, &im.metadata, &pre, clip, &names, &opts.rules);
        if let Some(e) = clip.take_error() {
            bail!("{}: {e}", im.path.display());
        }
        rows.push(ResultLine {
            filename: im.filename.clone(),
            tag: im.metadata.tag.clone(),
            prompt: im.metadata.prompt.clone(),
            correct: v.correct,
            reason: v.reason,
            metadata: im.metadata_json.clone(),
            details: Value::String(details_json(&v.kept, &names)),
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    let summary = summary_of(&rows);
    let manifest = ScoreManifest {
        benchmark: "geneval".into(),
        scorer: format!("janus-eval {}", env!("CARGO_PKG_VERSION")),
        model,
        detector: detector.name(),
        classifier: clip.name(),
        scorer_class: Some(if detector.is_test_model() || clip.is_test_model() {
            ScorerClass::TestModels
        } else {
            ScorerClass::GenevalStyle
        }),
        options: json!({
            "rules": opts.rules,
            "background": "#999999",
            "crop": true,
            "masks": "none: the detector gives boxes, so colours are judged on box crops",
            "detections": "best class per DETR query (softmax without no-object)",
            "note": "GenEval-style: comparable with published GenEval numbers only for the official detector and CLIP",
        }),
        created: crate::generate::now().1,
        summary,
    };
    scores::write_results(&run.join(RESULTS_FILE), &rows)?;
    scores::write_manifest(&run.join(MANIFEST_FILE), &manifest)?;
    Ok(manifest)
}

fn check_not_imported(run: &Path, force: bool) -> Result<()> {
    let p = run.join(MANIFEST_FILE);
    if !force && p.is_file() {
        if let Ok(m) = scores::read_manifest(&p) {
            if m.scorer == IMPORTED_SCORER {
                bail!(
                    "{} holds imported official scores; score into another folder or pass --force to overwrite them",
                    p.display()
                );
            }
        }
    }
    Ok(())
}

pub fn summary_of(rows: &[ResultLine]) -> Summary {
    rules::summarize(&rows.iter().map(ResultLine::row).collect::<Vec<_>>())
}

/// Checks an official `results.jsonl` and files it under `run` (created) with its manifest.
pub fn import_official(results: &Path, run: &Path, model_name: Option<&str>, force: bool) -> Result<ScoreManifest> {
    let rows = scores::read_results(results)?;
    if rows.is_empty() {
        bail!("{}: no result rows", results.display());
    }
    for (i, r) in rows.iter().enumerate() {
        let at = || format!("{}: row {}", results.display(), i + 1);
        if !rules::TAGS.contains(&r.tag.as_str()) {
            bail!("{}: unknown tag {:?}", at(), r.tag);
        }
        let m: Metadata = serde_json::from_str(&r.metadata)
            .map_err(|e| anyhow!("{}: metadata is not a GenEval metadata object: {e}", at()))?;
        if m.tag != r.tag || m.prompt != r.prompt {
            bail!("{}: tag/prompt differ from the row's metadata", at());
        }
        if let Value::String(s) = &r.details {
            serde_json::from_str::<Value>(s).map_err(|e| anyhow!("{}: details is not a JSON string: {e}", at()))?;
        }
    }
    let model = match model_name {
        Some(m) => m.to_string(),
        None => model_from_run_json(run)?,
    };
    fs::create_dir_all(run).with_context(|| format!("creating {}", run.display()))?;
    let existing = run.join(RESULTS_FILE);
    if existing.exists() && !force {
        bail!(
            "{} exists; import into another folder (so both scores can be compared) or pass --force",
            existing.display()
        );
    }
    let manifest = ScoreManifest {
        benchmark: "geneval".into(),
        scorer: IMPORTED_SCORER.into(),
        model,
        detector: OFFICIAL_DETECTOR.into(),
        classifier: OFFICIAL_CLASSIFIER.into(),
        scorer_class: Some(ScorerClass::Official),
        options: json!({ "source": results.display().to_string() }),
        created: crate::generate::now().1,
        summary: summary_of(&rows),
    };
    scores::write_results(&existing, &rows)?;
    scores::write_manifest(&run.join(MANIFEST_FILE), &manifest)?;
    Ok(manifest)
}

/// The report printed after scoring or importing: who scored what, per task, overall.
pub fn report(m: &ScoreManifest) -> String {
    let mut s = String::new();
    s += &format!("GenEval-style scores ({})\n", m.scorer);
    s += &format!("  model:             {}\n", m.model);
    s += &format!("  detector:          {}\n", m.detector);
    s += &format!("  colour classifier: {}\n", m.classifier);
    s += &format!("\n  {:<14} {:>8} {:>8}\n", "task", "correct", "score");
    for t in &m.summary.tasks {
        s += &format!("  {:<14} {:>8} {:>8.4}\n", t.tag, format!("{}/{}", t.correct, t.images), t.score);
    }
    s += &format!("  {:<14} {:>8} {:>8.4}\n", "overall", "", m.summary.overall);
    s += &format!(
        "\n  {} images, {} prompts; correct images {:.4}, prompts with a correct image {:.4}\n",
        m.summary.images, m.summary.prompts, m.summary.correct_images, m.summary.correct_prompts
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_names_as_the_evaluator_matches_them() {
        assert!(is_sample_name("0000.png"));
        assert!(is_sample_name("00012.png"));
        assert!(is_sample_name("1.png.bak")); // re.match anchors only at the start
        assert!(!is_sample_name("grid.png"));
        assert!(!is_sample_name(".png"));
        assert!(!is_sample_name("0001.jpg"));
    }
}
