//! The original `multi_modality` config.json (deepseek-ai/Janus `janus/models/modeling_vlm.py`):
//! one `{cls, params}` block per sub-module, `language_config` holding a partial `LlamaConfig`.
//!
//! The generation grid is not in this config at all: the reference script
//! (`generation_inference.py`) fixes `image_token_num_per_image = 576`, `img_size = 384` and
//! `patch_size = 16` (the VQ's downsampling), and decodes on a `img_size // patch_size` grid.
//! Our tiny test checkpoints, which are smaller, state their own values of those three constants
//! in `gen_vision_config.params` (see [`GenerationScript`]); released configs never do.

use std::path::Path;

use serde::Deserialize;

use super::{GenConfig, ImageGrid, JanusConfig, LlamaJson, LlmConfig, ProjectorConfig, VisionConfig};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Deserialize)]
pub struct OriginalConfig {
    pub language_config: LlamaJson,
    pub vision_config: ClsParams<OriginalVisionParams>,
    pub aligner_config: ClsParams<ProjectorParams>,
    pub gen_aligner_config: ClsParams<ProjectorParams>,
    pub gen_head_config: ClsParams<GenHeadParams>,
    pub gen_vision_config: ClsParams<GenVisionParams>,
}

/// One `{cls, params}` block.
#[derive(Debug, Clone, Deserialize)]
pub struct ClsParams<P> {
    #[serde(default)]
    pub cls: String,
    pub params: P,
}

/// `aligner_config.params` / `gen_aligner_config.params` (`MlpProjector`).
#[derive(Debug, Clone, Deserialize)]
pub struct ProjectorParams {
    #[serde(default = "two")]
    pub depth: usize,
    pub input_dim: usize,
    pub n_embed: usize,
    #[serde(default = "mlp_gelu")]
    pub projector_type: String,
}

fn two() -> usize {
    2
}

fn mlp_gelu() -> String {
    "mlp_gelu".into()
}

/// `gen_head_config.params` (`vision_head`).
#[derive(Debug, Clone, Deserialize)]
pub struct GenHeadParams {
    pub image_token_embed: usize,
    pub image_token_size: usize,
    pub n_embed: usize,
}

/// `gen_vision_config.params` (`VQ-16`).
#[derive(Debug, Clone, Deserialize)]
pub struct GenVisionParams {
    pub image_token_size: usize,
    pub n_embed: usize,
    #[serde(flatten)]
    pub script: GenerationScript,
}

/// The constants of the reference generation script (`generation_inference.py`), under its
/// names. Released configs do not carry them, so they take the script's values; the tiny test
/// checkpoints override them in `gen_vision_config.params`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct GenerationScript {
    /// Image tokens generated per image.
    pub image_token_num_per_image: usize,
    /// Side of the generated image in pixels.
    pub img_size: usize,
    /// The VQ's downsampling factor; the token grid is `img_size / patch_size`.
    pub patch_size: usize,
}

impl Default for GenerationScript {
    fn default() -> Self {
        Self { image_token_num_per_image: 576, img_size: 384, patch_size: 16 }
    }
}

impl GenerationScript {
    /// The script generates `image_token_num_per_image` tokens and decodes them with
    /// `shape=[P, 8, img_size // patch_size, img_size // patch_size]` into an `img_size` image.
    fn grid(&self, path: &Path) -> Result<ImageGrid> {
        let s = self;
        let grid = s.img_size.checked_div(s.patch_size).unwrap_or(0);
        if grid == 0 || grid * grid != s.image_token_num_per_image {
            return Err(Error::Config {
                path: path.to_path_buf(),
                msg: format!(
                    "gen_vision_config: {} image tokens do not fill the {grid}×{grid} grid of img_size {} / patch_size {}",
                    s.image_token_num_per_image, s.img_size, s.patch_size
                ),
            });
        }
        Ok(ImageGrid { num_image_tokens: s.image_token_num_per_image, grid_size: grid, image_size: Some(s.img_size) })
    }
}

/// `vision_config.params` (`CLIPVisionTower`). The released configs only name the timm model;
/// `width`, `layers`, `heads`, `patch_size` and `mlp_ratio` may override the table entry (our
/// tiny test checkpoints use that to describe themselves).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct OriginalVisionParams {
    pub image_size: usize,
    pub model_name: String,
    pub select_layer: i64,
    pub width: Option<usize>,
    pub layers: Option<usize>,
    pub heads: Option<usize>,
    pub patch_size: Option<usize>,
    pub mlp_ratio: Option<f64>,
}

impl Default for OriginalVisionParams {
    fn default() -> Self {
        Self {
            image_size: 384,
            model_name: "siglip_large_patch16_384".into(),
            select_layer: -1,
            width: None,
            layers: None,
            heads: None,
            patch_size: None,
            mlp_ratio: None,
        }
    }
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
}

impl JanusConfig {
    pub(super) fn from_original(c: &OriginalConfig, path: &Path) -> Result<Self> {
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
            image_grid: c.gen_vision_config.params.script.grid(path)?,
            llm,
        })
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
