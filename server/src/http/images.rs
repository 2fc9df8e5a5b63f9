//! `POST /v1/images/generations` (JSON or server-sent events) and `POST /v1/images/describe`
//! (multipart upload → text).

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::multipart::{MultipartError, MultipartRejection};
use axum::extract::{Multipart, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use futures_util::{stream, Stream, StreamExt};
use image::RgbImage;
use janus::understand::DEFAULT_QUESTION;
use janus::{Conversation, SamplingParams, TextParams};
use tokio::sync::mpsc;

use super::chat::{collect_text, decode_image, finish_reason, max_tokens, started};
use super::error::{ApiJson, CommonErrors, ErrorResponse};
use super::types::{
    DescribeForm, DescribeResponse, ImageCompletedEvent, ImageData, ImageGenerationRequest, ImagePartialEvent,
    ImageUsage, ImagesResponse, InputTokensDetails, Usage,
};
use super::{blocking, unix_now, ApiError, AppState, HttpConfig, MAX_IMAGES_PER_REQUEST, MAX_PARTIAL_IMAGES};
use crate::engine::{ChatRequest, ImageEvent, ImageRequest};

/// Longest prompt in characters (OpenAI's GPT-image limit); the engine also checks tokens.
const MAX_PROMPT_CHARS: usize = 32_000;

/// A validated image request (everything but `size`, which needs the loaded model).
#[derive(Debug)]
pub struct Plan {
    n: usize,
    seed: u64,
    params: SamplingParams,
    partial_images: usize,
    stream: bool,
    url: bool,
}

/// Checks every field of an image request against its limit (the handler's first step).
pub fn plan(req: &ImageGenerationRequest, cfg: &HttpConfig) -> Result<Plan, ApiError> {
    if req.prompt.trim().is_empty() {
        return Err(ApiError::field("prompt", "must not be empty"));
    }
    let chars = req.prompt.chars().count();
    if chars > MAX_PROMPT_CHARS {
        return Err(ApiError::field("prompt", format!("must be at most {MAX_PROMPT_CHARS} characters; got {chars}")));
    }
    let max_n = MAX_IMAGES_PER_REQUEST.min(cfg.max_batch_images);
    let n = req.n.unwrap_or(1);
    if n < 1 || n > max_n as i64 {
        let why = if max_n < MAX_IMAGES_PER_REQUEST { " (this server's --max-batch-images)" } else { "" };
        return Err(ApiError::field("n", format!("must be between 1 and {max_n}{why}; got {n}")));
    }
    let url = match req.response_format.as_deref() {
        None | Some("b64_json") => false,
        Some("url") => true,
        Some(other) => {
            return Err(ApiError::field("response_format", format!("must be `b64_json` or `url`; got `{other}`")))
        }
    };
    let partial_images = req.partial_images.unwrap_or(0);
    if !(0..=MAX_PARTIAL_IMAGES as i64).contains(&partial_images) {
        return Err(ApiError::field(
            "partial_images",
            format!("must be between 0 and {MAX_PARTIAL_IMAGES}; got {partial_images}"),
        ));
    }
    if let Some(f) = req.output_format.as_deref().filter(|f| *f != "png") {
        return Err(ApiError::unsupported("output_format", format!("only `png` is produced; got `{f}`")));
    }
    let cfg_weight = req.guidance_scale.unwrap_or(5.0);
    if !(0.0..=100.0).contains(&cfg_weight) {
        return Err(ApiError::field("guidance_scale", format!("must be between 0 and 100; got {cfg_weight}")));
    }
    let temperature = req.temperature.unwrap_or(1.0);
    if !(0.0..=10.0).contains(&temperature) {
        return Err(ApiError::field("temperature", format!("must be between 0 and 10; got {temperature}")));
    }
    if let Some(k) = req.top_k.filter(|k| *k < 1) {
        return Err(ApiError::field("top_k", format!("must be at least 1; got {k}")));
    }
    if let Some(p) = req.top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
        return Err(ApiError::field("top_p", format!("must be in (0, 1]; got {p}")));
    }
    let params = SamplingParams {
        cfg_weight,
        temperature,
        top_k: req.top_k.map(|k| k as usize),
        top_p: req.top_p,
        greedy: false,
    };
    params.validate().map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(Plan {
        n: n as usize,
        seed: req.seed.unwrap_or_else(super::random_seed),
        params,
        partial_images: partial_images as usize,
        stream: req.stream.unwrap_or(false),
        url,
    })
}

