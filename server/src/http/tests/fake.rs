//! A fake engine: solid-colour images of `ModelInfo::image_size`, an echoing chat, and switches
//! to fail, to be full, to load, to panic or to hang (holding the sender, so tests can see
//! when the handler drops its receiver). Requests reach it prepared by the real admission
//! stage with the tiny model's tokenizer and preprocessing (its context widened to the fake's
//! 4096 positions), so the template, the tokens and the image checks are the real ones.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use image::{Rgb, RgbImage};
use janus::input::preprocess::PreprocessConfig;
use janus::input::tokenizer::{JanusTokenizer, BEGIN_OF_IMAGE, END_OF_IMAGE, IMAGE_PLACEHOLDER};
use janus::{FinishReason, JanusConfig, Prompter, TextParams};
use tokio::sync::mpsc;

use crate::engine::{ChatEvent, ChatRequest, Engine, EngineError, EngineStatus, ImageEvent, ImagesRequest, ModelInfo};

/// The fake model's context.
pub const CONTEXT: usize = 4096;

/// The tiny model's prompter with the fake's context.
pub fn prompter() -> Prompter {
    static PROMPTER: OnceLock<Prompter> = OnceLock::new();
    PROMPTER
        .get_or_init(|| {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/tiny/janus-pro-tiny");
            let mut cfg = JanusConfig::from_file(&dir.join("config.json")).unwrap();
            cfg.llm.max_position_embeddings = CONTEXT;
            let tokenizer = Arc::new(JanusTokenizer::from_file(&dir.join("tokenizer.json")).unwrap());
            let preprocess = PreprocessConfig::load(Some(&dir.join("preprocessor_config.json")), cfg.vision.image_size);
            Prompter::new(tokenizer, &cfg, preprocess.unwrap())
        })
        .clone()
}

/// A prompt as text: special tokens shown, each image's run of placeholders as `<image>`.
pub fn prompt_text(ids: &[u32]) -> String {
    let p = prompter();
    let text = p.tokenizer().inner().decode(ids, false).unwrap();
    let image = format!("{BEGIN_OF_IMAGE}{}{END_OF_IMAGE}", IMAGE_PLACEHOLDER.repeat(p.positions_per_image() - 2));
    text.replace(&image, "<image>")
}

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

/// What a chat request looked like, for assertions.
#[derive(Debug, Clone)]
pub struct SeenChat {
    /// The prompt ([`prompt_text`]).
    pub prompt: String,
    pub prompt_tokens: usize,
    /// The images' pixels, `[3, S, S]` each.
    pub images: Vec<Vec<usize>>,
    pub params: TextParams,
    pub max_new: usize,
    /// Bytes of image memory the request held when it reached the engine.
    pub held: u64,
}

impl SeenChat {
    /// The last user message's text (what the fake echoes).
    pub fn last_user_text(&self) -> &str {
        let tail = self.prompt.rsplit("<|User|>:").next().unwrap_or("");
        tail.trim_end_matches("<|Assistant|>:").trim().trim_start_matches("<image>").trim()
    }
}

pub struct Fake {
    pub status: Mutex<EngineStatus>,
    pub info: ModelInfo,
    pub mode: Mutex<Mode>,
    pub queue_depth: AtomicUsize,
    pub last_images: Mutex<Option<ImagesRequest>>,
    pub last_chat: Mutex<Option<SeenChat>>,
    pub held_images: Mutex<Vec<mpsc::Sender<ImageEvent>>>,
    pub held_chat: Mutex<Vec<mpsc::Sender<ChatEvent>>>,
    /// Chat requests kept in `Hang` mode (their prepared images still hold the image memory, as
    /// waiting in the real engine's queue).
    pub held_requests: Mutex<Vec<ChatRequest>>,
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
                context_length: CONTEXT,
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
            held_requests: Mutex::new(Vec::new()),
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

    fn prompter(&self) -> Option<Prompter> {
        (self.status() == EngineStatus::Ready).then(prompter)
    }

    fn queue_depth(&self) -> usize {
        self.queue_depth.load(Ordering::SeqCst)
    }

    fn submit_images(&self, req: ImagesRequest) -> Result<mpsc::Receiver<ImageEvent>, EngineError> {
        let mode = self.mode.lock().unwrap().clone();
        *self.last_images.lock().unwrap() = Some(req.clone());
        let prompt_tokens = req.prompt_ids.len();
        let req = req.request;
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
                    let _ = tx.send(ImageEvent::Done { prompt_tokens, image_tokens: 576 * req.n }).await;
                });
            }
        }
        Ok(rx)
    }

    fn submit_chat(&self, req: ChatRequest) -> Result<mpsc::Receiver<ChatEvent>, EngineError> {
        let mode = self.mode.lock().unwrap().clone();
        let prompt = &req.text.prompt;
        let seen = SeenChat {
            prompt: prompt_text(&prompt.ids),
            prompt_tokens: prompt.ids.len(),
            images: prompt.pixels.iter().map(|p| p.dims().to_vec()).collect(),
            params: req.text.params.clone(),
            max_new: req.text.max_new,
            held: req.hold.bytes(),
        };
        let n_images = seen.images.len();
        let last_text = seen.last_user_text().to_string();
        let prompt_tokens = seen.prompt_tokens;
        *self.last_chat.lock().unwrap() = Some(seen);
        let (tx, rx) = mpsc::channel(8);
        match mode {
            Mode::Reject(e) => return Err(e),
            Mode::Panic => panic!("the fake engine panics"),
            Mode::Hang => {
                tx.try_send(ChatEvent::Started { prompt_tokens }).unwrap();
                self.held_chat.lock().unwrap().push(tx);
                self.held_requests.lock().unwrap().push(req);
                return Ok(rx);
            }
            Mode::FailLater(e) => {
                tokio::spawn(async move {
                    let _ = tx.send(ChatEvent::Started { prompt_tokens }).await;
                    let _ = tx.send(ChatEvent::Failed(e)).await;
                });
            }
            Mode::Normal => {
                let (max, n) = (req.text.max_new, req.n);
                tokio::spawn(async move {
                    let _ = tx.send(ChatEvent::Started { prompt_tokens }).await;
                    for index in 0..n {
                        let reply = format!("{n_images} image(s). You said: {last_text}");
                        let words: Vec<String> = reply.split_inclusive(' ').map(str::to_string).collect();
                        let total = words.len();
                        let mut sent = 0;
                        for w in words.into_iter().take(max) {
                            let delta = ChatEvent::Delta { index, text: w, logprobs: Vec::new() };
                            if tx.send(delta).await.is_err() {
                                return;
                            }
                            sent += 1;
                        }
                        let finish_reason = if sent < total { FinishReason::Length } else { FinishReason::Stop };
                        let done = ChatEvent::Done { index, completion_tokens: sent, cached_tokens: 0, finish_reason };
                        let _ = tx.send(done).await;
                    }
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
