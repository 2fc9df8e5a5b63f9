//! The `Endpoint` backend against servers that differ from janus serve, following OpenAI's
//! Images API reference: DALL·E 3 takes only `n=1` (a 400 with `param: "n"`), gpt-image-1
//! refuses `response_format` (a 400 with `param: "response_format"`) and always answers
//! `b64_json`, DALL·E answers `url`s by default; a refusal without `param` is not adapted to;
//! the `model` of the answer is recorded in run.json. The server is a std TcpListener
//! thread speaking just enough HTTP/1.1.

mod stub;
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use image::{Rgb, RgbImage};
use janus_evals::data::{geneval_prompts, GenevalPrompt};
use janus_evals::generate::*;
use serde_json::{json, Value};

/// One request the fake server saw.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    body: Value,
}

/// An answer: status, content type, body bytes.
type Answer = (u16, &'static str, Vec<u8>);

/// Serves forever on a thread (it dies with the test); `handler` gets the request and the
/// server's own address. Returns the address and the requests seen.
fn serve<F>(handler: F) -> (String, Arc<Mutex<Vec<Seen>>>)
where
    F: Fn(&Seen, &str) -> Answer + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (addr2, seen2) = (addr.clone(), seen.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Some((first, body)) = stub::read_request(&stream) else { continue };
            let mut parts = first.split_whitespace();
            let req = Seen {
                method: parts.next().unwrap_or("").to_string(),
                path: parts.next().unwrap_or("").to_string(),
                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            };
            let (status, ctype, answer) = handler(&req, &addr2);
            seen2.lock().unwrap().push(req);
            let head = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                answer.len()
            );
            stream.write_all(head.as_bytes()).unwrap();
            stream.write_all(&answer).unwrap();
        }
    });
    (addr, seen)
}

fn png(r: u8) -> Vec<u8> {
    janus::input::image::png_bytes(&RgbImage::from_pixel(8, 8, Rgb([r, 7, 0]))).unwrap()
}

fn b64_images(n: usize, model: Option<&str>) -> Answer {
    let data: Vec<Value> =
        (0..n).map(|i| json!({ "b64_json": base64::engine::general_purpose::STANDARD.encode(png(i as u8)) })).collect();
    let mut v = json!({ "created": 0, "data": data });
    if let Some(m) = model {
        v["model"] = json!(m);
    }
    (200, "application/json", v.to_string().into_bytes())
}

fn openai_error(status: u16, message: &str, param: Option<&str>) -> Answer {
    let v = json!({ "error": { "message": message, "type": "invalid_request_error", "param": param, "code": null } });
    (status, "application/json", v.to_string().into_bytes())
}

fn posts(seen: &Arc<Mutex<Vec<Seen>>>) -> Vec<Value> {
    seen.lock().unwrap().iter().filter(|s| s.method == "POST").map(|s| s.body.clone()).collect()
}

fn pick(indices: &[usize]) -> Vec<GenevalPrompt> {
    let all = geneval_prompts();
    indices.iter().map(|&i| all[i].clone()).collect()
}

fn opts(out: &Path, samples: usize, seed: u64) -> GenerateOptions {
    GenerateOptions {
        out: out.to_path_buf(),
        samples,
        seed,
        concurrency: 1,
        settings: json!({}),
        selection: json!({}),
        progress: false,
        shard: None,
    }
}

fn manifest(out: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap()
}

fn sample_count(out: &Path, folder: &str) -> usize {
    std::fs::read_dir(out.join(folder).join("samples")).unwrap().count()
}

