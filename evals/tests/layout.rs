//! The folder layout `geneval generate` writes is the official generator's (docs/geneval-rules.md
//! §1.3, djghosh13/geneval `generation/diffusers_generate.py`), and runs resume.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::Result;
use base64::Engine as _;
use image::{Rgb, RgbImage};
use janus_evals::data::{geneval_prompts, GenevalPrompt};
use janus_evals::generate::*;
use serde_json::{json, Value};

/// Coloured 8x8 PNGs; counts what it was asked.
#[derive(Default)]
struct Fake {
    calls: AtomicUsize,
    prompts: Mutex<Vec<String>>,
}

fn png(r: u8, g: u8) -> Vec<u8> {
    janus::input::image::png_bytes(&RgbImage::from_pixel(8, 8, Rgb([r, g, 0]))).unwrap()
}

impl ImageBackend for Fake {
    fn generate(&self, prompt: &str, n: usize, seed: u64) -> Result<Vec<Vec<u8>>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.prompts.lock().unwrap().push(prompt.to_string());
        Ok((0..n).map(|i| png(i as u8, seed as u8)).collect())
    }
    fn describe(&self) -> Value {
        json!({ "kind": "fake" })
    }
}

fn opts(out: &Path, samples: usize, seed: u64) -> GenerateOptions {
    GenerateOptions {
        out: out.to_path_buf(),
        samples,
        seed,
        concurrency: 2,
        settings: json!({ "cfg": 5.0 }),
        selection: json!({}),
        progress: false,
        shard: None,
    }
}

/// The source lines, read from the data file on disk (not through the crate).
fn source_lines() -> Vec<String> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/geneval/evaluation_metadata.jsonl");
    fs::read_to_string(p).unwrap().split('\n').filter(|l| !l.is_empty()).map(str::to_string).collect()
}

/// What the official generator writes to `<index>/metadata.jsonl`: `json.dump(json.loads(line))`,
/// i.e. the line itself (the file was written by `json.dumps` with the default separators and
/// ASCII escaping: checked for all 553 lines with Python) and no newline.
fn official_metadata(line: &str) -> Vec<u8> {
    assert!(line.is_ascii() && line.starts_with("{\"tag\": ") && !line.ends_with('\n'));
    line.as_bytes().to_vec()
}

fn entries(dir: &Path) -> BTreeSet<String> {
    // the hidden .run.json.lock (shards' lock on run.json) aside
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect()
}

fn pick(indices: &[usize]) -> Vec<GenevalPrompt> {
    let all = geneval_prompts();
    indices.iter().map(|&i| all[i].clone()).collect()
}

