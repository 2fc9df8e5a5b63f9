//! `compare` on hand-made runs: results.jsonl rows in the official evaluator's shape
//! (djghosh13/geneval `evaluation/evaluate_images.py`) and scores.json as `crate::scores`
//! defines it, written here as plain JSON text. Checks the numbers (docs/geneval-rules.md §1.9:
//! image accuracy per task, overall = mean of six), the published rows (§3), the header naming
//! model, detector and colour classifier per run, and the self-contained HTML contact sheet.

use std::fs;
use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use janus_evals::compare::*;
use janus_evals::data::geneval_prompts;
use janus_evals::rules::TAGS;
use serde_json::json;

/// The first prompt index of each task, in TAGS order.
fn one_per_task() -> Vec<usize> {
    let all = geneval_prompts();
    TAGS.iter().map(|t| all.iter().find(|p| p.metadata.tag == *t).unwrap().index).collect()
}

struct Scoring<'a> {
    /// scores.json's `scorer_class`.
    class: &'a str,
    detector: &'a str,
    classifier: &'a str,
    model: &'a str,
    /// Correct samples per prompt (the first k of the prompt's samples are correct).
    correct: &'a dyn Fn(usize) -> usize,
}

/// A run folder: run.json, `samples` PNGs per prompt, and when `scoring` is given results.jsonl
/// + scores.json.
fn make_run(dir: &Path, model: &str, prompts: &[usize], samples: usize, scoring: Option<Scoring>) {
    let all = geneval_prompts();
    fs::create_dir_all(dir).unwrap();
    // the tiny test model makes 32 px images
    let image_size = if model.starts_with("assets/tiny/") { 32 } else { 384 };
    let run = json!({
        "tool": "janus-eval", "benchmark": "geneval",
        "settings": { "benchmark": "geneval", "samples": samples, "seed": 42,
                      "backend": { "kind": "in-process", "model": model, "device": "Cpu", "dtype": "F32", "image_size": image_size },
                      "sampling": { "cfg": 5.0, "temperature": 1.0 } },
    });
    fs::write(dir.join("run.json"), serde_json::to_vec_pretty(&run).unwrap()).unwrap();
    let mut results = String::new();
    for &i in prompts {
        let p = &all[i];
        let folder = dir.join(format!("{i:05}"));
        fs::create_dir_all(folder.join("samples")).unwrap();
        fs::write(folder.join("metadata.jsonl"), p.line).unwrap();
        for s in 0..samples {
            // big enough to be downscaled to a JPEG thumbnail
            let img = RgbImage::from_fn(200, 180, |x, y| Rgb([(x + s as u32 * 40) as u8, y as u8, (i % 256) as u8]));
            let file = folder.join("samples").join(format!("{s:04}.png"));
            img.save(&file).unwrap();
            if let Some(sc) = &scoring {
                let ok = s < (sc.correct)(i);
                // the official row: filename as given to the evaluator, metadata and details as JSON strings
                let row = json!({
                    "filename": file.display().to_string(), "tag": p.metadata.tag, "prompt": p.metadata.prompt,
                    "correct": ok, "reason": if ok { "" } else { "expected bench>=1, found 0" },
                    "metadata": p.line, "details": "{}",
                });
                results.push_str(&row.to_string());
                results.push('\n');
            }
        }
    }
    if let Some(sc) = scoring {
        fs::write(dir.join("results.jsonl"), results).unwrap();
        let manifest = json!({
            "benchmark": "geneval", "scorer": "janus-eval 0.1.0", "model": sc.model,
            "detector": sc.detector, "classifier": sc.classifier, "scorer_class": sc.class, "options": {},
            "created": "2025-01-01T00:00:00Z",
            // deliberately wrong: compare recomputes the summary from results.jsonl
            "summary": { "images": 0, "prompts": 0, "correct_images": 0.0, "correct_prompts": 0.0, "tasks": [], "overall": 0.99 },
        });
        fs::write(dir.join("scores.json"), serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
    }
}

const DETR: &str = "DETR ResNet-50 (facebook/detr-resnet-50)";
const CLIP: &str = "CLIP ViT-L/14 (openai/clip-vit-large-patch14)";

/// Three runs: a GenEval-style scored one over all six tasks, an officially scored one over
/// two tasks, and an unscored one.
fn three_runs(root: &Path) -> Vec<PathBuf> {
    let tasks = one_per_task();
    // per task, in TAGS order: 4/4, 3/4, 1/4, 2/4, 0/4, 1/4
    let per_task = [4, 3, 1, 2, 0, 1];
    let correct = |i: usize| per_task[tasks.iter().position(|&t| t == i).unwrap()];
    make_run(
        &root.join("janus-7b"),
        "deepseek-ai/Janus-Pro-7B",
        &tasks,
        4,
        Some(Scoring {
            class: "geneval-style",
            detector: DETR,
            classifier: CLIP,
            model: "deepseek-ai/Janus-Pro-7B",
            correct: &correct,
        }),
    );
    make_run(
        &root.join("official"),
        "deepseek-ai/Janus-Pro-1B",
        &tasks[..2],
        2,
        Some(Scoring {
            class: "official",
            detector: "Mask2Former Swin-S (mmdet)",
            classifier: "CLIP ViT-L-14 (open_clip, openai)",
            model: "deepseek-ai/Janus-Pro-1B",
            correct: &|_| 1,
        }),
    );
    make_run(&root.join("unscored"), "dall-e-3", &tasks[1..], 1, None);
    vec![root.join("janus-7b"), root.join("official"), root.join("unscored")]
}

fn opts(runs: Vec<PathBuf>, k: usize) -> CompareOptions {
    CompareOptions { runs, published: true, published_all: false, sample_prompts: k, thumb: 96 }
}

/// The Markdown table row that starts with `| {label} |`.
fn row<'a>(md: &'a str, label: &str) -> &'a str {
    let start = format!("| {label} |");
    md.lines().find(|l| l.starts_with(&start)).unwrap_or_else(|| panic!("no row {label:?} in\n{md}"))
}

