//! The typed request path: what a caller asks for (over HTTP, on the command line, from the
//! evals), checked once against [`crate::limits`] and turned into the validated requests the
//! model runs. A failure is an [`Invalid`] naming the [`Field`]; each surface words the field its
//! own way.

use crate::error::{Field, Invalid};
use crate::limits::*;
use crate::sampling::penalties::Penalties;
use crate::sampling::{image_seed, SamplingParams};
use crate::text::constraint::ConstraintSpec;

/// A text answer's parameters, validated ([`TextAsk::validate`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TextParams {
    /// Most tokens to generate; `None`: `default_max_new_tokens`, or what fits in the context.
    pub max_new_tokens: Option<usize>,
    /// What `max_new_tokens: None` stands for, where the context has room (the reference's 512;
    /// a caption's [`CAPTION_MAX_TOKENS`]).
    pub default_max_new_tokens: usize,
    /// Temperature 0 (the default) is greedy, as in the reference.
    pub sampling: SamplingParams,
    pub seed: u64,
    /// The answer ends before the first of these (at most [`MAX_STOP_SEQUENCES`]).
    pub stop: Vec<String>,
    /// `Some(k)`: the log-probability of each token, and of the `k` most likely
    /// ([`crate::sampling::logprobs`]).
    pub logprobs: Option<usize>,
    pub penalties: Penalties,
    /// What the answer must match (structured outputs); compiled when the request is prepared
    /// ([`crate::text::prompt::Prompter::text_request`]).
    pub constraint: Option<ConstraintSpec>,
}

impl Default for TextParams {
    fn default() -> Self {
        Self {
            max_new_tokens: None,
            default_max_new_tokens: DEFAULT_MAX_NEW_TOKENS,
            sampling: SamplingParams { temperature: DEFAULT_TEXT_TEMPERATURE, ..Default::default() },
            seed: 0,
            stop: Vec::new(),
            logprobs: None,
            penalties: Penalties::default(),
            constraint: None,
        }
    }
}

impl TextParams {
    /// Answer `index` of a request asking for several (`n`): the same, on its own seed stream
    /// (answer 0 on the request's seed, so that `n = 1` is the answer alone).
    pub fn answer(&self, index: usize) -> Self {
        let seed = match index {
            0 => self.seed,
            i => image_seed(self.seed, i as u64),
        };
        Self { seed, ..self.clone() }
    }
}

/// A text-to-image request as asked: every field optional, numbers as given (negative ones
/// included), so that validation, not parsing, says what is wrong.
#[derive(Debug, Clone, Default)]
pub struct ImageAsk {
    pub prompt: String,
    /// Images (default 1).
    pub n: Option<i64>,
    /// Random (53 bits, exact in JSON) when absent.
    pub seed: Option<u64>,
    pub cfg_weight: Option<f32>,
    pub temperature: Option<f32>,
    pub top_k: Option<i64>,
    pub top_p: Option<f32>,
    /// Argmax at every step (tests, parity).
    pub greedy: bool,
    /// Previews per image while generating.
    pub partial_images: Option<i64>,
}

/// A validated text-to-image request: `n` images of `prompt`, image `i` sampled with the RNG of
/// `image_seed(seed, i)`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRequest {
    pub prompt: String,
    pub n: usize,
    pub seed: u64,
    pub params: SamplingParams,
    pub partial_images: usize,
}

impl ImageAsk {
    /// Checks every field; `max_n` is the caller's batch limit (at most
    /// [`MAX_IMAGES_PER_REQUEST`] for a server).
    pub fn validate(self, max_n: usize) -> Result<ImageRequest, Invalid> {
        self.validate_limited(max_n, None)
    }

