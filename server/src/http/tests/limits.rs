//! Limits that must hold against hostile input and overload: open streams, requests in flight,
//! the request's size (messages, characters, images, pixels), the image memory, decompression
//! bombs (refused from the header), prompts too long (refused before any image is read), and
//! the API key on every route.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;

use super::fake::Mode;
use super::*;
use crate::http::RequestLimits;

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
        "at most 8 images per request (--max-images-per-request); got 9",
    );
    assert_eq!(e["code"], "invalid_value");
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

/// Each size limit is a 400 naming the field and the limit (and the flag that sets it), checked
/// before any work is done.
#[tokio::test]
async fn request_sizes_are_checked_field_by_field() {
    let limits = RequestLimits {
        max_messages: 3,
        max_message_chars: 10,
        max_request_chars: 15,
        max_images: 1,
        max_image_pixels: 100,
    };
    let h = harness(HttpConfig { limits, ..HttpConfig::default() });
    let chat = |messages: Vec<Value>| post_json(CHAT, &json!({ "messages": messages }));
    let cases = [
        (
            chat(vec![user("a"), user("b"), user("c"), user("d")]),
            "messages",
            "at most 3 messages (--max-messages); got 4",
        ),
        (
            chat(vec![user("short"), user("far too long")]),
            "messages[1].content",
            "at most 10 characters (--max-message-chars); got 12",
        ),
        (
            chat(vec![user("ünïcödé!"), user("abcdefgh")]),
            "messages",
            "at most 15 characters in all (--max-request-chars); got 16",
        ),
    ];
    for (req, param, needle) in cases {
        send(&h.app, req).await.assert_error(400, Some(param), needle);
    }
    send(&h.app, post_json(CHAT, &user_images(2))).await.assert_error(
        400,
        Some("messages"),
        "--max-images-per-request",
    );
    // Pixels, read from the header: 11 x 10 is over 100.
    let body = json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(&png_bytes(11, 10))}}]}]});
    let e = send(&h.app, post_json(CHAT, &body)).await.assert_error(
        400,
        Some("messages[0].content[0].image_url.url"),
        "--max-image-pixels",
    );
    assert_eq!(e["code"], "image_too_large");
    let body = json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(&png_bytes(10, 10))}}]}]});
    assert_eq!(send(&h.app, post_json(CHAT, &body)).await.status, StatusCode::OK);
    send(
        &h.app,
        multipart(&[("image", Some("a.png"), &png_bytes(8, 8)), ("question", None, "x".repeat(11).as_bytes())]),
    )
    .await
    .assert_error(400, Some("question"), "--max-message-chars");
    assert!(h.fake.last_chat.lock().unwrap().as_ref().unwrap().images.len() == 1, "only the request within limits ran");
}