#[test]
fn markdown_tables_hold_the_recomputed_numbers_and_published_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let r = compare(&opts(three_runs(tmp.path()), 12)).unwrap();
    let md = &r.markdown;

    // scores (not scores.json's stale summary): 1.00, 0.75, 0.25, 0.50, 0.00, 0.25 → 2.75/6
    let scores = md.split("## Scores of these runs").nth(1).unwrap();
    assert_eq!(
        row(scores, "janus-7b"),
        "| janus-7b | GenEval-style | 1.00 (4/4) | 0.75 (3/4) | 0.25 (1/4) | 0.50 (2/4) | 0.00 (0/4) | 0.25 (1/4) | 0.46 |"
    );
    assert_eq!(
        row(scores, "official"),
        "| official | official scorer | 0.50 (1/2) | 0.50 (1/2) | – | – | – | – | 0.50\\* |"
    );
    assert!(scores.contains("\\* mean over the tasks scored only"), "a partial run's overall is flagged");
    assert_eq!(row(scores, "unscored"), "| unscored | not scored | – | – | – | – | – | – | – |");
    let own = scores.split("## Published").next().unwrap();
    assert!(!own.contains("0.99"), "scores.json's summary is not trusted");

    // the header names model, detector and classifier per run
    let runs = md.split("## Runs").nth(1).unwrap().split("## Scores").next().unwrap();
    let a = row(runs, "janus-7b");
    assert!(a.contains("deepseek-ai/Janus-Pro-7B") && a.contains(DETR) && a.contains(CLIP), "{a}");
    assert!(a.contains("GenEval-style (janus-eval 0.1.0)") && a.contains("24 images, 6 prompts"), "{a}");
    assert!(a.contains("in-process, cpu, f32, 384 px; 4 sample(s)/prompt, seed 42, cfg 5.0"), "{a}");
    let b = row(runs, "official");
    assert!(b.contains("Mask2Former Swin-S (mmdet)") && b.contains("official scorer"), "{b}");
    let c = row(runs, "unscored");
    assert!(c.contains("dall-e-3") && c.contains("not scored") && c.contains("| – | – |"), "{c}");

    // GenEval-style runs are flagged as not comparable; the official one is not named there
    let warning = md.lines().find(|l| l.contains("GenEval-style: ")).expect("a GenEval-style warning");
    assert!(warning.contains("janus-7b") && !warning.contains("official,") && warning.contains("not comparable"));
    assert!(!md.contains("tiny random test model"));

    // published rows, apart, labelled with the official scorer and a source
    let published = md.split("## Published numbers").nth(1).expect("a published section");
    assert!(published.contains("Mask2Former Swin-S + CLIP ViT-L/14"));
    assert_eq!(
        row(published, "Janus-Pro-7B (published)").split(" | ").take(9).collect::<Vec<_>>(),
        ["| Janus-Pro-7B (published)", "0.99", "0.89", "0.59", "0.90", "0.79", "0.66", "0.80", "84.19"]
    );
    for m in ["Janus-Pro-1B", "DALL-E 3", "SD3-Medium", "SDXL", "SD3-Medium (independent run)"] {
        let r = row(published, &format!("{m} (published)"));
        assert!(r.contains("Janus-Pro tech report") || r.contains("reproduced"), "{r}");
    }
    assert!(row(published, "SD3-Medium (published)").contains("0.74") && published.contains("0.62"));
    assert!(row(published, "DALL-E 3 (published)").contains("| 0.67 | 83.50 |"));
    assert!(!own.contains("(published)"), "published rows are not mixed into the runs' table");

    // without --published there is no published section; --published-all has more rows
    let mut o = opts(three_runs(tmp.path()), 12);
    o.published = false;
    assert!(!compare(&o).unwrap().markdown.contains("Published"));
    o.published_all = true;
    let all = compare(&o).unwrap().markdown;
    assert!(all.contains("| LlamaGen (published) |") && all.contains("BAGEL + rewriter † (published)"));
    assert!(all.contains("† evaluated with LLM-rewritten prompts"));
}

