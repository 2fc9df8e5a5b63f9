//! DETR with a ResNet-50 backbone (`facebook/detr-resnet-50`, Apache-2.0) as a [`Detector`]
//! over the 80 COCO classes, on candle.
//!
//! Follows transformers `models/detr/modeling_detr.py` (`DetrForObjectDetection`: frozen batch
//! norm, `DetrSinePositionEmbedding(d_model / 2, normalize=True)`, post-norm encoder/decoder
//! layers with positions added to queries and keys but never to values, zero object queries with
//! `query_position_embeddings`, final decoder `layernorm`, class and 3-layer box heads),
//! `image_processing_pil_detr.py` (Pillow bilinear resize to shortest edge 800 / longest 1333,
//! rescale 1/255, ImageNet mean/std; `post_process_object_detection`: softmax, the no-object
//! column dropped, best class per query, cxcywh → xyxy in original-image pixels) and timm's
//! `resnet50` (stem 7×7/2 conv + 3×3/2 max pool; Bottleneck blocks with the stride on the 3×3
//! conv and a 1×1 conv + BN `downsample` on each stage's first block).
//!
//! Weights: the hub checkpoint as downloaded (`config.json` + `model.safetensors` or
//! `pytorch_model.bin`), in its stored names (`model.backbone.conv_encoder.model.layer1.0.conv1`,
//! `self_attn.out_proj`, `fc1`, ...). Widths, layer counts and blocks per stage are read from the
//! config and the tensor shapes, so tiny test checkpoints load too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::{Conv2d, Conv2dConfig, LayerNorm, Linear, VarBuilder};
use image::RgbImage;
use serde::Deserialize;

use crate::rules::{Detection, Detector};

/// The hub id of the detector used by default.
pub const DEFAULT_DETR: &str = "facebook/detr-resnet-50";
/// `d_model` of [`DEFAULT_DETR`].
const REFERENCE_D_MODEL: usize = 256;

/// The 80 COCO category ids, in COCO order: GenEval's class index `i` (its `object_names.txt`
/// line `i`) is COCO category `COCO80_IDS[i]`, DETR's label id.
pub const COCO80_IDS: [usize; 80] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33, 34, 35,
    36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65,
    67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
];

/// `config.json` of `DetrForObjectDetection` (the fields that shape inference).
#[derive(Debug, Clone, Deserialize)]
pub struct DetrConfig {
    pub d_model: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub encoder_attention_heads: usize,
    pub decoder_attention_heads: usize,
    pub encoder_ffn_dim: usize,
    pub decoder_ffn_dim: usize,
    pub num_queries: usize,
    #[serde(default = "relu")]
    pub activation_function: String,
    #[serde(default = "sine")]
    pub position_embedding_type: String,
    #[serde(default)]
    pub dilation: bool,
    #[serde(default = "yes")]
    pub use_timm_backbone: bool,
    #[serde(default)]
    pub backbone: Option<String>,
    /// Label id (a string key, as JSON has it) → name; "N/A" where COCO has no category.
    pub id2label: BTreeMap<String, String>,
}

fn relu() -> String {
    "relu".into()
}
fn sine() -> String {
    "sine".into()
}
fn yes() -> bool {
    true
}

