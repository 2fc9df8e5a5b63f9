//! `compare`: several GenEval runs side by side with published numbers, as Markdown and as a
//! self-contained HTML report with a contact sheet.
//!
//! Follows `docs/geneval-rules.md` §1.9 (per-task image accuracy, overall = unweighted mean of the
//! six tasks, recomputed with [`crate::rules::summarize`]) and §3 (published rows, scored by the
//! official Mask2Former + CLIP ViT-L/14 evaluator). A run's scores are read only through
//! [`crate::scores`] (`results.jsonl`, `scores.json`); its images and `run.json` are the layout
//! [`crate::generate`] writes. Runs scored with any other detector or colour classifier are
//! labelled "GenEval-style" and kept in a table apart from the published rows.
//!
//! ```text
//! <out>/report.md     the tables (also printed)
//! <out>/report.html   the same plus a contact sheet; no external URL, images inlined as
//!                     data: URIs (thumbnails)
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde_json::Value;

use crate::data;
use crate::published::{self, Published, OFFICIAL_SCORER};
use crate::rules::{self, Summary, TAGS};
use crate::scores::{self, ScoreManifest};

/// Short column names of the six tasks, in [`TAGS`] order.
pub const TASK_HEADERS: [&str; 6] = ["Single", "Two", "Count", "Colors", "Position", "ColorAttr"];

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
    /// Scored by the official detector and CLIP, so comparable with published numbers.
    pub fn official(&self) -> bool {
        let d = self.detector().to_ascii_lowercase();
        let c = self.classifier().to_ascii_lowercase().replace('-', "/");
        d.contains("mask2former") && c.contains("vit/l/14")
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
    /// A tiny random-weight test model: its numbers mean nothing.
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
    let small = manifest.as_ref().and_then(|m| m["settings"]["backend"]["image_size"].as_u64()).is_some_and(|s| s < 64);
    let tiny = small || model.to_ascii_lowercase().contains("tiny");
    Ok(Run { dir: dir.to_path_buf(), label, model, setup, tiny, scores, images, notes })
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
    let markdown = markdown(&runs, &published);
    let html = html(&runs, &published, &sampled, opts.thumb);
    Ok(Report { markdown, html, sampled })
}

/// Writes `report.md` and `report.html` under `out`.
pub fn write_report(report: &Report, out: &Path) -> Result<()> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    crate::generate::write_atomic(&out.join("report.md"), report.markdown.as_bytes())?;
    crate::generate::write_atomic(&out.join("report.html"), report.html.as_bytes())
}

/// `k` prompts spread evenly over those any run has images for.
pub fn sample_prompts(runs: &[Run], k: usize) -> Vec<usize> {
    let all: Vec<usize> =
        runs.iter().flat_map(|r| r.images.keys().copied()).collect::<BTreeSet<_>>().into_iter().collect();
    if all.len() <= k {
        return all;
    }
    (0..k).map(|i| all[i * all.len() / k]).collect()
}

// ------------------------------------------------------------------ the shared content

/// The per-task and overall cells of one summary.
struct ScoreCells {
    tasks: [Option<(f64, usize, usize)>; 6],
    overall: f64,
    /// All six tasks present (otherwise the overall is a partial mean).
    complete: bool,
}

fn score_cells(s: &Summary) -> ScoreCells {
    let mut tasks = [None; 6];
    for (i, tag) in TAGS.iter().enumerate() {
        tasks[i] = s.tasks.iter().find(|t| t.tag == *tag).map(|t| (t.score, t.correct, t.images));
    }
    ScoreCells { tasks, overall: s.overall, complete: tasks.iter().all(Option::is_some) }
}

/// The runs' labels, grouped by a key (in first-seen order).
fn grouped<'a>(runs: &'a [Run], key: impl Fn(&'a Run) -> Option<String>) -> Vec<(String, Vec<&'a str>)> {
    let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
    for r in runs {
        let Some(k) = key(r) else { continue };
        match groups.iter_mut().find(|g| g.0 == k) {
            Some(g) => g.1.push(&r.label),
            None => groups.push((k, vec![&r.label])),
        }
    }
    groups
}

