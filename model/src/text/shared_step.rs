//! Image rows and text rows in one LM forward. Both run through the same language model and
//! differ only in their inputs and heads, so one pass over the weights can serve an image
//! cohort's next token (its CFG rows, through `gen_head`) and every text answer's next token
//! (through `lm_head`). Each group attends over its own cache; each row's numbers are those of
//! its group stepped alone.

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::generate::{StepOutput, T2iBatch};
use crate::model::Janus;
use crate::modules::llm::LlmCache;
use crate::text::batch::TextPieces;
use crate::text::session::TextSession;

impl Janus {
    /// One step of `cohort` (past its prompt: [`T2iBatch::is_prefilled`]) and one token for each
    /// of `sessions` (past theirs: [`TextSession::is_decoding`]) in one LM forward. The outer
    /// error is the shared step's (the cohort and every session then fail); the inner results
    /// are each session's new text, as [`TextSession::step`] gives.
    pub fn step_shared(
        &self,
        cohort: &mut T2iBatch<'_>,
        sessions: &mut [&mut TextSession<'_>],
    ) -> Result<(StepOutput, TextPieces)> {
        if !cohort.is_prefilled() {
            return Err(Error::InvalidInput("step_shared takes a cohort past its prompts".into()));
        }
        let (images, texts) = self.step_rows(Some(cohort), sessions)?;
        Ok((images.expect("a cohort was given"), texts))
    }

    /// One LM forward for `cohort`'s rows (if any, first) and one token for each of `sessions`
    /// (all decoding): the step [`Janus::step_shared`] and [`Janus::step_texts`] take.
    pub(crate) fn step_rows(
        &self,
        mut cohort: Option<&mut T2iBatch<'_>>,
        sessions: &mut [&mut TextSession<'_>],
    ) -> Result<(Option<StepOutput>, TextPieces)> {
        if !sessions.iter().all(|s| s.is_decoding()) {
            return Err(Error::InvalidInput("a shared step takes only answers past their prompt".into()));
        }
        let mut inputs = Vec::with_capacity(sessions.len() + 1);
        if let Some(c) = cohort.as_mut() {
            inputs.push(c.take_input()?);
        }
        for s in sessions.iter_mut() {
            inputs.push(s.take_input()?.ok_or_else(|| Error::InvalidInput("a decoding answer has no input".into()))?);
        }
        let rows = match &cohort {
            Some(_) => inputs[0].dim(0)?,
            None => 0,
        };
        crate::text::batch::rewound_on_error(sessions, |sessions| self.step_inputs(cohort, sessions, &inputs, rows))
    }

    /// The rest of [`Janus::step_rows`], once the cohort's input (its `rows` first) and each
    /// session's are `inputs`.
    fn step_inputs(
        &self,
        mut cohort: Option<&mut T2iBatch<'_>>,
        sessions: &mut [&mut TextSession<'_>],
        inputs: &[Tensor],
        rows: usize,
    ) -> Result<(Option<StepOutput>, TextPieces)> {
        let hidden = {
            let mut caches: Vec<&mut LlmCache> = sessions.iter_mut().map(|s| s.cache_mut()).collect();
            let batch = cohort.as_mut().map(|c| c.cache_mut());
            self.llm.forward_shared(&Tensor::cat(inputs, 0)?, batch, &mut caches)?.squeeze(1)?
        };
        let images = match cohort {
            Some(c) => Some(c.finish_step(hidden.narrow(0, 0, rows)?.contiguous()?, |s, logits| s.pick(logits))?),
            None => None,
        };
        let texts = match sessions.len() {
            0 => Vec::new(),
            n => self.finish_texts(sessions, &hidden.narrow(0, rows, n)?.contiguous()?)?,
        };
        Ok((images, texts))
    }
}
