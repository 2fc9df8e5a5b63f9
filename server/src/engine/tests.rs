//! The real engine on the tiny checkpoint: batching, previews, cancellation, failures,
//! decodes interleaved with other work, and the out-of-memory path through the router.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;
use janus::{Conversation, Janus, ModelFiles, Prompter, SamplingParams, TextParams};
use tokio::sync::mpsc;

use super::*;

fn tiny() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/tiny/janus-pro-tiny").to_string()
}

fn engine_with(queue: usize, wait_ms: u64) -> Arc<ModelEngine> {
    engine_chunked(queue, wait_ms, 4)
}

fn engine_chunked(queue: usize, wait_ms: u64, decode_chunk: usize) -> Arc<ModelEngine> {
    let e = ModelEngine::start(EngineOptions {
        model: tiny(),
        device: "cpu".into(),
        dtype: None,
        quant: janus::Quant::None,
        max_batch_images: 16,
        queue_capacity: queue,
        decode_chunk,
        batch_wait: Duration::from_millis(wait_ms),
        max_text_sessions: None,
        shared_steps: true,
        prefix_cache_positions: janus::limits::DEFAULT_PREFIX_CACHE_POSITIONS,
    });
    let t = Instant::now();
    while e.status() == EngineStatus::Loading {
        assert!(t.elapsed() < Duration::from_secs(60), "model did not load");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(e.status(), EngineStatus::Ready);
    e
}

/// The tiny model's prompter (tokenizer and preprocessing, no weights).
fn prompter() -> Prompter {
    Prompter::load(&ModelFiles::from_dir(std::path::Path::new(&tiny()), "tiny").unwrap()).unwrap()
}

fn image_req(prompt: &str, n: usize, seed: u64, partial_images: usize) -> ImagesRequest {
    let request = ImageRequest { prompt: prompt.into(), n, seed, params: SamplingParams::default(), partial_images };
    ImagesRequest::new(&prompter(), request).unwrap()
}

fn chat_req(conv: &Conversation, params: &TextParams) -> ChatRequest {
    ChatRequest::new(&prompter(), conv, params).unwrap()
}

/// Collects (partials, images) until Done; panics on Failed.
fn collect(mut rx: mpsc::Receiver<ImageEvent>) -> (Vec<(usize, usize)>, Vec<RgbImage>) {
    let (mut partials, mut images) = (Vec::new(), Vec::new());
    while let Some(ev) = rx.blocking_recv() {
        match ev {
            ImageEvent::Partial { index, partial_index, .. } => partials.push((index, partial_index)),
            ImageEvent::Image { index, image } => {
                assert_eq!(index, images.len());
                images.push(image)
            }
            ImageEvent::Done { .. } => return (partials, images),
            ImageEvent::Failed(e) => panic!("request failed: {e}"),
        }
    }
    panic!("channel closed before Done");
}

fn wait_idle(e: &ModelEngine) {
    let t = Instant::now();
    while !e.is_idle() {
        assert!(t.elapsed() < Duration::from_secs(30), "engine never became idle");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn concurrent_requests_batch_and_match_sequential_ones() {
    let e = engine_with(64, 300);
    let prompts = [
        "a cat",
        "a red bicycle",
        "two dogs on a beach",
        "a lighthouse",
        "snow",
        "a bowl of fruit",
        "a city at night",
        "an owl",
    ];
    let rxs: Vec<_> =
        prompts.iter().enumerate().map(|(i, p)| e.submit_images(image_req(p, 1, i as u64, 0)).unwrap()).collect();
    let together: Vec<RgbImage> = rxs.into_iter().map(|rx| collect(rx).1.remove(0)).collect();
    assert_eq!(e.largest_batch(), 8, "the 8 concurrent requests run as one CFG batch");
    for (i, p) in prompts.iter().enumerate() {
        let alone = collect(e.submit_images(image_req(p, 1, i as u64, 0)).unwrap()).1.remove(0);
        assert!(alone == together[i], "request {i} differs when batched");
    }
    wait_idle(&e);
}

#[test]
fn partial_images_come_before_the_final_ones() {
    let e = engine_with(8, 0);
    let (partials, images) = collect(e.submit_images(image_req("a boat", 2, 5, 2)).unwrap());
    assert_eq!(images.len(), 2);
    assert_eq!(partials, vec![(0, 0), (1, 0), (0, 1), (1, 1)]);
}

#[test]
fn a_dropped_client_leaves_and_others_finish() {
    let e = engine_with(8, 50);
    let gone = e.submit_images(image_req("a cat", 3, 1, 0)).unwrap();
    let stays = e.submit_images(image_req("a dog", 1, 2, 0)).unwrap();
    drop(gone);
    let (_, images) = collect(stays);
    assert_eq!(images.len(), 1);
    let alone = collect(e.submit_images(image_req("a dog", 1, 2, 0)).unwrap()).1;
    assert!(alone[0] == images[0]);
    wait_idle(&e);
}

#[test]
fn bad_requests_fail_alone_and_the_engine_keeps_serving() {
    let e = engine_with(8, 0);
    let long = ImageRequest { prompt: "word ".repeat(300), ..image_req("x", 1, 0, 0).request };
    assert!(matches!(ImagesRequest::new(&prompter(), long.clone()), Err(janus::Error::PromptTooLong { .. })));
    // Tokens that skipped preparation are checked again: the request fails alone.
    let mut rx = e.submit_images(ImagesRequest { request: long, prompt_ids: vec![1; 300], edit: None }).unwrap();
    match rx.blocking_recv() {
        Some(ImageEvent::Failed(EngineError::PromptTooLong { tokens, max })) => assert!(tokens > max),
        other => panic!("expected a prompt-too-long failure, got {other:?}"),
    }
    assert!(
        matches!(e.submit_images(image_req("x", 17, 0, 0)), Err(EngineError::Invalid(i)) if i.field == janus::Field::N)
    );
    assert_eq!(collect(e.submit_images(image_req("a tree", 1, 0, 0)).unwrap()).1.len(), 1);
}

#[test]
fn chat_answers_like_the_library_and_streams() {
    let e = engine_with(8, 0);
    let dir = std::path::PathBuf::from(tiny());
    let img = janus::input::preprocess::load_image(&dir.join("../images/square.png")).unwrap();
    let conv = Conversation::single(img, "Describe this image.");
    let params = TextParams { max_new_tokens: Some(10), ..Default::default() };
    let model = Janus::open(&tiny(), "cpu", None, janus::Quant::None).unwrap();
    let want = model.answer(&conv, &params, |_| true).unwrap();
    let prefix = *model.prepare(&conv).unwrap().boundaries.last().unwrap();
    assert!(prefix > 0, "the conversation up to its question is a prefix");
    // The engine's first answer computes its prompt; the second copies all but the tail from the
    // prefix cache. Both are the library's answer.
    for cached in [0, prefix] {
        let mut rx = e.submit_chat(chat_req(&conv, &params)).unwrap();
        let mut text = String::new();
        let mut started = false;
        loop {
            match rx.blocking_recv().expect("events until Done") {
                ChatEvent::Started { prompt_tokens } => {
                    started = true;
                    assert_eq!(prompt_tokens, want.prompt_tokens)
                }
                ChatEvent::Delta { text: d, .. } => text.push_str(&d),
                ChatEvent::Done { completion_tokens, cached_tokens, finish_reason, .. } => {
                    assert_eq!(completion_tokens, want.token_ids.len());
                    assert_eq!(cached_tokens, cached);
                    assert_eq!(finish_reason, want.finish_reason);
                    break;
                }
                ChatEvent::Failed(e) => panic!("{e}"),
            }
        }
        assert!(started);
        assert_eq!(text, want.text);
    }
}

/// A question about the tiny model's square image (at most 40 tokens), and the library's answer
/// to it alone.
fn a_question_and_its_answer() -> (Conversation, TextParams, janus::TextOutput) {
    let dir = std::path::PathBuf::from(tiny());
    let img = janus::input::preprocess::load_image(&dir.join("../images/square.png")).unwrap();
    let params = TextParams { max_new_tokens: Some(40), ..Default::default() };
    let conv = Conversation::single(img, "What is it?");
    let want = Janus::open(&tiny(), "cpu", None, janus::Quant::None).unwrap().answer(&conv, &params, |_| true).unwrap();
    (conv, params, want)
}

/// A request for three sampled answers: answer i is the library's answer alone on the seed
/// stream (seed, i), the others start once the first has read the prompt and copy it from the
/// prefix cache, and the request ends once all three are done.
#[test]
fn n_answers_are_each_the_answer_alone_on_its_seed_stream() {
    let e = engine_with(4, 4);
    let dir = std::path::PathBuf::from(tiny());
    let img = janus::input::preprocess::load_image(&dir.join("../images/square.png")).unwrap();
    let conv = Conversation::single(img, "What is it?");
    let sampling = janus::SamplingParams { temperature: 1.0, ..Default::default() };
    let params = TextParams { max_new_tokens: Some(12), sampling, seed: 7, ..Default::default() };
    let model = Janus::open(&tiny(), "cpu", None, janus::Quant::None).unwrap();
    let want: Vec<janus::TextOutput> =
        (0..3).map(|i| model.answer(&conv, &params.answer(i), |_| true).unwrap()).collect();
    assert!(want[0].token_ids != want[1].token_ids || want[1].token_ids != want[2].token_ids);
    let mut req = chat_req(&conv, &params);
    req.n = 3;
    let mut rx = e.submit_chat(req).unwrap();
    let (mut texts, mut done, mut started) = (vec![String::new(); 3], vec![None; 3], 0);
    while let Some(ev) = rx.blocking_recv() {
        match ev {
            ChatEvent::Started { .. } => started += 1,
            ChatEvent::Delta { index, text, .. } => texts[index].push_str(&text),
            ChatEvent::Done { index, completion_tokens, cached_tokens, .. } => {
                done[index] = Some((completion_tokens, cached_tokens))
            }
            ChatEvent::Failed(e) => panic!("{e}"),
        }
    }
    assert_eq!(started, 1, "one Started per request");
    for (i, w) in want.iter().enumerate() {
        assert_eq!(texts[i], w.text, "answer {i}");
        let (tokens, cached) = done[i].unwrap_or_else(|| panic!("answer {i} not done"));
        assert_eq!(tokens, w.token_ids.len());
        if i > 0 {
            assert!(cached > 0, "answer {i} read the prompt from the prefix cache");
        }
    }
    let mut too_many = chat_req(&conv, &params);
    too_many.n = 9;
    assert!(matches!(e.submit_chat(too_many), Err(EngineError::Invalid(i)) if i.field == janus::Field::N));
    wait_idle(&e);
}

/// Finished images and previews are decoded one chunk per turn: a text answer running beside a
/// cohort never waits for more than `decode_chunk` images to be decoded between two of its
/// steps. The answer shares the cohort's LM steps, and both are what each gives alone.
#[test]
fn decodes_are_interleaved_one_chunk_per_turn() {
    let e = engine_chunked(8, 50, 1);
    let (conv, params, want) = a_question_and_its_answer();
    let images = e.submit_images(image_req("a boat", 4, 5, 1)).unwrap();
    let chat = e.submit_chat(chat_req(&conv, &params)).unwrap();
    let (partials, together) = collect(images);
    assert_eq!(partials.len(), 4);
    let (mut chat, mut text) = (chat, String::new());
    while let Some(ev) = chat.blocking_recv() {
        match ev {
            ChatEvent::Delta { text: d, .. } => text.push_str(&d),
            ChatEvent::Failed(e) => panic!("{e}"),
            _ => {}
        }
    }
    assert_eq!(text, want.text, "the answer that shared the cohort's steps is the answer alone");
    assert!(e.shared.shared_steps.load(Ordering::SeqCst) > 0, "the answer and the cohort shared steps");
    assert_eq!(e.shared.largest_decode_turn.load(Ordering::SeqCst), 1, "at most one image decoded per turn");
    let alone = collect(e.submit_images(image_req("a boat", 4, 5, 0)).unwrap()).1;
    assert!(alone == together);
    wait_idle(&e);
}

/// A shared step (a cohort's rows and a text answer's in one forward) that fails as a device
/// out of memory fails the cohort alone: the answer takes its step on its own and is what it
/// is alone, token for token.
#[test]
fn a_failed_shared_step_fails_the_cohort_and_not_the_answer_beside_it() {
    let e = engine_chunked(8, 50, 1);
    let (conv, params, want) = a_question_and_its_answer();
    e.shared.fail_shared_steps.store(1, Ordering::SeqCst);
    let mut images = e.submit_images(image_req("a boat", 4, 5, 0)).unwrap();
    let mut chat = e.submit_chat(chat_req(&conv, &params)).unwrap();
    let failed = loop {
        match images.blocking_recv().expect("events until the end") {
            ImageEvent::Failed(err) => break err,
            ImageEvent::Done { .. } => panic!("the cohort finished although its shared step failed"),
            _ => {}
        }
    };
    assert!(matches!(failed, EngineError::OutOfMemory(_)), "{failed:?}");
    assert_eq!(e.shared.fail_shared_steps.load(Ordering::SeqCst), 0, "a shared step failed");
    let mut text = String::new();
    while let Some(ev) = chat.blocking_recv() {
        match ev {
            ChatEvent::Delta { text: d, .. } => text.push_str(&d),
            ChatEvent::Failed(e) => panic!("the answer failed with the cohort: {e}"),
            ChatEvent::Done { completion_tokens, .. } => {
                assert_eq!(completion_tokens, want.token_ids.len());
                break;
            }
            ChatEvent::Started { .. } => {}
        }
    }
    assert_eq!(text, want.text, "the answer is what it is alone");
    wait_idle(&e);
}

#[test]
fn full_queue_refuses_and_shutdown_stops_accepting() {
    let e = engine_with(1, 0);
    // Keep the engine busy (16 images fill the batch), then fill the one queue slot: the
    // next request must be refused, however quickly the engine drains its channel.
    let busy = e.submit_images(image_req("a", 16, 0, 0)).unwrap();
    let t = Instant::now();
    while e.queue_depth() > 0 {
        assert!(t.elapsed() < Duration::from_secs(10), "the first request never started");
        std::thread::sleep(Duration::from_millis(1));
    }
    let queued = e.submit_images(image_req("b", 16, 1, 0)).unwrap();
    let refused = e.submit_images(image_req("c", 16, 2, 0));
    assert!(matches!(refused, Err(EngineError::QueueFull { queued: 1, .. })), "{refused:?}");
    e.shutdown();
    assert!(matches!(e.submit_images(image_req("c", 1, 0, 0)), Err(EngineError::ShuttingDown)));
    drop(busy);
    drop(queued);
    wait_idle(&e);
}

/// A batch step that fails with the device's out-of-memory error: every request of that batch gets
/// a 503 (OpenAI envelope, Retry-After) through the real router, and the next request runs
/// and gives the same images as before the fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_memory_batch_fails_with_503_and_the_engine_recovers() {
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let e = tokio::task::spawn_blocking(|| engine_with(8, 300)).await.unwrap();
    let app = crate::http::router(e.clone(), crate::http::HttpConfig::default());
    let post = |prompt: &str, seed: u64| {
        let body = serde_json::json!({"prompt": prompt, "n": 2, "seed": seed});
        let req = axum::http::Request::post("/v1/images/generations")
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let app = app.clone();
        async move {
            let resp = app.oneshot(req).await.unwrap();
            let (parts, body) = resp.into_parts();
            let bytes = body.collect().await.unwrap().to_bytes();
            let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            (parts.status.as_u16(), parts.headers, json)
        }
    };
    let (status, _, reference) = post("a red fox", 7).await;
    assert_eq!(status, 200, "{reference}");

    // Two requests that share one batch; its first step runs out of memory.
    e.shared.fail_steps.store(1, Ordering::SeqCst);
    let ((s1, h1, b1), (s2, _, b2)) = tokio::join!(post("a red fox", 7), post("a blue bird", 8));
    for (s, b) in [(s1, &b1), (s2, &b2)] {
        assert_eq!(s, 503, "{b}");
        assert_eq!(b["error"]["code"], "out_of_memory", "{b}");
        assert_eq!(b["error"]["type"], "server_error", "{b}");
        assert!(b["error"]["message"].as_str().unwrap().contains("out of memory"), "{b}");
    }
    assert_eq!(h1.get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    assert_eq!(e.shared.fail_steps.load(Ordering::SeqCst), 0, "exactly one step failed");

    let (status, _, again) = post("a red fox", 7).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["data"], reference["data"], "the images after the fault equal those before it");
    tokio::task::spawn_blocking(move || wait_idle(&e)).await.unwrap();
}

#[test]
fn a_model_that_fails_to_load_says_why() {
    let e = ModelEngine::start(EngineOptions {
        model: "/no/such/model".into(),
        device: "cpu".into(),
        dtype: None,
        quant: janus::Quant::None,
        max_batch_images: 4,
        queue_capacity: 4,
        decode_chunk: 4,
        batch_wait: Duration::ZERO,
        max_text_sessions: None,
        shared_steps: true,
        prefix_cache_positions: janus::limits::DEFAULT_PREFIX_CACHE_POSITIONS,
    });
    let t = Instant::now();
    while e.status() == EngineStatus::Loading {
        assert!(t.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(5));
    }
    match e.status() {
        EngineStatus::Failed(m) => assert!(m.contains("/no/such/model"), "{m}"),
        s => panic!("{s:?}"),
    }
    assert!(matches!(e.submit_images(image_req("a", 1, 0, 0)), Err(EngineError::LoadFailed(_))));
}