fn warnings(runs: &[Run]) -> Vec<String> {
    let mut w = Vec::new();
    for (model, labels) in grouped(runs, |r| r.tiny.then(|| r.model.clone())) {
        w.push(format!(
            "{}: {model} is a tiny random test model. Its images are noise and its numbers are meaningless; \
             it only shows that the pipeline runs.",
            labels.join(", ")
        ));
    }
    let tiny_scorer = |r: &Run| {
        let s = r.scores.as_ref()?;
        let (d, c) = (s.detector(), s.classifier());
        (d.to_ascii_lowercase().contains("tiny") || c.to_ascii_lowercase().contains("tiny"))
            .then(|| format!("{d}; {c}"))
    };
    for (models, labels) in grouped(runs, tiny_scorer) {
        w.push(format!(
            "{}: scored with tiny random-weight test models ({models}): the verdicts mean nothing.",
            labels.join(", ")
        ));
    }
    let style: Vec<&str> =
        runs.iter().filter(|r| r.scores.as_ref().is_some_and(|s| !s.official())).map(|r| r.label.as_str()).collect();
    if !style.is_empty() {
        w.push(format!(
            "GenEval-style: {} scored with another detector / colour classifier (named below) than the \
             {OFFICIAL_SCORER}. Those numbers are not comparable with published GenEval numbers.",
            style.join(", "),
        ));
    }
    w
}

fn scorer_text(r: &Run) -> String {
    match &r.scores {
        None => "not scored".to_string(),
        Some(s) => match &s.manifest {
            Some(m) => format!("{} ({})", s.kind(), m.scorer),
            None => s.kind().to_string(),
        },
    }
}

fn f2(x: f64) -> String {
    if x.is_nan() {
        "–".to_string()
    } else {
        format!("{x:.2}")
    }
}

// ------------------------------------------------------------------ Markdown

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn markdown(runs: &[Run], published: &[&Published]) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# GenEval comparison\n");
    for w in warnings(runs) {
        let _ = writeln!(o, "> **Warning:** {}\n", md_cell(&w));
    }
    let _ = writeln!(o, "## Runs\n");
    let _ = writeln!(o, "| Run | Model | Made with | Images | Detector | Colour classifier | Scorer |");
    let _ = writeln!(o, "| --- | --- | --- | --- | --- | --- | --- |");
    for r in runs {
        let (det, cls) = r.scores.as_ref().map_or(("–", "–"), |s| (s.detector(), s.classifier()));
        let _ = writeln!(
            o,
            "| {} | {}{} | {} | {} images, {} prompts | {} | {} | {} |",
            md_cell(&r.label),
            md_cell(&r.model),
            if r.tiny { " (tiny random test model)" } else { "" },
            md_cell(&r.setup),
            r.image_count(),
            r.images.len(),
            md_cell(det),
            md_cell(cls),
            md_cell(&scorer_text(r)),
        );
    }
    for r in runs.iter().filter(|r| !r.notes.is_empty()) {
        let _ = writeln!(o, "\n{}: {}", md_cell(&r.label), md_cell(&r.notes.join("; ")));
    }

    let _ = writeln!(o, "\n## Scores of these runs\n");
    let _ = writeln!(o, "Image-level accuracy per task (correct/images); overall = mean of the six tasks.\n");
    let _ = writeln!(o, "| Run | Scorer | {} | Overall |", TASK_HEADERS.join(" | "));
    let _ = writeln!(o, "| --- | --- |{} --- |", " --- |".repeat(6));
    let mut partial = false;
    for r in runs {
        let Some(s) = &r.scores else {
            let _ = writeln!(o, "| {} | not scored |{} – |", md_cell(&r.label), " – |".repeat(6));
            continue;
        };
        let c = score_cells(&s.summary);
        let tasks: Vec<String> =
            c.tasks.iter().map(|t| t.map_or("–".to_string(), |(x, k, n)| format!("{} ({k}/{n})", f2(x)))).collect();
        partial |= !c.complete && !c.overall.is_nan();
        let overall = if c.complete || c.overall.is_nan() { f2(c.overall) } else { format!("{}\\*", f2(c.overall)) };
        let _ = writeln!(o, "| {} | {} | {} | {overall} |", md_cell(&r.label), s.kind(), tasks.join(" | "));
    }
    if partial {
        let _ = writeln!(o, "\n\\* mean over the tasks scored only: not a GenEval overall, which needs all six.");
    }

    if !published.is_empty() {
        let _ = writeln!(o, "\n## Published numbers\n");
        let _ = writeln!(
            o,
            "As published, scored with the {OFFICIAL_SCORER}; DPG = DPG-Bench overall. \
             Comparable only with runs of the same scorer.\n"
        );
        let _ = writeln!(o, "| Model | {} | Overall | DPG | Source |", TASK_HEADERS.join(" | "));
        let _ = writeln!(o, "| --- |{} --- | --- | --- |", " --- |".repeat(6));
        for p in published {
            let tasks: Vec<String> = p.tasks.iter().map(|t| t.map_or("–".to_string(), f2)).collect();
            let mut source = p.source.to_string();
            if !p.note.is_empty() {
                let _ = write!(source, "; {}", p.note);
            }
            let _ = writeln!(
                o,
                "| {}{} (published) | {} | {} | {} | {} |",
                md_cell(p.model),
                if p.rewritten { " †" } else { "" },
                tasks.join(" | "),
                f2(p.overall),
                p.dpg.map_or("–".to_string(), |d| format!("{d:.2}")),
                md_cell(&source),
            );
        }
        if published.iter().any(|p| p.rewritten) {
            let _ = writeln!(o, "\n† evaluated with LLM-rewritten prompts: not comparable with plain GenEval.");
        }
    }
    o
}

