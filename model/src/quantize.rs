//! `janus quantize`: a model loaded with its linear layers quantized, written as our GGUF
//! checkpoint ([`crate::load::gguf`]).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::QTensor;
use candle_core::Device;

use crate::error::{Error, Result};
use crate::load::checkpoint::{Checkpoint, Recorded};
use crate::load::config::CheckpointFormat;
use crate::load::gguf::{ggml_of, FORMAT_VERSION, GGUF_FILE, KEY_QUANT, KEY_SOURCE, KEY_VERSION};
use crate::load::hub::ModelFiles;
use crate::load::quant::Quant;
use crate::model::{Janus, LoadOptions, Parts};

/// `janus quantize`: loads `files` on the CPU with `quant` (the dense parts in the checkpoint's
/// own dtype) and writes `out/model.gguf` plus copies of the config, tokenizer and preprocessor
/// files. Returns the path of the GGUF file.
pub fn write_quantized(files: &ModelFiles, quant: Quant, out: &Path) -> Result<PathBuf> {
    let ckpt = Arc::new(Checkpoint::open(&files.weights)?);
    if let Some(q) = ckpt.stored_quant() {
        return Err(Error::InvalidInput(format!(
            "{} is already quantized ({q}); quantize the original weights",
            files.name
        )));
    }
    let dtype = ckpt.stored_dtype();
    let opts = LoadOptions { device: Device::Cpu, dtype, vq_dtype: dtype, quant, parts: Parts::All };
    ckpt.record();
    let model = Janus::load_checkpoint(files, &opts, ckpt.clone())?;
    let recorded = ckpt.take_recorded();
    drop(model);

    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    for src in files.side_files() {
        let name = src.file_name().ok_or_else(|| Error::ModelFiles(format!("{}: no file name", src.display())))?;
        let dst = out.join(name);
        std::fs::copy(&src, &dst).map_err(|e| Error::io(&dst, e))?;
    }
    let tensors = recorded
        .into_iter()
        .map(|(name, t)| {
            let q = match t {
                Recorded::Quantized(q) => q,
                Recorded::Dense(t) => Arc::new(QTensor::quantize(&t, ggml_of(t.dtype()))?),
            };
            Ok((name, q))
        })
        .collect::<Result<Vec<_>>>()?;
    let source = match ckpt.format() {
        CheckpointFormat::Original => "original",
        CheckpointFormat::Transformers => "transformers",
    };
    let meta = [
        ("general.architecture", Value::String("janus".into())),
        (KEY_VERSION, Value::U32(FORMAT_VERSION)),
        (KEY_QUANT, Value::String(quant.name().into())),
        (KEY_SOURCE, Value::String(source.into())),
    ];
    let path = out.join(GGUF_FILE);
    // Written beside and renamed, so an interrupted run never leaves a loadable half file.
    let tmp = out.join(format!("{GGUF_FILE}.partial"));
    let mut w = std::io::BufWriter::new(File::create(&tmp).map_err(|e| Error::io(&tmp, e))?);
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, q)| (n.as_str(), q.as_ref())).collect();
    gguf_file::write(&mut w, &meta_refs, &tensor_refs)?;
    w.into_inner().map_err(|e| Error::io(&tmp, e.into_error()))?.sync_all().map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    Ok(path)
}