#[test]
fn layout_is_the_official_one_and_runs_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let lines = source_lines();
    assert_eq!(lines.len(), 553);
    // a single_object, a counting and the last (color_attr) prompt
    let prompts = pick(&[0, 200, 552]);
    assert_eq!(
        prompts.iter().map(|p| p.metadata.tag.as_str()).collect::<Vec<_>>(),
        ["single_object", "counting", "color_attr"]
    );
    let fake = Fake::default();
    let r = generate_geneval(&prompts, &fake, &opts(&out, 4, 42)).unwrap();
    assert_eq!(r, RunReport { generated: 3, skipped: 0 });

    assert_eq!(entries(&out), ["00000", "00200", "00552", "run.json"].map(String::from).into());
    for (p, idx) in prompts.iter().zip([0usize, 200, 552]) {
        let dir = out.join(format!("{idx:05}"));
        assert_eq!(entries(&dir), ["metadata.jsonl", "samples"].map(String::from).into());
        assert_eq!(fs::read(dir.join("metadata.jsonl")).unwrap(), official_metadata(&lines[idx]), "{idx}");
        // the evaluator reads it with a plain json.load
        let v: Value = serde_json::from_slice(&fs::read(dir.join("metadata.jsonl")).unwrap()).unwrap();
        assert_eq!(v["prompt"], json!(p.metadata.prompt));
        let samples = entries(&dir.join("samples"));
        assert_eq!(samples, ["0000.png", "0001.png", "0002.png", "0003.png"].map(String::from).into());
        for (i, s) in samples.iter().enumerate() {
            // the evaluator's filter: re.match(r"\d+\.png", name)
            assert!(s.split('.').next().unwrap().bytes().all(|b| b.is_ascii_digit()) && s.ends_with(".png"));
            let img = image::open(dir.join("samples").join(s)).unwrap().to_rgb8();
            assert_eq!(img.get_pixel(0, 0), &Rgb([i as u8, 42, 0]));
        }
    }
    let manifest: Value = serde_json::from_slice(&fs::read(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(manifest["tool"], "janus-eval");
    assert_eq!(manifest["settings"]["seed"], 42);
    assert_eq!(manifest["settings"]["samples"], 4);
    assert_eq!(manifest["settings"]["backend"]["kind"], "fake");
    assert_eq!(manifest["settings"]["sampling"]["cfg"], 5.0);
    assert!(manifest["started"].as_str().unwrap().ends_with('Z'));
    assert!(manifest["finished"].is_string());

    // resuming: nothing to do
    let r = generate_geneval(&prompts, &fake, &opts(&out, 4, 42)).unwrap();
    assert_eq!(r, RunReport { generated: 0, skipped: 3 });
    assert_eq!(fake.calls.load(Ordering::SeqCst), 3);

    // a missing sample (or a leftover partial file) makes only that folder run again
    fs::remove_file(out.join("00200/samples/0003.png")).unwrap();
    fs::write(out.join("00200/samples/0003.partial"), b"junk").unwrap();
    let r = generate_geneval(&prompts, &fake, &opts(&out, 4, 42)).unwrap();
    assert_eq!(r, RunReport { generated: 1, skipped: 2 });
    assert_eq!(fake.prompts.lock().unwrap().last().unwrap(), &prompts[1].metadata.prompt);
    assert_eq!(entries(&out.join("00200/samples")).len(), 4, "the partial file is replaced");

    // a larger selection generates only the new prompts
    let more = pick(&[0, 1, 200, 552]);
    let r = generate_geneval(&more, &fake, &opts(&out, 4, 42)).unwrap();
    assert_eq!(r, RunReport { generated: 1, skipped: 3 });
    assert_eq!(fs::read(out.join("00001/metadata.jsonl")).unwrap(), official_metadata(&lines[1]));
    let manifest: Value = serde_json::from_slice(&fs::read(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(manifest["sessions"].as_array().unwrap().len(), 4);

    // other settings in the same folder are refused
    let err = generate_geneval(&prompts, &fake, &opts(&out, 4, 7)).unwrap_err().to_string();
    assert!(err.contains("run.json") && err.contains("other settings"), "{err}");
    let err = generate_geneval(&prompts, &fake, &opts(&out, 2, 42)).unwrap_err().to_string();
    assert!(err.contains("other settings"), "{err}");
}

#[test]
fn a_failing_backend_stops_the_run_and_names_the_prompt() {
    struct Broken;
    impl ImageBackend for Broken {
        fn generate(&self, _: &str, _: usize, _: u64) -> Result<Vec<Vec<u8>>> {
            anyhow::bail!("out of memory")
        }
        fn describe(&self) -> Value {
            json!({ "kind": "broken" })
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let err = generate_geneval(&pick(&[5]), &Broken, &opts(tmp.path(), 4, 1)).unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("prompt 00005") && text.contains("out of memory"), "{text}");
    let manifest: Value = serde_json::from_slice(&fs::read(tmp.path().join("run.json")).unwrap()).unwrap();
    assert!(manifest["finished"].is_null());
    assert!(!folder_done(&tmp.path().join("00005"), &pick(&[5])[0], 4));
}

/// One-request-per-connection HTTP server answering every POST with `n` PNGs; returns the
/// request bodies it saw.
fn serve(requests: usize) -> (String, std::thread::JoinHandle<Vec<(String, Value)>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..requests {
            let (mut stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = Vec::new();
            let mut len = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                head.push(line);
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let body: Value = serde_json::from_slice(&body).unwrap();
            let n = body["n"].as_u64().unwrap() as usize;
            let b64 = base64::engine::general_purpose::STANDARD.encode(png(9, 9));
            let answer = json!({ "created": 0, "data": vec![json!({ "b64_json": b64 }); n] }).to_string();
            write!(stream, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}", answer.len()).unwrap();
            seen.push((head.join(""), body));
        }
        seen
    });
    (addr, handle)
}

#[test]
fn endpoint_backend_posts_openai_requests() {
    let (addr, server) = serve(2);
    let tmp = tempfile::tempdir().unwrap();
    let ep = Endpoint::new(&format!("{addr}/v1/"), Some("sk-test".into()), None, None, Some(0.5), true);
    assert_eq!(ep.url(), format!("{addr}/v1/images/generations"));
    let prompts = pick(&[3, 4]);
    let r = generate_geneval(&prompts, &ep, &opts(tmp.path(), 2, 11)).unwrap();
    assert_eq!(r.generated, 2);
    let seen = server.join().unwrap();
    let mut bodies: Vec<Value> = seen.iter().map(|(_, b)| b.clone()).collect();
    bodies.sort_by_key(|b| b["prompt"].as_str().unwrap().to_string());
    let mut expected: Vec<Value> = prompts
        .iter()
        .map(|p| json!({ "prompt": p.metadata.prompt, "n": 2, "response_format": "b64_json", "seed": 11, "temperature": 0.5 }))
        .collect();
    expected.sort_by_key(|b| b["prompt"].as_str().unwrap().to_string());
    assert_eq!(bodies, expected);
    assert!(seen.iter().all(|(h, _)| h.contains("POST /v1/images/generations")
        && h.to_ascii_lowercase().contains("authorization: bearer sk-test")));
    for d in ["00003", "00004"] {
        assert_eq!(entries(&tmp.path().join(d).join("samples")), ["0000.png", "0001.png"].map(String::from).into());
    }

    // plain OpenAI: only its own fields
    let ep = Endpoint::new(&addr, None, Some("dall-e-3".into()), Some(5.0), Some(1.0), false);
    assert_eq!(
        ep.body("x", 1, 3),
        json!({ "prompt": "x", "n": 1, "response_format": "b64_json", "model": "dall-e-3" })
    );
}

fn tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/tiny/janus-pro-tiny")
}

#[test]
fn in_process_on_the_tiny_model_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("tiny");
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_janus-eval"))
            .args(["geneval", "generate", "--samples", "2", "--device", "cpu", "--quiet"])
            .arg("--out")
            .arg(&out)
            .env("JANUS_EVAL_MODEL", tiny())
            .env("JANUS_EVAL_LIMIT", "2")
            .env("JANUS_EVAL_TAGS", "position")
            .output()
            .unwrap()
    };
    let o = run();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines = source_lines();
    let position: Vec<usize> = (0..553).filter(|&i| lines[i].contains("\"tag\": \"position\"")).take(2).collect();
    let expected: BTreeSet<String> =
        position.iter().map(|i| format!("{i:05}")).chain(["run.json".to_string()]).collect();
    assert_eq!(entries(&out), expected);
    for &i in &position {
        let dir = out.join(format!("{i:05}"));
        assert_eq!(fs::read(dir.join("metadata.jsonl")).unwrap(), official_metadata(&lines[i]));
        for s in ["0000.png", "0001.png"] {
            let img = image::open(dir.join("samples").join(s)).unwrap();
            assert_eq!((img.width(), img.height()), (32, 32));
        }
    }
    let manifest: Value = serde_json::from_slice(&fs::read(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(manifest["settings"]["backend"]["kind"], "in-process");
    assert_eq!(manifest["settings"]["backend"]["quant"], "none");
    assert_eq!(manifest["settings"]["sampling"], json!({ "cfg": 5.0, "temperature": 1.0 }));
    assert_eq!(manifest["sessions"][0]["selection"], json!({ "tags": ["position"], "limit": 2, "prompts": 2 }));
    // same images for the same seed: a rerun after deleting a folder reproduces it
    let before = fs::read(out.join(format!("{:05}/samples/0001.png", position[1]))).unwrap();
    fs::remove_dir_all(out.join(format!("{:05}", position[1]))).unwrap();
    let o = run();
    assert!(o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("1 prompt(s) generated, 1 already complete"), "{stderr}");
    assert_eq!(fs::read(out.join(format!("{:05}/samples/0001.png", position[1]))).unwrap(), before);
}

#[test]
fn cli_rejects_bad_selections_and_prints_prompts() {
    let bin = env!("CARGO_BIN_EXE_janus-eval");
    let o = std::process::Command::new(bin)
        .args(["geneval", "prompts", "--tags", "counting", "--limit", "2"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    let lines = source_lines();
    let counting: Vec<&String> = lines.iter().filter(|l| l.contains("\"tag\": \"counting\"")).take(2).collect();
    assert_eq!(text, format!("{}\n{}\n", counting[0], counting[1]));
    let o = std::process::Command::new(bin).args(["geneval", "prompts", "--tags", "count"]).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown tag"));
    let o = std::process::Command::new(bin)
        .args(["geneval", "generate", "--out", "/nonexistent", "--model", "m", "--endpoint", "http://x"])
        .output()
        .unwrap();
    assert!(!o.status.success(), "--model and --endpoint conflict");
    let o = std::process::Command::new(bin).arg("licenses").output().unwrap();
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("Dhruba Ghosh") && text.contains("Apache-2.0"));
}