impl DetrConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let cfg: Self = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a DETR config.json (DetrForObjectDetection)", path.display()))?;
        let what = path.display();
        if !cfg.use_timm_backbone {
            bail!("{what}: only the timm ResNet backbone layout is supported (use_timm_backbone = true)");
        }
        if let Some(b) = &cfg.backbone {
            if !b.starts_with("resnet") {
                bail!("{what}: backbone {b:?} is not supported (a timm ResNet with Bottleneck blocks is)");
            }
        }
        if cfg.dilation {
            bail!("{what}: dilation (DC5) is not supported");
        }
        if cfg.position_embedding_type != "sine" {
            bail!("{what}: position_embedding_type {:?} is not supported (sine is)", cfg.position_embedding_type);
        }
        if cfg.activation_function != "relu" {
            bail!("{what}: activation_function {:?} is not supported (relu is)", cfg.activation_function);
        }
        if !cfg.d_model.is_multiple_of(cfg.encoder_attention_heads)
            || !cfg.d_model.is_multiple_of(cfg.decoder_attention_heads)
        {
            bail!("{what}: d_model is not a multiple of the attention heads");
        }
        Ok(cfg)
    }

    /// Number of label ids (the classifier has one more output: no-object).
    pub fn num_labels(&self) -> usize {
        self.id2label.keys().filter_map(|k| k.parse::<usize>().ok()).max().map_or(0, |m| m + 1)
    }

    /// DETR label id → GenEval class index (COCO order), checked against `id2label`.
    fn class_map(&self) -> Result<Vec<Option<usize>>> {
        let n = self.num_labels();
        let mut map = vec![None; n];
        for (ci, &id) in COCO80_IDS.iter().enumerate() {
            match self.id2label.get(&id.to_string()) {
                Some(name) if name != "N/A" => map[id] = Some(ci),
                _ => bail!("config.json id2label has no COCO category {id}; is this a COCO detector?"),
            }
        }
        Ok(map)
    }
}

/// `config.json` and the weights of a model given as a local directory or a hub id
/// (`id@revision`), through the model crate's resolution (HF cache, offline mode, token).
pub fn resolve_config_and_weights(spec: &str, what: &str) -> Result<(PathBuf, Vec<PathBuf>)> {
    let files = janus::ModelFiles::resolve_without_tokenizer(spec).map_err(|e| anyhow!("{what}: {e}"))?;
    Ok((files.config, files.weights))
}

/// A `VarBuilder` over safetensors (memory-mapped) or PyTorch pickle files, in stored names.
pub fn var_builder(weights: &[PathBuf], dev: &Device) -> Result<VarBuilder<'static>> {
    let st = weights.iter().all(|p| p.extension().is_some_and(|e| e == "safetensors"));
    if st {
        // SAFETY: read-only mapping; like every mmap user we rely on nobody truncating the file.
        unsafe { VarBuilder::from_mmaped_safetensors(weights, DType::F32, dev) }
            .with_context(|| format!("reading {}", weights[0].display()))
    } else if let [one] = weights {
        VarBuilder::from_pth(one, DType::F32, dev).with_context(|| format!("reading {}", one.display()))
    } else {
        bail!("sharded PyTorch checkpoints are not supported here; use model.safetensors")
    }
}

/// `DetrFrozenBatchNorm2d` folded into a per-channel scale and shift (eps 1e-5).
struct FrozenBn {
    scale: Tensor,
    shift: Tensor,
}

impl FrozenBn {
    fn load(vb: VarBuilder, c: usize) -> Result<Self> {
        let w = vb.get(c, "weight")?;
        let b = vb.get(c, "bias")?;
        let rm = vb.get(c, "running_mean")?;
        let rv = vb.get(c, "running_var")?;
        let scale = w.mul(&(rv + 1e-5)?.sqrt()?.recip()?)?;
        let shift = b.sub(&rm.mul(&scale)?)?;
        Ok(Self { scale: scale.reshape((1, c, 1, 1))?, shift: shift.reshape((1, c, 1, 1))? })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.broadcast_mul(&self.scale)?.broadcast_add(&self.shift)?)
    }
}

/// A bias-free convolution whose shape comes from the checkpoint.
fn conv(vb: &VarBuilder, name: &str, stride: usize, padding: usize) -> Result<(Conv2d, usize)> {
    let w = vb.get_unchecked(&format!("{name}.weight")).with_context(|| format!("{}.{name}.weight", vb.prefix()))?;
    let out = w.dim(0)?;
    Ok((Conv2d::new(w, None, Conv2dConfig { stride, padding, ..Default::default() }), out))
}

/// timm `Bottleneck`.
struct Bottleneck {
    conv1: Conv2d,
    bn1: FrozenBn,
    conv2: Conv2d,
    bn2: FrozenBn,
    conv3: Conv2d,
    bn3: FrozenBn,
    downsample: Option<(Conv2d, FrozenBn)>,
}

