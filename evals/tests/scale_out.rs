//! `janus-eval` across servers: several endpoints (requests spread, failures retried elsewhere,
//! Retry-After honoured, nothing lost or written twice, the same bytes whichever replica made them)
//! and shards (`--shard I/N`) writing one run into one folder. The servers are std TcpListener
//! threads speaking just enough HTTP/1.1, as in `endpoint_quirks.rs`, that can also drop a
//! connection without answering.

mod stub;
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use image::{Rgb, RgbImage};
use janus_evals::data::{geneval_prompts, GenevalPrompt};
use janus_evals::generate::*;
use serde_json::{json, Value};

/// What a stub does with a request.
enum Reply {
    /// Status, extra headers, JSON body.
    Answer(u16, Vec<(&'static str, String)>, Vec<u8>),
    /// Closes the connection without answering (a replica killed mid-request).
    Drop,
    /// Sends the head and half the body, then closes (killed while answering).
    Cut(Vec<u8>),
}

/// A stub server on a thread; returns its root URL and the request bodies it saw.
fn serve<F>(handler: F) -> (String, Arc<Mutex<Vec<Value>>>)
where
    F: Fn(&Value, usize) -> Reply + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Some((_, body)) = stub::read_request(&stream) else { continue };
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let k = {
                let mut s = seen2.lock().unwrap();
                s.push(body.clone());
                s.len() - 1
            };
            let head = |status: u16, headers: &[(&str, String)], len: usize| {
                let mut h =
                    format!("HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n");
                for (k, v) in headers {
                    h.push_str(&format!("{k}: {v}\r\n"));
                }
                h + "connection: close\r\n\r\n"
            };
            match handler(&body, k) {
                Reply::Answer(status, headers, answer) => {
                    let _ = stream.write_all(head(status, &headers, answer.len()).as_bytes());
                    let _ = stream.write_all(&answer);
                }
                Reply::Drop => {}
                Reply::Cut(answer) => {
                    let _ = stream.write_all(head(200, &[], answer.len()).as_bytes());
                    let _ = stream.write_all(&answer[..answer.len() / 2]);
                }
            }
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    });
    (addr, seen)
}

/// A deterministic image of (prompt, seed, index), as a janus replica's would be.
fn png(prompt: &str, seed: u64, i: usize) -> Vec<u8> {
    let h = prompt.bytes().fold(seed.wrapping_mul(31), |a, b| a.wrapping_mul(131).wrapping_add(b as u64));
    let px = Rgb([(h % 251) as u8, (h / 251 % 251) as u8, i as u8]);
    janus::input::image::png_bytes(&RgbImage::from_pixel(4, 4, px)).unwrap()
}

/// The answer a replica gives: `n` images seeded as janus serve seeds them.
fn images(body: &Value) -> Vec<u8> {
    let n = body["n"].as_u64().unwrap() as usize;
    let (prompt, seed) = (body["prompt"].as_str().unwrap(), body["seed"].as_u64().unwrap());
    let data: Vec<Value> = (0..n)
        .map(|i| json!({ "b64_json": base64::engine::general_purpose::STANDARD.encode(png(prompt, seed, i)) }))
        .collect();
    json!({ "created": 0, "data": data, "model": "janus-stub" }).to_string().into_bytes()
}

fn ok(body: &Value) -> Reply {
    Reply::Answer(200, vec![], images(body))
}

fn status(code: u16, retry_after: Option<u64>) -> Reply {
    let headers = retry_after.map(|s| vec![("retry-after", s.to_string())]).unwrap_or_default();
    let body = json!({ "error": { "message": format!("busy ({code})"), "type": "server_error" } });
    Reply::Answer(code, headers, body.to_string().into_bytes())
}

fn prompts(n: usize) -> Vec<GenevalPrompt> {
    geneval_prompts().into_iter().take(n).collect()
}

fn opts(out: &Path, concurrency: usize, shard: Option<Shard>) -> GenerateOptions {
    GenerateOptions {
        out: out.to_path_buf(),
        samples: 2,
        seed: 5,
        concurrency,
        settings: json!({}),
        selection: json!({}),
        progress: false,
        shard,
    }
}

fn fast() -> RetryPolicy {
    RetryPolicy { retries: 4, backoff: Duration::from_millis(10), max_backoff: Duration::from_millis(50) }
}

fn pool(addrs: &[&str]) -> Endpoint {
    Endpoint::pool(addrs, None, None, None, None, true).with_retry_policy(fast())
}

fn manifest(out: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap()
}

