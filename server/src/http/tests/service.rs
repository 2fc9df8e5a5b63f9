//! Probes, models, auth, fallbacks, limits, request ids, metrics, CORS and the OpenAPI document.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::json;

use super::*;
use crate::engine::EngineStatus;

#[tokio::test]
async fn health_is_always_ok_and_ready_follows_the_engine() {
    let h = default_harness();
    for status in [EngineStatus::Loading, EngineStatus::Failed("no weights".into()), EngineStatus::Ready] {
        h.fake.set_status(status);
        let r = send(&h.app, get("/health")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json()["status"], "ok");
    }
    let r = send(&h.app, get("/ready")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({"status": "ready", "model": "fake/janus"}));
    h.fake.set_status(EngineStatus::Loading);
    send(&h.app, get("/ready")).await.assert_error(503, None, "still loading");
    h.fake.set_status(EngineStatus::Failed("no weights".into()));
    send(&h.app, get("/ready")).await.assert_error(503, None, "no weights");
    h.fake.set_status(EngineStatus::Ready);
    h.state.draining.store(true, std::sync::atomic::Ordering::SeqCst);
    send(&h.app, get("/ready")).await.assert_error(503, None, "shutting down");
}

#[tokio::test]
async fn models_are_listed_in_openai_shape() {
    let h = default_harness();
    let r = send(&h.app, get("/v1/models")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json(),
        json!({"object": "list", "data": [
            {"id": "fake/janus", "object": "model", "created": 1_700_000_000u64, "owned_by": "deepseek-ai",
             "quant": "q8_0", "dtype": "f32", "device": "cpu"}]})
    );
    let r = send(&h.app, get("/v1/models/fake%2Fjanus")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["id"], "fake/janus");
    let r = send(&h.app, get("/v1/models/fake/janus")).await;
    assert_eq!(r.status, StatusCode::OK, "ids with a slash work unescaped: {}", r.text());
    send(&h.app, get("/v1/models/gpt-4o")).await.assert_error(404, None, "no model `gpt-4o`");
    h.fake.set_status(EngineStatus::Loading);
    send(&h.app, get("/v1/models")).await.assert_error(503, None, "loading");
}

#[tokio::test]
async fn the_api_key_guards_v1_but_not_probes_or_files() {
    let h = harness(HttpConfig { api_key: Some("s3cret".into()), ..HttpConfig::default() });
    let e = send(&h.app, get("/v1/models")).await.assert_error(401, None, "missing API key");
    assert_eq!(e["code"], "invalid_api_key");
    let wrong = Request::get("/v1/models").header("authorization", "Bearer s3cre").body(Body::empty()).unwrap();
    send(&h.app, wrong).await.assert_error(401, None, "incorrect API key");
    let basic = Request::get("/v1/models").header("authorization", "Basic s3cret").body(Body::empty()).unwrap();
    send(&h.app, basic).await.assert_error(401, None, "Bearer");
    let right = Request::get("/v1/models").header("authorization", "Bearer s3cret").body(Body::empty()).unwrap();
    assert_eq!(send(&h.app, right).await.status, StatusCode::OK);
    let chat = post_json("/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "x"}]}));
    send(&h.app, chat).await.assert_error(401, None, "API key");
    send(&h.app, multipart(&[("image", None, b"x")])).await.assert_error(401, None, "API key");
    // images need the key; the URLs they hand out do not
    let mut gen = post_json("/v1/images/generations", &json!({"prompt": "x", "response_format": "url"}));
    send(&h.app, post_json("/v1/images/generations", &json!({"prompt": "x"}))).await.assert_error(401, None, "API key");
    gen.headers_mut().insert("authorization", "Bearer s3cret".parse().unwrap());
    let r = send(&h.app, gen).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let path = r.json()["data"][0]["url"].as_str().unwrap().replace("http://janus.test", "");
    assert_eq!(send(&h.app, get(&path)).await.status, StatusCode::OK);
    for open in ["/health", "/ready", "/metrics", "/openapi.json"] {
        assert_eq!(send(&h.app, get(open)).await.status, StatusCode::OK, "{open}");
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_are_enveloped() {
    let h = default_harness();
    let e = send(&h.app, get("/v1/embeddings")).await.assert_error(404, None, "no route for `/v1/embeddings`");
    assert_eq!(e["code"], "not_found");
    send(&h.app, get("/v1/chat/completions")).await.assert_error(405, None, "method not allowed");
}

#[tokio::test]
async fn bodies_over_the_limit_are_a_413() {
    let h = harness(HttpConfig { max_body_bytes: 1024, ..HttpConfig::default() });
    let body = json!({"prompt": "x".repeat(2000)});
    let e = send(&h.app, post_json("/v1/images/generations", &body)).await.assert_error(413, None, "1024 bytes");
    assert_eq!(e["code"], "request_too_large");
    let body = json!({"messages": [{"role": "user", "content": "x".repeat(2000)}]});
    send(&h.app, post_json("/v1/chat/completions", &body)).await.assert_error(413, None, "--max-body-bytes");
    // without a Content-Length (chunked)
    let stream =
        futures_util::stream::iter((0..4).map(|_| Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b' '; 400]))));
    let req = Request::post("/v1/images/generations").body(Body::from_stream(stream)).unwrap();
    send(&h.app, req).await.assert_error(413, None, "1024 bytes");
}

