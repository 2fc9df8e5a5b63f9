//! The `janus` binary on the tiny model shipped in `assets/tiny/` (CPU, no network).

use std::path::PathBuf;
use std::process::Command;

fn janus() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_janus"));
    c.env("HF_HUB_OFFLINE", "1").env_remove("JANUS_MODEL");
    c
}

fn tiny() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets/tiny/janus-pro-tiny").display().to_string()
}

fn run_ok(c: &mut Command) -> String {
    let out = c.output().expect("run janus");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "janus failed: {stderr}");
    stderr
}

fn run_err(c: &mut Command) -> String {
    let out = c.output().expect("run janus");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "janus should fail; stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() == 1 && lines[0].starts_with("error: "), "expected one error line, got: {stderr}");
    stderr
}

#[test]
fn generates_pngs_of_native_size_and_decodes_tokens_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("imgs");
    let tokens = tmp.path().join("tokens.json");
    let stderr = run_ok(
        janus()
            .args(["generate", "--model", &tiny(), "--prompt", "a red fox", "-n", "2", "--seed", "3"])
            .arg("--out")
            .arg(&dir)
            .arg("--tokens-out")
            .arg(&tokens),
    );
    assert!(stderr.contains("seed 3"), "{stderr}");
    let a = std::fs::read(dir.join("0000.png")).unwrap();
    let b = std::fs::read(dir.join("0001.png")).unwrap();
    assert_ne!(a, b);
    let img = image::load_from_memory(&a).unwrap();
    assert_eq!((img.width(), img.height()), (32, 32));

    let toks: Vec<Vec<u32>> = serde_json::from_str(&std::fs::read_to_string(&tokens).unwrap()).unwrap();
    assert_eq!(toks.len(), 2);
    assert!(toks.iter().all(|t| t.len() == 64));

    let again = tmp.path().join("again");
    run_ok(janus().args(["decode-tokens", "--model", &tiny()]).arg("--tokens").arg(&tokens).arg("--out").arg(&again));
    assert_eq!(std::fs::read(again.join("0000.png")).unwrap(), a);
    assert_eq!(std::fs::read(again.join("0001.png")).unwrap(), b);

    // Same seed, same bytes; one image goes to a file; env vars work as flags.
    let one = tmp.path().join("one.png");
    run_ok(
        janus()
            .args(["generate", "--prompt", "a red fox", "--greedy"])
            .env("JANUS_MODEL", tiny())
            .arg("--out")
            .arg(&one),
    );
    let one_again = tmp.path().join("one-again.png");
    run_ok(
        janus()
            .args(["generate", "--model", &tiny(), "--prompt", "a red fox", "--greedy"])
            .arg("--out")
            .arg(&one_again),
    );
    assert_eq!(std::fs::read(&one).unwrap(), std::fs::read(&one_again).unwrap());
}

#[test]
fn encodes_images_into_tokens_that_decode_back() {
    let tmp = tempfile::tempdir().unwrap();
    let images = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets/tiny/images");
    let tokens = tmp.path().join("tokens.json");
    let stderr = run_ok(
        janus()
            .args(["encode", "--model", &tiny()])
            .arg("--image")
            .arg(images.join("square.png"))
            .arg("--image")
            .arg(images.join("wide.png"))
            .arg("--tokens-out")
            .arg(&tokens),
    );
    assert!(stderr.contains("2 token grid(s)"), "{stderr}");
    let toks: Vec<Vec<u32>> = serde_json::from_str(&std::fs::read_to_string(&tokens).unwrap()).unwrap();
    assert_eq!(toks.len(), 2);
    assert!(toks.iter().all(|t| t.len() == 64 && t.iter().all(|&x| x < 128)), "{toks:?}");
    assert_ne!(toks[0], toks[1]);

    let dir = tmp.path().join("decoded");
    run_ok(janus().args(["decode-tokens", "--model", &tiny()]).arg("--tokens").arg(&tokens).arg("--out").arg(&dir));
    for name in ["0000.png", "0001.png"] {
        let img = image::load_from_memory(&std::fs::read(dir.join(name)).unwrap()).unwrap();
        assert_eq!((img.width(), img.height()), (32, 32), "{name}");
    }

    // Env vars work as flags, and the same image gives the same tokens.
    let again = tmp.path().join("again.json");
    run_ok(
        janus()
            .arg("encode")
            .env("JANUS_MODEL", tiny())
            .env("JANUS_IMAGE", images.join("square.png"))
            .env("JANUS_TOKENS_OUT", &again),
    );
    let one: Vec<Vec<u32>> = serde_json::from_str(&std::fs::read_to_string(&again).unwrap()).unwrap();
    assert_eq!(one, vec![toks[0].clone()]);

    let e = run_err(
        janus()
            .args(["encode", "--model", &tiny()])
            .arg("--image")
            .arg(tmp.path().join("missing.png"))
            .arg("--tokens-out")
            .arg(&again),
    );
    assert!(e.contains("missing.png"), "{e}");
}