impl Bottleneck {
    fn load(vb: VarBuilder, stride: usize) -> Result<Self> {
        let (conv1, c1) = conv(&vb, "conv1", 1, 0)?;
        let (conv2, c2) = conv(&vb, "conv2", stride, 1)?;
        let (conv3, c3) = conv(&vb, "conv3", 1, 0)?;
        let downsample = if vb.contains_tensor("downsample.0.weight") {
            let (c, n) = conv(&vb, "downsample.0", stride, 0)?;
            Some((c, FrozenBn::load(vb.pp("downsample.1"), n)?))
        } else {
            None
        };
        Ok(Self {
            conv1,
            bn1: FrozenBn::load(vb.pp("bn1"), c1)?,
            conv2,
            bn2: FrozenBn::load(vb.pp("bn2"), c2)?,
            conv3,
            bn3: FrozenBn::load(vb.pp("bn3"), c3)?,
            downsample,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.bn1.forward(&x.apply(&self.conv1)?)?.relu()?;
        let h = self.bn2.forward(&h.apply(&self.conv2)?)?.relu()?;
        let h = self.bn3.forward(&h.apply(&self.conv3)?)?;
        let shortcut = match &self.downsample {
            Some((c, bn)) => bn.forward(&x.apply(c)?)?,
            None => x.clone(),
        };
        Ok((h + shortcut)?.relu()?)
    }
}

/// timm ResNet (Bottleneck) up to `layer4`; the blocks per stage are counted in the checkpoint.
struct ResNet {
    conv1: Conv2d,
    bn1: FrozenBn,
    stages: Vec<Vec<Bottleneck>>,
    out_channels: usize,
}

impl ResNet {
    fn load(vb: VarBuilder) -> Result<Self> {
        let (conv1, stem) = conv(&vb, "conv1", 2, 3)?;
        let bn1 = FrozenBn::load(vb.pp("bn1"), stem)?;
        let mut stages = Vec::new();
        let mut out_channels = stem;
        for s in 1..=4 {
            let mut blocks = Vec::new();
            while vb.contains_tensor(&format!("layer{s}.{}.conv1.weight", blocks.len())) {
                let stride = if s > 1 && blocks.is_empty() { 2 } else { 1 };
                blocks.push(Bottleneck::load(vb.pp(format!("layer{s}.{}", blocks.len())), stride)?);
            }
            if blocks.is_empty() {
                bail!("{}.layer{s}.0.conv1.weight is missing: not a timm ResNet backbone", vb.prefix());
            }
            out_channels = vb.get_unchecked(&format!("layer{s}.{}.conv3.weight", blocks.len() - 1))?.dim(0)?;
            stages.push(blocks);
        }
        Ok(Self { conv1, bn1, stages, out_channels })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.bn1.forward(&x.apply(&self.conv1)?)?.relu()?;
        // 3×3/2 max pool with padding 1; zero padding is exact after the ReLU.
        let x = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?.max_pool2d_with_stride(3, 2)?;
        let mut x = x;
        for stage in &self.stages {
            for b in stage {
                x = b.forward(&x)?;
            }
        }
        Ok(x)
    }
}

/// `DetrSelfAttention` / `DetrCrossAttention`: positions go into the query and key inputs only.
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
}

impl Attention {
    fn load(vb: VarBuilder, d: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            q: candle_nn::linear(d, d, vb.pp("q_proj"))?,
            k: candle_nn::linear(d, d, vb.pp("k_proj"))?,
            v: candle_nn::linear(d, d, vb.pp("v_proj"))?,
            out: candle_nn::linear(d, d, vb.pp("out_proj"))?,
            heads,
        })
    }

    /// `query_in` / `key_in` already hold the positions; `value_in` does not.
    fn forward(&self, query_in: &Tensor, key_in: &Tensor, value_in: &Tensor) -> Result<Tensor> {
        let (b, lq, d) = query_in.dims3()?;
        let lk = key_in.dim(1)?;
        let hd = d / self.heads;
        let split = |t: Tensor, l: usize| -> Result<Tensor> {
            Ok(t.reshape((b, l, self.heads, hd))?.transpose(1, 2)?.contiguous()?)
        };
        let q = split(query_in.apply(&self.q)?, lq)?;
        let k = split(key_in.apply(&self.k)?, lk)?;
        let v = split(value_in.apply(&self.v)?, lk)?;
        let w = (q.matmul(&k.t()?)? * (hd as f64).powf(-0.5))?;
        let w = candle_nn::ops::softmax_last_dim(&w)?;
        let o = w.matmul(&v)?.transpose(1, 2)?.reshape((b, lq, d))?;
        Ok(o.apply(&self.out)?)
    }
}