/// What clients send in ordinary conversations is answered, through the real template: an empty
/// user message, an assistant message with empty or no content (as after a tool call), and the
/// literal string of a special token in text, which stays text (no image slot, no turn).
#[tokio::test]
async fn ordinary_input_is_answered_not_a_500() {
    let h = default_harness();
    let cases = [
        (vec![user("")], "<|User|>:<|Assistant|>:"),
        (vec![json!({"role": "user", "content": []})], "<|User|>:<|Assistant|>:"),
        (
            vec![user("hi"), json!({"role": "assistant", "content": ""}), user("again")],
            "<|User|>: hi\n\n<|Assistant|>:<|User|>: again\n\n<|Assistant|>:",
        ),
        (
            vec![user("hi"), json!({"role": "assistant", "content": null}), user("again")],
            "<|User|>: hi\n\n<|Assistant|>:<|User|>: again\n\n<|Assistant|>:",
        ),
        (
            vec![user("what is <image_placeholder> or <|Assistant|>?")],
            "<|User|>: what is <image_placeholder> or <|Assistant|>?\n\n<|Assistant|>:",
        ),
    ];
    for (messages, want) in cases {
        let mut all = vec![json!({"role": "system", "content": ""})];
        all.extend(messages);
        let r = send(&h.app, post_json(CHAT, &json!({ "messages": all }))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let seen = h.fake.last_chat.lock().unwrap().clone().unwrap();
        assert_eq!(seen.prompt, format!("<｜begin▁of▁sentence｜>{want}"));
        assert!(seen.images.is_empty(), "text never becomes an image slot");
    }
    let sp = super::fake::prompter().tokenizer().special;
    let r = send(&h.app, post_json(CHAT, &json!({"messages": [user("<image_placeholder><|User|>")]}))).await;
    assert_eq!(r.status, StatusCode::OK);
    let ids = super::fake::prompter().tokens(&janus::Conversation::<()>::new(vec![janus::Message::user(vec![
        janus::Part::Text("<image_placeholder><|User|>".into()),
    ])]));
    let ids = ids.unwrap().ids;
    assert!(!ids.contains(&sp.image_placeholder));
    assert_eq!(ids.iter().filter(|&&t| t == sp.user).count(), 1, "one user turn: the template's");
}

/// The prompt's tokens are counted before any image is read: a conversation too long for the
/// context is refused as such, whatever its (here broken) images.
#[tokio::test]
async fn a_prompt_too_long_is_refused_before_its_images_are_read() {
    let h = default_harness();
    let broken = "data:image/png;base64,iVBORw0KGgo=";
    let long = "word ".repeat(5000);
    let body = json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": broken}}, {"type": "text", "text": long}]}]});
    let e = send(&h.app, post_json(CHAT, &body)).await.assert_error(400, None, "fit in the context");
    assert_eq!(e["code"], "context_length_exceeded");
    // Within the context, the broken image is what is refused.
    let body = json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": broken}}, {"type": "text", "text": "hi"}]}]});
    send(&h.app, post_json(CHAT, &body)).await.assert_error(400, Some("messages[0].content[0].image_url.url"), "Png");
    assert!(h.fake.last_chat.lock().unwrap().is_none());
}

/// Images waiting as the model's input hold the image memory until the engine has them; a
/// request whose images do not fit in what is left is a 429 with Retry-After, one that could
/// never fit a 400; the memory is given back when the waiting request goes.
#[tokio::test]
async fn the_image_memory_is_bounded_with_a_429() {
    let p = super::fake::prompter();
    let one = p.prepared_image_bytes().next_multiple_of(4096);
    let peak = p.image_peak_bytes(&janus::input::preprocess::ImageProbe::read(&png_bytes(4, 4)).unwrap());
    let h = harness(HttpConfig { image_memory_bytes: 2 * one + peak / 2, ..HttpConfig::default() });
    h.fake.set_mode(Mode::Hang);
    let mut two = user_images(2);
    two["stream"] = json!(true);
    let waiting = h.app.clone().oneshot(post_json(CHAT, &two)).await.unwrap();
    assert_eq!(waiting.status(), StatusCode::OK);
    assert_eq!(h.state.admission.memory().in_use(), 2 * one, "the waiting request's pixels are held");
    let r = send(&h.app, post_json(CHAT, &user_images(1))).await;
    let e = r.assert_error(429, None, "--image-memory-bytes");
    assert_eq!((e["type"].as_str(), e["code"].as_str()), (Some("rate_limit_error"), Some("image_memory_full")));
    assert_eq!(r.header("retry-after"), "1");
    h.fake.held_requests.lock().unwrap().clear();
    assert_eq!(h.state.admission.memory().in_use(), 0);
    h.fake.set_mode(Mode::Normal);
    assert_eq!(send(&h.app, post_json(CHAT, &user_images(1))).await.status, StatusCode::OK);
    drop(waiting);

    let h = harness(HttpConfig { image_memory_bytes: peak / 2, ..HttpConfig::default() });
    let e = send(&h.app, post_json(CHAT, &user_images(1))).await.assert_error(
        400,
        Some("messages[0].content[0].image_url.url"),
        "--image-memory-bytes",
    );
    assert_eq!(e["code"], "image_too_large");
}

/// At most `--max-concurrent-requests` model requests are in flight, streamed or not; the slot is
/// held until the response's last byte.
#[tokio::test]
async fn requests_in_flight_are_capped_with_a_429() {
    let h = harness(HttpConfig { max_concurrent_requests: 1, ..HttpConfig::default() });
    h.fake.set_mode(Mode::Hang);
    let stream = post_json(CHAT, &json!({"messages": [user("hi")], "stream": true}));
    let open = h.app.clone().oneshot(stream).await.unwrap();
    assert_eq!(open.status(), StatusCode::OK);
    assert_eq!(h.state.admission.in_flight(), 1, "the stream holds its slot after the handler returned");
    h.fake.set_mode(Mode::Normal);
    let r = send(&h.app, post_json(GEN, &json!({"prompt": "a"}))).await;
    let e = r.assert_error(429, None, "--max-concurrent-requests");
    assert_eq!(e["code"], "too_many_requests");
    assert_eq!(r.header("retry-after"), "1");
    send(&h.app, multipart(&[("image", Some("a.png"), &png_bytes(4, 4))])).await.assert_error(
        429,
        None,
        "--max-concurrent-requests",
    );
    assert_eq!(send(&h.app, get("/v1/models")).await.status, StatusCode::OK, "only the model's routes take slots");
    drop(open);
    assert_eq!(h.state.admission.in_flight(), 0);
    assert_eq!(send(&h.app, post_json(GEN, &json!({"prompt": "a"}))).await.status, StatusCode::OK);
    assert_eq!(h.state.admission.in_flight(), 0, "a plain response gives its slot back");
}

#[tokio::test]
async fn a_decompression_bomb_is_refused_from_its_header() {
    let h = default_harness();
    let bomb = png_header(20_000, 20_000);
    assert_eq!(bomb.len(), png_bytes(1, 1).len(), "a few dozen bytes claim 400 megapixels");
    let body = json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(&bomb)}}, {"type": "text", "text": "x"}]}]});
    let e = send(&h.app, post_json(CHAT, &body)).await.assert_error(
        400,
        Some("messages[0].content[0].image_url.url"),
        "20000x20000",
    );
    assert_eq!(e["code"], "image_too_large", "refused from its header, before a decode was tried");
    send(&h.app, multipart(&[("image", Some("bomb.png"), &bomb)])).await.assert_error(
        400,
        Some("image"),
        "20000x20000",
    );
    assert!(h.fake.last_chat.lock().unwrap().is_none(), "nothing reached the engine");
    assert_eq!(h.state.admission.memory().in_use(), 0, "nor was any image memory held");
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
