//! The VQ image detokenizer: LlamaGen VQ-16 (`gen_vision_model`), decoder side, and the blocks
//! it shares with the encoder ([`crate::modules::vq_encoder`]): convolutions, GroupNorm + swish,
//! residual and attention blocks.
//!
//! Reference: deepseek-ai/Janus `janus/models/vq_model.py` (`VQModel.decode_code`, `Decoder`,
//! `ResnetBlock`, `AttnBlock`, `Upsample`, `VectorQuantizer.get_codebook_entry`), and
//! transformers `models/janus/modeling_janus.py` (`JanusVQVAE*`) for the converted names.
//! The original builds the VQ from code defaults, not from config.json, so the structure here
//! (channels, levels, residual blocks, where attention sits) is read from the tensor shapes,
//! which lets the real 16×-downsampling VQ and tiny test models load through the same code.

use candle_core::{DType, Module, Tensor};
use candle_nn::{conv2d, Conv2dConfig, GroupNorm, VarBuilder};

use crate::error::{Error, Result};
use crate::kernels::conv::{group_norm, same_conv2d};
use crate::load::checkpoint::Checkpoint;

const GROUPS: usize = 32;
const EPS: f64 = 1e-6;

/// One decoder level (`decoder.conv_blocks.{k}`), lowest resolution first.
#[derive(Debug, Clone, PartialEq)]
pub struct VqLevel {
    /// (in, out) channels of each residual block.
    pub res: Vec<(usize, usize)>,
    /// Number of attention blocks (one after each of the first `attn` residual blocks).
    pub attn: usize,
    pub upsample: bool,
}

/// Decoder structure, read from the checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct VqConfig {
    pub codebook_size: usize,
    pub embed_dim: usize,
    pub z_channels: usize,
    pub mid_channels: usize,
    pub levels: Vec<VqLevel>,
    pub out_channels: usize,
}

impl VqConfig {
    /// Spatial upsampling factor of the decoder between the token grid and the image.
    pub fn downsample(&self) -> usize {
        1 << self.levels.iter().filter(|l| l.upsample).count()
    }

    /// Reads the structure from tensor shapes (original names under `gen_vision_model.`).
    pub fn from_checkpoint(ckpt: &Checkpoint) -> Result<Self> {
        let p = "gen_vision_model.";
        let shape = |n: &str| ckpt.shape_of(&format!("{p}{n}"));
        let need = |n: &str| {
            shape(n).ok_or_else(|| Error::Weights(format!("VQ decoder tensor {p}{n} is missing from the checkpoint")))
        };
        let cb = need("quantize.embedding.weight")?;
        let pq = need("post_quant_conv.weight")?;
        let conv_in = need("decoder.conv_in.weight")?;
        let conv_out = need("decoder.conv_out.weight")?;
        let mut levels = Vec::new();
        for k in 0.. {
            let base = format!("decoder.conv_blocks.{k}");
            let mut res = Vec::new();
            while let Some(s) = shape(&format!("{base}.res.{}.conv1.weight", res.len())) {
                res.push((s[1], s[0]));
            }
            if res.is_empty() {
                break;
            }
            let mut attn = 0;
            while shape(&format!("{base}.attn.{attn}.q.weight")).is_some() {
                attn += 1;
            }
            let upsample = shape(&format!("{base}.upsample.conv.weight")).is_some();
            levels.push(VqLevel { res, attn, upsample });
        }
        if levels.is_empty() {
            return Err(Error::Weights(format!(
                "VQ decoder has no levels ({p}decoder.conv_blocks.0.res.0.conv1.weight is missing)"
            )));
        }
        Ok(Self {
            codebook_size: cb[0],
            embed_dim: cb[1],
            z_channels: pq[0],
            mid_channels: conv_in[0],
            levels,
            out_channels: conv_out[0],
        })
    }
}

/// A "same" convolution with bias (every convolution of the decoder is one): on the CPU in f32
/// through [`same_conv2d`], elsewhere through candle's conv2d.
pub(super) struct Conv2d(candle_nn::Conv2d);

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match (x.device().is_cpu(), x.dtype(), self.0.bias()) {
            (true, DType::F32, Some(bias)) => same_conv2d(x, self.0.weight(), bias),
            _ => self.0.forward(x),
        }
    }
}

pub(super) fn conv(cin: usize, cout: usize, k: usize, vb: VarBuilder) -> Result<Conv2d> {
    let cfg = Conv2dConfig { padding: k / 2, ..Default::default() };
    Ok(Conv2d(conv2d(cin, cout, k, cfg, vb)?))
}

