//! The real engine: one OS thread owns the model and runs a step loop over all active work.
//!
//! Scheduling (after TGI's router/queue split, simplified to what Janus needs):
//! - Requests wait in a bounded queue; a full queue answers 429 at once.
//! - Image requests are grouped into *cohorts*: one CFG batch ([`T2iBatch`]) of up to
//!   `max_batch_images` images, pairs of rows kept together. When the engine is idle it waits up
//!   to `batch_wait` after the first image request so that requests arriving together share a
//!   batch. Requests arriving while a cohort runs form the next cohort, and running cohorts and
//!   text answers advance one step each in turn, so nobody waits for a whole image to start.
//! - Every image samples with its own RNG, so its tokens do not depend on its batch mates.
//! - A request whose receiver is dropped (client gone) leaves its cohort at the next step.
//! - A failing or panicking step fails only the work it belonged to; the loop goes on.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use image::RgbImage;
use janus::{ImageJob, Janus, T2iBatch, TextSession};
use tokio::sync::mpsc;

use super::{ChatEvent, ChatRequest, Engine, EngineError, EngineStatus, ImageEvent, ImageRequest, ModelInfo};

/// How to start the engine (the `janus serve` flags that concern the model).
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Local directory or hub id.
    pub model: String,
    /// `auto`, `cpu`, `cuda`, `cuda:N`.
    pub device: String,
    /// `f32`, `bf16`, `f16`; default per device.
    pub dtype: Option<String>,
    /// Storage of the linear layers (`--quant`).
    pub quant: janus::Quant,
    /// Most images generated together in one CFG batch.
    pub max_batch_images: usize,
    /// Most requests waiting to start; beyond that, 429.
    pub queue_capacity: usize,
    /// Images decoded at once by the VQ decoder.
    pub decode_chunk: usize,
    /// When idle, how long to wait for more image requests to batch with the first.
    pub batch_wait: Duration,
}

/// Text answers decoded concurrently (each is one row; they interleave with image cohorts).
const MAX_TEXT_SESSIONS: usize = 8;

enum Work {
    Images { req: ImageRequest, tx: mpsc::Sender<ImageEvent> },
    Chat { req: ChatRequest, tx: mpsc::Sender<ChatEvent> },
}

struct Shared {
    status: Mutex<EngineStatus>,
    info: Mutex<Option<ModelInfo>>,
    /// Requests accepted but not started yet (in the channel or the scheduler's waiting lists);
    /// `--queue-capacity` bounds it.
    queued: AtomicUsize,
    /// Requests the engine thread holds (waiting for a cohort slot or running).
    active: AtomicUsize,
    accepting: AtomicBool,
    /// The most images one cohort has held (for tests and the batching bench).
    largest_batch: AtomicUsize,
    /// Test-only fault injection: this many upcoming image-batch steps fail as a CUDA
    /// out-of-memory would.
    #[cfg(test)]
    fail_steps: AtomicUsize,
}

