//! CPU kernels for the VQ decoder's hot operations, in f32: the "same" convolution and a fused
//! GroupNorm (+ SiLU). On other devices and dtypes the decoder uses candle's own ops.
//!
//! The convolution (stride 1, padding k/2, odd square kernels) follows the classic im2col + GEMM formulation (as in Caffe/PyTorch's slow path), arranged
//! so that every copy is contiguous and nothing is transposed:
//! * the weight `[C_out, C_in, k, k]` is already the `[C_out, C_in·k·k]` left matrix;
//! * the im2col rows for a band of output rows are shifted copies of input rows (one `memcpy`
//!   per (channel, ky, kx, row)), so the buffer stays a few MiB whatever the image size;
//! * the GEMM writes straight into the NCHW output at the band's offset, on top of the bias.
//!
//! candle's own CPU conv2d builds NHWC copies, scatters im2col writes and scatters the result
//! back, which made the 384 px decoder several times slower than PyTorch's on the same CPU.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

/// Upper bound on the im2col band, in f32 elements (16 MiB): on the 384 px level (128 → 128
/// channels) 9 output rows per GEMM instead of 4, about 15% faster (fewer repacks of the weight).
const BAND_ELEMS: usize = 4 << 20;

struct SameConv {
    /// Upper bound on the im2col band, in elements.
    band_elems: usize,
}

impl CustomOp3 for SameConv {
    fn name(&self) -> &'static str {
        "same-conv2d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c_in, h, w) = xl.shape().dims4()?;
        let (c_out, wc_in, kh, kw) = wl.shape().dims4()?;
        let (CpuStorage::F32(x), CpuStorage::F32(wt), CpuStorage::F32(b)) = (xs, ws, bs) else {
            candle_core::bail!("same-conv2d: f32 only");
        };
        let (Some((x0, x1)), Some((w0, w1)), Some((b0, b1))) =
            (xl.contiguous_offsets(), wl.contiguous_offsets(), bl.contiguous_offsets())
        else {
            candle_core::bail!("same-conv2d: contiguous inputs only");
        };
        if wc_in != c_in || kh != kw || kh % 2 == 0 || b1 - b0 != c_out {
            candle_core::bail!("same-conv2d: bad shapes {:?} {:?}", xl.shape(), wl.shape());
        }
        let (x, wt, b) = (&x[x0..x1], &wt[w0..w1], &b[b0..b1]);
        let k = kh;
        let kk = c_in * k * k;
        let hw = h * w;
        // Every output starts as its channel's bias; the GEMMs accumulate onto it.
        let mut out = Vec::with_capacity(n * c_out * hw);
        for &bias in b.iter().cycle().take(n * c_out) {
            out.extend(std::iter::repeat_n(bias, hw));
        }
        let band_rows = (self.band_elems / (kk * w)).clamp(1, h);
        let mut col = vec![0f32; kk * band_rows * w];
        let threads = candle_core::utils::get_num_threads();
        let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
        let pad = (k / 2) as isize;
        for img in 0..n {
            let xi = &x[img * c_in * hw..(img + 1) * c_in * hw];
            let oi = &mut out[img * c_out * hw..(img + 1) * c_out * hw];
            for r0 in (0..h).step_by(band_rows) {
                let rows = band_rows.min(h - r0);
                let cols = rows * w;
                // col[(c, ky, kx), (y - r0) * w + xo] = xi[c, y + ky - pad, xo + kx - pad] (0 outside).
                col[..kk * cols].par_chunks_mut(cols).enumerate().for_each(|(row_idx, dst)| {
                    let (c, ky, kx) = (row_idx / (k * k), row_idx / k % k, row_idx % k);
                    let dx = kx as isize - pad;
                    for (ry, d) in dst.chunks_mut(w).enumerate() {
                        let sy = (r0 + ry) as isize + ky as isize - pad;
                        if sy < 0 || sy >= h as isize {
                            d.fill(0.0);
                            continue;
                        }
                        let src = &xi[c * hw + sy as usize * w..][..w];
                        // d[xo] = src[xo + dx]
                        let lo = (-dx).max(0) as usize;
                        let hi = (w as isize - dx).min(w as isize) as usize;
                        d[..lo].fill(0.0);
                        d[hi..].fill(0.0);
                        d[lo..hi].copy_from_slice(&src[(lo as isize + dx) as usize..(hi as isize + dx) as usize]);
                    }
                });
                // out[:, r0*w .. r0*w + cols] += wt[c_out, kk] @ col[kk, cols]
                // SAFETY: gemm reads and writes dst[i·hw + j] for i < c_out, j < cols from
                // `oi + r0·w`: the last is (c_out − 1)·hw + (r0 + rows)·w − 1 < c_out·hw =
                // oi.len() since r0 + rows ≤ h. It reads wt[i·kk + p] (p < kk) of the c_out·kk
                // floats of `wt` (a contiguous [c_out, c_in, k, k]) and col[p·cols + j] of
                // col.len() = kk·band_rows·w ≥ kk·cols. The three buffers are live and distinct
                // (`oi` is the only one written), as gemm requires.
                unsafe {
                    gemm::gemm(
                        c_out,
                        cols,
                        kk,
                        oi.as_mut_ptr().add(r0 * w),
                        1,
                        hw as isize,
                        true,
                        wt.as_ptr(),
                        1,
                        kk as isize,
                        col.as_ptr(),
                        1,
                        cols as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        par,
                    );
                }
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((n, c_out, h, w))))
    }
}