#[test]
fn max_n_splits_a_prompt_into_requests_with_per_sample_seeds() {
    let (addr, seen) = serve(|req, _| b64_images(req.body["n"].as_u64().unwrap() as usize, None));
    let tmp = tempfile::tempdir().unwrap();
    let ep = Endpoint::new(&addr, None, Some("dall-e-3".into()), None, None, true).with_max_n(Some(1)).with_retries(0);
    let r = generate_geneval(&pick(&[3]), &ep, &opts(tmp.path(), 3, 11)).unwrap();
    assert_eq!(r.generated, 1);
    let bodies = posts(&seen);
    assert_eq!(bodies.len(), 3);
    assert!(bodies.iter().all(|b| b["n"] == 1 && b["model"] == "dall-e-3"));
    let seeds: Vec<u64> = bodies.iter().map(|b| b["seed"].as_u64().unwrap()).collect();
    assert_eq!(seeds, [sample_seed(11, 0), sample_seed(11, 1), sample_seed(11, 2)]);
    assert_eq!(seeds[0], 11, "sample 0 keeps the run seed");
    assert!(seeds[1] != 12 && seeds[1] != seeds[2], "seeds of nearby runs do not collide: {seeds:?}");
    assert_eq!(sample_count(tmp.path(), "00003"), 3);
    let m = manifest(tmp.path());
    assert_eq!(m["settings"]["backend"]["max_n"], 1);
    assert_eq!(m["served_model"], "dall-e-3", "no `model` in the answer: the requested one");

    // chunks of 2: samples 0-1 and 2 (seeded from sample 2's index)
    let (addr, seen) = serve(|req, _| b64_images(req.body["n"].as_u64().unwrap() as usize, None));
    let tmp = tempfile::tempdir().unwrap();
    let ep = Endpoint::new(&addr, None, None, None, None, true).with_max_n(Some(2)).with_retries(0);
    generate_geneval(&pick(&[3]), &ep, &opts(tmp.path(), 3, 11)).unwrap();
    let bodies = posts(&seen);
    assert_eq!(
        bodies.iter().map(|b| (b["n"].as_u64().unwrap(), b["seed"].as_u64().unwrap())).collect::<Vec<_>>(),
        [(2, 11), (1, sample_seed(11, 2))]
    );
    assert!(manifest(tmp.path())["served_model"].is_null(), "no model asked or answered");

    // without extensions no seed is sent at all
    let ep = Endpoint::new(&addr, None, None, None, None, false).with_max_n(Some(1));
    assert_eq!(ep.body("x", 1, 5), json!({ "prompt": "x", "n": 1, "response_format": "b64_json" }));
}