struct Ffn {
    fc1: Linear,
    fc2: Linear,
}

impl Ffn {
    fn load(vb: &VarBuilder, d: usize, ffn: usize) -> Result<Self> {
        Ok(Self { fc1: candle_nn::linear(d, ffn, vb.pp("fc1"))?, fc2: candle_nn::linear(ffn, d, vb.pp("fc2"))? })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.apply(&self.fc1)?.relu()?.apply(&self.fc2)?)
    }
}

fn layer_norm(vb: VarBuilder, d: usize) -> Result<LayerNorm> {
    Ok(candle_nn::layer_norm(d, 1e-5, vb)?)
}

/// `DetrEncoderLayer` (post-norm).
struct EncoderLayer {
    self_attn: Attention,
    self_attn_layer_norm: LayerNorm,
    ffn: Ffn,
    final_layer_norm: LayerNorm,
}

impl EncoderLayer {
    fn load(vb: VarBuilder, cfg: &DetrConfig) -> Result<Self> {
        let d = cfg.d_model;
        Ok(Self {
            self_attn: Attention::load(vb.pp("self_attn"), d, cfg.encoder_attention_heads)?,
            self_attn_layer_norm: layer_norm(vb.pp("self_attn_layer_norm"), d)?,
            ffn: Ffn::load(&vb, d, cfg.encoder_ffn_dim)?,
            final_layer_norm: layer_norm(vb.pp("final_layer_norm"), d)?,
        })
    }

    fn forward(&self, x: &Tensor, pos: &Tensor) -> Result<Tensor> {
        let qk = (x + pos)?;
        let x = (x + self.self_attn.forward(&qk, &qk, x)?)?.apply(&self.self_attn_layer_norm)?;
        Ok((&x + self.ffn.forward(&x)?)?.apply(&self.final_layer_norm)?)
    }
}

/// `DetrDecoderLayer` (post-norm).
struct DecoderLayer {
    self_attn: Attention,
    self_attn_layer_norm: LayerNorm,
    encoder_attn: Attention,
    encoder_attn_layer_norm: LayerNorm,
    ffn: Ffn,
    final_layer_norm: LayerNorm,
}

impl DecoderLayer {
    fn load(vb: VarBuilder, cfg: &DetrConfig) -> Result<Self> {
        let d = cfg.d_model;
        Ok(Self {
            self_attn: Attention::load(vb.pp("self_attn"), d, cfg.decoder_attention_heads)?,
            self_attn_layer_norm: layer_norm(vb.pp("self_attn_layer_norm"), d)?,
            encoder_attn: Attention::load(vb.pp("encoder_attn"), d, cfg.decoder_attention_heads)?,
            encoder_attn_layer_norm: layer_norm(vb.pp("encoder_attn_layer_norm"), d)?,
            ffn: Ffn::load(&vb, d, cfg.decoder_ffn_dim)?,
            final_layer_norm: layer_norm(vb.pp("final_layer_norm"), d)?,
        })
    }

    /// `x`: the queries' hidden states; `query_pos`: object-query positions; `memory` and
    /// `memory_pos`: the encoder output and its spatial positions.
    fn forward(&self, x: &Tensor, query_pos: &Tensor, memory: &Tensor, memory_pos: &Tensor) -> Result<Tensor> {
        let qk = x.broadcast_add(query_pos)?;
        let x = (x + self.self_attn.forward(&qk, &qk, x)?)?.apply(&self.self_attn_layer_norm)?;
        let q = x.broadcast_add(query_pos)?;
        let k = (memory + memory_pos)?;
        let x = (&x + self.encoder_attn.forward(&q, &k, memory)?)?.apply(&self.encoder_attn_layer_norm)?;
        Ok((&x + self.ffn.forward(&x)?)?.apply(&self.final_layer_norm)?)
    }
}

