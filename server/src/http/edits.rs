//! `POST /v1/images/edits` (OpenAI's multipart shape). With a `mask` (a PNG of the image's size
//! whose fully transparent pixels mark what to change): the image is encoded to VQ tokens, the
//! mask reduced to the token grid, and generation runs in raster order with the kept tokens forced
//! from the image and the others drawn under guidance on the prompt; the result is laid over the
//! image inside the mask only (`janus::edit`), so every other pixel is the input's. Without a
//! mask (Open WebUI's and gpt-image clients' edits) Janus-Pro cannot edit in place: the image is
//! described by the understanding path and redrawn from the description and the instruction,
//! returned as `revised_prompt`.

use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, State};
use axum::http::HeaderMap;
use axum::response::Response;
use janus::edit::{composite, editable_grid, encoder_pixels, mask_marks, FEATHER_DIVISOR};
use janus::ImageAsk;

use super::error::{CommonErrors, ErrorResponse};
use super::image_form::ImageForm;
use super::image_input::ImageSource;
use super::image_output::ImageOutput;
use super::images::{self, Answer};
use super::prepare::PendingImage;
use super::types::ImageEditForm;
use super::{blocking, describe, ApiError, AppState};
use crate::engine::{EditInput, ImagesOutput, ImagesRequest};

/// The text fields an edit form may have (besides `image`, `image[]` and `mask`).
const EDIT_FIELDS: &[&str] = &[
    "prompt",
    "n",
    "size",
    "response_format",
    "output_format",
    "output_compression",
    "seed",
    "guidance_scale",
    "temperature",
    "model",
    "user",
    "quality",
    "background",
    "input_fidelity",
    "moderation",
];

/// The sampling fields of an image form (`prompt` as given): what edits and variations share.
pub fn form_ask(form: &ImageForm, prompt: String) -> Result<ImageAsk, ApiError> {
    Ok(ImageAsk {
        prompt,
        n: form.parsed("n", "an integer")?,
        seed: form.parsed("seed", "a non-negative integer")?,
        cfg_weight: form.parsed("guidance_scale", "a number")?,
        temperature: form.parsed("temperature", "a number")?,
        ..ImageAsk::default()
    })
}

/// The output fields of an image form, against the model's native side.
pub fn form_output(form: &ImageForm, native: usize) -> Result<ImageOutput, ApiError> {
    let compression = form.parsed("output_compression", "an integer")?;
    ImageOutput::parse(form.text("size"), form.text("output_format"), compression, native)
}

/// Edit an image (OpenAI's Images API, multipart): inside the `mask`'s fully transparent pixels
/// the image is redrawn from the prompt, the rest kept exactly. Without a mask the image is
/// described and redrawn from the description and the prompt (`revised_prompt`).
#[utoipa::path(
    post,
    path = "/v1/images/edits",
    tag = "images",
    security(("api_key" = [])),
    request_body(content = ImageEditForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The edited images", body = super::types::ImagesResponse,
            headers(("x-seed" = u64, description = "The seed used"),
                ("x-native-size" = String, description = "The size the model draws"))),
        (status = 400, description = "A missing or invalid field (named in `param`), a mask of another \
            size than the image or without transparency, `background: transparent`, an undecodable \
            image, or one over --max-image-pixels", body = ErrorResponse),
        (status = 415, description = "An image format we do not read", body = ErrorResponse),
        (status = 429, description = "Queue full, --max-concurrent-requests requests open, or \
            --image-memory-bytes full; see Retry-After", body = ErrorResponse),
        CommonErrors,
    )
)]
pub async fn edit(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let mut form = ImageForm::read(form, state.cfg.max_body_bytes, true, EDIT_FIELDS).await?;
    if form.text("background") == Some("transparent") {
        return Err(ApiError::unsupported("background", "Janus-Pro draws opaque images; use `opaque` or `auto`"));
    }
    let prompt = form.text("prompt").ok_or_else(|| ApiError::field("prompt", "required"))?.to_string();
    let url = images::wants_url(form.text("response_format"))?;
    let mut request = images::validate(form_ask(&form, prompt.clone())?, &state.cfg)?;
    let info = state.model_info()?;
    let output = form_output(&form, info.image_size)?;
    let base_url = url.then(|| images::base_url(&state.cfg, &headers));
    let image = form.images.swap_remove(0);
    let seed = request.seed;
    let Some(mask) = form.mask.take() else {
        // No mask: redraw from the image's description and the instruction.
        request.prompt = describe::caption_prompt(&state, image, Some(prompt)).await?;
        let revised_prompt = Some(request.prompt.clone());
        let out = state.engine.generate_images(super::prepare::images(&state, request).await?).await?;
        let answer = Answer { seed, output, base_url, revised_prompt };
        return images::respond_images(&state, out, answer).await;
    };
    let prompter = state.prompter()?;
    let grid = (info.num_image_tokens as f64).sqrt().round() as usize;
    let st = state.clone();
    let prepare = move || {
        let preparer = st.preparer(&prompter);
        let upload = |bytes, param: &str| PendingImage { source: ImageSource::Upload(bytes), param: param.into() };
        let (decoded, hold) = preparer.decode(upload(image, "image"))?;
        let original = decoded.into_rgb8();
        let (mask, mask_hold) = preparer.decode(upload(mask, "mask"))?;
        if !mask.color().has_alpha() {
            return Err(ApiError::field(
                "mask",
                "must have an alpha channel: its fully transparent pixels mark what to change",
            ));
        }
        let mask = mask.into_rgba8();
        if mask.dimensions() != original.dimensions() {
            let ((w, h), (mw, mh)) = (original.dimensions(), mask.dimensions());
            return Err(ApiError::field("mask", format!("must be the image's size, {w}x{h}; got {mw}x{mh}")));
        }
        drop(mask_hold);
        let marks = mask_marks(&mask);
        let edit =
            EditInput { pixels: encoder_pixels(&original, info.image_size)?, editable: editable_grid(&marks, grid) };
        let req = ImagesRequest { edit: Some(edit), ..ImagesRequest::new(&prompter, request)? };
        Ok((req, original, marks, hold))
    };
    let (req, original, marks, _hold) = state.admission.prepare(prepare).await??;
    let out = state.engine.generate_images(req).await?;
    let feather = (original.width().min(original.height()) / FEATHER_DIVISOR).max(1);
    let ImagesOutput { images, prompt_tokens, image_tokens } = out;
    let images = blocking(move || images.iter().map(|g| composite(&original, g, &marks, feather)).collect()).await?;
    let out = ImagesOutput { images, prompt_tokens, image_tokens };
    let answer = Answer { seed, output, base_url, revised_prompt: None };
    images::respond_images(&state, out, answer).await
}
