//! `compare`: several GenEval runs side by side with published numbers, as Markdown and as a
//! self-contained HTML report with a contact sheet.
//!
//! Follows `docs/geneval-rules.md` §1.9 (per-task image accuracy, overall = unweighted mean of the
//! six tasks, recomputed with [`crate::rules::summarize`]) and §3 (published rows, scored by the
//! official Mask2Former + CLIP ViT-L/14 evaluator). A run's scores are read only through
//! [`crate::scores`] (`results.jsonl`, `scores.json`); its images and `run.json` are the layout
//! [`crate::generate`] writes. A run is classed by `scores.json`'s `scorer_class`
//! ([`crate::scores::ScorerClass`]): runs not scored by the official evaluator are labelled
//! "GenEval-style" and kept in a table apart from the published rows, and runs scored with
//! random-weight test checkpoints are flagged; a run whose `run.json` says it made images under
//! 64 px is a tiny test model's.
//!
//! ```text
//! <out>/report.md     the tables (also printed)
//! <out>/report.html   the same plus a contact sheet; no external URL, images inlined as
//!                     data: URIs (thumbnails)
//! ```
//!
//! Files: `load` (a run folder as read), `table` (what both renderers show), `markdown` and
//! `html` (the two renderers), `sheet` (the contact sheet's prompts and thumbnails).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::published;

mod html;
mod load;
mod markdown;
mod sheet;
mod table;

pub use load::{image_key, load_run, PromptImages, Run, Scored};
pub use sheet::{sample_prompts, thumbnail};
pub use table::TASK_HEADERS;

/// Settings of a comparison.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    pub runs: Vec<PathBuf>,
    /// Add the key published rows.
    pub published: bool,
    /// Add every embedded published row (implies `published`).
    pub published_all: bool,
    /// Prompts on the contact sheet.
    pub sample_prompts: usize,
    /// Longest side of a contact-sheet thumbnail, in pixels.
    pub thumb: u32,
}

impl Default for CompareOptions {
    fn default() -> Self {
        Self { runs: Vec::new(), published: false, published_all: false, sample_prompts: 12, thumb: 160 }
    }
}

/// A finished comparison.
#[derive(Debug, Clone)]
pub struct Report {
    pub markdown: String,
    pub html: String,
    /// The prompt indices on the contact sheet.
    pub sampled: Vec<usize>,
}

/// Loads the runs (labels made unique) and renders the report.
pub fn compare(opts: &CompareOptions) -> Result<Report> {
    if opts.runs.is_empty() {
        bail!("give at least one run folder");
    }
    let mut runs = opts.runs.iter().map(|d| load_run(d)).collect::<Result<Vec<_>>>()?;
    let labels: Vec<String> = runs.iter().map(|r| r.label.clone()).collect();
    for r in &mut runs {
        if labels.iter().filter(|l| **l == r.label).count() > 1 {
            r.label = r.dir.display().to_string();
        }
    }
    let published =
        if opts.published || opts.published_all { published::selected(opts.published_all) } else { Vec::new() };
    let sampled = sample_prompts(&runs, opts.sample_prompts);
    let markdown = markdown::markdown(&runs, &published);
    let html = html::html(&runs, &published, &sampled, opts.thumb);
    Ok(Report { markdown, html, sampled })
}

/// Writes `report.md` and `report.html` under `out`.
pub fn write_report(report: &Report, out: &Path) -> Result<()> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    crate::generate::write_atomic(&out.join("report.md"), report.markdown.as_bytes())?;
    crate::generate::write_atomic(&out.join("report.html"), report.html.as_bytes())
}
