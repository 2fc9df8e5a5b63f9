//! Weight quantization: which GGML block type the language model's and the generation head's
//! linear layers are stored in, and the matmul of an input with such a weight.
//!
//! The blocks and their quantizers are candle's (`candle_core::quantized`, after ggml). On CUDA
//! the product is candle's `QMatMul`. On the CPU it always reads the blocks as stored, with no
//! second copy (candle's `QMatMul` repacks q8_0 and q4k into tiles beside them on AVX-512 VNNI
//! CPUs): [`crate::kernels::quant`]'s kernels for q8_0 and for q4k at ≤ 16 rows where the CPU has
//! AVX-512 VNNI, candle's row-tiled `k_quants::matmul` for the other k-quants and rows, and
//! candle's `QMatMul` for q8_0 elsewhere (it does not repack without VNNI). docs/PERF.md, "which
//! kernel", has the measurements.

use std::sync::Arc;

use candle_core::quantized::k_quants::{self, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8_0, GgmlType};
use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor, QuantizedType};
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Module, Shape, Tensor};
use rayon::prelude::*;

use crate::error::{Error, Result};
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
    q: Arc<QTensor>,
    mm: QMatMul,
}

impl QWeight {
    /// Bytes of the stored blocks (what a product reads).
    pub fn bytes(&self) -> usize {
        self.q.storage_size_in_bytes()
    }

    pub fn new(q: QTensor) -> Result<Self> {
        let q = Arc::new(q);
        Ok(Self { mm: QMatMul::from_arc(q.clone())?, q })
    }

    pub fn qtensor(&self) -> &Arc<QTensor> {
        &self.q
    }

    /// `x [.., in] · Wᵀ → [.., out]` in `x`'s dtype.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let on_cpu = self.q.device().is_cpu();
        let stored_blocks = match self.q.dtype() {
            GgmlDType::Q4K | GgmlDType::Q5K | GgmlDType::Q6K => true,
            GgmlDType::Q8_0 => kernel::takes_q8_0(self.q.shape().dims()[1]),
            _ => false,
        };
        if on_cpu && stored_blocks {
            let dtype = x.dtype();
            let y = x.to_dtype(DType::F32)?.contiguous()?.apply_op1_no_bwd(&StoredBlocks(&self.q))?;
            return y.to_dtype(dtype);
        }
        if on_cpu {
            return self.mm.forward(&x.contiguous()?);
        }
        // candle's CUDA kernels take f32 activations.
        let dtype = x.dtype();
        self.mm.forward(&x.to_dtype(DType::F32)?.contiguous()?)?.to_dtype(dtype)
    }
}

/// The CPU product with the blocks as stored (no repacked copy).
struct StoredBlocks<'a>(&'a QTensor);

impl CustomOp1 for StoredBlocks<'_> {
    fn name(&self) -> &'static str {
        "qmatmul-stored-blocks"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, k) = self.0.shape().dims2()?;
        let dims = layout.shape().dims();
        if dims.last() != Some(&k) {
            candle_core::bail!("qmatmul: input {dims:?} for a weight of {:?}", self.0.shape());
        }
        let (Some((start, end)), CpuStorage::F32(x)) = (layout.contiguous_offsets(), storage) else {
            candle_core::bail!("qmatmul: contiguous f32 input only");
        };
        let x = &x[start..end];
        let m = x.len() / k;
        let data = self.0.data()?;
        let mut out = dims.to_vec();
        *out.last_mut().expect("checked above") = n;
        let mkn = (m, k, n);
        // One position per row (a decode step): the VNNI kernel 16 rows at a time, so that a row's
        // numbers do not depend on how many rows share the step (see `kernels::dot::one_position_per_row`).
        let step = crate::kernels::dot::one_position_per_row(dims);
        let dst = match self.0.dtype() {
            GgmlDType::Q4K if step && kernel::takes_q4k(k) => (x.chunks(k * kernel::MAX_ROWS))
                .flat_map(|tile| kernel::matmul_q4k(tile, tile.len() / k, k, n, &data))
                .collect(),
            // `QWeight::forward` sends q8_0 here only when `takes_q8_0`
            GgmlDType::Q8_0 => kernel::matmul_q8_0(x, m, k, n, &data),
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
                let qw = QWeight::new(QTensor::quantize(&w, q.ggml().unwrap())?)?;
                let want = x.matmul(&qw.qtensor().dequantize(&dev)?.t()?)?;
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
