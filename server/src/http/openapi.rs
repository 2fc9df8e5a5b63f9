//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` annotations and the
//! types' `ToSchema` derives. `docs/openapi.json` is a committed copy, checked by a test.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::error::{ErrorBody, ErrorResponse};
use super::types::*;
use super::{chat, describe, files, images, probes};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "janus-rs",
        description = "OpenAI-compatible image generation and image understanding with DeepSeek's Janus-Pro. \
            When the server runs with --api-key, /v1/* routes (except /v1/files/{id}/content) need \
            `Authorization: Bearer <key>`.",
        license(name = "MIT OR Apache-2.0"),
    ),
    paths(
        images::generate,
        describe::describe,
        chat::completions,
        files::content,
        probes::models,
        probes::model,
        probes::health,
        probes::ready,
        probes::metrics,
        probes::openapi,
    ),
    components(schemas(
        ErrorResponse, ErrorBody,
        ImageGenerationRequest, ImagesResponse, ImageData, ImageUsage, InputTokensDetails,
        ImagePartialEvent, ImageCompletedEvent,
        DescribeForm, DescribeResponse,
        ChatCompletionRequest, StreamOptions, ChatRole, ChatMessage, MessageContent, ContentPart, ImageUrl,
        ChatCompletion, ChatChoice, AssistantMessage, ChatCompletionChunk, ChunkChoice, ChunkDelta, Usage,
        ModelList, ModelCard, HealthResponse, ReadyResponse,
    )),
    modifiers(&ApiKey),
    tags(
        (name = "images", description = "Text-to-image, and image description"),
        (name = "chat", description = "Chat with images (understanding)"),
        (name = "models", description = "The loaded model"),
        (name = "probes", description = "Health, readiness, metrics, this document"),
    )
)]
pub struct ApiDoc;

struct ApiKey;

impl Modify for ApiKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
