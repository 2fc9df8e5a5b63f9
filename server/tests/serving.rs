//! The real engine on the tiny checkpoint behind the real router, in a process of its own so
//! that the global metrics recorder holds only what this test did: usage counts are the model's
//! own token counts (not a fake's), and `/metrics` counts exactly the requests made here.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::body::Body;
use base64::Engine as _;
use http_body_util::BodyExt;
use janus::{Conversation, Janus, SamplingParams, TextParams};
use janus_server::engine::{Engine, EngineOptions, EngineStatus, ModelEngine};
use janus_server::http::{router, HttpConfig};
use serde_json::{json, Value};
use tower::ServiceExt;

fn tiny() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/tiny/janus-pro-tiny").to_string()
}

async fn call(app: &axum::Router, req: axum::http::Request<Body>) -> (u16, String) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn post(path: &str, body: &Value) -> axum::http::Request<Body> {
    axum::http::Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// The value of the sample of `metric` whose labels include all of `labels`.
fn sample(text: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) || l.starts_with(&format!("{metric} ")))
        .find(|l| labels.iter().all(|lab| l.contains(lab)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_the_models_token_count_and_metrics_count_these_requests() {
    let engine = ModelEngine::start(EngineOptions {
        model: tiny(),
        device: "cpu".into(),
        dtype: None,
        quant: janus::Quant::None,
        max_batch_images: 4,
        queue_capacity: 8,
        decode_chunk: 2,
        batch_wait: Duration::ZERO,
        max_text_sessions: None,
        shared_steps: true,
        prefix_cache_positions: janus::limits::DEFAULT_PREFIX_CACHE_POSITIONS,
    });
    let t = Instant::now();
    while engine.status() == EngineStatus::Loading {
        assert!(t.elapsed() < Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let app = router(engine.clone(), HttpConfig::default());
    let model = Janus::open(&tiny(), "cpu", None, janus::Quant::None).unwrap();

    // Images: input tokens are the prompt's with the template; output tokens n × the grid.
    let prompt = "a lighthouse on a cliff";
    let (status, body) =
        call(&app, post("/v1/images/generations", &json!({"prompt": prompt, "n": 2, "seed": 3}))).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let ids = &model.t2i_jobs(prompt, 1, 3, SamplingParams::default()).unwrap()[0].prompt_ids;
    assert_eq!(v["usage"]["input_tokens"], ids.len());
    assert_eq!(v["usage"]["output_tokens"], 2 * model.num_image_tokens());
    assert_eq!(v["data"].as_array().unwrap().len(), 2);

    // Chat with an image, twice: prompt tokens as the model counts them, completion as it
    // answers; the second answer read all but its tail from the prefix cache, image included.
    let png = std::fs::read(PathBuf::from(tiny()).join("../images/square.png")).unwrap();
    let url = format!("data:image/png;base64,{}", base64::prelude::BASE64_STANDARD.encode(&png));
    let body = json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "What is this?"}]}],
        "max_tokens": 9});
    let img = janus::input::preprocess::load_image(&PathBuf::from(tiny()).join("../images/square.png")).unwrap();
    let conv = Conversation::single(img, "What is this?");
    let want = model.answer(&conv, &TextParams { max_new_tokens: Some(9), ..Default::default() }, |_| true).unwrap();
    let prefix = *model.prepare(&conv).unwrap().boundaries.last().unwrap();
    assert!(prefix > 0);
    for cached in [0, prefix] {
        let (status, text) = call(&app, post("/v1/chat/completions", &body)).await;
        assert_eq!(status, 200, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["usage"]["prompt_tokens"], want.prompt_tokens);
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], cached);
        assert_eq!(v["usage"]["completion_tokens"], want.token_ids.len());
        assert_eq!(v["choices"][0]["message"]["content"], want.text);
    }

    // One refused request.
    let (status, _) = call(&app, post("/v1/images/generations", &json!({"prompt": ""}))).await;
    assert_eq!(status, 400);

    let (status, text) = call(&app, axum::http::Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert_eq!(status, 200);
    let requests = |route: &str, status: &str| {
        let labels = [format!("route=\"{route}\""), format!("status=\"{status}\"")];
        sample(&text, "janus_http_requests_total", &[labels[0].as_str(), labels[1].as_str()])
    };
    assert_eq!(requests("/v1/images/generations", "200"), Some(1.0), "{text}");
    assert_eq!(requests("/v1/images/generations", "400"), Some(1.0), "{text}");
    assert_eq!(requests("/v1/chat/completions", "200"), Some(2.0), "{text}");
    let tokens = sample(&text, "janus_image_tokens_total", &[]);
    assert_eq!(tokens, Some((2 * model.num_image_tokens()) as f64), "{text}");
    let info = sample(&text, "janus_model_info", &["quant=\"none\"", "dtype=\"f32\"", "device=\"cpu\""]);
    assert_eq!(info, Some(1.0), "{text}");
    // The engine's own view: two text answers and one image request waited in the queue, the
    // answers' first tokens and their other gaps were timed, the prompt tokens and those read
    // from the prefix cache counted, and rows per step were counted.
    assert_eq!(sample(&text, "janus_time_to_first_token_seconds_count", &[]), Some(2.0), "{text}");
    let gaps = sample(&text, "janus_inter_token_seconds_count", &[]).unwrap_or(0.0);
    assert_eq!(gaps as usize, 2 * want.token_ids.len().saturating_sub(1), "{text}");
    assert_eq!(sample(&text, "janus_queue_wait_seconds_count", &["kind=\"text\""]), Some(2.0), "{text}");
    assert_eq!(sample(&text, "janus_prompt_tokens_total", &[]), Some(2.0 * want.prompt_tokens as f64), "{text}");
    assert_eq!(sample(&text, "janus_cached_prompt_tokens_total", &[]), Some(prefix as f64), "{text}");
    assert_eq!(sample(&text, "janus_queue_wait_seconds_count", &["kind=\"images\""]), Some(1.0), "{text}");
    assert!(sample(&text, "janus_rows_per_step_count", &["kind=\"text\""]).is_some(), "{text}");
    assert!(sample(&text, "janus_max_text_sessions", &[]).is_some_and(|n| n >= 1.0), "{text}");
}
