//! How a text answer picks its next token from the LM's logits: the penalties on what it has
//! used ([`PenaltyState`]), then the mask of its structured-output constraint, then the draw
//! ([`Sampler`]: temperature, top-p, its own RNG); and the log-probabilities of what it picked,
//! from the raw logits ([`token_logprobs`]). With neutral penalties and no constraint the logits
//! go to the sampler untouched, so an answer's numbers are those it had before these existed.

use crate::error::{Error, Result};
use crate::request::TextParams;
use crate::sampling::logprobs::{token_logprobs, TokenLogprobs};
use crate::sampling::penalties::PenaltyState;
use crate::sampling::Sampler;
use crate::text::constraint::Constraint;

/// One answer's token picking.
pub struct Picker {
    sampler: Sampler,
    penalties: PenaltyState,
    /// What the answer must match (structured outputs).
    constraint: Option<Constraint>,
    /// `Some(k)`: report each picked token's log-probability and the `k` most likely.
    logprobs: Option<usize>,
    /// The log-probabilities of the last pick, until [`Picker::accept`] takes the pick.
    last: Option<TokenLogprobs>,
    /// Those of the picks accepted since [`Picker::take_logprobs`].
    accepted: Vec<TokenLogprobs>,
    scratch: Vec<f32>,
}

impl Picker {
    /// `prompt`: the prompt's ids (a repetition penalty counts them).
    pub fn new(params: &TextParams, prompt: &[u32], constraint: Option<Constraint>) -> Self {
        Self {
            sampler: Sampler::new(params.sampling, params.seed),
            penalties: PenaltyState::new(params.penalties, prompt),
            constraint,
            logprobs: params.logprobs,
            last: None,
            accepted: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// The next token from `logits` (host work only, so that a batch picks its rows in parallel).
    pub fn pick(&mut self, logits: &[f32]) -> Result<u32> {
        let t = if self.penalties.is_neutral() && self.constraint.is_none() {
            self.sampler.sample_logits(logits)
        } else {
            let mut adjusted = std::mem::take(&mut self.scratch);
            adjusted.clear();
            adjusted.extend_from_slice(logits);
            self.penalties.apply(&mut adjusted);
            if let Some(c) = &mut self.constraint {
                c.mask(&mut adjusted).map_err(|e| Error::Constraint(e.to_string()))?;
            }
            let t = self.sampler.sample_logits(&adjusted);
            self.scratch = adjusted;
            t
        };
        self.last = self.logprobs.map(|k| token_logprobs(logits, t, k));
        Ok(t)
    }

    /// Takes the pick into the answer (a step that failed after picking is picked again); `end`:
    /// it ends the answer (EOS), which has no log-probability reported, as no text is its.
    /// Returns whether the constraint is complete (the answer must end).
    pub fn accept(&mut self, t: u32, end: bool) -> Result<bool> {
        self.penalties.record(t);
        let last = self.last.take();
        if end {
            return Ok(true);
        }
        self.accepted.extend(last);
        match &mut self.constraint {
            Some(c) => {
                c.consume(t).map_err(|e| Error::Constraint(e.to_string()))?;
                Ok(c.is_stopped())
            }
            None => Ok(false),
        }
    }

    /// The log-probabilities of the tokens accepted since the last call (empty unless asked for).
    pub fn take_logprobs(&mut self) -> Vec<TokenLogprobs> {
        std::mem::take(&mut self.accepted)
    }
}
