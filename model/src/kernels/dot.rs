//! The f32 dot-product kernel of decode steps: `x [m, k] · wᵀ` for a weight `w [n, k]` stored as
//! the checkpoints store it, computed as dot products along `w`'s contiguous rows, streaming `w`
//! once, split across threads by output columns ([`SkinnyMatmul`]). candle's CPU matmul hands `wᵀ`
//! to the `gemm` crate as a strided view, which packs the whole weight on every call: for the
//! 2–16 rows of a decode step that costs several times the weight read itself. AVX-512 and AVX2
//! versions compute every dot product with the same arithmetic, so they agree bit for bit.
//!
//! The weight may be f32 or bf16 ([`Weights`]): a bf16 weight is widened to f32 as it is loaded
//! (exactly: a bf16 is the top half of an f32), so the arithmetic, and every number, is the f32
//! weight's, with half the bytes to stream.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape};
use half::bf16;
use rayon::prelude::*;

/// A weight element the kernels widen to f32 exactly as they load it.
pub trait Weights: Copy + Send + Sync + 'static {
    /// Stored as bf16 (the top 16 bits of an f32), else as f32.
    const BF16: bool;
    fn widen(self) -> f32;
}

impl Weights for f32 {
    const BF16: bool = false;
    fn widen(self) -> f32 {
        self
    }
}

impl Weights for bf16 {
    const BF16: bool = true;
    fn widen(self) -> f32 {
        self.to_f32()
    }
}

/// Rows the dot-product kernel takes at a time (up to this many it beats the packed GEMM).
pub const MAX_ROWS: usize = 16;

/// Whether `x` holds one position per row (a decode step: `[rows, in]` or `[rows, 1, in]`).
/// Such an input always goes through the dot-product kernel, 16 rows at a time, and an input of
/// several positions per row (a prompt) always through the GEMM, whose rows do not depend on how
/// many there are: so a row's numbers are the same whatever its batch mates (an image's bytes do
/// not depend on the requests it was batched with).
pub fn one_position_per_row(dims: &[usize]) -> bool {
    dims.len() == 2 || (dims.len() == 3 && dims[1] == 1)
}

/// `x [m, k] · wᵀ` for `w [n, k]` on the CPU, `x` f32 and `w` f32 or bf16.
pub struct SkinnyMatmul;

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
        let (Some((x0, x1)), Some((w0, w1))) = (xl.contiguous_offsets(), wl.contiguous_offsets()) else {
            candle_core::bail!("skinny-matmul: contiguous inputs only");
        };
        if k != wk {
            candle_core::bail!("skinny-matmul: {:?} · {:?}ᵀ", xl.shape(), wl.shape());
        }
        let out = match (xs, ws) {
            (CpuStorage::F32(x), CpuStorage::F32(w)) => skinny(&x[x0..x1], &w[w0..w1], m, n, k),
            (CpuStorage::F32(x), CpuStorage::BF16(w)) => skinny(&x[x0..x1], &w[w0..w1], m, n, k),
            _ => candle_core::bail!("skinny-matmul: f32 inputs and f32 or bf16 weights only"),
        };
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }
}

/// `x [m, k] · wᵀ` for `w [n, k]`, `[m, n]` row-major.
fn skinny<T: Weights>(x: &[f32], w: &[T], m: usize, n: usize, k: usize) -> Vec<f32> {
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
    out
}