#[test]
fn bad_input_gives_one_line_and_nonzero_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x.png");
    let e = run_err(janus().args(["generate", "--model", &tiny(), "--prompt", "  "]).arg("--out").arg(&out));
    assert!(e.contains("empty"), "{e}");
    let e =
        run_err(janus().args(["generate", "--model", "/nonexistent/model", "--prompt", "a"]).arg("--out").arg(&out));
    assert!(e.contains("/nonexistent/model"), "{e}");
    let e = run_err(
        janus()
            .args(["generate", "--model", "acme/not-cached", "--prompt", "a"])
            .arg("--out")
            .arg(&out)
            .env("HF_HUB_CACHE", tmp.path()),
    );
    assert!(e.contains("config.json"), "{e}");
    let e =
        run_err(janus().args(["generate", "--model", &tiny(), "--prompt", "a", "--top-p", "2"]).arg("--out").arg(&out));
    assert!(e.contains("--top-p") && e.contains("got 2"), "{e}");
    let e = run_err(
        janus().args(["generate", "--model", &tiny(), "--prompt", "a", "--device", "cuda"]).arg("--out").arg(&out),
    );
    assert!(e.to_lowercase().contains("cuda"), "{e}");
    let e = run_err(janus().args(["generate", "--model", &tiny(), "--prompt", "a", "-n", "2"]).arg("--out").arg(&out));
    assert!(e.contains("directory"), "{e}");
    let out = tmp.path().join("a-file");
    std::fs::write(&out, b"x").unwrap();
    let e = run_err(janus().args(["generate", "--model", &tiny(), "--prompt", "a", "-n", "2"]).arg("--out").arg(&out));
    assert!(e.contains("directory"), "{e}");
    let bad = tmp.path().join("bad.json");
    let decode_err = || {
        run_err(
            janus()
                .args(["decode-tokens", "--model", &tiny()])
                .arg("--tokens")
                .arg(&bad)
                .arg("--out")
                .arg(tmp.path().join("d.png")),
        )
    };
    std::fs::write(&bad, "[[1,2,3]]").unwrap();
    let e = decode_err();
    assert!(e.contains("64"), "{e}");
    std::fs::write(&bad, "not json").unwrap();
    let e = decode_err();
    assert!(e.contains("JSON"), "{e}");
}

#[test]
fn describe_answers_like_the_reference_and_reports_bad_images() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("assets/golden/und.json")).unwrap()).unwrap();
    let case = &golden["cases"][1]; // the non-square image, an answer that ends with EOS
    let image = root.join(golden["images"][case["image"].as_str().unwrap()]["file"].as_str().unwrap());
    let out = janus()
        .args(["describe", "--model", &tiny(), "--json", "--question", case["question"].as_str().unwrap()])
        .arg("--image")
        .arg(&image)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut ids: Vec<u64> = got["token_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    assert_eq!(got["finish_reason"], "stop");
    ids.push(golden["special_token_ids"]["<｜end▁of▁sentence｜>"].as_u64().unwrap());
    let want: Vec<u64> = case["generated_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    assert_eq!(ids, want);

    // Streaming text mode prints the same text.
    let out = janus()
        .args(["describe", "--model", &tiny(), "--question", case["question"].as_str().unwrap()])
        .arg("--image")
        .arg(&image)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end_matches('\n'), got["text"].as_str().unwrap());

    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    let e = run_err(janus().args(["describe", "--model", &tiny()]).arg("--image").arg(&empty));
    assert!(e.contains("empty.png") && e.contains("empty"), "{e}");
    let e = run_err(janus().args(["describe", "--model", &tiny(), "--image", "/no/such/file.png"]));
    assert!(e.contains("/no/such/file.png"), "{e}");
}

