//! Entry points for the fuzz targets (`server/fuzz/`, cargo-fuzz) and their regression tests
//! (`server/tests/fuzz_regressions.rs`, stable `cargo test`): each feeds arbitrary bytes through
//! the same parsing and validation functions the handlers call, in the handlers' order, and
//! checks what must hold for any input: no panic, and a refusal is a 4xx in the error envelope
//! (a 5xx would blame the server for a bad request). Nothing here is a parallel code path.
//!
//! | target | what it drives |
//! | --- | --- |
//! | `images_generations` | `ApiJson` parsing of `ImageGenerationRequest`, `images::plan`, `images::check_size` |
//! | `chat_completions` | `ApiJson` parsing of `ChatCompletionRequest`, `chat::plan` (with `TextAsk::validate`), `chat::conversation` (data-URL images decoded) |
//! | `describe_multipart` | axum's `Multipart` extractor on the raw body, `describe::describe_form`, `TextAsk::validate`, `image_input::decode_image` |
//! | `data_url` | `image_input::ImageSource::parse` and `image_input::decode_base64` |
//! | `image_preprocess` | `image_input::decode_image` (`janus::preprocess::decode_image`) and the model's preprocessing to pixels |
//! | `chat_template` | `Conversation::render`, tokenisation and placeholder expansion (`Janus::prepare`) and the text-to-image template (`Janus::t2i_jobs`) on the tiny model's tokenizer |

use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart};
use axum::http::Request;
use base64::Engine as _;
use image::DynamicImage;
use janus::preprocess::PreprocessConfig;
use janus::{Conversation, Device, Janus, Message, Part, Role, SamplingParams, TextAsk};

use crate::http::error::parse_json;
use crate::http::image_input::{decode_base64, decode_image, ImageSource};
use crate::http::types::{ChatCompletionRequest, ImageGenerationRequest};
use crate::http::{chat, describe, images, ApiError, HttpConfig};

/// Every target, by name (the folder names under `server/fuzz/corpus/` and `regressions/`).
pub const TARGETS: &[&str] =
    &["images_generations", "chat_completions", "describe_multipart", "data_url", "image_preprocess", "chat_template"];

/// The multipart boundary the `describe_multipart` target declares in its content type.
pub const BOUNDARY: &str = "janusfuzz";

/// Janus-Pro's numbers, as the handlers get them from the loaded model.
const CONTEXT_LENGTH: usize = 4096;
const IMAGE_SIZE: usize = 384;

/// Runs the target called `name` on `data`; `false` if there is no such target.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "images_generations" => images_generations(data),
        "chat_completions" => chat_completions(data),
        "describe_multipart" => describe_multipart(data),
        "data_url" => data_url(data),
        "image_preprocess" => image_preprocess(data),
        "chat_template" => chat_template(data),
        _ => return false,
    }
    true
}

/// A refusal must be a client error in the envelope, with a message.
#[track_caller]
fn client_error(e: &ApiError) {
    assert!(e.status.is_client_error(), "a bad request answered {}: {}", e.status, e.message);
    assert!(!e.message.is_empty());
    serde_json::to_vec(&e.body()).expect("the envelope serializes");
}

fn check<T>(r: Result<T, ApiError>) -> Option<T> {
    r.map_err(|e| client_error(&e)).ok()
}

/// `POST /v1/images/generations` up to the engine.
pub fn images_generations(data: &[u8]) {
    let Some(req) = check(parse_json::<ImageGenerationRequest>(data)) else { return };
    for cfg in [HttpConfig::default(), HttpConfig { max_batch_images: 3, ..HttpConfig::default() }] {
        if check(images::plan(&req, &cfg)).is_some() {
            check(images::check_size(req.size.as_deref(), IMAGE_SIZE));
        }
    }
}

/// `POST /v1/chat/completions` up to the engine (remote URLs off, as by default).
pub fn chat_completions(data: &[u8]) {
    let Some(req) = check(parse_json::<ChatCompletionRequest>(data)) else { return };
    let Some(plan) = check(chat::plan(req, false, CONTEXT_LENGTH)) else { return };
    if let Some(conv) = check(chat::conversation(plan.system, plan.turns, 1 << 20)) {
        // What the engine does first with it.
        let _ = conv.render();
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().build().expect("a tokio runtime"))
}

/// `POST /v1/images/describe` up to the engine: `data` is the body of a
/// `multipart/form-data; boundary=janusfuzz` request.
pub fn describe_multipart(data: &[u8]) {
    let req = Request::post("/v1/images/describe")
        .header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"))
        .body(Body::from(data.to_vec()))
        .expect("a valid request");
    runtime().block_on(async move {
        let form = Multipart::from_request(req, &()).await.expect("the content type is multipart");
        let Some(input) = check(describe::describe_form(form, 1 << 20).await) else { return };
        let ask = TextAsk { max_tokens: input.max_tokens, ..TextAsk::default() };
        if check(ask.validate(CONTEXT_LENGTH).map_err(ApiError::from)).is_some() {
            check(decode_image(&input.image, "image"));
        }
    });
}

