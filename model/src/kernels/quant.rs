//! CPU products of quantized weights with f32 rows on x86 CPUs with AVX-512 VNNI, over the
//! row-interleaved layout of [`super::packed`] (the weight's blocks rearranged once at load, in
//! the same bytes): a `vpdpbusd` lane is one of 16 weight rows, so each 64-byte load of weights
//! serves 16 rows at once, an input row's 4 activation bytes come as a broadcast, the scales are
//! applied per 32 weights and 16 rows with one multiply-add, and each input row ends with 16
//! finished outputs (no horizontal sums). One kernel serves decode steps (a few rows) and prompts
//! (rows in tiles that stay in registers, blocks of 64 rows whose activations stay in L2).
//!
//! The activations are quantized per 256 values to i8 with one f32 scale, as ggml's Q8_K, with
//! their 32-value sums (for q4k's mins, and the +128 of q8_0's unsigned quants). A row's numbers
//! are the same whatever rows share the call: each row's arithmetic is its own, in a fixed order.
//! Other CPUs keep the stored blocks and candle's products.
//!
//! The kernels, per 256 weights of one weight row: q4k computes
//! `d·a.d·Σₛ scaleₛ·(qₛ·aₛ) − dmin·a.d·Σₛ minₛ·Σaₛ` (the first sums in i32, `vpdpbusd` on the
//! nibbles, the high ones masked in place as 16·q and their scale divided by 16; the mins by
//! `vpdpwssd` on 16-bit pairs), q8_0 `a.d·Σ_b d_b·((q_b + 128)·a_b − 128·Σa_b)`.

use rayon::prelude::*;

use super::packed::{Packing, GROUP, QK};

/// Input rows multiplied per pass over the weight: their quantized activations (~84 KB at
/// k = 1024) stay in L2.
const ROW_BLOCK: usize = 64;
/// Input rows one kernel call keeps in registers: 4 for a decode step's few rows, 8 for a
/// prompt's many (a tenth faster at 64 rows, where the weights' unpacking is shared by more rows;
/// a third slower at 16, where the 8-row tile spills registers: `model/benches/kernels.rs`).
const TILE: usize = 4;
const PROMPT_TILE: usize = 8;
/// Rows from which a call takes [`PROMPT_TILE`].
const PROMPT_ROWS: usize = 32;

/// Whether this CPU runs the kernels.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
            && std::arch::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// One row's 256 activations as i8 with a scale, and the sums of its eight 32-value runs.
#[derive(Clone)]
#[repr(C, align(64))]
struct ActBlock {
    qs: [i8; QK],
    sums: [i16; 8],
    d: f32,
}

fn quantize_row(x: &[f32], out: &mut [ActBlock]) {
    for (xb, ab) in x.chunks_exact(QK).zip(out) {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        if amax == 0.0 {
            (ab.d, ab.qs, ab.sums) = (0.0, [0; QK], [0; 8]);
            continue;
        }
        ab.d = amax / 127.0;
        let inv = 127.0 / amax;
        for ((sum, qs), xs) in ab.sums.iter_mut().zip(ab.qs.chunks_exact_mut(32)).zip(xb.chunks_exact(32)) {
            *sum = 0;
            for (q, x) in qs.iter_mut().zip(xs) {
                *q = (x * inv).round().clamp(-127.0, 127.0) as i8;
                *sum += *q as i16;
            }
        }
    }
}

