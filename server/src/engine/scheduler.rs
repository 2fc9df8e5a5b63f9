//! The engine thread's loop (after TGI's router/queue split, simplified to what Janus needs):
//! - Requests wait in a bounded queue ([`ModelEngine`](super::ModelEngine)).
//! - Image requests are grouped into *cohorts*: one CFG batch of up to `max_batch_images`
//!   images, pairs of rows kept together. When the engine is idle it waits up to `batch_wait`
//!   after the first image request so that requests arriving together share a batch. Requests
//!   arriving while a cohort runs form the next cohort.
//! - Each turn: admit what fits, advance every cohort and text answer by one step, then decode
//!   at most one chunk (`decode_chunk` images) of previews or finished images. Nothing waits for a
//!   whole image to start, nor for more than one decode chunk between two steps.
//! - Every image samples with its own RNG, so its tokens do not depend on its batch mates.
//! - A request whose receiver is dropped (client gone) leaves at the next turn.
//! - A failing or panicking step fails only the work it belonged to; the loop goes on.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use janus::Janus;
use tokio::sync::mpsc;

use super::cohort::{Cohort, Decode, Decoded, Member};
use super::shared::{EngineOptions, Shared};
use super::text::{Starting, TextAnswer, TextTurn};
use super::{ChatEvent, ChatRequest, EngineError, ImageEvent, ImagesRequest};

/// A request on its way to the engine thread, and when it was accepted.
pub(super) enum Work {
    Images { req: ImagesRequest, tx: mpsc::Sender<ImageEvent>, at: Instant },
    Chat { req: Box<ChatRequest>, tx: mpsc::Sender<ChatEvent>, at: Instant },
}

impl Work {
    /// Ends the request with `e`.
    pub fn fail(self, e: EngineError) {
        match self {
            Work::Images { tx, .. } => drop(tx.try_send(ImageEvent::Failed(e))),
            Work::Chat { tx, .. } => drop(tx.try_send(ChatEvent::Failed(e))),
        }
    }
}

/// How long a request waited in the queue before it started.
fn record_queue_wait(at: Instant, kind: &'static str) {
    metrics::histogram!("janus_queue_wait_seconds", "kind" => kind).record(at.elapsed().as_secs_f64());
}

pub(super) struct Scheduler<'m> {
    model: &'m Janus,
    opts: &'m EngineOptions,
    shared: &'m Shared,
    /// Image requests taken from the queue, waiting for room in a cohort.
    waiting: VecDeque<(ImagesRequest, mpsc::Sender<ImageEvent>, Instant)>,
    /// Chat requests waiting for a text slot.
    waiting_text: VecDeque<(ChatRequest, mpsc::Sender<ChatEvent>, Instant)>,
    cohorts: Vec<Cohort<'m>>,
    texts: Vec<TextAnswer<'m>>,
    /// Previews and finished images to decode, in order.
    decodes: VecDeque<Decode>,
    /// Most text answers decoded together.
    max_text: usize,
}

impl<'m> Scheduler<'m> {
    pub fn new(model: &'m Janus, opts: &'m EngineOptions, shared: &'m Shared, max_text: usize) -> Self {
        Self {
            model,
            opts,
            shared,
            waiting: VecDeque::new(),
            waiting_text: VecDeque::new(),
            cohorts: Vec::new(),
            texts: Vec::new(),
            decodes: VecDeque::new(),
            max_text,
        }
    }

    fn is_busy(&self) -> bool {
        !(self.cohorts.is_empty()
            && self.texts.is_empty()
            && self.waiting.is_empty()
            && self.waiting_text.is_empty()
            && self.decodes.is_empty())
    }

    fn take(&mut self, work: Work) {
        self.shared.active.fetch_add(1, Ordering::SeqCst);
        match work {
            Work::Images { req, tx, at } => self.waiting.push_back((req, tx, at)),
            Work::Chat { req, tx, at } => self.waiting_text.push_back((*req, tx, at)),
        }
    }

    /// `n` requests are over (finished, failed or abandoned).
    fn finish(&self, n: usize) {
        self.shared.active.fetch_sub(n, Ordering::SeqCst);
    }

    /// A request leaves the queue (it starts, fails or was abandoned).
    fn dequeued(&self) {
        self.shared.queued.fetch_sub(1, Ordering::SeqCst);
    }