/// A chat image URL: `data:` URL parsing and base64 decoding.
pub fn data_url(data: &[u8]) {
    let url = String::from_utf8_lossy(data);
    let param = "messages[0].content[0].image_url.url";
    match check(ImageSource::parse(&url, param, false)) {
        Some(ImageSource::Base64(b64)) => {
            if let Ok(bytes) = decode_base64(&b64) {
                let again = base64::prelude::BASE64_STANDARD.encode(&bytes);
                assert_eq!(decode_base64(&again).expect("re-encoded base64 decodes"), bytes);
            }
        }
        Some(ImageSource::Remote(_)) => panic!("a remote URL was accepted with remote images off"),
        None => {}
    }
}

/// Image bytes → decoded image → the model's pixels (Janus-Pro's 384 px preprocessing).
pub fn image_preprocess(data: &[u8]) {
    let Some(img) = check(decode_image(data, "image")) else { return };
    assert!(img.width() > 0 && img.height() > 0);
    let cfg = PreprocessConfig::janus_default(IMAGE_SIZE);
    let pixels = cfg.pixels(&img, &Device::Cpu).expect("a decoded image preprocesses");
    assert_eq!(pixels.dims(), [3, IMAGE_SIZE, IMAGE_SIZE]);
}

/// The tiny model in `assets/tiny/` (CPU): its tokenizer and template are the real ones.
fn tiny_model() -> &'static Janus {
    static MODEL: OnceLock<Janus> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/tiny/janus-pro-tiny");
        Janus::open(dir, "cpu", None, janus::Quant::None).expect("the tiny model loads")
    })
}

/// A conversation from bytes: segments split at NUL are the system prompt, then turns
/// alternating user/assistant; a segment starting with `@` in a user turn becomes an image.
pub fn conversation_from_bytes(data: &[u8]) -> Conversation {
    let text = String::from_utf8_lossy(data);
    let mut segs = text.split('\0');
    let system = segs.next().unwrap_or("").to_string();
    let pixel = || DynamicImage::ImageRgb8(image::RgbImage::from_pixel(8, 6, image::Rgb([200, 10, 10])));
    let messages = segs
        .enumerate()
        .map(|(i, seg)| {
            let role = if i % 2 == 0 { Role::User } else { Role::Assistant };
            let part = match seg.strip_prefix('@') {
                Some(rest) if role == Role::User => vec![Part::Image(pixel()), Part::Text(rest.to_string())],
                _ => vec![Part::Text(seg.to_string())],
            };
            Message { role, parts: part }
        })
        .collect();
    Conversation { system, messages }
}

/// Prompt templating and tokenisation: the chat template with placeholder expansion, and the
/// text-to-image template.
pub fn chat_template(data: &[u8]) {
    let model = tiny_model();
    let conv = conversation_from_bytes(data);
    let images = conv.messages.iter().flat_map(|m| &m.parts).filter(|p| matches!(p, Part::Image(_))).count();
    match model.prepare(&conv) {
        Ok(p) => {
            // Every image becomes one run of placeholders, and placeholders come only from
            // images (user text holding `<image_placeholder>` is refused). Other special-token
            // strings in user text (`<begin_of_image>`, `<|Assistant|>`...) are tokenized as the
            // special tokens, as in the reference; see the regression input `special_tags_in_text`.
            let sp = model.tokenizer.special;
            let placeholders = p.ids.iter().filter(|&&t| t == sp.image_placeholder).count();
            assert_eq!(placeholders == 0, images == 0, "{placeholders} placeholders for {images} images");
            assert_eq!(placeholders % images.max(1), 0);
            assert_eq!(p.pixels.is_some(), images > 0);
            assert_eq!(p.ids[0], sp.bos, "the prompt starts with BOS");
        }
        Err(e) if e.is_bad_request() || matches!(e, janus::Error::InvalidInput(_) | janus::Error::Tokenizer(_)) => {}
        Err(e) => panic!("preparing a conversation failed unexpectedly: {e}"),
    }
    let prompt = String::from_utf8_lossy(data);
    match model.t2i_jobs(&prompt, 1, 0, SamplingParams::default()) {
        Ok(jobs) => assert!(!jobs[0].prompt_ids.is_empty()),
        Err(e) if e.is_bad_request() || matches!(e, janus::Error::InvalidInput(_) | janus::Error::Tokenizer(_)) => {}
        Err(e) => panic!("the text-to-image template failed unexpectedly: {e}"),
    }
}