#[tokio::test]
async fn request_ids_are_echoed_or_made() {
    let h = default_harness();
    let req = Request::get("/health").header("x-request-id", "abc-123").body(Body::empty()).unwrap();
    assert_eq!(send(&h.app, req).await.header("x-request-id"), "abc-123");
    let a = send(&h.app, get("/health")).await.header("x-request-id").to_string();
    let b = send(&h.app, get("/nope")).await.header("x-request-id").to_string();
    assert_eq!(a.len(), 32);
    assert_ne!(a, b);
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status_and_show_the_queue() {
    let h = default_harness();
    send(&h.app, post_json("/v1/images/generations", &json!({"prompt": "x"}))).await;
    send(&h.app, post_json("/v1/images/generations", &json!({"prompt": ""}))).await;
    let r = send(&h.app, get("/metrics")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("content-type").starts_with("text/plain"));
    let text = r.text();
    let has = |needle: &str| {
        text.lines().any(|l| {
            l.starts_with(needle.split('{').next().unwrap()) && l.contains(needle.split('{').nth(1).unwrap_or(""))
        })
    };
    assert!(text.contains("janus_http_requests_total{"), "{text}");
    assert!(text.contains("route=\"/v1/images/generations\""), "{text}");
    assert!(text.contains("status=\"200\""), "{text}");
    assert!(text.contains("status=\"400\""), "{text}");
    assert!(has("janus_http_request_duration_seconds_bucket{"), "{text}");
    assert!(text.contains("janus_queue_depth 3"), "{text}");
    assert!(text.contains(r#"janus_model_info{model="fake/janus",quant="q8_0",dtype="f32",device="cpu"} 1"#), "{text}");
}

#[tokio::test]
async fn cors_is_off_by_default_and_on_for_listed_origins() {
    let h = default_harness();
    let req = Request::get("/health").header("origin", "https://app.example").body(Body::empty()).unwrap();
    assert!(send(&h.app, req).await.headers.get("access-control-allow-origin").is_none());
    let h = harness(HttpConfig { cors_origins: vec!["https://app.example".into()], ..HttpConfig::default() });
    let req = Request::get("/health").header("origin", "https://app.example").body(Body::empty()).unwrap();
    assert_eq!(send(&h.app, req).await.header("access-control-allow-origin"), "https://app.example");
    let req = Request::get("/health").header("origin", "https://evil.example").body(Body::empty()).unwrap();
    assert!(send(&h.app, req).await.headers.get("access-control-allow-origin").is_none());
}

/// `docs/openapi.json` is the served document; regenerate it with
/// `UPDATE_OPENAPI=1 cargo test --release -p janus-server openapi`.
#[tokio::test]
async fn openapi_document_matches_the_committed_snapshot() {
    let h = default_harness();
    let r = send(&h.app, get("/openapi.json")).await;
    assert_eq!(r.status, StatusCode::OK);
    let served = r.text();
    let doc: serde_json::Value = serde_json::from_str(&served).unwrap();
    for path in [
        "/v1/images/generations",
        "/v1/images/describe",
        "/v1/chat/completions",
        "/v1/files/{id}/content",
        "/v1/models",
        "/health",
        "/ready",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing from the document");
    }
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&file, format!("{served}\n")).unwrap();
    }
    let committed = std::fs::read_to_string(&file).unwrap_or_default();
    assert!(
        committed.trim_end() == served.trim_end(),
        "docs/openapi.json is stale; run `UPDATE_OPENAPI=1 cargo test --release -p janus-server openapi`"
    );
}

/// Shutdown: `/ready` and new requests answer 503 at once, and the drain waits for the work in
/// flight (here a request the engine holds) until it finishes, or gives up at the deadline.
#[tokio::test]
async fn graceful_drain_waits_for_work_in_flight() {
    use std::time::{Duration, Instant};

    use super::super::serve::drain;
    use super::fake::Mode;

    let h = default_harness();
    h.fake.set_mode(Mode::Hang);
    let app = h.app.clone();
    let in_flight =
        tokio::spawn(async move { send(&app, post_json("/v1/images/generations", &json!({"prompt": "x"}))).await });
    while h.fake.held_images.lock().unwrap().is_empty() {
        tokio::task::yield_now().await;
    }
    h.state.draining.store(true, std::sync::atomic::Ordering::SeqCst);
    h.state.engine.shutdown();
    assert!(h.fake.shut_down.load(std::sync::atomic::Ordering::SeqCst));
    send(&h.app, get("/ready")).await.assert_error(503, None, "shutting down");
    send(&h.app, post_json("/v1/images/generations", &json!({"prompt": "y"}))).await.assert_error(
        503,
        None,
        "shutting down",
    );

    let t = Instant::now();
    assert!(!drain(&h.state.engine, Instant::now() + Duration::from_millis(100)).await, "work is in flight");
    assert!(t.elapsed() >= Duration::from_millis(100), "the drain waited until the deadline");

    // The engine finishes the request: the drain completes, well before its deadline.
    let finisher = {
        let fake = h.fake.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            fake.held_images.lock().unwrap().clear();
        })
    };
    let t = Instant::now();
    assert!(drain(&h.state.engine, Instant::now() + Duration::from_secs(10)).await);
    assert!(t.elapsed() < Duration::from_secs(5));
    finisher.await.unwrap();
    let r = in_flight.await.unwrap();
    assert_eq!(r.status.as_u16(), 500, "the request ended (the fake dropped it): {}", r.text());
}
