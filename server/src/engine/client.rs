//! [`EngineClient`]: the facade handlers call. It submits to the [`Engine`] and reads the
//! request's event channel, so no handler sees a channel. What it returns owns the channel:
//! dropping the future (a plain response whose client went away) or the stream (a streamed one)
//! cancels the request in the engine.

use std::sync::Arc;

use futures_util::{stream, Stream};
use image::RgbImage;
use janus::sampling::logprobs::TokenLogprobs;
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

/// A finished text request: its answers, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatOutput {
    pub answers: Vec<AnswerOutput>,
    pub prompt_tokens: usize,
    /// Prompt tokens the first answer read from the prefix cache (the prompt is counted once).
    pub cached_tokens: usize,
}

/// One finished answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AnswerOutput {
    pub text: String,
    pub completion_tokens: usize,
    pub finish_reason: Option<FinishReason>,
    /// One per token, when asked for.
    pub logprobs: Vec<TokenLogprobs>,
}

impl ChatOutput {
    pub fn completion_tokens(&self) -> usize {
        self.answers.iter().map(|a| a.completion_tokens).sum()
    }
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

    /// Every answer of a text request, whole.
    pub async fn chat(&self, req: ChatRequest) -> Result<ChatOutput, EngineError> {
        let n = req.n;
        let (prompt_tokens, mut rx) = self.start_chat(req).await?;
        let mut answers = vec![AnswerOutput::default(); n];
        let mut cached_tokens = 0;
        loop {
            match rx.recv().await.ok_or_else(dropped)? {
                ChatEvent::Started { .. } => {}
                ChatEvent::Delta { index, text, logprobs } => {
                    let a = answers.get_mut(index).ok_or_else(|| unknown_answer(index, n))?;
                    a.text.push_str(&text);
                    a.logprobs.extend(logprobs);
                }
                ChatEvent::Done { index, completion_tokens, cached_tokens: cached, finish_reason } => {
                    let a = answers.get_mut(index).ok_or_else(|| unknown_answer(index, n))?;
                    a.completion_tokens = completion_tokens;
                    a.finish_reason = Some(finish_reason);
                    if index == 0 {
                        cached_tokens = cached;
                    }
                    if answers.iter().all(|a| a.finish_reason.is_some()) {
                        return Ok(ChatOutput { answers, prompt_tokens, cached_tokens });
                    }
                }
                ChatEvent::Failed(e) => return Err(e),
            }
        }
    }

    /// Waits until the prompt is accepted (so that a bad one is an error, not a stream) and
    /// returns its token count and the answers' events: deltas and a `Done` for each, the last
    /// `Done` (or a `Failed`) the last item.
    pub async fn chat_stream(&self, req: ChatRequest) -> Result<(usize, impl Stream<Item = ChatEvent>), EngineError> {
        let mut left = req.n;
        let (prompt_tokens, rx) = self.start_chat(req).await?;
        let is_last = move |e: &ChatEvent| match e {
            ChatEvent::Done { .. } => {
                left = left.saturating_sub(1);
                left == 0
            }
            ChatEvent::Failed(_) => true,
            _ => false,
        };
        Ok((prompt_tokens, until_last(rx, is_last, || ChatEvent::Failed(dropped()))))
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

fn unknown_answer(index: usize, n: usize) -> EngineError {
    EngineError::Internal(format!("the engine sent answer {index} of {n}"))
}

/// The channel's events up to and including the first `is_last` one; if the channel closes
/// before, `closed()` is the last item.
fn until_last<T>(
    rx: mpsc::Receiver<T>,
    is_last: impl FnMut(&T) -> bool + Send + 'static,
    closed: fn() -> T,
) -> impl Stream<Item = T> {
    stream::unfold(Some((rx, is_last)), move |state| async move {
        let (mut rx, mut is_last) = state?;
        match rx.recv().await {
            Some(ev) if is_last(&ev) => Some((ev, None)),
            Some(ev) => Some((ev, Some((rx, is_last)))),
            None => Some((closed(), None)),
        }
    })
}
