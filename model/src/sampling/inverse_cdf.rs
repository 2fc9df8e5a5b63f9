//! The inverse-CDF draw on the device ([`InverseCdf`]): per row, the first token whose
//! cumulative probability exceeds `u · total`, as tensor ops (two levels of prefix sums as
//! matmuls with triangular matrices of ones, since candle has no scan kernel).

use candle_core::{DType, Device, Tensor};

use crate::error::Result;

/// Inverse-CDF draws on the device in two levels: the vocabulary is cut into blocks of about
/// √V tokens; prefix sums over the blocks and then within the chosen block are matmuls with a
/// triangular matrix of ones (candle has no scan kernel).
///
/// The prefix sums round (in f32, and in whatever order the matmul adds), so the target
/// `u · total` can meet a block or column whose probability is zero, a padding column past the
/// vocabulary, or lie past every sum. Each level therefore takes the first positive entry at or
/// after the one the sums point to, or the last positive entry where there is none: the draw is
/// always a token of the vocabulary with a positive probability, and it is the host's
/// ([`super::host`]) wherever rounding does not decide.
pub(super) struct InverseCdf {
    block: usize,
    /// `[B, B]` and `[C, C]`, ones where row ≤ column: `x · tri` is the inclusive prefix sum.
    tri_blocks: Tensor,
    tri_cols: Tensor,
    /// `[1, B]` and `[1, C]`: 0, 1, 2... as f32.
    block_index: Tensor,
    col_index: Tensor,
}

impl InverseCdf {
    pub(super) fn new(vocab: usize, dev: &Device) -> Result<Self> {
        let block = ((vocab as f64).sqrt().ceil() as usize).max(1);
        let blocks = vocab.div_ceil(block).max(1);
        let index = |n: usize| Tensor::arange(0u32, n as u32, dev)?.to_dtype(DType::F32)?.unsqueeze(0);
        Ok(Self {
            block,
            tri_blocks: upper_ones(blocks, dev)?,
            tri_cols: upper_ones(block, dev)?,
            block_index: index(blocks)?,
            col_index: index(block)?,
        })
    }

    /// For probabilities `[N, V]` and uniforms `u` `[N, 1]`: per row, the first index whose
    /// cumulative probability exceeds `u · total` (the last positive one where rounding leaves
    /// none), as u32 `[N, 1]`. Rows must have some positive probability.
    pub(super) fn sample(&self, probs: &Tensor, u: &Tensor) -> Result<Tensor> {
        let (n, v) = probs.dims2()?;
        let (c, b) = (self.block, self.tri_blocks.dim(0)?);
        let probs = if b * c > v { probs.pad_with_zeros(1, 0, b * c - v)? } else { probs.clone() };
        let blocks = probs.reshape((n, b, c))?;
        let block_sums = blocks.sum(2)?;
        let block_cum = block_sums.matmul(&self.tri_blocks)?;
        let target = (u * block_cum.narrow(1, b - 1, 1)?)?;
        let block = positive_from(&block_sums, &count_at_most(&block_cum, &target)?, &self.block_index)?;
        let block_idx = block.to_dtype(DType::U32)?;
        // the mass of the blocks before, from the same sums the block was chosen by: ≤ target
        let before = block_cum.pad_with_zeros(1, 1, 0)?.gather(&block_idx, 1)?;
        let within = blocks.gather(&block_idx.unsqueeze(2)?.broadcast_as((n, 1, c))?.contiguous()?, 1)?.squeeze(1)?;
        let at = count_at_most(&within.matmul(&self.tri_cols)?, &(target - before)?)?;
        let col = positive_from(&within, &at, &self.col_index)?;
        Ok(((block * c as f64)? + col)?.to_dtype(DType::U32)?)
    }
}

/// `[n, n]` f32 with ones where row ≤ column.
fn upper_ones(n: usize, dev: &Device) -> Result<Tensor> {
    let v: Vec<f32> = (0..n * n).map(|k| f32::from(k / n <= k % n)).collect();
    Ok(Tensor::from_vec(v, (n, n), dev)?)
}

