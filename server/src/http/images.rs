//! `POST /v1/images/generations` (JSON or server-sent events) and `POST /v1/images/describe`
//! (multipart upload → text).

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures_util::{Stream, StreamExt};
use image::RgbImage;
use janus::limits::MAX_IMAGES_PER_REQUEST;
use janus::{ImageAsk, ImageRequest};

use super::error::{ApiJson, CommonErrors, ErrorResponse};
use super::types::{
    ImageCompletedEvent, ImageData, ImageGenerationRequest, ImagePartialEvent, ImageUsage, ImagesResponse,
    InputTokensDetails,
};
use super::{blocking, sse, unix_now, ApiError, AppState, HttpConfig};
use crate::engine::{ImageEvent, ImagesOutput};

/// A validated image request: the engine's part, and how to answer.
#[derive(Debug)]
pub struct Plan {
    pub request: ImageRequest,
    pub stream: bool,
    pub url: bool,
}

/// Checks every field of an image request against its limit (the handler's first step).
pub fn plan(req: &ImageGenerationRequest, cfg: &HttpConfig) -> Result<Plan, ApiError> {
    let url = match req.response_format.as_deref() {
        None | Some("b64_json") => false,
        Some("url") => true,
        Some(other) => {
            return Err(ApiError::field("response_format", format!("must be `b64_json` or `url`; got `{other}`")))
        }
    };
    if let Some(f) = req.output_format.as_deref().filter(|f| *f != "png") {
        return Err(ApiError::unsupported("output_format", format!("only `png` is produced; got `{f}`")));
    }
    let stream = req.stream.unwrap_or(false);
    let ask = ImageAsk {
        prompt: req.prompt.clone(),
        n: req.n,
        seed: req.seed,
        cfg_weight: req.guidance_scale,
        temperature: req.temperature,
        top_k: req.top_k,
        top_p: req.top_p,
        greedy: false,
        partial_images: req.partial_images,
    };
    let max_n = MAX_IMAGES_PER_REQUEST.min(cfg.max_batch_images);
    let source = (max_n < MAX_IMAGES_PER_REQUEST).then_some("this server's --max-batch-images");
    let mut request = ask.validate_limited(max_n, source)?;
    if !stream {
        request.partial_images = 0;
    }
    Ok(Plan { request, stream, url })
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
    let Plan { request, stream, url } = plan(&req, &state.cfg)?;
    let info = state.model_info()?;
    let size = check_size(req.size.as_deref(), info.image_size)?;
    let (n, seed) = (request.n, request.seed);
    tracing::info!(n, seed, stream, "images");
    let mut resp = if stream {
        let slot = state.stream_slot()?;
        let events = state.engine.generate_images_stream(request)?;
        let ctx = StreamCtx { n, seed, size, created: unix_now() };
        Sse::new(sse::hold(image_events(events, ctx), Some(slot))).keep_alive(KeepAlive::default()).into_response()
    } else {
        let out = state.engine.generate_images(request).await?;
        let base = url.then(|| base_url(&state.cfg, &headers));
        respond_images(&state, out, seed, size, base).await?
    };
    resp.headers_mut().insert("x-seed", HeaderValue::from(seed));
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

/// Encodes the images off the runtime into one JSON body.
async fn respond_images(
    state: &AppState,
    out: ImagesOutput,
    seed: u64,
    size: String,
    base_url: Option<String>,
) -> Result<Response, ApiError> {
    let ImagesOutput { images, prompt_tokens, image_tokens } = out;
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

fn error_event(e: ApiError) -> Event {
    sse::error(Some("error"), e)
}

/// Engine events → SSE events. Completed images wait for `Done` (which carries the prompt's
/// token count, part of each image's usage); the engine sends it right after the last image.
/// The SSE stream owns the event stream: when the client goes away both are dropped, which
/// cancels the work.
fn image_events(
    events: impl Stream<Item = ImageEvent> + Send + 'static,
    ctx: StreamCtx,
) -> impl Stream<Item = Result<Event, Infallible>> {
    struct St {
        events: std::pin::Pin<Box<dyn Stream<Item = ImageEvent> + Send>>,
        ctx: StreamCtx,
        completed: Vec<(usize, String)>,
    }
    let st = St { events: Box::pin(events), ctx, completed: Vec::new() };
    futures_util::stream::unfold(Some(st), |st| async move {
        let mut st = st?;
        loop {
            let ev = st.events.next().await?;
            let (events, more) = match ev {
                ImageEvent::Partial { index, partial_index, image } => match png_base64(image).await {
                    Ok(b64) => {
                        let ev = ImagePartialEvent {
                            kind: "image_generation.partial_image".into(),
                            index,
                            partial_image_index: partial_index,
                            b64_json: b64,
                            created_at: st.ctx.created,
                            size: st.ctx.size.clone(),
                            quality: "auto".into(),
                            background: "opaque".into(),
                            output_format: "png".into(),
                        };
                        (vec![sse::json(Some("image_generation.partial_image"), &ev)], true)
                    }
                    Err(e) => (vec![error_event(e)], false),
                },
                ImageEvent::Image { index, image } => match png_base64(image).await {
                    Ok(b64) => {
                        st.completed.push((index, b64));
                        continue;
                    }
                    Err(e) => (vec![error_event(e)], false),
                },
                ImageEvent::Done { prompt_tokens, image_tokens } => {
                    st.completed.sort_by_key(|(i, _)| *i);
                    let per_image = image_tokens / st.ctx.n.max(1);
                    let events = std::mem::take(&mut st.completed)
                        .into_iter()
                        .map(|(index, b64)| {
                            let ev = ImageCompletedEvent {
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
                            };
                            sse::json(Some("image_generation.completed"), &ev)
                        })
                        .collect();
                    (events, false)
                }
                ImageEvent::Failed(e) => (vec![error_event(e.into())], false),
            };
            let next = more.then_some(st);
            return Some((futures_util::stream::iter(events.into_iter().map(Ok)), next));
        }
    })
    .flatten()
}