/// `y[m, n] = x[m, k] · Wᵀ` for the packed weight `w` (`n / 16` groups of `k / 256` chunks, as
/// [`Packing::pack`] writes them). Needs [`available`] and [`Packing::fits`].
pub fn matmul(packing: Packing, x: &[f32], m: usize, k: usize, n: usize, w: &[u8]) -> Vec<f32> {
    assert!(available() && Packing::fits(n, k), "packed quantized kernel: needs AVX-512 VNNI and a packable shape");
    let kb = k / QK;
    let group_bytes = GROUP * kb * packing.span();
    assert!(x.len() == m * k && w.len() == n / GROUP * group_bytes, "packed quantized kernel: sizes");
    let zero = ActBlock { qs: [0; QK], sums: [0; 8], d: 0.0 };
    let mut acts = vec![zero; m * kb];
    for (row, a) in x.chunks_exact(k).zip(acts.chunks_exact_mut(kb)) {
        quantize_row(row, a);
    }
    let groups = n / GROUP;
    // rayon's pool, as the dense kernel and candle's CPU ops on x86 (candle's barrier pool spins
    // for about half a millisecond after each product).
    let per_task = (groups / (rayon::current_num_threads() * 8)).clamp(1, 16);
    let mut out = vec![0f32; m * n];
    for first in (0..m).step_by(ROW_BLOCK) {
        let rows = (m - first).min(ROW_BLOCK);
        let block = &acts[first * kb..(first + rows) * kb];
        // [group][row][16], scattered into `out` below
        let mut out_t = vec![0f32; n * rows];
        out_t.par_chunks_mut(per_task * rows * GROUP).zip(w.par_chunks(per_task * group_bytes)).for_each(|(o, wc)| {
            for (og, wg) in o.chunks_exact_mut(rows * GROUP).zip(wc.chunks_exact(group_bytes)) {
                tiles(packing, og, wg, block, rows, kb);
            }
        });
        for (g, og) in out_t.chunks_exact(rows * GROUP).enumerate() {
            for (r, o) in og.chunks_exact(GROUP).enumerate() {
                out[(first + r) * n + g * GROUP..][..GROUP].copy_from_slice(o);
            }
        }
    }
    out
}