/// Every file under a run folder but run.json and its lock, with its bytes.
fn files(out: &Path) -> Vec<(String, Vec<u8>)> {
    let mut all = Vec::new();
    let mut stack = vec![out.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.file_name().unwrap().to_string_lossy().starts_with("run.json")
                && !p.file_name().unwrap().to_string_lossy().starts_with(".run")
            {
                all.push((p.strip_prefix(out).unwrap().display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    all.sort();
    all
}

/// How often each prompt was asked for.
fn asked(seen: &[&Arc<Mutex<Vec<Value>>>]) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for s in seen {
        for b in s.lock().unwrap().iter() {
            *m.entry(b["prompt"].as_str().unwrap().to_string()).or_default() += 1;
        }
    }
    m
}

#[test]
fn requests_spread_over_endpoints_and_the_images_do_not_depend_on_which() {
    let (a, seen_a) = serve(|b, _| {
        std::thread::sleep(Duration::from_millis(20));
        ok(b)
    });
    let (b, seen_b) = serve(|b, _| {
        std::thread::sleep(Duration::from_millis(20));
        ok(b)
    });
    let tmp = tempfile::tempdir().unwrap();
    let r = generate_geneval(&prompts(12), &pool(&[&a, &b]), &opts(tmp.path(), 4, None)).unwrap();
    assert_eq!(r.generated, 12);
    let (na, nb) = (seen_a.lock().unwrap().len(), seen_b.lock().unwrap().len());
    assert_eq!(na + nb, 12, "one request per prompt, none twice");
    assert!(na >= 3 && nb >= 3, "spread: {na} and {nb}");
    let m = manifest(tmp.path());
    assert_eq!(m["settings"]["backend"]["endpoints"].as_array().unwrap().len(), 2);
    let t = &m["sessions"][0]["traffic"];
    assert_eq!(t["requests"], 12);
    assert_eq!(t["retries"], 0);

    // the same run from one replica alone: the same bytes
    let alone = tempfile::tempdir().unwrap();
    generate_geneval(&prompts(12), &pool(&[&b]), &opts(alone.path(), 1, None)).unwrap();
    assert_eq!(files(tmp.path()), files(alone.path()));
}

#[test]
fn a_dead_endpoint_is_skipped_and_nothing_is_lost() {
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    }; // closed: connections are refused
    let (good, seen) = serve(|b, _| ok(b));
    let tmp = tempfile::tempdir().unwrap();
    let r = generate_geneval(&prompts(6), &pool(&[&dead, &good]), &opts(tmp.path(), 2, None)).unwrap();
    assert_eq!(r.generated, 6);
    assert_eq!(seen.lock().unwrap().len(), 6, "every prompt answered once by the live endpoint");
    let t = &manifest(tmp.path())["sessions"][0]["traffic"];
    let dead_url = format!("{dead}/v1/images/generations");
    assert!(t["endpoints"][&dead_url]["failed"]["transport"].as_u64().unwrap() >= 1, "{t}");
    assert_eq!(t["endpoints"][&dead_url]["ok"], 0);
    assert!(t["retries"].as_u64().unwrap() >= 1);
    assert_eq!(files(tmp.path()).len(), 6 * 3, "metadata + 2 samples per prompt");
}

#[test]
fn answers_lost_in_flight_are_retried_and_written_once() {
    // the first attempt of every prompt is dropped (half of them cut mid-body), as by a replica
    // that is killed; the retry succeeds
    let first = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
    let (addr, seen) = serve(move |b, k| {
        if first.lock().unwrap().insert(b["prompt"].to_string()) {
            if k % 2 == 0 {
                Reply::Drop
            } else {
                Reply::Cut(images(b))
            }
        } else {
            ok(b)
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let r = generate_geneval(&prompts(5), &pool(&[&addr]), &opts(tmp.path(), 2, None)).unwrap();
    assert_eq!(r.generated, 5);
    assert!(asked(&[&seen]).values().all(|&n| n == 2), "{:?}", asked(&[&seen]));
    let clean = tempfile::tempdir().unwrap();
    let (addr2, _) = serve(|b, _| ok(b));
    generate_geneval(&prompts(5), &pool(&[&addr2]), &opts(clean.path(), 1, None)).unwrap();
    assert_eq!(files(tmp.path()), files(clean.path()), "the retried run holds exactly the right files");
    assert_eq!(manifest(tmp.path())["sessions"][0]["traffic"]["retries"], 5);
}

#[test]
fn retry_after_is_honoured() {
    // one endpoint: the retry waits for Retry-After (1 s), not the 10 ms backoff
    let (addr, seen) = serve(|b, k| if k == 0 { status(429, Some(1)) } else { ok(b) });
    let tmp = tempfile::tempdir().unwrap();
    let t = Instant::now();
    generate_geneval(&prompts(1), &pool(&[&addr]), &opts(tmp.path(), 1, None)).unwrap();
    assert!(t.elapsed() >= Duration::from_millis(950), "{:?}", t.elapsed());
    assert_eq!(seen.lock().unwrap().len(), 2);

    // two endpoints: a 503 with Retry-After 30 moves the request to the other at once, and the
    // busy one is left alone while it cools down
    let (busy, seen_busy) = serve(|_, _| status(503, Some(30)));
    let (idle, seen_idle) = serve(|b, _| ok(b));
    let tmp = tempfile::tempdir().unwrap();
    let t = Instant::now();
    generate_geneval(&prompts(4), &pool(&[&busy, &idle]), &opts(tmp.path(), 1, None)).unwrap();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(seen_busy.lock().unwrap().len(), 1);
    assert_eq!(seen_idle.lock().unwrap().len(), 4);
}

#[test]
fn only_retriable_failures_are_retried_and_errors_are_typed() {
    let counter = Arc::new(AtomicUsize::new(0));
    for (code, tries) in [(500u16, 1usize), (400, 1), (502, 5), (504, 5), (503, 5)] {
        let (addr, seen) = serve(move |_, _| status(code, None));
        let tmp = tempfile::tempdir().unwrap();
        let err = generate_geneval(&prompts(1), &pool(&[&addr]), &opts(tmp.path(), 1, None)).unwrap_err();
        let e = err.downcast_ref::<EndpointError>().expect("an EndpointError");
        assert_eq!(e.status(), Some(code));
        assert_eq!(matches!(e, EndpointError::GaveUp { .. }), tries > 1, "{e}");
        assert_eq!(seen.lock().unwrap().len(), tries, "{code}");
        assert!(format!("{err:#}").contains(&format!("answered {code}")), "{err:#}");
        counter.fetch_add(1, Ordering::Relaxed);
    }
    assert_eq!(counter.load(Ordering::Relaxed), 5);
}

#[test]
fn shards_written_into_one_folder_form_one_run() {
    let (addr, seen) = serve(|b, _| ok(b));
    let tmp = tempfile::tempdir().unwrap();
    let all = prompts(10);
    // three shards at once, as three pods of an Indexed Job on a shared volume
    std::thread::scope(|s| {
        for i in 0..3 {
            let (all, addr, out) = (&all, &addr, tmp.path());
            s.spawn(move || {
                let shard = Shard::new(i, 3).unwrap();
                let r = generate_geneval(all, &pool(&[addr]), &opts(out, 2, Some(shard))).unwrap();
                assert_eq!(r.generated, (0..10).filter(|p| shard.takes(*p)).count());
            });
        }
    });
    assert!(asked(&[&seen]).values().all(|&n| n == 1) && asked(&[&seen]).len() == 10, "each prompt once");
    let m = manifest(tmp.path());
    let sessions = m["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 3, "{m}");
    let mut shards: Vec<(u64, u64)> = sessions
        .iter()
        .map(|s| (s["shard"]["index"].as_u64().unwrap(), s["shard"]["prompts"].as_u64().unwrap()))
        .collect();
    shards.sort();
    assert_eq!(shards, [(0, 4), (1, 3), (2, 3)]);
    assert!(sessions.iter().all(|s| s["shard"]["count"] == 3 && s["finished"].is_string()));
    assert!(m["finished"].is_string(), "complete once every shard is");

    let whole = tempfile::tempdir().unwrap();
    generate_geneval(&all, &pool(&[&addr]), &opts(whole.path(), 2, None)).unwrap();
    assert_eq!(files(tmp.path()), files(whole.path()));
}

#[test]
fn one_shard_alone_does_not_finish_the_run() {
    let (addr, _) = serve(|b, _| ok(b));
    let tmp = tempfile::tempdir().unwrap();
    let all = prompts(4);
    generate_geneval(&all, &pool(&[&addr]), &opts(tmp.path(), 1, Some(Shard::new(1, 2).unwrap()))).unwrap();
    assert!(manifest(tmp.path())["finished"].is_null());
    assert_eq!(files(tmp.path()).len(), 2 * 3, "prompts 1 and 3 only");
    assert!(tmp.path().join("00001").is_dir() && tmp.path().join("00003").is_dir());
    generate_geneval(&all, &pool(&[&addr]), &opts(tmp.path(), 1, Some(Shard::new(0, 2).unwrap()))).unwrap();
    assert!(manifest(tmp.path())["finished"].is_string());
}

#[test]
fn shards_are_parsed_and_taken_from_the_job_index() {
    assert_eq!("1/4".parse::<Shard>(), Ok(Shard { index: 1, count: 4 }));
    assert_eq!("4/4".parse::<Shard>(), Err(ShardError::OutOfRange { index: 4, count: 4 }));
    assert_eq!("0/0".parse::<Shard>(), Err(ShardError::OutOfRange { index: 0, count: 0 }));
    assert!(matches!("x".parse::<Shard>(), Err(ShardError::Syntax(_))));
    assert!(matches!("1/".parse::<Shard>(), Err(ShardError::Syntax(_))));
    assert_eq!(Shard::resolve(None, Some(3), Some("2")), Ok(Some(Shard { index: 2, count: 3 })));
    assert_eq!(Shard::resolve(None, Some(3), None), Err(ShardError::NoIndex));
    assert_eq!(Shard::resolve(None, Some(3), Some("3")), Err(ShardError::OutOfRange { index: 3, count: 3 }));
    assert!(matches!(Shard::resolve(None, Some(3), Some("a")), Err(ShardError::BadIndex(_))));
    let s = Shard::new(0, 2).unwrap();
    assert_eq!(Shard::resolve(Some(s), Some(2), Some("1")), Ok(Some(s)), "--shard wins over the job index");
    assert!(matches!(Shard::resolve(Some(s), Some(3), None), Err(ShardError::Conflict { .. })));
    assert_eq!(Shard::resolve(None, None, Some("5")), Ok(None));
    assert!((0..9).filter(|p| s.takes(*p)).eq([0, 2, 4, 6, 8]));
}
