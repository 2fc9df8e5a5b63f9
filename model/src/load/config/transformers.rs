//! The transformers `janus` config.json (`models/janus/configuration_janus.py`): `text_config`,
//! `vision_config`, `vq_config`.
//!
//! The generation grid follows `JanusForConditionalGeneration.generate` and `JanusVQVAE.decode`:
//! `vision_config.num_image_tokens` tokens are generated, and decoded on a `num_patches` ×
//! `num_patches` grid, where `JanusConfig.__post_init__` sets `vq_config.num_patches =
//! vision_config.image_size // vision_config.patch_size` (whatever the file says). The image
//! side is that grid times the VQ decoder's upsampling, which is read from the tensors.

use std::path::Path;

use serde::Deserialize;

use super::{GenConfig, ImageGrid, JanusConfig, LlamaJson, LlmConfig, ProjectorConfig, VisionConfig};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Deserialize)]
pub struct HfConfig {
    pub text_config: LlamaJson,
    #[serde(default)]
    pub vision_config: HfVisionJson,
    #[serde(default)]
    pub vq_config: HfVqJson,
}

/// transformers `JanusVisionConfig` (only what we use), with its defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct HfVisionJson {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub mlp_ratio: f64,
    pub layer_norm_eps: f64,
    /// Depth of the understanding aligner.
    pub depth: usize,
    /// Image tokens generated per image (and understood per image).
    pub num_image_tokens: usize,
}

impl Default for HfVisionJson {
    fn default() -> Self {
        Self {
            hidden_size: 1024,
            num_hidden_layers: 24,
            num_attention_heads: 16,
            image_size: 384,
            patch_size: 16,
            mlp_ratio: 4.0,
            layer_norm_eps: 1e-6,
            depth: 2,
            num_image_tokens: 576,
        }
    }
}

/// transformers `JanusVQVAEConfig` (only what we use; the decoder's structure is read from the
/// tensors, and `num_patches` is overwritten from the vision config, see the module docs).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct HfVqJson {
    /// Depth of the generation aligner.
    pub num_hidden_layers: usize,
}

impl Default for HfVqJson {
    fn default() -> Self {
        Self { num_hidden_layers: 2 }
    }
}

impl HfVisionJson {
    fn grid(&self, path: &Path) -> Result<ImageGrid> {
        let bad = |msg: String| Error::Config { path: path.to_path_buf(), msg };
        if self.patch_size == 0 || self.image_size < self.patch_size {
            return Err(bad(format!(
                "vision_config: image_size {} and patch_size {} give no patch grid",
                self.image_size, self.patch_size
            )));
        }
        let num_patches = self.image_size / self.patch_size;
        if self.num_image_tokens != num_patches * num_patches {
            return Err(bad(format!(
                "vision_config.num_image_tokens {} does not fill the VQ's {num_patches}×{num_patches} grid \
                 (image_size {} // patch_size {})",
                self.num_image_tokens, self.image_size, self.patch_size
            )));
        }
        Ok(ImageGrid { num_image_tokens: self.num_image_tokens, grid_size: num_patches, image_size: None })
    }
}

impl JanusConfig {
    pub(super) fn from_hf(c: &HfConfig, path: &Path) -> Result<Self> {
        let llm = LlmConfig::from_json(&c.text_config, path)?;
        let v = &c.vision_config;
        let d = llm.hidden_size;
        for (name, depth) in
            [("vision_config.depth", v.depth), ("vq_config.num_hidden_layers", c.vq_config.num_hidden_layers)]
        {
            if depth != 2 {
                return Err(Error::Config {
                    path: path.to_path_buf(),
                    msg: format!("{name}: only the two-layer aligner is supported, got {depth}"),
                });
            }
        }
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
            image_grid: v.grid(path)?,
            llm,
        })
    }
}
