//! `config.json` in both checkpoint formats, resolved into one internal [`JanusConfig`].
//!
//! - [`original`]: the serde mirror of deepseek-ai/Janus's `multi_modality` config and its
//!   conversion;
//! - [`transformers`]: the serde mirror of transformers' `janus` config and its conversion;
//! - [`llama`]: the `LlamaConfig` block both share (fields missing from it take transformers'
//!   `LlamaConfig` defaults, which is what the original code does: the 7B config omits
//!   hidden_size, intermediate_size and the head counts);
//! - this module: the internal, format-independent config.
//!
//! The VQ model is described by neither config in full (the original builds it from code
//! defaults), so its sizes are read from the tensors instead, in [`crate::modules::vq`].

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

pub mod llama;
pub mod original;
pub mod transformers;

pub use llama::{LlamaJson, RopeParameters};
pub use original::{
    ClsParams, GenHeadParams, GenVisionParams, GenerationScript, OriginalConfig, OriginalVisionParams, ProjectorParams,
};
pub use transformers::{HfConfig, HfVisionJson, HfVqJson};

/// Which on-disk layout a checkpoint uses; decided from its tensor names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointFormat {
    /// `deepseek-ai/Janus-Pro-*`: `MultiModalityCausalLM` names (`language_model.model.*`, fused `qkv`).
    Original,
    /// transformers `JanusForConditionalGeneration` names (`model.language_model.*`, split q/k/v).
    Transformers,
}

#[derive(Debug, Clone, Deserialize)]
struct ModelTypeProbe {
    #[serde(default)]
    model_type: Option<String>,
}

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
    /// Bytes of keys and values one row's cache holds per position, in `dtype`.
    pub fn kv_bytes_per_position(&self, dtype: candle_core::DType) -> usize {
        2 * self.num_hidden_layers * self.num_key_value_heads * self.head_dim * dtype.size_in_bytes()
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
    /// Number of SigLIP patches of one understood image (patch grid, row-major). Generated
    /// images have their own grid, [`ImageGrid`].
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

/// The token grid of a generated image, by the rule of the config's format (see
/// [`original`] and [`transformers`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageGrid {
    /// Image tokens generated per image (576 for Janus-Pro).
    pub num_image_tokens: usize,
    /// Side of the token grid the VQ decodes (24); `num_image_tokens` = `grid_size`².
    pub grid_size: usize,
    /// Side of the image in pixels when the format fixes it (the original script's `img_size`,
    /// 384); otherwise it is `grid_size` times the VQ decoder's upsampling.
    pub image_size: Option<usize>,
}

/// Everything we need to build the model, in one format-independent shape.
#[derive(Debug, Clone, PartialEq)]
pub struct JanusConfig {
    pub llm: LlmConfig,
    pub vision: VisionConfig,
    pub aligner: ProjectorConfig,
    pub gen_aligner: ProjectorConfig,
    pub gen: GenConfig,
    pub image_grid: ImageGrid,
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
        assert_eq!(c.image_grid, ImageGrid { num_image_tokens: 576, grid_size: 24, image_size: Some(384) });
    }

    /// transformers' defaults describe Janus-Pro-1B's grid.
    #[test]
    fn transformers_defaults_give_the_janus_pro_grid() {
        let c =
            JanusConfig::from_json_str(r#"{"model_type": "janus", "text_config": {}}"#, Path::new("c.json")).unwrap();
        assert_eq!(c.image_grid, ImageGrid { num_image_tokens: 576, grid_size: 24, image_size: None });
    }

    /// transformers: `num_image_tokens` tokens on an `image_size // patch_size` grid, whatever
    /// `vq_config.num_patches` says; a count that does not fill the grid is refused.
    #[test]
    fn transformers_grid_follows_the_vision_config() {
        let cfg = |tokens: usize| {
            format!(
                r#"{{"model_type": "janus", "text_config": {{}}, "vq_config": {{"num_patches": 7}},
                   "vision_config": {{"image_size": 32, "patch_size": 8, "num_image_tokens": {tokens}}}}}"#
            )
        };
        let c = JanusConfig::from_json_str(&cfg(16), Path::new("c.json")).unwrap();
        assert_eq!(c.image_grid, ImageGrid { num_image_tokens: 16, grid_size: 4, image_size: None });
        let e = JanusConfig::from_json_str(&cfg(64), Path::new("c.json")).unwrap_err();
        assert!(matches!(e, Error::Config { .. }), "{e}");
    }

    /// The original format takes the reference script's constants unless the config states them.
    #[test]
    fn original_grid_takes_the_script_constants() {
        let mut v: serde_json::Value = serde_json::from_str(JanusConfig::JANUS_PRO_7B_JSON).unwrap();
        let params = &mut v["gen_vision_config"]["params"];
        params["image_token_num_per_image"] = 16.into();
        params["img_size"] = 32.into();
        params["patch_size"] = 8.into();
        let c = JanusConfig::from_json_str(&v.to_string(), Path::new("c.json")).unwrap();
        assert_eq!(c.image_grid, ImageGrid { num_image_tokens: 16, grid_size: 4, image_size: Some(32) });
        v["gen_vision_config"]["params"]["image_token_num_per_image"] = 15.into();
        let e = JanusConfig::from_json_str(&v.to_string(), Path::new("c.json")).unwrap_err();
        assert!(matches!(e, Error::Config { .. }), "{e}");
    }

    #[test]
    fn rope_parameters_of_transformers_5_are_read() {
        let c = JanusConfig::from_json_str(
            r#"{"model_type": "janus", "text_config": {"rope_parameters": {"rope_type": "default", "rope_theta": 500.0}}}"#,
            Path::new("c.json"),
        )
        .unwrap();
        assert_eq!(c.llm.rope_theta, 500.0);
        let e = JanusConfig::from_json_str(
            r#"{"model_type": "janus", "text_config": {"rope_parameters": {"rope_type": "linear", "factor": 2.0}}}"#,
            Path::new("c.json"),
        )
        .unwrap_err();
        assert!(matches!(e, Error::Config { .. }), "{e}");
    }

    #[test]
    fn unknown_model_type_is_refused() {
        let err = JanusConfig::from_json_str(r#"{"model_type": "bert"}"#, Path::new("c.json")).unwrap_err().to_string();
        assert!(err.contains("bert"), "{err}");
    }
}
