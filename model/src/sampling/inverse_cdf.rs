//! The inverse-CDF draw on the device ([`InverseCdf`]): per row, the first token whose
//! cumulative probability exceeds `u · total`, as tensor ops (two levels of prefix sums as
//! matmuls with triangular matrices of ones, since candle has no scan kernel).

use candle_core::{DType, Device, Tensor};

use crate::error::Result;

/// Inverse-CDF draws on the device in two levels: the vocabulary is cut into blocks of about
/// √V tokens; prefix sums over the blocks and then within the chosen block are matmuls with a
/// triangular matrix of ones (candle has no scan kernel).
pub(super) struct InverseCdf {
    block: usize,
    /// `[B, B]` and `[C, C]`, ones where row ≤ column: `x · tri` is the inclusive prefix sum.
    tri_blocks: Tensor,
    tri_cols: Tensor,
}

impl InverseCdf {
    pub(super) fn new(vocab: usize, dev: &Device) -> Result<Self> {
        let block = ((vocab as f64).sqrt().ceil() as usize).max(1);
        let blocks = vocab.div_ceil(block).max(1);
        Ok(Self { block, tri_blocks: upper_ones(blocks, dev)?, tri_cols: upper_ones(block, dev)? })
    }

    /// For probabilities `[N, V]` and uniforms `u` `[N, 1]`: per row, the first index whose
    /// cumulative probability exceeds `u · total`, as u32 `[N, 1]`.
    pub(super) fn sample(&self, probs: &Tensor, u: &Tensor) -> Result<Tensor> {
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
}