pub struct ModelEngine {
    tx: Sender<Work>,
    shared: Arc<Shared>,
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
            queued: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            accepting: AtomicBool::new(true),
            largest_batch: AtomicUsize::new(0),
            #[cfg(test)]
            fail_steps: AtomicUsize::new(0),
        });
        let max_batch_images = opts.max_batch_images.max(1);
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("janus-engine".into())
            .spawn(move || engine_thread(opts, thread_shared, rx))
            .expect("spawn the engine thread");
        Arc::new(Self { tx, shared, max_batch_images, queue_capacity })
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

    fn queue_depth(&self) -> usize {
        self.shared.queued.load(Ordering::SeqCst)
    }

    fn submit_images(&self, req: ImageRequest) -> Result<mpsc::Receiver<ImageEvent>, EngineError> {
        if req.n == 0 || req.n > self.max_batch_images {
            return Err(EngineError::InvalidRequest(format!(
                "n must be between 1 and {} (the largest batch this server runs)",
                self.max_batch_images
            )));
        }
        // Room for every event the request can produce, so the engine never waits on a client.
        let (tx, rx) = mpsc::channel(req.n * (req.partial_images + 1) + 2);
        self.submit(Work::Images { req, tx })?;
        Ok(rx)
    }

    fn submit_chat(&self, req: ChatRequest) -> Result<mpsc::Receiver<ChatEvent>, EngineError> {
        let cap = self.info().map_or(1 << 14, |i| i.context_length) + 4;
        let (tx, rx) = mpsc::channel(req.params.max_new_tokens.unwrap_or(cap).min(cap) + 4);
        self.submit(Work::Chat { req, tx })?;
        Ok(rx)
    }

    fn shutdown(&self) {
        self.shared.accepting.store(false, Ordering::SeqCst);
    }

    fn is_idle(&self) -> bool {
        self.shared.queued.load(Ordering::SeqCst) == 0 && self.shared.active.load(Ordering::SeqCst) == 0
    }
}

// -------------------------------------------------------------------------------------------
// The engine thread
// -------------------------------------------------------------------------------------------

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
    *shared.info.lock().unwrap_or_else(|p| p.into_inner()) = Some(info);
    *shared.status.lock().unwrap_or_else(|p| p.into_inner()) = EngineStatus::Ready;
    tracing::info!(model = %opts.model, quant = %model.quant(), "engine ready");
    Scheduler::new(&model, &opts, &shared).run(rx);
}

/// After a failed load: answer every request with the reason, forever.
fn refuse_all(shared: &Shared, rx: Receiver<Work>, reason: String) {
    // `janus serve` reports the reason and exits; embedders see it in `status()`.
    tracing::debug!(%reason, "model failed to load");
    *shared.status.lock().unwrap_or_else(|p| p.into_inner()) = EngineStatus::Failed(reason.clone());
    for work in rx {
        shared.queued.fetch_sub(1, Ordering::SeqCst);
        let err = EngineError::LoadFailed(reason.clone());
        match work {
            Work::Images { tx, .. } => drop(tx.try_send(ImageEvent::Failed(err))),
            Work::Chat { tx, .. } => drop(tx.try_send(ChatEvent::Failed(err))),
        }
    }
}

fn engine_error(e: janus::Error) -> EngineError {
    match e {
        janus::Error::InvalidInput(m) | janus::Error::Image(m) | janus::Error::Tokenizer(m) => {
            EngineError::InvalidRequest(m)
        }
        other => {
            let m = other.to_string();
            if is_out_of_memory(&m) {
                EngineError::OutOfMemory(m)
            } else {
                EngineError::Internal(m)
            }
        }
    }
}

/// Whether a failure's text says a device or host allocation failed: CUDA's
/// `CUDA_ERROR_OUT_OF_MEMORY` / "out of memory" (driver), `CUBLAS_STATUS_ALLOC_FAILED`, the
/// runtime's `cudaErrorMemoryAllocation`, Metal's and the allocator's "failed to allocate" /
/// "memory allocation of N bytes failed" / ENOMEM's "Cannot allocate memory". candle has no error
/// kind for it, so this is the one place that reads the text; such a batch fails with 503 and the
/// server goes on (its tensors are freed when it is dropped).
pub fn is_out_of_memory(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "out of memory",
        "out_of_memory",
        "outofmemory",
        "alloc_failed",
        "cudaerrormemoryallocation",
        "failed to allocate",
        "memory allocation of",
        "cannot allocate memory",
    ]
    .iter()
    .any(|needle| m.contains(needle))
}

/// Runs `f`, turning a panic into an internal error.
fn guarded<T>(f: impl FnOnce() -> janus::Result<T>) -> Result<T, EngineError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(engine_error),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            tracing::error!(%msg, "a step panicked");
            if is_out_of_memory(&msg) {
                return Err(EngineError::OutOfMemory(msg));
            }
            Err(EngineError::Internal(format!("the request's work panicked: {msg}")))
        }
    }
}