    /// As [`ImageAsk::validate`], naming where a lower `max_n` comes from (e.g. a server flag).
    pub fn validate_limited(self, max_n: usize, max_n_source: Option<&str>) -> Result<ImageRequest, Invalid> {
        check_prompt(&self.prompt)?;
        let n = self.n.unwrap_or(1);
        if n < 1 || n > max_n as i64 {
            let source = max_n_source.map(|s| format!(" ({s})")).unwrap_or_default();
            return Err(Invalid::new(Field::N, format!("must be between 1 and {max_n}{source}; got {n}")));
        }
        let partial_images = self.partial_images.unwrap_or(0);
        if !(0..=MAX_PARTIAL_IMAGES as i64).contains(&partial_images) {
            return Err(Invalid::new(
                Field::PartialImages,
                format!("must be between 0 and {MAX_PARTIAL_IMAGES}; got {partial_images}"),
            ));
        }
        let top_k = match self.top_k {
            Some(k) if k < 1 => return Err(Invalid::new(Field::TopK, format!("must be at least 1; got {k}"))),
            k => k.map(|k| k as usize),
        };
        let params = SamplingParams {
            cfg_weight: self.cfg_weight.unwrap_or(DEFAULT_CFG_WEIGHT),
            temperature: self.temperature.unwrap_or(DEFAULT_IMAGE_TEMPERATURE),
            top_k,
            top_p: self.top_p,
            greedy: self.greedy,
        };
        params.validate()?;
        Ok(ImageRequest {
            prompt: self.prompt,
            n: n as usize,
            seed: self.seed.unwrap_or_else(random_seed),
            params,
            partial_images: partial_images as usize,
        })
    }
}

/// The sampling of a text answer as asked.
#[derive(Debug, Clone, Default)]
pub struct TextAsk {
    /// Default 0 (greedy, as the reference).
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    /// Random when absent and sampling; 0 when greedy (unused then).
    pub seed: Option<i64>,
    /// Most tokens to generate; default [`DEFAULT_MAX_NEW_TOKENS`] or what fits.
    pub max_tokens: Option<i64>,
    /// Stop sequences (at most [`MAX_STOP_SEQUENCES`], each 1 to [`MAX_STOP_CHARS`] characters).
    pub stop: Vec<String>,
    /// Report log-probabilities.
    pub logprobs: Option<bool>,
    /// 0 to [`MAX_TOP_LOGPROBS`] alternatives per token (with `logprobs`).
    pub top_logprobs: Option<i64>,
    pub frequency_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub repetition_penalty: Option<f32>,
    /// Structured output (checked when it is compiled, where the tokenizer is known).
    pub constraint: Option<ConstraintSpec>,
}

impl TextAsk {
    /// Checks every field; `context_length` bounds `max_tokens` (the prompt is checked against
    /// the rest when it is tokenized).
    pub fn validate(self, context_length: usize) -> Result<TextParams, Invalid> {
        let temperature = self.temperature.unwrap_or(DEFAULT_TEXT_TEMPERATURE);
        if !(0.0..=MAX_TEXT_TEMPERATURE).contains(&temperature) {
            return Err(Invalid::new(
                Field::Temperature,
                format!("must be between 0 and {MAX_TEXT_TEMPERATURE}; got {temperature}"),
            ));
        }
        let max_new_tokens = match self.max_tokens {
            None => None,
            Some(n) if n >= 1 && n as u64 <= context_length as u64 => Some(n as usize),
            Some(n) => {
                return Err(Invalid::new(
                    Field::MaxTokens,
                    format!("must be between 1 and {context_length} (the model's context length); got {n}"),
                ))
            }
        };
        let sampling = SamplingParams { temperature, top_p: self.top_p, ..SamplingParams::default() };
        sampling.validate()?;
        let seed = match self.seed {
            None if sampling.is_greedy() => 0,
            seed => seed_or_random(seed)?,
        };
        check_stop(&self.stop)?;
        let logprobs = match (self.logprobs.unwrap_or(false), self.top_logprobs) {
            (false, None) => None,
            (false, Some(_)) => return Err(Invalid::new(Field::TopLogprobs, "needs `logprobs: true`")),
            (true, k) => match k.unwrap_or(0) {
                k @ 0..=MAX_TOP_LOGPROBS_I64 => Some(k as usize),
                k => {
                    let why = format!("must be between 0 and {MAX_TOP_LOGPROBS}; got {k}");
                    return Err(Invalid::new(Field::TopLogprobs, why));
                }
            },
        };
        let neutral = Penalties::default();
        let penalties = Penalties {
            repetition: self.repetition_penalty.unwrap_or(neutral.repetition),
            frequency: self.frequency_penalty.unwrap_or(neutral.frequency),
            presence: self.presence_penalty.unwrap_or(neutral.presence),
        };
        penalties.validate()?;
        let constraint = self.constraint;
        let default_max_new_tokens = DEFAULT_MAX_NEW_TOKENS;
        Ok(TextParams {
            max_new_tokens,
            default_max_new_tokens,
            sampling,
            seed,
            stop: self.stop,
            logprobs,
            penalties,
            constraint,
        })
    }
}