/// `size` against the loaded model's native size.
pub fn check_size(size: Option<&str>, image_size: usize) -> Result<String, ApiError> {
    let native = format!("{image_size}x{image_size}");
    match size {
        None | Some("auto") => Ok(native),
        Some(s) if s == native => Ok(native),
        Some(s) => {
            Err(ApiError::field("size", format!("must be `auto` or `{native}` (the model's native size); got `{s}`")))
        }
    }
}

/// Generate images from a prompt (OpenAI's Images API). With `stream: true`, server-sent events:
/// `image_generation.partial_image` previews (`partial_images` per image), then one
/// `image_generation.completed` per image; a failure after the stream started is sent as an
/// `error` event holding the error envelope.
#[utoipa::path(
    post,
    path = "/v1/images/generations",
    tag = "images",
    security(("api_key" = [])),
    request_body = ImageGenerationRequest,
    responses(
        (status = 200, description = "The images (JSON), or with `stream: true` an event stream of \
            `image_generation.partial_image` (ImagePartialEvent) and `image_generation.completed` \
            (ImageCompletedEvent) events", body = ImagesResponse,
            headers(("x-seed" = u64, description = "The seed used"))),
        (status = 400, description = "A field is invalid (named in `param`)", body = ErrorResponse),
        (status = 429, description = "Queue full, or --max-streams streams open; see Retry-After", body = ErrorResponse),
        CommonErrors,
    )
)]
pub async fn generate(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ImageGenerationRequest>,
) -> Result<Response, ApiError> {
    let plan = plan(&req, &state.cfg)?;
    let info = state.model_info()?;
    let size = check_size(req.size.as_deref(), info.image_size)?;
    tracing::info!(n = plan.n, seed = plan.seed, stream = plan.stream, "images");
    let slot = if plan.stream { Some(state.stream_slot()?) } else { None };
    let rx = state.engine.submit_images(ImageRequest {
        prompt: req.prompt,
        n: plan.n,
        seed: plan.seed,
        params: plan.params,
        partial_images: if plan.stream { plan.partial_images } else { 0 },
    })?;
    let seed_header = HeaderValue::from(plan.seed);
    let mut resp = if plan.stream {
        let ctx = StreamCtx { n: plan.n, seed: plan.seed, size, created: unix_now() };
        Sse::new(super::hold(image_events(rx, ctx), slot)).keep_alive(KeepAlive::default()).into_response()
    } else {
        let base = plan.url.then(|| base_url(&state.cfg, &headers));
        respond_images(&state, rx, plan.n, plan.seed, size, base).await?
    };
    resp.headers_mut().insert("x-seed", seed_header);
    Ok(resp)
}

/// Where `/v1/files/...` URLs point: `--public-url`, else `http://{Host}`.
fn base_url(cfg: &HttpConfig, headers: &HeaderMap) -> String {
    if let Some(u) = &cfg.public_url {
        return u.trim_end_matches('/').to_string();
    }
    match headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        Some(host) => format!("http://{host}"),
        None => String::new(),
    }
}