/// `conv2d(x, weight, padding = k / 2) + bias` for f32 tensors on the CPU (the caller checks the
/// device and dtype). `weight` is `[C_out, C_in, k, k]` with odd k, `bias` is `[C_out]`.
pub fn same_conv2d(x: &Tensor, weight: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
    same_conv2d_banded(x, weight, bias, BAND_ELEMS)
}

fn same_conv2d_banded(x: &Tensor, weight: &Tensor, bias: &Tensor, band_elems: usize) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op3_no_bwd(&weight.contiguous()?, &bias.contiguous()?, &SameConv { band_elems })
}

// ------------------------------------------------------------------ GroupNorm (+ SiLU)

/// `torch.nn.GroupNorm(groups, C, eps)` over `[N, C, H, W]`, optionally followed by SiLU, in one
/// pass for the statistics and one for the output (candle's composite GroupNorm makes about
/// eight passes and as many temporaries). Statistics are two-pass (mean, then centred squares),
/// accumulated in f64 across lanes of f32 partial sums.
struct GroupNormOp {
    groups: usize,
    eps: f64,
    silu: bool,
}

impl CustomOp3 for GroupNormOp {
    fn name(&self) -> &'static str {
        "group-norm-silu"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = xl.shape().dims4()?;
        let (CpuStorage::F32(x), CpuStorage::F32(g), CpuStorage::F32(b)) = (xs, gs, bs) else {
            candle_core::bail!("group-norm: f32 only");
        };
        let (Some((x0, x1)), Some((g0, g1)), Some((b0, b1))) =
            (xl.contiguous_offsets(), gl.contiguous_offsets(), bl.contiguous_offsets())
        else {
            candle_core::bail!("group-norm: contiguous inputs only");
        };
        if c % self.groups != 0 || g1 - g0 != c || b1 - b0 != c {
            candle_core::bail!("group-norm: {c} channels, {} groups, affine {} / {}", self.groups, g1 - g0, b1 - b0);
        }
        let (x, gamma, beta) = (&x[x0..x1], &g[g0..g1], &b[b0..b1]);
        let hw = h * w;
        let per_group = c / self.groups * hw;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(per_group).zip(x.par_chunks(per_group)).enumerate().for_each(|(i, (o, xg))| {
            let c0 = i % self.groups * (c / self.groups);
            let mean = lane_sum(xg, |v| v) / per_group as f64;
            let m = mean as f32;
            let var = lane_sum(xg, |v| (v - m) * (v - m)) / per_group as f64;
            let rstd = (1.0 / (var + self.eps).sqrt()) as f32;
            for (j, (oc, xc)) in o.chunks_mut(hw).zip(xg.chunks(hw)).enumerate() {
                // y = (x - mean) * rstd * gamma + beta = x * scale + shift
                let scale = rstd * gamma[c0 + j];
                let shift = beta[c0 + j] - m * scale;
                affine(oc, xc, scale, shift, self.silu);
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((n, c, h, w))))
    }
}

/// Σ f(v) over `xs`, in 16 f32 lanes (which vectorise) combined in f64.
fn lane_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    const L: usize = 16;
    let mut total = 0f64;
    // Blocks of 4096 keep the f32 partial sums short enough to stay accurate.
    for block in xs.chunks(4096) {
        let mut acc = [0f32; L];
        let mut it = block.chunks_exact(L);
        for ch in &mut it {
            let ch: &[f32; L] = ch.try_into().expect("chunk of L");
            for l in 0..L {
                acc[l] += f(ch[l]);
            }
        }
        total += it.remainder().iter().map(|&v| f(v) as f64).sum::<f64>();
        total += acc.iter().map(|&a| a as f64).sum::<f64>();
    }
    total
}

/// `out = x * scale + shift`, then SiLU when asked; dispatched to an AVX2 build where present.
fn affine(out: &mut [f32], x: &[f32], scale: f32, shift: f32, silu: bool) {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::dot::has_avx2_fma() {
        // SAFETY: `has_avx2_fma` just found avx2 and fma (with `is_x86_feature_detected!`), the
        // features `affine_avx2` was compiled for and its one condition.
        return unsafe { affine_avx2(out, x, scale, shift, silu) };
    }
    affine_generic(out, x, scale, shift, silu)
}

