//! Requests made ready for the engine, on the admission stage's workers
//! ([`crate::admission::Admission::prepare`]): chat prompts templated and tokenized in one pass
//! and refused when too long before any image is read; then each image's bytes read, its size
//! checked from its header, decoded within the image memory budget and preprocessed to the
//! model's input; image prompts tokenized. The engine receives ids and pixels. Remote images
//! (`--allow-remote-images`) are fetched between the two, off the workers, so that a slow server
//! holds no worker.

use janus::input::preprocess::ImageProbe;
use janus::text::constraint::Constraint;
use janus::{Conversation, ImageRequest, PreparedImage, PromptTokens, Prompter, TextParams, TextRequest};

use super::config::RequestLimits;
use super::image_input::ImageSource;
use super::{blocking, ApiError, AppState};
use crate::admission::{ImageMemory, Reservation};
use crate::engine::{ChatRequest, ImagesRequest};

/// An image of a request, not read yet: where it comes from, and its JSON path for errors.
#[derive(Debug, Clone)]
pub struct PendingImage {
    pub source: ImageSource,
    pub param: String,
}

/// What preparing a request needs besides the request.
pub struct Preparer<'a> {
    pub prompter: &'a Prompter,
    pub memory: &'a ImageMemory,
    pub limits: &'a RequestLimits,
    /// Most bytes fetched for a remote image.
    pub max_fetch_bytes: usize,
}

impl Preparer<'_> {
    /// A text answer ready for the engine: the conversation tokenized (and refused if the answer
    /// would not fit) before any of its images is read, then its images prepared one at a time
    /// (blocking).
    pub fn chat(&self, conv: Conversation<PendingImage>, params: TextParams) -> Result<ChatRequest, ApiError> {
        let tokenized = Tokenized::new(self.prompter, &conv, params)?;
        self.with_images(conv, tokenized)
    }

    /// The rest of [`Preparer::chat`] once the conversation is tokenized: its images prepared one
    /// at a time.
    pub fn with_images(&self, conv: Conversation<PendingImage>, t: Tokenized) -> Result<ChatRequest, ApiError> {
        let Tokenized { tokens, max_new, params, constraint } = t;
        let mut hold = Reservation::none();
        let mut images = Vec::with_capacity(tokens.image_starts.len());
        for pending in conv.into_images() {
            let (image, held) = self.image(pending)?;
            hold.merge(held);
            images.push(image);
        }
        let prompt = tokens.with_images(images)?;
        Ok(ChatRequest { text: TextRequest { prompt, params, max_new, constraint }, hold, n: 1 })
    }

    /// One image: its bytes, its size checked from its header, the memory its decoding takes
    /// reserved (a 429 when the budget is full), decoded, preprocessed; what is returned holds
    /// only the memory of the prepared pixels.
    pub fn image(&self, pending: PendingImage) -> Result<(PreparedImage, Reservation), ApiError> {
        let (decoded, mut held) = self.decode(pending)?;
        let image = self.prompter.image(&decoded)?;
        drop(decoded);
        held.shrink_to(self.prompter.prepared_image_bytes());
        Ok((image, held))
    }

    /// An image decoded: its bytes, its size checked from its header, the memory its decoding and
    /// preparing take reserved (a 429 when the budget is full); the reservation goes with it.
    pub fn decode(&self, pending: PendingImage) -> Result<(image::DynamicImage, Reservation), ApiError> {
        let PendingImage { source, param } = pending;
        let bytes = source.bytes(&param, self.max_fetch_bytes)?;
        let probe = ImageProbe::read(&bytes).map_err(|e| ApiError::image(&param, e))?;
        probe.check_size(self.limits.max_image_pixels).map_err(|e| ApiError::image(&param, e))?;
        let held = (self.memory.try_reserve(self.prompter.image_peak_bytes(&probe)))
            .map_err(|e| ApiError::admission(&param, e))?;
        let decoded = probe.decode(&bytes).map_err(|e| ApiError::image(&param, e))?;
        Ok((decoded, held))
    }
}

/// A conversation tokenized, with the room its answer has and its constraint compiled.
pub struct Tokenized {
    pub tokens: PromptTokens,
    pub max_new: usize,
    pub params: TextParams,
    pub constraint: Option<Constraint>,
}

impl Tokenized {
    /// Tokenizes `conv`, checks that the answer fits and compiles its constraint (no image is
    /// read).
    pub fn new(prompter: &Prompter, conv: &Conversation<PendingImage>, params: TextParams) -> Result<Self, ApiError> {
        let (tokens, max_new) = prompter.text_tokens(conv, &params)?;
        let constraint = prompter.constraint(&params)?;
        Ok(Self { tokens, max_new, params, constraint })
    }
}

/// [`Preparer::chat`] on the preparation workers: the tokens on one, remote images fetched off
/// them (on the runtime's blocking threads), then the images on one.
pub async fn chat(
    state: &AppState,
    conv: Conversation<PendingImage>,
    params: TextParams,
) -> Result<ChatRequest, ApiError> {
    let prompter = state.prompter()?;
    let p = prompter.clone();
    let tokenize = move || Tokenized::new(&p, &conv, params).map(|t| (conv, t));
    let (conv, tokenized) = state.admission.prepare(tokenize).await??;
    let conv = fetch_remote(conv, state.cfg.max_body_bytes).await?;
    if tokenized.tokens.image_starts.is_empty() {
        return state.preparer(&prompter).with_images(conv, tokenized);
    }
    let st = state.clone();
    let work = move || st.preparer(&prompter).with_images(conv, tokenized);
    state.admission.prepare(work).await?
}

/// The conversation with its remote images fetched (each at most `max_bytes`), as uploads.
async fn fetch_remote(
    conv: Conversation<PendingImage>,
    max_bytes: usize,
) -> Result<Conversation<PendingImage>, ApiError> {
    let remote: Vec<(usize, String, String)> = (conv.images().enumerate())
        .filter_map(|(i, p)| match &p.source {
            ImageSource::Remote(url) => Some((i, url.clone(), p.param.clone())),
            _ => None,
        })
        .collect();
    let mut fetched = std::collections::HashMap::new();
    for (i, url, param) in remote {
        let bytes = blocking(move || ImageSource::Remote(url).bytes(&param, max_bytes)).await??;
        fetched.insert(i, ImageSource::Upload(bytes));
    }
    let mut i = 0;
    conv.try_map_images(|mut image| {
        if let Some(source) = fetched.remove(&i) {
            image.source = source;
        }
        i += 1;
        Ok(image)
    })
}

/// An image request ready for the engine: its prompt tokenized and checked, on a preparation
/// worker.
pub async fn images(state: &AppState, request: ImageRequest) -> Result<ImagesRequest, ApiError> {
    let prompter = state.prompter()?;
    let work = move || ImagesRequest::new(&prompter, request).map_err(ApiError::from);
    state.admission.prepare(work).await?
}