#[test]
fn a_400_about_n_falls_back_to_one_image_per_request() {
    // DALL·E 3's answer to n > 1
    let (addr, seen) = serve(|req, _| {
        let n = req.body["n"].as_u64().unwrap();
        if n > 1 {
            openai_error(
                400,
                &format!("Invalid 'n': integer above maximum value. Expected a value <= 1, but got {n} instead."),
                Some("n"),
            )
        } else {
            b64_images(1, Some("dall-e-3"))
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let ep = Endpoint::new(&addr, None, Some("dall-e-3".into()), None, None, true).with_retries(0);
    let r = generate_geneval(&pick(&[3, 4]), &ep, &opts(tmp.path(), 2, 9)).unwrap();
    assert_eq!(r.generated, 2);
    let ns: Vec<u64> = posts(&seen).iter().map(|b| b["n"].as_u64().unwrap()).collect();
    assert_eq!(ns, [2, 1, 1, 1, 1], "one refused request, then n=1 for the rest of the run");
    let seeds: Vec<u64> = posts(&seen)[1..].iter().map(|b| b["seed"].as_u64().unwrap()).collect();
    assert_eq!(seeds, [9, sample_seed(9, 1), 9, sample_seed(9, 1)]);
    assert_eq!(sample_count(tmp.path(), "00003"), 2);
    assert_eq!(sample_count(tmp.path(), "00004"), 2);
    let m = manifest(tmp.path());
    assert_eq!(m["served_model"], "dall-e-3");
    assert!(m["served_notes"].to_string().contains("one image per request"), "{m}");

    // the same refusal without `param`: the message text decides nothing, so it fails
    let (addr, seen) = serve(|req, _| {
        if req.body["n"].as_u64().unwrap() > 1 {
            (400, "application/json", br#"{"error": {"message": "n must be 1 for this model"}}"#.to_vec())
        } else {
            b64_images(1, None)
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let ep = Endpoint::new(&addr, None, None, None, None, false).with_retries(0);
    let err = format!("{:#}", generate_geneval(&pick(&[3]), &ep, &opts(tmp.path(), 2, 9)).unwrap_err());
    assert!(err.contains("answered 400: n must be 1 for this model"), "{err}");
    assert_eq!(posts(&seen).len(), 1, "no fallback without `param`");
}

#[test]
fn a_refused_response_format_is_dropped_and_the_served_model_recorded() {
    // gpt-image-1: refuses the field, always answers b64_json, names a dated model
    let (addr, seen) = serve(|req, _| {
        if req.body.get("response_format").is_some() {
            openai_error(400, "Unknown parameter: 'response_format'.", Some("response_format"))
        } else {
            b64_images(req.body["n"].as_u64().unwrap() as usize, Some("gpt-image-1-2025-04-23"))
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let ep = Endpoint::new(&addr, Some("sk-x".into()), Some("gpt-image-1".into()), None, None, false).with_retries(0);
    let r = generate_geneval(&pick(&[3, 4]), &ep, &opts(tmp.path(), 2, 1)).unwrap();
    assert_eq!(r.generated, 2);
    let bodies = posts(&seen);
    assert_eq!(bodies.len(), 3, "one refused request, then none with the field");
    assert_eq!(bodies[0]["response_format"], "b64_json");
    assert!(bodies[1..].iter().all(|b| b.get("response_format").is_none() && b["n"] == 2));
    let m = manifest(tmp.path());
    assert_eq!(m["served_model"], "gpt-image-1-2025-04-23", "the answer's model, not the requested alias");
    assert_eq!(m["served_models"], json!(["gpt-image-1-2025-04-23"]));
    assert!(m["served_notes"].to_string().contains("response_format"), "{m}");

    // asked up front: never sent
    let (addr, seen) = serve(|req, _| {
        assert!(req.body.get("response_format").is_none());
        b64_images(req.body["n"].as_u64().unwrap() as usize, None)
    });
    let tmp = tempfile::tempdir().unwrap();
    let ep = Endpoint::new(&addr, None, Some("gpt-image-1".into()), None, None, false).with_response_format(false);
    generate_geneval(&pick(&[3]), &ep, &opts(tmp.path(), 2, 1)).unwrap();
    assert_eq!(posts(&seen).len(), 1);
    let m = manifest(tmp.path());
    assert_eq!(m["settings"]["backend"]["response_format"], "omitted");
    assert_eq!(m["served_model"], "gpt-image-1");
}

#[test]
fn url_answers_are_downloaded() {
    let jpeg = {
        let mut b = Vec::new();
        RgbImage::from_pixel(8, 8, Rgb([200, 10, 10]))
            .write_to(&mut std::io::Cursor::new(&mut b), image::ImageFormat::Jpeg)
            .unwrap();
        b
    };
    let (addr, seen) = serve(move |req, addr| match (req.method.as_str(), req.path.as_str()) {
        ("POST", _) => {
            let n = req.body["n"].as_u64().unwrap() as usize;
            let mut data: Vec<Value> =
                (0..n).map(|i| json!({ "url": format!("{addr}/files/{i}.png?sig=abc") })).collect();
            // a JPEG by url and a data: url too
            data[0] = json!({ "url": format!("{addr}/files/x.jpg") });
            data[n - 1] = json!({ "url": format!("data:image/png;base64,{}",
                base64::engine::general_purpose::STANDARD.encode(png(77))) });
            (
                200,
                "application/json",
                json!({ "created": 0, "data": data, "model": "dall-e-2" }).to_string().into_bytes(),
            )
        }
        ("GET", "/files/x.jpg") => (200, "image/jpeg", jpeg.clone()),
        ("GET", p) if p.starts_with("/files/") => (200, "image/png", png(p.as_bytes()[7] - b'0')),
        _ => (404, "text/plain", b"no".to_vec()),
    });
    let tmp = tempfile::tempdir().unwrap();
    let ep = Endpoint::new(&addr, None, None, None, None, false).with_retries(0);
    generate_geneval(&pick(&[3]), &ep, &opts(tmp.path(), 3, 1)).unwrap();
    let gets: Vec<String> = seen.lock().unwrap().iter().filter(|s| s.method == "GET").map(|s| s.path.clone()).collect();
    assert_eq!(gets, ["/files/x.jpg", "/files/1.png?sig=abc"]);
    let dir = tmp.path().join("00003/samples");
    let read = |f: &str| {
        let bytes = std::fs::read(dir.join(f)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{f} is stored as PNG");
        image::load_from_memory(&bytes).unwrap().to_rgb8()
    };
    assert!(read("0000.png").get_pixel(4, 4)[0] > 150, "the JPEG, converted");
    assert_eq!(read("0001.png").get_pixel(0, 0), &Rgb([1, 7, 0]));
    assert_eq!(read("0002.png").get_pixel(0, 0), &Rgb([77, 7, 0]));
    assert_eq!(manifest(tmp.path())["served_model"], "dall-e-2");

    // a url that fails to download: one clear line
    let (addr, _) = serve(|req, addr| match req.method.as_str() {
        "POST" => (
            200,
            "application/json",
            json!({ "data": [{ "url": format!("{addr}/gone.png") }] }).to_string().into_bytes(),
        ),
        _ => (404, "text/plain", b"gone".to_vec()),
    });
    let tmp = tempfile::tempdir().unwrap();
    let ep = Endpoint::new(&addr, None, None, None, None, false).with_retries(0);
    let err = format!("{:#}", generate_geneval(&pick(&[3]), &ep, &opts(tmp.path(), 1, 1)).unwrap_err());
    assert!(err.contains("downloading") && err.contains("/gone.png") && err.contains("404"), "{err}");
    assert!(!err.contains('\n'), "{err}");
}

#[test]
fn other_refusals_fail_with_one_clear_line() {
    let (addr, seen) =
        serve(|_, _| openai_error(400, "Your request was rejected\nas a result of our safety system.", None));
    let tmp = tempfile::tempdir().unwrap();
    let ep = Endpoint::new(&addr, None, None, None, None, false).with_retries(2);
    let err = format!("{:#}", generate_geneval(&pick(&[3]), &ep, &opts(tmp.path(), 2, 1)).unwrap_err());
    assert!(err.contains("answered 400: Your request was rejected as a result of our safety system."), "{err}");
    assert!(err.contains("prompt 00003") && !err.contains('\n') && !err.contains("invalid_request_error"), "{err}");
    assert_eq!(posts(&seen).len(), 1, "a 400 is not retried");

    // n=1 refused about n: nothing left to split, so it fails
    let (addr, _) = serve(|_, _| openai_error(400, "Invalid 'n'.", Some("n")));
    let ep = Endpoint::new(&addr, None, None, None, None, false).with_max_n(Some(1)).with_retries(0);
    let tmp = tempfile::tempdir().unwrap();
    let err = format!("{:#}", generate_geneval(&pick(&[3]), &ep, &opts(tmp.path(), 2, 1)).unwrap_err());
    assert!(err.contains("answered 400: Invalid 'n'."), "{err}");

    // a non-JSON error page is cut to one line
    let (addr, _) = serve(|_, _| (502, "text/html", b"<html>\n<h1>Bad gateway</h1>\n</html>".to_vec()));
    let ep = Endpoint::new(&addr, None, None, None, None, false).with_retries(0);
    let tmp = tempfile::tempdir().unwrap();
    let err = format!("{:#}", generate_geneval(&pick(&[3]), &ep, &opts(tmp.path(), 1, 1)).unwrap_err());
    assert!(err.contains("answered 502: <html> <h1>Bad gateway</h1> </html>") && !err.contains('\n'), "{err}");
}
