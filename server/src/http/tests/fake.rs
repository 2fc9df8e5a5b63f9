//! A fake engine: solid-colour images of `ModelInfo::image_size`, an echoing chat, and switches
//! to fail, to be full, to load, to panic or to hang (holding the sender, so tests can see
//! when the handler drops its receiver).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use image::{Rgb, RgbImage};
use janus::{FinishReason, Part, Role, TextParams};
use tokio::sync::mpsc;

use crate::engine::{ChatEvent, ChatRequest, Engine, EngineError, EngineStatus, ImageEvent, ImageRequest, ModelInfo};

pub const PROMPT_TOKENS: usize = 7;

#[derive(Debug, Clone)]
pub enum Mode {
    Normal,
    /// `submit_*` fails at once.
    Reject(EngineError),
    /// Accepted, then a `Failed` event (chat: after `Started`).
    FailLater(EngineError),
    /// `submit_*` panics.
    Panic,
    /// Accepted; events never come (chat: after `Started`); the sender is kept in `held_*`.
    Hang,
}

/// One message as seen by the engine: role, texts, image sizes.
pub type SeenMessage = (Role, Vec<String>, Vec<(u32, u32)>);

/// What a chat request looked like, for assertions.
#[derive(Debug, Clone)]
pub struct SeenChat {
    pub system: String,
    pub messages: Vec<SeenMessage>,
    pub params: TextParams,
}

pub struct Fake {
    pub status: Mutex<EngineStatus>,
    pub info: ModelInfo,
    pub mode: Mutex<Mode>,
    pub queue_depth: AtomicUsize,
    pub last_images: Mutex<Option<ImageRequest>>,
    pub last_chat: Mutex<Option<SeenChat>>,
    pub held_images: Mutex<Vec<mpsc::Sender<ImageEvent>>>,
    pub held_chat: Mutex<Vec<mpsc::Sender<ChatEvent>>>,
    pub shut_down: std::sync::atomic::AtomicBool,
}

impl Fake {
    pub fn new() -> Self {
        Self {
            status: Mutex::new(EngineStatus::Ready),
            info: ModelInfo {
                id: "fake/janus".into(),
                created: 1_700_000_000,
                image_size: 384,
                num_image_tokens: 576,
                max_prompt_tokens: 256,
                context_length: 4096,
                quant: janus::Quant::Q8_0,
                dtype: "f32".into(),
                device: "cpu".into(),
            },
            mode: Mutex::new(Mode::Normal),
            queue_depth: AtomicUsize::new(3),
            last_images: Mutex::new(None),
            last_chat: Mutex::new(None),
            held_images: Mutex::new(Vec::new()),
            held_chat: Mutex::new(Vec::new()),
            shut_down: Default::default(),
        }
    }

    pub fn set_mode(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }

    pub fn set_status(&self, s: EngineStatus) {
        *self.status.lock().unwrap() = s;
    }

    /// The colour of image `index` for `seed`.
    pub fn colour(seed: u64, index: usize) -> Rgb<u8> {
        Rgb([(seed % 251) as u8, (index * 40 % 256) as u8, 200])
    }
}

impl Engine for Fake {
    fn status(&self) -> EngineStatus {
        self.status.lock().unwrap().clone()
    }

    fn info(&self) -> Option<ModelInfo> {
        (self.status() == EngineStatus::Ready).then(|| self.info.clone())
    }

    fn queue_depth(&self) -> usize {
        self.queue_depth.load(Ordering::SeqCst)
    }

