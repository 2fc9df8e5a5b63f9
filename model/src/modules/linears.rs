//! [`Linears`]: the linear layers that `--quant` applies to, built from a checkpoint.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::{Embedding, VarBuilder};

use crate::error::Result;
use crate::load::checkpoint::{Checkpoint, Recorded};
use crate::load::quant::Quant;
use crate::modules::linear::{Linear, StoredWeight};
use crate::modules::quant::QWeight;

/// Builds the linear layers that `--quant` applies to (the language model's and `gen_head`'s):
/// quantized while loading, one layer at a time from f32 on the CPU, so that the full-precision
/// weights are never all in memory; or taken as stored from a quantized checkpoint.
pub struct Linears {
    ckpt: Arc<Checkpoint>,
    quant: Quant,
    /// Layers whose width does not split into the requested blocks (q8_0 or dense instead).
    fallbacks: AtomicUsize,
}

impl Linears {
    pub fn new(ckpt: Arc<Checkpoint>, quant: Quant) -> Self {
        Self { ckpt, quant, fallbacks: AtomicUsize::new(0) }
    }

    /// How many layers could not take the requested quantization.
    pub fn fallbacks(&self) -> usize {
        self.fallbacks.load(Ordering::Relaxed)
    }

    /// The linear layer at `vb` (`weight` `[out_dim, in_dim]`, and `bias` when asked).
    pub fn load(&self, vb: &VarBuilder, in_dim: usize, out_dim: usize, bias: bool) -> Result<Linear> {
        let bias = if bias { Some(vb.get(out_dim, "bias")?) } else { None };
        let name = format!("{}.weight", vb.prefix());
        if let Some(q) = self.ckpt.quantized(&name, vb.device())? {
            return Ok(Linear::quantized(self.qweight(q)?, bias));
        }
        if self.quant == Quant::None {
            return Ok(Linear::new(self.stored(vb, &name).get((out_dim, in_dim), "weight")?, bias));
        }
        let w = self.ckpt.load(&name, &Shape::from((out_dim, in_dim)), DType::F32, &Device::Cpu)?;
        self.build(&name, w, bias, vb)
    }

    /// The stored linears `parts` (children of `vb`, with `out` rows each) concatenated along
    /// the output dimension into one layer, known as `{vb}.{fused}` in a quantized checkpoint.
    pub fn fused(&self, vb: &VarBuilder, fused: &str, parts: &[(&str, usize)], in_dim: usize) -> Result<Linear> {
        let name = format!("{}.{fused}.weight", vb.prefix());
        if let Some(q) = self.ckpt.quantized(&name, vb.device())? {
            return Ok(Linear::quantized(self.qweight(q)?, None));
        }
        let out_dim = parts.iter().map(|(_, o)| o).sum::<usize>();
        if self.ckpt.is_gguf() && self.ckpt.contains(&name) {
            return Ok(Linear::new(vb.pp(fused).get((out_dim, in_dim), "weight")?, None));
        }
        let ws = parts
            .iter()
            .map(|(p, o)| -> Result<Tensor> {
                if self.quant == Quant::None {
                    let part = vb.pp(*p);
                    return Ok(self.stored(&part, &format!("{}.weight", part.prefix())).get((*o, in_dim), "weight")?);
                }
                let part = format!("{}.{p}.weight", vb.prefix());
                self.ckpt.load(&part, &Shape::from((*o, in_dim)), DType::F32, &Device::Cpu)
            })
            .collect::<Result<Vec<_>>>()?;
        let w = Tensor::cat(&ws, 0)?;
        drop(ws);
        if self.quant == Quant::None {
            return Ok(Linear::new(w, None));
        }
        self.build(&name, w, None, vb)
    }

    /// Where an unquantized weight is read: as the model's dtype, except that an f32 model on
    /// the CPU keeps a bf16 checkpoint's weight in bf16 (the decode kernel and the prompt's GEMM
    /// widen it exactly: the same numbers at half the bytes and half the memory).
    fn stored<'a>(&self, vb: &VarBuilder<'a>, name: &str) -> VarBuilder<'a> {
        let keep_bf16 =
            vb.dtype() == DType::F32 && vb.device().is_cpu() && self.ckpt.stored_dtype_of(name) == Some(DType::BF16);
        vb.clone().set_dtype(if keep_bf16 { DType::BF16 } else { vb.dtype() })
    }

    /// The embedding table at `vb`, `[rows, dim]`. When the model runs in f32 from a checkpoint
    /// stored in bf16 or f16 (the published ones), the table stays in the stored dtype and the
    /// looked-up rows are widened (exactly): the largest table of the model at half the memory.
    pub fn embedding(&self, vb: &VarBuilder, rows: usize, dim: usize) -> Result<Embedding> {
        let name = format!("{}.weight", vb.prefix());
        let narrow = self.ckpt.stored_dtype_of(&name).filter(|d| matches!(d, DType::BF16 | DType::F16));
        let dtype = match narrow {
            Some(d) if vb.dtype() == DType::F32 => d,
            _ => vb.dtype(),
        };
        let table = vb.clone().set_dtype(dtype).get((rows, dim), "weight")?;
        Ok(Embedding::new(table, dim))
    }

    /// A quantized weight from the checkpoint: packed for computing, or as stored when the
    /// checkpoint records what it hands out (to be written).
    fn qweight(&self, q: QTensor) -> Result<QWeight> {
        if self.ckpt.recording() {
            QWeight::as_stored(q)
        } else {
            QWeight::new(q)
        }
    }

    /// An existing tensor (e.g. tied embeddings) as the linear layer `name`.
    pub fn from_tensor(&self, name: &str, w: &Tensor, vb: &VarBuilder) -> Result<Linear> {
        if self.quant == Quant::None {
            return Ok(Linear::new(w.clone(), None));
        }
        self.build(name, w.to_device(&Device::Cpu)?.to_dtype(DType::F32)?, None, vb)
    }

    fn build(&self, name: &str, w: Tensor, bias: Option<Tensor>, vb: &VarBuilder) -> Result<Linear> {
        let in_dim = w.dim(1)?;
        let used = self.quant.block_type_for(in_dim);
        if used != self.quant.ggml() {
            tracing::debug!(name, in_dim, requested = %self.quant, ?used, "width not a multiple of the block");
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
        }
        let lin = Linear::from_weight(w, bias, self.quant, (vb.dtype(), vb.device()), self.ckpt.recording())?;
        self.ckpt.keep(name, || match lin.stored() {
            StoredWeight::Dense(t) => Recorded::Dense(t.clone()),
            StoredWeight::Quantized(q) => {
                Recorded::Quantized(q.qtensor().expect("a recording checkpoint keeps the blocks").clone())
            }
        });
        Ok(lin)
    }
}
