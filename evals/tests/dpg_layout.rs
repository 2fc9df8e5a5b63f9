//! `dpg generate` writes DPG-Bench's layout (docs/geneval-rules.md §2.2, TencentQQGYLab/ELLA
//! `dpg_bench/compute_dpg_bench.py`): `<out>/<item_id>.png`, the 4 samples as a 2×2 grid of
//! equal tiles, row-major (the scorer crops (0,0,r,r), (r,0,2r,r), (0,r,r,2r), (r,r,2r,2r) with
//! r the tile resolution); runs resume.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Result;
use image::{Rgb, RgbImage};
use janus_evals::data::{dpg_prompts, DpgPrompt};
use janus_evals::generate::*;
use serde_json::{json, Value};

/// 6x5 tiles (not square, so width and height cannot be swapped unnoticed), sample i coloured
/// (10*i, seed, 0).
#[derive(Default)]
struct Tiles {
    calls: AtomicUsize,
}

impl ImageBackend for Tiles {
    fn generate(&self, _: &str, n: usize, seed: u64) -> Result<Vec<Vec<u8>>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok((0..n)
            .map(|i| {
                janus::input::image::png_bytes(&RgbImage::from_pixel(6, 5, Rgb([10 * i as u8, seed as u8, 0]))).unwrap()
            })
            .collect())
    }
    fn describe(&self) -> Value {
        json!({ "kind": "tiles" })
    }
}

fn opts(out: &Path, samples: usize) -> GenerateOptions {
    GenerateOptions {
        out: out.to_path_buf(),
        samples,
        seed: 3,
        concurrency: 2,
        settings: json!({}),
        selection: json!({}),
        progress: false,
        shard: None,
    }
}

fn entries(dir: &Path) -> BTreeSet<String> {
    // the hidden .run.json.lock (shards' lock on run.json) aside
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect()
}

fn pick(n: usize) -> Vec<DpgPrompt> {
    dpg_prompts().into_iter().take(n).collect()
}

#[test]
fn one_png_per_item_holding_a_2x2_grid_and_runs_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("dpg");
    let prompts = pick(3);
    let fake = Tiles::default();
    let r = generate_dpg(&prompts, &fake, &opts(&out, 4)).unwrap();
    assert_eq!(r, RunReport { generated: 3, skipped: 0 });
    let ids: Vec<&str> = prompts.iter().map(|p| p.item_id.as_str()).collect();
    assert_eq!(ids, ["0", "1", "2"], "the file names the DPG scorer looks up");
    assert_eq!(entries(&out), ["0.png", "1.png", "2.png", "run.json"].map(String::from).into());
    for id in ids {
        let img = image::open(out.join(format!("{id}.png"))).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (12, 10), "2x2 tiles of 6x5");
        // the scorer's crops, row-major: sample 0 top left, 1 top right, 2 bottom left, 3 bottom right
        for (i, (x, y)) in [(0, 0), (6, 0), (0, 5), (6, 5)].into_iter().enumerate() {
            for (dx, dy) in [(0, 0), (5, 4)] {
                assert_eq!(img.get_pixel(x + dx, y + dy), &Rgb([10 * i as u8, 3, 0]), "tile {i}");
            }
        }
    }
    let m: Value = serde_json::from_slice(&fs::read(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(m["benchmark"], "dpg");
    assert_eq!(m["settings"]["benchmark"], "dpg");
    assert_eq!(m["settings"]["samples"], 4);
    assert!(m["settings"]["layout"].as_str().unwrap().contains("2x2"));
    assert!(m["finished"].is_string());

    // resume: finished files are skipped
    let r = generate_dpg(&prompts, &fake, &opts(&out, 4)).unwrap();
    assert_eq!(r, RunReport { generated: 0, skipped: 3 });
    assert_eq!(fake.calls.load(Ordering::SeqCst), 3);
    fs::remove_file(out.join("1.png")).unwrap();
    fs::write(out.join("1.partial"), b"junk").unwrap();
    let r = generate_dpg(&pick(4), &fake, &opts(&out, 4)).unwrap();
    assert_eq!(r, RunReport { generated: 2, skipped: 2 });
    assert_eq!(entries(&out), ["0.png", "1.png", "2.png", "3.png", "run.json"].map(String::from).into());

    // other settings in the same folder are refused
    let err = generate_dpg(&prompts, &fake, &opts(&out, 1)).unwrap_err().to_string();
    assert!(err.contains("other settings"), "{err}");
}

#[test]
fn one_sample_is_the_image_itself_and_other_counts_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    generate_dpg(&pick(1), &Tiles::default(), &opts(tmp.path(), 1)).unwrap();
    let img = image::open(tmp.path().join("0.png")).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (6, 5));
    for n in [2, 3, 9] {
        let err = generate_dpg(&pick(1), &Tiles::default(), &opts(tmp.path(), n)).unwrap_err().to_string();
        assert!(err.contains("4 samples per prompt") && !err.contains('\n'), "{err}");
    }
}

