//! `geneval score` end to end with the tiny DETR + tiny CLIP (`assets/tiny-eval/`), and
//! `geneval import` with a hand-written official results.jsonl. Tiny-weight scores are
//! meaningless; only the plumbing and the file contract are checked.

use std::fs;
use std::path::{Path, PathBuf};

use candle_core::Device;
use image::{Rgb, RgbImage};
use janus_evals::clip::Clip;
use janus_evals::detector::Detr;
use janus_evals::rules::{summarize, Metadata, RuleOptions};
use janus_evals::score::{self, ScoreOptions, OFFICIAL_CLASSIFIER, OFFICIAL_DETECTOR};
use janus_evals::scores::IMPORTED_SCORER;
use janus_evals::scores::{read_manifest, read_results, ScoreManifest, ScorerClass};

fn assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/tiny-eval")
}

fn models() -> (Detr, Clip) {
    let d = Detr::open(assets().join("detr-tiny").to_str().unwrap(), &Device::Cpu).unwrap();
    let c = Clip::open(assets().join("clip-tiny").to_str().unwrap(), &Device::Cpu).unwrap();
    (d, c)
}

const PROMPTS: [&str; 3] = [
    r#"{"tag": "single_object", "include": [{"class": "person", "count": 1}], "prompt": "a photo of a person"}"#,
    r#"{"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}], "prompt": "a photo of a red car"}"#,
    r#"{"tag": "counting", "include": [{"class": "person", "count": 2}], "exclude": [{"class": "person", "count": 3}], "prompt": "a photo of two persons"}"#,
];

fn drawn(i: u32) -> RgbImage {
    RgbImage::from_fn(96, 80, |x, y| {
        if (x / 16 + y / 16 + i).is_multiple_of(3) {
            Rgb([200, 40, 30])
        } else {
            Rgb([(x * 2) as u8, (y * 3) as u8, (40 * i) as u8])
        }
    })
}

/// A run in the official layout: 3 prompts × 2 samples, plus files the evaluator ignores.
fn make_run(dir: &Path) {
    for (i, line) in PROMPTS.iter().enumerate() {
        let p = dir.join(format!("{i:05}"));
        fs::create_dir_all(p.join("samples")).unwrap();
        fs::write(p.join("metadata.jsonl"), line).unwrap();
        for s in 0..2u32 {
            drawn(i as u32 * 2 + s).save(p.join("samples").join(format!("{s:04}.png"))).unwrap();
        }
        fs::write(p.join("samples/notes.txt"), "ignored").unwrap();
        drawn(9).save(p.join("grid.png")).unwrap();
    }
    fs::write(
        dir.join("run.json"),
        r#"{"tool": "janus-eval", "settings": {"benchmark": "geneval", "backend": {"kind": "in-process", "model": "tiny-janus"}}}"#,
    )
    .unwrap();
    fs::create_dir_all(dir.join("not-a-prompt")).unwrap();
}

fn opts(run: &Path) -> ScoreOptions {
    ScoreOptions {
        run: run.to_path_buf(),
        model_name: None,
        rules: RuleOptions::default(),
        progress: false,
        force: false,
    }
}

#[test]
fn scores_a_run_in_the_official_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    make_run(&run);
    let (d, c) = models();
    let m = score::score_run(&d, &c, &opts(&run)).unwrap();

    let rows = read_results(&run.join("results.jsonl")).unwrap();
    assert_eq!(rows.len(), 6);
    for (k, r) in rows.iter().enumerate() {
        let (i, s) = (k / 2, k % 2);
        assert_eq!(r.filename, format!("{}/{i:05}/samples/{s:04}.png", run.display()));
        assert_eq!(r.metadata, PROMPTS[i]);
        let meta: Metadata = serde_json::from_str(&r.metadata).unwrap();
        assert_eq!((r.tag.as_str(), r.prompt.as_str()), (meta.tag.as_str(), meta.prompt.as_str()));
        assert_eq!(r.correct, r.reason.is_empty());
        // details: a JSON string of {class: [[x1, y1, x2, y2, score], ...]}
        let details: serde_json::Value = serde_json::from_str(r.details.as_str().unwrap()).unwrap();
        for boxes in details.as_object().unwrap().values() {
            assert!(boxes.as_array().unwrap().iter().all(|b| b.as_array().unwrap().len() == 5));
        }
    }
    let summary = summarize(&rows.iter().map(|r| r.row()).collect::<Vec<_>>());
    let on_disk = read_manifest(&run.join("scores.json")).unwrap();
    assert_eq!(on_disk, m);
    assert_eq!(on_disk.summary, summary);
    assert_eq!(on_disk.benchmark, "geneval");
    assert_eq!(on_disk.model, "tiny-janus");
    assert!(on_disk.detector.starts_with("DETR ResNet-50 (") && on_disk.classifier.starts_with("CLIP ViT-L/14 ("));
    assert!(on_disk.scorer.starts_with("janus-eval "));
    // the fixtures are narrower than DETR ResNet-50 and ViT-L/14: random-weight test models
    assert_eq!(on_disk.scorer_class, Some(ScorerClass::TestModels));
    assert_eq!(summary.images, 6);
    assert_eq!(summary.prompts, 3);

    let text = score::report(&on_disk);
    for needle in ["tiny-janus", "DETR ResNet-50", "CLIP ViT-L/14", "single_object", "overall"] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }

    // --model-name wins over run.json.
    let mut o = opts(&run);
    o.model_name = Some("named".into());
    assert_eq!(score::score_run(&d, &c, &o).unwrap().model, "named");
}

