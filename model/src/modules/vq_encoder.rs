//! The VQ image tokenizer: LlamaGen VQ-16 (`gen_vision_model`), encoder side. Pixels in [-1, 1]
//! → encoder → `quant_conv` → latents `z` → codebook indices by the original quantizer rule.
//!
//! Reference: deepseek-ai/Janus `janus/models/vq_model.py` (`Encoder`, `Downsample`,
//! `VectorQuantizer.forward` with `codebook_l2_norm = True`), and transformers
//! `models/janus/modeling_janus.py` (`JanusVQVAEEncoder`, `JanusVQVAEConvDownsample`) for the
//! converted names. As for the decoder, the structure is read from the tensor shapes. The
//! quantizer L2-normalises z and the codebook rows (`F.normalize`, eps 1e-12) before the squared
//! distances; transformers' `JanusVQVAEVectorQuantizer.forward` skips both normalisations, and we
//! follow the original.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{conv2d, Conv2dConfig, VarBuilder};
use rayon::prelude::*;

use super::vq::{conv, AttnBlock, Blocks, Conv2d, Norm, ResnetBlock};
use crate::error::{Error, Result};
use crate::load::checkpoint::Checkpoint;

/// One encoder level (`encoder.conv_blocks.{k}`), highest resolution first.
#[derive(Debug, Clone, PartialEq)]
pub struct VqEncoderLevel {
    /// (in, out) channels of each residual block.
    pub res: Vec<(usize, usize)>,
    /// Number of attention blocks (one after each of the first `attn` residual blocks).
    pub attn: usize,
    /// Channels of the level's `downsample` (every level but the last has one).
    pub downsample: Option<usize>,
}

/// Encoder structure, read from the checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct VqEncoderConfig {
    /// Image channels (3).
    pub in_channels: usize,
    /// Output channels of `conv_in` (128 for Janus-Pro).
    pub base_channels: usize,
    pub levels: Vec<VqEncoderLevel>,
    pub mid_channels: usize,
    /// Output channels of `conv_out` (256).
    pub z_channels: usize,
    /// Output channels of `quant_conv` = the codebook's width (8).
    pub embed_dim: usize,
    pub codebook_size: usize,
}

impl VqEncoderConfig {
    /// Spatial downsampling factor between the image and the token grid (16 for Janus-Pro).
    pub fn downsample(&self) -> usize {
        1 << self.levels.iter().filter(|l| l.downsample.is_some()).count()
    }

    /// Reads the structure from tensor shapes (original names under `gen_vision_model.`);
    /// `None` when the checkpoint has no encoder (`encoder.conv_in.weight` is absent).
    pub fn from_checkpoint(ckpt: &Checkpoint) -> Result<Option<Self>> {
        let p = "gen_vision_model.";
        let shape = |n: &str| ckpt.shape_of(&format!("{p}{n}"));
        let Some(conv_in) = shape("encoder.conv_in.weight") else { return Ok(None) };
        let need = |n: &str| {
            shape(n).ok_or_else(|| Error::Weights(format!("VQ encoder tensor {p}{n} is missing from the checkpoint")))
        };
        let cb = need("quantize.embedding.weight")?;
        let qc = need("quant_conv.weight")?;
        let conv_out = need("encoder.conv_out.weight")?;
        let mid = need("encoder.mid.0.conv1.weight")?;
        let mut levels = Vec::new();
        for k in 0.. {
            let base = format!("encoder.conv_blocks.{k}");
            let mut res = Vec::new();
            while let Some(s) = shape(&format!("{base}.res.{}.conv1.weight", res.len())) {
                res.push((s[1], s[0]));
            }
            let mut attn = 0;
            while shape(&format!("{base}.attn.{attn}.q.weight")).is_some() {
                attn += 1;
            }
            let downsample = shape(&format!("{base}.downsample.conv.weight")).map(|s| s[0]);
            // A level with nothing in it can only be the last (a model without residual blocks
            // has its last level empty): every other level has a downsample.
            if res.is_empty() && attn == 0 && downsample.is_none() {
                break;
            }
            levels.push(VqEncoderLevel { res, attn, downsample });
        }
        Ok(Some(Self {
            in_channels: conv_in[1],
            base_channels: conv_in[0],
            levels,
            mid_channels: mid[0],
            z_channels: conv_out[0],
            embed_dim: qc[0],
            codebook_size: cb[0],
        }))
    }
}

