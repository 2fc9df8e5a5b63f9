//! Continuous batching of text answers: answers arriving together have their images encoded in
//! one batch ([`Janus::text_sessions`]), and every answer past its prompt takes its next token in
//! one batched step. The linear layers (most of a decode step's time: it reads every weight)
//! run once for all rows; attention runs row by row, each against its own cache at its own
//! position, so answers join and leave at any step and each row's numbers are those of the
//! answer alone.

use candle_core::Tensor;
use rayon::prelude::*;

use crate::error::Result;
use crate::model::Janus;
use crate::understand::{Conversation, PreparedPrompt, TextParams, TextSession};

/// Each answer's new text from one step (or its own error), in the order the answers were given.
pub type TextPieces = Vec<Result<Option<String>>>;

impl Janus {
    /// Sessions for several conversations arriving together, their images encoded by SigLIP in
    /// one batch (each image's embeddings are what they are encoded alone). The outer error is
    /// the shared encoding's; the inner results are each conversation's (a bad one fails alone).
    pub fn text_sessions<'m>(&'m self, asks: &[(&Conversation, &TextParams)]) -> Result<Vec<Result<TextSession<'m>>>> {
        let prepared: Vec<Result<(PreparedPrompt, usize)>> =
            asks.iter().map(|(conv, params)| TextSession::prepare(self, conv, params)).collect();
        let pixels: Vec<&Tensor> = prepared.iter().filter_map(|p| p.as_ref().ok()?.0.pixels.as_ref()).collect();
        let encoded = match pixels.len() {
            0 => None,
            _ => Some(self.encode_images(&Tensor::cat(&pixels, 0)?)?),
        };
        let mut first = 0;
        let mut sessions = Vec::with_capacity(asks.len());
        for (p, (_, params)) in prepared.into_iter().zip(asks) {
            sessions.push(p.and_then(|(prompt, max_new)| {
                let images = match (&prompt.pixels, &encoded) {
                    (Some(px), Some(all)) => {
                        let n = px.dim(0)?;
                        first += n;
                        Some(all.narrow(0, first - n, n)?.contiguous()?)
                    }
                    _ => None,
                };
                let embeds = self.prompt_embeds_with(&prompt, images)?;
                TextSession::with_embeds(self, &prompt, max_new, embeds, params)
            }));
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

    /// After the LM: `lm_head` for the answers' last hidden states `[R, D]`, the draws (a softmax
    /// over the vocabulary each) in parallel, each with its answer's own RNG, and the new text.
    pub(crate) fn finish_texts(&self, sessions: &mut [&mut TextSession<'_>], hidden: &Tensor) -> Result<TextPieces> {
        let logits = self.llm.lm_logits(hidden)?.to_vec2::<f32>()?;
        let picks: Vec<u32> = sessions.par_iter_mut().zip(logits.par_iter()).map(|(s, l)| s.pick(l)).collect();
        Ok(sessions.iter_mut().zip(picks).map(|(s, t)| s.accept_token(t)).collect())
    }
}