#[test]
fn bad_runs_fail_with_one_clear_line() {
    let (d, c) = models();
    let tmp = tempfile::tempdir().unwrap();

    let missing = tmp.path().join("missing");
    let e = score::score_run(&d, &c, &ScoreOptions { model_name: Some("m".into()), ..opts(&missing) }).unwrap_err();
    assert!(e.to_string().contains("no such run folder"), "{e}");

    let empty = tmp.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let e = score::list_run(&empty).unwrap_err().to_string();
    assert!(e.contains("no prompt folders"), "{e}");

    let run = tmp.path().join("run");
    make_run(&run);
    fs::remove_file(run.join("run.json")).unwrap();
    let e = score::score_run(&d, &c, &opts(&run)).unwrap_err().to_string();
    assert!(e.contains("--model-name"), "{e}");

    fs::write(run.join("00001/samples/0001.png"), b"not a png").unwrap();
    let e = score::score_run(&d, &c, &ScoreOptions { model_name: Some("m".into()), ..opts(&run) }).unwrap_err();
    assert!(e.to_string().contains("00001/samples/0001.png: cannot read the image"), "{e}");

    fs::write(run.join("00002/metadata.jsonl"), "[1, 2]").unwrap();
    let e = score::list_run(&run).unwrap_err().to_string();
    assert!(e.contains("00002/metadata.jsonl: not one GenEval metadata object"), "{e}");

    fs::remove_file(run.join("00002/metadata.jsonl")).unwrap();
    let e = score::list_run(&run).unwrap_err().to_string();
    assert!(e.contains("00002/metadata.jsonl: cannot read it"), "{e}");
}

/// Rows as the official evaluator writes them (pandas `to_json(orient="records", lines=True)`:
/// escaped slashes, `metadata` and `details` as JSON strings).
const OFFICIAL: &str = r#"{"filename":"\/data\/janus\/00000\/samples\/0000.png","tag":"single_object","prompt":"a photo of a bench","correct":true,"reason":"","metadata":"{\"tag\": \"single_object\", \"include\": [{\"class\": \"bench\", \"count\": 1}], \"prompt\": \"a photo of a bench\"}","details":"{\"bench\": [[12.0, 30.5, 300.0, 280.25, 0.98]]}"}
{"filename":"\/data\/janus\/00000\/samples\/0001.png","tag":"single_object","prompt":"a photo of a bench","correct":false,"reason":"expected bench>=1, found 0","metadata":"{\"tag\": \"single_object\", \"include\": [{\"class\": \"bench\", \"count\": 1}], \"prompt\": \"a photo of a bench\"}","details":"{}"}
{"filename":"\/data\/janus\/00080\/samples\/0000.png","tag":"two_object","prompt":"a photo of a bench and a cat","correct":true,"reason":"","metadata":"{\"tag\": \"two_object\", \"include\": [{\"class\": \"bench\", \"count\": 1}, {\"class\": \"cat\", \"count\": 1}], \"prompt\": \"a photo of a bench and a cat\"}","details":"{\"bench\": [[1.0, 2.0, 3.0, 4.0, 0.5]], \"cat\": [[5.0, 6.0, 7.0, 8.0, 0.9]]}"}
"#;

#[test]
fn imports_official_results() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("official.jsonl");
    fs::write(&src, OFFICIAL).unwrap();
    let run = tmp.path().join("official-run");
    let m = score::import_official(&src, &run, Some("Janus-Pro-7B"), false).unwrap();
    assert_eq!(m.scorer, IMPORTED_SCORER);
    assert_eq!(m.detector, OFFICIAL_DETECTOR);
    assert_eq!(m.classifier, OFFICIAL_CLASSIFIER);
    assert_eq!(m.class(), ScorerClass::Official);
    // a scores.json written before `scorer_class` existed still loads, classed by its scorer
    let mut old = serde_json::to_value(&m).unwrap();
    assert!(old.as_object_mut().unwrap().remove("scorer_class").is_some());
    let old: ScoreManifest = serde_json::from_value(old).unwrap();
    assert_eq!((old.scorer_class, old.class()), (None, ScorerClass::Official));
    assert_eq!(m.model, "Janus-Pro-7B");
    let rows = read_results(&run.join("results.jsonl")).unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].filename, "/data/janus/00000/samples/0000.png");
    assert_eq!(read_manifest(&run.join("scores.json")).unwrap(), m);
    assert_eq!(m.summary, summarize(&rows.iter().map(|r| r.row()).collect::<Vec<_>>()));
    assert_eq!((m.summary.tasks[0].score, m.summary.tasks[1].score, m.summary.overall), (0.5, 1.0, 0.75));
    assert_eq!(m.summary.prompts, 2);

    // Never silently over an existing results.jsonl; --force replaces it.
    let e = score::import_official(&src, &run, Some("x"), false).unwrap_err().to_string();
    assert!(e.contains("exists"), "{e}");
    score::import_official(&src, &run, Some("x"), true).unwrap();

    // An imported folder is not overwritten by `score` unless forced.
    let (d, c) = models();
    make_run(&run);
    let e = score::score_run(&d, &c, &opts(&run)).unwrap_err().to_string();
    assert!(e.contains("imported official scores"), "{e}");
}

