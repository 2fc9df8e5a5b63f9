//! `Linear` with a CPU fast path for few rows, the shape of every decode step.
//!
//! `y = x Wᵀ (+ b)` with `W` stored `[out, in]` as in the checkpoints. candle's CPU matmul hands
//! `Wᵀ` to the `gemm` crate as a strided view, which packs the whole weight on every call: for
//! the 2–16 rows of a decode step that costs several times the weight read itself. With few rows
//! the product is a set of dot products along `W`'s contiguous rows, which is what
//! [`crate::kernels::dot::SkinnyMatmul`] computes, streaming `W` once, split across threads by output columns.
//! Larger inputs (prefill, big batches) and other devices/dtypes use candle's matmul. An f32 model
//! on the CPU may keep a bf16 checkpoint's weight in bf16 (the exact mode at half the bytes): the
//! decode kernel widens it as it loads it, and a prompt's GEMM takes it widened, so every number
//! is the f32 weight's. A layer may instead hold a quantized weight ([`crate::modules::quant`]),
//! whose product is candle's or `kernels::quant`'s.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

use crate::kernels::dot::{one_position_per_row, SkinnyMatmul, MAX_ROWS};
use crate::load::quant::Quant;
use crate::modules::quant::QWeight;

#[derive(Debug, Clone)]
pub struct Linear {
    weight: Weight,
}

#[derive(Debug, Clone)]
enum Weight {
    Dense(candle_nn::Linear),
    Quantized { w: QWeight, bias: Option<Tensor> },
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight: Weight::Dense(candle_nn::Linear::new(weight, bias)) }
    }

    pub fn quantized(w: QWeight, bias: Option<Tensor>) -> Self {
        Self { weight: Weight::Quantized { w, bias } }
    }

    /// The weight `[out, in]` stored as `quant` asks (see [`Quant::block_type_for`]) on `dev`,
    /// or kept dense in `dtype` there. Quantized blocks are packed for the CPU's kernels
    /// ([`QWeight::new`]) unless `keep_blocks` (a model loaded to be written).
    pub fn from_weight(
        w: Tensor,
        bias: Option<Tensor>,
        quant: Quant,
        (dtype, dev): (DType, &Device),
        keep_blocks: bool,
    ) -> crate::Result<Self> {
        let (_, in_dim) = w.dims2()?;
        match quant.block_type_for(in_dim) {
            Some(block) => {
                let q = crate::modules::quant::quantize(&w.to_device(&Device::Cpu)?, block, dev)?;
                let q = if keep_blocks { QWeight::as_stored(q)? } else { QWeight::new(q)? };
                Ok(Self::quantized(q, bias))
            }
            None => Ok(Self::new(w.to_device(dev)?.to_dtype(dtype)?, bias)),
        }
    }

    /// Bytes of the stored weight (what a product reads once; the bias aside).
    pub fn weight_bytes(&self) -> usize {
        match self.stored() {
            StoredWeight::Dense(w) => w.elem_count() * w.dtype().size_in_bytes(),
            StoredWeight::Quantized(q) => q.bytes(),
        }
    }

    /// The stored weight: a dense tensor or a quantized one.
    pub fn stored(&self) -> StoredWeight<'_> {
        match &self.weight {
            Weight::Dense(l) => StoredWeight::Dense(l.weight()),
            Weight::Quantized { w, .. } => StoredWeight::Quantized(w),
        }
    }
}