/// One image request inside a cohort.
struct Member {
    tx: mpsc::Sender<ImageEvent>,
    /// Number of images (consecutive in the cohort's image list).
    images: usize,
    prompt_tokens: usize,
    /// Steps after which a preview is sent, in order.
    partial_at: Vec<usize>,
    partials_sent: usize,
}

struct Cohort<'m> {
    batch: T2iBatch<'m>,
    members: Vec<Member>,
}

impl Cohort<'_> {
    /// Each member's images in the batch's image list (members hold consecutive images).
    fn ranges(&self) -> Vec<std::ops::Range<usize>> {
        let mut first = 0;
        self.members
            .iter()
            .map(|m| {
                first += m.images;
                first - m.images..first
            })
            .collect()
    }
}

struct TextWork<'m> {
    session: TextSession<'m>,
    tx: mpsc::Sender<ChatEvent>,
}

struct Scheduler<'m> {
    model: &'m Janus,
    opts: &'m EngineOptions,
    shared: &'m Shared,
    /// Image requests taken from the queue, waiting for room in a cohort.
    waiting: std::collections::VecDeque<(ImageRequest, mpsc::Sender<ImageEvent>)>,
    /// Chat requests waiting for a text slot.
    waiting_text: std::collections::VecDeque<(ChatRequest, mpsc::Sender<ChatEvent>)>,
    cohorts: Vec<Cohort<'m>>,
    texts: Vec<TextWork<'m>>,
}

impl<'m> Scheduler<'m> {
    fn new(model: &'m Janus, opts: &'m EngineOptions, shared: &'m Shared) -> Self {
        Self {
            model,
            opts,
            shared,
            waiting: Default::default(),
            waiting_text: Default::default(),
            cohorts: Vec::new(),
            texts: Vec::new(),
        }
    }

    fn is_busy(&self) -> bool {
        !(self.cohorts.is_empty() && self.texts.is_empty() && self.waiting.is_empty() && self.waiting_text.is_empty())
    }

    fn take(&mut self, work: Work) {
        self.shared.active.fetch_add(1, Ordering::SeqCst);
        match work {
            Work::Images { req, tx } => self.waiting.push_back((req, tx)),
            Work::Chat { req, tx } => self.waiting_text.push_back((req, tx)),
        }
    }

    fn finish_one(&self) {
        self.shared.active.fetch_sub(1, Ordering::SeqCst);
    }

    /// A request leaves the queue (it starts, fails or was abandoned).
    fn dequeued(&self) {
        self.shared.queued.fetch_sub(1, Ordering::SeqCst);
    }

