//! The CPU product of q4k weights with a few f32 rows (every decode step), on x86 CPUs with
//! AVX-512 VNNI, reading the weight's stored blocks once for all rows.
//!
//! candle's `k_quants::matmul` computes each (row, weight row) dot product on its own, unpacking
//! every 4-bit block once per input row with AVX2; at the two rows of a CFG step it is compute-
//! bound at about half the memory bandwidth (docs/PERF.md, "q4k kernel"). Here each block is
//! unpacked once (nibbles, and the eight 6-bit scale/min pairs widened to i32 lanes), then used
//! for every row with `vpdpbusd` (64 u8×i8 products per instruction). The activations are
//! quantized per 256 values to i8 with one f32 scale, as ggml's Q8_K, and their 32-value sums are
//! kept for the min term. Other CPUs, and more rows, use candle's.
//!
//! A q4k block (ggml's `block_q4_K`, 144 bytes, 256 weights): `d`, `dmin` (f16), 12 bytes of
//! packed 6-bit scales and mins for 8 sub-blocks of 32, then 128 bytes of nibbles: byte `32c + i`
//! holds weight `64c + i` (sub-block 2c) in its low nibble and `64c + 32 + i` (2c + 1) in its high
//! one. Weight = `d·scale[s]·q − dmin·min[s]`.

/// Values per block.
const QK: usize = 256;
/// Bytes per stored block.
const BLOCK_BYTES: usize = 144;
/// Rows up to which this kernel is used (beyond, candle's tiled product reuses blocks anyway).
pub const MAX_ROWS: usize = 16;

/// Whether this CPU runs the kernel.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// One row's 256 activations as i8 with a scale, in the kernel's sub-block order, and the sums
/// of the 32-value sub-blocks (in the lanes where the kernel's min vector has them).
#[derive(Clone)]
#[repr(C, align(64))]
struct ActBlock {
    /// Sub-blocks in the order 0, 2, 1, 3, 4, 6, 5, 7: the order the nibbles unpack in.
    qs: [i8; QK],
    /// Lanes 8..16: the sums of sub-blocks 0..8 times `d` (the activations' values); 0..8 zero.
    sums: [f32; 16],
    d: f32,
}

/// Where sub-block `s` goes in [`ActBlock::qs`].
const SLOT: [usize; 8] = [0, 2, 1, 3, 4, 6, 5, 7];

fn quantize_row(x: &[f32], out: &mut [ActBlock]) {
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
                ab.qs[32 * SLOT[s] + i] = q;
                sum += q as i32;
            }
            ab.sums[8 + s] = sum as f32 * ab.d;
        }
    }
}

