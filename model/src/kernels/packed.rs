//! The row-interleaved layout of quantized weights that [`super::quant`]'s kernels stream: the
//! stored blocks of 16 weight rows side by side, rearranged once at load into the same number of
//! bytes (so packing never grows memory), so that one 64-byte load holds 4 bytes of each of the
//! 16 rows and a `vpdpbusd` lane is one weight row: no per-row unpacking of scales, no
//! horizontal sums, and each input row's 4 activation bytes come as a broadcast.
//!
//! A weight of `n` rows of `kb` blocks becomes `n / 16` groups of `kb` chunks, chunk `(g, b)` at
//! byte `(g·kb + b)·CHUNK` holding block `b` of rows `16g..16g + 16`:
//!
//! * **q4k** (ggml's `block_q4_K`, 144 bytes per row, 2304 per chunk): the 16 `d` (f16), the 16
//!   `dmin`, then the 6-bit scales and mins of all rows (192 bytes: the values `v[0..256]` with
//!   `v[16s + r]` = row r's scale of sub-block s and `v[128 + 32p + 2r + e]` = its min of
//!   sub-block `2p + e`; byte `j < 128` holds `v[j]`'s low 4 bits and `v[128 + j]`'s above them,
//!   byte `128 + j` (j < 64) the high 2 bits of `v[j]`, `v[64 + j]`, `v[128 + j]` and
//!   `v[192 + j]`, in that order from bit 0), then for each pair of sub-blocks `c` (0..4) and
//!   step `t` (0..8) 64 bytes: each row's nibble bytes `32c + 4t .. 32c + 4t + 4` (their low
//!   nibbles are weights of sub-block `2c`, their high ones of `2c + 1`).
//! * **q8_0** (34 bytes per 32 weights, 8 blocks to a chunk of 256 weights, 4352 bytes): the
//!   16 rows' `d` for each of the 8 blocks (256 bytes), then for each block and step `t` (0..8)
//!   64 bytes: each row's quants `4t .. 4t + 4` as unsigned bytes (`q + 128`, so `vpdpbusd` takes
//!   them as they are; the kernel takes 128 × the activations' sum back off).

use candle_core::quantized::GgmlDType;

/// Weight rows interleaved in a chunk: one `vpdpbusd` lane each.
pub const GROUP: usize = 16;
/// Weights per chunk row (one q4k block, eight q8_0 blocks), and per activation block.
pub const QK: usize = 256;
/// Bytes of a stored q4k block.
pub const Q4K_BLOCK: usize = 144;
/// Bytes of the eight stored q8_0 blocks that cover 256 weights.
pub const Q8_SPAN: usize = 8 * 34;
/// Bytes of a packed q4k chunk.
pub const Q4K_CHUNK: usize = GROUP * Q4K_BLOCK;
/// Bytes of a packed q8_0 chunk.
pub const Q8_CHUNK: usize = GROUP * Q8_SPAN;
// Chunks are whole 64-byte lines, so a packed weight is too (`modules::quant` holds it in lines).
const _: () = assert!(Q4K_CHUNK.is_multiple_of(64) && Q8_CHUNK.is_multiple_of(64));
/// Where a q4k chunk's parts start.
pub const Q4K_DMIN: usize = 32;
pub const Q4K_LOW4: usize = 64;
pub const Q4K_HIGH2: usize = 192;
pub const Q4K_NIBBLES: usize = 256;
/// Where a q8_0 chunk's quants start.
pub const Q8_QUANTS: usize = 256;

/// The block types the layout has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    Q4K,
    Q8_0,
}

impl Packing {
    /// The layout of a GGML block type, if it has one.
    pub fn of(dtype: GgmlDType) -> Option<Self> {
        match dtype {
            GgmlDType::Q4K => Some(Packing::Q4K),
            GgmlDType::Q8_0 => Some(Packing::Q8_0),
            _ => None,
        }
    }

    /// The GGML block type whose blocks this layout rearranges.
    pub fn dtype(self) -> GgmlDType {
        match self {
            Packing::Q4K => GgmlDType::Q4K,
            Packing::Q8_0 => GgmlDType::Q8_0,
        }
    }