#[test]
fn import_rejects_bad_rows_naming_the_line() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("r");
    let src = tmp.path().join("bad.jsonl");
    let first = OFFICIAL.lines().next().unwrap();

    fs::write(&src, format!("{first}\n{{\"filename\": 1}}\n")).unwrap();
    let e = format!("{:#}", score::import_official(&src, &run, Some("m"), false).unwrap_err());
    assert!(e.contains("bad.jsonl:2: not a result row"), "{e}");

    fs::write(&src, first.replace("\"tag\":\"single_object\"", "\"tag\":\"colours\"")).unwrap();
    let e = score::import_official(&src, &run, Some("m"), false).unwrap_err().to_string();
    assert!(e.contains("row 1: unknown tag"), "{e}");

    fs::write(&src, first.replace("\"prompt\":\"a photo of a bench\"", "\"prompt\":\"a bench\"")).unwrap();
    let e = score::import_official(&src, &run, Some("m"), false).unwrap_err().to_string();
    assert!(e.contains("differ from the row's metadata"), "{e}");

    fs::write(&src, "\n").unwrap();
    let e = score::import_official(&src, &run, Some("m"), false).unwrap_err().to_string();
    assert!(e.contains("no result rows"), "{e}");

    fs::write(&src, first).unwrap();
    let e = score::import_official(&src, &run, None, false).unwrap_err().to_string();
    assert!(e.contains("--model-name"), "{e}");
}

fn gen_opts(out: &Path, samples: usize) -> janus_evals::generate::GenerateOptions {
    janus_evals::generate::GenerateOptions {
        out: out.to_path_buf(),
        samples,
        seed: 1,
        concurrency: 1,
        settings: serde_json::json!({}),
        selection: serde_json::json!({}),
        progress: false,
        shard: None,
    }
}

/// Images generated in-process by the tiny Janus, scored without `--model-name`: the model comes
/// from the manifest `generate` wrote, every image gets a row, the summary is the rows'.
#[test]
fn a_generated_run_scores_end_to_end() {
    use janus_evals::generate::{generate_geneval, InProcess};
    let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/tiny/janus-pro-tiny");
    let backend = InProcess::open(
        tiny.to_str().unwrap(),
        "cpu",
        None,
        janus::Quant::None,
        (janus::limits::DEFAULT_CFG_WEIGHT, janus::limits::DEFAULT_IMAGE_TEMPERATURE),
        4,
    )
    .unwrap();
    let prompts = janus_evals::data::select(janus_evals::data::geneval_prompts(), &[], Some(2));
    let tmp = tempfile::tempdir().unwrap();
    generate_geneval(&prompts, &backend, &gen_opts(tmp.path(), 2)).unwrap();
    let (d, c) = models();
    let m = score::score_run(&d, &c, &opts(tmp.path())).unwrap();
    assert_eq!(m.model, tiny.to_str().unwrap());
    let rows = read_results(&tmp.path().join("results.jsonl")).unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(m.summary, summarize(&rows.iter().map(|r| r.row()).collect::<Vec<_>>()));
}

/// For endpoint runs the model is what the server said it served, else the endpoint.
#[test]
fn endpoint_runs_are_named_by_the_served_model() {
    use janus_evals::generate::{generate_geneval, ImageBackend};
    use serde_json::{json, Value};

    struct Fake(Value);
    impl ImageBackend for Fake {
        fn generate(&self, _: &str, n: usize, _: u64) -> anyhow::Result<Vec<Vec<u8>>> {
            let mut png = Vec::new();
            drawn(0).write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
            Ok(vec![png; n])
        }
        fn describe(&self) -> Value {
            json!({"kind": "endpoint", "endpoint": "http://x/v1/images/generations"})
        }
        fn served(&self) -> Value {
            self.0.clone()
        }
    }
    let prompts = janus_evals::data::select(janus_evals::data::geneval_prompts(), &[], Some(1));
    for (served, want) in [
        (Value::Null, "http://x/v1/images/generations"),
        (json!({"models": ["dall-e-3"], "notes": []}), "dall-e-3 (http://x/v1/images/generations)"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        generate_geneval(&prompts, &Fake(served), &gen_opts(dir.path(), 1)).unwrap();
        assert_eq!(score::model_from_run_json(dir.path()).unwrap(), want);
    }
}
