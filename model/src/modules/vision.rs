//! The understanding encoder: SigLIP ViT (timm layout) and the `aligner` projector.
//!
//! Reference: deepseek-ai/Janus `janus/models/siglip_vit.py` (timm `VisionTransformer` with
//! `class_token=False`, `global_pool="map"`, `ignore_head=True`) wrapped by `clip_encoder.py`
//! (`select_layer=-1`: every block, then the final `norm`); transformers
//! `JanusVisionModel` for the converted names, which [`crate::load::checkpoint`] maps back to these.
//! Pre-norm blocks, LayerNorm eps 1e-6, fused `qkv` (q | k | v), exact-erf GELU, no CLS
//! token; the MAP head (`attn_pool.*`) is in the checkpoint but never used.

use candle_core::{DType, Module, Tensor};
use candle_nn::{conv2d, layer_norm, Conv2d, Conv2dConfig, LayerNorm, LayerNormConfig, VarBuilder};

use crate::error::Result;
use crate::load::config::{ProjectorConfig, VisionConfig};
use crate::modules::gen::MlpProjector;
use crate::modules::linear::{linear, Linear};

struct Attention {
    qkv: Linear,
    proj: Linear,
    num_heads: usize,
}

impl Attention {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, c) = x.dims3()?;
        let hd = c / self.num_heads;
        // [b, n, 3, heads, hd] → [3, b, heads, n, hd]
        let qkv = self.qkv.forward(x)?.reshape((b, n, 3, self.num_heads, hd))?.permute((2, 0, 3, 1, 4))?;
        let q = qkv.get(0)?.contiguous()?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let att = (q.matmul(&k.t()?)? * (hd as f64).powf(-0.5))?;
        let att = candle_nn::ops::softmax_last_dim(&att.to_dtype(DType::F32)?)?.to_dtype(v.dtype())?;
        let y = att.matmul(&v)?.transpose(1, 2)?.reshape((b, n, c))?;
        Ok(self.proj.forward(&y)?)
    }
}

struct Block {
    norm1: LayerNorm,
    attn: Attention,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl Block {
    fn load(vb: VarBuilder, cfg: &VisionConfig) -> Result<Self> {
        let c = cfg.hidden_size;
        let hidden = (c as f64 * cfg.mlp_ratio).round() as usize;
        let ln = LayerNormConfig { eps: cfg.layer_norm_eps, ..Default::default() };
        Ok(Self {
            norm1: layer_norm(c, ln, vb.pp("norm1"))?,
            attn: Attention {
                qkv: linear(c, 3 * c, vb.pp("attn.qkv"))?,
                proj: linear(c, c, vb.pp("attn.proj"))?,
                num_heads: cfg.num_heads,
            },
            norm2: layer_norm(c, ln, vb.pp("norm2"))?,
            fc1: linear(c, hidden, vb.pp("mlp.fc1"))?,
            fc2: linear(hidden, c, vb.pp("mlp.fc2"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = (x + self.attn.forward(&self.norm1.forward(x)?)?)?;
        let h = self.fc2.forward(&self.fc1.forward(&self.norm2.forward(&x)?)?.gelu_erf()?)?;
        Ok((x + h)?)
    }
}

/// `vision_model.vision_tower`: patch embedding, learned positions, blocks, final norm.
pub struct SiglipVit {
    patch_embed: Conv2d,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    norm: LayerNorm,
    cfg: VisionConfig,
}

impl SiglipVit {
    /// `vb` points at `vision_model.vision_tower`.
    pub fn load(vb: VarBuilder, cfg: &VisionConfig) -> Result<Self> {
        let c = cfg.hidden_size;
        let conv_cfg = Conv2dConfig { stride: cfg.patch_size, ..Default::default() };
        let ln = LayerNormConfig { eps: cfg.layer_norm_eps, ..Default::default() };
        Ok(Self {
            patch_embed: conv2d(3, c, cfg.patch_size, conv_cfg, vb.pp("patch_embed.proj"))?,
            pos_embed: vb.get((1, cfg.num_image_tokens(), c), "pos_embed")?,
            blocks: (0..cfg.num_layers)
                .map(|i| Block::load(vb.pp(format!("blocks.{i}")), cfg))
                .collect::<Result<_>>()?,
            norm: layer_norm(c, ln, vb.pp("norm"))?,
            cfg: cfg.clone(),
        })
    }

    /// Pixels `[B, 3, S, S]` (normalised) → patch features `[B, N, C]` after the final norm.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let (_b, _c, h, w) = pixels.dims4()?;
        let s = self.cfg.image_size;
        if h != s || w != s {
            return Err(crate::Error::InvalidInput(format!("vision input must be {s}x{s}, got {w}x{h}")));
        }
        let x = self.patch_embed.forward(pixels)?.flatten_from(2)?.transpose(1, 2)?; // [b, n, c]
        let mut x = x.broadcast_add(&self.pos_embed)?;
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        Ok(self.norm.forward(&x)?)
    }
}

/// The SigLIP encoder and the `aligner` that maps its features into the LM's embedding space.
pub struct VisionEncoder {
    pub vit: SiglipVit,
    pub aligner: MlpProjector,
}

impl VisionEncoder {
    /// `vb` is the model root.
    pub fn load(vb: VarBuilder, cfg: &VisionConfig, aligner: &ProjectorConfig) -> Result<Self> {
        Ok(Self {
            vit: SiglipVit::load(vb.pp("vision_model.vision_tower"), cfg)?,
            aligner: MlpProjector::load(vb.pp("aligner"), aligner)?,
        })
    }

    /// Pixels `[B, 3, S, S]` → image embeddings `[B, N, D]` for the LM.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        Ok(self.aligner.forward(&self.vit.forward(pixels)?)?)
    }
}
