//! `config.json` in both checkpoint formats, resolved into one internal [`JanusConfig`].
//!
//! References: deepseek-ai/Janus `janus/models/modeling_vlm.py` (the original `multi_modality`
//! config: one `{cls, params}` block per sub-module, `language_config` holding a partial
//! `LlamaConfig`) and transformers `models/janus/configuration_janus.py` (the `janus` format:
//! `text_config`, `vision_config`, `vq_config`). Fields missing from `language_config` take
//! transformers' `LlamaConfig` defaults, which is what the original code does (the 7B config
//! omits hidden_size, intermediate_size and the head counts).
//!
//! The VQ model is described by neither config in full (the original builds it from code
//! defaults), so its sizes are read from the tensors instead, in [`crate::vq`].

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

/// Which on-disk layout a checkpoint uses; decided from its tensor names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointFormat {
    /// `deepseek-ai/Janus-Pro-*`: `MultiModalityCausalLM` names (`language_model.model.*`, fused `qkv`).
    Original,
    /// transformers `JanusForConditionalGeneration` names (`model.language_model.*`, split q/k/v).
    Transformers,
}

// ---------------------------------------------------------------------------------------------
// Serde mirrors of config.json
// ---------------------------------------------------------------------------------------------

fn d_vocab() -> usize {
    32000
}
fn d_hidden() -> usize {
    4096
}
fn d_intermediate() -> usize {
    11008
}
fn d_layers() -> usize {
    32
}
fn d_heads() -> usize {
    32
}
fn d_max_pos() -> usize {
    2048
}
fn d_eps() -> f64 {
    1e-6
}
fn d_theta() -> f64 {
    10000.0
}
fn d_act() -> String {
    "silu".into()
}

/// transformers `LlamaConfig`, with its defaults for every field a Janus config may omit.
#[derive(Debug, Clone, Deserialize)]
pub struct LlamaJson {
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d_intermediate")]
    pub intermediate_size: usize,
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "d_act")]
    pub hidden_act: String,
    #[serde(default = "d_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "d_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "d_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
}

/// One `{cls, params}` block of the original config.
#[derive(Debug, Clone, Deserialize)]
pub struct ClsParams<P> {
    #[serde(default)]
    pub cls: String,
    pub params: P,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ProjectorParams {
    #[serde(default = "d_depth")]
    pub depth: usize,
    pub input_dim: usize,
    pub n_embed: usize,
    #[serde(default = "d_projector")]
    pub projector_type: String,
}
fn d_depth() -> usize {
    2
}
fn d_projector() -> String {
    "mlp_gelu".into()
}

#[derive(Debug, Clone, Deserialize)]
pub struct GenHeadParams {
    pub image_token_embed: usize,
    pub image_token_size: usize,
    pub n_embed: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GenVisionParams {
    pub image_token_size: usize,
    pub n_embed: usize,
}

/// `vision_config.params` of the original format. The released configs only name the timm
/// model; `width`, `layers`, `heads`, `patch_size` and `mlp_ratio` may override the table
/// entry (our tiny test checkpoints use that to describe themselves).
#[derive(Debug, Clone, Deserialize)]
pub struct OriginalVisionParams {
    #[serde(default = "d_image_size")]
    pub image_size: usize,
    #[serde(default = "d_model_name")]
    pub model_name: String,
    #[serde(default = "d_select_layer")]
    pub select_layer: i64,
    pub width: Option<usize>,
    pub layers: Option<usize>,
    pub heads: Option<usize>,
    pub patch_size: Option<usize>,
    pub mlp_ratio: Option<f64>,
}
fn d_image_size() -> usize {
    384
}
fn d_model_name() -> String {
    "siglip_large_patch16_384".into()
}
fn d_select_layer() -> i64 {
    -1
}

#[derive(Debug, Clone, Deserialize)]
pub struct OriginalConfig {
    pub language_config: LlamaJson,
    pub vision_config: ClsParams<OriginalVisionParams>,
    pub aligner_config: ClsParams<ProjectorParams>,
    pub gen_aligner_config: ClsParams<ProjectorParams>,
    pub gen_head_config: ClsParams<GenHeadParams>,
    pub gen_vision_config: ClsParams<GenVisionParams>,
}

fn d_vis_hidden() -> usize {
    1024
}
fn d_vis_layers() -> usize {
    24
}
fn d_vis_heads() -> usize {
    16
}
fn d_patch() -> usize {
    16
}
fn d_mlp_ratio() -> f64 {
    4.0
}

/// transformers `JanusVisionConfig` (only what we use).
#[derive(Debug, Clone, Deserialize)]
pub struct HfVisionJson {
    #[serde(default = "d_vis_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d_vis_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_vis_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "d_image_size")]
    pub image_size: usize,
    #[serde(default = "d_patch")]
    pub patch_size: usize,
    #[serde(default = "d_mlp_ratio")]
    pub mlp_ratio: f64,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "d_depth")]
    pub depth: usize,
}

