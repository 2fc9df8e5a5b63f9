//! Penalties on tokens an answer has already used, applied to its logits before the draw:
//! transformers' `repetition_penalty` (`RepetitionPenaltyLogitsProcessor`: each token of the
//! prompt or the answer has its logit divided by p where positive, multiplied where negative),
//! then OpenAI's `frequency_penalty` and `presence_penalty` (`logit[j] -= count[j] · f +
//! (count[j] > 0) · p`, counting the answer's tokens only), in vLLM's order. At their neutral
//! values (1, 0, 0) nothing is touched, so an answer's numbers are bit-identical to one without.

use std::collections::{HashMap, HashSet};

use crate::error::{Field, Invalid};
use crate::limits::{MAX_OPENAI_PENALTY, MAX_REPETITION_PENALTY};

/// The three penalties of a text answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Penalties {
    /// transformers' multiplicative penalty over prompt and answer; 1 is neutral.
    pub repetition: f32,
    /// OpenAI's: subtracted once per earlier use in the answer; 0 is neutral.
    pub frequency: f32,
    /// OpenAI's: subtracted once if used in the answer; 0 is neutral.
    pub presence: f32,
}

impl Default for Penalties {
    fn default() -> Self {
        Self { repetition: 1.0, frequency: 0.0, presence: 0.0 }
    }
}

impl Penalties {
    /// Checks each against [`crate::limits`], naming the field at fault.
    pub fn validate(&self) -> Result<(), Invalid> {
        for (value, field) in [(self.frequency, Field::FrequencyPenalty), (self.presence, Field::PresencePenalty)] {
            if !(-MAX_OPENAI_PENALTY..=MAX_OPENAI_PENALTY).contains(&value) {
                let why = format!("must be between -{MAX_OPENAI_PENALTY} and {MAX_OPENAI_PENALTY}; got {value}");
                return Err(Invalid::new(field, why));
            }
        }
        let r = self.repetition;
        if !(r > 0.0 && r <= MAX_REPETITION_PENALTY) {
            let why = format!("must be above 0 and at most {MAX_REPETITION_PENALTY} (1 is neutral); got {r}");
            return Err(Invalid::new(Field::RepetitionPenalty, why));
        }
        Ok(())
    }

    pub fn is_neutral(&self) -> bool {
        *self == Self::default()
    }
}

/// An answer's penalties and the tokens they count.
#[derive(Debug, Clone)]
pub struct PenaltyState {
    penalties: Penalties,
    /// The prompt's distinct tokens (only kept for a repetition penalty).
    prompt: HashSet<u32>,
    /// How often each token occurs in the answer so far.
    counts: HashMap<u32, u32>,
}

impl PenaltyState {
    /// `prompt`: the prompt's token ids (read only for a repetition penalty).
    pub fn new(penalties: Penalties, prompt: &[u32]) -> Self {
        let prompt = match penalties.repetition == 1.0 {
            true => HashSet::new(),
            false => prompt.iter().copied().collect(),
        };
        Self { penalties, prompt, counts: HashMap::new() }
    }

    pub fn is_neutral(&self) -> bool {
        self.penalties.is_neutral()
    }

    /// Counts a token of the answer.
    pub fn record(&mut self, token: u32) {
        if !self.is_neutral() {
            *self.counts.entry(token).or_default() += 1;
        }
    }

    /// Applies the penalties to `logits` (ids outside it are ignored).
    pub fn apply(&self, logits: &mut [f32]) {
        let Penalties { repetition, frequency, presence } = self.penalties;
        if repetition != 1.0 {
            let seen = self.prompt.iter().chain(self.counts.keys().filter(|t| !self.prompt.contains(t)));
            for &t in seen {
                if let Some(x) = logits.get_mut(t as usize) {
                    *x = if *x > 0.0 { *x / repetition } else { *x * repetition };
                }
            }
        }
        if frequency != 0.0 || presence != 0.0 {
            for (&t, &n) in &self.counts {
                if let Some(x) = logits.get_mut(t as usize) {
                    *x -= n as f32 * frequency + presence;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_formula() {
        let p = Penalties { frequency: 0.5, presence: 1.0, ..Default::default() };
        let mut s = PenaltyState::new(p, &[0, 1, 2]);
        for t in [1, 1, 3] {
            s.record(t);
        }
        let mut logits = vec![1.0f32; 5];
        s.apply(&mut logits);
        // token 1: twice → 1 − 2·0.5 − 1; token 3: once → 1 − 0.5 − 1; the prompt's do not count.
        assert_eq!(logits, vec![1.0, -1.0, 1.0, -0.5, 1.0]);
    }

    #[test]
    fn repetition_divides_positive_and_multiplies_negative() {
        let p = Penalties { repetition: 2.0, ..Default::default() };
        let mut s = PenaltyState::new(p, &[0, 0, 1]);
        s.record(3);
        let mut logits = vec![4.0f32, -4.0, 4.0, -1.0];
        s.apply(&mut logits);
        assert_eq!(logits, vec![2.0, -8.0, 4.0, -2.0], "each seen token once, prompt or answer");
    }

    #[test]
    fn neutral_penalties_touch_nothing_and_ranges_are_checked() {
        let mut s = PenaltyState::new(Penalties::default(), &[0, 1]);
        s.record(0);
        let mut logits = vec![0.3f32, -0.7];
        s.apply(&mut logits);
        assert_eq!(logits, vec![0.3, -0.7]);
        assert!(Penalties::default().validate().is_ok());
        let bad = [
            (Penalties { frequency: 2.5, ..Default::default() }, Field::FrequencyPenalty),
            (Penalties { presence: -2.1, ..Default::default() }, Field::PresencePenalty),
            (Penalties { repetition: 0.0, ..Default::default() }, Field::RepetitionPenalty),
            (Penalties { repetition: f32::NAN, ..Default::default() }, Field::RepetitionPenalty),
        ];
        for (p, field) in bad {
            assert_eq!(p.validate().unwrap_err().field, field);
        }
    }
}