/// Every `src=`/`href=` value in `html`.
fn links(html: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for (i, _) in html.match_indices(attr) {
            let rest = &html[i + attr.len()..];
            out.push(&rest[..rest.find('"').unwrap()]);
        }
    }
    out
}

#[test]
fn html_is_self_contained_with_one_contact_cell_per_run_and_prompt() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = three_runs(tmp.path());
    let r = compare(&opts(runs.clone(), 4)).unwrap();
    let html = &r.html;
    assert!(html.starts_with("<!doctype html>") && html.trim_end().ends_with("</html>"));
    assert!(!html.contains("http://") && !html.contains("https://"), "no external URL at all");
    let l = links(html);
    assert!(!l.is_empty() && l.iter().all(|s| s.starts_with("data:image/")), "{:?}", &l[..l.len().min(3)]);
    assert!(l.iter().any(|s| s.starts_with("data:image/jpeg;base64,")), "200 px samples are downscaled to JPEG");

    // 6 prompts have images, 4 sampled evenly; one cell per run per sampled prompt
    let tasks = one_per_task();
    assert_eq!(r.sampled.len(), 4);
    assert!(r.sampled.iter().all(|i| tasks.contains(i)));
    assert_eq!(html.matches("class=\"cell\"").count(), 3 * 4);
    for i in &r.sampled {
        for run in ["janus-7b", "official", "unscored"] {
            let cell = format!("<td class=\"cell\" data-run=\"{run}\" data-prompt=\"{i:05}\">");
            assert_eq!(html.matches(&cell).count(), 1, "{cell}");
        }
        let prompt = &geneval_prompts()[*i].metadata.prompt;
        assert!(html.contains(prompt.as_str()), "{prompt}");
    }
    // per-image verdicts only where scored; "not generated" where a run lacks the prompt
    let cell = |run: &str, i: usize| {
        let start = html.find(&format!("data-run=\"{run}\" data-prompt=\"{i:05}\"")).unwrap();
        &html[start..start + html[start..].find("</td>").unwrap()]
    };
    let first = tasks[0];
    assert!(r.sampled.contains(&first));
    assert_eq!(cell("janus-7b", first).matches("badge ok").count(), 4);
    assert_eq!(cell("janus-7b", first).matches("<img").count(), 4);
    assert_eq!(cell("official", first).matches("badge ok").count(), 1);
    assert_eq!(cell("official", first).matches("badge bad").count(), 1);
    assert!(cell("official", first).contains("title=\"expected bench&gt;=1, found 0\""));
    assert!(cell("unscored", first).contains("not generated"));
    let later = *r.sampled.iter().find(|&&i| i != first).unwrap();
    assert_eq!(cell("unscored", later).matches("<img").count(), 1);
    assert!(!cell("unscored", later).contains("badge"));

    // the header names model, detector, classifier; GenEval-style flagged
    for s in [
        "deepseek-ai/Janus-Pro-7B",
        DETR,
        CLIP,
        "Mask2Former Swin-S (mmdet)",
        "dall-e-3",
        "GenEval-style",
        "not comparable",
    ] {
        assert!(html.contains(s), "{s}");
    }
    assert!(html.contains("Janus-Pro-7B <span class=\"small muted\">(published)</span>"));

    // files
    let out = tmp.path().join("report");
    write_report(&r, &out).unwrap();
    assert_eq!(fs::read_to_string(out.join("report.md")).unwrap(), r.markdown);
    assert_eq!(fs::read_to_string(out.join("report.html")).unwrap(), r.html);
}