// ------------------------------------------------------------------ HTML

/// Escapes text for HTML element content and quoted attributes.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

/// A `data:` URI of a thumbnail of `path` (longest side at most `max`): small images as PNG,
/// larger ones downscaled to JPEG. Returns the URI and whether the image was small (drawn
/// pixelated when enlarged).
pub fn thumbnail(path: &Path, max: u32) -> Result<(String, bool)> {
    let img = image::open(path).with_context(|| format!("reading {}", path.display()))?;
    let small = img.width().max(img.height()) <= max;
    let mut bytes = Vec::new();
    let mime = if small {
        img.to_rgb8().write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)?;
        "image/png"
    } else {
        let t = img.thumbnail(max, max).to_rgb8();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 82).encode_image(&t)?;
        "image/jpeg"
    };
    Ok((format!("data:{mime};base64,{}", base64::engine::general_purpose::STANDARD.encode(&bytes)), small))
}

const CSS: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#1d1d1f;background:#fff}
h1{font-size:22px;margin:0 0 12px}h2{font-size:17px;margin:26px 0 8px}
table{border-collapse:collapse;margin:6px 0}th,td{border:1px solid #d6d6d6;padding:4px 8px;vertical-align:top}
th{background:#f3f3f3;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.warn{background:#fff4e5;border-left:4px solid #e67e00;padding:8px 12px;margin:8px 0}
.tiny{background:#fde8e8;border-left-color:#c62828;font-weight:600}
.muted{color:#666}.small{font-size:12px}
.kind{display:inline-block;padding:0 6px;border-radius:4px;font-size:12px;white-space:nowrap}
.style{background:#fff0c2}.official{background:#d9f2dc}.none{background:#eee}
.pub td:first-child{font-style:italic}
.sheet td.cell{min-width:120px}.sheet td.prompt{max-width:260px}
.thumbs{display:flex;flex-wrap:wrap;gap:6px}
figure{margin:0;position:relative}figure img{width:var(--t);height:var(--t);object-fit:contain;display:block;background:#eee;border-radius:3px}
img.px{image-rendering:pixelated}
.badge{position:absolute;top:3px;right:3px;border-radius:10px;padding:0 6px;font-size:12px;font-weight:700;color:#fff}
.ok{background:#2e7d32}.bad{background:#c62828}
figcaption{font-size:11px;color:#666;text-align:center}
";

fn kind_badge(r: &Run) -> String {
    match &r.scores {
        None => "<span class=\"kind none\">not scored</span>".to_string(),
        Some(s) if s.official() => "<span class=\"kind official\">official scorer</span>".to_string(),
        Some(_) => "<span class=\"kind style\">GenEval-style</span>".to_string(),
    }
}

fn html(runs: &[Run], published: &[&Published], sampled: &[usize], thumb: u32) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>GenEval comparison</title><style>{CSS}</style></head>\n<body style=\"--t:{}px\">\n",
        thumb.clamp(48, 256).min(128)
    );
    let _ = writeln!(o, "<h1>GenEval comparison</h1>");
    let _ = writeln!(
        o,
        "<p class=\"muted small\">janus-eval {}: {} run(s). Per-task image-level accuracy; overall = mean of the six tasks.</p>",
        env!("CARGO_PKG_VERSION"),
        runs.len()
    );
    for w in warnings(runs) {
        let class = if w.contains("tiny random") { "warn tiny" } else { "warn" };
        let _ = writeln!(o, "<div class=\"{class}\">{}</div>", esc(&w));
    }

    let _ = writeln!(o, "<h2>Runs</h2>\n<table><tr><th>Run</th><th>Model</th><th>Made with</th><th>Images</th><th>Detector</th><th>Colour classifier</th><th>Scorer</th></tr>");
    for r in runs {
        let (det, cls) = r.scores.as_ref().map_or(("–", "–"), |s| (s.detector(), s.classifier()));
        let scorer = r
            .scores
            .as_ref()
            .and_then(|s| s.manifest.as_ref())
            .map_or(String::new(), |m| format!("<br><span class=\"small muted\">{}</span>", esc(&m.scorer)));
        let mut notes = String::new();
        if !r.notes.is_empty() {
            notes = format!("<br><span class=\"small muted\">{}</span>", esc(&r.notes.join("; ")));
        }
        let _ = writeln!(
            o,
            "<tr><td><b>{}</b>{notes}</td><td>{}{}</td><td class=\"small\">{}</td><td class=\"num\">{} images<br>{} prompts</td><td>{}</td><td>{}</td><td>{}{scorer}</td></tr>",
            esc(&r.label),
            esc(&r.model),
            if r.tiny { "<br><b style=\"color:#c62828\">tiny random test model</b>" } else { "" },
            esc(&r.setup),
            r.image_count(),
            r.images.len(),
            esc(det),
            esc(cls),
            kind_badge(r),
        );
    }
    let _ = writeln!(o, "</table>");

    let _ = writeln!(o, "<h2>Scores of these runs</h2>\n<table><tr><th>Run</th><th>Scorer</th>");
    for h in TASK_HEADERS {
        let _ = write!(o, "<th>{h}</th>");
    }
    let _ = writeln!(o, "<th>Overall</th></tr>");
    let mut partial = false;
    for r in runs {
        let _ = write!(o, "<tr><td>{}</td><td>{}</td>", esc(&r.label), kind_badge(r));
        match &r.scores {
            None => {
                let _ = write!(o, "{}", "<td class=\"num muted\">–</td>".repeat(7));
            }
            Some(s) => {
                let c = score_cells(&s.summary);
                for t in c.tasks {
                    let _ = match t {
                        Some((x, k, n)) => {
                            write!(o, "<td class=\"num\">{} <span class=\"small muted\">({k}/{n})</span></td>", f2(x))
                        }
                        None => write!(o, "<td class=\"num muted\">–</td>"),
                    };
                }
                let mark = if c.complete || c.overall.is_nan() { "" } else { "*" };
                partial |= !mark.is_empty();
                let _ = write!(o, "<td class=\"num\"><b>{}</b>{mark}</td>", f2(c.overall));
            }
        }
        let _ = writeln!(o, "</tr>");
    }
    let _ = writeln!(o, "</table>");
    if partial {
        let _ = writeln!(o, "<p class=\"small muted\">* mean over the tasks scored only: not a GenEval overall, which needs all six.</p>");
    }

    if !published.is_empty() {
        let _ = writeln!(
            o,
            "<h2>Published numbers</h2>\n<p class=\"small\">As published, scored with the {}; DPG = DPG-Bench overall. \
             Comparable only with runs of the same scorer.</p>\n<table class=\"pub\"><tr><th>Model</th>",
            esc(OFFICIAL_SCORER)
        );
        for h in TASK_HEADERS {
            let _ = write!(o, "<th>{h}</th>");
        }
        let _ = writeln!(o, "<th>Overall</th><th>DPG</th><th>Source</th></tr>");
        for p in published {
            let _ = write!(
                o,
                "<tr><td>{}{} <span class=\"small muted\">(published)</span></td>",
                esc(p.model),
                if p.rewritten { " †" } else { "" }
            );
            for t in p.tasks {
                let _ = write!(o, "<td class=\"num\">{}</td>", t.map_or("–".to_string(), f2));
            }
            let note = if p.note.is_empty() { String::new() } else { format!("; {}", esc(p.note)) };
            let _ = writeln!(
                o,
                "<td class=\"num\"><b>{}</b></td><td class=\"num\">{}</td><td class=\"small muted\">{}{note}</td></tr>",
                f2(p.overall),
                p.dpg.map_or("–".to_string(), |d| format!("{d:.2}")),
                esc(p.source)
            );
        }
        let _ = writeln!(o, "</table>");
        if published.iter().any(|p| p.rewritten) {
            let _ = writeln!(o, "<p class=\"small muted\">† evaluated with LLM-rewritten prompts: not comparable with plain GenEval.</p>");
        }
    }

    let _ = writeln!(
        o,
        "<h2>Contact sheet</h2>\n<p class=\"small muted\">{} prompt(s) sampled evenly from those generated; \
         ✓/✗ = the run's scorer judged the image correct/incorrect (its reason on hover).</p>",
        sampled.len()
    );
    let _ = write!(o, "<table class=\"sheet\"><tr><th>Prompt</th>");
    for r in runs {
        let _ = write!(o, "<th>{}</th>", esc(&r.label));
    }
    let _ = writeln!(o, "</tr>");
    for &i in sampled {
        let info = runs.iter().find_map(|r| r.images.get(&i));
        let (prompt, tag) = info.map_or(("", ""), |p| (p.prompt.as_str(), p.tag.as_str()));
        let _ = write!(
            o,
            "<tr><td class=\"prompt\"><span class=\"small muted\">{i:05} · {}</span><br>{}</td>",
            esc(tag),
            esc(prompt)
        );
        for r in runs {
            let _ = write!(o, "<td class=\"cell\" data-run=\"{}\" data-prompt=\"{i:05}\">", esc(&r.label));
            match r.images.get(&i) {
                None => {
                    let _ = write!(o, "<span class=\"small muted\">not generated</span>");
                }
                Some(p) => {
                    let _ = write!(o, "<div class=\"thumbs\">");
                    for f in &p.files {
                        let file = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                        let verdict =
                            r.scores.as_ref().and_then(|s| s.verdicts.get(&(format!("{i:05}"), file.clone())));
                        let badge = match verdict {
                            Some((true, _)) => "<span class=\"badge ok\" title=\"correct\">✓</span>".to_string(),
                            Some((false, why)) => format!("<span class=\"badge bad\" title=\"{}\">✗</span>", esc(why)),
                            None => String::new(),
                        };
                        let img = match thumbnail(f, thumb) {
                            Ok((uri, small)) => format!(
                                "<img{} src=\"{uri}\" alt=\"{} sample {}\">",
                                if small { " class=\"px\"" } else { "" },
                                esc(&r.label),
                                esc(&file)
                            ),
                            Err(e) => {
                                format!("<span class=\"small muted\">unreadable: {}</span>", esc(&format!("{e:#}")))
                            }
                        };
                        let _ = write!(o, "<figure>{img}{badge}<figcaption>{}</figcaption></figure>", esc(&file));
                    }
                    let _ = write!(o, "</div>");
                }
            }
            let _ = write!(o, "</td>");
        }
        let _ = writeln!(o, "</tr>");
    }
    let _ = writeln!(o, "</table>\n</body></html>");
    o
}
