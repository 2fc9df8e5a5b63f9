//! Log-probabilities of a text answer's tokens, as OpenAI's `logprobs` reports them: the
//! model's log-softmax over its raw logits, before penalties, constraints, temperature and top-p
//! (vLLM's default, `raw_logprobs`), for the picked token and the `top` most likely ones.

/// The log-probability of one picked token and of the most likely alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    pub token: u32,
    pub logprob: f32,
    /// The most likely tokens and their log-probabilities, most likely first (ties by id).
    pub top: Vec<(u32, f32)>,
}

/// The log-softmax normaliser of a row of logits (NaN counts as -inf), in f64.
fn log_sum_exp(logits: &[f32]) -> f64 {
    let finite = |x: &f32| !x.is_nan();
    let max = logits.iter().copied().filter(finite).fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    let sum: f64 = logits.iter().filter(|x| finite(x)).map(|&x| ((x - max) as f64).exp()).sum();
    max as f64 + sum.ln()
}

/// The log-probabilities of token `picked` and of the `top` most likely tokens in `logits`.
pub fn token_logprobs(logits: &[f32], picked: u32, top: usize) -> TokenLogprobs {
    let lse = log_sum_exp(logits);
    let lp = |x: f32| if x.is_nan() { f32::NEG_INFINITY } else { (x as f64 - lse) as f32 };
    let mut best: Vec<u32> = Vec::with_capacity(top + 1);
    if top > 0 {
        // One pass keeping the `top` largest (a short sorted list; top ≤ 20).
        let key = |t: u32| {
            let x = logits[t as usize];
            if x.is_nan() {
                f32::NEG_INFINITY
            } else {
                x
            }
        };
        for t in 0..logits.len() as u32 {
            let x = key(t);
            if best.len() == top && x <= key(best[top - 1]) {
                continue;
            }
            let at = best.partition_point(|&b| key(b) >= x);
            best.insert(at, t);
            best.truncate(top);
        }
    }
    TokenLogprobs {
        token: picked,
        logprob: logits.get(picked as usize).map_or(f32::NEG_INFINITY, |&x| lp(x)),
        top: best.into_iter().map(|t| (t, lp(logits[t as usize]))).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_and_the_most_likely() {
        let logits = [0.0f32, (3.0f32).ln(), f32::NEG_INFINITY, 0.0, f32::NAN];
        let l = token_logprobs(&logits, 0, 2);
        // p = [1/5, 3/5, 0, 1/5, 0]
        assert!((l.logprob - (0.2f32).ln()).abs() < 1e-6);
        assert_eq!(l.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 0], "ties keep the lower id first");
        assert!((l.top[0].1 - (0.6f32).ln()).abs() < 1e-6);
        assert_eq!(token_logprobs(&logits, 2, 0).logprob, f32::NEG_INFINITY);
        assert!(token_logprobs(&logits, 1, 0).top.is_empty());
        assert_eq!(token_logprobs(&logits, 1, 9).top.len(), 5, "at most the vocabulary");
    }
}
