//! Classifier-free guidance and token sampling on f32 logits.
//!
//! Reference: deepseek-ai/Janus `generation_inference.py` (guided = uncond + w·(cond − uncond),
//! softmax(guided / T), multinomial; no top-k / top-p) and transformers' logits warpers for the
//! optional top-k / top-p (applied after temperature, in that order). Every image has its own
//! RNG, seeded from the request seed and the image index, so an image depends only on its seed.
//!
//! Two implementations of the same rules: [`Sampler`] on the host (text decoding, and image rows
//! with top-k / top-p, which need a sort) and [`BatchSampler`], which keeps an image batch's
//! logits and picked tokens on the model's device so a decode step needs no host round trip.

use candle_core::{DType, Device, IndexOp, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Field, Invalid, Result};
use crate::limits::{
    DEFAULT_CFG_WEIGHT, DEFAULT_IMAGE_TEMPERATURE, GREEDY_BELOW_TEMPERATURE, MAX_CFG_WEIGHT, MAX_IMAGE_TEMPERATURE,
};

/// How image tokens are chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// CFG weight w (the reference default is 5).
    pub cfg_weight: f32,
    /// Softmax temperature (reference default 1). Below `GREEDY_BELOW_TEMPERATURE` (0 included)
    /// the pick is greedy.
    pub temperature: f32,
    /// Keep only the k most likely tokens (off by default, as in the reference).
    pub top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability reaches p (off by default).
    pub top_p: Option<f32>,
    /// Argmax instead of sampling (for tests and parity with transformers' `do_sample=False`).
    pub greedy: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            cfg_weight: DEFAULT_CFG_WEIGHT,
            temperature: DEFAULT_IMAGE_TEMPERATURE,
            top_k: None,
            top_p: None,
            greedy: false,
        }
    }
}

impl SamplingParams {
    /// Checks each value against [`crate::limits`], naming the field at fault.
    pub fn validate(&self) -> std::result::Result<(), Invalid> {
        if !(0.0..=MAX_CFG_WEIGHT).contains(&self.cfg_weight) {
            let why = format!("must be between 0 and {MAX_CFG_WEIGHT}; got {}", self.cfg_weight);
            return Err(Invalid::new(Field::CfgWeight, why));
        }
        if !(0.0..=MAX_IMAGE_TEMPERATURE).contains(&self.temperature) {
            let why = format!("must be between 0 and {MAX_IMAGE_TEMPERATURE}; got {}", self.temperature);
            return Err(Invalid::new(Field::Temperature, why));
        }
        if self.top_k == Some(0) {
            return Err(Invalid::new(Field::TopK, "must be at least 1; got 0"));
        }
        if let Some(p) = self.top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
            return Err(Invalid::new(Field::TopP, format!("must be in (0, 1]; got {p}")));
        }
        Ok(())
    }

    /// Argmax instead of a draw: asked for, or a temperature below
    /// [`GREEDY_BELOW_TEMPERATURE`] (0 included), where logits / T could overflow.
    pub fn is_greedy(&self) -> bool {
        self.greedy || self.temperature < GREEDY_BELOW_TEMPERATURE
    }
}

/// The RNG seed of image `index` of a request with `seed` (a SplitMix64 mix, so nearby seeds
/// and indices give unrelated streams).
pub fn image_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(0x632B_E59B_D9B4_E019);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

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

