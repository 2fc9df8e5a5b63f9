//! The real engine's handle: a bounded queue in front of one OS thread that owns the model.
//! `submit_*` never blocks: a full queue answers at once ([`EngineError::QueueFull`]); the
//! thread loads the model in the background, then runs the [`Scheduler`](super::scheduler).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use janus::limits::MAX_TEXT_ANSWERS;
use janus::{Field, Invalid, Janus, Prompter};
use tokio::sync::mpsc;

use super::scheduler::{Scheduler, Work};
use super::shared::{EngineOptions, Shared};
use super::{ChatEvent, ChatRequest, Engine, EngineError, EngineStatus, ImageEvent, ImagesRequest, ModelInfo};

pub struct ModelEngine {
    tx: Sender<Work>,
    pub(super) shared: Arc<Shared>,
    max_batch_images: usize,
    queue_capacity: usize,
}

impl ModelEngine {
    /// Starts the engine thread, which loads the model in the background (status `Loading`).
    pub fn start(opts: EngineOptions) -> Arc<Self> {
        let (tx, rx) = channel();
        let queue_capacity = opts.queue_capacity.max(1);
        let shared = Arc::new(Shared {
            status: Mutex::new(EngineStatus::Loading),
            info: Mutex::new(None),
            prompter: Mutex::new(None),
            queued: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            accepting: AtomicBool::new(true),
            largest_batch: AtomicUsize::new(0),
            #[cfg(test)]
            fail_steps: AtomicUsize::new(0),
            #[cfg(test)]
            fail_shared_steps: AtomicUsize::new(0),
            #[cfg(test)]
            largest_decode_turn: AtomicUsize::new(0),
            #[cfg(test)]
            shared_steps: AtomicUsize::new(0),
        });
        let max_batch_images = opts.max_batch_images.max(1);
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("janus-engine".into())
            .spawn(move || engine_thread(opts, thread_shared, rx))
            .expect("spawn the engine thread");
        Arc::new(Self { tx, shared, max_batch_images, queue_capacity })
    }

    /// Blocks until the model is loaded (for the command-line benches); the reason if it failed.
    pub fn wait_loaded(&self) -> Result<(), EngineError> {
        loop {
            match self.status() {
                EngineStatus::Loading => std::thread::sleep(Duration::from_millis(20)),
                EngineStatus::Ready => return Ok(()),
                EngineStatus::Failed(m) => return Err(EngineError::LoadFailed(m)),
            }
        }
    }

    /// The most images a single CFG batch has held so far.
    pub fn largest_batch(&self) -> usize {
        self.shared.largest_batch.load(Ordering::SeqCst)
    }

    fn submit(&self, work: Work) -> Result<(), EngineError> {
        if !self.shared.accepting.load(Ordering::SeqCst) {
            return Err(EngineError::ShuttingDown);
        }
        match self.status() {
            EngineStatus::Ready => {}
            EngineStatus::Loading => return Err(EngineError::Loading),
            EngineStatus::Failed(m) => return Err(EngineError::LoadFailed(m)),
        }
        let cap = self.queue_capacity;
        if let Err(queued) =
            self.shared.queued.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |q| (q < cap).then_some(q + 1))
        {
            return Err(EngineError::QueueFull { queued, retry_after_s: 1 + queued as u64 / 4 });
        }
        self.tx.send(work).map_err(|_| {
            self.shared.queued.fetch_sub(1, Ordering::SeqCst);
            EngineError::Internal("the engine thread has stopped".into())
        })
    }
}