    /// Bytes of one stored row span of 256 weights (one chunk row).
    pub fn span(self) -> usize {
        match self {
            Packing::Q4K => Q4K_BLOCK,
            Packing::Q8_0 => Q8_SPAN,
        }
    }

    /// Whether a weight `[n, k]` packs: whole groups of rows and whole 256-weight spans.
    pub fn fits(n: usize, k: usize) -> bool {
        n.is_multiple_of(GROUP) && k.is_multiple_of(QK) && k > 0
    }

    /// The stored blocks `data` of a weight `[n, k]` in the packed layout (the same length).
    ///
    /// # Panics
    ///
    /// As [`Packing::pack_into`].
    pub fn pack(self, data: &[u8], n: usize, k: usize) -> Vec<u8> {
        let mut out = vec![0u8; data.len()];
        self.pack_into(data, n, k, &mut out);
        out
    }

    /// [`Packing::pack`] into `out` (as long as `data`).
    ///
    /// # Panics
    ///
    /// If the weight does not [`Packing::fits`], `data` is not `n · k / 256` spans or `out` is
    /// not as long.
    pub fn pack_into(self, data: &[u8], n: usize, k: usize, out: &mut [u8]) {
        assert!(Self::fits(n, k), "packing a [{n}, {k}] weight: needs rows in 16s and k in 256s");
        let (kb, span) = (k / QK, self.span());
        assert_eq!(data.len(), n * kb * span, "packing: {} bytes for a [{n}, {k}] weight", data.len());
        assert_eq!(out.len(), data.len(), "packing: the output's length");
        for (g, rows) in data.chunks_exact(GROUP * kb * span).enumerate() {
            for b in 0..kb {
                let spans: [&[u8]; GROUP] = std::array::from_fn(|r| &rows[(r * kb + b) * span..][..span]);
                let chunk = &mut out[(g * kb + b) * span * GROUP..][..span * GROUP];
                match self {
                    Packing::Q4K => pack_q4k_chunk(&spans, chunk),
                    Packing::Q8_0 => pack_q8_0_chunk(&spans, chunk),
                }
            }
        }
    }
}

/// Row `r`'s 6-bit scale and min of sub-block `j` from its 12 packed bytes (ggml's
/// `get_scale_min_k4`).
fn scale_min(q: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

fn pack_q4k_chunk(blocks: &[&[u8]; GROUP], out: &mut [u8]) {
    let mut v = [0u8; 256];
    for (r, blk) in blocks.iter().enumerate() {
        out[2 * r..2 * r + 2].copy_from_slice(&blk[0..2]);
        out[Q4K_DMIN + 2 * r..Q4K_DMIN + 2 * r + 2].copy_from_slice(&blk[2..4]);
        for s in 0..8 {
            let (sc, mn) = scale_min(&blk[4..16], s);
            v[16 * s + r] = sc;
            v[128 + 32 * (s / 2) + 2 * r + s % 2] = mn;
        }
        for c in 0..4 {
            for t in 0..8 {
                let at = Q4K_NIBBLES + (8 * c + t) * 64 + 4 * r;
                out[at..at + 4].copy_from_slice(&blk[16 + 32 * c + 4 * t..][..4]);
            }
        }
    }
    for j in 0..128 {
        out[Q4K_LOW4 + j] = (v[j] & 0x0f) | (v[128 + j] & 0x0f) << 4;
    }
    for j in 0..64 {
        out[Q4K_HIGH2 + j] = (v[j] >> 4) | (v[64 + j] >> 4) << 2 | (v[128 + j] >> 4) << 4 | (v[192 + j] >> 4) << 6;
    }
}

fn pack_q8_0_chunk(spans: &[&[u8]; GROUP], out: &mut [u8]) {
    for (r, span) in spans.iter().enumerate() {
        for blk in 0..8 {
            let b = &span[34 * blk..][..34];
            out[32 * blk + 2 * r..][..2].copy_from_slice(&b[0..2]);
            for t in 0..8 {
                let at = Q8_QUANTS + (8 * blk + t) * 64 + 4 * r;
                for (o, q) in out[at..at + 4].iter_mut().zip(&b[2 + 4 * t..][..4]) {
                    *o = q ^ 0x80;
                }
            }
        }
    }
}