/// transformers `JanusVQVAEConfig` (only what we use; the rest is read from the tensors).
#[derive(Debug, Clone, Deserialize)]
pub struct HfVqJson {
    #[serde(default = "d_depth")]
    pub num_hidden_layers: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HfConfig {
    pub text_config: LlamaJson,
    #[serde(default)]
    pub vision_config: Option<HfVisionJson>,
    #[serde(default)]
    pub vq_config: Option<HfVqJson>,
}

#[derive(Debug, Clone, Deserialize)]
struct ModelTypeProbe {
    #[serde(default)]
    model_type: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Internal config
// ---------------------------------------------------------------------------------------------

/// The LLaMA decoder (DeepSeek-LLM) hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
}

impl LlmConfig {
    fn from_json(j: &LlamaJson, path: &Path) -> Result<Self> {
        let bad = |msg: String| Error::Config { path: path.to_path_buf(), msg };
        if j.hidden_act != "silu" {
            return Err(bad(format!("unsupported hidden_act {:?}", j.hidden_act)));
        }
        if j.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(bad("rope_scaling is not supported by Janus-Pro".into()));
        }
        if j.attention_bias || j.mlp_bias {
            return Err(bad("attention/mlp biases are not supported".into()));
        }
        if j.num_attention_heads == 0 || !j.hidden_size.is_multiple_of(j.num_attention_heads) {
            return Err(bad(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                j.hidden_size, j.num_attention_heads
            )));
        }
        let kv = j.num_key_value_heads.unwrap_or(j.num_attention_heads);
        if kv == 0 || !j.num_attention_heads.is_multiple_of(kv) {
            return Err(bad(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {kv}",
                j.num_attention_heads
            )));
        }
        Ok(Self {
            vocab_size: j.vocab_size,
            hidden_size: j.hidden_size,
            intermediate_size: j.intermediate_size,
            num_hidden_layers: j.num_hidden_layers,
            num_attention_heads: j.num_attention_heads,
            num_key_value_heads: kv,
            head_dim: j.head_dim.unwrap_or(j.hidden_size / j.num_attention_heads),
            max_position_embeddings: j.max_position_embeddings,
            rms_norm_eps: j.rms_norm_eps,
            rope_theta: j.rope_theta,
        })
    }
}

/// The SigLIP ViT used for understanding.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub mlp_ratio: f64,
    pub layer_norm_eps: f64,
}

impl VisionConfig {
    /// Sizes of the timm models the original config may name (`janus/models/siglip_vit.py`).
    fn from_original(p: &OriginalVisionParams, path: &Path) -> Result<Self> {
        let (width, layers, heads, patch, mlp_ratio) = match p.model_name.as_str() {
            "siglip_large_patch16_384" => (1024, 24, 16, 16, 4.0),
            "siglip_so400m_patch14_384" => (1152, 27, 16, 14, 3.7362),
            _ => {
                let need = |v: Option<usize>, n: &str| {
                    v.ok_or_else(|| Error::Config {
                        path: path.to_path_buf(),
                        msg: format!(
                            "unknown vision model_name {:?} and no `{n}` in vision_config.params",
                            p.model_name
                        ),
                    })
                };
                (
                    need(p.width, "width")?,
                    need(p.layers, "layers")?,
                    need(p.heads, "heads")?,
                    need(p.patch_size, "patch_size")?,
                    p.mlp_ratio.unwrap_or(4.0),
                )
            }
        };
        let layers = p.layers.unwrap_or(layers);
        // `select_layer` ≤ 0 keeps `layers + select_layer + 1` blocks (-1: all of them).
        let used = if p.select_layer <= 0 {
            (layers as i64 + p.select_layer + 1).clamp(1, layers as i64) as usize
        } else {
            (p.select_layer as usize).min(layers)
        };
        Ok(Self {
            image_size: p.image_size,
            patch_size: p.patch_size.unwrap_or(patch),
            hidden_size: p.width.unwrap_or(width),
            num_layers: used,
            num_heads: p.heads.unwrap_or(heads),
            mlp_ratio: p.mlp_ratio.unwrap_or(mlp_ratio),
            layer_norm_eps: 1e-6,
        })
    }

