//! Weight quantization: which GGML block type the language model's and the generation head's
//! linear layers are stored in, and the matmul of an input with such a weight.
//!
//! The blocks and their quantizers are candle's (`candle_core::quantized`, after ggml). On CUDA
//! the product is candle's `QMatMul`. On a CPU with AVX-512 VNNI, q4k and q8_0 weights are packed
//! at load into [`crate::kernels::packed`]'s row-interleaved layout, in the same bytes (the
//! stored blocks are freed), and every product, decode step or prompt, is
//! [`crate::kernels::quant`]'s. Elsewhere the blocks stay as stored: candle's row-tiled
//! `k_quants::matmul` for the k-quants (reading the blocks as they are) and candle's `QMatMul` for
//! q8_0. A model loaded to be written (`janus quantize`) keeps the stored blocks. docs/PERF.md,
//! "which kernel" and "packed", has the measurements.

use std::sync::Arc;

use candle_core::quantized::k_quants::{self, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8_0, GgmlType};
use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor, QuantizedType};
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Module, Shape, Tensor};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::kernels::packed::Packing;
use crate::kernels::quant as kernel;

/// Quantizes a weight `[out, in]` (any dtype, on the CPU) to `block` and places it on `dev`.
/// Rows are independent blocks, so they are quantized in parallel (candle's `QTensor::quantize`
/// runs on one thread: a k-quant load of the 1B took 35 s on 2 cores).
pub fn quantize(w: &Tensor, block: GgmlDType, dev: &Device) -> Result<QTensor> {
    let (rows, cols) = w.dims2()?;
    if !cols.is_multiple_of(block.block_size()) {
        return Err(Error::InvalidInput(format!("rows of {cols} values do not split into {block:?} blocks")));
    }
    let values = w.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let storage = match block {
        GgmlDType::Q8_0 => blocks_of::<BlockQ8_0>(&values, cols),
        GgmlDType::Q4K => blocks_of::<BlockQ4K>(&values, cols),
        GgmlDType::Q5K => blocks_of::<BlockQ5K>(&values, cols),
        GgmlDType::Q6K => blocks_of::<BlockQ6K>(&values, cols),
        other => {
            return Ok(QTensor::quantize_onto(&Tensor::from_vec(values, (rows, cols), &Device::Cpu)?, other, dev)?)
        }
    };
    let q = QTensor::new(QStorage::Cpu(storage), (rows, cols))?;
    if dev.is_cpu() {
        return Ok(q);
    }
    Ok(QTensor::new(QStorage::from_data(q.data()?, dev, block)?, (rows, cols))?)
}

fn blocks_of<T: GgmlType + 'static>(values: &[f32], cols: usize) -> Box<dyn QuantizedType> {
    let per_row = cols / T::BLCK_SIZE;
    let mut out = vec![T::zeros(); values.len() / T::BLCK_SIZE];
    // Chunks of whole rows, a few per task.
    let rows_per_task = (1 << 16) / cols.max(1) + 1;
    out.par_chunks_mut(per_row * rows_per_task)
        .zip(values.par_chunks(cols * rows_per_task))
        .for_each(|(dst, src)| T::from_float(src, dst));
    Box::new(out)
}

/// A quantized weight `[out, in]` and its matmul.
#[derive(Debug, Clone)]
pub struct QWeight {
    stored: Stored,
}

#[derive(Debug, Clone)]
enum Stored {
    /// The blocks as candle holds them (other devices and block types, CPUs without the packed
    /// kernels, and weights kept for writing).
    Blocks { q: Arc<QTensor>, mm: QMatMul },
    /// q4k or q8_0 on an AVX-512 VNNI CPU, packed for [`kernel::matmul`].
    Packed(Arc<PackedWeight>),
}

/// A weight in [`Packing`]'s layout, on 64-byte lines so that the kernel's loads never split one.
#[derive(Debug)]
struct PackedWeight {
    packing: Packing,
    n: usize,
    k: usize,
    lines: Vec<Line>,
}

#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