/// `Downsample`: pad right and bottom by one with zeros, then a 3×3 convolution of stride 2
/// without padding.
struct Downsample(candle_nn::Conv2d);

impl Downsample {
    fn load(c: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self(conv2d(c, c, 3, Conv2dConfig { stride: 2, padding: 0, ..Default::default() }, vb)?))
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.pad_with_zeros(3, 0, 1)?.pad_with_zeros(2, 0, 1)?;
        Ok(self.0.forward(&x)?)
    }
}

struct Level {
    blocks: Blocks,
    downsample: Option<Downsample>,
}

/// `gen_vision_model`: the encoder, `quant_conv` and the quantizer.
pub struct VqEncoder {
    conv_in: Conv2d,
    levels: Vec<Level>,
    mid: (ResnetBlock, AttnBlock, ResnetBlock),
    norm_out: Norm,
    conv_out: Conv2d,
    quant_conv: Conv2d,
    /// L2-normalised codebook rows, `[codebook_size × embed_dim]` row-major, f32 on the host.
    codebook: Vec<f32>,
    cfg: VqEncoderConfig,
    dtype: DType,
}

impl VqEncoder {
    /// `vb` points at `gen_vision_model`.
    pub fn load(vb: VarBuilder, cfg: &VqEncoderConfig) -> Result<Self> {
        let e = vb.pp("encoder");
        let mut c = cfg.base_channels;
        let conv_in = conv(cfg.in_channels, c, 3, e.pp("conv_in"))?;
        let mut levels = Vec::with_capacity(cfg.levels.len());
        for (k, l) in cfg.levels.iter().enumerate() {
            let lb = e.pp(format!("conv_blocks.{k}"));
            let blocks = Blocks::load(&lb, &l.res, l.attn, c)?;
            c = l.res.last().map(|r| r.1).unwrap_or(c);
            let downsample = match l.downsample {
                Some(dc) if dc != c => {
                    return Err(Error::Weights(format!(
                        "VQ encoder level {k}: downsample has {dc} channels but the level outputs {c}"
                    )))
                }
                Some(_) => Some(Downsample::load(c, lb.pp("downsample.conv"))?),
                None => None,
            };
            levels.push(Level { blocks, downsample });
        }
        let m = cfg.mid_channels;
        let cb = vb.pp("quantize.embedding").get((cfg.codebook_size, cfg.embed_dim), "weight")?;
        let codebook = l2_normalize_rows(
            &cb.to_dtype(DType::F32)?.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?,
            cfg.embed_dim,
        );
        Ok(Self {
            conv_in,
            levels,
            mid: (
                ResnetBlock::load(e.pp("mid.0"), c, m)?,
                AttnBlock::load(e.pp("mid.1"), m)?,
                ResnetBlock::load(e.pp("mid.2"), m, m)?,
            ),
            norm_out: Norm::load(e.pp("norm_out"), m)?,
            conv_out: conv(m, cfg.z_channels, 3, e.pp("conv_out"))?,
            quant_conv: conv(cfg.z_channels, cfg.embed_dim, 1, vb.pp("quant_conv"))?,
            codebook,
            cfg: cfg.clone(),
            dtype: vb.dtype(),
        })
    }