/// What one forward pass returns (batch of one).
#[derive(Debug, Clone)]
pub struct DetrOutput {
    /// `[num_queries, num_labels + 1]` class logits (the last column is no-object).
    pub logits: Tensor,
    /// `[num_queries, 4]` boxes as (cx, cy, w, h), relative to the (unpadded) input.
    pub pred_boxes: Tensor,
}

/// `DetrForObjectDetection`.
pub struct Detr {
    backbone: ResNet,
    input_projection: Conv2d,
    query_position_embeddings: Tensor,
    encoder: Vec<EncoderLayer>,
    decoder: Vec<DecoderLayer>,
    decoder_layernorm: LayerNorm,
    class_labels_classifier: Linear,
    bbox_predictor: Vec<Linear>,
    cfg: DetrConfig,
    class_map: Vec<Option<usize>>,
    device: Device,
    name: String,
}

impl Detr {
    pub fn load(vb: VarBuilder, cfg: &DetrConfig) -> Result<Self> {
        let d = cfg.d_model;
        let m = vb.pp("model");
        let backbone = ResNet::load(m.pp("backbone.conv_encoder.model"))?;
        let input_projection =
            candle_nn::conv2d(backbone.out_channels, d, 1, Default::default(), m.pp("input_projection"))?;
        let query_position_embeddings = m.get((cfg.num_queries, d), "query_position_embeddings.weight")?;
        let encoder = (0..cfg.encoder_layers)
            .map(|i| EncoderLayer::load(m.pp(format!("encoder.layers.{i}")), cfg))
            .collect::<Result<_>>()?;
        let decoder = (0..cfg.decoder_layers)
            .map(|i| DecoderLayer::load(m.pp(format!("decoder.layers.{i}")), cfg))
            .collect::<Result<_>>()?;
        let decoder_layernorm = layer_norm(m.pp("decoder.layernorm"), d)?;
        let class_labels_classifier = candle_nn::linear(d, cfg.num_labels() + 1, vb.pp("class_labels_classifier"))?;
        let bbox_predictor = (0..3)
            .map(|i| {
                let out = if i == 2 { 4 } else { d };
                Ok(candle_nn::linear(d, out, vb.pp(format!("bbox_predictor.layers.{i}")))?)
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            backbone,
            input_projection,
            query_position_embeddings,
            encoder,
            decoder,
            decoder_layernorm,
            class_labels_classifier,
            bbox_predictor,
            class_map: cfg.class_map()?,
            cfg: cfg.clone(),
            device: vb.device().clone(),
            name: "DETR ResNet-50".into(),
        })
    }

    /// Loads a hub id or local directory (default [`DEFAULT_DETR`]) in f32 on `dev`.
    pub fn open(spec: &str, dev: &Device) -> Result<Self> {
        let (config, weights) = resolve_config_and_weights(spec, "--detector")?;
        let cfg = DetrConfig::from_file(&config)?;
        let vb = var_builder(&weights, dev)?;
        let mut d = Self::load(vb, &cfg).with_context(|| format!("--detector {spec}: loading the DETR weights"))?;
        d.name = format!("DETR ResNet-50 ({spec})");
        Ok(d)
    }

    pub fn config(&self) -> &DetrConfig {
        &self.cfg
    }

    /// A random-weight test checkpoint: narrower than DETR ResNet-50 (`d_model` 256).
    pub fn is_test_model(&self) -> bool {
        self.cfg.d_model < REFERENCE_D_MODEL
    }

