//! Limits that must hold against hostile input and overload: open streams, images per chat
//! request, decompression bombs (refused from the header), and the API key on every route.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;

use super::fake::Mode;
use super::*;

const GEN: &str = "/v1/images/generations";
const CHAT: &str = "/v1/chat/completions";

fn user_images(n: usize) -> Value {
    let url = data_url(&png_bytes(4, 4));
    let mut content: Vec<Value> = (0..n).map(|_| json!({"type": "image_url", "image_url": {"url": url}})).collect();
    content.push(json!({"type": "text", "text": "compare"}));
    json!({"messages": [{"role": "user", "content": content}]})
}

/// A PNG whose header claims `w`×`h` pixels, with no pixel data (a decompression bomb's header).
fn png_header(w: u32, h: u32) -> Vec<u8> {
    let mut png = png_bytes(1, 1);
    png[16..20].copy_from_slice(&w.to_be_bytes());
    png[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[tokio::test]
async fn open_streams_are_capped_with_a_429_and_freed_when_a_stream_ends() {
    let h = harness(HttpConfig { max_streams: 2, ..HttpConfig::default() });
    h.fake.set_mode(Mode::Hang);
    let open = |body: Value| h.app.clone().oneshot(post_json(GEN, &body));
    let a = open(json!({"prompt": "a", "stream": true})).await.unwrap();
    let chat = post_json(CHAT, &json!({"messages": [{"role": "user", "content": "hi"}], "stream": true}));
    let b = h.app.clone().oneshot(chat).await.unwrap();
    assert_eq!((a.status(), b.status()), (StatusCode::OK, StatusCode::OK));
    assert_eq!(h.state.open_streams(), 2);

    // Both kinds of stream are refused while two are open, in the envelope with Retry-After.
    let r = send(&h.app, post_json(GEN, &json!({"prompt": "c", "stream": true}))).await;
    let e = r.assert_error(429, None, "--max-streams");
    assert_eq!((e["type"].as_str(), e["code"].as_str()), (Some("rate_limit_error"), Some("too_many_streams")));
    assert_eq!(r.header("retry-after"), "1");
    let chat = post_json(CHAT, &json!({"messages": [{"role": "user", "content": "hi"}], "stream": true}));
    send(&h.app, chat).await.assert_error(429, None, "--max-streams");
    // A refused stream never reached the engine: only the two open ones are held.
    assert_eq!(h.fake.held_images.lock().unwrap().len() + h.fake.held_chat.lock().unwrap().len(), 2);

    // Plain requests are not streams.
    h.fake.set_mode(Mode::Normal);
    assert_eq!(send(&h.app, post_json(GEN, &json!({"prompt": "d"}))).await.status, StatusCode::OK);

    // A client that goes away frees its slot.
    drop(a);
    assert_eq!(h.state.open_streams(), 1);
    let r = send(&h.app, post_json(GEN, &json!({"prompt": "e", "stream": true}))).await;
    assert!(r.sse().iter().any(|(ev, _)| ev.as_deref() == Some("image_generation.completed")));
    // A stream that finished freed its slot too.
    assert_eq!(h.state.open_streams(), 1);
    drop(b);
    assert_eq!(h.state.open_streams(), 0);
}

#[tokio::test]
async fn a_chat_request_holds_at_most_8_images() {
    let h = default_harness();
    assert_eq!(
        send(&h.app, post_json(CHAT, &user_images(janus::limits::MAX_CHAT_IMAGES))).await.status,
        StatusCode::OK
    );
    let e = send(&h.app, post_json(CHAT, &user_images(janus::limits::MAX_CHAT_IMAGES + 1))).await.assert_error(
        400,
        Some("messages"),
        "at most 8 images",
    );
    assert_eq!(e["code"], "invalid_value");
}

#[tokio::test]
async fn a_decompression_bomb_is_refused_from_its_header() {
    let h = default_harness();
    let bomb = png_header(20_000, 20_000);
    assert_eq!(bomb.len(), png_bytes(1, 1).len(), "a few dozen bytes claim 400 megapixels");
    let t = std::time::Instant::now();
    let body = json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(&bomb)}}, {"type": "text", "text": "x"}]}]});
    let e = send(&h.app, post_json(CHAT, &body)).await.assert_error(
        400,
        Some("messages[0].content[0].image_url.url"),
        "20000x20000",
    );
    assert_eq!(e["code"], "invalid_image");
    send(&h.app, multipart(&[("image", Some("bomb.png"), &bomb)])).await.assert_error(
        400,
        Some("image"),
        "20000x20000",
    );
    assert!(t.elapsed() < Duration::from_secs(2), "refused without decoding");
    assert!(h.fake.last_chat.lock().unwrap().is_none(), "nothing reached the engine");
}

/// Every route in the OpenAPI document (which lists every API route) needs the key when one is
/// set, except the probes and the file links by design; the playground's static files are open.
#[tokio::test]
async fn the_api_key_covers_every_route_but_the_probes() {
    use utoipa::OpenApi as _;
    const OPEN: &[&str] = &["/health", "/ready", "/metrics", "/openapi.json", "/v1/files/{id}/content"];
    let h = harness(HttpConfig { api_key: Some("s3cret".into()), ..HttpConfig::default() });
    let doc = serde_json::to_value(crate::http::ApiDoc::openapi()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let mut guarded = 0;
    for (path, item) in paths {
        let concrete: String = {
            let mut out = String::new();
            let mut in_param = false;
            for c in path.chars() {
                match c {
                    '{' => in_param = true,
                    '}' => {
                        in_param = false;
                        out.push('x');
                    }
                    _ if !in_param => out.push(c),
                    _ => {}
                }
            }
            out
        };
        for method in item.as_object().unwrap().keys().filter(|m| ["get", "post"].contains(&m.as_str())) {
            let req = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&concrete)
                .header("content-type", "application/json")
                .body(Body::from("{}"))
                .unwrap();
            let r = send(&h.app, req).await;
            if OPEN.contains(&path.as_str()) {
                assert_ne!(r.status, StatusCode::UNAUTHORIZED, "{method} {path} is open by design");
            } else {
                r.assert_error(401, None, "API key");
                guarded += 1;
            }
        }
    }
    assert!(guarded >= 5, "only {guarded} guarded operations found in {:?}", paths.keys().collect::<Vec<_>>());
    for page in ["/", "/index.html", "/app.js", "/style.css"] {
        assert_eq!(send(&h.app, get(page)).await.status, StatusCode::OK, "{page}");
    }
}