/// Inverse-CDF draw with `u` uniform in [0, 1).
fn sample_multinomial(probs: &[f32], u: f64) -> usize {
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

/// How one image of a [`BatchSampler`] picks its tokens.
enum RowPicker {
    /// On the device: greedy (no RNG) or an inverse-CDF draw with this RNG's f32 uniforms.
    Device(Option<ChaCha8Rng>),
    /// On the host, for top-k / top-p.
    Host(Sampler),
}

struct Row {
    picker: RowPicker,
    params: SamplingParams,
}

/// Guidance and sampling for a batch of images as tensor ops on the logits' device: each step
/// uploads one uniform per sampled image and returns the picked tokens as a device tensor.
///
/// Same rules as [`Sampler`]: NaN counts as -inf, greedy rows take the first maximum, sampled
/// rows take the first token whose cumulative probability exceeds `u · total` in
/// softmax(guided / T). Rows with top-k / top-p are handed to a host [`Sampler`] (only their
/// logits are copied). Device rows draw f32 uniforms and sum in f32, so their tokens can differ
/// from the host's f64 draw only where `u` falls within rounding of a token boundary.
pub struct BatchSampler {
    rows: Vec<Row>,
    columns: Columns,
    cdf: InverseCdf,
    neg_inf: Tensor,
}

/// Per image, `[N, 1]` on the device: CFG weight, temperature (1 where unused), greedy and host
/// flags (u8).
struct Columns {
    weight: Tensor,
    temperature: Tensor,
    greedy: Tensor,
    host: Tensor,
}

impl Columns {
    fn new(rows: &[Row], dev: &Device) -> Result<Self> {
        let column = |f: &dyn Fn(&Row) -> f32| Tensor::from_iter(rows.iter().map(f), dev)?.unsqueeze(1);
        let flag = |f: fn(&RowPicker) -> bool| column(&|r| f32::from(f(&r.picker)))?.to_dtype(DType::U8);
        Ok(Self {
            weight: column(&|r| r.params.cfg_weight)?,
            temperature: column(&|r| if is_sampled(&r.picker) { r.params.temperature } else { 1.0 })?,
            greedy: flag(|p| matches!(p, RowPicker::Device(None)))?,
            host: flag(|p| matches!(p, RowPicker::Host(_)))?,
        })
    }
}

fn is_sampled(p: &RowPicker) -> bool {
    matches!(p, RowPicker::Device(Some(_)))
}

impl BatchSampler {
    /// One image per `(params, seed)` (at least one), over `vocab` image tokens on `dev`.
    pub fn new(images: impl IntoIterator<Item = (SamplingParams, u64)>, vocab: usize, dev: &Device) -> Result<Self> {
        let rows: Vec<Row> = (images.into_iter())
            .map(|(params, seed)| {
                let picker = if params.top_k.is_some() || params.top_p.is_some() {
                    RowPicker::Host(Sampler::new(params, seed))
                } else {
                    RowPicker::Device((!params.is_greedy()).then(|| ChaCha8Rng::seed_from_u64(seed)))
                };
                Row { picker, params }
            })
            .collect();
        if rows.is_empty() {
            return Err(Error::InvalidInput("no images to sample".into()));
        }
        Ok(Self {
            columns: Columns::new(&rows, dev)?,
            rows,
            cdf: InverseCdf::new(vocab, dev)?,
            neg_inf: Tensor::new(&[[f32::NEG_INFINITY]], dev)?,
        })
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Keeps only the images at `keep` (at least one; distinct, in range), in that order.
    pub fn retain(&mut self, keep: &[usize]) -> Result<()> {
        let mut seen = vec![false; self.rows.len()];
        for &i in keep {
            if i >= seen.len() || std::mem::replace(&mut seen[i], true) {
                return Err(Error::InvalidInput(format!("image index {i} is out of range or repeated")));
            }
        }
        if keep.is_empty() {
            return Err(Error::InvalidInput("at least one image must stay in the batch".into()));
        }
        let mut rows: Vec<Option<Row>> = std::mem::take(&mut self.rows).into_iter().map(Some).collect();
        self.rows = keep.iter().map(|&i| rows[i].take().expect("indices checked distinct")).collect();
        self.columns = Columns::new(&self.rows, self.neg_inf.device())?;
        Ok(())
    }

    /// Picks one token per image from f32 logits `[2N, V]` (rows cond, uncond per image);
    /// returns them as u32 `[N]` on the logits' device.
    pub fn pick(&mut self, logits: &Tensor) -> Result<Tensor> {
        let (rows, v) = logits.dims2()?;
        let n = self.rows.len();
        if rows != 2 * n {
            return Err(Error::InvalidInput(format!("{rows} logit rows for {n} images")));
        }
        let dev = logits.device();
        let count = |f: fn(&RowPicker) -> bool| self.rows.iter().filter(|r| f(&r.picker)).count();
        let sampled = count(is_sampled);
        let greedy = count(|p| matches!(p, RowPicker::Device(None)));

        let pairs = logits.reshape((n, 2, v))?;
        let (cond, uncond) = (pairs.i((.., 0))?, pairs.i((.., 1))?);
        let guided = (&uncond + (cond - &uncond)?.broadcast_mul(&self.columns.weight)?)?;
        // -inf first: both backends' maximum then replace a NaN by -inf.
        let guided = self.neg_inf.broadcast_maximum(&guided)?;

        let mut picked: Option<Tensor> = None;
        if sampled > 0 {
            let u: Vec<f32> = (self.rows.iter_mut())
                .map(|r| match &mut r.picker {
                    RowPicker::Device(Some(rng)) => rng.random::<f32>(),
                    _ => 0.0,
                })
                .collect();
            let u = Tensor::from_vec(u, (n, 1), dev)?;
            let probs = candle_nn::ops::softmax_last_dim(&guided.broadcast_div(&self.columns.temperature)?)?;
            picked = Some(self.cdf.sample(&probs, &u)?);
        }
        if greedy > 0 {
            let best = guided.argmax_keepdim(1)?;
            picked = Some(match picked {
                Some(s) => self.columns.greedy.where_cond(&best, &s)?,
                None => best,
            });
        }
        if sampled + greedy < n {
            picked = Some(self.pick_on_host(logits, picked)?);
        }
        Ok(picked.expect("every row is greedy, sampled or on the host").squeeze(1)?)
    }

    /// Picks the host rows' tokens from their copied logits and merges them into `device_picks`.
    fn pick_on_host(&mut self, logits: &Tensor, device_picks: Option<Tensor>) -> Result<Tensor> {
        let host_rows: Vec<u32> = (self.rows.iter().enumerate())
            .filter(|(_, r)| matches!(r.picker, RowPicker::Host(_)))
            .flat_map(|(i, _)| [2 * i as u32, 2 * i as u32 + 1])
            .collect();
        let idx = Tensor::new(host_rows.as_slice(), logits.device())?;
        let copied = logits.index_select(&idx, 0)?.to_vec2::<f32>()?;
        let mut pairs = copied.chunks(2);
        let mut picks = vec![0u32; self.rows.len()];
        for (row, t) in self.rows.iter_mut().zip(picks.iter_mut()) {
            if let RowPicker::Host(s) = &mut row.picker {
                if let Some([c, u]) = pairs.next() {
                    *t = s.sample(c, u);
                }
            }
        }
        let n = picks.len();
        let host = Tensor::from_vec(picks, (n, 1), logits.device())?;
        Ok(match device_picks {
            Some(d) => self.columns.host.where_cond(&host, &d)?,
            None => host,
        })
    }
}

/// Inverse-CDF draws on the device in two levels: the vocabulary is cut into blocks of about
/// √V tokens; prefix sums over the blocks and then within the chosen block are matmuls with a
/// triangular matrix of ones (candle has no scan kernel).
struct InverseCdf {
    block: usize,
    /// `[B, B]` and `[C, C]`, ones where row ≤ column: `x · tri` is the inclusive prefix sum.
    tri_blocks: Tensor,
    tri_cols: Tensor,
}

impl InverseCdf {
    fn new(vocab: usize, dev: &Device) -> Result<Self> {
        let block = ((vocab as f64).sqrt().ceil() as usize).max(1);
        let blocks = vocab.div_ceil(block).max(1);
        Ok(Self { block, tri_blocks: upper_ones(blocks, dev)?, tri_cols: upper_ones(block, dev)? })
    }

    /// For probabilities `[N, V]` and uniforms `u` `[N, 1]`: per row, the first index whose
    /// cumulative probability exceeds `u · total`, as u32 `[N, 1]`.
    fn sample(&self, probs: &Tensor, u: &Tensor) -> Result<Tensor> {
        let (n, v) = probs.dims2()?;
        let (c, b) = (self.block, self.tri_blocks.dim(0)?);
        let probs = if b * c > v { probs.pad_with_zeros(1, 0, b * c - v)? } else { probs.clone() };
        let blocks = probs.reshape((n, b, c))?;
        let block_sums = blocks.sum(2)?;
        let block_cum = block_sums.matmul(&self.tri_blocks)?;
        let target = (u * block_cum.narrow(1, b - 1, 1)?)?;
        let block = count_at_most(&block_cum, &target, b)?;
        let block_idx = block.to_dtype(DType::U32)?;
        let before = (&block_cum - &block_sums)?.gather(&block_idx, 1)?;
        let within = blocks.gather(&block_idx.unsqueeze(2)?.broadcast_as((n, 1, c))?.contiguous()?, 1)?.squeeze(1)?;
        let col = count_at_most(&within.matmul(&self.tri_cols)?, &(target - before)?, c)?;
        Ok(((block * c as f64)? + col)?.to_dtype(DType::U32)?)
    }
}

/// `[n, n]` f32 with ones where row ≤ column.
fn upper_ones(n: usize, dev: &Device) -> Result<Tensor> {
    let v: Vec<f32> = (0..n * n).map(|k| f32::from(k / n <= k % n)).collect();
    Ok(Tensor::from_vec(v, (n, n), dev)?)
}

/// Per row, how many entries of the nondecreasing `cum` `[N, L]` are ≤ `target` `[N, 1]` (the
/// index of the first one above it), capped at `len - 1`, as f32 `[N, 1]`.
fn count_at_most(cum: &Tensor, target: &Tensor, len: usize) -> Result<Tensor> {
    Ok(cum.broadcast_le(target)?.to_dtype(DType::F32)?.sum_keepdim(1)?.minimum((len - 1) as f64)?)
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

    /// Deterministic pseudo-random f32 in [0, 1).
    fn noise(i: usize) -> f32 {
        (image_seed(7, i as u64) >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Logits `[2N, V]` for `n` images: spread out, with some -inf and NaN.
    fn logits(n: usize, v: usize, step: usize) -> Tensor {
        let data: Vec<f32> = (0..2 * n * v)
            .map(|k| match noise(k + 1_000_003 * step) {
                x if x < 0.02 => f32::NEG_INFINITY,
                x if x < 0.03 => f32::NAN,
                x => 12.0 * x,
            })
            .collect();
        Tensor::from_vec(data, (2 * n, v), &Device::Cpu).unwrap()
    }

    #[test]
    fn device_inverse_cdf_matches_the_host_draw() {
        for v in [1usize, 7, 100, 16384] {
            let cdf = InverseCdf::new(v, &Device::Cpu).unwrap();
            let n = 64;
            let probs: Vec<f32> = (0..n * v).map(|k| if noise(k) < 0.3 { 0.0 } else { noise(k + 99) }).collect();
            let probs = Tensor::from_vec(probs, (n, v), &Device::Cpu).unwrap();
            let probs = probs.broadcast_div(&probs.sum_keepdim(1).unwrap().maximum(1e-30).unwrap()).unwrap();
            let u: Vec<f32> = (0..n).map(|i| if i == 0 { 0.0 } else { noise(5 * i + 3) }).collect();
            let got = cdf.sample(&probs, &Tensor::from_slice(&u, (n, 1), &Device::Cpu).unwrap()).unwrap();
            let got: Vec<u32> = got.flatten_all().unwrap().to_vec1().unwrap();
            for (i, row) in probs.to_vec2::<f32>().unwrap().iter().enumerate() {
                if row.iter().all(|&p| p == 0.0) {
                    continue; // an all-zero row has no defined draw
                }
                let want = sample_multinomial(row, u[i] as f64) as u32;
                assert_eq!(got[i], want, "V = {v}, row {i}, u = {}", u[i]);
                assert!(row[got[i] as usize] > 0.0, "V = {v}, row {i}: drew a zero-probability token");
            }
        }
    }

    #[test]
    fn batch_greedy_matches_the_host_sampler() {
        let greedy = SamplingParams { greedy: true, cfg_weight: 3.0, ..Default::default() };
        let (n, v) = (5, 300);
        let mut b = BatchSampler::new((0..n).map(|i| (greedy, i as u64)), v, &Device::Cpu).unwrap();
        for step in 0..4 {
            let l = logits(n, v, step);
            let got: Vec<u32> = b.pick(&l).unwrap().to_vec1().unwrap();
            let rows = l.to_vec2::<f32>().unwrap();
            for (i, &t) in got.iter().enumerate() {
                assert_eq!(t, Sampler::new(greedy, 0).sample(&rows[2 * i], &rows[2 * i + 1]), "row {i}");
            }
        }
    }

    #[test]
    fn batch_rows_do_not_depend_on_their_batch_mates() {
        let kinds = [
            SamplingParams::default(),
            SamplingParams { greedy: true, ..Default::default() },
            SamplingParams { top_k: Some(10), ..Default::default() },
            SamplingParams { temperature: 0.7, cfg_weight: 2.0, ..Default::default() },
            SamplingParams { top_p: Some(0.5), ..Default::default() },
        ];
        let (n, v, steps) = (kinds.len(), 257, 6);
        let run = |rows: &[usize]| -> Vec<Vec<u32>> {
            let mut b = BatchSampler::new(rows.iter().map(|&i| (kinds[i], 40 + i as u64)), v, &Device::Cpu).unwrap();
            let pick_rows: Vec<u32> = rows.iter().flat_map(|&i| [2 * i as u32, 2 * i as u32 + 1]).collect();
            let idx = Tensor::new(pick_rows.as_slice(), &Device::Cpu).unwrap();
            (0..steps)
                .map(|s| b.pick(&logits(n, v, s).index_select(&idx, 0).unwrap()).unwrap().to_vec1().unwrap())
                .collect()
        };
        let all = run(&(0..n).collect::<Vec<_>>());
        for i in 0..n {
            let alone = run(&[i]);
            for s in 0..steps {
                assert_eq!(all[s][i], alone[s][0], "row {i} ({:?}) step {s}", kinds[i]);
            }
        }
    }

    #[test]
    fn batch_draws_follow_the_distribution() {
        let logits = [0.0f32, (3.0f32).ln(), 0.0, -1e9];
        let l = Tensor::new(&[logits, logits], &Device::Cpu).unwrap();
        let p = SamplingParams { cfg_weight: 1.0, ..Default::default() };
        let mut b = BatchSampler::new([(p, 7)], 4, &Device::Cpu).unwrap();
        let d: Vec<u32> = (0..4000).map(|_| b.pick(&l).unwrap().to_vec1::<u32>().unwrap()[0]).collect();
        let frac1 = d.iter().filter(|&&t| t == 1).count() as f64 / d.len() as f64;
        assert!((frac1 - 0.6).abs() < 0.03, "{frac1}");
        assert!(!d.contains(&3));
    }

    #[test]
    fn batch_retain_checks_indices() {
        let p = SamplingParams::default();
        let mut b = BatchSampler::new([(p, 1), (p, 2), (p, 3)], 16, &Device::Cpu).unwrap();
        assert!(b.retain(&[0, 0]).is_err());
        assert!(b.retain(&[3]).is_err());
        assert!(b.retain(&[]).is_err());
        assert_eq!(b.len(), 3, "a refused retain changes nothing");
        b.retain(&[2, 0]).unwrap();
        assert_eq!(b.len(), 2);
        assert!(b.pick(&logits(3, 16, 0)).is_err(), "rows must match the images");
        assert_eq!(b.pick(&logits(2, 16, 0)).unwrap().dims(), &[2]);
    }

    #[test]
    fn image_seeds_differ() {
        assert_ne!(image_seed(1, 0), image_seed(1, 1));
        assert_ne!(image_seed(1, 0), image_seed(2, 0));
        assert_eq!(image_seed(42, 3), image_seed(42, 3));
    }
}