/// Whether this CPU runs the `#[target_feature(enable = "avx2,fma")]` kernels of this crate.
#[cfg(target_arch = "x86_64")]
pub fn has_avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Whether this CPU runs the AVX-512 kernel of [`dots`].
#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// `o[j, i] = w[j] · x[i]` for the rows `w[j]` of one chunk. Every kernel computes each dot
/// product with the same arithmetic (two 8-lane FMA chains over 16 columns at a time, the
/// chains added lane by lane, the lanes summed in order, then the tail), so the numbers depend
/// neither on the CPU's vector width nor on how many rows share a call.
fn dots<T: Weights>(o: &mut [f32], w: &[T], x: &[f32], m: usize, k: usize) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() && !force_avx2() {
        // SAFETY: `has_avx512` just found avx512f (with `is_x86_feature_detected!`), the one
        // feature `avx512::dots` needs; it checks the slice lengths itself.
        return unsafe { avx512::dots(o, w, x, m, k) };
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: `has_avx2_fma` just found avx2 and fma (with `is_x86_feature_detected!`), the
        // features `avx2::dots` needs; it checks the slice lengths itself.
        return unsafe { avx2::dots(o, w, x, m, k) };
    }
    for (oj, wj) in o.chunks_mut(m).zip(w.chunks(k)) {
        for (oji, xi) in oj.iter_mut().zip(x.chunks(k)) {
            *oji = wj.iter().zip(xi).map(|(a, b)| a.widen() * b).sum();
        }
    }
}