/// `y[m, n] = x[m, k] · Wᵀ` for the q4k weight `w` (`n` rows of `k / 256` stored blocks).
/// Needs [`available`]; `m ≤ MAX_ROWS`.
pub fn matmul(x: &[f32], m: usize, k: usize, n: usize, w: &[u8]) -> Vec<f32> {
    assert!(available() && m <= MAX_ROWS && k.is_multiple_of(QK));
    assert!(x.len() == m * k && w.len() == n * (k / QK) * BLOCK_BYTES, "q4k matmul: sizes");
    let kb = k / QK;
    let zero = ActBlock { qs: [0; QK], sums: [0.0; 16], d: 0.0 };
    let mut acts = vec![zero; m * kb];
    for (row, a) in x.chunks_exact(k).zip(acts.chunks_exact_mut(kb)) {
        quantize_row(row, a);
    }
    let row_bytes = kb * BLOCK_BYTES;
    let mut out_t = vec![0f32; n * m]; // [n, m], transposed back below
    let out_ptr = out_t.as_mut_ptr() as usize;
    // candle's own pool (its other CPU ops run there too, so the two pools do not fight over
    // the cores between ops); work items are single weight rows, grabbed in chunks.
    candle_core::utils::barrier_pool().execute_chunked(n, |rows| {
        let o = unsafe {
            // SAFETY: the ranges handed out are disjoint and inside 0..n.
            std::slice::from_raw_parts_mut((out_ptr as *mut f32).add(rows.start * m), rows.len() * m)
        };
        let wc = &w[rows.start * row_bytes..rows.end * row_bytes];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `available()` was checked above; sizes were checked against m, k and n.
        unsafe {
            avx512::rows(o, wc, &acts, m, kb)
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (o, wc);
    });
    let mut out = vec![0f32; m * n];
    for (j, col) in out_t.chunks_exact(m).enumerate() {
        for (i, &v) in col.iter().enumerate() {
            out[i * n + j] = v;
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{ActBlock, BLOCK_BYTES, MAX_ROWS};

    /// Bytes ahead of the current block that the weight stream prefetches.
    const PREFETCH: usize = 4 * BLOCK_BYTES;

    /// `o[j·m + r] = w_j · x_r` for the weight rows `w_j` of one chunk.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn rows(o: &mut [f32], w: &[u8], acts: &[ActBlock], m: usize, kb: usize) {
        let row_bytes = kb * BLOCK_BYTES;
        let nib = _mm512_set1_epi8(0x0f);
        // i16 lane → scale index for the four products of a block: maddubs leaves 16 lanes per
        // 32-value sub-block, the first sub-block of the pair in lanes 0..16
        let idx = [(0, 2), (1, 3), (4, 6), (5, 7)].map(|(a, b): (i16, i16)| {
            let mut v = [a; 32];
            v[16..].fill(b);
            _mm512_loadu_si512(v.as_ptr() as *const _)
        });
        for (j, wr) in w.chunks_exact(row_bytes).enumerate() {
            let mut acc = [_mm512_setzero_ps(); MAX_ROWS];
            for b in 0..kb {
                let blk = wr.as_ptr().add(b * BLOCK_BYTES);
                _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH) as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH + 64) as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH + 128) as *const i8);
                let d = half::f16::from_le_bytes([*blk, *blk.add(1)]).to_f32();
                let dmin = half::f16::from_le_bytes([*blk.add(2), *blk.add(3)]).to_f32();
                let sm_bytes = _mm_loadu_si128(scales_and_mins(blk.add(4)).as_ptr() as *const __m128i);
                // the 6-bit scales as i16 (lanes 0..8), broadcast per sub-block
                let sm16 = _mm512_cvtepu8_epi16(_mm256_castsi128_si256(sm_bytes));
                let sc = idx.map(|i| _mm512_permutexvar_epi16(i, sm16));
                // dmin × the mins as f32 in lanes 8..16 (lanes 0..8, the scales, meet zero sums)
                let mins = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(sm_bytes)), _mm512_set1_ps(dmin));
                let q01 = _mm512_loadu_si512(blk.add(16) as *const _);
                let q23 = _mm512_loadu_si512(blk.add(16 + 64) as *const _);
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
                        let pairs = _mm512_maddubs_epi16(*wt, _mm512_loadu_si512(aq.add(64 * t) as *const _));
                        p = _mm512_dpwssd_epi32(p, pairs, *st);
                    }
                    *acc_r = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_set1_ps(d * a.d), *acc_r);
                    *acc_r = _mm512_fnmadd_ps(mins, _mm512_loadu_ps(a.sums.as_ptr()), *acc_r);
                }
            }
            for (r, acc_r) in acc.iter().enumerate().take(m) {
                o[j * m + r] = _mm512_reduce_add_ps(*acc_r);
            }
        }
    }

    /// The 8 scales then the 8 mins of a block from its 12 packed bytes (ggml's
    /// `get_scale_min_k4` for all eight sub-blocks at once).
    #[inline(always)]
    unsafe fn scales_and_mins(p: *const u8) -> [u8; 16] {
        const KMASK1: u32 = 0x3f3f_3f3f;
        const KMASK2: u32 = 0x0f0f_0f0f;
        const KMASK3: u32 = 0x0303_0303;
        let b = std::slice::from_raw_parts(p, 12);
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

    /// Against the f32 product of the dequantized weight with the activations rounded as the
    /// kernel rounds them (8 bits per 256 values): what is left is the order of the sums.
    #[test]
    fn matches_the_dequantized_product() -> candle_core::Result<()> {
        if !available() {
            return Ok(());
        }
        let dev = Device::Cpu;
        for (m, k, n) in [(1, 256, 16), (2, 2048, 96), (5, 512, 33), (16, 768, 40)] {
            // uneven magnitudes, so the 6-bit scales and mins differ between sub-blocks
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
            let q = QTensor::quantize(&w, GgmlDType::Q4K)?;
            let want = Tensor::from_vec(x_rounded, (m, k), &dev)?.matmul(&q.dequantize(&dev)?.t()?)?;
            let got = Tensor::from_vec(matmul(&x, m, k, n, &q.data()?), (m, n), &dev)?;
            let err = (&got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            let scale = want.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(err <= 1e-4 * scale, "{m}×{k}×{n}: max error {err} of {scale}");
        }
        Ok(())
    }
}
