//! Entry points for the fuzz targets (`server/fuzz/`, cargo-fuzz) and their regression tests
//! (`server/tests/fuzz_regressions.rs`, stable `cargo test`): each feeds arbitrary bytes through
//! the same parsing and validation functions the handlers call, in the handlers' order, and
//! checks what must hold for any input: no panic, and a refusal is a 4xx in the error envelope
//! (a 5xx would blame the server for a bad request). Nothing here is a parallel code path.
//!
//! | target | what it drives |
//! | --- | --- |
//! | `images_generations` | `ApiJson` parsing of `ImageGenerationRequest`, `images::plan`, `images::output`, the prompt's tokens (`ImagesRequest::new`) |
//! | `chat_completions` | `ApiJson` parsing of `ChatCompletionRequest`, `chat::plan` (with `TextAsk::validate` and the request limits), `Preparer::chat` (template, tokens, lengths, data-URL images read, decoded within an image memory budget and preprocessed) |
//! | `describe_multipart` | axum's `Multipart` extractor on the raw body, `describe::describe_form`, `TextAsk::validate`, `Preparer::chat` with the upload |
//! | `data_url` | `image_input::ImageSource::parse` and `image_input::decode_base64` |
//! | `image_preprocess` | `Preparer::image` on raw bytes: the header probe, the pixel limit, the decode and the model's preprocessing |
//! | `chat_template` | `Conversation::render`, the one-pass tokenization (`Prompter::tokens`) and the text-to-image template (`Prompter::t2i_prompt_ids`) |
//!
//! Requests are prepared with the tiny model's real tokenizer and preprocessing
//! (`assets/tiny/janus-pro-tiny`; no weights are loaded).

use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart};
use axum::http::Request;
use base64::Engine as _;
use janus::{Conversation, Message, ModelFiles, Part, Prompter, Role, TextAsk};

use crate::admission::ImageMemory;
use crate::engine::ImagesRequest;
use crate::http::error::parse_json;
use crate::http::image_input::{decode_base64, ImageSource};
use crate::http::prepare::{PendingImage, Preparer};
use crate::http::types::{ChatCompletionRequest, ImageGenerationRequest};
use crate::http::{chat, describe, images, ApiError, HttpConfig};

/// Every target, by name (the folder names under `server/fuzz/corpus/` and `regressions/`).
pub const TARGETS: &[&str] =
    &["images_generations", "chat_completions", "describe_multipart", "data_url", "image_preprocess", "chat_template"];

/// The multipart boundary the `describe_multipart` target declares in its content type.
pub const BOUNDARY: &str = "janusfuzz";

/// Janus-Pro's generated image size, as the handlers get it from the loaded model.
const IMAGE_SIZE: usize = 384;
/// The image memory the targets prepare within (the server's default).
const IMAGE_MEMORY: u64 = crate::http::DEFAULT_IMAGE_MEMORY_BYTES;

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

#[track_caller]
fn check<T>(r: Result<T, ApiError>) -> Option<T> {
    r.map_err(|e| client_error(&e)).ok()
}

/// The tiny model's tokenizer and preprocessing (CPU, no weights).
fn prompter() -> &'static Prompter {
    static PROMPTER: OnceLock<Prompter> = OnceLock::new();
    PROMPTER.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/tiny/janus-pro-tiny");
        Prompter::load(&ModelFiles::from_dir(&dir, "tiny").expect("the tiny model's files")).expect("the tiny prompter")
    })
}

/// The admission stage's image memory, one for all inputs as in a server.
fn memory() -> &'static ImageMemory {
    static MEMORY: OnceLock<ImageMemory> = OnceLock::new();
    MEMORY.get_or_init(|| ImageMemory::new(IMAGE_MEMORY))
}

fn preparer(cfg: &HttpConfig) -> Preparer<'_> {
    Preparer { prompter: prompter(), memory: memory(), limits: &cfg.limits, max_fetch_bytes: 1 << 20 }
}

/// `POST /v1/images/generations` up to the engine.
pub fn images_generations(data: &[u8]) {
    let Some(req) = check(parse_json::<ImageGenerationRequest>(data)) else { return };
    for cfg in [HttpConfig::default(), HttpConfig { max_batch_images: 3, ..HttpConfig::default() }] {
        if let Some(plan) = check(images::plan(&req, &cfg)) {
            check(images::output(&req, IMAGE_SIZE));
            check(ImagesRequest::new(prompter(), plan.request).map_err(ApiError::from));
        }
    }
}

