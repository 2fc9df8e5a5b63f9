//! `Linear` with a CPU fast path for few rows, the shape of every decode step.
//!
//! `y = x Wᵀ (+ b)` with `W` stored `[out, in]` as in the checkpoints. candle's CPU matmul hands
//! `Wᵀ` to the `gemm` crate as a strided view, which packs the whole weight on every call: for
//! the 2–16 rows of a decode step that costs several times the weight read itself. With few rows
//! the product is a set of dot products along `W`'s contiguous rows, which is what
//! [`SkinnyMatmul`] computes, streaming `W` once, split across threads by output columns.
//! Larger inputs (prefill, big batches) and other devices/dtypes use candle's matmul. A layer may
//! instead hold a quantized weight ([`crate::quant`]), whose product is candle's or `quant_cpu`'s.

use candle_core::{CpuStorage, CustomOp2, DType, Device, Layout, Module, Shape, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use crate::quant::{QWeight, Quant};

/// Rows the dot-product kernel takes at a time (up to this many it beats the packed GEMM).
const MAX_SKINNY_ROWS: usize = 16;

/// Whether `x` holds one position per row (a decode step: `[rows, in]` or `[rows, 1, in]`).
/// Such an input always goes through the dot-product kernel, 16 rows at a time, and an input of
/// several positions per row (a prompt) always through the GEMM, whose rows do not depend on how
/// many there are: so a row's numbers are the same whatever its batch mates (an image's bytes do
/// not depend on the requests it was batched with).
pub fn one_position_per_row(dims: &[usize]) -> bool {
    dims.len() == 2 || (dims.len() == 3 && dims[1] == 1)
}

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
    /// or kept dense in `dtype` there.
    pub fn from_weight(
        w: Tensor,
        bias: Option<Tensor>,
        quant: Quant,
        dtype: DType,
        dev: &Device,
    ) -> crate::Result<Self> {
        let (_, in_dim) = w.dims2()?;
        match quant.block_type_for(in_dim) {
            Some(block) => {
                let q = crate::quant::quantize(&w.to_device(&Device::Cpu)?, block, dev)?;
                Ok(Self::quantized(QWeight::new(q)?, bias))
            }
            None => Ok(Self::new(w.to_device(dev)?.to_dtype(dtype)?, bias)),
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
        let skinny = rows <= MAX_SKINNY_ROWS || one_position_per_row(dims);
        if !(x.device().is_cpu() && x.dtype() == DType::F32 && w.dtype() == DType::F32 && skinny) {
            return inner.forward(x);
        }
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("x has a last dimension") = w.dim(0)?;
        let x = x.contiguous()?.reshape((rows, k))?;
        let y = if rows <= MAX_SKINNY_ROWS {
            x.apply_op2_no_bwd(w, &SkinnyMatmul)?
        } else {
            let tiles = (0..rows)
                .step_by(MAX_SKINNY_ROWS)
                .map(|r| x.narrow(0, r, MAX_SKINNY_ROWS.min(rows - r))?.apply_op2_no_bwd(w, &SkinnyMatmul))
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

/// `x [m, k] · wᵀ` for `w [n, k]`, both f32 on the CPU.
struct SkinnyMatmul;

impl CustomOp2 for SkinnyMatmul {
    fn name(&self) -> &'static str {
        "skinny-matmul"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (m, k) = xl.shape().dims2()?;
        let (n, wk) = wl.shape().dims2()?;
        let (CpuStorage::F32(x), CpuStorage::F32(w)) = (xs, ws) else {
            candle_core::bail!("skinny-matmul: f32 only");
        };
        let (Some((x0, x1)), Some((w0, w1))) = (xl.contiguous_offsets(), wl.contiguous_offsets()) else {
            candle_core::bail!("skinny-matmul: contiguous inputs only");
        };
        if k != wk {
            candle_core::bail!("skinny-matmul: {:?} · {:?}ᵀ", xl.shape(), wl.shape());
        }
        let (x, w) = (&x[x0..x1], &w[w0..w1]);
        // Columns of the output computed by one task: enough work to amortise the split.
        let chunk = (n / (rayon::current_num_threads() * 8)).clamp(16, 1024);
        let mut out_t = vec![0f32; n * m]; // [n, m], transposed back below
        out_t.par_chunks_mut(chunk * m).zip(w.par_chunks(chunk * k)).for_each(|(o, wc)| dots(o, wc, x, m, k));
        let mut out = vec![0f32; m * n];
        for (j, col) in out_t.chunks(m).enumerate() {
            for (i, &v) in col.iter().enumerate() {
                out[i * n + j] = v;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }
}

/// Whether this CPU runs the `#[target_feature(enable = "avx2,fma")]` kernels of this crate.
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// `o[j, i] = w[j] · x[i]` for the rows `w[j]` of one chunk.
fn dots(o: &mut [f32], w: &[f32], x: &[f32], m: usize, k: usize) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has the features the function was compiled for.
        return unsafe { avx2::dots(o, w, x, m, k) };
    }
    for (oj, wj) in o.chunks_mut(m).zip(w.chunks(k)) {
        for (oji, xi) in oj.iter_mut().zip(x.chunks(k)) {
            *oji = wj.iter().zip(xi).map(|(a, b)| a * b).sum();
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// Floats ahead of the current position that each weight stream prefetches (1 KiB).
    const PREFETCH: usize = 256;

    /// Two rows of `w` at a time (two memory streams per thread keep more DRAM requests in
    /// flight than one) against one or two rows of `x` (which stay in L1/L2), with a software
    /// prefetch ahead of each stream: about 1.5× the bandwidth of one row at a time.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dots(o: &mut [f32], w: &[f32], x: &[f32], m: usize, k: usize) {
        assert!(o.len() * k == w.len() * m && x.len() == m * k);
        let rows = w.len() / k;
        let mut j = 0;
        while j < rows {
            let pair = rows - j >= 2;
            // SAFETY: rows j (and j + 1 for a pair) of w and every row of x hold k elements.
            let wa = unsafe { w.as_ptr().add(j * k) };
            let wb = if pair { unsafe { wa.add(k) } } else { wa };
            let mut i = 0;
            while i < m {
                let xs = unsafe { x.as_ptr().add(i * k) };
                let r = if m - i >= 2 { 2 } else { 1 };
                let v = unsafe {
                    if r == 2 {
                        tile::<2>(wa, wb, xs, k)
                    } else {
                        tile::<1>(wa, wb, xs, k)
                    }
                };
                o[j * m + i..j * m + i + r].copy_from_slice(&v[0][..r]);
                if pair {
                    o[(j + 1) * m + i..(j + 1) * m + i + r].copy_from_slice(&v[1][..r]);
                }
                i += r;
            }
            j += if pair { 2 } else { 1 };
        }
    }

    /// `[[wa · x[r] for r < R], [wb · x[r] for r < R]]` for R ≤ 2 consecutive rows of `x` (length
    /// k), two 8-lane FMA chains per product; entries r ≥ R are 0.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const R: usize>(wa: *const f32, wb: *const f32, x: *const f32, k: usize) -> [[f32; 2]; 2] {
        let mut acc = [[[_mm256_setzero_ps(); 2]; R]; 2];
        let full = k / 16 * 16;
        let mut c = 0;
        while c < full {
            // SAFETY: c + 16 <= k for both weight rows and every x row; prefetches never fault.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(wa.wrapping_add(c + PREFETCH) as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(wb.wrapping_add(c + PREFETCH) as *const i8);
                let w = [
                    [_mm256_loadu_ps(wa.add(c)), _mm256_loadu_ps(wa.add(c + 8))],
                    [_mm256_loadu_ps(wb.add(c)), _mm256_loadu_ps(wb.add(c + 8))],
                ];
                for r in 0..R {
                    let xr = [_mm256_loadu_ps(x.add(r * k + c)), _mm256_loadu_ps(x.add(r * k + c + 8))];
                    for (acc_w, w_h) in acc.iter_mut().zip(&w) {
                        for h in 0..2 {
                            acc_w[r][h] = _mm256_fmadd_ps(w_h[h], xr[h], acc_w[r][h]);
                        }
                    }
                }
            }
            c += 16;
        }
        let mut out = [[0f32; 2]; 2];
        for (q, wq) in [wa, wb].into_iter().enumerate() {
            for r in 0..R {
                let mut lanes = [0f32; 8];
                _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(acc[q][r][0], acc[q][r][1]));
                // SAFETY: the tail c in full..k is inside row wq and row r of x.
                let tail: f32 = (full..k).map(|c| unsafe { *wq.add(c) * *x.add(r * k + c) }).sum();
                out[q][r] = lanes.iter().sum::<f32>() + tail;
            }
        }
        out
    }
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
        let (k, n) = (512, 300);
        let x = Tensor::randn(0f32, 1.0, (40, 1, k), &dev)?;
        let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
        for quant in [Quant::None, Quant::Q8_0, Quant::Q4k] {
            let lin = Linear::from_weight(w.clone(), None, quant, DType::F32, &dev)?;
            let alone = lin.forward(&x.narrow(0, 0, 3)?)?;
            for rows in [3, 16, 17, 33, 40] {
                let shared = lin.forward(&x.narrow(0, 0, rows)?)?.narrow(0, 0, 3)?;
                let diff = (&alone - shared)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert_eq!(diff, 0.0, "{quant}: 3 rows alone against the first 3 of {rows}");
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
