//! CPU products of quantized weights with f32 rows on x86 CPUs with AVX-512 VNNI, reading the
//! weight's stored blocks once for all rows and keeping no second copy of them.
//!
//! * q4k, a few rows (every decode step). candle's `k_quants::matmul` computes each (row, weight
//!   row) dot product on its own, unpacking every 4-bit block once per input row with AVX2; at
//!   the two rows of a CFG step it was compute-bound (docs/PERF.md, "which kernel"). Here each
//!   block is unpacked once (nibbles, and the eight 6-bit scale/min pairs widened to lanes), then
//!   used for every row with `vpmaddubsw` + `vpdpwssd`.
//! * q8_0, any number of rows. candle's fast q8_0 path on these CPUs repacks the weight into tiles
//!   beside the stored blocks (twice the memory); this one uses the blocks as stored, `vpdpbusd`
//!   on |w| and the activations with w's sign, in tiles of 16 rows.
//!
//! The activations are quantized per 256 values to i8 with one f32 scale, as ggml's Q8_K, and
//! for q4k their 32-value sums are kept for the min term. Other CPUs use candle's products.
//!
//! A q4k block (ggml's `block_q4_K`, 144 bytes, 256 weights): `d`, `dmin` (f16), 12 bytes of
//! packed 6-bit scales and mins for 8 sub-blocks of 32, then 128 bytes of nibbles: byte `32c + i`
//! holds weight `64c + i` (sub-block 2c) in its low nibble and `64c + 32 + i` (2c + 1) in its high
//! one. Weight = `d·scale[s]·q − dmin·min[s]`. A q8_0 block (34 bytes, 32 weights): `d` (f16),
//! then 32 i8; weight = `d·q`.

use rayon::prelude::*;

/// Values per block.
const QK: usize = 256;
/// Bytes per stored q4k block.
const BLOCK_BYTES: usize = 144;
/// Bytes of the eight q8_0 blocks that cover 256 values.
const Q8_SPAN_BYTES: usize = 8 * 34;
/// Input rows multiplied per pass over the weight: their quantized activations (~84 KB at
/// k = 1024) stay in L2.
const ROW_BLOCK: usize = 64;
/// Most rows of one call of the q4k kernel (a decode step's rows go in tiles of this many;
/// prompts take candle's product, which reuses each block for many rows anyway); also the q8_0
/// kernel's tile of rows.
pub const MAX_ROWS: usize = 16;

/// Whether [`matmul_q8_0`] takes a weight whose rows hold `k` values on this CPU.
pub fn takes_q8_0(k: usize) -> bool {
    available() && k.is_multiple_of(QK)
}

/// Whether [`matmul_q4k`] takes a weight whose rows hold `k` values (up to [`MAX_ROWS`] rows
/// at a time).
pub fn takes_q4k(k: usize) -> bool {
    takes_q8_0(k)
}

/// Whether this CPU runs the kernels.
fn available() -> bool {
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

/// One row's 256 activations as i8 with a scale, in a kernel's sub-block order, and the sums
/// of the 32-value sub-blocks (in the lanes where the q4k kernel's min vector has them).
#[derive(Clone)]
#[repr(C, align(64))]
struct ActBlock {
    /// Sub-block `s` at `32·slots[s]` ([`Q4K_SLOTS`] or [`Q8_SLOTS`]).
    qs: [i8; QK],
    /// Lanes 8..16: the sums of sub-blocks 0..8 times `d` (the activations' values); 0..8 zero.
    sums: [f32; 16],
    d: f32,
}

/// Where sub-block `s` goes in [`ActBlock::qs`] for q4k: the order the nibbles unpack in.
const Q4K_SLOTS: [usize; 8] = [0, 2, 1, 3, 4, 6, 5, 7];
/// For q8_0: in order.
const Q8_SLOTS: [usize; 8] = [0, 1, 2, 3, 4, 5, 6, 7];

fn quantize_row(x: &[f32], out: &mut [ActBlock], slots: &[usize; 8]) {
    for (xb, ab) in x.chunks_exact(QK).zip(out) {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        ab.sums = [0.0; 16];
        if amax == 0.0 {
            ab.d = 0.0;
            ab.qs = [0; QK];
            continue;
        }
        ab.d = amax / 127.0;
        let inv = 127.0 / amax;
        for s in 0..8 {
            let mut sum = 0i32;
            for i in 0..32 {
                let q = (xb[32 * s + i] * inv).round().clamp(-127.0, 127.0) as i8;
                ab.qs[32 * slots[s] + i] = q;
                sum += q as i32;
            }
            ab.sums[8 + s] = sum as f32 * ab.d;
        }
    }
}

/// `y[m, n] = x[m, k] · Wᵀ` for the q4k weight `w` (`n` rows of `k / 256` stored blocks).
/// Needs [`takes_q4k`].
pub fn matmul_q4k(x: &[f32], m: usize, k: usize, n: usize, w: &[u8]) -> Vec<f32> {
    assert!(m <= MAX_ROWS, "q4k kernel: at most {MAX_ROWS} rows");
    #[cfg(target_arch = "x86_64")]
    return drive(x, (m, k, n), w, BLOCK_BYTES, &Q4K_SLOTS, avx512::rows_q4k);
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("available() is false off x86-64: {:?}", (x.len(), m, k, n, w.len()))
}

/// `y[m, n] = x[m, k] · Wᵀ` for the q8_0 weight `w` (`n` rows of `k / 32` stored blocks), any
/// number of rows. Needs [`takes_q8_0`].
pub fn matmul_q8_0(x: &[f32], m: usize, k: usize, n: usize, w: &[u8]) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    return drive(x, (m, k, n), w, Q8_SPAN_BYTES, &Q8_SLOTS, avx512::rows_q8_0);
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("available() is false off x86-64: {:?}", (x.len(), m, k, n, w.len()))
}