/// `POST /v1/chat/completions` up to the engine (remote URLs off, as by default): every refusal
/// on the way, preparation included, is a 4xx.
pub fn chat_completions(data: &[u8]) {
    let Some(req) = check(parse_json::<ChatCompletionRequest>(data)) else { return };
    let cfg = HttpConfig::default();
    let Some(plan) = check(chat::plan(req, &cfg, prompter().context_length())) else { return };
    if let Some(ready) = check(preparer(&cfg).chat(plan.conversation, plan.params)) {
        let prompt = &ready.text.prompt;
        assert_eq!(prompt.pixels.len(), prompt.image_starts.len());
        assert!(prompt.ids.len() + ready.text.max_new <= prompter().context_length());
        assert_eq!(
            ready.hold.bytes(),
            (prompt.pixels.len() as u64 * prompter().prepared_image_bytes()).next_multiple_of(4096)
        );
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
        if let Some(params) = check(ask.validate(prompter().context_length()).map_err(ApiError::from)) {
            let image = PendingImage { source: ImageSource::Upload(input.image), param: "image".into() };
            let conv = Conversation::new(vec![Message::user(vec![Part::Image(image), Part::Text(input.question)])]);
            check(preparer(&HttpConfig::default()).chat(conv, params));
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
        Some(other) => panic!("a data URL parsed as {other:?}"),
        None => {}
    }
}

/// Image bytes → header probe → decoded image → the model's pixels (the tiny model's
/// preprocessing); what is left held is the prepared pixels' memory.
pub fn image_preprocess(data: &[u8]) {
    let image = PendingImage { source: ImageSource::Upload(data.to_vec().into()), param: "image".into() };
    let Some((prepared, held)) = check(preparer(&HttpConfig::default()).image(image)) else { return };
    let s = prompter().preprocess().image_size;
    assert_eq!(prepared.pixels.dims(), [3, s, s]);
    assert_eq!(held.bytes(), prompter().prepared_image_bytes().next_multiple_of(4096));
}

/// A conversation from bytes: segments split at NUL are the system prompt, then turns
/// alternating user/assistant; a segment starting with `@` in a user turn holds an image.
pub fn conversation_from_bytes(data: &[u8]) -> Conversation<()> {
    let text = String::from_utf8_lossy(data);
    let mut segs = text.split('\0');
    let system = segs.next().unwrap_or("").to_string();
    let messages = segs
        .enumerate()
        .map(|(i, seg)| {
            let role = if i % 2 == 0 { Role::User } else { Role::Assistant };
            let parts = match seg.strip_prefix('@') {
                Some(rest) if role == Role::User => vec![Part::Image(()), Part::Text(rest.to_string())],
                _ => vec![Part::Text(seg.to_string())],
            };
            Message { role, parts }
        })
        .collect();
    Conversation { system, messages }
}

/// Prompt templating and tokenisation: the chat template with its image slots, and the
/// text-to-image template.
pub fn chat_template(data: &[u8]) {
    let p = prompter();
    let conv = conversation_from_bytes(data);
    let images = conv.images().count();
    match p.tokens(&conv) {
        Ok(t) => {
            // Every image becomes one run of placeholders, and placeholders come only from
            // images: a special token's string in text (`<image_placeholder>`, `<|Assistant|>`,
            // ...) is plain text; see the regression input `special_tags_in_text`.
            let sp = p.tokenizer().special;
            let placeholders = t.ids.iter().filter(|&&id| id == sp.image_placeholder).count();
            assert_eq!(
                placeholders,
                images * (p.positions_per_image() - 2),
                "{placeholders} placeholders for {images} images"
            );
            assert_eq!(t.image_starts.len(), images);
            let roles = t.ids.iter().filter(|&&id| id == sp.user || id == sp.assistant).count();
            assert_eq!(roles, conv.messages.len() + 1, "only the template's turns");
            assert_eq!(t.ids[0], sp.bos, "the prompt starts with BOS");
            assert!(t.boundaries.windows(2).all(|w| w[0] < w[1]));
        }
        Err(e) if e.is_bad_request() => {}
        Err(e) => panic!("tokenizing a conversation failed unexpectedly: {e}"),
    }
    let prompt = String::from_utf8_lossy(data);
    match p.t2i_prompt_ids(&prompt) {
        Ok(ids) => assert_eq!(ids.last(), Some(&p.tokenizer().special.begin_of_image)),
        Err(e) if e.is_bad_request() => {}
        Err(e) => panic!("the text-to-image template failed unexpectedly: {e}"),
    }
}