const MAX_TOP_LOGPROBS_I64: i64 = MAX_TOP_LOGPROBS as i64;

/// Stop sequences: at most [`MAX_STOP_SEQUENCES`], none empty or over [`MAX_STOP_CHARS`].
fn check_stop(stop: &[String]) -> Result<(), Invalid> {
    if stop.len() > MAX_STOP_SEQUENCES {
        let why = format!("must hold at most {MAX_STOP_SEQUENCES} sequences; got {}", stop.len());
        return Err(Invalid::new(Field::Stop, why));
    }
    for s in stop {
        let chars = s.chars().count();
        if chars == 0 || chars > MAX_STOP_CHARS {
            let why = format!("each sequence must have 1 to {MAX_STOP_CHARS} characters; got {chars}");
            return Err(Invalid::new(Field::Stop, why));
        }
    }
    Ok(())
}

/// An image prompt: not blank, at most [`MAX_PROMPT_CHARS`] characters.
pub fn check_prompt(prompt: &str) -> Result<(), Invalid> {
    if prompt.trim().is_empty() {
        return Err(Invalid::new(Field::Prompt, "must not be empty"));
    }
    let chars = prompt.chars().count();
    if chars > MAX_PROMPT_CHARS {
        return Err(Invalid::new(Field::Prompt, format!("must be at most {MAX_PROMPT_CHARS} characters; got {chars}")));
    }
    Ok(())
}

/// A seed as given (not negative), or a random one.
pub fn seed_or_random(seed: Option<i64>) -> Result<u64, Invalid> {
    match seed {
        Some(s) if s < 0 => Err(Invalid::new(Field::Seed, format!("must not be negative; got {s}"))),
        Some(s) => Ok(s as u64),
        None => Ok(random_seed()),
    }
}

