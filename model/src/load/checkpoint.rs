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
use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::pickle::PthTensors;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

use crate::error::{Error, Result};
use crate::load::config::CheckpointFormat;
use crate::load::gguf::{dense_dtype, is_dense, GgufFile, GGUF_FILE};
use crate::load::quant::Quant;

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

    pub fn is_gguf(&self) -> bool {
        self.files.iter().any(|f| matches!(f, File::Gguf(_)))
    }

    fn recorder(&self) -> MutexGuard<'_, Option<Vec<(String, Recorded)>>> {
        self.recorded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// From now on, keeps every tensor handed to the model (see [`Checkpoint::take_recorded`]).
    pub fn record(&self) {
        *self.recorder() = Some(Vec::new());
    }

    /// Whether [`Checkpoint::record`] is on.
    pub fn recording(&self) -> bool {
        self.recorder().is_some()
    }

    /// The tensors handed out since [`Checkpoint::record`], in order, first of each name.
    pub fn take_recorded(&self) -> Vec<(String, Recorded)> {
        let mut all = self.recorder().take().unwrap_or_default();
        let mut seen = std::collections::HashSet::new();
        all.retain(|(name, _)| seen.insert(name.clone()));
        all
    }

    pub(crate) fn keep(&self, name: &str, t: impl FnOnce() -> Recorded) {
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
    /// The dtype `original` is stored in, when it is stored as one tensor (not fused from parts).
    pub fn stored_dtype_of(&self, original: &str) -> Option<DType> {
        match self.stored_names(original) {
            Stored::One(n) => self.entries.get(&n).map(|e| e.dtype),
            Stored::Fused(_) => None,
        }
    }

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
        // Decoder and encoder alike; `attn`, `downsample.conv`, `upsample.conv`, `nin_shortcut`,
        // `norm_out`, `conv_in/out`, `quant_conv`, `post_quant_conv` and `quantize.embedding`
        // keep their names.
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
        // The VQ encoder: `conv_blocks` → `down`, `res` → `block`, `mid.0/1/2` → `block_1/attn_1/block_2`;
        // `attn`, `downsample.conv`, `nin_shortcut`, `quant_conv` and `quantize.embedding` as they are.
        assert_eq!(
            one("gen_vision_model.encoder.conv_blocks.2.res.0.nin_shortcut.weight"),
            "model.vqmodel.encoder.down.2.block.0.nin_shortcut.weight"
        );
        assert_eq!(
            one("gen_vision_model.encoder.conv_blocks.4.attn.1.proj_out.bias"),
            "model.vqmodel.encoder.down.4.attn.1.proj_out.bias"
        );
        assert_eq!(
            one("gen_vision_model.encoder.conv_blocks.0.downsample.conv.weight"),
            "model.vqmodel.encoder.down.0.downsample.conv.weight"
        );
        assert_eq!(
            one("gen_vision_model.encoder.mid.0.norm1.weight"),
            "model.vqmodel.encoder.mid.block_1.norm1.weight"
        );
        assert_eq!(one("gen_vision_model.encoder.mid.1.q.bias"), "model.vqmodel.encoder.mid.attn_1.q.bias");
        assert_eq!(
            one("gen_vision_model.encoder.mid.2.conv2.weight"),
            "model.vqmodel.encoder.mid.block_2.conv2.weight"
        );
        assert_eq!(one("gen_vision_model.encoder.conv_in.weight"), "model.vqmodel.encoder.conv_in.weight");
        assert_eq!(one("gen_vision_model.encoder.norm_out.bias"), "model.vqmodel.encoder.norm_out.bias");
        assert_eq!(one("gen_vision_model.quant_conv.weight"), "model.vqmodel.quant_conv.weight");
        assert_eq!(one("gen_vision_model.quantize.embedding.weight"), "model.vqmodel.quantize.embedding.weight");
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
