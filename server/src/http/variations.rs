//! `POST /v1/images/variations` (OpenAI's multipart shape): the unified model describes the image
//! with its understanding path (greedy, `janus::limits::DEFAULT_QUESTION`), then draws `n` images
//! from that description, returned as each image's `revised_prompt`.

use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::edits::{form_ask, form_output};
use super::error::{CommonErrors, ErrorResponse};
use super::image_form::ImageForm;
use super::images::{self, Answer};
use super::types::ImageVariationForm;
use super::{describe, prepare, ApiError, AppState};

/// The text fields a variation form may have (besides `image`).
const VARIATION_FIELDS: &[&str] = &[
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
];

/// Variations of an image (OpenAI's Images API, multipart): `n` images drawn from the model's
/// own description of it (`revised_prompt`).
#[utoipa::path(
    post,
    path = "/v1/images/variations",
    tag = "images",
    security(("api_key" = [])),
    request_body(content = ImageVariationForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The variations", body = super::types::ImagesResponse,
            headers(("x-seed" = u64, description = "The seed used"),
                ("x-native-size" = String, description = "The size the model draws"))),
        (status = 400, description = "A missing or invalid field (named in `param`), an undecodable \
            image, or one over --max-image-pixels", body = ErrorResponse),
        (status = 415, description = "An image format we do not read", body = ErrorResponse),
        (status = 429, description = "Queue full, --max-concurrent-requests requests open, or \
            --image-memory-bytes full; see Retry-After", body = ErrorResponse),
        CommonErrors,
    )
)]
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let mut form = ImageForm::read(form, state.cfg.max_body_bytes, false, VARIATION_FIELDS).await?;
    let url = images::wants_url(form.text("response_format"))?;
    // Checked before the description is made, with a stand-in prompt.
    let mut request = images::validate(form_ask(&form, "an image".into())?, &state.cfg)?;
    let output = form_output(&form, state.model_info()?.image_size)?;
    let description = describe::caption_prompt(&state, form.images.swap_remove(0), None).await?;
    request.prompt = description.clone();
    let seed = request.seed;
    let out = state.engine.generate_images(prepare::images(&state, request).await?).await?;
    let base_url = url.then(|| images::base_url(&state.cfg, &headers));
    let answer = Answer { seed, output, base_url, revised_prompt: Some(description) };
    images::respond_images(&state, out, answer).await
}