/// GroupNorm(32, eps 1e-6), optionally followed by swish (SiLU), as the decoder always pairs
/// them: on the CPU in f32 as one fused kernel, elsewhere through candle's ops.
pub(super) struct Norm {
    gn: GroupNorm,
    weight: Tensor,
    bias: Tensor,
}

impl Norm {
    pub(super) fn load(vb: VarBuilder, c: usize) -> Result<Self> {
        let (weight, bias) = (vb.get(c, "weight")?, vb.get(c, "bias")?);
        Ok(Self { gn: GroupNorm::new(weight.clone(), bias.clone(), c, GROUPS, EPS)?, weight, bias })
    }

    pub(super) fn forward(&self, x: &Tensor, swish: bool) -> Result<Tensor> {
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            return Ok(group_norm(x, &self.weight, &self.bias, GROUPS, EPS, swish)?);
        }
        let y = self.gn.forward(x)?;
        Ok(if swish { candle_nn::ops::silu(&y)? } else { y })
    }
}

pub(super) struct ResnetBlock {
    norm1: Norm,
    conv1: Conv2d,
    norm2: Norm,
    conv2: Conv2d,
    nin_shortcut: Option<Conv2d>,
}

impl ResnetBlock {
    pub(super) fn load(vb: VarBuilder, cin: usize, cout: usize) -> Result<Self> {
        Ok(Self {
            norm1: Norm::load(vb.pp("norm1"), cin)?,
            conv1: conv(cin, cout, 3, vb.pp("conv1"))?,
            norm2: Norm::load(vb.pp("norm2"), cout)?,
            conv2: conv(cout, cout, 3, vb.pp("conv2"))?,
            nin_shortcut: if cin != cout { Some(conv(cin, cout, 1, vb.pp("nin_shortcut"))?) } else { None },
        })
    }

    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward(x, true)?)?;
        let h = self.conv2.forward(&self.norm2.forward(&h, true)?)?;
        let shortcut = match &self.nin_shortcut {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        Ok((shortcut + h)?)
    }
}

/// Single-head spatial self-attention with 1×1 convolutions.
pub(super) struct AttnBlock {
    norm: Norm,
    q: Conv2d,
    k: Conv2d,
    v: Conv2d,
    proj_out: Conv2d,
}

impl AttnBlock {
    pub(super) fn load(vb: VarBuilder, c: usize) -> Result<Self> {
        Ok(Self {
            norm: Norm::load(vb.pp("norm"), c)?,
            q: conv(c, c, 1, vb.pp("q"))?,
            k: conv(c, c, 1, vb.pp("k"))?,
            v: conv(c, c, 1, vb.pp("v"))?,
            proj_out: conv(c, c, 1, vb.pp("proj_out"))?,
        })
    }

    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let n = self.norm.forward(x, false)?;
        let q = self.q.forward(&n)?.reshape((b, c, h * w))?.transpose(1, 2)?; // [b, hw, c]
        let k = self.k.forward(&n)?.reshape((b, c, h * w))?; // [b, c, hw]
        let v = self.v.forward(&n)?.reshape((b, c, h * w))?; // [b, c, hw]
        let att = (q.contiguous()?.matmul(&k)? * (c as f64).powf(-0.5))?; // [b, hw(q), hw(k)]
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        let out = v.matmul(&att.t()?)?.reshape((b, c, h, w))?;
        Ok((x + self.proj_out.forward(&out)?)?)
    }
}

/// The residual blocks of one level (`res.{j}`), each followed by its attention block
/// (`attn.{j}`) where there is one: how every level of the encoder and of the decoder runs.
pub(super) struct Blocks {
    res: Vec<ResnetBlock>,
    attn: Vec<AttnBlock>,
}

impl Blocks {
    /// `res` holds the (in, out) channels of each residual block; the attention blocks work on
    /// the last block's output channels (`c` when there is no residual block).
    pub(super) fn load(vb: &VarBuilder, res: &[(usize, usize)], attn: usize, c: usize) -> Result<Self> {
        let out_c = res.last().map(|r| r.1).unwrap_or(c);
        Ok(Self {
            res: res
                .iter()
                .enumerate()
                .map(|(j, &(cin, cout))| ResnetBlock::load(vb.pp(format!("res.{j}")), cin, cout))
                .collect::<Result<_>>()?,
            attn: (0..attn).map(|j| AttnBlock::load(vb.pp(format!("attn.{j}")), out_c)).collect::<Result<_>>()?,
        })
    }

