//! Handler tests against a fake engine, through the router with `oneshot` (no port).

mod chat;
mod edits;
mod fake;
mod images;
mod limits;
mod responses;
mod service;

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use self::fake::Fake;
use super::{app, AppState, HttpConfig, State};

pub struct Harness {
    pub fake: Arc<Fake>,
    pub state: AppState,
    pub app: Router,
}

pub fn harness(cfg: HttpConfig) -> Harness {
    let fake = Arc::new(Fake::new());
    let state = State::new(fake.clone(), cfg);
    let app = app(state.clone());
    Harness { fake, state, app }
}

pub fn default_harness() -> Harness {
    harness(HttpConfig::default())
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).unwrap_or_else(|| panic!("no {name} header")).to_str().unwrap()
    }

    /// Asserts an error envelope with this status, param, and a message containing `needle`.
    #[track_caller]
    pub fn assert_error(&self, status: u16, param: Option<&str>, needle: &str) -> Value {
        assert!(!needle.is_empty(), "name something the message must say (\"\" matches any message)");
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text());
        let v = self.json();
        let e = &v["error"];
        for k in ["message", "type", "param", "code"] {
            assert!(e.get(k).is_some(), "envelope lacks {k}: {v}");
        }
        assert_eq!(e["param"].as_str(), param, "param in {v}");
        let msg = e["message"].as_str().unwrap();
        assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
        e.clone()
    }

    /// Server-sent events as (event name, data).
    pub fn sse(&self) -> Vec<(Option<String>, String)> {
        assert_eq!(self.status, StatusCode::OK, "body: {}", self.text());
        assert!(self.header("content-type").starts_with("text/event-stream"));
        self.text()
            .split("\n\n")
            .filter(|b| !b.trim().is_empty())
            .map(|block| {
                let mut event = None;
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(e) = line.strip_prefix("event: ") {
                        event = Some(e.to_string());
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data.push(d);
                    }
                }
                (event, data.join("\n"))
            })
            .collect()
    }
}

pub async fn send(app: &Router, req: Request<Body>) -> Resp {
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Resp { status, headers, body }
}

pub fn post_json(path: &str, body: &Value) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .header("host", "janus.test")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

pub fn post_raw(path: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path).header("content-type", "application/json").body(body.into()).unwrap()
}

pub fn get(path: &str) -> Request<Body> {
    Request::get(path).header("host", "janus.test").body(Body::empty()).unwrap()
}

pub fn png_bytes(w: u32, h: u32) -> Vec<u8> {
    janus::input::image::png_bytes(&image::RgbImage::from_pixel(w, h, image::Rgb([10, 200, 30]))).unwrap()
}

pub fn data_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    format!("data:image/png;base64,{}", base64::prelude::BASE64_STANDARD.encode(bytes))
}

pub fn b64_png(s: &str) -> image::RgbImage {
    use base64::Engine as _;
    let bytes = base64::prelude::BASE64_STANDARD.decode(s).expect("base64");
    image::load_from_memory_with_format(&bytes, image::ImageFormat::Png).expect("a PNG").to_rgb8()
}

/// A multipart/form-data body from (name, filename, bytes) parts.
pub fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> Request<Body> {
    multipart_to("/v1/images/describe", parts)
}

/// A multipart/form-data POST to `path`: (name, file name for files, bytes).
pub fn multipart_to(path: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Request<Body> {
    let boundary = "XjanusBOUNDARYx";
    let mut body = Vec::new();
    for (name, filename, bytes) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match filename {
            Some(f) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
        }
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    Request::post(path)
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(Body::from(body))
        .unwrap()
}
