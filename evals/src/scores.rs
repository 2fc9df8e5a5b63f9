//! The files a scored GenEval run leaves beside its images, shared by `geneval score`,
//! `geneval import` and `compare`:
//!
//! * `<run>/results.jsonl`: one [`ResultLine`] per image, in the official evaluator's row shape
//!   (djghosh13/geneval `evaluation/evaluate_images.py`), so its `summary_scores.py` reads ours
//!   and we read its.
//! * `<run>/scores.json`: a [`ScoreManifest`] naming who scored the run (detector and colour
//!   classifier, and their [`ScorerClass`]) and the summary. The summary is always recomputed from `results.jsonl` with
//!   [`crate::rules::summarize`]; the manifest's copy is for people reading the file.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::generate::write_atomic;
use crate::rules::{ResultRow, Summary};

pub const RESULTS_FILE: &str = "results.jsonl";
pub const MANIFEST_FILE: &str = "scores.json";

/// One row of `results.jsonl`, as the official evaluator writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultLine {
    /// The image path the scorer read (the official scorer writes the path it was given).
    pub filename: String,
    pub tag: String,
    pub prompt: String,
    pub correct: bool,
    /// Why the image failed (empty when correct).
    #[serde(default)]
    pub reason: String,
    /// The prompt's metadata as a JSON string; the summary groups prompts by it.
    pub metadata: String,
    /// The kept detections per class (a JSON string in the official rows).
    #[serde(default)]
    pub details: Value,
}

impl ResultLine {
    pub fn row(&self) -> ResultRow {
        ResultRow { tag: self.tag.clone(), metadata: self.metadata.clone(), correct: self.correct }
    }
}

/// What kind of scorer produced a run's numbers; `compare` flags runs by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScorerClass {
    /// The official GenEval evaluator (Mask2Former + CLIP ViT-L/14): comparable with published
    /// GenEval numbers.
    Official,
    /// janus-eval's GenEval-style scorer with the published DETR and CLIP checkpoints: not
    /// comparable with published numbers.
    GenevalStyle,
    /// Random-weight test checkpoints (a detector or classifier narrower than the published
    /// model): the verdicts mean nothing.
    TestModels,
}

/// `scores.json`: who produced the numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreManifest {
    /// "geneval".
    pub benchmark: String,
    /// "janus-eval <version>" or "official GenEval evaluator (imported)".
    pub scorer: String,
    /// The image generator, from the run's `run.json` when there is one, else as given.
    pub model: String,
    /// E.g. "DETR ResNet-50 (facebook/detr-resnet-50)" or "Mask2Former Swin-S (mmdet)".
    pub detector: String,
    /// E.g. "CLIP ViT-L/14 (openai/clip-vit-large-patch14)".
    pub classifier: String,
    /// What kind of scorer this is. Absent from files written before the field existed: see
    /// [`ScoreManifest::class`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scorer_class: Option<ScorerClass>,
    /// Rule options and anything else that changes the numbers.
    #[serde(default)]
    pub options: Value,
    /// RFC 3339 UTC.
    pub created: String,
    pub summary: Summary,
}

/// `scorer` of an imported manifest.
pub const IMPORTED_SCORER: &str = "official GenEval evaluator (imported)";

impl ScoreManifest {
    /// The scorer's class: `scorer_class`, or for older files without it, official when the
    /// scores were imported from the official evaluator (`scorer` is
    /// [`IMPORTED_SCORER`]), else GenEval-style.
    pub fn class(&self) -> ScorerClass {
        self.scorer_class.unwrap_or(if self.scorer == IMPORTED_SCORER {
            ScorerClass::Official
        } else {
            ScorerClass::GenevalStyle
        })
    }
}

/// Reads `results.jsonl` (blank lines skipped; errors name the line).
pub fn read_results(path: &Path) -> Result<Vec<ResultLine>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{}:{}: not a result row", path.display(), i + 1))
        })
        .collect()
}

/// Writes `results.jsonl`, one compact JSON object per line.
pub fn write_results(path: &Path, rows: &[ResultLine]) -> Result<()> {
    let mut bytes = Vec::new();
    for r in rows {
        serde_json::to_writer(&mut bytes, r)?;
        bytes.push(b'\n');
    }
    write_atomic(path, &bytes)
}

pub fn read_manifest(path: &Path) -> Result<ScoreManifest> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{}: not a scores.json", path.display()))
}

pub fn write_manifest(path: &Path, m: &ScoreManifest) -> Result<()> {
    write_atomic(path, &serde_json::to_vec_pretty(m)?)
}