/// A random seed, exactly representable as a JSON number (53 bits).
pub fn random_seed() -> u64 {
    rand::random::<u64>() >> 11
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(prompt: &str) -> ImageAsk {
        ImageAsk { prompt: prompt.into(), seed: Some(1), ..Default::default() }
    }

    #[test]
    fn image_defaults_are_the_reference_ones() {
        let r = ask("a cat").validate(16).unwrap();
        assert_eq!((r.n, r.seed, r.partial_images), (1, 1, 0));
        assert_eq!(r.params, SamplingParams::default());
        assert_eq!((r.params.cfg_weight, r.params.temperature), (DEFAULT_CFG_WEIGHT, DEFAULT_IMAGE_TEMPERATURE));
    }

    #[test]
    fn each_field_outside_its_limit_is_named() {
        let cases: Vec<(ImageAsk, Field)> = vec![
            (ask("  "), Field::Prompt),
            (ask(&"x".repeat(MAX_PROMPT_CHARS + 1)), Field::Prompt),
            (ImageAsk { n: Some(0), ..ask("a") }, Field::N),
            (ImageAsk { n: Some(5), ..ask("a") }, Field::N),
            (ImageAsk { cfg_weight: Some(-1.0), ..ask("a") }, Field::CfgWeight),
            (ImageAsk { cfg_weight: Some(f32::NAN), ..ask("a") }, Field::CfgWeight),
            (ImageAsk { temperature: Some(11.0), ..ask("a") }, Field::Temperature),
            (ImageAsk { top_k: Some(0), ..ask("a") }, Field::TopK),
            (ImageAsk { top_p: Some(0.0), ..ask("a") }, Field::TopP),
            (ImageAsk { partial_images: Some(4), ..ask("a") }, Field::PartialImages),
        ];
        for (a, field) in cases {
            let e = a.clone().validate(4).expect_err(&format!("{a:?}"));
            assert_eq!(e.field, field, "{e}");
            assert!(e.reason.contains("got") || e.reason.contains("empty"), "the reason names the value: {e}");
        }
    }

    #[test]
    fn text_seeds_and_limits() {
        assert_eq!(TextAsk::default().validate(4096).unwrap().seed, 0, "greedy needs no seed");
        let e = TextAsk { seed: Some(-3), temperature: Some(0.7), ..Default::default() }.validate(4096).unwrap_err();
        assert_eq!(e.field, Field::Seed, "a negative seed is refused, not wrapped around");
        let e = TextAsk { seed: Some(-3), ..Default::default() }.validate(4096).unwrap_err();
        assert_eq!(e.field, Field::Seed, "even when greedy");
        let e = TextAsk { max_tokens: Some(4097), ..Default::default() }.validate(4096).unwrap_err();
        assert_eq!(e.field, Field::MaxTokens);
        let e = TextAsk { temperature: Some(2.5), ..Default::default() }.validate(4096).unwrap_err();
        assert_eq!(e.field, Field::Temperature);
        let p = TextAsk {
            temperature: Some(0.5),
            seed: Some(9),
            max_tokens: Some(7),
            top_p: Some(0.9),
            ..Default::default()
        }
        .validate(4096)
        .unwrap();
        assert_eq!((p.seed, p.max_new_tokens, p.sampling.temperature, p.sampling.top_p), (9, Some(7), 0.5, Some(0.9)));
        assert_eq!(TextAsk::default().validate(4096).unwrap(), TextParams::default(), "the defaults are neutral");
    }

    #[test]
    fn stop_logprobs_and_penalties_are_checked() {
        let stop = |v: &[&str]| TextAsk { stop: v.iter().map(|s| s.to_string()).collect(), ..Default::default() };
        assert_eq!(stop(&["a", "b", "c", "d"]).validate(64).unwrap().stop.len(), 4);
        assert_eq!(stop(&["a", "b", "c", "d", "e"]).validate(64).unwrap_err().field, Field::Stop);
        assert_eq!(stop(&[""]).validate(64).unwrap_err().field, Field::Stop);
        let lp = |l: Option<bool>, k: Option<i64>| {
            TextAsk { logprobs: l, top_logprobs: k, ..Default::default() }.validate(64)
        };
        assert_eq!(lp(Some(true), None).unwrap().logprobs, Some(0));
        assert_eq!(lp(Some(true), Some(20)).unwrap().logprobs, Some(20));
        assert_eq!(lp(Some(false), None).unwrap().logprobs, None);
        assert_eq!(lp(Some(true), Some(21)).unwrap_err().field, Field::TopLogprobs);
        assert_eq!(lp(None, Some(2)).unwrap_err().field, Field::TopLogprobs);
        let e = TextAsk { presence_penalty: Some(3.0), ..Default::default() }.validate(64).unwrap_err();
        assert_eq!(e.field, Field::PresencePenalty);
        let p = TextAsk { frequency_penalty: Some(0.5), repetition_penalty: Some(1.2), ..Default::default() };
        let p = p.validate(64).unwrap().penalties;
        assert_eq!((p.frequency, p.presence, p.repetition), (0.5, 0.0, 1.2));
    }

    #[test]
    fn answers_have_their_own_seed_streams() {
        let p = TextParams { seed: 5, ..Default::default() };
        assert_eq!(p.answer(0), p, "the first answer is the request alone");
        assert_ne!(p.answer(1).seed, p.answer(2).seed);
        assert_eq!(p.answer(2).seed, image_seed(5, 2));
    }
}
