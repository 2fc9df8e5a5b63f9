//! How far a model's distributions are from a reference model's: teacher-forced traces of
//! log-probabilities along one fixed sequence, and their divergence (mean and p99 per-step
//! KL(reference ‖ other), top-1 agreement). Used to measure quantization (`janus bench
//! --quality`) and by the tests that bound it.

use candle_core::{DType, Tensor, D};

use crate::error::{Error, Result};
use crate::generate::T2iBatch;
use crate::model::Janus;
use crate::modules::llm::{last_position, LlmCache};
use crate::sampling::SamplingParams;
use crate::text::conversation::Conversation;

/// Log-probabilities, one vector per step.
pub type Trace = Vec<Vec<f32>>;

/// The divergence of one trace from a reference trace.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Divergence {
    pub steps: usize,
    /// Mean over steps of KL(reference ‖ other), in nats.
    pub mean_kl: f64,
    /// 99th percentile of the per-step KL.
    pub p99_kl: f64,
    pub max_kl: f64,
    /// Share of steps whose most likely token is the same.
    pub top1_agreement: f64,
}

/// Compares `other` with `reference`, step by step.
pub fn divergence(reference: &[Vec<f32>], other: &[Vec<f32>]) -> Result<Divergence> {
    if reference.len() != other.len() || reference.is_empty() {
        return Err(Error::InvalidInput(format!("traces of {} and {} steps", reference.len(), other.len())));
    }
    let argmax = |v: &[f32]| v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i);
    let mut kls = Vec::with_capacity(reference.len());
    let mut agree = 0usize;
    for (p, q) in reference.iter().zip(other) {
        if p.len() != q.len() {
            return Err(Error::InvalidInput(format!("distributions of {} and {} tokens", p.len(), q.len())));
        }
        let kl: f64 = p
            .iter()
            .zip(q)
            .filter(|(lp, _)| lp.is_finite())
            .map(|(&lp, &lq)| (lp as f64).exp() * (lp as f64 - lq as f64))
            .sum();
        kls.push(kl.max(0.0));
        agree += usize::from(argmax(p) == argmax(q));
    }
    let n = kls.len();
    let mean_kl = kls.iter().sum::<f64>() / n as f64;
    kls.sort_by(f64::total_cmp);
    let p99 = kls[((n as f64 * 0.99).ceil() as usize).clamp(1, n) - 1];
    Ok(Divergence { steps: n, mean_kl, p99_kl: p99, max_kl: kls[n - 1], top1_agreement: agree as f64 / n as f64 })
}

/// The guided log-probabilities `log softmax(u + w·(c − u))` (temperature 1) of each image in
/// raw image-token logits `[2N, V]` (rows cond, uncond per image).
pub fn guided_log_probs(logits: &Tensor, cfg_weight: f32) -> Result<Trace> {
    let (rows, v) = logits.dims2()?;
    let pairs = logits.to_dtype(DType::F32)?.reshape((rows / 2, 2, v))?;
    let (cond, uncond) = (pairs.narrow(1, 0, 1)?.squeeze(1)?, pairs.narrow(1, 1, 1)?.squeeze(1)?);
    log_softmax_rows(&(&uncond + ((cond - &uncond)? * cfg_weight as f64)?)?)
}

fn log_softmax_rows(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    let x = logits.to_dtype(DType::F32)?;
    let max = x.max_keepdim(D::Minus1)?;
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(shifted.broadcast_sub(&lse)?.to_vec2::<f32>()?)
}

impl Janus {
    /// The guided image-token distributions (CFG weight `cfg_weight`, temperature 1) at every
    /// step of one image of `prompt` whose tokens are forced to `tokens`.
    pub fn t2i_trace(&self, prompt: &str, cfg_weight: f32, tokens: &[u32]) -> Result<Trace> {
        let params = SamplingParams { cfg_weight, greedy: true, ..Default::default() };
        let mut batch = T2iBatch::new(self, self.t2i_jobs(prompt, 1, 0, params)?)?;
        if tokens.len() != batch.total_steps() {
            return Err(Error::InvalidInput(format!(
                "{} tokens for an image of {}",
                tokens.len(),
                batch.total_steps()
            )));
        }
        let mut trace = Vec::with_capacity(tokens.len());
        for &t in tokens {
            trace.extend(guided_log_probs(&batch.step_forced(&[t])?.logits, cfg_weight)?);
        }
        Ok(trace)
    }

    /// The text distributions at every position of `answer` (its tokens forced) after the
    /// conversation's prompt: entry `i` is the prediction of `answer[i]`.
    pub fn text_trace(&self, conv: &Conversation, answer: &[u32]) -> Result<Trace> {
        let prompt = self.prepare(conv)?;
        let embeds = self.prompt_embeds(&prompt)?;
        let mut cache =
            LlmCache::new(&self.cfg.llm, vec![0], prompt.ids.len() + answer.len(), self.dtype(), self.device())?;
        let mut trace = Vec::with_capacity(answer.len());
        let mut next = embeds;
        for (i, &t) in answer.iter().enumerate() {
            let hidden = last_position(&self.llm.forward(&next, &mut cache)?)?;
            trace.extend(log_softmax_rows(&self.llm.lm_logits(&hidden)?)?);
            if i + 1 < answer.len() {
                next = self.llm.embed(&Tensor::new(&[[t]], self.device())?)?;
            }
        }
        Ok(trace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divergence_of_a_trace_from_itself_is_zero() {
        let p = vec![vec![-0.5f32, -2.0, f32::NEG_INFINITY], vec![-1.0, -0.5, -3.0]];
        let d = divergence(&p, &p).unwrap();
        assert_eq!((d.steps, d.mean_kl, d.top1_agreement), (2, 0.0, 1.0));
    }

    #[test]
    fn divergence_matches_a_hand_computed_kl() {
        let (a, b) = ([0.5f32, 0.5], [0.9f32, 0.1]);
        let ln = |v: [f32; 2]| v.iter().map(|x| x.ln()).collect::<Vec<_>>();
        let d = divergence(&[ln(a)], &[ln(b)]).unwrap();
        let want = 0.5 * (0.5f64 / 0.9).ln() + 0.5 * (0.5f64 / 0.1).ln();
        assert!((d.mean_kl - want).abs() < 1e-6, "{} vs {want}", d.mean_kl);
        assert_eq!(d.p99_kl, d.mean_kl);
        assert!(divergence(&[ln(a)], &[]).is_err());
    }
}
