//! The LLaMA block both formats share: `language_config` of the original config and
//! `text_config` of the transformers one, each a (partial) transformers `LlamaConfig`.

use std::path::Path;

use serde::Deserialize;

use super::LlmConfig;
use crate::error::{Error, Result};

/// transformers `LlamaConfig`, with its defaults for every field a Janus config may omit (the
/// released 7B `language_config` omits the widths and head counts).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LlamaJson {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<serde_json::Value>,
    /// transformers ≥ 5 writes `rope_theta` (and the scaling type) here instead.
    pub rope_parameters: Option<RopeParameters>,
    pub attention_bias: bool,
    pub mlp_bias: bool,
}

impl Default for LlamaJson {
    fn default() -> Self {
        Self {
            vocab_size: 32000,
            hidden_size: 4096,
            intermediate_size: 11008,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: None,
            head_dim: None,
            hidden_act: "silu".into(),
            max_position_embeddings: 2048,
            rms_norm_eps: 1e-6,
            rope_theta: 10000.0,
            rope_scaling: None,
            rope_parameters: None,
            attention_bias: false,
            mlp_bias: false,
        }
    }
}

/// transformers ≥ 5 `rope_parameters` (`{"rope_type": "default", "rope_theta": 10000.0}`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RopeParameters {
    pub rope_type: Option<String>,
    pub rope_theta: Option<f64>,
}

impl LlmConfig {
    /// Checks what Janus-Pro's decoder supports and fills the implied sizes.
    pub(crate) fn from_json(j: &LlamaJson, path: &Path) -> Result<Self> {
        let bad = |msg: String| Error::Config { path: path.to_path_buf(), msg };
        if j.hidden_act != "silu" {
            return Err(bad(format!("unsupported hidden_act {:?}", j.hidden_act)));
        }
        if j.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(bad("rope_scaling is not supported by Janus-Pro".into()));
        }
        let rope = j.rope_parameters.clone().unwrap_or_default();
        if let Some(t) = rope.rope_type.as_deref().filter(|&t| t != "default") {
            return Err(bad(format!("rope_parameters.rope_type {t:?} is not supported by Janus-Pro")));
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
            rope_theta: rope.rope_theta.unwrap_or(j.rope_theta),
        })
    }
}
