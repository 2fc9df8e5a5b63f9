//! `/v1/images/generations`, `/v1/files/{id}/content`, `/v1/images/describe`.

use std::time::Duration;

use axum::http::StatusCode;
use base64::Engine as _;
use serde_json::{json, Value};

use super::fake::{Fake, Mode};
use super::*;
use crate::engine::EngineError;
use tower::ServiceExt;

const GEN: &str = "/v1/images/generations";

/// The sizes clients send by default (512x512, 1024x1024) are the native image resized, in the
/// format asked for, through `url` too; the native size is in a header.
#[tokio::test]
async fn resizes_to_the_square_sizes_clients_send_and_encodes_jpeg_and_webp() {
    let h = default_harness();
    for (size, format, side, mime) in [
        ("1024x1024", "jpeg", 1024, "image/jpeg"),
        ("512x512", "webp", 512, "image/webp"),
        ("256x256", "png", 256, "image/png"),
    ] {
        let body = json!({"prompt": "a cat", "size": size, "output_format": format, "output_compression": 70});
        let r = send(&h.app, post_json(GEN, &body)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.headers["x-native-size"], "384x384");
        let v = r.json();
        assert_eq!((v["size"].as_str(), v["output_format"].as_str()), (Some(size), Some(format)));
        let bytes = base64::prelude::BASE64_STANDARD.decode(v["data"][0]["b64_json"].as_str().unwrap()).unwrap();
        assert_eq!(image::guess_format(&bytes).unwrap().to_mime_type(), mime);
        let img = image::load_from_memory(&bytes).unwrap();
        assert_eq!((img.width(), img.height()), (side, side));
    }
    let body = json!({"prompt": "a cat", "size": "512x512", "output_format": "jpeg", "response_format": "url"});
    let v = send(&h.app, post_json(GEN, &body)).await.json();
    let path = v["data"][0]["url"].as_str().unwrap().split_once("/v1/").unwrap().1.to_string();
    let r = send(&h.app, get(&format!("/v1/{path}"))).await;
    assert_eq!(r.headers["content-type"], "image/jpeg");
}