    /// The model on `pixel_values` `[1, 3, H, W]` (normalised, see [`preprocess`]).
    pub fn forward(&self, pixel_values: &Tensor) -> Result<DetrOutput> {
        let (b, _c, _h, _w) = pixel_values.dims4()?;
        let features = self.backbone.forward(pixel_values)?;
        let (_, _, fh, fw) = features.dims4()?;
        let projected = features.apply(&self.input_projection)?;
        let x = projected.flatten_from(2)?.transpose(1, 2)?.contiguous()?; // [b, hw, d]
        let pos = sine_position_embedding(fh, fw, self.cfg.d_model / 2, &self.device)?
            .unsqueeze(0)?
            .broadcast_as((b, fh * fw, self.cfg.d_model))?
            .contiguous()?;
        let mut memory = x;
        for l in &self.encoder {
            memory = l.forward(&memory, &pos)?;
        }
        let query_pos = self.query_position_embeddings.unsqueeze(0)?;
        let mut h = Tensor::zeros((b, self.cfg.num_queries, self.cfg.d_model), DType::F32, &self.device)?;
        for l in &self.decoder {
            h = l.forward(&h, &query_pos, &memory, &pos)?;
        }
        let h = h.apply(&self.decoder_layernorm)?;
        let logits = h.apply(&self.class_labels_classifier)?;
        let mut bx = h;
        for (i, l) in self.bbox_predictor.iter().enumerate() {
            bx = bx.apply(l)?;
            if i < 2 {
                bx = bx.relu()?;
            }
        }
        let pred_boxes = candle_nn::ops::sigmoid(&bx)?;
        Ok(DetrOutput { logits: logits.squeeze(0)?, pred_boxes: pred_boxes.squeeze(0)? })
    }

    /// Every query's best COCO class (softmax without the no-object column), with its box in
    /// `img`'s pixels. Queries whose best label is not one of the 80 COCO categories are dropped.
    pub fn try_detect(&self, img: &RgbImage) -> Result<Vec<Detection>> {
        let pixels = preprocess(img, &self.device)?;
        let out = self.forward(&pixels)?;
        post_process(&out, img.width(), img.height(), &self.class_map)
    }
}

/// `post_process_object_detection` (threshold 0) with DETR label ids mapped to GenEval classes.
pub fn post_process(out: &DetrOutput, width: u32, height: u32, class_map: &[Option<usize>]) -> Result<Vec<Detection>> {
    let probs = candle_nn::ops::softmax(&out.logits, D::Minus1)?;
    let n = probs.dim(1)?;
    let probs: Vec<Vec<f32>> = probs.narrow(1, 0, n - 1)?.to_vec2()?;
    let boxes: Vec<Vec<f32>> = out.pred_boxes.to_vec2()?;
    let (w, h) = (width as f32, height as f32);
    let mut dets = Vec::new();
    for (p, b) in probs.iter().zip(&boxes) {
        // torch's max returns the first maximal index.
        let (label, score) =
            p.iter().enumerate().fold((0, f32::NEG_INFINITY), |m, (i, &s)| if s > m.1 { (i, s) } else { m });
        let Some(class) = class_map.get(label).copied().flatten() else { continue };
        let (cx, cy, bw, bh) = (b[0], b[1], b[2], b[3]);
        let bbox = [(cx - 0.5 * bw) * w, (cy - 0.5 * bh) * h, (cx + 0.5 * bw) * w, (cy + 0.5 * bh) * h];
        dets.push(Detection { class, score, bbox, mask: None });
    }
    Ok(dets)
}