/// Waits for all images, then encodes them off the runtime into one JSON body.
async fn respond_images(
    state: &AppState,
    mut rx: mpsc::Receiver<ImageEvent>,
    n: usize,
    seed: u64,
    size: String,
    base_url: Option<String>,
) -> Result<Response, ApiError> {
    let mut images: Vec<Option<RgbImage>> = (0..n).map(|_| None).collect();
    let (prompt_tokens, image_tokens) = loop {
        match rx.recv().await {
            Some(ImageEvent::Partial { .. }) => {}
            Some(ImageEvent::Image { index, image }) => match images.get_mut(index) {
                Some(slot) => *slot = Some(image),
                None => return Err(ApiError::internal(format!("the engine sent image {index} of {n}"))),
            },
            Some(ImageEvent::Done { prompt_tokens, image_tokens }) => break (prompt_tokens, image_tokens),
            Some(ImageEvent::Failed(e)) => return Err(e.into()),
            None => return Err(ApiError::internal("the engine dropped the request")),
        }
    };
    drop(rx);
    let images: Vec<RgbImage> = images
        .into_iter()
        .enumerate()
        .map(|(i, img)| img.ok_or_else(|| ApiError::internal(format!("the engine finished without image {i}"))))
        .collect::<Result<_, _>>()?;
    let pngs = blocking(move || images.iter().map(janus::image::png_bytes).collect::<Result<Vec<_>, _>>())
        .await?
        .map_err(|e| ApiError::internal(format!("PNG encoding failed: {e}")))?;
    let data: Vec<(Option<Vec<u8>>, Option<String>)> = match &base_url {
        Some(base) => pngs
            .into_iter()
            .map(|png| (None, Some(format!("{base}/v1/files/{}/content", state.files.insert(png)))))
            .collect(),
        None => pngs.into_iter().map(|png| (Some(png), None)).collect(),
    };
    let body = blocking(move || {
        let data = data
            .into_iter()
            .map(|(png, url)| ImageData { b64_json: png.map(|p| base64::prelude::BASE64_STANDARD.encode(p)), url })
            .collect();
        let resp = ImagesResponse {
            created: unix_now(),
            data,
            output_format: "png".into(),
            size,
            usage: usage(prompt_tokens, image_tokens),
            seed,
        };
        serde_json::to_vec(&resp)
    })
    .await?
    .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut resp = Response::new(Body::from(body));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

fn usage(prompt_tokens: usize, image_tokens: usize) -> ImageUsage {
    ImageUsage {
        input_tokens: prompt_tokens,
        output_tokens: image_tokens,
        total_tokens: prompt_tokens + image_tokens,
        input_tokens_details: InputTokensDetails { text_tokens: prompt_tokens, image_tokens: 0 },
    }
}

async fn png_base64(image: RgbImage) -> Result<String, ApiError> {
    blocking(move || janus::image::png_bytes(&image).map(|p| base64::prelude::BASE64_STANDARD.encode(p)))
        .await?
        .map_err(|e| ApiError::internal(format!("PNG encoding failed: {e}")))
}

struct StreamCtx {
    n: usize,
    seed: u64,
    size: String,
    created: u64,
}

/// An SSE event with a JSON payload.
pub fn sse_json(event: Option<&str>, payload: &impl serde::Serialize) -> Event {
    let data = serde_json::to_string(payload).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    let ev = Event::default().data(data);
    match event {
        Some(name) => ev.event(name),
        None => ev,
    }
}

fn error_event(e: ApiError) -> Event {
    tracing::warn!("image stream failed: {}", e.message);
    sse_json(Some("error"), &e.body())
}

/// Engine events → SSE events. Completed images wait for `Done` (which carries the prompt's
/// token count, part of each image's usage); the engine sends it right after the last image.
/// The stream owns the receiver: when the client goes away the stream is dropped, and with it
/// the receiver, which cancels the work.
fn image_events(rx: mpsc::Receiver<ImageEvent>, ctx: StreamCtx) -> impl Stream<Item = Result<Event, Infallible>> {
    struct St {
        rx: mpsc::Receiver<ImageEvent>,
        ctx: StreamCtx,
        completed: Vec<(usize, String)>,
        finished: bool,
    }
    let st = St { rx, ctx, completed: Vec::new(), finished: false };
    stream::unfold(st, |mut st| async move {
        if st.finished {
            return None;
        }
        loop {
            let events = match st.rx.recv().await {
                Some(ImageEvent::Partial { index, partial_index, image }) => match png_base64(image).await {
                    Ok(b64) => vec![sse_json(
                        Some("image_generation.partial_image"),
                        &ImagePartialEvent {
                            kind: "image_generation.partial_image".into(),
                            index,
                            partial_image_index: partial_index,
                            b64_json: b64,
                            created_at: st.ctx.created,
                            size: st.ctx.size.clone(),
                            quality: "auto".into(),
                            background: "opaque".into(),
                            output_format: "png".into(),
                        },
                    )],
                    Err(e) => {
                        st.finished = true;
                        vec![error_event(e)]
                    }
                },
                Some(ImageEvent::Image { index, image }) => match png_base64(image).await {
                    Ok(b64) => {
                        st.completed.push((index, b64));
                        continue;
                    }
                    Err(e) => {
                        st.finished = true;
                        vec![error_event(e)]
                    }
                },
                Some(ImageEvent::Done { prompt_tokens, image_tokens }) => {
                    st.finished = true;
                    st.completed.sort_by_key(|(i, _)| *i);
                    let per_image = image_tokens / st.ctx.n.max(1);
                    std::mem::take(&mut st.completed)
                        .into_iter()
                        .map(|(index, b64)| {
                            sse_json(
                                Some("image_generation.completed"),
                                &ImageCompletedEvent {
                                    kind: "image_generation.completed".into(),
                                    index,
                                    b64_json: b64,
                                    created_at: st.ctx.created,
                                    size: st.ctx.size.clone(),
                                    quality: "auto".into(),
                                    background: "opaque".into(),
                                    output_format: "png".into(),
                                    usage: usage(prompt_tokens, per_image),
                                    seed: st.ctx.seed,
                                },
                            )
                        })
                        .collect()
                }
                Some(ImageEvent::Failed(e)) => {
                    st.finished = true;
                    vec![error_event(e.into())]
                }
                None => {
                    st.finished = true;
                    vec![error_event(ApiError::internal("the engine dropped the request"))]
                }
            };
            return Some((stream::iter(events.into_iter().map(Ok)), st));
        }
    })
    .flatten()
}

// ---------------------------------------------------------------- describe

fn form_error(e: MultipartError, limit: usize) -> ApiError {
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large(limit)
    } else {
        ApiError::bad_request(format!("cannot read the multipart form: {}", e.body_text()))
    }
}