/// [`affine_generic`] compiled for AVX2 and FMA.
///
/// # Safety
///
/// The CPU supports avx2 and fma (checked with `is_x86_feature_detected!`). Nothing else: the
/// body is safe code over the slices.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn affine_avx2(out: &mut [f32], x: &[f32], scale: f32, shift: f32, silu: bool) {
    affine_generic(out, x, scale, shift, silu)
}

#[inline(always)]
fn affine_generic(out: &mut [f32], x: &[f32], scale: f32, shift: f32, silu: bool) {
    if silu {
        for (o, &v) in out.iter_mut().zip(x) {
            let y = v * scale + shift;
            *o = y / (1.0 + exp(-y));
        }
    } else {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = v * scale + shift;
        }
    }
}

/// e^x in f32 to about 2 ulp, branch-free so that loops over it vectorise: Cody–Waite range
/// reduction and the minimax polynomial of Cephes' `expf`. Inputs are clamped to [-87, 88].
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const SHIFTER: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer.
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + SHIFTER;
    let n = t - SHIFTER;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // 2^n from the integer held in t's low mantissa bits.
    let pow2 = f32::from_bits(((t.to_bits() as i32 - 0x4B40_0000 + 127) << 23) as u32);
    y * pow2
}

/// GroupNorm with affine `gamma`/`beta` (`[C]`) over f32 `[N, C, H, W]` on the CPU, followed by
/// SiLU when `silu` (the caller checks device and dtype).
pub fn group_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op3_no_bwd(gamma, beta, &GroupNormOp { groups, eps, silu })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, IndexOp};

    /// Against candle's conv2d, for 1×1, 3×3 and 5×5 kernels, non-square images, several images
    /// and bands of one row, a few rows and the whole image.
    #[test]
    fn matches_candle_conv2d() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        for (k, c_in, c_out, h, w) in [(3, 5, 7, 9, 6), (1, 4, 3, 5, 8), (5, 3, 2, 7, 7), (3, 1, 1, 1, 1)] {
            let x = Tensor::randn(0f32, 1.0, (2, c_in, h, w), &dev)?;
            let wt = Tensor::randn(0f32, 1.0, (c_out, c_in, k, k), &dev)?;
            let b = Tensor::randn(0f32, 1.0, c_out, &dev)?;
            let want = x.conv2d(&wt, k / 2, 1, 1, 1)?.broadcast_add(&b.reshape((1, c_out, 1, 1))?)?;
            for band in [1, 3 * c_in * k * k * w, usize::MAX / 2] {
                let got = same_conv2d_banded(&x, &wt, &b, band)?;
                let diff = (&got - &want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
                assert!(diff < 1e-4, "k={k} c_in={c_in} h={h} w={w} band={band}: max diff {diff}");
            }
            // A strided (non-contiguous) input is made contiguous first.
            let xt = x.transpose(2, 3)?;
            let got = same_conv2d(&xt, &wt, &b)?;
            let want = xt.contiguous()?.conv2d(&wt, k / 2, 1, 1, 1)?.broadcast_add(&b.reshape((1, c_out, 1, 1))?)?;
            let diff = (got.i(1)? - want.i(1)?)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert!(diff < 1e-4, "transposed input: max diff {diff}");
        }
        Ok(())
    }

    #[test]
    fn exp_is_accurate() {
        let mut worst = 0f64;
        for i in -8690..=8790 {
            let x = i as f32 * 0.01 + 0.003;
            let (got, want) = (exp(x) as f64, (x as f64).exp());
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 3e-7, "relative error {worst}");
    }

    /// Against candle_nn's GroupNorm (+ silu), with an offset mean to exercise the two-pass
    /// variance.
    #[test]
    fn group_norm_matches_candle() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        for (c, groups, h, w) in [(64, 32, 5, 7), (6, 3, 1, 1), (8, 2, 40, 40)] {
            let x = (Tensor::randn(0f32, 3.0, (2, c, h, w), &dev)? + 5.0)?;
            let gamma = Tensor::randn(1f32, 0.5, c, &dev)?;
            let beta = Tensor::randn(0f32, 0.5, c, &dev)?;
            let gn = candle_nn::GroupNorm::new(gamma.clone(), beta.clone(), c, groups, 1e-6)?;
            let plain = candle_core::Module::forward(&gn, &x)?;
            for silu in [false, true] {
                let want = if silu { candle_nn::ops::silu(&plain)? } else { plain.clone() };
                let got = group_norm(&x, &gamma, &beta, groups, 1e-6, silu)?;
                let diff = (&got - &want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
                assert!(diff < 1e-4, "c={c} groups={groups} silu={silu}: max diff {diff}");
            }
        }
        Ok(())
    }
}
