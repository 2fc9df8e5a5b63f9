//! The image-generation side of Janus: `gen_embed` → `gen_aligner` (image token → LM input)
//! and `gen_head` (LM hidden state → image-token logits), plus the MLP projector they share
//! with the understanding `aligner`.
//!
//! Reference: deepseek-ai/Janus `janus/models/modeling_vlm.py` (`vision_head`,
//! `prepare_gen_img_embeds`) and `janus/models/projector.py` (`MlpProjector`, `mlp_gelu`).

use candle_core::{Module, Tensor};
use candle_nn::{embedding, Embedding, VarBuilder};

use crate::error::Result;
use crate::load::config::{GenConfig, ProjectorConfig};
use crate::modules::linear::{linear, Linear};
use crate::modules::linears::Linears;

/// `mlp_gelu` with depth 2: `layers.0` Linear → exact GELU → `layers.2` Linear.
pub struct MlpProjector {
    fc1: Linear,
    fc2: Linear,
}

impl MlpProjector {
    /// Bytes of its two projections' weights.
    pub fn weight_bytes(&self) -> usize {
        self.fc1.weight_bytes() + self.fc2.weight_bytes()
    }

    pub fn load(vb: VarBuilder, cfg: &ProjectorConfig) -> Result<Self> {
        Ok(Self {
            fc1: linear(cfg.input_dim, cfg.n_embed, vb.pp("layers.0"))?,
            fc2: linear(cfg.n_embed, cfg.n_embed, vb.pp("layers.2"))?,
        })
    }
}

impl Module for MlpProjector {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.fc2.forward(&self.fc1.forward(x)?.gelu_erf()?)
    }
}

/// `gen_head` (`vision_head`): `output_mlp_projector` → exact GELU → `vision_head`.
pub struct GenHead {
    output_mlp_projector: Linear,
    vision_head: Linear,
}

impl GenHead {
    /// Bytes of its two projections' weights.
    pub fn weight_bytes(&self) -> usize {
        self.output_mlp_projector.weight_bytes() + self.vision_head.weight_bytes()
    }

    /// `lin` stores the two projections (quantized or not).
    pub fn load(vb: VarBuilder, hidden: usize, cfg: &GenConfig, lin: &Linears) -> Result<Self> {
        Ok(Self {
            output_mlp_projector: lin.load(&vb.pp("output_mlp_projector"), hidden, cfg.head_hidden, true)?,
            vision_head: lin.load(&vb.pp("vision_head"), cfg.head_hidden, cfg.image_token_size, true)?,
        })
    }
}

impl Module for GenHead {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.vision_head.forward(&self.output_mlp_projector.forward(x)?.gelu_erf()?)
    }
}

/// Image-token ids → LM input embeddings: `gen_aligner(gen_embed(ids))`.
pub struct GenEmbed {
    gen_embed: Embedding,
    gen_aligner: MlpProjector,
}

impl GenEmbed {
    /// Bytes of weights one image token's embedding reads: the aligner's (the embedding's one
    /// row aside).
    pub fn weight_bytes(&self) -> usize {
        self.gen_aligner.weight_bytes()
    }

    /// `vb` is the model root (`gen_embed` and `gen_aligner` are top-level children).
    pub fn load(vb: VarBuilder, cfg: &GenConfig, aligner: &ProjectorConfig) -> Result<Self> {
        Ok(Self {
            gen_embed: embedding(cfg.image_token_size, cfg.embed_dim, vb.pp("gen_embed"))?,
            gen_aligner: MlpProjector::load(vb.pp("gen_aligner"), aligner)?,
        })
    }
}

impl Module for GenEmbed {
    fn forward(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        self.gen_aligner.forward(&self.gen_embed.forward(ids)?)
    }
}