    pub(super) fn forward(&self, mut h: Tensor) -> Result<Tensor> {
        for (j, res) in self.res.iter().enumerate() {
            h = res.forward(&h)?;
            if let Some(a) = self.attn.get(j) {
                h = a.forward(&h)?;
            }
        }
        Ok(h)
    }
}

struct Level {
    blocks: Blocks,
    upsample: Option<Conv2d>,
}

/// `gen_vision_model`: codebook lookup, `post_quant_conv` and the decoder.
pub struct VqDecoder {
    /// L2-normalised codebook rows, `[codebook_size, embed_dim]`.
    codebook: Tensor,
    post_quant_conv: Conv2d,
    conv_in: Conv2d,
    mid: (ResnetBlock, AttnBlock, ResnetBlock),
    levels: Vec<Level>,
    norm_out: Norm,
    conv_out: Conv2d,
    cfg: VqConfig,
}

impl VqDecoder {
    /// `vb` points at `gen_vision_model`.
    pub fn load(vb: VarBuilder, cfg: &VqConfig) -> Result<Self> {
        let cb = vb.pp("quantize.embedding").get((cfg.codebook_size, cfg.embed_dim), "weight")?;
        // F.normalize: x / max(‖x‖₂, 1e-12), done once instead of at every lookup.
        let norm = cb.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::INFINITY)?;
        let codebook = cb.broadcast_div(&norm)?;
        let d = vb.pp("decoder");
        let m = cfg.mid_channels;
        let levels = cfg
            .levels
            .iter()
            .enumerate()
            .map(|(k, l)| {
                let lb = d.pp(format!("conv_blocks.{k}"));
                let blocks = Blocks::load(&lb, &l.res, l.attn, m)?;
                let out_c = l.res.last().map(|r| r.1).unwrap_or(m);
                let upsample = if l.upsample { Some(conv(out_c, out_c, 3, lb.pp("upsample.conv"))?) } else { None };
                Ok(Level { blocks, upsample })
            })
            .collect::<Result<Vec<_>>>()?;
        let last_c = cfg.levels.last().and_then(|l| l.res.last()).map(|r| r.1).unwrap_or(m);
        Ok(Self {
            codebook,
            post_quant_conv: conv(cfg.embed_dim, cfg.z_channels, 1, vb.pp("post_quant_conv"))?,
            conv_in: conv(cfg.z_channels, m, 3, d.pp("conv_in"))?,
            mid: (
                ResnetBlock::load(d.pp("mid.0"), m, m)?,
                AttnBlock::load(d.pp("mid.1"), m)?,
                ResnetBlock::load(d.pp("mid.2"), m, m)?,
            ),
            levels,
            norm_out: Norm::load(d.pp("norm_out"), last_c)?,
            conv_out: conv(last_c, cfg.out_channels, 3, d.pp("conv_out"))?,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &VqConfig {
        &self.cfg
    }

    /// Image tokens `[N, g*g]` (raster order) on the model's `g`×`g` grid (transformers'
    /// `num_patches`, the original's `img_size // patch_size`) → decoder output
    /// `[N, 3, g*f, g*f]`, nominally in [-1, 1], where f is the upsampling factor.
    pub fn decode_tokens(&self, tokens: &Tensor, g: usize) -> Result<Tensor> {
        let (n, len) = tokens.dims2()?;
        if g * g != len {
            return Err(Error::InvalidInput(format!("{len} image tokens do not fill the {g}×{g} token grid")));
        }
        let z = self
            .codebook
            .index_select(&tokens.flatten_all()?, 0)?
            .reshape((n, g, g, self.cfg.embed_dim))?
            .permute((0, 3, 1, 2))?
            .contiguous()?;
        self.decode(&z)
    }

    /// Quantized latents `[N, embed_dim, g, g]` → pixels.
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        let h = self.post_quant_conv.forward(z)?;
        let mut h = self.conv_in.forward(&h)?;
        h = self.mid.0.forward(&h)?;
        h = self.mid.1.forward(&h)?;
        h = self.mid.2.forward(&h)?;
        for level in &self.levels {
            h = level.blocks.forward(h)?;
            if let Some(up) = &level.upsample {
                let (_, _, hh, ww) = h.dims4()?;
                h = up.forward(&h.upsample_nearest2d(hh * 2, ww * 2)?)?;
            }
        }
        let h = self.norm_out.forward(&h, true)?;
        Ok(self.conv_out.forward(&h)?)
    }

    pub fn dtype(&self) -> DType {
        self.codebook.dtype()
    }
}
