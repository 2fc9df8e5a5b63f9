//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` annotations and the
//! types' `ToSchema` derives. `docs/openapi.json` is a committed copy, checked by a test.

use janus::limits::{DEFAULT_MAX_IMAGE_PIXELS, MAX_CHAT_IMAGES, MAX_MESSAGES, MAX_MESSAGE_CHARS, MAX_REQUEST_CHARS};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{Modify, OpenApi};

use super::error::{ErrorBody, ErrorResponse};
use super::responses_types::*;
use super::types::*;
use super::{chat, describe, edits, files, images, probes, responses, variations};

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
        edits::edit,
        variations::create,
        chat::completions,
        responses::create,
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
        DescribeForm, DescribeResponse, ImageEditForm, ImageVariationForm,
        ChatCompletionRequest, StreamOptions, ChatRole, ChatMessage, MessageContent, ContentPart, ImageUrl,
        ChatCompletion, ChatChoice, AssistantMessage, ChatCompletionChunk, ChunkChoice, ChunkDelta, Usage,
        ResponsesRequest, ResponseTextParam, ResponseInput, InputMessage, InputContent, InputPart,
        ResponseObject, IncompleteDetails, ResponseError, ResponseTextConfig, OutputMessage, OutputText,
        ResponseUsage, ResponseInputTokensDetails, OutputTokensDetails, ResponseEvent,
        ModelList, ModelCard, HealthResponse, ReadyResponse,
    )),
    modifiers(&ApiKey, &Limits),
    tags(
        (name = "images", description = "Text-to-image, and image description"),
        (name = "chat", description = "Chat with images (understanding)"),
        (name = "responses", description = "OpenAI's Responses API: text answers to text and images"),
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

/// The request limits' defaults (`janus::limits`; each set by the `serve` flag named), written
/// into the schemas they bound.
struct Limits;

impl Modify for Limits {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(components) = openapi.components.as_mut() else { return };
        let limits = format!(
            " At most {MAX_MESSAGES} messages (--max-messages), {MAX_MESSAGE_CHARS} characters of text in one \
             (--max-message-chars), {MAX_REQUEST_CHARS} in all (--max-request-chars), and {MAX_CHAT_IMAGES} images \
             (--max-images-per-request) of at most {DEFAULT_MAX_IMAGE_PIXELS} pixels each, read from their \
             headers (--max-image-pixels): each a 400 naming the field and the limit."
        );
        if let Some(Schema::Array(a)) = property(components, "ChatCompletionRequest", "messages") {
            a.max_items = Some(MAX_MESSAGES);
            a.description.get_or_insert_with(String::new).push_str(&limits);
        }
        if let Some(Schema::Object(o)) = property(components, "DescribeForm", "question") {
            o.max_length = Some(MAX_MESSAGE_CHARS);
        }
    }
}

/// A property's schema, where it is written inline.
fn property<'a>(components: &'a mut utoipa::openapi::Components, schema: &str, name: &str) -> Option<&'a mut Schema> {
    match components.schemas.get_mut(schema)? {
        RefOr::T(Schema::Object(o)) => match o.properties.get_mut(name)? {
            RefOr::T(s) => Some(s),
            RefOr::Ref(_) => None,
        },
        _ => None,
    }
}