/// Tests and benches compare the AVX-512 kernel with the AVX2 one on a CPU that has both.
#[cfg(target_arch = "x86_64")]
fn force_avx2() -> bool {
    #[cfg(test)]
    return tests::FORCE_AVX2.with(|f| f.get());
    #[cfg(not(test))]
    false
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::Weights;

    /// 16 weights from `p` as f32 (a bf16 widened: its bits shifted into an f32's top half).
    ///
    /// # Safety
    ///
    /// avx512f; `p` is valid for reads of 16 `T`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn load16<T: Weights>(p: *const T) -> __m512 {
        // SAFETY: the caller's contract: 16 `T` readable at `p` (32 bytes for bf16, 64 for f32).
        unsafe {
            if T::BF16 {
                let halves = _mm256_loadu_si256(p as *const __m256i);
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(halves)))
            } else {
                _mm512_loadu_ps(p as *const f32)
            }
        }
    }

    /// Floats ahead of the current position that each weight stream prefetches (1 KiB).
    const PREFETCH: usize = 256;

    /// Four rows of `w` at a time (four DRAM streams) against up to four rows of `x`: sixteen
    /// 16-lane accumulators, so each load feeds two FMAs (the AVX2 kernel's 2 × 2 tile: one), and
    /// the step's rows cost little more than one. Lanes 0–7 of an accumulator are the AVX2
    /// kernel's first chain and lanes 8–15 its second: the same sums. The first tile of `x`
    /// rows prefetches its own weight rows ahead; the later ones, which read those rows from
    /// L1, prefetch the next four rows into L2, so the weight stream never pauses (8 rows:
    /// 26.3 → 21.3 ms for the mid model's step, PERF.md).
    ///
    /// # Safety
    ///
    /// The CPU supports avx512f (checked with `is_x86_feature_detected!("avx512f")`). The slice
    /// lengths are no condition: the function asserts `o.len() · k == w.len() · m` and
    /// `x.len() == m · k` before it reads through pointers.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dots<T: Weights>(o: &mut [f32], w: &[T], x: &[f32], m: usize, k: usize) {
        assert!(o.len() * k == w.len() * m && x.len() == m * k);
        let rows = w.len() / k;
        let mut j = 0;
        while j < rows {
            let nw = (rows - j).min(4);
            let mut i = 0;
            while i < m {
                let nx = (m - i).min(4);
                // Where this tile's prefetches go: its own rows ahead, or the next four rows.
                let next = j + 8 <= rows;
                let prefetch = match i {
                    0 => Prefetch::Ahead,
                    _ if next => Prefetch::Next,
                    _ => Prefetch::None,
                };
                // SAFETY: avx512f, which `tile` needs, is this function's own contract. With
                // rows = ⌊w.len() / k⌋ and x.len() == m · k (asserted above), j + nw ≤ rows and
                // i + nx ≤ m, so both offsets stay inside their slices, rows j..j + nw of w and
                // i..i + nx of x hold k floats each, and each arm's tile reads W ≤ nw rows of w
                // (4 only when nw == 4, else 1) and R ≤ nx rows of x, as `tile` requires.
                let v = unsafe {
                    let (wj, xi) = (w.as_ptr().add(j * k), x.as_ptr().add(i * k));
                    match (nw, nx) {
                        (4, 4) => tile::<T, 4, 4>(wj, xi, k, prefetch),
                        (4, 3) => tile::<T, 4, 3>(wj, xi, k, prefetch),
                        (4, 2) => tile::<T, 4, 2>(wj, xi, k, prefetch),
                        (4, _) => tile::<T, 4, 1>(wj, xi, k, prefetch),
                        (_, 4) => tile::<T, 1, 4>(wj, xi, k, prefetch),
                        (_, 3) => tile::<T, 1, 3>(wj, xi, k, prefetch),
                        (_, 2) => tile::<T, 1, 2>(wj, xi, k, prefetch),
                        _ => tile::<T, 1, 1>(wj, xi, k, prefetch),
                    }
                };
                let nw_done = if nw == 4 { 4 } else { 1 };
                for (q, vq) in v.iter().enumerate().take(nw_done) {
                    o[(j + q) * m + i..(j + q) * m + i + nx].copy_from_slice(&vq[..nx]);
                }
                i += nx;
            }
            j += if nw == 4 { 4 } else { 1 };
        }
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Prefetch {
        /// The tile's own weight rows, `PREFETCH` floats ahead, into L1.
        Ahead,
        /// The four weight rows after the tile's, at the same columns, into L2.
        Next,
        None,
    }

    /// `[[w[q] · x[r] for r < R] for q < W]` for W consecutive rows of `w` and R of `x` (length
    /// k); entries past W or R are 0.
    ///
    /// # Safety
    ///
    /// The CPU supports avx512f (checked with `is_x86_feature_detected!("avx512f")`), `w` is
    /// valid for reads of `W · k` weights (W rows of k) and `x` for reads of `R · k` floats.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::needless_range_loop)] // `r` indexes `x`'s rows and the accumulators' columns
    unsafe fn tile<T: Weights, const W: usize, const R: usize>(
        w: *const T,
        x: *const f32,
        k: usize,
        prefetch: Prefetch,
    ) -> [[f32; 4]; 4] {
        let mut acc = [[_mm512_setzero_ps(); R]; W];
        let full = k / 16 * 16;
        let mut c = 0;
        while c < full {
            // SAFETY: c + 16 ≤ full ≤ k, so each 16-float load at `q · k + c` (q < W) stays in
            // the W · k floats of `w` and each at `r · k + c` (r < R) in the R · k of `x`, as the
            // caller guarantees; `row = w + q · k` is inside `w` too. The prefetch addresses come
            // from `wrapping_add` (no in-bounds claim) and a prefetch is only a hint that never
            // faults, so they may point past the rows.
            unsafe {
                let mut wv = [_mm512_setzero_ps(); W];
                for (q, wq) in wv.iter_mut().enumerate() {
                    let row = w.add(q * k);
                    match prefetch {
                        Prefetch::Ahead => _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(c + PREFETCH) as *const i8),
                        Prefetch::Next => _mm_prefetch::<_MM_HINT_T1>(row.wrapping_add(4 * k + c) as *const i8),
                        Prefetch::None => {}
                    }
                    *wq = load16(row.add(c));
                }
                for r in 0..R {
                    let xr = _mm512_loadu_ps(x.add(r * k + c));
                    for q in 0..W {
                        acc[q][r] = _mm512_fmadd_ps(wv[q], xr, acc[q][r]);
                    }
                }
            }
            c += 16;
        }
        let mut out = [[0f32; 4]; 4];
        for q in 0..W {
            for r in 0..R {
                // The two 8-lane halves added lane by lane, then the lanes in order, then the
                // tail: the AVX2 kernel's reduction.
                let halves = _mm512_castps_si512(acc[q][r]);
                let lo = _mm256_castsi256_ps(_mm512_castsi512_si256(halves));
                let hi = _mm256_castsi256_ps(_mm512_extracti64x4_epi64::<1>(halves));
                let mut lanes = [0f32; 8];
                // SAFETY: `lanes` is a local array of 8 floats, the 8 this store writes.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(lo, hi)) };
                // SAFETY: c < k, q < W and r < R, so `q · k + c` < W · k and `r · k + c` < R · k:
                // inside the floats the caller guarantees for `w` and `x`.
                let tail: f32 = (full..k).map(|c| unsafe { (*w.add(q * k + c)).widen() * *x.add(r * k + c) }).sum();
                out[q][r] = lanes.iter().sum::<f32>() + tail;
            }
        }
        out
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::Weights;

    /// 8 weights from `p` as f32 (a bf16 widened: its bits shifted into an f32's top half).
    ///
    /// # Safety
    ///
    /// avx2; `p` is valid for reads of 8 `T`.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn load8<T: Weights>(p: *const T) -> __m256 {
        // SAFETY: the caller's contract: 8 `T` readable at `p` (16 bytes for bf16, 32 for f32).
        unsafe {
            if T::BF16 {
                let halves = _mm_loadu_si128(p as *const __m128i);
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(halves)))
            } else {
                _mm256_loadu_ps(p as *const f32)
            }
        }
    }

    /// Floats ahead of the current position that each weight stream prefetches (1 KiB).
    const PREFETCH: usize = 256;

    /// Two rows of `w` at a time (two memory streams per thread keep more DRAM requests in
    /// flight than one) against one or two rows of `x` (which stay in L1/L2), with a software
    /// prefetch ahead of each stream: about 1.5× the bandwidth of one row at a time.
    ///
    /// # Safety
    ///
    /// The CPU supports avx2 and fma (checked with `is_x86_feature_detected!`). The slice lengths
    /// are no condition: the function asserts `o.len() · k == w.len() · m` and `x.len() == m · k`
    /// before it reads through pointers.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dots<T: Weights>(o: &mut [f32], w: &[T], x: &[f32], m: usize, k: usize) {
        assert!(o.len() * k == w.len() * m && x.len() == m * k);
        let rows = w.len() / k;
        let mut j = 0;
        while j < rows {
            let pair = rows - j >= 2;
            // SAFETY: j < rows = ⌊w.len() / k⌋, so row j's k floats start inside `w`.
            let wa = unsafe { w.as_ptr().add(j * k) };
            // SAFETY: a pair has j + 2 ≤ rows, so row j + 1's k floats are inside `w` too.
            let wb = if pair { unsafe { wa.add(k) } } else { wa };
            let mut i = 0;
            while i < m {
                // SAFETY: i < m and x.len() == m · k (asserted above): row i starts inside `x`.
                let xs = unsafe { x.as_ptr().add(i * k) };
                let r = if m - i >= 2 { 2 } else { 1 };
                // SAFETY: avx2 and fma, which `tile` needs, are this function's own contract;
                // `wa` and `wb` are whole rows of k floats of `w` (above), and the R = r ≤ m − i
                // rows of x from row i hold R · k floats, as `tile` requires.
                let v = unsafe {
                    if r == 2 {
                        tile::<T, 2>(wa, wb, xs, k)
                    } else {
                        tile::<T, 1>(wa, wb, xs, k)
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
    ///
    /// # Safety
    ///
    /// The CPU supports avx2 and fma (checked with `is_x86_feature_detected!`), `wa` and `wb` are
    /// each valid for reads of `k` floats and `x` for reads of `R · k` floats.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<T: Weights, const R: usize>(wa: *const T, wb: *const T, x: *const f32, k: usize) -> [[f32; 2]; 2] {
        let mut acc = [[[_mm256_setzero_ps(); 2]; R]; 2];
        let full = k / 16 * 16;
        let mut c = 0;
        while c < full {
            // SAFETY: c + 16 ≤ full ≤ k, so the loads at c and c + 8 (8 floats each) stay in the
            // k floats of `wa` and `wb` and, at `r · k + c` with r < R, in the R · k of `x`, as
            // the caller guarantees. The prefetch addresses come from `wrapping_add` (no
            // in-bounds claim) and a prefetch never faults, so they may point past the rows.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(wa.wrapping_add(c + PREFETCH) as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(wb.wrapping_add(c + PREFETCH) as *const i8);
                let w = [[load8(wa.add(c)), load8(wa.add(c + 8))], [load8(wb.add(c)), load8(wb.add(c + 8))]];
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
                // SAFETY: `lanes` is a local array of 8 floats, the 8 this store writes.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(acc[q][r][0], acc[q][r][1])) };
                // SAFETY: c < k and r < R: `wq` (`wa` or `wb`) is valid for k floats and `x` for
                // R · k, as the caller guarantees.
                let tail: f32 = (full..k).map(|c| unsafe { (*wq.add(c)).widen() * *x.add(r * k + c) }).sum();
                out[q][r] = lanes.iter().sum::<f32>() + tail;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        pub(super) static FORCE_AVX2: Cell<bool> = const { Cell::new(false) };
    }

    /// The AVX-512 kernel gives the AVX2 kernel's numbers bit for bit (so a server's output does
    /// not depend on its CPU), for every tile shape and a column tail.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx512_kernel_equals_the_avx2_kernel() {
        use crate::kernels::skip_without;
        use std::arch::is_x86_feature_detected as has;
        if skip_without("avx512f", has!("avx512f"))
            || skip_without("avx2", has!("avx2"))
            || skip_without("fma", has!("fma"))
        {
            return; // nothing to compare on this CPU
        }
        let mut seed = 1u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        for (m, n, k) in [(1, 9, 64), (3, 7, 37), (8, 13, 1024), (5, 6, 2816), (16, 17, 100)] {
            let w: Vec<f32> = (0..n * k).map(|_| next()).collect();
            let x: Vec<f32> = (0..m * k).map(|_| next()).collect();
            let run = |avx2: bool| {
                FORCE_AVX2.with(|f| f.set(avx2));
                let mut o = vec![0f32; n * m];
                dots(&mut o, &w, &x, m, k);
                FORCE_AVX2.with(|f| f.set(false));
                o
            };
            let (wide, narrow) = (run(false), run(true));
            assert!(wide.iter().zip(&narrow).all(|(a, b)| a.to_bits() == b.to_bits()), "m {m}, n {n}, k {k}");
        }
    }

    /// A bf16 weight gives, on every kernel, the numbers of the same weight widened to f32, bit
    /// for bit (the exact mode stored as the checkpoints store it).
    #[test]
    fn bf16_weights_give_the_widened_f32_weights_numbers() {
        let mut seed = 7u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        for (m, n, k) in [(1, 9, 64), (3, 7, 37), (8, 13, 1024), (2, 5, 2816), (16, 17, 100)] {
            let w16: Vec<bf16> = (0..n * k).map(|_| bf16::from_f32(next())).collect();
            let w32: Vec<f32> = w16.iter().map(|w| w.to_f32()).collect();
            let x: Vec<f32> = (0..m * k).map(|_| next()).collect();
            // `dots` on this thread (the kernel switch is thread-local), then `skinny` on rayon's.
            for avx2 in [false, true] {
                FORCE_AVX2.with(|f| f.set(avx2));
                let (mut a, mut b) = (vec![0f32; n * m], vec![0f32; n * m]);
                dots(&mut a, &w16, &x, m, k);
                dots(&mut b, &w32, &x, m, k);
                FORCE_AVX2.with(|f| f.set(false));
                assert!(a.iter().zip(&b).all(|(a, b)| a.to_bits() == b.to_bits()), "m {m}, n {n}, k {k}, avx2 {avx2}");
            }
            let (a, b) = (skinny(&x, &w16, m, n, k), skinny(&x, &w32, m, n, k));
            assert!(a.iter().zip(&b).all(|(a, b)| a.to_bits() == b.to_bits()), "m {m}, n {n}, k {k}: skinny");
            let scalar: Vec<f32> = (0..m)
                .flat_map(|i| (0..n).map(move |j| (i, j)))
                .map(|(i, j)| {
                    w32[j * k..(j + 1) * k].iter().zip(&x[i * k..(i + 1) * k]).map(|(a, b)| a * b).sum::<f32>()
                })
                .collect();
            let got = skinny(&x, &w16, m, n, k);
            assert!(
                got.iter().zip(&scalar).all(|(a, b)| (a - b).abs() <= 1e-4 * (1.0 + b.abs())),
                "m {m}, n {n}, k {k}: the product"
            );
        }
    }
}