    fn run(mut self, rx: Receiver<Work>) {
        loop {
            // Take new work: block when idle, otherwise only what is already there.
            if !self.is_busy() {
                match rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(w) => {
                        let is_images = matches!(w, Work::Images { .. });
                        self.take(w);
                        if is_images {
                            // Give requests arriving together a chance to share the batch.
                            let until = Instant::now() + self.opts.batch_wait;
                            while self.waiting_images() < self.opts.max_batch_images {
                                let left = until.saturating_duration_since(Instant::now());
                                match rx.recv_timeout(left) {
                                    Ok(w) => self.take(w),
                                    Err(_) => break,
                                }
                            }
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            while let Ok(w) = rx.try_recv() {
                self.take(w);
            }
            self.admit();
            self.step_all();
            metrics::gauge!("janus_queue_depth").set(self.shared.queued.load(Ordering::SeqCst) as f64);
        }
    }

    fn waiting_images(&self) -> usize {
        self.waiting.iter().map(|(r, _)| r.n).sum()
    }

    fn running_images(&self) -> usize {
        self.cohorts.iter().map(|c| c.batch.num_images()).sum()
    }

    /// Starts a new cohort from waiting image requests (when the running images leave room) and
    /// new text sessions.
    fn admit(&mut self) {
        let room = self.opts.max_batch_images.saturating_sub(self.running_images());
        let mut jobs: Vec<ImageJob> = Vec::new();
        let mut members = Vec::new();
        while let Some((req, _)) = self.waiting.front() {
            if jobs.len() + req.n > room {
                break;
            }
            let (req, tx) = self.waiting.pop_front().expect("front exists");
            self.dequeued();
            if tx.is_closed() {
                self.finish_one();
                continue;
            }
            let model = self.model;
            let prepared = guarded(|| {
                let jobs = model.t2i_jobs(&req.prompt, req.n, req.seed, req.params)?;
                let len = jobs[0].prompt_ids.len();
                if len > model.max_prompt_tokens() {
                    return Err(janus::Error::InvalidInput(format!(
                        "the prompt is {len} tokens with the template; at most {} fit with the {} image tokens",
                        model.max_prompt_tokens(),
                        model.num_image_tokens()
                    )));
                }
                Ok(jobs)
            });
            match prepared {
                Ok(js) => {
                    let total = self.model.num_image_tokens();
                    let p = req.partial_images.min(3);
                    members.push(Member {
                        tx,
                        images: req.n,
                        prompt_tokens: js[0].prompt_ids.len(),
                        partial_at: (1..=p).map(|k| total * k / (p + 1)).collect(),
                        partials_sent: 0,
                    });
                    jobs.extend(js);
                }
                Err(e) => {
                    let _ = tx.try_send(ImageEvent::Failed(e));
                    self.finish_one();
                }
            }
        }
        if !jobs.is_empty() {
            let model = self.model;
            self.shared.largest_batch.fetch_max(jobs.len(), Ordering::SeqCst);
            match guarded(|| T2iBatch::new(model, jobs)) {
                Ok(batch) => self.cohorts.push(Cohort { batch, members }),
                Err(e) => {
                    for m in members {
                        let _ = m.tx.try_send(ImageEvent::Failed(e.clone()));
                        self.finish_one();
                    }
                }
            }
        }
        while self.texts.len() < MAX_TEXT_SESSIONS {
            let Some((req, tx)) = self.waiting_text.pop_front() else { break };
            self.dequeued();
            if tx.is_closed() {
                self.finish_one();
                continue;
            }
            let model = self.model;
            match guarded(|| TextSession::new(model, &req.conversation, &req.params)) {
                Ok(session) => {
                    let _ = tx.try_send(ChatEvent::Started { prompt_tokens: session.prompt_tokens() });
                    self.texts.push(TextWork { session, tx });
                }
                Err(e) => {
                    let _ = tx.try_send(ChatEvent::Failed(e));
                    self.finish_one();
                }
            }
        }
        metrics::gauge!("janus_batch_images").set(self.running_images() as f64);
    }

    /// Advances every cohort and text answer by one step.
    fn step_all(&mut self) {
        let mut cohorts = std::mem::take(&mut self.cohorts);
        cohorts.retain_mut(|c| self.step_cohort(c));
        self.cohorts = cohorts;
        let mut texts = std::mem::take(&mut self.texts);
        texts.retain_mut(|t| self.step_text(t));
        self.texts = texts;
    }

    /// Returns whether the cohort is still running.
    fn step_cohort(&self, c: &mut Cohort<'m>) -> bool {
        // Drop members whose client went away.
        if c.members.iter().any(|m| m.tx.is_closed()) {
            let mut keep = Vec::new();
            for (m, range) in c.members.iter().zip(c.ranges()) {
                if !m.tx.is_closed() {
                    keep.extend(range);
                }
            }
            let gone = c.members.iter().filter(|m| m.tx.is_closed()).count();
            (0..gone).for_each(|_| self.finish_one());
            c.members.retain(|m| !m.tx.is_closed());
            if c.members.is_empty() {
                return false;
            }
            if let Err(e) = guarded(|| c.batch.retain_images(&keep)) {
                self.fail_cohort(c, e);
                return false;
            }
        }
        let t = Instant::now();
        let n = c.batch.num_images();
        if let Err(e) = guarded(|| {
            self.injected_fault()?;
            c.batch.step().map(|_| ())
        }) {
            self.fail_cohort(c, e);
            return false;
        }
        metrics::histogram!("janus_step_seconds").record(t.elapsed().as_secs_f64());
        metrics::counter!("janus_image_tokens_total").increment(n as u64);
        let done = c.batch.steps_done();
        if !c.batch.is_done() {
            self.send_partials(c, done);
            return true;
        }
        // Finished: decode each member's images and hand them over.
        let all = match guarded(|| c.batch.tokens().map(<[_]>::to_vec)) {
            Ok(all) => all,
            Err(e) => {
                self.fail_cohort(c, e);
                return false;
            }
        };
        for (m, range) in c.members.iter().zip(c.ranges()) {
            let tokens = &all[range];
            let model = self.model;
            match guarded(|| model.decode_images(tokens, self.opts.decode_chunk)) {
                Ok(images) => {
                    for (index, image) in images.into_iter().enumerate() {
                        let _ = m.tx.try_send(ImageEvent::Image { index, image });
                    }
                    let _ = m.tx.try_send(ImageEvent::Done {
                        prompt_tokens: m.prompt_tokens,
                        image_tokens: m.images * model.num_image_tokens(),
                    });
                }
                Err(e) => {
                    let _ = m.tx.try_send(ImageEvent::Failed(e));
                }
            }
            self.finish_one();
        }
        false
    }

    /// Test builds: fails this step if the test asked for it, with the error candle's CUDA
    /// backend gives when the device is out of memory.
    #[cfg(test)]
    fn injected_fault(&self) -> janus::Result<()> {
        if self.shared.fail_steps.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            let cuda: Box<dyn std::error::Error + Send + Sync> =
                "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")".into();
            return Err(janus::Error::Candle(candle_core::Error::Cuda(cuda)));
        }
        Ok(())
    }

    #[cfg(not(test))]
    #[inline(always)]
    fn injected_fault(&self) -> janus::Result<()> {
        Ok(())
    }

    fn send_partials(&self, c: &mut Cohort<'m>, done: usize) {
        let ranges = c.ranges();
        for (m, range) in c.members.iter_mut().zip(ranges) {
            if m.partial_at.get(m.partials_sent) != Some(&done) {
                continue;
            }
            let partial_index = m.partials_sent;
            m.partials_sent += 1;
            let model = self.model;
            let decoded = guarded(|| model.decode_images(&c.batch.padded_tokens(range)?, self.opts.decode_chunk));
            if let Ok(images) = decoded {
                for (index, mut image) in images.into_iter().enumerate() {
                    grey_out_unfinished_rows(&mut image, done, model.grid_size());
                    let _ = m.tx.try_send(ImageEvent::Partial { index, partial_index, image });
                }
            }
        }
    }

    fn fail_cohort(&self, c: &Cohort<'m>, e: EngineError) {
        tracing::error!(error = %e, images = c.batch.num_images(), "image batch failed");
        for m in &c.members {
            let _ = m.tx.try_send(ImageEvent::Failed(e.clone()));
            self.finish_one();
        }
    }

    /// Returns whether the answer is still running.
    fn step_text(&self, w: &mut TextWork<'m>) -> bool {
        if w.tx.is_closed() {
            self.finish_one();
            return false;
        }
        match guarded(|| w.session.step()) {
            Ok(Some(piece)) => {
                let _ = w.tx.try_send(ChatEvent::Delta(piece));
            }
            Ok(None) => {}
            Err(e) => {
                let _ = w.tx.try_send(ChatEvent::Failed(e));
                self.finish_one();
                return false;
            }
        }
        if !w.session.is_done() {
            return true;
        }
        let _ = w.tx.try_send(ChatEvent::Done {
            completion_tokens: w.session.completion_tokens(),
            finish_reason: w.session.finish_reason(),
        });
        self.finish_one();
        false
    }
}

/// Paints the token rows not generated yet (raster order) in the background grey.
fn grey_out_unfinished_rows(image: &mut RgbImage, tokens_done: usize, grid: usize) {
    let cell = image.height() as usize / grid.max(1);
    let full_rows = tokens_done / grid.max(1);
    let y0 = (full_rows * cell) as u32;
    for y in y0..image.height() {
        for x in 0..image.width() {
            image.put_pixel(x, y, image::Rgb([127, 127, 127]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use janus::{Conversation, SamplingParams, TextParams};

    fn tiny() -> String {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/tiny/janus-pro-tiny").to_string()
    }

    fn engine_with(queue: usize, wait_ms: u64) -> Arc<ModelEngine> {
        let e = ModelEngine::start(EngineOptions {
            model: tiny(),
            device: "cpu".into(),
            dtype: None,
            quant: janus::Quant::None,
            max_batch_images: 16,
            queue_capacity: queue,
            decode_chunk: 4,
            batch_wait: Duration::from_millis(wait_ms),
        });
        let t = Instant::now();
        while e.status() == EngineStatus::Loading {
            assert!(t.elapsed() < Duration::from_secs(60), "model did not load");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(e.status(), EngineStatus::Ready);
        e
    }

    fn image_req(prompt: &str, n: usize, seed: u64, partial_images: usize) -> ImageRequest {
        ImageRequest { prompt: prompt.into(), n, seed, params: SamplingParams::default(), partial_images }
    }

    /// Collects (partials, images) until Done; panics on Failed.
    fn collect(mut rx: mpsc::Receiver<ImageEvent>) -> (Vec<(usize, usize)>, Vec<RgbImage>) {
        let (mut partials, mut images) = (Vec::new(), Vec::new());
        while let Some(ev) = rx.blocking_recv() {
            match ev {
                ImageEvent::Partial { index, partial_index, .. } => partials.push((index, partial_index)),
                ImageEvent::Image { index, image } => {
                    assert_eq!(index, images.len());
                    images.push(image)
                }
                ImageEvent::Done { .. } => return (partials, images),
                ImageEvent::Failed(e) => panic!("request failed: {e}"),
            }
        }
        panic!("channel closed before Done");
    }

    fn wait_idle(e: &ModelEngine) {
        let t = Instant::now();
        while !e.is_idle() {
            assert!(t.elapsed() < Duration::from_secs(30), "engine never became idle");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn concurrent_requests_batch_and_match_sequential_ones() {
        let e = engine_with(64, 300);
        let prompts = [
            "a cat",
            "a red bicycle",
            "two dogs on a beach",
            "a lighthouse",
            "snow",
            "a bowl of fruit",
            "a city at night",
            "an owl",
        ];
        let rxs: Vec<_> =
            prompts.iter().enumerate().map(|(i, p)| e.submit_images(image_req(p, 1, i as u64, 0)).unwrap()).collect();
        let together: Vec<RgbImage> = rxs.into_iter().map(|rx| collect(rx).1.remove(0)).collect();
        assert_eq!(e.largest_batch(), 8, "the 8 concurrent requests run as one CFG batch");
        for (i, p) in prompts.iter().enumerate() {
            let alone = collect(e.submit_images(image_req(p, 1, i as u64, 0)).unwrap()).1.remove(0);
            assert!(alone == together[i], "request {i} differs when batched");
        }
        wait_idle(&e);
    }

    #[test]
    fn partial_images_come_before_the_final_ones() {
        let e = engine_with(8, 0);
        let (partials, images) = collect(e.submit_images(image_req("a boat", 2, 5, 2)).unwrap());
        assert_eq!(images.len(), 2);
        assert_eq!(partials, vec![(0, 0), (1, 0), (0, 1), (1, 1)]);
    }

    #[test]
    fn a_dropped_client_leaves_and_others_finish() {
        let e = engine_with(8, 50);
        let gone = e.submit_images(image_req("a cat", 3, 1, 0)).unwrap();
        let stays = e.submit_images(image_req("a dog", 1, 2, 0)).unwrap();
        drop(gone);
        let (_, images) = collect(stays);
        assert_eq!(images.len(), 1);
        let alone = collect(e.submit_images(image_req("a dog", 1, 2, 0)).unwrap()).1;
        assert!(alone[0] == images[0]);
        wait_idle(&e);
    }

    #[test]
    fn bad_requests_fail_alone_and_the_engine_keeps_serving() {
        let e = engine_with(8, 0);
        let mut rx = e.submit_images(image_req(&"word ".repeat(300), 1, 0, 0)).unwrap();
        match rx.blocking_recv() {
            Some(ImageEvent::Failed(EngineError::InvalidRequest(m))) => assert!(m.contains("tokens"), "{m}"),
            other => panic!("expected an invalid-request failure, got {other:?}"),
        }
        assert!(matches!(e.submit_images(image_req("x", 17, 0, 0)), Err(EngineError::InvalidRequest(_))));
        assert_eq!(collect(e.submit_images(image_req("a tree", 1, 0, 0)).unwrap()).1.len(), 1);
    }

    #[test]
    fn chat_answers_like_the_library_and_streams() {
        let e = engine_with(8, 0);
        let dir = std::path::PathBuf::from(tiny());
        let img = janus::preprocess::load_image(&dir.join("../images/square.png")).unwrap();
        let conv = Conversation::single(img, "Describe this image.");
        let params = TextParams { max_new_tokens: Some(10), ..Default::default() };
        let model = Janus::open(&tiny(), "cpu", None, janus::Quant::None).unwrap();
        let want = model.answer(&conv, &params, |_| true).unwrap();
        let mut rx = e.submit_chat(ChatRequest { conversation: conv, params }).unwrap();
        let mut text = String::new();
        let mut started = false;
        loop {
            match rx.blocking_recv().expect("events until Done") {
                ChatEvent::Started { prompt_tokens } => {
                    started = true;
                    assert_eq!(prompt_tokens, want.prompt_tokens)
                }
                ChatEvent::Delta(d) => text.push_str(&d),
                ChatEvent::Done { completion_tokens, finish_reason } => {
                    assert_eq!(completion_tokens, want.token_ids.len());
                    assert_eq!(finish_reason, want.finish_reason);
                    break;
                }
                ChatEvent::Failed(e) => panic!("{e}"),
            }
        }
        assert!(started);
        assert_eq!(text, want.text);
    }

    #[test]
    fn full_queue_refuses_and_shutdown_stops_accepting() {
        let e = engine_with(1, 0);
        // Keep the engine busy (16 images fill the batch), then fill the one queue slot: the
        // next request must be refused, however quickly the engine drains its channel.
        let busy = e.submit_images(image_req("a", 16, 0, 0)).unwrap();
        let t = Instant::now();
        while e.queue_depth() > 0 {
            assert!(t.elapsed() < Duration::from_secs(10), "the first request never started");
            std::thread::sleep(Duration::from_millis(1));
        }
        let queued = e.submit_images(image_req("b", 16, 1, 0)).unwrap();
        let refused = e.submit_images(image_req("c", 16, 2, 0));
        assert!(matches!(refused, Err(EngineError::QueueFull { queued: 1, .. })), "{refused:?}");
        e.shutdown();
        assert!(matches!(e.submit_images(image_req("c", 1, 0, 0)), Err(EngineError::ShuttingDown)));
        drop(busy);
        drop(queued);
        wait_idle(&e);
    }

    #[test]
    fn out_of_memory_texts_are_recognised() {
        for oom in [
            "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")",
            "CUDA out of memory. Tried to allocate 2.00 GiB",
            "cublas error: CUBLAS_STATUS_ALLOC_FAILED",
            "cudaErrorMemoryAllocation",
            "Metal error: failed to allocate buffer",
            "memory allocation of 17179869184 bytes failed",
            "Cannot allocate memory (os error 12)",
        ] {
            assert!(is_out_of_memory(oom), "{oom}");
        }
        for other in [
            "shape mismatch in matmul, lhs: [2, 3], rhs: [4, 5]",
            "room for more",
            "DriverError(CUDA_ERROR_ILLEGAL_ADDRESS)",
        ] {
            assert!(!is_out_of_memory(other), "{other}");
        }
        let candle = candle_core::Error::Cuda("DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")".into());
        assert!(matches!(engine_error(janus::Error::Candle(candle)), EngineError::OutOfMemory(_)));
        let shape = candle_core::Error::Msg("shape mismatch".into());
        assert!(matches!(engine_error(janus::Error::Candle(shape)), EngineError::Internal(_)));
    }

    /// A batch step that fails with CUDA's out-of-memory error: every request of that batch gets
    /// a 503 (OpenAI envelope, Retry-After) through the real router, and the next request runs
    /// and gives the same images as before the fault.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_out_of_memory_batch_fails_with_503_and_the_engine_recovers() {
        use axum::body::Body;
        use http_body_util::BodyExt;
        use tower::ServiceExt;

        let e = tokio::task::spawn_blocking(|| engine_with(8, 300)).await.unwrap();
        let app = crate::http::router(e.clone(), crate::http::HttpConfig::default());
        let post = |prompt: &str, seed: u64| {
            let body = serde_json::json!({"prompt": prompt, "n": 2, "seed": seed});
            let req = axum::http::Request::post("/v1/images/generations")
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .unwrap();
            let app = app.clone();
            async move {
                let resp = app.oneshot(req).await.unwrap();
                let (parts, body) = resp.into_parts();
                let bytes = body.collect().await.unwrap().to_bytes();
                let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                (parts.status.as_u16(), parts.headers, json)
            }
        };
        let (status, _, reference) = post("a red fox", 7).await;
        assert_eq!(status, 200, "{reference}");

        // Two requests that share one batch; its first step runs out of memory.
        e.shared.fail_steps.store(1, Ordering::SeqCst);
        let ((s1, h1, b1), (s2, _, b2)) = tokio::join!(post("a red fox", 7), post("a blue bird", 8));
        for (s, b) in [(s1, &b1), (s2, &b2)] {
            assert_eq!(s, 503, "{b}");
            assert_eq!(b["error"]["code"], "out_of_memory", "{b}");
            assert_eq!(b["error"]["type"], "server_error", "{b}");
            assert!(b["error"]["message"].as_str().unwrap().contains("out of memory"), "{b}");
        }
        assert_eq!(h1.get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
        assert_eq!(e.shared.fail_steps.load(Ordering::SeqCst), 0, "exactly one step failed");

        let (status, _, again) = post("a red fox", 7).await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["data"], reference["data"], "the images after the fault equal those before it");
        tokio::task::spawn_blocking(move || wait_idle(&e)).await.unwrap();
    }

    #[test]
    fn a_model_that_fails_to_load_says_why() {
        let e = ModelEngine::start(EngineOptions {
            model: "/no/such/model".into(),
            device: "cpu".into(),
            dtype: None,
            quant: janus::Quant::None,
            max_batch_images: 4,
            queue_capacity: 4,
            decode_chunk: 4,
            batch_wait: Duration::ZERO,
        });
        let t = Instant::now();
        while e.status() == EngineStatus::Loading {
            assert!(t.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(5));
        }
        match e.status() {
            EngineStatus::Failed(m) => assert!(m.contains("/no/such/model"), "{m}"),
            s => panic!("{s:?}"),
        }
        assert!(matches!(e.submit_images(image_req("a", 1, 0, 0)), Err(EngineError::LoadFailed(_))));
    }
}
