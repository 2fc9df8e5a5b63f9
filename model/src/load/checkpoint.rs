//! Checkpoint files → one `VarBuilder` that speaks the original Janus tensor names.
//!
//! Supported on disk: safetensors (one file, or shards listed by `model.safetensors.index.json`;
//! memory-mapped), PyTorch zip pickles (`pytorch_model.bin`, or shards listed by
//! `pytorch_model.bin.index.json`) and our quantized `model.gguf` ([`crate::load::gguf`]), in bf16, f16
//! or f32, with either the original `deepseek-ai/Janus` names or the transformers names (mapping
//! from transformers' `convert_janus_weights_to_hf.py`). Every module asks for the *original* name; this layer
//! maps it, splits or fuses where the formats differ (SigLIP `qkv`, `pos_embed` rank), and
//! checks the shape, so nothing above it knows which format it came from.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::pickle::PthTensors;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Embedding, Init, VarBuilder};

use crate::load::config::CheckpointFormat;
use crate::error::{Error, Result};
use crate::load::gguf::{dense_dtype, is_dense, GgufFile, GGUF_FILE};
use crate::modules::linear::{Linear, StoredWeight};
use crate::modules::quant::{QWeight, Quant};

enum File {
    Safetensors(MmapedSafetensors),
    Pth(PthTensors),
    Gguf(GgufFile),
}

struct Entry {
    file: usize,
    shape: Vec<usize>,
    dtype: DType,
    /// The block type of a quantized tensor (GGUF only).
    quantized: Option<GgmlDType>,
}

/// All tensors of a checkpoint, indexed by their stored name.
pub struct Checkpoint {
    paths: Vec<PathBuf>,
    files: Vec<File>,
    entries: HashMap<String, Entry>,
    format: CheckpointFormat,
    /// With [`Checkpoint::record`]: every tensor handed to the model, as it was handed.
    recorded: Mutex<Option<Vec<(String, Recorded)>>>,
}

/// A tensor as the model holds it, for writing a quantized checkpoint.
pub enum Recorded {
    Dense(Tensor),
    Quantized(Arc<QTensor>),
}

/// The weight files of a model directory, in the order we look for them.
pub const WEIGHT_CANDIDATES: [&str; 5] = [
    GGUF_FILE,
    "model.safetensors.index.json",
    "model.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
];

/// Reads an HF `*.index.json` and returns its shard file names, in first-seen order.
pub fn shard_names(index: &Path) -> Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: HashMap<String, String>,
    }
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let idx: Index = serde_json::from_str(&text)
        .map_err(|e| Error::ModelFiles(format!("{}: not a valid weight index: {e}", index.display())))?;
    let mut names: Vec<String> = idx.weight_map.into_values().collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// Finds the weight files in a local model directory.
pub fn find_weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    for cand in WEIGHT_CANDIDATES {
        let p = dir.join(cand);
        if !p.exists() {
            continue;
        }
        if cand.ends_with(".index.json") {
            let shards = shard_names(&p)?;
            let paths: Vec<PathBuf> = shards.iter().map(|s| dir.join(s)).collect();
            if let Some(missing) = paths.iter().find(|p| !p.exists()) {
                return Err(Error::ModelFiles(format!(
                    "{} lists shard {} which does not exist",
                    p.display(),
                    missing.display()
                )));
            }
            return Ok(paths);
        }
        return Ok(vec![p]);
    }
    Err(Error::ModelFiles(format!("no weights in {}: expected one of {}", dir.display(), WEIGHT_CANDIDATES.join(", "))))
}

