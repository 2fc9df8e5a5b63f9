//! Image cohorts: one CFG batch ([`T2iBatch`]) shared by the image requests admitted together,
//! stepped one token per turn; and their VQ decodes ([`Decode`]), previews and finished images,
//! which the scheduler runs one chunk per turn so that no decode stalls other work for longer
//! than one chunk.

use std::ops::Range;
use std::sync::Arc;

use image::RgbImage;
use janus::edit::ForcedTokens;
use janus::{ImageJob, Janus, T2iBatch};
use tokio::sync::mpsc;

use super::error::guarded;
use super::text::{TextAnswer, TextTurn};
use super::{EngineError, ImageEvent, ImagesRequest};

/// One image request inside a cohort.
pub(super) struct Member {
    tx: mpsc::Sender<ImageEvent>,
    /// Number of images (consecutive in the cohort's image list).
    images: usize,
    prompt_tokens: usize,
    /// Steps after which a preview is sent, in order.
    partial_at: Vec<usize>,
    partials_sent: usize,
}

impl Member {
    /// The jobs of `req` (tokenized before the queue), checked (a bad one fails alone, before
    /// it joins a batch).
    pub fn prepare(
        model: &Janus,
        req: ImagesRequest,
        tx: mpsc::Sender<ImageEvent>,
    ) -> Result<(Self, Vec<ImageJob>), (mpsc::Sender<ImageEvent>, EngineError)> {
        let ImagesRequest { request: req, prompt_ids, edit } = req;
        let jobs = || {
            let mut jobs = model.image_jobs(prompt_ids, req.n, req.seed, req.params)?;
            if let Some(edit) = edit {
                // The input's tokens, kept wherever the mask leaves them.
                let tokens = model.encode_pixels(&edit.pixels.unsqueeze(0)?)?.pop().unwrap_or_default();
                let forced = Arc::new(ForcedTokens::new(tokens, edit.editable)?);
                jobs.iter_mut().for_each(|j| j.forced = Some(forced.clone()));
            }
            Ok(jobs)
        };
        match guarded(jobs) {
            Ok(jobs) => {
                let total = model.num_image_tokens();
                let p = req.partial_images;
                let member = Member {
                    tx,
                    images: req.n,
                    prompt_tokens: jobs[0].prompt_ids.len(),
                    partial_at: (1..=p).map(|k| total * k / (p + 1)).collect(),
                    partials_sent: 0,
                };
                Ok((member, jobs))
            }
            Err(e) => Err((tx, e)),
        }
    }

    pub fn is_gone(&self) -> bool {
        self.tx.is_closed()
    }

    pub fn fail(&self, e: EngineError) {
        let _ = self.tx.try_send(ImageEvent::Failed(e));
    }
}

pub(super) struct Cohort<'m> {
    model: &'m Janus,
    batch: T2iBatch<'m>,
    members: Vec<Member>,
}

impl<'m> Cohort<'m> {
    /// One batch for the members' jobs; on failure the members are handed back.
    pub fn start(
        model: &'m Janus,
        members: Vec<Member>,
        jobs: Vec<ImageJob>,
    ) -> Result<Self, (Vec<Member>, EngineError)> {
        match guarded(|| T2iBatch::new(model, jobs)) {
            Ok(batch) => Ok(Self { model, batch, members }),
            Err(e) => Err((members, e)),
        }
    }

