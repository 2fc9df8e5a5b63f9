//! Continuous batching of text answers: answers arriving together have their images encoded in
//! one batch ([`Janus::text_sessions`]), and every answer past its prompt takes its next token in
//! one batched step. The linear layers (most of a decode step's time: it reads every weight)
//! run once for all rows; attention runs row by row, each against its own cache at its own
//! position, so answers join and leave at any step and each row's numbers are those of the
//! answer alone.

use candle_core::Tensor;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::model::Janus;
use crate::modules::llm::{last_position, LlmCache};
use crate::text::prefix_cache::{Found, PrefixKey};
use crate::text::prompt::TextRequest;
use crate::text::session::TextSession;

/// Prefill chunks of at most this many positions go through the decode kernel as rows (see
/// [`Janus::prefill_texts`]).
pub const SHORT_CHUNK: usize = 16;

/// Each answer's new text from one step (or its own error), in the order the answers were given.
pub type TextPieces = Vec<Result<Option<String>>>;

impl Janus {
    /// Sessions for several text requests arriving together (tokenized and their images
    /// preprocessed: [`crate::text::prompt::Prompter::text_request`]), each starting from the longest
    /// of its prefixes in the prefix cache, and the images after it encoded by SigLIP in one
    /// batch (each image's embeddings are what they are encoded alone; an image inside a cached
    /// prefix is not encoded). The outer error is the shared encoding's; the inner results are
    /// each request's.
    pub fn text_sessions<'m>(&'m self, requests: &[&TextRequest]) -> Result<Vec<Result<TextSession<'m>>>> {
        // Each prompt's prefixes, the longest of them cached, and how many of its images that
        // prefix covers (they are not encoded).
        let starts: Vec<(Vec<PrefixKey>, Option<Found>, usize)> = (requests.iter())
            .map(|r| {
                let prefixes = r.prompt.prefix_keys();
                let cached = self.prefix_cache().longest(&prefixes);
                let skip = cached.as_ref().map_or(0, |(len, _)| r.prompt.images_before(*len));
                (prefixes, cached, skip)
            })
            .collect();
        let fresh: Vec<&Tensor> =
            requests.iter().zip(&starts).flat_map(|(r, (_, _, skip))| &r.prompt.pixels[*skip..]).collect();
        let encoded = match fresh.len() {
            0 => None,
            _ => Some(self.encode_images(&Tensor::stack(&fresh, 0)?)?),
        };
        let mut first = 0;
        let mut sessions = Vec::with_capacity(requests.len());
        for (r, (prefixes, cached, skip)) in requests.iter().zip(starts) {
            let n = r.prompt.pixels.len() - skip;
            let images = match &encoded {
                Some(all) if n > 0 => {
                    first += n;
                    let new = all.narrow(0, first - n, n)?;
                    if skip == 0 {
                        Some(new.contiguous()?)
                    } else {
                        // The covered images' positions are never read: zeros stand in.
                        let (_, s, d) = new.dims3()?;
                        let covered = Tensor::zeros((skip, s, d), new.dtype(), new.device())?;
                        Some(Tensor::cat(&[&covered, &new], 0)?)
                    }
                }
                _ => None,
            };
            sessions.push(
                self.prompt_embeds_with(&r.prompt, images)
                    .and_then(|embeds| TextSession::with_embeds(self, r, embeds, prefixes, cached)),
            );
        }
        Ok(sessions)
    }

    /// One token for each of `sessions` (all past their prompt: [`TextSession::is_decoding`]),
    /// in one batched LM step. The outer error is the shared step's (every session is then
    /// failed); the inner results are each session's new text, as [`TextSession::step`] gives.
    pub fn step_texts(&self, sessions: &mut [&mut TextSession<'_>]) -> Result<TextPieces> {
        if sessions.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.step_rows(None, sessions)?.1)
    }

    /// The next prefill chunk of each of `sessions` (all still reading their prompt), packed
    /// ([`crate::modules::llm::Llama::forward_packed`]): the chunks of more than [`SHORT_CHUNK`]
    /// positions through one GEMM per layer (a GEMM row does not depend on the others), the
    /// shorter ones (a prompt's `<|Assistant|>:` tail after its last message) as rows through the
    /// decode kernel, each row on its own; so each chunk's numbers are those it has alone. The
    /// sessions whose prompt is then in pick their first token together. Results as
    /// [`Janus::step_texts`].
    pub fn prefill_texts(&self, sessions: &mut [&mut TextSession<'_>]) -> Result<TextPieces> {
        if !sessions.iter().all(|s| s.is_prefilling()) {
            return Err(Error::InvalidInput("a prefill takes only answers reading their prompt".into()));
        }
        let mut inputs = Vec::with_capacity(sessions.len());
        for s in sessions.iter_mut() {
            inputs.push(
                s.prefill_input()?.ok_or_else(|| Error::InvalidInput("a prefilling answer has no input".into()))?,
            );
        }
        rewound_on_error(sessions, |sessions| self.prefill_inputs(sessions, &inputs))
    }

    /// The rest of [`Janus::prefill_texts`], once each session's chunk is `inputs[i]`.
    fn prefill_inputs(&self, sessions: &mut [&mut TextSession<'_>], inputs: &[Tensor]) -> Result<TextPieces> {
        let mut hidden: Vec<Option<Tensor>> = vec![None; sessions.len()];
        let short: Vec<bool> = inputs.iter().map(|x| x.dim(1).is_ok_and(|s| s <= SHORT_CHUNK)).collect();
        for as_rows in [false, true] {
            let group: Vec<usize> = (0..inputs.len()).filter(|&i| short[i] == as_rows).collect();
            if group.is_empty() {
                continue;
            }
            let embeds: Vec<Tensor> = group.iter().map(|&i| inputs[i].clone()).collect();
            let mut caches: Vec<&mut LlmCache> = (sessions.iter_mut().enumerate())
                .filter(|(i, _)| group.contains(i))
                .map(|(_, s)| s.cache_mut())
                .collect();
            for (i, h) in group.iter().zip(self.llm.forward_packed(&embeds, &mut caches, as_rows)?) {
                hidden[*i] = Some(h);
            }
        }
        // The sessions whose prompt is in: their last positions through `lm_head` together.
        let mut done = Vec::new();
        for (i, (s, h)) in sessions.iter_mut().zip(&hidden).enumerate() {
            if s.prefilled()? {
                let h = h.as_ref().ok_or_else(|| Error::InvalidInput("a prefill chunk was not run".into()))?;
                done.push((i, last_position(h)?));
            }
        }
        let mut pieces: TextPieces = sessions.iter().map(|_| Ok(None)).collect();
        if !done.is_empty() {
            let last = Tensor::cat(&done.iter().map(|(_, h)| h).collect::<Vec<_>>(), 0)?;
            let mut finishing: Vec<&mut TextSession<'_>> = (sessions.iter_mut().enumerate())
                .filter(|(i, _)| done.iter().any(|(d, _)| d == i))
                .map(|(_, s)| &mut **s)
                .collect();
            for ((i, _), piece) in done.iter().zip(self.finish_texts(&mut finishing, &last)?) {
                pieces[*i] = piece;
            }
        }
        Ok(pieces)
    }

    /// After the LM: `lm_head` for the answers' last hidden states `[R, D]`, the draws (a softmax
    /// over the vocabulary each) in parallel, each with its answer's own RNG, and the new text.
    pub(crate) fn finish_texts(&self, sessions: &mut [&mut TextSession<'_>], hidden: &Tensor) -> Result<TextPieces> {
        let logits = self.llm.lm_logits(hidden)?.to_vec2::<f32>()?;
        let picks: Vec<Result<u32>> = sessions.par_iter_mut().zip(logits.par_iter()).map(|(s, l)| s.pick(l)).collect();
        Ok(sessions.iter_mut().zip(picks).map(|(s, t)| t.and_then(|t| s.accept_token(t))).collect())
    }
}

/// Runs a step of `sessions`; if it fails (or panics), each session's cache goes back to where
/// it was, so that the step can be taken again (alone, or with other batch mates) and gives what
/// it would have.
pub(crate) fn rewound_on_error<T>(
    sessions: &mut [&mut TextSession<'_>],
    step: impl FnOnce(&mut [&mut TextSession<'_>]) -> Result<T>,
) -> Result<T> {
    let lens: Vec<usize> = sessions.iter().map(|s| s.cache_len()).collect();
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step(&mut *sessions)));
    if !matches!(out, Ok(Ok(_))) {
        for (s, len) in sessions.iter_mut().zip(lens) {
            s.rewind(len);
        }
    }
    out.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