#[test]
fn tiles_of_different_sizes_are_an_error_naming_the_item() {
    struct Mixed;
    impl ImageBackend for Mixed {
        fn generate(&self, _: &str, n: usize, _: u64) -> Result<Vec<Vec<u8>>> {
            Ok((0..n).map(|i| janus::input::image::png_bytes(&RgbImage::new(4 + i as u32, 4)).unwrap()).collect())
        }
        fn describe(&self) -> Value {
            json!({ "kind": "mixed" })
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let err = format!("{:#}", generate_dpg(&pick(1), &Mixed, &opts(tmp.path(), 4)).unwrap_err());
    assert!(err.contains("prompt 0.png") && err.contains("differ in size"), "{err}");
    assert!(!tmp.path().join("0.png").exists());
}

#[test]
fn in_process_on_the_tiny_model() {
    // DPG prompts run to 130 words, more than the tiny model's 256-token context: short ones here
    let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/tiny/janus-pro-tiny");
    let sampling = (janus::limits::DEFAULT_CFG_WEIGHT, janus::limits::DEFAULT_IMAGE_TEMPERATURE);
    let backend = InProcess::open(tiny.to_str().unwrap(), "cpu", None, janus::Quant::None, sampling, 4).unwrap();
    let prompts: Vec<DpgPrompt> = ["a red cube on a table", "two cats"]
        .iter()
        .enumerate()
        .map(|(i, p)| DpgPrompt { item_id: format!("short{i}"), prompt: p.to_string() })
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let r = generate_dpg(&prompts, &backend, &opts(tmp.path(), 4)).unwrap();
    assert_eq!(r.generated, 2);
    let img = image::open(tmp.path().join("short1.png")).unwrap();
    assert_eq!((img.width(), img.height()), (64, 64), "2x2 tiles of the tiny model's 32 px");
}

#[test]
fn cli_names_the_prompt_that_does_not_fit_and_refuses_tags() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("dpg");
    let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/tiny/janus-pro-tiny");
    let bin = env!("CARGO_BIN_EXE_janus-eval");
    let o = std::process::Command::new(bin)
        .args(["dpg", "generate", "--limit", "2", "--device", "cpu", "--quiet"])
        .arg("--out")
        .arg(&out)
        .env("JANUS_EVAL_MODEL", &tiny)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("prompt 0.png") && err.contains("fit in the context"), "{err}");
    let m: Value = serde_json::from_slice(&fs::read(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(m["benchmark"], "dpg");
    assert_eq!(m["settings"]["backend"]["kind"], "in-process");
    assert_eq!(m["sessions"][0]["selection"]["prompts"], 2);
    assert!(m["finished"].is_null());

    let o = std::process::Command::new(bin)
        .args(["dpg", "generate", "--tags", "counting", "--model", "x", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--tags is for GenEval"));
}
