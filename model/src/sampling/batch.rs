//! The device draw for a batch: [`BatchSampler`] guides, tempers and picks one token per image
//! of a batch as tensor ops on the logits' device, so a decode step needs no host round trip
//! (only one uniform per sampled image goes up).
//!
//! Same rules as the host [`Sampler`]; the draw itself is [`InverseCdf`].

use candle_core::{DType, Device, IndexOp, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::inverse_cdf::InverseCdf;
use super::{Sampler, SamplingParams};
use crate::error::{Error, Result};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::tests::noise;

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

    /// A row's picks do not depend on its batch mates or the batch size, on both sides of 16
    /// rows (the prefix-sum matmuls take one row per image).
    #[test]
    fn batch_rows_do_not_depend_on_their_batch_mates() {
        let kinds = [
            SamplingParams::default(),
            SamplingParams { greedy: true, ..Default::default() },
            SamplingParams { top_k: Some(10), ..Default::default() },
            SamplingParams { temperature: 0.7, cfg_weight: 2.0, ..Default::default() },
            SamplingParams { top_p: Some(0.5), ..Default::default() },
        ];
        let kind = |i: usize| kinds[(i + i / 5) % kinds.len()];
        let (most, v, steps) = (17, 16384, 4);
        let all_logits: Vec<Tensor> = (0..steps).map(|s| logits(most, v, s)).collect();
        let run = |rows: &[usize]| -> Vec<Vec<u32>> {
            let mut b = BatchSampler::new(rows.iter().map(|&i| (kind(i), 40 + i as u64)), v, &Device::Cpu).unwrap();
            let pick_rows: Vec<u32> = rows.iter().flat_map(|&i| [2 * i as u32, 2 * i as u32 + 1]).collect();
            let idx = Tensor::new(pick_rows.as_slice(), &Device::Cpu).unwrap();
            (all_logits.iter()).map(|l| b.pick(&l.index_select(&idx, 0).unwrap()).unwrap().to_vec1().unwrap()).collect()
        };
        let alone: Vec<Vec<Vec<u32>>> = (0..most).map(|i| run(&[i])).collect();
        for n in [5, 9, 15, 16, 17] {
            // the rows in another order than alone's, so a row's place in the batch varies too
            let rows: Vec<usize> = (0..n).rev().collect();
            let batch = run(&rows);
            for (pos, &i) in rows.iter().enumerate() {
                for s in 0..steps {
                    assert_eq!(batch[s][pos], alone[i][s][0], "row {i} ({:?}) of {n}, step {s}", kind(i));
                }
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

    /// Temperature 1e-40 (logits / T overflows) picks the argmax of the guided logits, as the
    /// host sampler's greedy rows do, in a batch with ordinary sampled rows.
    #[test]
    fn batch_vanishing_temperature_picks_the_argmax() {
        let tiny = SamplingParams { temperature: 1e-40, cfg_weight: 3.0, ..Default::default() };
        let greedy = SamplingParams { greedy: true, ..tiny };
        let (n, v) = (4, 300);
        let params = |i: usize| if i.is_multiple_of(2) { tiny } else { SamplingParams::default() };
        let mut b = BatchSampler::new((0..n).map(|i| (params(i), i as u64)), v, &Device::Cpu).unwrap();
        for step in 0..4 {
            let l = logits(n, v, step);
            let got: Vec<u32> = b.pick(&l).unwrap().to_vec1().unwrap();
            let rows = l.to_vec2::<f32>().unwrap();
            for i in (0..n).step_by(2) {
                let want = Sampler::new(greedy, 0).sample(&rows[2 * i], &rows[2 * i + 1]);
                assert_eq!(got[i], want, "row {i} step {step}");
            }
        }
    }
}