    fn submit_images(&self, req: ImageRequest) -> Result<mpsc::Receiver<ImageEvent>, EngineError> {
        let mode = self.mode.lock().unwrap().clone();
        *self.last_images.lock().unwrap() = Some(req.clone());
        let (tx, rx) = mpsc::channel(8);
        let side = self.info.image_size as u32;
        match mode {
            Mode::Reject(e) => return Err(e),
            Mode::Panic => panic!("the fake engine panics"),
            Mode::Hang => self.held_images.lock().unwrap().push(tx),
            Mode::FailLater(e) => {
                tokio::spawn(async move {
                    let _ = tx.send(ImageEvent::Failed(e)).await;
                });
            }
            Mode::Normal => {
                tokio::spawn(async move {
                    for index in 0..req.n {
                        for partial_index in 0..req.partial_images {
                            let image = RgbImage::from_pixel(side, side, Rgb([127, 127, 127]));
                            if tx.send(ImageEvent::Partial { index, partial_index, image }).await.is_err() {
                                return;
                            }
                        }
                        let image = RgbImage::from_pixel(side, side, Fake::colour(req.seed, index));
                        if tx.send(ImageEvent::Image { index, image }).await.is_err() {
                            return;
                        }
                    }
                    let _ = tx.send(ImageEvent::Done { prompt_tokens: PROMPT_TOKENS, image_tokens: 576 * req.n }).await;
                });
            }
        }
        Ok(rx)
    }

    fn submit_chat(&self, req: ChatRequest) -> Result<mpsc::Receiver<ChatEvent>, EngineError> {
        let mode = self.mode.lock().unwrap().clone();
        let messages: Vec<_> = req
            .conversation
            .messages
            .iter()
            .map(|m| {
                let texts = m
                    .parts
                    .iter()
                    .filter_map(|p| match p {
                        Part::Text(t) => Some(t.clone()),
                        Part::Image(_) => None,
                    })
                    .collect();
                let images = m
                    .parts
                    .iter()
                    .filter_map(|p| match p {
                        Part::Image(i) => Some((i.width(), i.height())),
                        Part::Text(_) => None,
                    })
                    .collect();
                (m.role, texts, images)
            })
            .collect();
        let n_images: usize = messages.iter().map(|m: &SeenMessage| m.2.len()).sum();
        let last_text = messages.last().map(|(_, t, _)| t.join(" ")).unwrap_or_default();
        *self.last_chat.lock().unwrap() =
            Some(SeenChat { system: req.conversation.system.clone(), messages, params: req.params.clone() });
        let (tx, rx) = mpsc::channel(8);
        let prompt_tokens = 10 + 576 * n_images;
        match mode {
            Mode::Reject(e) => return Err(e),
            Mode::Panic => panic!("the fake engine panics"),
            Mode::Hang => {
                tx.try_send(ChatEvent::Started { prompt_tokens }).unwrap();
                self.held_chat.lock().unwrap().push(tx);
            }
            Mode::FailLater(e) => {
                tokio::spawn(async move {
                    let _ = tx.send(ChatEvent::Started { prompt_tokens }).await;
                    let _ = tx.send(ChatEvent::Failed(e)).await;
                });
            }
            Mode::Normal => {
                let max = req.params.max_new_tokens.unwrap_or(512);
                tokio::spawn(async move {
                    let _ = tx.send(ChatEvent::Started { prompt_tokens }).await;
                    let reply = format!("{n_images} image(s). You said: {last_text}");
                    let words: Vec<String> = reply.split_inclusive(' ').map(str::to_string).collect();
                    let total = words.len();
                    let mut sent = 0;
                    for w in words.into_iter().take(max) {
                        if tx.send(ChatEvent::Delta(w)).await.is_err() {
                            return;
                        }
                        sent += 1;
                    }
                    let finish_reason = if sent < total { FinishReason::Length } else { FinishReason::Stop };
                    let _ = tx.send(ChatEvent::Done { completion_tokens: sent, cached_tokens: 0, finish_reason }).await;
                });
            }
        }
        Ok(rx)
    }

    fn shutdown(&self) {
        self.shut_down.store(true, Ordering::SeqCst);
    }

    /// Idle when no held request is still open (a `Hang` request is work in flight until its
    /// sender is dropped or its client goes away).
    fn is_idle(&self) -> bool {
        self.held_images.lock().unwrap().iter().all(|tx| tx.is_closed())
            && self.held_chat.lock().unwrap().iter().all(|tx| tx.is_closed())
    }
}
