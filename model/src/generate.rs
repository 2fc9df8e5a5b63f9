//! Text-to-image generation as a loop over steps.
//!
//! Reference: deepseek-ai/Janus `generation_inference.py` (`generate`): a CFG batch of
//! conditional rows (the prompt) and unconditional rows (BOS, pads, `<begin_of_image>`), one
//! prefill and then one LM step per image token; `gen_head` on the last post-norm hidden state;
//! guided logits `uncond + w·(cond − uncond)`; the sampled token is fed back to both rows of
//! its pair through `gen_embed` → `gen_aligner`. Rows are interleaved (cond, uncond) per
//! image, as in the reference. Unlike the reference, rows may come from different requests:
//! prompts of different lengths are left-padded and masked, and every image samples with its
//! own RNG, so an image does not depend on what it was batched with.
//!
//! Guidance and sampling run on the model's device ([`BatchSampler`]) and the picked tokens are
//! fed back from there, so a step ends without waiting for the device; the tokens reach the host
//! when asked for ([`T2iBatch::tokens`]).

use std::sync::Arc;

use candle_core::Tensor;

use crate::edit::ForcedTokens;
use crate::error::{Error, Result};
use crate::model::Janus;
use crate::modules::llm::{last_position, LlmCache};
use crate::sampling::{image_seed, BatchSampler, SamplingParams};

/// One image to generate.
#[derive(Debug, Clone)]
pub struct ImageJob {
    /// Conditional prompt ids (BOS … `<begin_of_image>`), see [`Janus::t2i_job`].
    pub prompt_ids: Vec<u32>,
    pub params: SamplingParams,
    /// This image's RNG seed.
    pub seed: u64,
    /// For an edit: the tokens kept from the input image (the others are drawn).
    pub forced: Option<Arc<ForcedTokens>>,
}

/// What one step computed, for callers that inspect it (tests, partial previews).
pub struct StepOutput {
    /// Post-norm LM hidden state at the last position, `[2N, D]` (rows cond, uncond per image).
    pub hidden: Tensor,
    /// Raw image-token logits, f32 `[2N, V]`.
    pub logits: Tensor,
}

/// A batch of images being generated together.
pub struct T2iBatch<'m> {
    model: &'m Janus,
    sampler: BatchSampler,
    /// Tokens copied to the host so far, per image.
    tokens: Vec<Vec<u32>>,
    /// Per image, the tokens an edit keeps (`None`: every token drawn).
    forced: Vec<Option<Arc<ForcedTokens>>>,
    /// The later steps' picks, `[N]` each, still on the device.
    pending: Vec<Tensor>,
    steps: usize,
    /// The rows' cache: empty (its padding only) until the prompts are prefilled into it.
    cache: LlmCache,
    /// Positions the cache is made for: the longest prompt and the image tokens.
    capacity: usize,
    /// LM input for the next step, `[2N, S, D]`.
    next: Option<Tensor>,
    total: usize,
}

impl Janus {
    /// The jobs for `n` images of one prompt: image `i` samples with `image_seed(seed, i)`.
    pub fn t2i_jobs(&self, prompt: &str, n: usize, seed: u64, params: SamplingParams) -> Result<Vec<ImageJob>> {
        params.validate()?;
        self.image_jobs(self.prompter().t2i_prompt_ids(prompt)?, n, seed, params)
    }

    /// The jobs of `n` images of a prompt already tokenized
    /// ([`crate::text::prompt::Prompter::t2i_prompt_ids`]), image `i` sampled with `image_seed(seed, i)`.
    pub fn image_jobs(
        &self,
        prompt_ids: Vec<u32>,
        n: usize,
        seed: u64,
        params: SamplingParams,
    ) -> Result<Vec<ImageJob>> {
        params.validate()?;
        self.prompter().check_t2i_prompt(prompt_ids.len())?;
        Ok((0..n)
            .map(|i| ImageJob {
                prompt_ids: prompt_ids.clone(),
                params,
                seed: image_seed(seed, i as u64),
                forced: None,
            })
            .collect())
    }

    /// Longest prompt (in tokens, template included) that leaves room for one image.
    pub fn max_prompt_tokens(&self) -> usize {
        self.prompter().max_t2i_prompt_tokens()
    }

    /// Generates the image tokens of `jobs` in one batch; `on_step(done, total)` after each step.
    pub fn generate_tokens(&self, jobs: Vec<ImageJob>, mut on_step: impl FnMut(usize, usize)) -> Result<Vec<Vec<u32>>> {
        let mut batch = T2iBatch::new(self, jobs)?;
        while !batch.is_done() {
            batch.step()?;
            on_step(batch.steps_done(), batch.total_steps());
        }
        batch.into_tokens()
    }
}