impl PackedWeight {
    /// `q` packed, when this CPU runs the packed kernels and `q` is q4k or q8_0 of a packable
    /// shape.
    fn of(q: &QTensor) -> candle_core::Result<Option<Self>> {
        let Some(packing) = Packing::of(q.dtype()) else {
            return Ok(None);
        };
        let (n, k) = q.shape().dims2()?;
        if !(q.device().is_cpu() && kernel::available() && Packing::fits(n, k)) {
            return Ok(None);
        }
        let data = q.data()?;
        // whole lines: a packable weight is whole chunks, each a multiple of 64 bytes
        let mut this = Self { packing, n, k, lines: vec![Line([0; 64]); data.len() / 64] };
        packing.pack_into(&data, n, k, this.bytes_mut());
        Ok(Some(this))
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `Line` is 64 bytes with no padding (`repr(C)` over `[u8; 64]`), so the lines
        // are `64 · len` initialised bytes, borrowed for as long as `self`.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr() as *const u8, self.lines.len() * 64) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as `bytes`, borrowed mutably (and so alone) for as long as `self`; any byte
        // pattern is a valid `Line`.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr() as *mut u8, self.lines.len() * 64) }
    }
}

impl QWeight {
    /// Bytes of the stored blocks (what a product reads).
    pub fn bytes(&self) -> usize {
        match &self.stored {
            Stored::Blocks { q, .. } => q.storage_size_in_bytes(),
            Stored::Packed(p) => p.lines.len() * 64,
        }
    }

    /// `q` for computing: packed for [`kernel::matmul`] where this CPU runs it (the blocks are
    /// rearranged in as many bytes, and `q`'s own are freed), else as stored.
    pub fn new(q: QTensor) -> Result<Self> {
        match PackedWeight::of(&q)? {
            Some(p) => Ok(Self { stored: Stored::Packed(Arc::new(p)) }),
            None => Self::as_stored(q),
        }
    }

    /// `q` kept as stored (what `janus quantize` writes).
    pub fn as_stored(q: QTensor) -> Result<Self> {
        let q = Arc::new(q);
        Ok(Self { stored: Stored::Blocks { mm: QMatMul::from_arc(q.clone())?, q } })
    }

    /// The stored blocks, unless packed ([`QWeight::new`]).
    pub fn qtensor(&self) -> Option<&Arc<QTensor>> {
        match &self.stored {
            Stored::Blocks { q, .. } => Some(q),
            Stored::Packed(_) => None,
        }
    }

    /// `x [.., in] · Wᵀ → [.., out]` in `x`'s dtype.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dtype = x.dtype();
        let (q, mm) = match &self.stored {
            Stored::Packed(p) => {
                let y = x.to_dtype(DType::F32)?.contiguous()?.apply_op1_no_bwd(&PackedProduct(p))?;
                return y.to_dtype(dtype);
            }
            Stored::Blocks { q, mm } => (q, mm),
        };
        let on_cpu = q.device().is_cpu();
        if on_cpu && matches!(q.dtype(), GgmlDType::Q4K | GgmlDType::Q5K | GgmlDType::Q6K) {
            let y = x.to_dtype(DType::F32)?.contiguous()?.apply_op1_no_bwd(&StoredBlocks(q))?;
            return y.to_dtype(dtype);
        }
        if on_cpu {
            return mm.forward(&x.contiguous()?);
        }
        // candle's CUDA kernels take f32 activations.
        mm.forward(&x.to_dtype(DType::F32)?.contiguous()?)?.to_dtype(dtype)
    }
}

/// `x [.., k]` (f32, contiguous) as `[m, k]` rows for a weight of rows of `k`, and the output's
/// dims (`x`'s with the last one `n`).
fn rows_of<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    (n, k): (usize, usize),
) -> candle_core::Result<(&'a [f32], usize, Vec<usize>)> {
    let dims = layout.shape().dims();
    if dims.last() != Some(&k) {
        candle_core::bail!("qmatmul: input {dims:?} for a weight of [{n}, {k}]");
    }
    let (Some((start, end)), CpuStorage::F32(x)) = (layout.contiguous_offsets(), storage) else {
        candle_core::bail!("qmatmul: contiguous f32 input only");
    };
    let mut out = dims.to_vec();
    *out.last_mut().expect("checked above") = n;
    Ok((&x[start..end], (end - start) / k, out))
}

/// The CPU product with a packed weight (any number of rows; a row's numbers are its own).
struct PackedProduct<'a>(&'a PackedWeight);

impl CustomOp1 for PackedProduct<'_> {
    fn name(&self) -> &'static str {
        "qmatmul-packed"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let w = self.0;
        let (x, m, out) = rows_of(storage, layout, (w.n, w.k))?;
        let y = kernel::matmul(w.packing, x, m, w.k, w.n, w.bytes());
        Ok((CpuStorage::F32(y), Shape::from(out)))
    }
}

/// The CPU product with the k-quant blocks as stored (no repacked copy): candle's row-tiled one.
struct StoredBlocks<'a>(&'a QTensor);