    pub fn run(mut self, rx: Receiver<Work>) {
        loop {
            // Take new work: block when idle, otherwise only what is already there.
            if !self.is_busy() {
                match rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(w) => {
                        let is_images = matches!(w, Work::Images { .. });
                        self.take(w);
                        if is_images {
                            self.gather(&rx);
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
            self.decode_one_chunk();
            metrics::gauge!("janus_queue_depth").set(self.shared.queued.load(Ordering::SeqCst) as f64);
            metrics::gauge!("janus_max_text_sessions").set(self.max_text as f64);
        }
    }

    /// Gives image requests arriving together a chance to share the batch (`--batch-wait-ms`).
    fn gather(&mut self, rx: &Receiver<Work>) {
        let until = Instant::now() + self.opts.batch_wait;
        while self.waiting.iter().map(|(r, _, _)| r.request.n).sum::<usize>() < self.opts.max_batch_images {
            match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(w) => self.take(w),
                Err(_) => break,
            }
        }
    }

    fn running_images(&self) -> usize {
        self.cohorts.iter().map(Cohort::num_images).sum()
    }

    /// Starts a new cohort from waiting image requests (when the running images leave room) and
    /// new text answers.
    fn admit(&mut self) {
        let room = self.opts.max_batch_images.saturating_sub(self.running_images());
        let (mut members, mut jobs) = (Vec::new(), Vec::new());
        while let Some((req, _, _)) = self.waiting.front() {
            if jobs.len() + req.request.n > room {
                break;
            }
            let (req, tx, at) = self.waiting.pop_front().expect("front exists");
            self.dequeued();
            record_queue_wait(at, "images");
            if tx.is_closed() {
                self.finish(1);
                continue;
            }
            match Member::prepare(self.model, req, tx) {
                Ok((member, js)) => {
                    members.push(member);
                    jobs.extend(js);
                }
                Err((tx, e)) => {
                    let _ = tx.try_send(ImageEvent::Failed(e));
                    self.finish(1);
                }
            }
        }
        if !jobs.is_empty() {
            self.shared.largest_batch.fetch_max(jobs.len(), Ordering::SeqCst);
            match Cohort::start(self.model, members, jobs) {
                Ok(c) => self.cohorts.push(c),
                Err((members, e)) => self.fail_members(&members, e),
            }
        }
        // A request takes a text slot per answer (its followers hold theirs while they wait); one
        // asking for more answers than there are slots runs alone.
        let mut used: usize = self.texts.iter().map(|t| 1 + t.waiting_followers()).sum();
        let mut starting: Vec<Starting> = Vec::new();
        while let Some((req, _, _)) = self.waiting_text.front() {
            if used > 0 && used + req.n > self.max_text {
                break;
            }
            let (req, tx, at) = self.waiting_text.pop_front().expect("front exists");
            self.dequeued();
            record_queue_wait(at, "text");
            if tx.is_closed() {
                self.finish(1);
                continue;
            }
            // Each answer is counted as running until it ends.
            self.shared.active.fetch_add(req.n - 1, Ordering::SeqCst);
            used += req.n;
            starting.push(Starting::new(req, tx, at));
        }
        self.start_texts(starting);
        metrics::gauge!("janus_batch_images").set(self.running_images() as f64);
    }

    /// Starts text answers (their first step is taken in the next turn).
    fn start_texts(&mut self, starting: Vec<Starting>) {
        if starting.is_empty() {
            return;
        }
        let (started, failed) = TextAnswer::start_many(self.model, starting);
        self.finish(failed);
        self.texts.extend(started);
    }

    /// Advances every cohort and text answer by one step. Answers still reading their prompt
    /// take a prefill chunk each, in one pass; the others take their next token together, in
    /// the LM forward of the first cohort past its prompt when there is one and `--shared-steps`
    /// is on (image and text rows share the pass over the weights), else in a batched step of
    /// their own.
    fn step_all(&mut self) {
        let mut texts = std::mem::take(&mut self.texts);
        let gone: usize = texts.iter().filter(|t| t.is_gone()).map(|t| 1 + t.waiting_followers()).sum();
        self.finish(gone);
        texts.retain(|t| !t.is_gone());
        let before = texts.len();
        let decoding: Vec<bool> = texts.iter().map(TextAnswer::is_decoding).collect();
        let mut turns = vec![TextTurn::Running; texts.len()];
        let (mut prefilling, mut prefill_turns): (Vec<_>, Vec<_>) =
            texts.iter_mut().zip(turns.iter_mut()).zip(&decoding).filter(|(_, d)| !**d).map(|(p, _)| p).unzip();
        if !prefilling.is_empty() {
            for (turn, t) in prefill_turns.iter_mut().zip(TextAnswer::prefill_together(self.model, &mut prefilling)) {
                **turn = t;
            }
        }
        let (mut batch, mut batch_turns): (Vec<_>, Vec<_>) =
            texts.iter_mut().zip(turns.iter_mut()).zip(&decoding).filter(|(_, d)| **d).map(|(p, _)| p).unzip();
        let mut texts_pending = !batch.is_empty();
        if texts_pending {
            metrics::histogram!("janus_rows_per_step", "kind" => "text").record(batch.len() as f64);
        }
        // Answers whose shared step failed take theirs alone, not with another cohort.
        let mut may_share = self.opts.shared_steps;
        for mut c in std::mem::take(&mut self.cohorts) {
            let share = may_share && texts_pending && c.is_prefilled();
            let shared = share.then_some((&mut batch[..], &mut batch_turns[..]));
            let (running, texts_stepped) = self.step_cohort(&mut c, shared);
            texts_pending &= !texts_stepped;
            may_share &= !share || texts_stepped;
            if running {
                self.cohorts.push(c);
            } else if c.is_done() {
                match c.finish() {
                    Ok(decodes) => self.decodes.extend(decodes),
                    Err((members, e)) => self.fail_members(&members, e),
                }
            }
        }
        if texts_pending {
            for (turn, t) in batch_turns.iter_mut().zip(TextAnswer::step_together(self.model, &mut batch)) {
                **turn = t;
            }
        }
        // The answers that have read their prompt start their requests' other answers (those of
        // a failed or abandoned answer are dropped).
        let mut followers = Vec::new();
        for (t, turn) in texts.iter_mut().zip(&turns) {
            let started = t.take_followers();
            match *turn == TextTurn::Running || t.is_finished() {
                true => followers.extend(started),
                false => self.finish(started.len() + t.waiting_followers()),
            }
        }
        let mut over = turns.iter().map(|t| *t == TextTurn::Running);
        texts.retain(|_| over.next().unwrap_or(false));
        self.finish(before - texts.len());
        self.texts = texts;
        self.start_texts(followers);
    }

    /// One step of a cohort, sharing its LM forward with `texts` (decoding answers and their
    /// turns) when given. Returns whether the cohort is still generating (a cohort that stops is
    /// done, its images to be decoded; failed, its members told; or abandoned), and whether the
    /// texts were stepped (not when the shared step failed: they then take their own).
    fn step_cohort(
        &mut self,
        c: &mut Cohort<'m>,
        texts: Option<(&mut [&mut TextAnswer<'m>], &mut [&mut TextTurn])>,
    ) -> (bool, bool) {
        match c.drop_gone() {
            Ok(gone) => self.finish(gone),
            Err(e) => {
                self.fail_members(c.members(), e);
                return (false, false);
            }
        }
        if c.is_empty() {
            return (false, false);
        }
        let t = Instant::now();
        let n = c.num_images();
        let mut texts_stepped = false;
        let stepped = match texts {
            None => c.step(|| self.injected_fault()),
            Some((answers, turns)) => {
                #[cfg(test)]
                self.shared.shared_steps.fetch_add(1, Ordering::SeqCst);
                c.step_shared(self.model, answers, || self.injected_shared_fault()).map(|text_turns| {
                    texts_stepped = true;
                    for (turn, t) in turns.iter_mut().zip(text_turns) {
                        **turn = t;
                    }
                })
            }
        };
        if let Err(e) = stepped {
            // The answers that shared the step are left as they were: they take it on their own.
            tracing::error!(error = %e, images = n, "image batch failed");
            self.fail_members(c.members(), e);
            return (false, false);
        }
        metrics::histogram!("janus_step_seconds").record(t.elapsed().as_secs_f64());
        metrics::histogram!("janus_rows_per_step", "kind" => "images").record((2 * n) as f64); // CFG pairs
        metrics::counter!("janus_image_tokens_total").increment(n as u64);
        if c.is_done() {
            return (false, texts_stepped);
        }
        self.decodes.extend(c.previews_due());
        (true, texts_stepped)
    }

    fn fail_members(&self, members: &[Member], e: EngineError) {
        for m in members {
            m.fail(e.clone());
        }
        self.finish(members.len());
    }

    /// Decodes at most `decode_chunk` images of the first pending decode.
    fn decode_one_chunk(&mut self) {
        let Some(mut d) = self.decodes.pop_front() else { return };
        let t = Instant::now();
        let chunk = self.opts.decode_chunk.max(1);
        #[cfg(test)]
        self.shared.largest_decode_turn.fetch_max(d.remaining().min(chunk), Ordering::SeqCst);
        let outcome = d.advance(self.model, chunk);
        metrics::histogram!("janus_decode_seconds").record(t.elapsed().as_secs_f64());
        match outcome {
            Decoded::More => self.decodes.push_front(d),
            Decoded::PreviewDone => {}
            Decoded::Finished | Decoded::Failed => self.finish(1),
            Decoded::Gone => self.finish(usize::from(d.is_final())),
        }
    }

    /// Test builds: fails this step if the test asked for it (`fail_steps`), with the error the
    /// library gives when the device is out of memory.
    #[cfg(test)]
    fn injected_fault(&self) -> janus::Result<()> {
        injected(&self.shared.fail_steps)
    }

    /// As [`Scheduler::injected_fault`], for a shared step (`fail_shared_steps`, then
    /// `fail_steps`).
    #[cfg(test)]
    fn injected_shared_fault(&self) -> janus::Result<()> {
        injected(&self.shared.fail_shared_steps)?;
        self.injected_fault()
    }

    #[cfg(not(test))]
    #[inline(always)]
    fn injected_fault(&self) -> janus::Result<()> {
        Ok(())
    }

    #[cfg(not(test))]
    #[inline(always)]
    fn injected_shared_fault(&self) -> janus::Result<()> {
        Ok(())
    }
}

/// Takes one fault from `faults` if any is left: the library's out-of-memory error.
#[cfg(test)]
fn injected(faults: &std::sync::atomic::AtomicUsize) -> janus::Result<()> {
    if faults.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
        return Err(janus::Error::OutOfMemory(candle_core::Error::Msg("injected: cuMemAlloc failed".into())));
    }
    Ok(())
}