impl<'m> T2iBatch<'m> {
    pub fn new(model: &'m Janus, jobs: Vec<ImageJob>) -> Result<Self> {
        if jobs.is_empty() {
            return Err(Error::InvalidInput("no images to generate".into()));
        }
        let tok = &model.tokenizer;
        for j in &jobs {
            j.params.validate()?;
            let ids = &j.prompt_ids;
            if ids.len() < 2 || ids[0] != tok.special.bos || *ids.last().unwrap() != tok.special.begin_of_image {
                return Err(Error::InvalidInput("prompt ids must start with BOS and end with <begin_of_image>".into()));
            }
            model.prompter().check_t2i_prompt(ids.len())?;
        }
        let len = jobs.iter().map(|j| j.prompt_ids.len()).max().unwrap_or(0);
        let total = model.num_image_tokens();
        let mut ids = Vec::with_capacity(2 * jobs.len() * len);
        let mut pads = Vec::with_capacity(2 * jobs.len());
        for j in &jobs {
            let pad = len - j.prompt_ids.len();
            for row in [j.prompt_ids.clone(), tok.uncond_ids(&j.prompt_ids)] {
                ids.extend(std::iter::repeat_n(tok.special.pad, pad));
                ids.extend(row);
                pads.push(pad);
            }
        }
        let dev = model.device();
        let rows = pads.len();
        let ids = Tensor::from_vec(ids, (rows, len), dev)?;
        let embeds = model.llm.embed(&ids)?;
        let capacity = len + total - 1;
        let cache = LlmCache::new(&model.cfg.llm, pads, 0, model.dtype(), dev)?;
        let vocab = model.cfg.gen.image_token_size;
        Ok(Self {
            model,
            sampler: BatchSampler::new(jobs.iter().map(|j| (j.params, j.seed)), vocab, dev)?,
            tokens: vec![Vec::with_capacity(total); jobs.len()],
            forced: jobs.iter().map(|j| j.forced.clone()).collect(),
            pending: Vec::new(),
            steps: 0,
            cache,
            capacity,
            next: Some(embeds),
            total,
        })
    }

    pub fn is_done(&self) -> bool {
        self.steps_done() == self.total
    }

    pub fn steps_done(&self) -> usize {
        self.steps
    }

    pub fn total_steps(&self) -> usize {
        self.total
    }

    pub fn num_images(&self) -> usize {
        self.tokens.len()
    }

    /// Tokens generated so far, per image (waits for the device to finish the steps queued).
    pub fn tokens(&mut self) -> Result<&[Vec<u32>]> {
        if !self.pending.is_empty() {
            let picks = Tensor::stack(&self.pending, 1)?.to_vec2::<u32>()?;
            self.pending.clear();
            for (t, p) in self.tokens.iter_mut().zip(picks) {
                t.extend(p);
            }
        }
        Ok(&self.tokens)
    }

    /// Full-length token grids of images `range` for a preview decode: the tokens so far, the rest
    /// of each grid filled with token 0.
    pub fn padded_tokens(&mut self, range: std::ops::Range<usize>) -> Result<Vec<Vec<u32>>> {
        let total = self.total;
        let tokens =
            self.tokens()?.get(range).ok_or_else(|| Error::InvalidInput("image range out of bounds".into()))?;
        Ok(tokens.iter().map(|t| t.iter().copied().chain(std::iter::repeat(0)).take(total).collect()).collect())
    }

    pub fn into_tokens(mut self) -> Result<Vec<Vec<u32>>> {
        self.tokens()?;
        Ok(self.tokens)
    }

    /// Runs the LM once (the prefill first, then one token) and samples one token per image.
    pub fn step(&mut self) -> Result<StepOutput> {
        self.advance(|sampler, logits| sampler.pick(logits))
    }

    /// As [`T2iBatch::step`], but the images continue with `forced` (one token each) instead of
    /// sampling: teacher forcing, to compare two models' distributions along one sequence.
    pub fn step_forced(&mut self, forced: &[u32]) -> Result<StepOutput> {
        if forced.len() != self.num_images() {
            return Err(Error::InvalidInput(format!(
                "{} forced tokens for {} images",
                forced.len(),
                self.num_images()
            )));
        }
        let dev = self.model.device().clone();
        self.advance(|_, _| Ok(Tensor::new(forced, &dev)?))
    }

    fn advance(&mut self, pick: impl FnOnce(&mut BatchSampler, &Tensor) -> Result<Tensor>) -> Result<StepOutput> {
        let input = self.take_input()?;
        let hidden = if self.steps == 0 {
            self.prefill(&input)?
        } else {
            last_position(&self.model.llm.forward(&input, &mut self.cache)?)?
        };
        self.finish_step(hidden, pick)
    }

