//! The host draw: [`Sampler`] picks one token at a time from f32 logits on the CPU (text
//! answers, and the image rows of a batch that ask for top-k / top-p).
//!
//! Follows the reference's order (guidance, temperature, then transformers' top-k and top-p
//! warpers, softmax, multinomial) with an inverse-CDF draw summed in f64.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::SamplingParams;

/// Picks tokens one step at a time with its own RNG (one per image, or per text reply).
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
    scratch: Vec<f32>,
}

impl Sampler {
    pub fn new(params: SamplingParams, seed: u64) -> Self {
        Self { params, rng: ChaCha8Rng::seed_from_u64(seed), scratch: Vec::new() }
    }

    /// Picks the next image token from the conditional and unconditional logits of one image.
    pub fn sample(&mut self, cond: &[f32], uncond: &[f32]) -> u32 {
        let w = self.params.cfg_weight;
        let mut guided = std::mem::take(&mut self.scratch);
        guided.clear();
        guided.extend(cond.iter().zip(uncond).map(|(&c, &u)| u + w * (c - u)));
        let t = self.pick(&mut guided);
        self.scratch = guided;
        t
    }

    /// Picks the next token from plain logits (text decoding; no guidance).
    pub fn sample_logits(&mut self, logits: &[f32]) -> u32 {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        buf.extend_from_slice(logits);
        let t = self.pick(&mut buf);
        self.scratch = buf;
        t
    }

    fn pick(&mut self, logits: &mut [f32]) -> u32 {
        // A NaN (e.g. -inf - -inf) must never win or poison the softmax: treat it as -inf.
        logits.iter_mut().filter(|x| x.is_nan()).for_each(|x| *x = f32::NEG_INFINITY);
        if self.params.is_greedy() {
            return argmax(logits) as u32;
        }
        let t = self.params.temperature;
        logits.iter_mut().for_each(|x| *x /= t);
        if let Some(k) = self.params.top_k {
            keep_top_k(logits, k);
        }
        softmax_in_place(logits);
        if let Some(p) = self.params.top_p {
            keep_top_p(logits, p);
        }
        sample_multinomial(logits, self.rng.random::<f64>()) as u32
    }
}

/// Index of the first maximum (as `torch.argmax`).
pub fn argmax(xs: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best
}

fn softmax_in_place(xs: &mut [f32]) {
    let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for x in xs.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    xs.iter_mut().for_each(|x| *x /= sum);
}

/// Sets every logit below the k-th largest to -inf (ties at the threshold are kept).
fn keep_top_k(logits: &mut [f32], k: usize) {
    if k >= logits.len() {
        return;
    }
    let mut sorted = logits.to_vec();
    sorted.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    let threshold = sorted[k - 1];
    logits.iter_mut().filter(|x| **x < threshold).for_each(|x| *x = f32::NEG_INFINITY);
}

/// Zeroes all probabilities outside the nucleus of mass `p` and renormalises; the most likely
/// token always stays.
fn keep_top_p(probs: &mut [f32], p: f32) {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_unstable_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    let mut cum = 0f32;
    let mut cut = order.len();
    for (rank, &i) in order.iter().enumerate() {
        cum += probs[i];
        if cum >= p {
            cut = rank + 1;
            break;
        }
    }
    for &i in &order[cut..] {
        probs[i] = 0.0;
    }
    let sum: f32 = probs.iter().sum();
    probs.iter_mut().for_each(|x| *x /= sum);
}

/// Inverse-CDF draw with `u` uniform in [0, 1): the first index whose cumulative probability
/// exceeds `u · total`, or the last one with a positive probability where rounding leaves none.
pub(super) fn sample_multinomial(probs: &[f32], u: f64) -> usize {
    let total: f64 = probs.iter().map(|&p| p as f64).sum();
    let target = u * total;
    let mut cum = 0f64;
    let mut last_nonzero = 0;
    for (i, &p) in probs.iter().enumerate() {
        if p > 0.0 {
            last_nonzero = i;
            cum += p as f64;
            if cum > target {
                return i;
            }
        }
    }
    last_nonzero
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cfg_combines_as_reference() {
        // guided = u + w (c - u): with w = 5, cond favours 1 and uncond favours 0.
        let mut s = Sampler::new(SamplingParams { greedy: true, ..Default::default() }, 0);
        assert_eq!(s.sample(&[0.0, 1.0, 0.5], &[1.0, 0.0, 0.5]), 1);
        // w = 0 → unconditional only.
        let mut s = Sampler::new(SamplingParams { greedy: true, cfg_weight: 0.0, ..Default::default() }, 0);
        assert_eq!(s.sample(&[0.0, 1.0, 0.5], &[1.0, 0.0, 0.5]), 0);
    }

    #[test]
    fn argmax_takes_first_maximum() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
    }

    #[test]
    fn top_k_one_is_greedy() {
        let p = SamplingParams { top_k: Some(1), ..Default::default() };
        for seed in 0..20 {
            let mut s = Sampler::new(p, seed);
            assert_eq!(s.sample(&[0.1, 0.3, 0.2], &[0.1, 0.3, 0.2]), 1);
        }
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        let mut probs = vec![0.5, 0.3, 0.15, 0.05];
        keep_top_p(&mut probs, 0.7);
        assert_eq!(probs[2], 0.0);
        assert_eq!(probs[3], 0.0);
        assert!((probs[0] + probs[1] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn same_seed_same_draws_and_distribution_is_sane() {
        let logits = [0.0f32, (3.0f32).ln(), 0.0, -1e9];
        let draw = |seed| {
            let mut s = Sampler::new(SamplingParams { cfg_weight: 1.0, ..Default::default() }, seed);
            (0..4000).map(|_| s.sample(&logits, &logits)).collect::<Vec<_>>()
        };
        assert!(draw(7) == draw(7), "same seed, different draws");
        assert!(draw(7) != draw(8), "different seeds, same draws");
        let d = draw(7);
        let frac1 = d.iter().filter(|&&t| t == 1).count() as f64 / d.len() as f64;
        assert!((frac1 - 0.6).abs() < 0.03, "{frac1}");
        assert!(!d.contains(&3));
    }

    #[test]
    fn nan_logits_never_win() {
        let inf = f32::NEG_INFINITY;
        let mut s = Sampler::new(SamplingParams { greedy: true, ..Default::default() }, 0);
        assert_eq!(s.sample(&[inf, 0.5, 0.0], &[inf, 0.0, 0.0]), 1);
        let mut s = Sampler::new(SamplingParams::default(), 0);
        for _ in 0..100 {
            assert_ne!(s.sample(&[inf, 0.5, 0.0], &[inf, 0.0, 0.0]), 0);
        }
    }

    /// A temperature so small that logits / T overflows (1e-40, a subnormal f32) is greedy: the
    /// argmax, not a draw from a softmax of infinities.
    #[test]
    fn vanishing_temperature_picks_the_argmax() {
        let logits = [0.5f32, 2.0, -1.0, 1.9, 0.0];
        let cond = [0.1f32, 0.4, 0.3, 0.2, 0.0];
        for seed in 0..50 {
            let p = SamplingParams { temperature: 1e-40, ..Default::default() };
            let mut s = Sampler::new(p, seed);
            assert_eq!(s.sample_logits(&logits), 1, "seed {seed}");
            // guided = uncond + 5 (cond − uncond): 2.5 at index 1 is the largest
            assert_eq!(s.sample(&cond, &[0.0; 5]), 1, "seed {seed}");
        }
    }
}