    /// Number of image tokens one image occupies (patch grid, row-major).
    pub fn num_image_tokens(&self) -> usize {
        let g = self.image_size / self.patch_size;
        g * g
    }
}

/// A two-layer `mlp_gelu` projector (`aligner`, `gen_aligner`).
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectorConfig {
    pub input_dim: usize,
    pub n_embed: usize,
}

/// The image-generation head and embedding sizes.
#[derive(Debug, Clone, PartialEq)]
pub struct GenConfig {
    /// Number of image codes (16384 for Janus-Pro).
    pub image_token_size: usize,
    /// Width of `gen_embed` (8).
    pub embed_dim: usize,
    /// Hidden width of `gen_head` (= LM width).
    pub head_hidden: usize,
}

/// Everything we need to build the model, in one format-independent shape.
#[derive(Debug, Clone, PartialEq)]
pub struct JanusConfig {
    pub llm: LlmConfig,
    pub vision: VisionConfig,
    pub aligner: ProjectorConfig,
    pub gen_aligner: ProjectorConfig,
    pub gen: GenConfig,
}

impl JanusConfig {
    /// Parses `config.json` in either format.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_str(&text, path)
    }

    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let bad = |e: serde_json::Error| Error::Config { path: path.to_path_buf(), msg: e.to_string() };
        let probe: ModelTypeProbe = serde_json::from_str(text).map_err(bad)?;
        match probe.model_type.as_deref() {
            Some("janus") => Self::from_hf(&serde_json::from_str(text).map_err(bad)?, path),
            Some("multi_modality") | None => Self::from_original(&serde_json::from_str(text).map_err(bad)?, path),
            Some(other) => Err(Error::Config {
                path: path.to_path_buf(),
                msg: format!("model_type {other:?} is not a Janus model (expected \"multi_modality\" or \"janus\")"),
            }),
        }
    }

    fn from_original(c: &OriginalConfig, path: &Path) -> Result<Self> {
        let llm = LlmConfig::from_json(&c.language_config, path)?;
        for (name, p) in
            [("aligner_config", &c.aligner_config.params), ("gen_aligner_config", &c.gen_aligner_config.params)]
        {
            if p.projector_type != "mlp_gelu" || p.depth != 2 {
                return Err(Error::Config {
                    path: path.to_path_buf(),
                    msg: format!(
                        "{name}: only the two-layer mlp_gelu projector is supported, got {} depth {}",
                        p.projector_type, p.depth
                    ),
                });
            }
        }
        let g = &c.gen_head_config.params;
        Ok(Self {
            vision: VisionConfig::from_original(&c.vision_config.params, path)?,
            aligner: ProjectorConfig {
                input_dim: c.aligner_config.params.input_dim,
                n_embed: c.aligner_config.params.n_embed,
            },
            gen_aligner: ProjectorConfig {
                input_dim: c.gen_aligner_config.params.input_dim,
                n_embed: c.gen_aligner_config.params.n_embed,
            },
            gen: GenConfig {
                image_token_size: g.image_token_size,
                embed_dim: c.gen_vision_config.params.n_embed,
                head_hidden: g.image_token_embed,
            },
            llm,
        })
    }

    fn from_hf(c: &HfConfig, path: &Path) -> Result<Self> {
        let llm = LlmConfig::from_json(&c.text_config, path)?;
        let v = c
            .vision_config
            .clone()
            .unwrap_or_else(|| serde_json::from_str("{}").expect("all vision fields have defaults"));
        let d = llm.hidden_size;
        // The transformers format stores the remaining sizes only implicitly (they follow from
        // the LM width and the VQ codebook); the codebook size and embed dim are checked
        // against the tensors when the model loads.
        Ok(Self {
            vision: VisionConfig {
                image_size: v.image_size,
                patch_size: v.patch_size,
                hidden_size: v.hidden_size,
                num_layers: v.num_hidden_layers,
                num_heads: v.num_attention_heads,
                mlp_ratio: v.mlp_ratio,
                layer_norm_eps: v.layer_norm_eps,
            },
            aligner: ProjectorConfig { input_dim: v.hidden_size, n_embed: d },
            gen_aligner: ProjectorConfig {
                input_dim: 0, // from the tensors (vq embed_dim)
                n_embed: d,
            },
            gen: GenConfig {
                image_token_size: 0, // from the tensors (codebook size)
                embed_dim: 0,
                head_hidden: d,
            },
            llm,
        })
    }

    /// Fills the sizes the transformers config leaves implicit from the `gen_embed` tensor shape.
    pub(crate) fn complete_from_gen_embed(&mut self, rows: usize, cols: usize) {
        if self.gen.image_token_size == 0 {
            self.gen.image_token_size = rows;
        }
        if self.gen.embed_dim == 0 {
            self.gen.embed_dim = cols;
        }
        if self.gen_aligner.input_dim == 0 {
            self.gen_aligner.input_dim = cols;
        }
    }

    /// The Janus-Pro-7B config as released (most LLaMA fields omitted), for tests.
    pub const JANUS_PRO_7B_JSON: &'static str = r#"{
  "aligner_config": {"cls": "MlpProjector", "model_type": "aligner",
    "params": {"depth": 2, "input_dim": 1024, "n_embed": 4096, "projector_type": "mlp_gelu"}},
  "architectures": ["MultiModalityCausalLM"],
  "gen_aligner_config": {"cls": "MlpProjector", "model_type": "gen_aligner",
    "params": {"depth": 2, "input_dim": 8, "n_embed": 4096, "projector_type": "mlp_gelu"}},
  "gen_head_config": {"cls": "vision_head", "model_type": "gen_head",
    "params": {"image_token_embed": 4096, "image_token_size": 16384, "n_embed": 4096}},
  "gen_vision_config": {"cls": "VQ-16", "model_type": "gen_vision",
    "params": {"image_token_size": 16384, "n_embed": 8}},
  "language_config": {"max_position_embeddings": 16384, "model_type": "llama",
    "num_hidden_layers": 30, "torch_dtype": "bfloat16", "vocab_size": 102400},
  "model_type": "multi_modality",
  "torch_dtype": "bfloat16",
  "transformers_version": "4.33.1",
  "vision_config": {"cls": "CLIPVisionTower", "model_type": "vision",
    "params": {"image_size": 384, "model_name": "siglip_large_patch16_384",
               "select_feature": "same", "select_layer": -1}}
}"#;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seven_b_config_takes_llama_defaults() {
        let c = JanusConfig::from_json_str(JanusConfig::JANUS_PRO_7B_JSON, Path::new("7b")).unwrap();
        assert_eq!(c.llm.hidden_size, 4096);
        assert_eq!(c.llm.intermediate_size, 11008);
        assert_eq!(c.llm.num_attention_heads, 32);
        assert_eq!(c.llm.num_key_value_heads, 32);
        assert_eq!(c.llm.head_dim, 128);
        assert_eq!(c.llm.num_hidden_layers, 30);
        assert_eq!(c.llm.vocab_size, 102400);
        assert_eq!(c.llm.rms_norm_eps, 1e-6);
        assert_eq!(c.llm.rope_theta, 10000.0);
        assert_eq!(c.vision.hidden_size, 1024);
        assert_eq!(c.vision.num_layers, 24);
        assert_eq!(c.vision.num_image_tokens(), 576);
        assert_eq!(c.gen.image_token_size, 16384);
        assert_eq!(c.gen.embed_dim, 8);
        assert_eq!(c.gen_aligner.n_embed, 4096);
    }

    #[test]
    fn unknown_model_type_is_refused() {
        let err = JanusConfig::from_json_str(r#"{"model_type": "bert"}"#, Path::new("c.json")).unwrap_err().to_string();
        assert!(err.contains("bert"), "{err}");
    }
}