    pub fn config(&self) -> &VqEncoderConfig {
        &self.cfg
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Pixels `[N, 3, S, S]` in [-1, 1] → latents `z` `[N, embed_dim, S/f, S/f]` (encoder, then
    /// `quant_conv`), in the encoder's dtype; f is [`VqEncoderConfig::downsample`].
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let (_, c, h, w) = pixels.dims4()?;
        let f = self.cfg.downsample();
        if c != self.cfg.in_channels || h == 0 || w == 0 || h % f != 0 || w % f != 0 {
            return Err(Error::InvalidInput(format!(
                "the VQ encoder takes [N, {}, H, W] pixels with H and W positive multiples of {f}, not {:?}",
                self.cfg.in_channels,
                pixels.dims()
            )));
        }
        let mut h = self.conv_in.forward(&pixels.to_dtype(self.dtype)?)?;
        for level in &self.levels {
            h = level.blocks.forward(h)?;
            if let Some(d) = &level.downsample {
                h = d.forward(&h)?;
            }
        }
        h = self.mid.0.forward(&h)?;
        h = self.mid.1.forward(&h)?;
        h = self.mid.2.forward(&h)?;
        let h = self.conv_out.forward(&self.norm_out.forward(&h, true)?)?;
        Ok(self.quant_conv.forward(&h)?)
    }

    /// Latents `[N, embed_dim, H, W]` → codebook indices `[N][H·W]` in raster order, by the
    /// original rule: z and the codebook rows L2-normalised, nearest by squared distance, the
    /// first on ties.
    pub fn quantize(&self, z: &Tensor) -> Result<Vec<Vec<u32>>> {
        let (n, e, h, w) = z.dims4()?;
        if e != self.cfg.embed_dim {
            return Err(Error::InvalidInput(format!(
                "latents have {e} channels; the codebook has {}",
                self.cfg.embed_dim
            )));
        }
        let rows =
            z.to_dtype(DType::F32)?.permute((0, 2, 3, 1))?.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
        let ids = nearest_codes(&l2_normalize_rows(&rows, e), &self.codebook, e);
        Ok(ids.chunks(h * w).map(<[u32]>::to_vec).take(n).collect())
    }

    /// Pixels `[N, 3, S, S]` in [-1, 1] → codebook indices `[N][(S/f)²]`, raster order.
    pub fn encode(&self, pixels: &Tensor) -> Result<Vec<Vec<u32>>> {
        self.quantize(&self.forward(pixels)?)
    }
}

/// `F.normalize(x, dim=-1)` on rows of width `dim`: x / max(‖x‖₂, 1e-12).
pub fn l2_normalize_rows(x: &[f32], dim: usize) -> Vec<f32> {
    let mut out = x.to_vec();
    for row in out.chunks_mut(dim) {
        let norm = row.iter().map(|&v| v * v).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v /= norm);
    }
    out
}

/// For each row of `z` (width `dim`), the index of the nearest row of `codebook` by squared
/// Euclidean distance, the first one on ties. Both are used as given (normalise them first for
/// the VQ rule).
pub fn nearest_codes(z: &[f32], codebook: &[f32], dim: usize) -> Vec<u32> {
    z.par_chunks(dim)
        .map(|q| {
            let mut best = (f32::INFINITY, 0u32);
            for (i, c) in codebook.chunks(dim).enumerate() {
                let d: f32 = q.iter().zip(c).map(|(a, b)| (a - b) * (a - b)).sum();
                if d < best.0 {
                    best = (d, i as u32);
                }
            }
            best.1
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The codebook's normalisation decides the index when its rows have different norms: raw,
    /// z = (0.3, 0.4) is nearest to the short row (0.5, 0); normalised, to (0, 1), which points
    /// its way. (Against a normalised codebook, normalising z changes no index: ‖z − e‖² =
    /// ‖z‖² + 1 − 2 z·e ranks the codes by z·e alone. We normalise it anyway, as the original.)
    #[test]
    fn l2_normalisation_changes_the_nearest_code() {
        let codebook = [0.5f32, 0.0, 0.0, 1.0];
        let z = [0.3f32, 0.4];
        assert_eq!(nearest_codes(&z, &codebook, 2), vec![0]);
        assert_eq!(nearest_codes(&l2_normalize_rows(&z, 2), &l2_normalize_rows(&codebook, 2), 2), vec![1]);
        assert_eq!(nearest_codes(&z, &l2_normalize_rows(&codebook, 2), 2), vec![1]);
    }

    #[test]
    fn ties_go_to_the_first_code_and_zero_rows_stay_zero() {
        let codebook = [1.0f32, 0.0, 1.0, 0.0, 0.0, 1.0];
        assert_eq!(nearest_codes(&[1.0, 0.0], &codebook, 2), vec![0]);
        assert_eq!(nearest_codes(&[1.0, 1.0], &codebook, 2), vec![0]);
        assert_eq!(l2_normalize_rows(&[0.0, 0.0, 3.0, 4.0], 2), vec![0.0, 0.0, 0.6, 0.8]);
    }
}
