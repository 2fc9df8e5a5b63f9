//! Our quantized checkpoint: one GGUF file (`model.gguf`) beside the original `config.json`,
//! tokenizer and preprocessor files, as `janus quantize` writes it.
//!
//! Tensors are stored under the original Janus names, as the model holds them after loading:
//! the quantized linear layers in their GGML block type (the fused ones under their own names,
//! `self_attn.qkv_proj` and `mlp.gate_up_proj`), everything else (embeddings, norms, SigLIP,
//! the aligners, the VQ decoder) dense in the dtype it was loaded in, the source's own dtype.
//! Metadata: `general.architecture = "janus"`, `janus.format_version`, `janus.quant` and
//! `janus.source_format`. The file is memory-mapped for reading; each tensor is copied out once.

use std::collections::HashMap;
use std::fs::File;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use candle_core::quantized::ggml_file;
use candle_core::quantized::gguf_file::{Content, TensorInfo, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::load::config::CheckpointFormat;
use crate::load::quant::Quant;

/// The file name of a quantized checkpoint in a model directory.
pub const GGUF_FILE: &str = "model.gguf";
/// The version of our GGUF layout, in `janus.format_version`.
pub const FORMAT_VERSION: u32 = 1;
pub const KEY_VERSION: &str = "janus.format_version";
pub const KEY_QUANT: &str = "janus.quant";
pub const KEY_SOURCE: &str = "janus.source_format";

/// Whether a GGUF tensor type is a plain float (kept as a dense tensor).
pub fn is_dense(t: GgmlDType) -> bool {
    matches!(t, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16)
}

/// The dtype a GGUF tensor is handed out in when asked for densely.
pub fn dense_dtype(t: GgmlDType) -> DType {
    match t {
        GgmlDType::F16 => DType::F16,
        GgmlDType::BF16 => DType::BF16,
        _ => DType::F32,
    }
}

pub fn ggml_of(dtype: DType) -> GgmlDType {
    match dtype {
        DType::F16 => GgmlDType::F16,
        DType::BF16 => GgmlDType::BF16,
        _ => GgmlDType::F32,
    }
}

/// An open `model.gguf`.
pub struct GgufFile {
    path: PathBuf,
    map: memmap2::Mmap,
    content: Content,
    quant: Quant,
    source_format: CheckpointFormat,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let bad = |msg: String| Error::Weights(format!("{}: {msg}", path.display()));
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: mapped read-only; like every mmap user we rely on nobody truncating the file
        // while the process runs.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let content = Content::read(&mut Cursor::new(&map[..])).map_err(|e| bad(format!("not a GGUF file: {e}")))?;
        let text = |key: &str| match content.metadata.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            _ => Err(bad(format!("no {key} in the metadata: not a checkpoint written by `janus quantize`"))),
        };
        match content.metadata.get(KEY_VERSION) {
            Some(Value::U32(FORMAT_VERSION)) => {}
            None => return Err(bad(format!("no {KEY_VERSION}: not a checkpoint written by `janus quantize`"))),
            Some(v) => return Err(bad(format!("{KEY_VERSION} is {v:?}; this build reads {FORMAT_VERSION}"))),
        }
        let quant = text(KEY_QUANT)?.parse::<Quant>().map_err(|e| bad(e.to_string()))?;
        let source_format = match text(KEY_SOURCE)?.as_str() {
            "original" => CheckpointFormat::Original,
            "transformers" => CheckpointFormat::Transformers,
            other => return Err(bad(format!("unknown {KEY_SOURCE} {other:?}"))),
        };
        Ok(Self { path: path.to_path_buf(), map, content, quant, source_format })
    }

    pub fn tensors(&self) -> &HashMap<String, TensorInfo> {
        &self.content.tensor_infos
    }

    pub fn quant(&self) -> Quant {
        self.quant
    }

    pub fn source_format(&self) -> CheckpointFormat {
        self.source_format
    }

    /// One tensor, as stored, on `dev`: copied once, straight out of the mapped file.
    pub fn read(&self, name: &str, dev: &Device) -> Result<QTensor> {
        let (info, data) = self.bytes(name)?;
        ggml_file::qtensor_from_ggml(info.ggml_dtype, data, info.shape.dims().to_vec(), dev)
            .map_err(|e| Error::Weights(format!("{}: tensor {name}: {e}", self.path.display())))
    }

    /// A tensor stored dense (f32, f16, bf16) as a tensor of that dtype, copied once; a quantized
    /// one dequantized to f32.
    pub fn read_dense(&self, name: &str, dev: &Device) -> Result<Tensor> {
        let (info, data) = self.bytes(name)?;
        if !is_dense(info.ggml_dtype) {
            return Ok(self.read(name, &Device::Cpu)?.dequantize(dev)?);
        }
        Ok(Tensor::from_raw_buffer(data, dense_dtype(info.ggml_dtype), info.shape.dims(), dev)?)
    }

    fn bytes(&self, name: &str) -> Result<(&TensorInfo, &[u8])> {
        let bad = |msg: String| Error::Weights(format!("{}: tensor {name}: {msg}", self.path.display()));
        let info = self.content.tensor_infos.get(name).ok_or_else(|| bad("missing".into()))?;
        let dtype = info.ggml_dtype;
        let bytes = info.shape.elem_count() / dtype.block_size() * dtype.type_size();
        let start = usize::try_from(self.content.tensor_data_offset + info.offset).map_err(|e| bad(e.to_string()))?;
        // GGUF aligns tensor data (to 32 bytes by default) and the map starts on a page.
        if start % 32 != 0 {
            return Err(bad(format!("data at offset {start} is not 32-byte aligned")));
        }
        let data = self
            .map
            .get(start..start + bytes)
            .ok_or_else(|| bad(format!("{bytes} bytes at {start} run past the end of the file")))?;
        Ok((info, data))
    }
}