#[test]
fn tiny_model_runs_are_called_meaningless() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny-a");
    make_run(&dir, "assets/tiny/janus-pro-tiny", &[0, 1], 2, None);
    let r = compare(&opts(vec![dir], 12)).unwrap();
    for text in [&r.markdown, &r.html] {
        assert!(text.contains("assets/tiny/janus-pro-tiny is a tiny random test model"), "{text}");
        assert!(text.contains("numbers are meaningless"));
    }
    assert_eq!(r.html.matches("class=\"cell\"").count(), 2);

    // scored by the tiny random scorer fixtures: said too; an endpoint run names the served model
    let scored = tmp.path().join("tiny-b");
    let tiny_scorer = Scoring {
        class: "test-models",
        detector: "DETR ResNet-50 (assets/tiny-eval/detr-tiny)",
        classifier: "CLIP ViT-L/14 (assets/tiny-eval/clip-tiny)",
        model: "assets/tiny/janus-pro-tiny",
        correct: &|_| 0,
    };
    make_run(&scored, "assets/tiny/janus-pro-tiny", &[0], 1, Some(tiny_scorer));
    let served = tmp.path().join("served");
    make_run(&served, "gpt-image-1", &[0], 1, None);
    let mut m: serde_json::Value = serde_json::from_slice(&fs::read(served.join("run.json")).unwrap()).unwrap();
    m["settings"]["backend"] =
        json!({ "kind": "endpoint", "endpoint": "http://127.0.0.1:9/v1/images/generations", "model": "gpt-image-1" });
    m["served_model"] = json!("gpt-image-1-2025-04-23");
    fs::write(served.join("run.json"), m.to_string()).unwrap();
    let r = compare(&opts(vec![scored, served], 12)).unwrap();
    assert!(r.markdown.contains("tiny-b: scored with tiny random-weight test models"), "{}", r.markdown);
    let row = row(&r.markdown, "served");
    assert!(
        row.contains(
            "| gpt-image-1-2025-04-23 | endpoint http://127.0.0.1:9/v1/images/generations; 1 sample(s)/prompt"
        ),
        "{row}"
    );
}

#[test]
fn bad_inputs_are_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let err = |runs: Vec<PathBuf>| format!("{:#}", compare(&opts(runs, 4)).unwrap_err());

    let e = err(vec![tmp.path().join("missing")]);
    assert!(e.contains("missing") && e.contains("not a folder"), "{e}");
    let empty = tmp.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    assert!(err(vec![empty]).contains("not a GenEval run folder"));
    let dpg = tmp.path().join("dpg");
    fs::create_dir_all(&dpg).unwrap();
    fs::write(dpg.join("run.json"), r#"{"benchmark": "dpg", "settings": {"benchmark": "dpg"}}"#).unwrap();
    assert!(err(vec![dpg]).contains("a dpg run; compare reads GenEval runs"));
    let bad = tmp.path().join("bad");
    make_run(&bad, "m", &[0], 1, None);
    fs::write(bad.join("results.jsonl"), "{\"filename\": 1}\n").unwrap();
    let e = err(vec![bad]);
    assert!(e.contains("results.jsonl:1") && !e.contains('\n'), "{e}");
    assert!(format!("{:#}", compare(&opts(vec![], 4)).unwrap_err()).contains("at least one run"));
}

#[test]
fn result_filenames_map_to_sample_files() {
    assert_eq!(image_key("/x/run/00012/samples/0003.png"), Some(("00012".into(), "0003.png".into())));
    assert_eq!(image_key("run\\00012\\samples\\00003.png"), Some(("00012".into(), "00003.png".into())));
    assert_eq!(image_key("00012/grid.png"), None);
}

#[test]
fn cli_prints_markdown_and_writes_both_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = three_runs(tmp.path());
    let out = tmp.path().join("cmp");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_janus-eval"))
        .arg("compare")
        .args(&runs)
        .args(["--published", "--sample-prompts", "3", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8(o.stdout).unwrap();
    assert!(stdout.starts_with("# GenEval comparison") && stdout.contains("| Janus-Pro-7B (published) |"));
    assert_eq!(fs::read_to_string(out.join("report.md")).unwrap(), stdout);
    let html = fs::read_to_string(out.join("report.html")).unwrap();
    assert_eq!(html.matches("class=\"cell\"").count(), 3 * 3);

    let o = std::process::Command::new(env!("CARGO_BIN_EXE_janus-eval"))
        .args(["compare", "/nonexistent/run"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("/nonexistent/run: not a folder"), "{err}");
}