impl CustomOp1 for StoredBlocks<'_> {
    fn name(&self) -> &'static str {
        "qmatmul-stored-blocks"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, k) = self.0.shape().dims2()?;
        let (x, m, out) = rows_of(storage, layout, (n, k))?;
        let data = self.0.data()?;
        let mkn = (m, k, n);
        let dst = match self.0.dtype() {
            GgmlDType::Q4K => candle_matmul::<BlockQ4K>(mkn, x, &data)?,
            GgmlDType::Q5K => candle_matmul::<BlockQ5K>(mkn, x, &data)?,
            GgmlDType::Q6K => candle_matmul::<BlockQ6K>(mkn, x, &data)?,
            other => candle_core::bail!("qmatmul: no stored-block path for {other:?}"),
        };
        Ok((CpuStorage::F32(dst), Shape::from(out)))
    }
}

/// candle's row-tiled product of `x [m, k]` with the stored blocks `data` of a `[n, k]` weight.
fn candle_matmul<T: GgmlType>(mkn: (usize, usize, usize), x: &[f32], data: &[u8]) -> candle_core::Result<Vec<f32>> {
    let mut dst = vec![0f32; mkn.0 * mkn.2];
    k_quants::matmul(mkn, x, blocks::<T>(data)?, &mut dst)?;
    Ok(dst)
}

/// The stored bytes of a CPU `QTensor` as its blocks.
fn blocks<T: GgmlType>(data: &[u8]) -> candle_core::Result<&[T]> {
    let size = std::mem::size_of::<T>();
    if !data.len().is_multiple_of(size) || data.as_ptr().align_offset(std::mem::align_of::<T>()) != 0 {
        candle_core::bail!("qmatmul: {} bytes are not whole aligned {:?} blocks", data.len(), T::DTYPE);
    }
    // SAFETY: the bytes are a `Vec<T>`'s storage (candle's CPU `QStorage`), checked above for
    // size and alignment; `T` is a plain-old-data block of integers and halfs.
    Ok(unsafe { std::slice::from_raw_parts(data.as_ptr() as *const T, data.len() / size) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::quant::Quant;
    use candle_core::Device;

    #[test]
    fn parallel_quantization_equals_candles() -> Result<()> {
        let w = Tensor::randn(0f32, 1.0, (300, 512), &Device::Cpu)?;
        for q in [Quant::Q8_0, Quant::Q6k, Quant::Q5k, Quant::Q4k] {
            let block = q.ggml().unwrap();
            let ours = quantize(&w, block, &Device::Cpu)?;
            let theirs = QTensor::quantize(&w, block)?;
            assert_eq!(ours.shape(), theirs.shape());
            assert!(ours.data()? == theirs.data()?, "{q}: different blocks");
        }
        assert!(quantize(&w.narrow(1, 0, 100)?, GgmlDType::Q8_0, &Device::Cpu).is_err());
        Ok(())
    }

    #[test]
    fn block_type_falls_back_by_width() {
        assert_eq!(Quant::Q4k.block_type_for(2048), Some(GgmlDType::Q4K));
        assert_eq!(Quant::Q4k.block_type_for(64), Some(GgmlDType::Q8_0));
        assert_eq!(Quant::Q8_0.block_type_for(48), None);
        assert_eq!(Quant::None.block_type_for(4096), None);
    }

    /// Every CPU path against the dequantized weight's f32 product: the only difference is the
    /// activations' own rounding to 8 bits, so the error stays within a few per cent of |y|.
    #[test]
    fn cpu_product_matches_dequantized_weight() -> Result<()> {
        let dev = Device::Cpu;
        let (n, k) = (96, 512);
        let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
        for rows in [1, 2, 5, 40] {
            let x = Tensor::randn(0f32, 1.0, (rows, k), &dev)?;
            for q in [Quant::Q8_0, Quant::Q6k, Quant::Q5k, Quant::Q4k] {
                let want = x.matmul(&QTensor::quantize(&w, q.ggml().unwrap())?.dequantize(&dev)?.t()?)?;
                let qw = QWeight::new(QTensor::quantize(&w, q.ggml().unwrap())?)?;
                let got = qw.forward(&x)?;
                let err = (&got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
                let scale = want.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(err <= 0.02 * scale, "{q} × {rows} rows: max error {err} of {scale}");
                // batched rows give the row alone's answer
                let one = qw.forward(&x.narrow(0, rows - 1, 1)?)?;
                let last = got.narrow(0, rows - 1, 1)?;
                let d = (&one - &last)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(d <= 1e-5 * scale, "{q}: row {} differs by {d} alone", rows - 1);
            }
        }
        Ok(())
    }
}