/// The fields of a describe form, checked (the image is not decoded yet).
#[derive(Debug)]
pub struct DescribeInput {
    pub image: axum::body::Bytes,
    pub question: String,
    /// As given; [`max_tokens`] checks it against the model's context.
    pub max_tokens: Option<i64>,
}

/// Reads and checks the describe form: one `image` file, optional `question` and `max_tokens`,
/// nothing else; over `limit` bytes → 413.
pub async fn describe_form(mut form: Multipart, limit: usize) -> Result<DescribeInput, ApiError> {
    let (mut image, mut question, mut max_tokens_text) = (None, None, None);
    while let Some(field) = form.next_field().await.map_err(|e| form_error(e, limit))? {
        let name = field.name().unwrap_or("").to_string();
        match name.as_str() {
            "image" if image.is_none() => image = Some(field.bytes().await.map_err(|e| form_error(e, limit))?),
            "question" if question.is_none() => question = Some(field.text().await.map_err(|e| form_error(e, limit))?),
            "max_tokens" if max_tokens_text.is_none() => {
                max_tokens_text = Some(field.text().await.map_err(|e| form_error(e, limit))?)
            }
            "image" | "question" | "max_tokens" => return Err(ApiError::field(&name, "given more than once")),
            _ => {
                return Err(ApiError::field(&name, "unknown form field; expected `image`, `question` or `max_tokens`"))
            }
        }
    }
    let image = image.ok_or_else(|| ApiError::field("image", "required: attach the image file as `image`"))?;
    let question = match question {
        None => DEFAULT_QUESTION.to_string(),
        Some(q) if q.trim().is_empty() => return Err(ApiError::field("question", "must not be empty")),
        Some(q) => q,
    };
    let max_tokens_given = match max_tokens_text {
        None => None,
        Some(t) => Some(
            t.trim()
                .parse::<i64>()
                .map_err(|_| ApiError::field("max_tokens", format!("must be an integer; got `{t}`")))?,
        ),
    };
    Ok(DescribeInput { image, question, max_tokens: max_tokens_given })
}

/// Describe an uploaded image, or answer a question about it (multipart form: `image` file,
/// optional `question` and `max_tokens`). For `curl -F image=@photo.jpg`.
#[utoipa::path(
    post,
    path = "/v1/images/describe",
    tag = "images",
    security(("api_key" = [])),
    request_body(content = DescribeForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The answer", body = DescribeResponse),
        (status = 400, description = "A missing or invalid form field, or an undecodable image", body = ErrorResponse),
        (status = 415, description = "An image format we do not read", body = ErrorResponse),
        (status = 429, description = "Queue full; see Retry-After", body = ErrorResponse),
        CommonErrors,
    )
)]
pub async fn describe(
    State(state): State<AppState>,
    form: Result<Multipart, MultipartRejection>,
) -> Result<Json<DescribeResponse>, ApiError> {
    let form = form.map_err(|e| {
        ApiError::bad_request(format!(
            "send a multipart/form-data body with an `image` file (and optional `question`, `max_tokens`): {}",
            e.body_text()
        ))
    })?;
    let DescribeInput { image, question, max_tokens: max_tokens_given } =
        describe_form(form, state.cfg.max_body_bytes).await?;
    let info = state.model_info()?;
    let max_new_tokens = max_tokens(max_tokens_given, "max_tokens", info.context_length)?;
    let img = blocking(move || decode_image(&image, "image")).await??;
    let params = TextParams { max_new_tokens, ..TextParams::default() };
    let mut rx =
        state.engine.submit_chat(ChatRequest { conversation: Conversation::single(img, &question), params })?;
    let prompt_tokens = started(&mut rx).await?;
    let out = collect_text(&mut rx).await?;
    Ok(Json(DescribeResponse {
        text: out.text,
        finish_reason: finish_reason(out.finish_reason).into(),
        usage: Usage::new(prompt_tokens, out.completion_tokens),
    }))
}