#[test]
fn bench_reports_json() {
    let out = janus()
        .args(["bench", "--model", &tiny(), "-n", "2", "--steps", "8", "--warmup", "2", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["n"], 2);
    assert_eq!(r["timed_steps"], 8);
    assert!(r["step_ms_median"].as_f64().unwrap() > 0.0);
    assert!(r["vq_decode_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn bench_compares_quantizations_with_quality() {
    let out = janus()
        .args(["bench", "--model", &tiny(), "-n", "1", "--steps", "8", "--warmup", "1", "--json"])
        .args(["--quants", "none,q8_0", "--quality"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((r[0]["quant"].as_str(), r[1]["quant"].as_str()), (Some("none"), Some("q8_0")));
    assert!(r[0]["quality"].is_null() && r[0]["peak_rss_anon_gib"].as_f64().unwrap() > 0.0);
    let q = &r[1]["quality"];
    assert_eq!(q["image_tokens"]["steps"], 64);
    let kl = q["image_tokens"]["mean_kl"].as_f64().unwrap();
    assert!(kl > 0.0 && kl < 0.1, "{q}");
    assert_eq!(q["answers"], 4);

    let e = run_err(janus().args(["bench", "--model", &tiny(), "--quality"]));
    assert!(e.contains("--quants"), "{e}");
}

#[test]
fn quantize_writes_a_checkpoint_that_generates_and_describes() {
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("tiny-q8");
    let stderr = run_ok(janus().args(["quantize", "--model", &tiny(), "--quant", "q8_0"]).arg("--out").arg(&q));
    assert!(stderr.contains("model.gguf") && stderr.contains("q8_0"), "{stderr}");
    let gen = |model: &str, quant: &str, out: &std::path::Path| {
        run_ok(
            janus()
                .args(["generate", "--model", model, "--quant", quant, "--prompt", "a red fox", "--greedy"])
                .arg("--out")
                .arg(out),
        );
        std::fs::read(out).unwrap()
    };
    let from_file = gen(q.to_str().unwrap(), "none", &tmp.path().join("a.png"));
    let at_load = gen(&tiny(), "q8_0", &tmp.path().join("b.png"));
    assert_eq!(from_file, at_load, "the saved checkpoint gives what quantizing while loading gives");
    let image = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets/tiny/images/square.png");
    let describe = |model: &str, quant: &str| {
        let out = janus()
            .args(["describe", "--model", model, "--quant", quant, "--json", "--max-tokens", "8"])
            .arg("--image")
            .arg(&image)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["token_ids"].clone()
    };
    assert_eq!(describe(q.to_str().unwrap(), "none"), describe(&tiny(), "q8_0"));

    let png = tmp.path().join("c.png");
    let e = run_err(
        janus().args(["generate", "--model", &tiny(), "--quant", "q3", "--prompt", "x"]).arg("--out").arg(&png),
    );
    assert!(e.contains("q3") && e.contains("q4k"), "{e}");
    let e = run_err(
        janus()
            .args(["generate", "--model", q.to_str().unwrap(), "--quant", "q4k", "--prompt", "x"])
            .arg("--out")
            .arg(&png),
    );
    assert!(e.contains("quantized as q8_0"), "{e}");
    let e = run_err(
        janus().args(["quantize", "--model", &tiny(), "--quant", "none"]).arg("--out").arg(tmp.path().join("n")),
    );
    assert!(e.contains("--quant none"), "{e}");
    let e = run_err(janus().args(["generate", "--model", &tiny(), "--prompt", "x"]));
    assert!(e.contains("--out"), "clap's own errors are one line too: {e}");
}