#[tokio::test]
async fn generates_b64_pngs_of_native_size_with_seed_and_usage() {
    let h = default_harness();
    let r = send(&h.app, post_json(GEN, &json!({"prompt": "a fox", "n": 2, "seed": 42, "model": "dall-e-3"}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("x-seed"), "42");
    assert!(r.header("content-type").starts_with("application/json"));
    let v = r.json();
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(v["size"], "384x384");
    assert_eq!(v["output_format"], "png");
    assert_eq!(v["seed"], 42);
    // The prompt's tokens, the template's (tokenized before the engine).
    let seen = h.fake.last_images.lock().unwrap().clone().unwrap();
    let prompt_tokens = seen.prompt_ids.len();
    assert_eq!(seen.prompt_ids, super::fake::prompter().tokenizer().t2i_prompt_ids("a fox").unwrap());
    assert_eq!(v["usage"]["input_tokens"], prompt_tokens);
    assert_eq!(v["usage"]["output_tokens"], 2 * 576);
    assert_eq!(v["usage"]["total_tokens"], prompt_tokens + 2 * 576);
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for (i, d) in data.iter().enumerate() {
        assert!(d.get("url").is_none());
        let img = b64_png(d["b64_json"].as_str().unwrap());
        assert_eq!(img.dimensions(), (384, 384));
        assert_eq!(*img.get_pixel(5, 5), Fake::colour(42, i));
    }
}

#[tokio::test]
async fn maps_extensions_into_the_engine_request_and_picks_a_random_seed() {
    let h = default_harness();
    let body = json!({"prompt": "a fox", "guidance_scale": 3.5, "temperature": 0.7, "top_k": 100, "top_p": 0.9,
                      "size": "auto", "response_format": "b64_json"});
    let r = send(&h.app, post_json(GEN, &body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let req = h.fake.last_images.lock().unwrap().clone().unwrap().request;
    assert_eq!(req.prompt, "a fox");
    assert_eq!(req.n, 1);
    assert_eq!(req.partial_images, 0);
    assert_eq!(req.params.cfg_weight, 3.5);
    assert_eq!(req.params.temperature, 0.7);
    assert_eq!(req.params.top_k, Some(100));
    assert_eq!(req.params.top_p, Some(0.9));
    // no seed given: a random one, reported back
    assert_eq!(r.json()["seed"].as_u64().unwrap(), req.seed);
    assert_eq!(r.header("x-seed"), req.seed.to_string());
    // defaults are the reference's
    send(&h.app, post_json(GEN, &json!({"prompt": "x"}))).await;
    let req = h.fake.last_images.lock().unwrap().clone().unwrap().request;
    assert_eq!((req.params.cfg_weight, req.params.temperature, req.params.top_k), (5.0, 1.0, None));
}

#[tokio::test]
async fn accepts_and_ignores_openai_fields() {
    let h = default_harness();
    let body = json!({"prompt": "x", "quality": "hd", "style": "vivid", "user": "u1", "background": "auto",
                      "moderation": "low", "output_compression": 80, "output_format": "png", "model": "gpt-image-1",
                      "partial_images": 2});
    let r = send(&h.app, post_json(GEN, &body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test]
async fn refuses_bad_fields_naming_the_field_and_the_limit() {
    let h = harness(HttpConfig { max_batch_images: 4, ..HttpConfig::default() });
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({"prompt": ""}), "prompt", "must not be empty"),
        (json!({"prompt": "x".repeat(32_001)}), "prompt", "32000"),
        (json!({"prompt": "x", "n": 0}), "n", "between 1 and 4"),
        (json!({"prompt": "x", "n": 5}), "n", "--max-batch-images"),
        (json!({"prompt": "x", "size": "1024x1536"}), "size", "`256x256`, `384x384`, `512x512`, `1024x1024`"),
        (json!({"prompt": "x", "size": "big"}), "size", "got `big`"),
        (json!({"prompt": "x", "response_format": "jpeg"}), "response_format", "`b64_json` or `url`"),
        (json!({"prompt": "x", "partial_images": 4}), "partial_images", "between 0 and 3"),
        (json!({"prompt": "x", "output_format": "gif"}), "output_format", "`png`, `jpeg` or `webp`"),
        (
            json!({"prompt": "x", "output_format": "jpeg", "output_compression": 101}),
            "output_compression",
            "between 0 and 100",
        ),
        (json!({"prompt": "x", "guidance_scale": -1.0}), "guidance_scale", "between 0 and 100"),
        (json!({"prompt": "x", "temperature": 11}), "temperature", "between 0 and 10"),
        (json!({"prompt": "x", "top_k": 0}), "top_k", "at least 1"),
        (json!({"prompt": "x", "top_p": 0}), "top_p", "(0, 1]"),
        (json!({"prompt": "x", "n": "2"}), "n", "invalid type"),
        (json!({"prompt": "x", "seed": -3}), "seed", "invalid value"),
        (json!({"n": 1}), ".", "missing field `prompt`"),
        (json!({"prompt": "x", "negative_prompt": "y"}), "negative_prompt", "unknown field"),
    ];
    for (body, param, needle) in cases {
        let r = send(&h.app, post_json(GEN, &body)).await;
        let param = (param != ".").then_some(param);
        let e = r.assert_error(400, param, needle);
        assert_eq!(e["type"], "invalid_request_error");
    }
    // n up to 16 without a lower batch limit
    let h = default_harness();
    send(&h.app, post_json(GEN, &json!({"prompt": "x", "n": 17}))).await.assert_error(
        400,
        Some("n"),
        "between 1 and 16; got 17",
    );
}

#[tokio::test]
async fn malformed_json_is_a_400_in_the_envelope() {
    let h = default_harness();
    let r = send(&h.app, post_raw(GEN, "{\"prompt\": ")).await;
    let e = r.assert_error(400, None, "not valid JSON");
    assert_eq!(e["code"], "invalid_json");
    send(&h.app, post_raw(GEN, "")).await.assert_error(400, None, "empty");
    send(&h.app, post_raw(GEN, "[1, 2]")).await.assert_error(400, None, "must be a JSON object");
    send(&h.app, post_raw(GEN, "{\"prompt\": \"x\"} trailing")).await.assert_error(400, None, "not valid JSON");
}

#[tokio::test]
async fn url_format_serves_pngs_from_the_file_store() {
    let h = default_harness();
    let r = send(&h.app, post_json(GEN, &json!({"prompt": "x", "n": 2, "seed": 5, "response_format": "url"}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    for (i, d) in v["data"].as_array().unwrap().iter().enumerate() {
        assert!(d.get("b64_json").is_none());
        let url = d["url"].as_str().unwrap();
        let path = url.strip_prefix("http://janus.test").expect("absolute URL from the Host header");
        assert!(path.starts_with("/v1/files/") && path.ends_with("/content"), "{url}");
        let f = send(&h.app, get(path)).await;
        assert_eq!(f.status, StatusCode::OK);
        assert_eq!(f.header("content-type"), "image/png");
        assert!(f.header("cache-control").contains("max-age="));
        let img = image::load_from_memory(&f.body).unwrap().to_rgb8();
        assert_eq!(*img.get_pixel(0, 0), Fake::colour(5, i));
    }
    send(&h.app, get("/v1/files/img-nope/content")).await.assert_error(404, None, "no file `img-nope`");
}

#[tokio::test]
async fn url_format_uses_the_public_url_when_set() {
    let h = harness(HttpConfig { public_url: Some("https://img.example.org/".into()), ..HttpConfig::default() });
    let r = send(&h.app, post_json(GEN, &json!({"prompt": "x", "response_format": "url"}))).await;
    let url = r.json()["data"][0]["url"].as_str().unwrap().to_string();
    assert!(url.starts_with("https://img.example.org/v1/files/"), "{url}");
}

#[tokio::test]
async fn stored_files_expire_and_the_store_is_bounded() {
    let h = harness(HttpConfig { file_ttl: Duration::from_millis(150), max_files: 3, ..HttpConfig::default() });
    let r = send(&h.app, post_json(GEN, &json!({"prompt": "x", "n": 2, "response_format": "url"}))).await;
    let first = r.json()["data"][0]["url"].as_str().unwrap().replace("http://janus.test", "");
    assert_eq!(send(&h.app, get(&first)).await.status, StatusCode::OK);
    // two more: the oldest of four is evicted
    send(&h.app, post_json(GEN, &json!({"prompt": "x", "n": 2, "response_format": "url"}))).await;
    assert_eq!(h.state.files.len(), 3);
    send(&h.app, get(&first)).await.assert_error(404, None, "expired");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = send(&h.app, post_json(GEN, &json!({"prompt": "x", "response_format": "url"}))).await;
    assert_eq!(h.state.files.len(), 1, "expired files are purged");
    let fresh = r.json()["data"][0]["url"].as_str().unwrap().replace("http://janus.test", "");
    assert_eq!(send(&h.app, get(&fresh)).await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(200)).await;
    send(&h.app, get(&fresh)).await.assert_error(404, None, "expired");
}

#[tokio::test]
async fn streams_partial_then_completed_events_per_image() {
    let h = default_harness();
    let body = json!({"prompt": "x", "n": 2, "seed": 9, "stream": true, "partial_images": 2});
    let r = send(&h.app, post_json(GEN, &body)).await;
    assert_eq!(r.header("x-seed"), "9");
    let events = r.sse();
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "image_generation.partial_image",
            "image_generation.partial_image",
            "image_generation.partial_image",
            "image_generation.partial_image",
            "image_generation.completed",
            "image_generation.completed"
        ]
    );
    let payloads: Vec<Value> = events.iter().map(|(_, d)| serde_json::from_str(d).unwrap()).collect();
    for (k, p) in payloads[..4].iter().enumerate() {
        assert_eq!(p["type"], "image_generation.partial_image");
        assert_eq!(p["index"], k / 2);
        assert_eq!(p["partial_image_index"], k % 2);
        assert_eq!(p["size"], "384x384");
        assert_eq!(p["output_format"], "png");
        assert_eq!(b64_png(p["b64_json"].as_str().unwrap()).dimensions(), (384, 384));
    }
    for (i, p) in payloads[4..].iter().enumerate() {
        assert_eq!(p["type"], "image_generation.completed");
        assert_eq!(p["index"], i);
        assert_eq!(p["usage"]["input_tokens"], h.fake.last_images.lock().unwrap().as_ref().unwrap().prompt_ids.len());
        assert_eq!(p["usage"]["output_tokens"], 576);
        assert_eq!(*b64_png(p["b64_json"].as_str().unwrap()).get_pixel(1, 1), Fake::colour(9, i));
        assert!(p["created_at"].as_u64().is_some());
    }
    assert_eq!(h.fake.last_images.lock().unwrap().as_ref().unwrap().request.partial_images, 2);
}

#[tokio::test]
async fn a_failure_mid_stream_is_an_error_event() {
    let h = default_harness();
    h.fake.set_mode(Mode::FailLater(EngineError::OutOfMemory("16 images".into())));
    let r = send(&h.app, post_json(GEN, &json!({"prompt": "x", "stream": true}))).await;
    let events = r.sse();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0.as_deref(), Some("error"));
    let v: Value = serde_json::from_str(&events[0].1).unwrap();
    assert_eq!(v["error"]["code"], "out_of_memory");
}

#[tokio::test]
async fn engine_errors_map_to_statuses() {
    let h = default_harness();
    let invalid = janus::Invalid::new(janus::Field::CfgWeight, "must be between 0 and 100; got 101");
    let cases = [
        (Mode::Reject(EngineError::QueueFull { queued: 64, retry_after_s: 7 }), 429, None, "queue_full", "64 requests"),
        (Mode::Reject(EngineError::ShuttingDown), 503, None, "shutting_down", "shutting down"),
        (
            Mode::Reject(EngineError::PromptTooLong { tokens: 300, max: 256 }),
            400,
            None,
            "context_length_exceeded",
            "300 tokens",
        ),
        (Mode::Reject(EngineError::Invalid(invalid)), 400, Some("guidance_scale"), "invalid_value", "got 101"),
        (Mode::FailLater(EngineError::OutOfMemory("batch of 16".into())), 503, None, "out_of_memory", "batch of 16"),
        (Mode::FailLater(EngineError::Internal("boom".into())), 500, None, "internal_error", "boom"),
    ];
    for (mode, status, param, code, needle) in cases {
        h.fake.set_mode(mode);
        let r = send(&h.app, post_json(GEN, &json!({"prompt": "x"}))).await;
        let e = r.assert_error(status, param, needle);
        assert_eq!(e["code"], code);
        if status == 429 {
            assert_eq!(r.header("retry-after"), "7");
            assert_eq!(e["type"], "rate_limit_error");
        }
        if status >= 500 {
            assert_eq!(e["type"], "server_error");
        }
    }
    // the service goes on
    h.fake.set_mode(Mode::Normal);
    assert_eq!(send(&h.app, post_json(GEN, &json!({"prompt": "x"}))).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_panic_in_the_engine_is_a_500_and_the_server_keeps_serving() {
    let h = default_harness();
    h.fake.set_mode(Mode::Panic);
    let r = send(&h.app, post_json(GEN, &json!({"prompt": "x"}))).await;
    let e = r.assert_error(500, None, "panicked");
    assert_eq!(e["type"], "server_error");
    assert!(!r.header("x-request-id").is_empty());
    h.fake.set_mode(Mode::Normal);
    assert_eq!(send(&h.app, post_json(GEN, &json!({"prompt": "x"}))).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_client_that_goes_away_drops_the_receiver() {
    // plain request: the handler future is dropped
    let h = default_harness();
    h.fake.set_mode(Mode::Hang);
    let fut = h.app.clone().oneshot(post_json(GEN, &json!({"prompt": "x"})));
    assert!(tokio::time::timeout(Duration::from_millis(100), fut).await.is_err(), "hangs");
    let tx = h.fake.held_images.lock().unwrap().pop().unwrap();
    assert!(tx.is_closed(), "the receiver was dropped with the request");

    // streamed request: the body is dropped
    let resp = h.app.clone().oneshot(post_json(GEN, &json!({"prompt": "x", "stream": true}))).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let tx = h.fake.held_images.lock().unwrap().pop().unwrap();
    assert!(!tx.is_closed(), "the stream holds the receiver");
    drop(resp);
    assert!(tx.is_closed(), "dropping the stream dropped the receiver");
}

#[tokio::test]
async fn not_ready_is_a_503_with_the_reason() {
    let h = default_harness();
    h.fake.set_status(crate::engine::EngineStatus::Loading);
    let e = send(&h.app, post_json(GEN, &json!({"prompt": "x"}))).await.assert_error(503, None, "loading");
    assert_eq!(e["code"], "model_loading");
    h.fake.set_status(crate::engine::EngineStatus::Failed("config.json: missing".into()));
    let e = send(&h.app, post_json(GEN, &json!({"prompt": "x"}))).await.assert_error(503, None, "config.json: missing");
    assert_eq!(e["code"], "model_load_failed");
}

// ---------------------------------------------------------------- describe

#[tokio::test]
async fn describe_answers_a_multipart_upload() {
    let h = default_harness();
    let png = png_bytes(40, 20);
    let req =
        multipart(&[("image", Some("a.png"), &png), ("question", None, b"What is it?"), ("max_tokens", None, b"64")]);
    let r = send(&h.app, req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["text"], "1 image(s). You said: What is it?");
    assert_eq!(v["finish_reason"], "stop");
    let seen = h.fake.last_chat.lock().unwrap().clone().unwrap();
    assert_eq!(v["usage"]["prompt_tokens"], seen.prompt_tokens);
    assert_eq!(seen.params.max_new_tokens, Some(64));
    assert_eq!(seen.params.sampling.temperature, 0.0, "greedy by default");
    assert_eq!(seen.images.len(), 1);
    let system = janus::text::conversation::DEFAULT_SYSTEM_PROMPT;
    assert_eq!(
        seen.prompt,
        format!("<｜begin▁of▁sentence｜>{system}\n\n<|User|>: <image>\nWhat is it?\n\n<|Assistant|>:")
    );

    // the default question
    let r = send(&h.app, multipart(&[("image", Some("a.png"), &png)])).await;
    assert_eq!(r.json()["text"], format!("1 image(s). You said: {}", janus::limits::DEFAULT_QUESTION));
}

#[tokio::test]
async fn describe_refuses_bad_forms_and_images() {
    let h = default_harness();
    let png = png_bytes(8, 8);
    send(&h.app, multipart(&[("question", None, b"hi")])).await.assert_error(400, Some("image"), "required");
    send(&h.app, multipart(&[("image", Some("a.png"), &png), ("max_tokens", None, b"many")])).await.assert_error(
        400,
        Some("max_tokens"),
        "integer",
    );
    send(&h.app, multipart(&[("image", Some("a.png"), &png), ("max_tokens", None, b"0")])).await.assert_error(
        400,
        Some("max_tokens"),
        "between 1 and 4096",
    );
    send(&h.app, multipart(&[("image", Some("a.png"), &png), ("colour", None, b"red")])).await.assert_error(
        400,
        Some("colour"),
        "unknown form field",
    );
    send(&h.app, multipart(&[("image", Some("a.png"), &png), ("question", None, b"  ")])).await.assert_error(
        400,
        Some("question"),
        "must not be empty",
    );
    // not multipart at all
    send(&h.app, post_json("/v1/images/describe", &json!({"image": "x"}))).await.assert_error(
        400,
        None,
        "multipart/form-data",
    );
    // not an image: 415; a broken PNG: 400
    let e = send(&h.app, multipart(&[("image", Some("a.txt"), b"hello, world")])).await.assert_error(
        415,
        Some("image"),
        "unrecognised image format",
    );
    assert_eq!(e["code"], "unsupported_image_format");
    let e = send(&h.app, multipart(&[("image", Some("a.png"), &png[..png.len() / 2])])).await.assert_error(
        400,
        Some("image"),
        "cannot decode",
    );
    assert_eq!(e["code"], "invalid_image");
    send(&h.app, multipart(&[("image", Some("a.png"), b"")])).await.assert_error(400, Some("image"), "empty");
}

#[tokio::test]
async fn describe_over_the_body_limit_is_a_413() {
    let h = harness(HttpConfig { max_body_bytes: 2048, ..HttpConfig::default() });
    let big = vec![7u8; 4096];
    let e = send(&h.app, multipart(&[("image", Some("a.png"), &big)])).await.assert_error(413, None, "2048 bytes");
    assert_eq!(e["code"], "request_too_large");
}