    pub fn num_images(&self) -> usize {
        self.batch.num_images()
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Drops the members whose client went away (their images leave the batch); returns how
    /// many left. The cohort is empty when all did.
    pub fn drop_gone(&mut self) -> Result<usize, EngineError> {
        if !self.members.iter().any(Member::is_gone) {
            return Ok(0);
        }
        let keep: Vec<usize> =
            self.members.iter().zip(ranges(&self.members)).filter(|(m, _)| !m.is_gone()).flat_map(|(_, r)| r).collect();
        let before = self.members.len();
        self.members.retain(|m| !m.is_gone());
        if !self.members.is_empty() {
            guarded(|| self.batch.retain_images(&keep))?;
        }
        Ok(before - self.members.len())
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// One token for every image.
    pub fn step(&mut self, fault: impl FnOnce() -> janus::Result<()>) -> Result<(), EngineError> {
        guarded(|| {
            fault()?;
            self.batch.step().map(|_| ())
        })
    }

    pub fn is_done(&self) -> bool {
        self.batch.is_done()
    }

    /// Whether its prompt is in the cache (its next step can share the LM forward).
    pub fn is_prefilled(&self) -> bool {
        self.batch.is_prefilled()
    }

    /// One token for every image and for each of `answers` (decoding), in one LM forward
    /// ([`Janus::step_shared`]): each answer's turn, or the failure. A failed step leaves the
    /// answers as they were (the cohort fails; the answers can take their step without it).
    pub fn step_shared(
        &mut self,
        model: &Janus,
        answers: &mut [&mut TextAnswer<'m>],
        fault: impl FnOnce() -> janus::Result<()>,
    ) -> Result<Vec<TextTurn>, EngineError> {
        let stepped = guarded(|| {
            fault()?;
            model.step_shared(&mut self.batch, &mut TextAnswer::sessions(answers))
        })?;
        Ok(TextAnswer::deliver_all(answers, Ok(stepped.1)))
    }

    /// The previews due after this step, as decodes (the rows not generated yet are painted
    /// grey when they are decoded).
    pub fn previews_due(&mut self) -> Vec<Decode> {
        let done = self.batch.steps_done();
        let grid = self.model.grid_size().max(1);
        let mut due = Vec::new();
        let spans = ranges(&self.members);
        for (m, range) in self.members.iter_mut().zip(spans) {
            if m.partial_at.get(m.partials_sent) != Some(&done) {
                continue;
            }
            let partial_index = m.partials_sent;
            m.partials_sent += 1;
            // A preview is a courtesy: if its tokens cannot be read, it is skipped.
            if let Ok(tokens) = guarded(|| self.batch.padded_tokens(range)) {
                due.push(Decode::new(m.tx.clone(), tokens, Purpose::Preview { partial_index, rows_done: done / grid }));
            }
        }
        due
    }

    /// The finished cohort's images, one decode per member.
    pub fn finish(mut self) -> Result<Vec<Decode>, (Vec<Member>, EngineError)> {
        let per_image = self.model.num_image_tokens();
        let all = match guarded(|| self.batch.tokens().map(<[_]>::to_vec)) {
            Ok(all) => all,
            Err(e) => return Err((self.members, e)),
        };
        let ranges = ranges(&self.members);
        Ok(self
            .members
            .into_iter()
            .zip(ranges)
            .map(|(m, range)| {
                let purpose = Purpose::Final { prompt_tokens: m.prompt_tokens, image_tokens: m.images * per_image };
                Decode::new(m.tx, all[range].to_vec(), purpose)
            })
            .collect())
    }
}

/// Each member's images in the batch's image list (members hold consecutive images).
fn ranges(members: &[Member]) -> Vec<Range<usize>> {
    let mut first = 0;
    members
        .iter()
        .map(|m| {
            first += m.images;
            first - m.images..first
        })
        .collect()
}

enum Purpose {
    /// A preview after `rows_done` full token rows.
    Preview { partial_index: usize, rows_done: usize },
    /// The request's images; `Done` follows the last.
    Final { prompt_tokens: usize, image_tokens: usize },
}

/// VQ decodes owed to one request, run a chunk at a time.
pub(super) struct Decode {
    tx: mpsc::Sender<ImageEvent>,
    tokens: Vec<Vec<u32>>,
    next: usize,
    purpose: Purpose,
}

/// What one chunk of a [`Decode`] came to.
pub(super) enum Decoded {
    /// More images to decode.
    More,
    /// A preview is complete, or was skipped.
    PreviewDone,
    /// The request's last image is sent, and `Done` after it.
    Finished,
    /// The request's images could not be decoded; it got `Failed`.
    Failed,
    /// The client went away.
    Gone,
}

impl Decode {
    fn new(tx: mpsc::Sender<ImageEvent>, tokens: Vec<Vec<u32>>, purpose: Purpose) -> Self {
        Self { tx, tokens, next: 0, purpose }
    }

    /// Images left to decode.
    pub fn remaining(&self) -> usize {
        self.tokens.len() - self.next
    }

    /// Whether this is a request's final decode (the request ends with it).
    pub fn is_final(&self) -> bool {
        matches!(self.purpose, Purpose::Final { .. })
    }

    /// Decodes and sends the next `chunk` images.
    pub fn advance(&mut self, model: &Janus, chunk: usize) -> Decoded {
        if self.tx.is_closed() {
            return Decoded::Gone;
        }
        let end = (self.next + chunk.max(1)).min(self.tokens.len());
        let first = self.next;
        let images = match guarded(|| model.decode_images(&self.tokens[first..end], chunk)) {
            Ok(images) => images,
            Err(e) => {
                return match self.purpose {
                    Purpose::Preview { .. } => Decoded::PreviewDone,
                    Purpose::Final { .. } => {
                        let _ = self.tx.try_send(ImageEvent::Failed(e));
                        Decoded::Failed
                    }
                }
            }
        };
        self.next = end;
        for (index, image) in (first..).zip(images) {
            let event = match self.purpose {
                Purpose::Preview { partial_index, rows_done } => {
                    let mut image = image;
                    grey_out_rows_from(&mut image, rows_done, model.grid_size());
                    ImageEvent::Partial { index, partial_index, image }
                }
                Purpose::Final { .. } => ImageEvent::Image { index, image },
            };
            let _ = self.tx.try_send(event);
        }
        match self.purpose {
            _ if self.remaining() > 0 => Decoded::More,
            Purpose::Preview { .. } => Decoded::PreviewDone,
            Purpose::Final { prompt_tokens, image_tokens } => {
                let _ = self.tx.try_send(ImageEvent::Done { prompt_tokens, image_tokens });
                Decoded::Finished
            }
        }
    }
}

/// Paints the token rows from `rows_done` on (raster order) in the background grey.
fn grey_out_rows_from(image: &mut RgbImage, rows_done: usize, grid: usize) {
    let cell = image.height() as usize / grid.max(1);
    let y0 = (rows_done * cell) as u32;
    for y in y0..image.height() {
        for x in 0..image.width() {
            image.put_pixel(x, y, image::Rgb([127, 127, 127]));
        }
    }
}