    /// The prompts, each image's pair of rows alone and unpadded (so its numbers are what they
    /// are alone, whatever its batch mates' prompt lengths), then one left-padded batch cache.
    /// Returns the last position's hidden states `[2N, D]`.
    fn prefill(&mut self, input: &Tensor) -> Result<Tensor> {
        let (rows, len, _) = input.dims3()?;
        let (model, capacity) = (self.model, self.capacity);
        let pads = self.cache.pads().to_vec();
        let mut embeds = Vec::with_capacity(rows / 2);
        let mut caches = Vec::with_capacity(rows / 2);
        for pair in (0..rows).step_by(2) {
            let pad = pads[pair];
            embeds.push(input.narrow(0, pair, 2)?.narrow(1, pad, len - pad)?.contiguous()?);
            caches.push(LlmCache::new(&model.cfg.llm, vec![0, 0], len - pad, model.dtype(), model.device())?);
        }
        let hidden = {
            let mut refs: Vec<&mut LlmCache> = caches.iter_mut().collect();
            model.llm.forward_packed(&embeds, &mut refs, false)?
        };
        let hidden = hidden.iter().map(last_position).collect::<Result<Vec<_>>>()?;
        let parts = caches.into_iter().zip(pads.iter().step_by(2).copied()).collect();
        self.cache = LlmCache::from_parts(parts, capacity)?;
        Ok(Tensor::cat(&hidden, 0)?)
    }

    /// Whether the prompt is in the cache, so that the next step is one token per row and can
    /// share the LM forward with text answers ([`Janus::step_shared`]).
    pub fn is_prefilled(&self) -> bool {
        self.steps > 0 && !self.is_done()
    }

    /// The LM input of the next step: the prompts first, then one token per row.
    pub(crate) fn take_input(&mut self) -> Result<Tensor> {
        self.next.take().ok_or_else(|| Error::InvalidInput("generation is already finished".into()))
    }

    pub(crate) fn cache_mut(&mut self) -> &mut LlmCache {
        &mut self.cache
    }

    /// After the LM: `gen_head`, the picks, and the next step's input, from the last position's
    /// hidden states `[2N, D]`.
    pub(crate) fn finish_step(
        &mut self,
        hidden: Tensor,
        pick: impl FnOnce(&mut BatchSampler, &Tensor) -> Result<Tensor>,
    ) -> Result<StepOutput> {
        let logits = self.model.gen_logits(&hidden)?;
        let drawn = pick(&mut self.sampler, &logits)?;
        let picked = self.kept(drawn)?;
        self.pending.push(picked.clone());
        self.steps += 1;
        if !self.is_done() {
            // Both rows of each pair continue with the image's token: [t0, t0, t1, t1, ...].
            let ids = Tensor::stack(&[&picked, &picked], 1)?.flatten_all()?;
            self.next = Some(self.model.embed_image_tokens(&ids)?.unsqueeze(1)?);
        }
        Ok(StepOutput { hidden, logits })
    }

    /// The picks with every token an edit keeps at this step put back (the draw is made all the
    /// same, so an image's random stream does not depend on its mask).
    fn kept(&self, picked: Tensor) -> Result<Tensor> {
        let kept: Vec<Option<u32>> = self.forced.iter().map(|f| f.as_ref().and_then(|f| f.kept(self.steps))).collect();
        if kept.iter().all(Option::is_none) {
            return Ok(picked);
        }
        let mut ids = picked.to_vec1::<u32>()?;
        for (id, k) in ids.iter_mut().zip(kept) {
            if let Some(k) = k {
                *id = k;
            }
        }
        Ok(Tensor::new(ids, picked.device())?)
    }

    /// Keeps only the images at `keep` (at least one; in that order), e.g. when a client goes away.
    pub fn retain_images(&mut self, keep: &[usize]) -> Result<()> {
        self.tokens()?;
        self.sampler.retain(keep)?;
        let rows: Vec<usize> = keep.iter().flat_map(|&i| [2 * i, 2 * i + 1]).collect();
        self.cache.retain_rows(&rows)?;
        if let Some(next) = &self.next {
            let idx = Tensor::from_iter(rows.iter().map(|&r| r as u32), next.device())?;
            self.next = Some(next.index_select(&idx, 0)?);
        }
        let mut tokens: Vec<Option<Vec<u32>>> = std::mem::take(&mut self.tokens).into_iter().map(Some).collect();
        self.tokens = keep.iter().map(|&i| tokens[i].take().unwrap_or_default()).collect();
        self.forced = keep.iter().map(|&i| self.forced.get(i).cloned().flatten()).collect();
        Ok(())
    }
}