impl Checkpoint {
    /// Opens every file (safetensors are memory-mapped; pickles are indexed, read on demand).
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut entries = HashMap::new();
        let mut source_format = None;
        for (i, p) in paths.iter().enumerate() {
            let is_st = p.extension().is_some_and(|e| e == "safetensors");
            let file = if p.extension().is_some_and(|e| e == "gguf") {
                let g = GgufFile::open(p)?;
                for (name, info) in g.tensors() {
                    let quantized = (!is_dense(info.ggml_dtype)).then_some(info.ggml_dtype);
                    let dtype = dense_dtype(info.ggml_dtype);
                    entries
                        .insert(name.clone(), Entry { file: i, shape: info.shape.dims().to_vec(), dtype, quantized });
                }
                source_format = Some(g.source_format());
                File::Gguf(g)
            } else if is_st {
                // SAFETY: the file is mapped read-only; like every mmap user we rely on nobody
                // truncating the checkpoint while the process runs.
                let st = unsafe { MmapedSafetensors::new(p) }
                    .map_err(|e| Error::Weights(format!("{}: {e}", p.display())))?;
                for (name, view) in st.tensors() {
                    let dtype = DType::try_from(view.dtype())
                        .map_err(|e| Error::Weights(format!("{}: tensor {name}: {e}", p.display())))?;
                    entries.insert(name, Entry { file: i, shape: view.shape().to_vec(), dtype, quantized: None });
                }
                File::Safetensors(st)
            } else {
                let pth = PthTensors::new(p, None).map_err(|e| Error::Weights(format!("{}: {e}", p.display())))?;
                for (name, info) in pth.tensor_infos() {
                    let entry =
                        Entry { file: i, shape: info.layout.dims().to_vec(), dtype: info.dtype, quantized: None };
                    entries.insert(name.clone(), entry);
                }
                File::Pth(pth)
            };
            files.push(file);
        }
        // A quantized checkpoint is written in the original names, whatever its source was.
        let format = if let Some(f) = source_format {
            f
        } else if entries.contains_key("language_model.model.embed_tokens.weight") {
            CheckpointFormat::Original
        } else if entries.contains_key("model.language_model.embed_tokens.weight") {
            CheckpointFormat::Transformers
        } else {
            return Err(Error::Weights(format!(
                "{}: no language-model embedding (neither `language_model.model.embed_tokens.weight` \
                 nor `model.language_model.embed_tokens.weight`); is this a Janus checkpoint?",
                paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            )));
        };
        Ok(Self { paths: paths.to_vec(), files, entries, format, recorded: Mutex::new(None) })
    }

    /// The format the weights came from (for a quantized checkpoint, the one it was made from).
    pub fn format(&self) -> CheckpointFormat {
        self.format
    }

    /// The quantization of a quantized checkpoint (`None` for the published formats).
    pub fn stored_quant(&self) -> Option<Quant> {
        self.files.iter().find_map(|f| match f {
            File::Gguf(g) => Some(g.quant()),
            _ => None,
        })
    }

    fn is_gguf(&self) -> bool {
        self.files.iter().any(|f| matches!(f, File::Gguf(_)))
    }

    fn recorder(&self) -> MutexGuard<'_, Option<Vec<(String, Recorded)>>> {
        self.recorded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// From now on, keeps every tensor handed to the model (see [`Checkpoint::take_recorded`]).
    pub fn record(&self) {
        *self.recorder() = Some(Vec::new());
    }

    /// The tensors handed out since [`Checkpoint::record`], in order, first of each name.
    pub fn take_recorded(&self) -> Vec<(String, Recorded)> {
        let mut all = self.recorder().take().unwrap_or_default();
        let mut seen = std::collections::HashSet::new();
        all.retain(|(name, _)| seen.insert(name.clone()));
        all
    }

    fn keep(&self, name: &str, t: impl FnOnce() -> Recorded) {
        if let Some(v) = self.recorder().as_mut() {
            v.push((name.to_string(), t()));
        }
    }

    /// A quantized tensor by original name, placed on `dev`; `None` when it is stored dense.
    pub fn quantized(&self, original: &str, dev: &Device) -> Result<Option<QTensor>> {
        let Some(entry) = self.entries.get(original).filter(|e| e.quantized.is_some()) else {
            return Ok(None);
        };
        match &self.files[entry.file] {
            File::Gguf(g) => Ok(Some(g.read(original, dev)?)),
            _ => Ok(None),
        }
    }

    /// The stored dtype of the language model (what the checkpoint was saved in).
    pub fn stored_dtype(&self) -> DType {
        self.entries.values().map(|e| e.dtype).find(|d| d.is_float()).unwrap_or(DType::F32)
    }

    /// The shape of a tensor, asked for by its original name.
    pub fn shape_of(&self, original: &str) -> Option<Vec<usize>> {
        match self.stored_names(original) {
            Stored::One(n) => self.entries.get(&n).map(|e| e.shape.clone()),
            Stored::Fused(parts) => {
                let shapes: Option<Vec<_>> =
                    parts.iter().map(|n| self.entries.get(n).map(|e| e.shape.clone())).collect();
                let shapes = shapes?;
                let mut s = shapes[0].clone();
                s[0] = shapes.iter().map(|s| s[0]).sum();
                Some(s)
            }
        }
    }

    pub fn contains(&self, original: &str) -> bool {
        self.shape_of(original).is_some()
    }

    fn stored_names(&self, original: &str) -> Stored {
        match self.format {
            CheckpointFormat::Transformers if !self.is_gguf() => to_transformers_name(original),
            _ => Stored::One(original.to_string()),
        }
    }

    fn load_stored(&self, name: &str, dev: &Device) -> Result<Tensor> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| Error::Weights(format!("tensor {name} is missing from the checkpoint")))?;
        let path = &self.paths[entry.file];
        let t = match &self.files[entry.file] {
            File::Safetensors(st) => st.load(name, dev),
            File::Pth(p) => p
                .get(name)
                .and_then(|t| t.ok_or_else(|| candle_core::Error::Msg("missing".into())))
                .and_then(|t| t.to_device(dev)),
            File::Gguf(g) => g.read_dense(name, dev).map_err(candle_core::Error::wrap),
        };
        t.map_err(|e| Error::Weights(format!("{}: tensor {name}: {e}", path.display())))
    }

    fn file_of(&self, name: &str) -> String {
        self.entries
            .get(name)
            .map(|e| self.paths[e.file].display().to_string())
            .unwrap_or_else(|| "<checkpoint>".into())
    }

    /// Loads a tensor by original name, converted to `dtype` on `dev`, checked against `shape`.
    pub fn load(&self, original: &str, shape: &Shape, dtype: DType, dev: &Device) -> Result<Tensor> {
        let t = match self.stored_names(original) {
            Stored::One(n) => {
                if !self.entries.contains_key(&n) {
                    return Err(Error::Weights(format!(
                        "tensor {n} is missing from the checkpoint ({})",
                        self.paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
                    )));
                }
                let t = self.load_stored(&n, dev)?;
                check_shape(t, shape, original, &n, &self.file_of(&n))?
            }
            Stored::Fused(parts) => {
                let ts = parts.iter().map(|n| self.load_stored(n, dev)).collect::<Result<Vec<_>>>()?;
                let t = Tensor::cat(&ts, 0)?;
                check_shape(t, shape, original, &parts.join(" + "), &self.file_of(&parts[0]))?
            }
        };
        Ok(t.to_dtype(dtype)?)
    }

    /// A `VarBuilder` over this checkpoint, in the original names.
    pub fn var_builder(self: &Arc<Self>, dtype: DType, dev: &Device) -> VarBuilder<'static> {
        let backend: Box<dyn SimpleBackend> = Box::new(Backend(self.clone()));
        VarBuilder::from_backend(backend, dtype, dev.clone())
    }
}