/// One group of weight rows against `rows` input rows, in tiles of [`TILE`] (or
/// [`PROMPT_TILE`]) and then fewer. A row's arithmetic is the same in any tile.
fn tiles(packing: Packing, o: &mut [f32], w: &[u8], acts: &[ActBlock], rows: usize, kb: usize) {
    let tile = if rows >= PROMPT_ROWS { PROMPT_TILE } else { TILE };
    let mut r = 0;
    while r < rows {
        // kernels for 1 to 4 rows and for 8
        let t = match (rows - r).min(tile) {
            5..=7 => 4,
            t => t,
        };
        let (o, a) = (&mut o[r * GROUP..(r + t) * GROUP], &acts[r * kb..(r + t) * kb]);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the kernels' one condition is the CPU features, which `matmul` asserted with
        // `available()` (`is_x86_feature_detected!`); they check the sizes of their slices.
        unsafe {
            match (packing, t) {
                (Packing::Q4K, 1) => avx512::q4k::<1>(o, w, a, kb),
                (Packing::Q4K, 2) => avx512::q4k::<2>(o, w, a, kb),
                (Packing::Q4K, 3) => avx512::q4k::<3>(o, w, a, kb),
                (Packing::Q4K, 4) => avx512::q4k::<4>(o, w, a, kb),
                (Packing::Q4K, _) => avx512::q4k::<PROMPT_TILE>(o, w, a, kb),
                (Packing::Q8_0, 1) => avx512::q8_0::<1>(o, w, a, kb),
                (Packing::Q8_0, 2) => avx512::q8_0::<2>(o, w, a, kb),
                (Packing::Q8_0, 3) => avx512::q8_0::<3>(o, w, a, kb),
                (Packing::Q8_0, 4) => avx512::q8_0::<4>(o, w, a, kb),
                (Packing::Q8_0, _) => avx512::q8_0::<PROMPT_TILE>(o, w, a, kb),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("available() is false off x86-64: {:?}", (packing, o.len(), w.len(), a.len(), kb));
        r += t;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::super::packed::{GROUP, Q4K_CHUNK, Q4K_DMIN, Q4K_HIGH2, Q4K_LOW4, Q4K_NIBBLES, Q8_CHUNK, Q8_QUANTS};
    use super::ActBlock;

    /// The i32 at byte `at` of a row's activations, in all 16 lanes (`vpdpbusd`'s broadcast
    /// operand).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
    fn act4(a: &ActBlock, at: usize) -> __m512i {
        let q = &a.qs[at..at + 4];
        _mm512_set1_epi32(i32::from_le_bytes([q[0] as u8, q[1] as u8, q[2] as u8, q[3] as u8]))
    }

    /// 64 bytes at byte `at` of `chunk` (bounds checked).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
    fn load64(chunk: &[u8], at: usize) -> __m512i {
        let bytes = &chunk[at..at + 64];
        // SAFETY: `bytes` is 64 readable bytes; the load has no alignment condition.
        unsafe { _mm512_loadu_si512(bytes.as_ptr() as *const _) }
    }

    /// 16 f16 at byte `at` of `chunk` as f32 (bounds checked).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
    fn load_f16x16(chunk: &[u8], at: usize) -> __m512 {
        let bytes = &chunk[at..at + 32];
        // SAFETY: `bytes` is 32 readable bytes; the load has no alignment condition.
        _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(bytes.as_ptr() as *const __m256i) })
    }

    /// Hints to fetch the chunk after `chunk` in `w` (prefetches never fault: the address may be
    /// past `w`).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
    fn prefetch_next(w: &[u8], at: usize, lines: usize) {
        for l in 0..lines {
            _mm_prefetch::<_MM_HINT_T0>(w.as_ptr().wrapping_add(at + 64 * l) as *const i8);
        }
    }

    /// `o[16r..16r + 16]` = the 16 weight rows of the packed q4k group `w` (`kb` chunks) times
    /// input row `r` (`acts[r·kb..(r + 1)·kb]`), for `R` rows.
    ///
    /// # Safety
    ///
    /// The CPU supports avx512f, avx512bw, avx512vnni and f16c (checked with
    /// `is_x86_feature_detected!`). The sizes are no condition: every read goes through a
    /// bounds-checked slice.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
    pub(super) unsafe fn q4k<const R: usize>(o: &mut [f32], w: &[u8], acts: &[ActBlock], kb: usize) {
        assert!(o.len() == R * GROUP && w.len() == kb * Q4K_CHUNK && acts.len() == R * kb, "q4k kernel: sizes");
        let (low, high, bits45) = (_mm512_set1_epi8(0x0f), _mm512_set1_epi8(0xf0u8 as i8), _mm512_set1_epi8(0x30));
        let mut acc = [_mm512_setzero_ps(); R];
        for (b, chunk) in w.chunks_exact(Q4K_CHUNK).enumerate() {
            // the next chunk's scales here, its nibbles a line per step below
            prefetch_next(w, (b + 1) * Q4K_CHUNK, Q4K_NIBBLES / 64);
            let d = load_f16x16(chunk, 0);
            let dmin = load_f16x16(chunk, Q4K_DMIN);
            // the high nibbles are multiplied as 16·q: their scales take d / 16
            let d16 = _mm512_mul_ps(d, _mm512_set1_ps(1.0 / 16.0));
            let (lo_a, lo_b, h) = (load64(chunk, Q4K_LOW4), load64(chunk, Q4K_LOW4 + 64), load64(chunk, Q4K_HIGH2));
            let join = |lo: __m512i, hi: __m512i| _mm512_or_si512(_mm512_and_si512(lo, low), _mm512_and_si512(hi, bits45));
            // the 6-bit values: scales of sub-blocks 0..4 and 4..8 (16 rows each), then the mins
            // as (2p, 2p + 1) pairs for p = 0, 1 and 2, 3
            let sc = [join(lo_a, _mm512_slli_epi16::<4>(h)), join(lo_b, _mm512_slli_epi16::<2>(h))];
            let mn = [
                join(_mm512_srli_epi16::<4>(lo_a), h),
                join(_mm512_srli_epi16::<4>(lo_b), _mm512_srli_epi16::<2>(h)),
            ];
            let scale = |v: __m128i, dd: __m512| _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(v)), dd);
            let s = [
                scale(_mm512_extracti32x4_epi32::<0>(sc[0]), d),
                scale(_mm512_extracti32x4_epi32::<1>(sc[0]), d16),
                scale(_mm512_extracti32x4_epi32::<2>(sc[0]), d),
                scale(_mm512_extracti32x4_epi32::<3>(sc[0]), d16),
                scale(_mm512_extracti32x4_epi32::<0>(sc[1]), d),
                scale(_mm512_extracti32x4_epi32::<1>(sc[1]), d16),
                scale(_mm512_extracti32x4_epi32::<2>(sc[1]), d),
                scale(_mm512_extracti32x4_epi32::<3>(sc[1]), d16),
            ];
            let pairs = [
                _mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64::<0>(mn[0])),
                _mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64::<1>(mn[0])),
                _mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64::<0>(mn[1])),
                _mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64::<1>(mn[1])),
            ];
            let a: [&ActBlock; R] = std::array::from_fn(|r| &acts[r * kb + b]);
            let mut t = [_mm512_setzero_ps(); R];
            for c in 0..4 {
                let (mut lo, mut hi) = ([_mm512_setzero_si512(); R], [_mm512_setzero_si512(); R]);
                for step in 0..8 {
                    prefetch_next(w, (b + 1) * Q4K_CHUNK + Q4K_NIBBLES + (8 * c + step) * 64, 1);
                    let q = load64(chunk, Q4K_NIBBLES + (8 * c + step) * 64);
                    let (ql, qh) = (_mm512_and_si512(q, low), _mm512_and_si512(q, high));
                    for r in 0..R {
                        lo[r] = _mm512_dpbusd_epi32(lo[r], ql, act4(a[r], 64 * c + 4 * step));
                        hi[r] = _mm512_dpbusd_epi32(hi[r], qh, act4(a[r], 64 * c + 32 + 4 * step));
                    }
                }
                for r in 0..R {
                    t[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(lo[r]), s[2 * c], t[r]);
                    t[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(hi[r]), s[2 * c + 1], t[r]);
                }
            }
            for r in 0..R {
                let mut m = _mm512_setzero_si512();
                for (p, pair) in pairs.iter().enumerate() {
                    let sums = _mm512_set1_epi32(i32::from_le_bytes(std::array::from_fn(|i| {
                        a[r].sums[2 * p + i / 2].to_le_bytes()[i % 2]
                    })));
                    m = _mm512_dpwssd_epi32(m, *pair, sums);
                }
                t[r] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(m), dmin, t[r]);
                acc[r] = _mm512_fmadd_ps(t[r], _mm512_set1_ps(a[r].d), acc[r]);
            }
        }
        for (r, acc_r) in acc.iter().enumerate() {
            let out = &mut o[r * GROUP..(r + 1) * GROUP];
            // SAFETY: `out` is 16 writable f32s; the store has no alignment condition.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr(), *acc_r) };
        }
    }

    /// As [`q4k`], for a packed q8_0 group.
    ///
    /// # Safety
    ///
    /// As [`q4k`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
    pub(super) unsafe fn q8_0<const R: usize>(o: &mut [f32], w: &[u8], acts: &[ActBlock], kb: usize) {
        assert!(o.len() == R * GROUP && w.len() == kb * Q8_CHUNK && acts.len() == R * kb, "q8_0 kernel: sizes");
        let mut acc = [_mm512_setzero_ps(); R];
        for (b, chunk) in w.chunks_exact(Q8_CHUNK).enumerate() {
            let a: [&ActBlock; R] = std::array::from_fn(|r| &acts[r * kb + b]);
            let mut t = [_mm512_setzero_ps(); R];
            for blk in 0..8 {
                // the next chunk's 68 lines, an eighth per block
                let (from, to) = (blk * Q8_CHUNK / 64 / 8, (blk + 1) * Q8_CHUNK / 64 / 8);
                prefetch_next(w, (b + 1) * Q8_CHUNK + from * 64, to - from);
                let d = load_f16x16(chunk, 32 * blk);
                let mut s = [_mm512_setzero_si512(); R];
                for step in 0..8 {
                    let q = load64(chunk, Q8_QUANTS + (8 * blk + step) * 64);
                    for r in 0..R {
                        s[r] = _mm512_dpbusd_epi32(s[r], q, act4(a[r], 32 * blk + 4 * step));
                    }
                }
                for r in 0..R {
                    let offset = _mm512_set1_epi32(128 * a[r].sums[blk] as i32);
                    t[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(s[r], offset)), d, t[r]);
                }
            }
            for r in 0..R {
                acc[r] = _mm512_fmadd_ps(t[r], _mm512_set1_ps(a[r].d), acc[r]);
            }
        }
        for (r, acc_r) in acc.iter().enumerate() {
            let out = &mut o[r * GROUP..(r + 1) * GROUP];
            // SAFETY: `out` is 16 writable f32s; the store has no alignment condition.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr(), *acc_r) };
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::kernels::skip_without;

    /// Whether this CPU lacks a feature of [`available`] (each one said, or a panic where
    /// `JANUS_CPU_FEATURES` lists it).
    fn lacks_the_kernels_features() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            skip_without("avx512f", has!("avx512f"))
                || skip_without("avx512bw", has!("avx512bw"))
                || skip_without("avx512vnni", has!("avx512vnni"))
                || skip_without("f16c", has!("f16c"))
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            skip_without("avx512vnni", false)
        }
    }

    /// Against the f32 product of the dequantized weight with the activations rounded as the
    /// kernels round them (8 bits per 256 values): what is left is the order of the sums. Rows
    /// in every tile size, and more than one block of rows.
    #[test]
    fn matches_the_dequantized_product() -> candle_core::Result<()> {
        if lacks_the_kernels_features() {
            return Ok(());
        }
        let dev = Device::Cpu;
        let cases = [(1, 256, 16), (2, 2048, 96), (3, 512, 48), (5, 512, 32), (16, 768, 64), (70, 512, 32)];
        for (packing, (m, k, n)) in [Packing::Q4K, Packing::Q8_0].iter().flat_map(|p| cases.map(|c| (*p, c))) {
            // uneven magnitudes, so the scales (and q4k's mins) differ between sub-blocks
            let w = (Tensor::randn(0f32, 1.0, (n, k), &dev)? * Tensor::rand(0f32, 3.0, (n, k), &dev)?)?;
            let x: Vec<f32> = Tensor::randn(0f32, 1.0, m * k, &dev)?.to_vec1()?;
            let x_rounded: Vec<f32> = x
                .chunks(QK)
                .flat_map(|b| {
                    let amax = b.iter().fold(0f32, |a, v| a.max(v.abs()));
                    let inv = 127.0 / amax; // as `quantize_row` computes it, to round alike
                    b.iter().map(move |v| (v * inv).round() * (amax / 127.0))
                })
                .collect();
            let q = QTensor::quantize(&w, packing.dtype())?;
            let want = Tensor::from_vec(x_rounded, (m, k), &dev)?.matmul(&q.dequantize(&dev)?.t()?)?;
            let got = matmul(packing, &x, m, k, n, &packing.pack(&q.data()?, n, k));
            let got = Tensor::from_vec(got, (m, n), &dev)?;
            let err = (&got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            let scale = want.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(err <= 1e-4 * scale, "{packing:?} {m}×{k}×{n}: max error {err} of {scale}");
        }
        Ok(())
    }

    /// A row's numbers are its own: the same bits alone as among 1 to 69 other rows (every tile
    /// size and a second block of rows).
    #[test]
    fn a_row_does_not_depend_on_its_mates() -> candle_core::Result<()> {
        if lacks_the_kernels_features() {
            return Ok(());
        }
        let dev = Device::Cpu;
        let (k, n) = (512, 48);
        let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
        let x: Vec<f32> = Tensor::randn(0f32, 1.0, 70 * k, &dev)?.to_vec1()?;
        for packing in [Packing::Q4K, Packing::Q8_0] {
            let packed = packing.pack(&QTensor::quantize(&w, packing.dtype())?.data()?, n, k);
            let alone: Vec<Vec<f32>> = x.chunks(k).map(|row| matmul(packing, row, 1, k, n, &packed)).collect();
            for m in [2, 3, 4, 5, 9, 64, 70] {
                let all = matmul(packing, &x[..m * k], m, k, n, &packed);
                for (r, row) in all.chunks(n).enumerate() {
                    assert!(row == alone[r], "{packing:?}: row {r} of {m} differs from the row alone");
                }
            }
        }
        Ok(())
    }
}