/// What a [`Linear`] holds.
pub enum StoredWeight<'a> {
    Dense(&'a Tensor),
    Quantized(&'a QWeight),
}

pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> candle_core::Result<Linear> {
    Ok(Linear { weight: Weight::Dense(candle_nn::linear(in_dim, out_dim, vb)?) })
}

pub fn linear_no_bias(in_dim: usize, out_dim: usize, vb: VarBuilder) -> candle_core::Result<Linear> {
    Ok(Linear { weight: Weight::Dense(candle_nn::linear_no_bias(in_dim, out_dim, vb)?) })
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let inner = match &self.weight {
            Weight::Dense(l) => l,
            Weight::Quantized { w, bias } => {
                let y = w.forward(x)?;
                return match bias {
                    Some(b) => y.broadcast_add(&b.to_dtype(y.dtype())?),
                    None => Ok(y),
                };
            }
        };
        let w = inner.weight();
        let dims = x.dims();
        let k = dims.last().copied().unwrap_or(0);
        let rows = x.elem_count() / k.max(1);
        let step = one_position_per_row(dims);
        let cpu_f32 = x.device().is_cpu() && x.dtype() == DType::F32;
        if cpu_f32 && w.dtype() == DType::BF16 && !step {
            return widened_product(x, w, inner.bias());
        }
        if !(cpu_f32 && matches!(w.dtype(), DType::F32 | DType::BF16) && step) {
            return inner.forward(x);
        }
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("x has a last dimension") = w.dim(0)?;
        let x = x.contiguous()?.reshape((rows, k))?;
        let y = if rows <= MAX_ROWS {
            x.apply_op2_no_bwd(w, &SkinnyMatmul)?
        } else {
            let tiles = (0..rows)
                .step_by(MAX_ROWS)
                .map(|r| x.narrow(0, r, MAX_ROWS.min(rows - r))?.apply_op2_no_bwd(w, &SkinnyMatmul))
                .collect::<candle_core::Result<Vec<_>>>()?;
            Tensor::cat(&tiles, 0)?
        };
        let y = y.reshape(out_dims)?;
        match inner.bias() {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// Output features a prompt's product on a bf16 weight widens and multiplies at a time (a 1B
/// prompt's prefill: 3.0 s with 512, 2.2 s with 2048, 2.7 s widening each weight whole; f32
/// weights 1.3 s; PERF.md).
const WIDEN_ROWS: usize = 2048;

/// `x · wᵀ (+ b)` for a prompt (several positions per row) of an f32 model whose weight `w
/// [n, k]` is stored in bf16: the GEMM on `WIDEN_ROWS` rows of the weight at a time, each widened
/// to f32 (exactly) on every core, so that no widened copy of the whole weight is ever made. The
/// GEMM's numbers are those of the whole f32 weight: its sum over k is blocked by k and the cache
/// alone, not by the number of output features (gemm-common's `kernel_params`); a block of a few
/// columns was seen to take another path, so no block is shorter than `WIDEN_ROWS` (tested
/// below at the 1B's and 7B's shapes).
fn widened_product(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> candle_core::Result<Tensor> {
    use rayon::prelude::*;
    let (n, _) = w.dims2()?;
    let mut parts = Vec::with_capacity(n.div_ceil(WIDEN_ROWS));
    let mut start = 0;
    while start < n {
        // Never a short last block (the GEMM of a few columns takes another path): the rest
        // joins the block before it.
        let len = if n - start < 2 * WIDEN_ROWS { n - start } else { WIDEN_ROWS };
        let rows = w.narrow(0, start, len)?.contiguous()?;
        let wide = {
            let (storage, layout) = rows.storage_and_layout();
            match (&*storage, layout.contiguous_offsets()) {
                (candle_core::Storage::Cpu(candle_core::CpuStorage::BF16(data)), Some((a, b))) => {
                    let mut out = vec![0f32; b - a];
                    out.par_chunks_mut(1 << 14).zip(data[a..b].par_chunks(1 << 14)).for_each(|(o, i)| {
                        o.iter_mut().zip(i).for_each(|(o, i)| *o = i.to_f32());
                    });
                    Tensor::from_vec(out, rows.shape(), rows.device())?
                }
                _ => rows.to_dtype(DType::F32)?,
            }
        };
        let b = bias.map(|b| b.narrow(0, start, len)).transpose()?;
        parts.push(candle_nn::Linear::new(wide, b).forward(x)?);
        start += len;
    }
    Tensor::cat(&parts, x.rank() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// A decode step's rows have the same numbers however many rows share it (across the
    /// 16-row tile as well), for dense and quantized weights: the property that makes an image
    /// independent of its batch mates.
    #[test]
    fn a_decode_row_does_not_depend_on_how_many_rows_share_the_step() -> crate::Result<()> {
        let dev = Device::Cpu;
        let k = 512;
        let x = Tensor::randn(0f32, 1.0, (40, 1, k), &dev)?;
        // 304 rows pack for the quantized kernels (whole groups of 16), 300 keep candle's blocks
        for (quant, n) in [Quant::None, Quant::Q8_0, Quant::Q4k].into_iter().flat_map(|q| [(q, 300), (q, 304)]) {
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
            let lin = Linear::from_weight(w.clone(), None, quant, (DType::F32, &dev), false)?;
            let alone = lin.forward(&x.narrow(0, 0, 3)?)?;
            for rows in [3, 16, 17, 33, 40] {
                let shared = lin.forward(&x.narrow(0, 0, rows)?)?.narrow(0, 0, 3)?;
                let diff = (&alone - shared)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert_eq!(diff, 0.0, "{quant} [{n}, {k}]: 3 rows alone against the first 3 of {rows}");
            }
        }
        Ok(())
    }

    /// Likewise a prompt's positions: the same numbers alone and packed with other prompts'
    /// (text answers read their prompts together), dense and quantized, at these sizes. (With
    /// k = 64, candle's GEMM of 2 positions alone was seen to differ from the same positions among
    /// more, which is why `Janus::prefill_texts` sends chunks of ≤ 16 positions as rows.)
    #[test]
    fn a_prompt_position_does_not_depend_on_how_many_share_the_product() -> crate::Result<()> {
        let dev = Device::Cpu;
        let k = 512;
        let x = Tensor::randn(0f32, 1.0, (1, 300, k), &dev)?;
        for (quant, n) in [Quant::None, Quant::Q8_0, Quant::Q4k].into_iter().flat_map(|q| [(q, 300), (q, 304)]) {
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
            let lin = Linear::from_weight(w.clone(), None, quant, (DType::F32, &dev), false)?;
            for (alone, total) in [(2, 3), (9, 29), (9, 100), (40, 300)] {
                let a = lin.forward(&x.narrow(1, 0, alone)?)?;
                let packed = lin.forward(&x.narrow(1, 0, total)?)?.narrow(1, 0, alone)?;
                let diff = (&a - packed)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert_eq!(diff, 0.0, "{quant} [{n}, {k}]: {alone} positions alone against the first {alone} of {total}");
            }
        }
        Ok(())
    }

    /// A prompt's product on a bf16 weight (widened `WIDEN_ROWS` rows at a time) is the same, bit
    /// for bit, as on the weight widened whole, at the 1B's and 7B's shapes too.
    #[test]
    fn a_prompt_on_a_bf16_weight_gives_the_f32_weights_numbers() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        // Blocks of `WIDEN_ROWS` (2048) with the rest joined to the last: 1, 2 and 5 blocks.
        let shapes =
            [(5, 700, 64), (2, 4500, 256), (17, 6144, 2048), (64, 11264, 512), (3, 2048, 4096), (40, 4100, 300)];
        for (positions, n, k) in shapes {
            let x = Tensor::randn(0f32, 1.0, (1, positions, k), &dev)?;
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?.to_dtype(DType::BF16)?;
            let b = Tensor::randn(0f32, 1.0, n, &dev)?;
            for bias in [None, Some(b)] {
                let want = candle_nn::Linear::new(w.to_dtype(DType::F32)?, bias.clone()).forward(&x)?;
                let got = Linear::new(w.clone(), bias).forward(&x)?;
                let same = (want.flatten_all()?.to_vec1::<f32>()?.iter())
                    .zip(got.flatten_all()?.to_vec1::<f32>()?.iter())
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{positions} positions, [{n}, {k}]");
            }
        }
        Ok(())
    }

    #[test]
    fn matches_candle_linear() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        for (shape, n) in [(vec![2, 1, 37], 19), (vec![16, 64], 3000), (vec![1, 5], 1), (vec![3, 4, 130], 33)] {
            let k = *shape.last().unwrap();
            let x = Tensor::randn(0f32, 1.0, shape.as_slice(), &dev)?;
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
            let b = Tensor::randn(0f32, 1.0, n, &dev)?;
            for bias in [None, Some(b)] {
                let want = candle_nn::Linear::new(w.clone(), bias.clone()).forward(&x)?;
                let got = Linear::new(w.clone(), bias).forward(&x)?;
                assert_eq!(got.dims(), want.dims());
                let diff = (&got - &want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
                assert!(diff < 1e-4, "{shape:?} x {n}: max diff {diff}");
            }
        }
        Ok(())
    }
}