/// The one tensor whose rank differs between the formats: SigLIP's `pos_embed` is `[1, N, C]` in
/// the original checkpoint and `[N, C]` in transformers' (`position_embedding.weight`, an
/// `nn.Embedding`). Every other tensor has the same shape in both (the q/k/v split is a
/// concatenation, see [`Stored::Fused`]).
const POS_EMBED: &str = "vision_model.vision_tower.pos_embed";

/// Checks a stored tensor (`name` in `file`, asked for as `original`) against the shape the
/// config implies. Only `pos_embed` may come without its leading batch axis; any other
/// difference, even in size-1 axes, is an error naming the file, the tensor and both shapes.
fn check_shape(t: Tensor, want: &Shape, original: &str, name: &str, file: &str) -> Result<Tensor> {
    if t.shape() == want {
        return Ok(t);
    }
    if original == POS_EMBED && want.dims().split_first().is_some_and(|(&one, rest)| one == 1 && rest == t.dims()) {
        return Ok(t.unsqueeze(0)?);
    }
    Err(Error::Weights(format!(
        "{file}: tensor {name} has shape {:?} but the config implies {:?}",
        t.dims(),
        want.dims()
    )))
}

struct Backend(Arc<Checkpoint>);

impl SimpleBackend for Backend {
    fn get(&self, s: Shape, name: &str, _h: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = self.0.load(name, &s, dtype, dev).map_err(candle_core::Error::wrap)?;
        self.0.keep(name, || Recorded::Dense(t.clone()));
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let shape = self
            .0
            .shape_of(name)
            .ok_or_else(|| candle_core::Error::Msg(format!("tensor {name} is missing from the checkpoint")))?;
        self.get(Shape::from(shape), name, Init::Const(0.), dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains(name)
    }
}

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
            return Ok(Linear::quantized(QWeight::new(q)?, bias));
        }
        if self.quant == Quant::None {
            return Ok(Linear::new(vb.get((out_dim, in_dim), "weight")?, bias));
        }
        let w = self.ckpt.load(&name, &Shape::from((out_dim, in_dim)), DType::F32, &Device::Cpu)?;
        self.build(&name, w, bias, vb)
    }

    /// The stored linears `parts` (children of `vb`, with `out` rows each) concatenated along
    /// the output dimension into one layer, known as `{vb}.{fused}` in a quantized checkpoint.
    pub fn fused(&self, vb: &VarBuilder, fused: &str, parts: &[(&str, usize)], in_dim: usize) -> Result<Linear> {
        let name = format!("{}.{fused}.weight", vb.prefix());
        if let Some(q) = self.ckpt.quantized(&name, vb.device())? {
            return Ok(Linear::quantized(QWeight::new(q)?, None));
        }
        let out_dim = parts.iter().map(|(_, o)| o).sum::<usize>();
        if self.ckpt.is_gguf() && self.ckpt.contains(&name) {
            return Ok(Linear::new(vb.pp(fused).get((out_dim, in_dim), "weight")?, None));
        }
        let ws = parts
            .iter()
            .map(|(p, o)| -> Result<Tensor> {
                if self.quant == Quant::None {
                    return Ok(vb.pp(*p).get((*o, in_dim), "weight")?);
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

    /// The embedding table at `vb`, `[rows, dim]`. When the model runs in f32 from a checkpoint
    /// stored in bf16 or f16 (the published ones), the table stays in the stored dtype and the
    /// looked-up rows are widened (exactly): the largest table of the model at half the memory.
    pub fn embedding(&self, vb: &VarBuilder, rows: usize, dim: usize) -> Result<Embedding> {
        let name = format!("{}.weight", vb.prefix());
        let stored = self.ckpt.stored_names(&name);
        let narrow = match stored {
            Stored::One(n) => {
                self.ckpt.entries.get(&n).map(|e| e.dtype).filter(|d| matches!(d, DType::BF16 | DType::F16))
            }
            Stored::Fused(_) => None,
        };
        let dtype = match narrow {
            Some(d) if vb.dtype() == DType::F32 => d,
            _ => vb.dtype(),
        };
        let table = vb.clone().set_dtype(dtype).get((rows, dim), "weight")?;
        Ok(Embedding::new(table, dim))
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
        let lin = Linear::from_weight(w, bias, self.quant, vb.dtype(), vb.device())?;
        let recorded = match lin.stored() {
            StoredWeight::Dense(t) => Recorded::Dense(t.clone()),
            StoredWeight::Quantized(q) => Recorded::Quantized(q.qtensor().clone()),
        };
        self.ckpt.keep(name, || recorded);
        Ok(lin)
    }
}

enum Stored {
    One(String),
    /// Concatenated along dim 0 (SigLIP q, k, v → qkv).
    Fused(Vec<String>),
}

/// Original Janus name → transformers name(s) (inverse of `convert_janus_weights_to_hf.py`).
fn to_transformers_name(orig: &str) -> Stored {
    const VIT: &str = "vision_model.vision_tower.";
    if let Some(rest) = orig.strip_prefix(VIT) {
        let vm = "model.vision_model.";
        if let Some(r) = rest.strip_prefix("blocks.") {
            let (idx, tail) = r.split_once('.').unwrap_or((r, ""));
            let layer = format!("{vm}encoder.layers.{idx}.");
            if let Some(suffix) = tail.strip_prefix("attn.qkv.") {
                return Stored::Fused(
                    ["q_proj", "k_proj", "v_proj"].iter().map(|p| format!("{layer}self_attn.{p}.{suffix}")).collect(),
                );
            }
            let tail = tail
                .replacen("attn.proj.", "self_attn.projection_layer.", 1)
                .replacen("norm1.", "layer_norm1.", 1)
                .replacen("norm2.", "layer_norm2.", 1);
            return Stored::One(format!("{layer}{tail}"));
        }
        let mapped = match rest {
            "pos_embed" => format!("{vm}embeddings.position_embedding.weight"),
            r if r.starts_with("patch_embed.proj.") => {
                format!("{vm}embeddings.patch_embedding.{}", &r["patch_embed.proj.".len()..])
            }
            r if r.starts_with("norm.") => format!("{vm}post_layernorm.{}", &r["norm.".len()..]),
            r => format!("{vm}{r}"),
        };
        return Stored::One(mapped);
    }
    let prefixes: [(&str, &str); 8] = [
        ("language_model.model.", "model.language_model."),
        ("language_model.lm_head.", "lm_head."),
        ("gen_embed.", "model.generation_embeddings."),
        ("gen_aligner.layers.0.", "model.generation_aligner.fc1."),
        ("gen_aligner.layers.2.", "model.generation_aligner.hidden_layers.0."),
        ("aligner.layers.0.", "model.aligner.fc1."),
        ("aligner.layers.2.", "model.aligner.hidden_layers.0."),
        ("gen_head.output_mlp_projector.", "model.generation_head.proj_out."),
    ];
    for (from, to) in prefixes {
        if let Some(rest) = orig.strip_prefix(from) {
            return Stored::One(format!("{to}{rest}"));
        }
    }
    if let Some(rest) = orig.strip_prefix("gen_head.vision_head.") {
        return Stored::One(format!("model.generation_head.vision_head.{rest}"));
    }
    if let Some(rest) = orig.strip_prefix("gen_vision_model.") {
        let rest = rest
            .replacen("decoder.conv_blocks.", "decoder.up.", 1)
            .replacen("encoder.conv_blocks.", "encoder.down.", 1)
            .replace(".res.", ".block.")
            .replacen("mid.0.", "mid.block_1.", 1)
            .replacen("mid.1.", "mid.attn_1.", 1)
            .replacen("mid.2.", "mid.block_2.", 1);
        return Stored::One(format!("model.vqmodel.{rest}"));
    }
    Stored::One(orig.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> String {
        match to_transformers_name(s) {
            Stored::One(n) => n,
            Stored::Fused(p) => p.join("+"),
        }
    }

    #[test]
    fn maps_original_names_to_transformers() {
        assert_eq!(
            one("language_model.model.layers.3.self_attn.q_proj.weight"),
            "model.language_model.layers.3.self_attn.q_proj.weight"
        );
        assert_eq!(one("language_model.lm_head.weight"), "lm_head.weight");
        assert_eq!(one("gen_embed.weight"), "model.generation_embeddings.weight");
        assert_eq!(one("gen_aligner.layers.2.bias"), "model.generation_aligner.hidden_layers.0.bias");
        assert_eq!(one("gen_head.vision_head.weight"), "model.generation_head.vision_head.weight");
        assert_eq!(
            one("gen_vision_model.decoder.conv_blocks.1.res.0.nin_shortcut.weight"),
            "model.vqmodel.decoder.up.1.block.0.nin_shortcut.weight"
        );
        assert_eq!(one("gen_vision_model.decoder.mid.1.q.weight"), "model.vqmodel.decoder.mid.attn_1.q.weight");
        assert_eq!(
            one("gen_vision_model.decoder.conv_blocks.0.attn.2.proj_out.bias"),
            "model.vqmodel.decoder.up.0.attn.2.proj_out.bias"
        );
        assert_eq!(
            one("vision_model.vision_tower.blocks.5.attn.qkv.weight"),
            "model.vision_model.encoder.layers.5.self_attn.q_proj.weight+model.vision_model.encoder.layers.5.self_attn.k_proj.weight+model.vision_model.encoder.layers.5.self_attn.v_proj.weight"
        );
        assert_eq!(
            one("vision_model.vision_tower.blocks.5.attn.proj.bias"),
            "model.vision_model.encoder.layers.5.self_attn.projection_layer.bias"
        );
        assert_eq!(
            one("vision_model.vision_tower.pos_embed"),
            "model.vision_model.embeddings.position_embedding.weight"
        );
        assert_eq!(one("vision_model.vision_tower.norm.weight"), "model.vision_model.post_layernorm.weight");
    }
}