impl Engine for ModelEngine {
    fn status(&self) -> EngineStatus {
        self.shared.status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn info(&self) -> Option<ModelInfo> {
        self.shared.info.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn prompter(&self) -> Option<Prompter> {
        self.shared.prompter.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn queue_depth(&self) -> usize {
        self.shared.queued.load(Ordering::SeqCst)
    }

    fn submit_images(&self, req: ImagesRequest) -> Result<mpsc::Receiver<ImageEvent>, EngineError> {
        let n = req.request.n;
        if n == 0 || n > self.max_batch_images {
            let max = self.max_batch_images;
            let why = format!("must be between 1 and {max} (the largest batch this server runs); got {n}");
            return Err(Invalid::new(Field::N, why).into());
        }
        // Room for every event the request can produce, so the engine never waits on a client.
        let (tx, rx) = mpsc::channel(n * (req.request.partial_images + 1) + 2);
        self.submit(Work::Images { req, tx, at: std::time::Instant::now() })?;
        Ok(rx)
    }

    fn submit_chat(&self, req: ChatRequest) -> Result<mpsc::Receiver<ChatEvent>, EngineError> {
        if req.n == 0 || req.n > MAX_TEXT_ANSWERS {
            let why = format!("must be between 1 and {MAX_TEXT_ANSWERS}; got {}", req.n);
            return Err(Invalid::new(Field::N, why).into());
        }
        // Room for every event the answer can produce, so the engine never waits on a client.
        // Per answer: one event per token, one for its end's text, `Done`; `Started` once.
        let (tx, rx) = mpsc::channel(req.n * (req.text.max_new + 2) + 1);
        self.submit(Work::Chat { req: Box::new(req), tx, at: std::time::Instant::now() })?;
        Ok(rx)
    }

    fn shutdown(&self) {
        self.shared.accepting.store(false, Ordering::SeqCst);
    }

    fn is_idle(&self) -> bool {
        self.shared.queued.load(Ordering::SeqCst) == 0 && self.shared.active.load(Ordering::SeqCst) == 0
    }
}

fn engine_thread(opts: EngineOptions, shared: Arc<Shared>, rx: Receiver<Work>) {
    let loaded =
        catch_unwind(AssertUnwindSafe(|| Janus::open(&opts.model, &opts.device, opts.dtype.as_deref(), opts.quant)));
    let model = match loaded {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => return refuse_all(&shared, rx, e.to_string()),
        Err(_) => return refuse_all(&shared, rx, "the loader panicked".into()),
    };
    let info = ModelInfo {
        id: opts.model.clone(),
        created: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        image_size: model.image_size(),
        num_image_tokens: model.num_image_tokens(),
        max_prompt_tokens: model.max_prompt_tokens(),
        context_length: model.cfg.llm.max_position_embeddings,
        quant: model.quant(),
        dtype: janus::device::dtype_name(model.dtype()).to_string(),
        device: janus::device::device_name(model.device()),
    };
    model.prefix_cache().set_capacity(opts.prefix_cache_positions);
    *shared.info.lock().unwrap_or_else(|p| p.into_inner()) = Some(info);
    *shared.prompter.lock().unwrap_or_else(|p| p.into_inner()) = Some(model.prompter().clone());
    // The structured-output compiler, built beside the engine so that no request waits for it.
    let prompter = model.prompter().clone();
    std::thread::spawn(move || {
        if let Err(e) = prompter.grammars() {
            tracing::warn!(error = %e, "structured outputs are unavailable");
        }
    });
    shared.set_status(EngineStatus::Ready);
    tracing::info!(model = %opts.model, quant = %model.quant(), device = %janus::device::device_name(model.device()), "engine ready");
    let max_text = super::budget::max_text_sessions(&model, opts.max_text_sessions, opts.max_batch_images);
    Scheduler::new(&model, &opts, &shared, max_text).run(rx);
}

/// After a failed load: answer every request with the reason, forever.
fn refuse_all(shared: &Shared, rx: Receiver<Work>, reason: String) {
    // `janus serve` reports the reason and exits; embedders see it in `status()`.
    tracing::debug!(%reason, "model failed to load");
    shared.set_status(EngineStatus::Failed(reason.clone()));
    for work in rx {
        shared.queued.fetch_sub(1, Ordering::SeqCst);
        work.fail(EngineError::LoadFailed(reason.clone()));
    }
}
