//! [`EngineClient`]: the facade handlers call. It submits to the [`Engine`] and reads the
//! request's event channel, so no handler sees a channel. What it returns owns the channel:
//! dropping the future (a plain response whose client went away) or the stream (a streamed one)
//! cancels the request in the engine.

use std::sync::Arc;

use futures_util::{stream, Stream};
use image::RgbImage;
use janus::FinishReason;
use tokio::sync::mpsc;

use super::{ChatEvent, ChatRequest, Engine, EngineError, EngineStatus, ImageEvent, ImagesRequest, ModelInfo};

#[derive(Clone)]
pub struct EngineClient {
    engine: Arc<dyn Engine>,
}

/// A finished image request.
#[derive(Debug)]
pub struct ImagesOutput {
    /// In request order.
    pub images: Vec<RgbImage>,
    pub prompt_tokens: usize,
    pub image_tokens: usize,
}

/// A finished text answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatOutput {
    pub text: String,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens read from the prefix cache.
    pub cached_tokens: usize,
    pub finish_reason: FinishReason,
}

fn dropped() -> EngineError {
    EngineError::Internal("the engine dropped the request".into())
}

impl EngineClient {
    pub fn new(engine: Arc<dyn Engine>) -> Self {
        Self { engine }
    }

    pub fn status(&self) -> EngineStatus {
        self.engine.status()
    }

    pub fn info(&self) -> Option<ModelInfo> {
        self.engine.info()
    }

    pub fn prompter(&self) -> Option<janus::Prompter> {
        self.engine.prompter()
    }

    pub fn queue_depth(&self) -> usize {
        self.engine.queue_depth()
    }

    pub fn shutdown(&self) {
        self.engine.shutdown()
    }

    pub fn is_idle(&self) -> bool {
        self.engine.is_idle()
    }

    /// All of a request's images (previews are not asked for).
    pub async fn generate_images(&self, mut req: ImagesRequest) -> Result<ImagesOutput, EngineError> {
        let n = req.request.n;
        req.request.partial_images = 0;
        let mut rx = self.engine.submit_images(req)?;
        let mut images: Vec<Option<RgbImage>> = (0..n).map(|_| None).collect();
        let (prompt_tokens, image_tokens) = loop {
            match rx.recv().await.ok_or_else(dropped)? {
                ImageEvent::Partial { .. } => {}
                ImageEvent::Image { index, image } => match images.get_mut(index) {
                    Some(slot) => *slot = Some(image),
                    None => return Err(EngineError::Internal(format!("the engine sent image {index} of {n}"))),
                },
                ImageEvent::Done { prompt_tokens, image_tokens } => break (prompt_tokens, image_tokens),
                ImageEvent::Failed(e) => return Err(e),
            }
        };
        let images = (images.into_iter().enumerate())
            .map(|(i, img)| img.ok_or_else(|| EngineError::Internal(format!("the engine finished without image {i}"))))
            .collect::<Result<_, _>>()?;
        Ok(ImagesOutput { images, prompt_tokens, image_tokens })
    }

    /// A request's events as they come: previews, images, then `Done` or `Failed` (the last
    /// item); a channel the engine drops early ends with `Failed`.
    pub fn generate_images_stream(&self, req: ImagesRequest) -> Result<impl Stream<Item = ImageEvent>, EngineError> {
        let rx = self.engine.submit_images(req)?;
        Ok(until_last(
            rx,
            |e| matches!(e, ImageEvent::Done { .. } | ImageEvent::Failed(_)),
            || ImageEvent::Failed(dropped()),
        ))
    }

    /// A whole text answer.
    pub async fn chat(&self, req: ChatRequest) -> Result<ChatOutput, EngineError> {
        let (prompt_tokens, mut rx) = self.start_chat(req).await?;
        let mut text = String::new();
        loop {
            match rx.recv().await.ok_or_else(dropped)? {
                ChatEvent::Started { .. } => {}
                ChatEvent::Delta(d) => text.push_str(&d),
                ChatEvent::Done { completion_tokens, cached_tokens, finish_reason } => {
                    return Ok(ChatOutput { text, prompt_tokens, completion_tokens, cached_tokens, finish_reason })
                }
                ChatEvent::Failed(e) => return Err(e),
            }
        }
    }

    /// Waits until the prompt is accepted (so that a bad one is an error, not a stream) and
    /// returns its token count and the answer's events: deltas, then `Done` or `Failed` (the last
    /// item).
    pub async fn chat_stream(&self, req: ChatRequest) -> Result<(usize, impl Stream<Item = ChatEvent>), EngineError> {
        let (prompt_tokens, rx) = self.start_chat(req).await?;
        let events = until_last(
            rx,
            |e| matches!(e, ChatEvent::Done { .. } | ChatEvent::Failed(_)),
            || ChatEvent::Failed(dropped()),
        );
        Ok((prompt_tokens, events))
    }

    async fn start_chat(&self, req: ChatRequest) -> Result<(usize, mpsc::Receiver<ChatEvent>), EngineError> {
        let mut rx = self.engine.submit_chat(req)?;
        match rx.recv().await.ok_or_else(dropped)? {
            ChatEvent::Started { prompt_tokens } => Ok((prompt_tokens, rx)),
            ChatEvent::Failed(e) => Err(e),
            other => Err(EngineError::Internal(format!("the engine sent {other:?} before Started"))),
        }
    }
}

/// The channel's events up to and including the first `is_last` one; if the channel closes
/// before, `closed()` is the last item.
fn until_last<T>(rx: mpsc::Receiver<T>, is_last: fn(&T) -> bool, closed: fn() -> T) -> impl Stream<Item = T> {
    stream::unfold(Some(rx), move |rx| async move {
        let mut rx = rx?;
        match rx.recv().await {
            Some(ev) if is_last(&ev) => Some((ev, None)),
            Some(ev) => Some((ev, Some(rx))),
            None => Some((closed(), None)),
        }
    })
}