/// Per row, how many entries of the nondecreasing `cum` `[N, L]` are ≤ `target` `[N, 1]` (the
/// index of the first one above it; L where none is), as f32 `[N, 1]`.
fn count_at_most(cum: &Tensor, target: &Tensor) -> Result<Tensor> {
    Ok(cum.broadcast_le(target)?.to_dtype(DType::F32)?.sum_keepdim(1)?)
}

/// Per row, the first index ≥ `k` `[N, 1]` whose `mass` `[N, L]` is positive, or the last
/// positive index where none is (0 where the row has none), as f32 `[N, 1]`; `index` is
/// `[1, L]` 0, 1, 2... All values stay below 2L, exact in f32.
fn positive_from(mass: &Tensor, k: &Tensor, index: &Tensor) -> Result<Tensor> {
    let len = index.dim(1)? as f64;
    let positive = mass.gt(0.0)?.to_dtype(DType::F32)?;
    let eligible = (&positive * index.broadcast_ge(k)?.to_dtype(DType::F32)?)?;
    // eligible entries keep their index, the others are pushed past the end
    let next = eligible.affine(-len, len)?.broadcast_add(index)?.min_keepdim(1)?;
    let last = positive.broadcast_mul(index)?.max_keepdim(1)?;
    Ok(next.minimum(&last)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::host::sample_multinomial;
    use crate::sampling::tests::noise;

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

    /// Probability rows (normalised in f32, as a softmax leaves them) that stress the edges of a
    /// vocabulary of `v`: zero last column, zero tail blocks, a lone token at either end or in
    /// the padded last block, a negligible last token.
    fn edge_rows(v: usize) -> Vec<Vec<f32>> {
        let mut rows = Vec::new();
        let row = |f: &dyn Fn(usize) -> f32| (0..v).map(f).collect::<Vec<f32>>();
        rows.push(row(&|_| 1.0));
        rows.push(row(&|i| f32::from(i + 1 < v)));
        rows.push(row(&|i| f32::from(i < v.div_ceil(3))));
        rows.push(row(&|i| f32::from(i == 0)));
        rows.push(row(&|i| f32::from(i + 1 == v)));
        rows.push(row(&|i| f32::from(i == v / 2)));
        rows.push(row(&|i| if i + 3 >= v { 0.0 } else { 0.05 + noise(i + 17) }));
        rows.push(row(&|i| if i + 1 == v { 1e-30 } else { 1.0 }));
        rows.push(row(&|i| if i % 5 == 1 { 0.0 } else { noise(i + 4242) * noise(i + 7) }));
        // random rows whose last column, or last few, are zero: where the rounding lands varies
        for r in 0..256 {
            let zeros = 1 + r % 7;
            rows.push(row(&|i| if i + zeros >= v { 0.0 } else { noise(r * 100_003 + i) + 1e-3 }));
        }
        for r in rows.iter_mut() {
            let sum: f32 = r.iter().sum();
            if sum > 0.0 {
                r.iter_mut().for_each(|p| *p /= sum);
            } else {
                r[0] = 1.0; // v = 1..3 can zero a whole row
            }
        }
        rows
    }

    /// At u = 0 and u just below 1 the draw is the host's (the first, or the last, token with a
    /// positive probability), whatever zeros end the row or pad its last block, and never a
    /// zero-probability token or a padding column past the vocabulary.
    #[test]
    fn device_draw_at_the_edges_stays_on_positive_tokens() {
        // 1 − 2⁻²⁴ is f32::from_bits(0x3f7fffff), the largest f32 below 1 and so the largest
        // uniform the device rows draw; the host is given the same u as f64.
        let us = [0.0, 1.0 - 2f32.powi(-24), f32::from_bits(0x3f7f_ffff), f32::from_bits(0x3f7f_fffe)];
        let mut bad = Vec::new();
        for v in [1usize, 2, 3, 7, 10, 99, 101, 257, 1000, 16383, 16384, 16385] {
            let cdf = InverseCdf::new(v, &Device::Cpu).unwrap();
            let rows = edge_rows(v);
            for &u in &us {
                let n = rows.len();
                let probs = Tensor::from_vec(rows.concat(), (n, v), &Device::Cpu).unwrap();
                let uu = Tensor::from_vec(vec![u; n], (n, 1), &Device::Cpu).unwrap();
                let got: Vec<u32> = cdf.sample(&probs, &uu).unwrap().flatten_all().unwrap().to_vec1().unwrap();
                for (i, row) in rows.iter().enumerate() {
                    let (id, want) = (got[i] as usize, sample_multinomial(row, u as f64));
                    if id >= v || row[id] == 0.0 || id != want {
                        let p = row.get(id).copied();
                        bad.push(format!("V = {v}, row {i}, u = {u:e}: drew {id} (p = {p:?}); the host draws {want}"));
                    }
                }
            }
        }
        assert!(bad.is_empty(), "{} bad draws:\n{}", bad.len(), bad.join("\n"));
    }

    /// Rows where every block's first and last columns are zero (so a column picked by a
    /// rounded-off target is visibly wrong), with zero tail blocks, a padded last block, and
    /// magnitudes from 1 down to the rounding of the total.
    fn gapped_rows(v: usize) -> Vec<Vec<f32>> {
        let c = InverseCdf::new(v, &Device::Cpu).unwrap().block;
        (0..24)
            .map(|r| {
                let tail = if r % 3 == 0 { v / 3 } else { r % 5 };
                let scale = 10f32.powi(-((r % 8) as i32));
                let mut row: Vec<f32> = (0..v)
                    .map(|i| match i % c {
                        _ if i + tail >= v => 0.0,
                        k if (k == 0 || k + 1 == c) && v > 3 => 0.0,
                        _ if i == r % v => 1.0,
                        _ => scale * (noise(r * 100_019 + i) + 1e-3),
                    })
                    .collect();
                if row.iter().all(|&p| p == 0.0) {
                    row[v / 2] = 1.0;
                }
                let sum: f32 = row.iter().sum();
                row.iter_mut().for_each(|p| *p /= sum);
                row
            })
            .collect()
    }

    /// u around every block boundary of the row's CDF (a few f32 steps either side) and near 1:
    /// where the f32 target meets the prefix sums' rounding, the draw must still land on a
    /// positive-probability token of the vocabulary.
    #[test]
    fn device_draw_near_block_boundaries_never_picks_a_zero_token() {
        let mut bad = Vec::new();
        for v in [2usize, 3, 7, 10, 99, 101, 257, 1000, 4099] {
            let cdf = InverseCdf::new(v, &Device::Cpu).unwrap();
            let c = cdf.block;
            for (r, row) in gapped_rows(v).iter().enumerate() {
                let total: f64 = row.iter().map(|&p| p as f64).sum();
                let mut cum = 0f64;
                let mut us = vec![f32::from_bits(0x3f7f_ffff), f32::from_bits(0x3f7f_fffe), 0.0];
                for (i, &p) in row.iter().enumerate() {
                    cum += p as f64;
                    if i % c == 0 || i % c == c - 1 || i + 1 == v {
                        let at = ((cum - p as f64) / total) as f32;
                        let end = (cum / total) as f32;
                        for base in [at, end] {
                            for step in -4i32..=4 {
                                let u = f32::from_bits((base.to_bits() as i32 + step).max(0) as u32);
                                if u < 1.0 {
                                    us.push(u);
                                }
                            }
                        }
                    }
                }
                us.sort_by(f32::total_cmp);
                us.dedup();
                let n = us.len();
                let probs = Tensor::from_slice(row, (1, v), &Device::Cpu).unwrap().broadcast_as((n, v)).unwrap();
                let u = Tensor::from_slice(&us, (n, 1), &Device::Cpu).unwrap();
                let got: Vec<u32> =
                    cdf.sample(&probs.contiguous().unwrap(), &u).unwrap().flatten_all().unwrap().to_vec1().unwrap();
                for (&id, &u) in got.iter().zip(&us) {
                    let id = id as usize;
                    if id >= v || row[id] == 0.0 {
                        bad.push(format!("V = {v}, row {r}, u = {u:e} ({:#x}): drew {id}", u.to_bits()));
                    }
                }
            }
        }
        assert!(bad.is_empty(), "{} bad draws:\n{}", bad.len(), bad.join("\n"));
    }
}