/// A kernel: `o[j·m + r] = w_j · x_r` for the weight rows `w_j` of one chunk.
type Rows = unsafe fn(&mut [f32], &[u8], &[ActBlock], usize, usize);

/// Quantizes the rows, runs `kernel` over chunks of weight rows and returns `y [m, n]`.
fn drive(
    x: &[f32],
    (m, k, n): (usize, usize, usize),
    w: &[u8],
    span: usize,
    slots: &[usize; 8],
    kernel: Rows,
) -> Vec<f32> {
    assert!(available() && k.is_multiple_of(QK), "quantized CPU kernel: needs AVX-512 VNNI and k % 256 == 0");
    let kb = k / QK;
    let row_bytes = kb * span;
    assert!(x.len() == m * k && w.len() == n * row_bytes, "quantized CPU kernel: sizes");
    let zero = ActBlock { qs: [0; QK], sums: [0.0; 16], d: 0.0 };
    let mut acts = vec![zero; m * kb];
    for (row, a) in x.chunks_exact(k).zip(acts.chunks_exact_mut(kb)) {
        quantize_row(row, a, slots);
    }
    // rayon's pool, as the dense kernel and candle's CPU ops on x86 (candle's barrier pool, used
    // here before, spins for about half a millisecond after each product: a quarter of a 2-core
    // decode step went to spinning beside the attention and the draws).
    let chunk = (n / (rayon::current_num_threads() * 8)).clamp(1, 256);
    let mut out = vec![0f32; m * n];
    // Rows in blocks whose activations stay in L2 while every weight row passes over them (a
    // packed prefill of 8 prompts, 1344 rows, streamed 1.7 MB of activations per weight row).
    for first in (0..m).step_by(ROW_BLOCK) {
        let rows = (m - first).min(ROW_BLOCK);
        let block = &acts[first * kb..(first + rows) * kb];
        let mut out_t = vec![0f32; n * rows]; // [n, rows], transposed into `out` below
        out_t.par_chunks_mut(chunk * rows).zip(w.par_chunks(chunk * row_bytes)).for_each(|(o, wc)| {
            // SAFETY: `kernel` is `rows_q4k` or `rows_q8_0`, whose one condition is the CPU
            // features that `available()` (asserted above) found with `is_x86_feature_detected!`.
            // Their reads stay inside `wc`'s whole rows and `block`'s ActBlocks whatever the sizes
            // (checked above against m, k and n all the same).
            unsafe { kernel(o, wc, block, rows, kb) }
        });
        for (j, col) in out_t.chunks_exact(rows).enumerate() {
            for (i, &v) in col.iter().enumerate() {
                out[(first + i) * n + j] = v;
            }
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{ActBlock, BLOCK_BYTES, MAX_ROWS, Q8_SPAN_BYTES};

    /// Bytes ahead of the current block that the weight stream prefetches.
    const PREFETCH: usize = 4 * BLOCK_BYTES;

    /// `o[j·m + r] = w_j · x_r` for the q8_0 weight rows `w_j` of one chunk, rows in tiles.
    ///
    /// # Safety
    ///
    /// The CPU supports avx512f, avx512bw, avx512vnni and f16c (checked with
    /// `is_x86_feature_detected!`, as [`super::available`] does). The sizes are no condition:
    /// raw reads stay inside one `kb · 272`-byte row of `w` from `chunks_exact` and one
    /// [`ActBlock`] taken by checked indexing; `o` and `acts` are indexed with bounds checks.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
    pub(super) unsafe fn rows_q8_0(o: &mut [f32], w: &[u8], acts: &[ActBlock], m: usize, kb: usize) {
        let row_bytes = kb * Q8_SPAN_BYTES;
        // lanes 0..8 take block 2p's scale, lanes 8..16 block 2p + 1's
        let pair_lanes = [0, 1, 2, 3].map(|p| {
            let mut v = [2 * p; 16];
            v[8..].fill(2 * p + 1);
            // SAFETY: `v` is 16 i32s, the 64 bytes this load reads.
            unsafe { _mm512_loadu_si512(v.as_ptr() as *const _) }
        });
        for (j, wr) in w.chunks_exact(row_bytes).enumerate() {
            for r0 in (0..m).step_by(MAX_ROWS) {
                let mt = (m - r0).min(MAX_ROWS);
                let mut acc = [_mm512_setzero_ps(); MAX_ROWS];
                for b in 0..kb {
                    // SAFETY: `wr` is one row of kb · Q8_SPAN_BYTES bytes (`chunks_exact`) and
                    // b < kb, so the span's Q8_SPAN_BYTES bytes from here are inside `wr`.
                    let span = unsafe { wr.as_ptr().add(b * Q8_SPAN_BYTES) };
                    // Prefetches are safe (hints that never fault), so their addresses come from
                    // `wrapping_add`, with no in-bounds claim: they may point past `w`.
                    _mm_prefetch::<_MM_HINT_T0>(span.wrapping_add(2 * Q8_SPAN_BYTES) as *const i8);
                    _mm_prefetch::<_MM_HINT_T0>(span.wrapping_add(2 * Q8_SPAN_BYTES + 64) as *const i8);
                    _mm_prefetch::<_MM_HINT_T0>(span.wrapping_add(2 * Q8_SPAN_BYTES + 128) as *const i8);
                    _mm_prefetch::<_MM_HINT_T0>(span.wrapping_add(2 * Q8_SPAN_BYTES + 192) as *const i8);
                    _mm_prefetch::<_MM_HINT_T0>(span.wrapping_add(2 * Q8_SPAN_BYTES + 256) as *const i8);
                    // the eight blocks' scales, converted together (F16C)
                    let mut dh = [0u16; 8];
                    for (i, d) in dh.iter_mut().enumerate() {
                        // SAFETY: block i < 8 of the span starts at 34·i and opens with its f16
                        // `d`: bytes 34·i and 34·i + 1 ≤ 239, inside the span's 272 bytes.
                        *d = unsafe { u16::from_le_bytes([*span.add(34 * i), *span.add(34 * i + 1)]) };
                    }
                    // SAFETY: `dh` is 8 u16s, the 16 bytes this load reads.
                    let dh = unsafe { _mm_loadu_si128(dh.as_ptr() as *const __m128i) };
                    let d8 = _mm512_castps256_ps512(_mm256_cvtph_ps(dh));
                    // four pairs of blocks: |w| as u8, w's sign, and the two scales per 8 lanes
                    let pairs = [0usize, 1, 2, 3].map(|p| {
                        // SAFETY: blocks 2p and 2p + 1 (p < 4) start at 34·2p and 34·(2p + 1);
                        // each load reads their 32 quants, bytes 2..34 of the block, so the last
                        // byte read is 34·7 + 33 = 271, inside the span's 272 bytes.
                        let (lo, hi) = unsafe {
                            let (b0, b1) = (span.add(2 * p * 34), span.add((2 * p + 1) * 34));
                            (
                                _mm256_loadu_si256(b0.add(2) as *const __m256i),
                                _mm256_loadu_si256(b1.add(2) as *const __m256i),
                            )
                        };
                        let q = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
                        let d = _mm512_permutexvar_ps(pair_lanes[p], d8);
                        (_mm512_abs_epi8(q), _mm512_movepi8_mask(q), d)
                    });
                    for (r, acc_r) in acc.iter_mut().enumerate().take(mt) {
                        let a = &acts[(r0 + r) * kb + b];
                        let mut t = _mm512_setzero_ps();
                        for (p, (wabs, neg, d)) in pairs.iter().enumerate() {
                            // SAFETY: p < 4, so the 64 bytes from 64·p are inside `a.qs` (256).
                            let x = unsafe { _mm512_loadu_si512(a.qs.as_ptr().add(64 * p) as *const _) };
                            let x = _mm512_mask_sub_epi8(x, *neg, _mm512_setzero_si512(), x);
                            let dp = _mm512_dpbusd_epi32(_mm512_setzero_si512(), *wabs, x);
                            t = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dp), *d, t);
                        }
                        *acc_r = _mm512_fmadd_ps(t, _mm512_set1_ps(a.d), *acc_r);
                    }
                }
                for (r, acc_r) in acc.iter().enumerate().take(mt) {
                    o[j * m + r0 + r] = _mm512_reduce_add_ps(*acc_r);
                }
            }
        }
    }

    /// `o[j·m + r] = w_j · x_r` for the q4k weight rows `w_j` of one chunk (`m ≤ MAX_ROWS`).
    ///
    /// # Safety
    ///
    /// The CPU supports avx512f, avx512bw, avx512vnni and f16c (checked with
    /// `is_x86_feature_detected!`, as [`super::available`] does). The sizes are no condition:
    /// raw reads stay inside one `kb · 144`-byte row of `w` from `chunks_exact` and one
    /// [`ActBlock`] taken by checked indexing; `o` and `acts` are indexed with bounds checks, and
    /// rows past `MAX_ROWS` are left out by `take`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
    pub(super) unsafe fn rows_q4k(o: &mut [f32], w: &[u8], acts: &[ActBlock], m: usize, kb: usize) {
        let row_bytes = kb * BLOCK_BYTES;
        let nib = _mm512_set1_epi8(0x0f);
        // i16 lane → scale index for the four products of a block: maddubs leaves 16 lanes per
        // 32-value sub-block, the first sub-block of the pair in lanes 0..16
        let idx = [(0, 2), (1, 3), (4, 6), (5, 7)].map(|(a, b): (i16, i16)| {
            let mut v = [a; 32];
            v[16..].fill(b);
            // SAFETY: `v` is 32 i16s, the 64 bytes this load reads.
            unsafe { _mm512_loadu_si512(v.as_ptr() as *const _) }
        });
        for (j, wr) in w.chunks_exact(row_bytes).enumerate() {
            let mut acc = [_mm512_setzero_ps(); MAX_ROWS];
            for b in 0..kb {
                // SAFETY: `wr` is one row of kb · BLOCK_BYTES bytes (`chunks_exact`) and b < kb,
                // so the block's BLOCK_BYTES (144) bytes from here are inside `wr`.
                let blk = unsafe { wr.as_ptr().add(b * BLOCK_BYTES) };
                // Prefetches are safe (hints that never fault), so their addresses come from
                // `wrapping_add`, with no in-bounds claim: they may point past `w`.
                _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH) as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH + 64) as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH + 128) as *const i8);
                // d and dmin (F16C)
                // SAFETY: bytes 0..4 of the block's 144 (its f16 `d` and `dmin`).
                let dd_bits = unsafe { i32::from_le_bytes([*blk, *blk.add(1), *blk.add(2), *blk.add(3)]) };
                let dd = _mm_cvtph_ps(_mm_cvtsi32_si128(dd_bits));
                let (d, dmin) = (_mm_cvtss_f32(dd), _mm_cvtss_f32(_mm_movehdup_ps(dd)));
                // SAFETY: `scales_and_mins` reads bytes 4..16 of the block's 144; the load reads
                // the 16 bytes of the array it returns.
                let sm_bytes = unsafe { _mm_loadu_si128(scales_and_mins(blk.add(4)).as_ptr() as *const __m128i) };
                // the 6-bit scales as i16 (lanes 0..8), broadcast per sub-block
                let sm16 = _mm512_cvtepu8_epi16(_mm256_castsi128_si256(sm_bytes));
                let sc = idx.map(|i| _mm512_permutexvar_epi16(i, sm16));
                // dmin × the mins as f32 in lanes 8..16 (lanes 0..8, the scales, meet zero sums)
                let mins = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(sm_bytes)), _mm512_set1_ps(dmin));
                // SAFETY: the nibbles are bytes 16..144 of the block's 144: two 64-byte loads.
                let (q01, q23) = unsafe {
                    (_mm512_loadu_si512(blk.add(16) as *const _), _mm512_loadu_si512(blk.add(16 + 64) as *const _))
                };
                // sub-blocks [0, 2], [1, 3], [4, 6], [5, 7] as unsigned bytes
                let w4 = [
                    _mm512_and_si512(q01, nib),
                    _mm512_and_si512(_mm512_srli_epi16::<4>(q01), nib),
                    _mm512_and_si512(q23, nib),
                    _mm512_and_si512(_mm512_srli_epi16::<4>(q23), nib),
                ];
                for (r, acc_r) in acc.iter_mut().enumerate().take(m) {
                    let a = &acts[r * kb + b];
                    let aq = a.qs.as_ptr();
                    let mut p = _mm512_setzero_si512();
                    for (t, (wt, st)) in w4.iter().zip(&sc).enumerate() {
                        // pairs of u8×i8 products as i16 (at most 2·15·127), then × scale, summed
                        // SAFETY: t < 4, so the 64 bytes from 64·t are inside `a.qs` (256).
                        let at = unsafe { _mm512_loadu_si512(aq.add(64 * t) as *const _) };
                        let pairs = _mm512_maddubs_epi16(*wt, at);
                        p = _mm512_dpwssd_epi32(p, pairs, *st);
                    }
                    *acc_r = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_set1_ps(d * a.d), *acc_r);
                    // SAFETY: `a.sums` is 16 floats, the 16 this load reads.
                    let sums = unsafe { _mm512_loadu_ps(a.sums.as_ptr()) };
                    *acc_r = _mm512_fnmadd_ps(mins, sums, *acc_r);
                }
            }
            for (r, acc_r) in acc.iter().enumerate().take(m) {
                o[j * m + r] = _mm512_reduce_add_ps(*acc_r);
            }
        }
    }

    /// The 8 scales then the 8 mins of a block from its 12 packed bytes (ggml's
    /// `get_scale_min_k4` for all eight sub-blocks at once).
    ///
    /// # Safety
    ///
    /// `p` is valid for reads of 12 bytes that nothing writes while the function runs (bytes
    /// 4..16 of a q4k block).
    #[inline(always)]
    unsafe fn scales_and_mins(p: *const u8) -> [u8; 16] {
        const KMASK1: u32 = 0x3f3f_3f3f;
        const KMASK2: u32 = 0x0f0f_0f0f;
        const KMASK3: u32 = 0x0303_0303;
        // SAFETY: the caller guarantees 12 readable bytes at `p`, unchanged while `b` lives (to
        // the end of this function); u8 needs no alignment.
        let b = unsafe { std::slice::from_raw_parts(p, 12) };
        let u = [0, 4, 8].map(|i| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]));
        let sc_lo = u[0] & KMASK1;
        let mn_lo = u[1] & KMASK1;
        let sc_hi = (u[2] & KMASK2) | (((u[0] >> 6) & KMASK3) << 4);
        let mn_hi = ((u[2] >> 4) & KMASK2) | (((u[1] >> 6) & KMASK3) << 4);
        let mut out = [0u8; 16];
        out[0..4].copy_from_slice(&sc_lo.to_le_bytes());
        out[4..8].copy_from_slice(&sc_hi.to_le_bytes());
        out[8..12].copy_from_slice(&mn_lo.to_le_bytes());
        out[12..16].copy_from_slice(&mn_hi.to_le_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::{GgmlDType, QTensor};
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
    /// kernels round them (8 bits per 256 values): what is left is the order of the sums. q8_0
    /// also with more rows than one tile.
    #[test]
    fn matches_the_dequantized_product() -> candle_core::Result<()> {
        if lacks_the_kernels_features() {
            return Ok(());
        }
        let dev = Device::Cpu;
        let cases = [(1, 256, 16), (2, 2048, 96), (5, 512, 33), (16, 768, 40), (37, 512, 24)];
        for (block, (m, k, n)) in [GgmlDType::Q4K, GgmlDType::Q8_0].iter().flat_map(|b| cases.map(|c| (*b, c))) {
            if block == GgmlDType::Q4K && m > MAX_ROWS {
                continue;
            }
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
            let q = QTensor::quantize(&w, block)?;
            let want = Tensor::from_vec(x_rounded, (m, k), &dev)?.matmul(&q.dequantize(&dev)?.t()?)?;
            let got = match block {
                GgmlDType::Q4K => matmul_q4k(&x, m, k, n, &q.data()?),
                _ => matmul_q8_0(&x, m, k, n, &q.data()?),
            };
            let got = Tensor::from_vec(got, (m, n), &dev)?;
            let err = (&got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            let scale = want.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(err <= 1e-4 * scale, "{block:?} {m}×{k}×{n}: max error {err} of {scale}");
        }
        Ok(())
    }
}