impl Detector for Detr {
    fn detect(&self, img: &RgbImage) -> Vec<Detection> {
        // The scorer calls `try_detect` itself so errors reach the user; this path is for other
        // callers of the trait, which has no error channel.
        self.try_detect(img).unwrap_or_else(|e| {
            eprintln!("detector error: {e:#}");
            Vec::new()
        })
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}

/// `DetrSinePositionEmbedding(num_feats, temperature 10000, normalize, scale 2π)` for an
/// unpadded `h × w` map, flattened to `[h * w, 2 * num_feats]` (y features, then x features).
pub fn sine_position_embedding(h: usize, w: usize, num_feats: usize, dev: &Device) -> Result<Tensor> {
    let scale = 2.0 * std::f32::consts::PI;
    let eps = 1e-6f32;
    let dim_t: Vec<f32> = (0..num_feats).map(|i| 10000f32.powf(2.0 * (i / 2) as f32 / num_feats as f32)).collect();
    let embed = |v: f32, last: f32| -> Vec<f32> {
        let e = v / (last + eps) * scale;
        (0..num_feats)
            .map(|i| {
                let a = e / dim_t[i];
                if i % 2 == 0 {
                    a.sin()
                } else {
                    a.cos()
                }
            })
            .collect()
    };
    let mut data = Vec::with_capacity(h * w * 2 * num_feats);
    for y in 0..h {
        let py = embed((y + 1) as f32, h as f32);
        for x in 0..w {
            data.extend_from_slice(&py);
            data.extend(embed((x + 1) as f32, w as f32));
        }
    }
    Ok(Tensor::from_vec(data, (h * w, 2 * num_feats), dev)?)
}

/// `get_size_with_aspect_ratio((h, w), 800, 1333)` → (height, width).
pub fn resized_size(height: usize, width: usize, shortest: usize, longest: usize) -> (usize, usize) {
    let mut size = shortest;
    let mut raw_size = None;
    let (min_o, max_o) = (height.min(width) as f64, height.max(width) as f64);
    if max_o / min_o * size as f64 > longest as f64 {
        let r = longest as f64 * min_o / max_o;
        raw_size = Some(r);
        size = r.round_ties_even() as usize;
    }
    if (height <= width && height == size) || (width <= height && width == size) {
        (height, width)
    } else if width < height {
        let oh = match raw_size {
            Some(r) => (r * height as f64 / width as f64) as usize,
            None => (size as f64 * height as f64 / width as f64) as usize,
        };
        (oh, size)
    } else {
        let ow = match raw_size {
            Some(r) => (r * width as f64 / height as f64) as usize,
            None => (size as f64 * width as f64 / height as f64) as usize,
        };
        (size, ow)
    }
}

const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// `DetrImageProcessor` for one image: Pillow bilinear resize (shortest edge 800, longest 1333),
/// `/ 255`, ImageNet normalisation → `[1, 3, H, W]` f32.
pub fn preprocess(img: &RgbImage, dev: &Device) -> Result<Tensor> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        bail!("the image is empty ({w}x{h})");
    }
    let (oh, ow) = resized_size(h, w, 800, 1333);
    let resized = if (oh, ow) == (h, w) { img.clone() } else { resize_bilinear(img, ow, oh) };
    let raw = resized.as_raw();
    let mut data = vec![0f32; 3 * oh * ow];
    for c in 0..3 {
        for i in 0..oh * ow {
            let v = raw[i * 3 + c] as f32 * (1.0 / 255.0);
            data[c * oh * ow + i] = (v - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
        }
    }
    Ok(Tensor::from_vec(data, (1, 3, oh, ow), dev)?)
}

/// Pillow's `Image.resize(size, BILINEAR)` on an RGB image, to the bit.
pub fn resize_bilinear(img: &RgbImage, out_w: usize, out_h: usize) -> RgbImage {
    janus::input::preprocess::resize_pillow(img, out_w, out_h, janus::input::preprocess::Filter::Bilinear)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coco_ids_are_the_80_categories() {
        let mut v = COCO80_IDS.to_vec();
        v.dedup();
        assert_eq!(v.len(), 80);
        assert!(v.windows(2).all(|w| w[0] < w[1]));
        for gap in [12, 26, 29, 30, 45, 66, 68, 69, 71, 83] {
            assert!(!v.contains(&gap));
        }
    }

    #[test]
    fn sizes_follow_the_processor() {
        assert_eq!(resized_size(384, 384, 800, 1333), (800, 800));
        assert_eq!(resized_size(240, 320, 800, 1333), (800, 1066));
        assert_eq!(resized_size(100, 400, 800, 1333), (333, 1333));
        assert_eq!(resized_size(800, 600, 800, 1333), (1066, 800));
    }
}
