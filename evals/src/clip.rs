//! CLIP ViT-L/14 (`openai/clip-vit-large-patch14`, MIT) as GenEval's zero-shot colour
//! classifier ([`ColorClassifier`]), on candle.
//!
//! The model is `candle_transformers::models::clip` (transformers' `CLIPModel`: quick-GELU,
//! pre-layernorm vision tower with the CLS token pooled through `post_layernorm`, text pooled at
//! the end-of-text token found as the argmax id, bias-free projections), configured from the
//! checkpoint's `config.json`. Around it, as GenEval's evaluator and clip_benchmark do
//! (`docs/geneval-rules.md` §1.7):
//!
//! * open_clip's ViT-L-14 eval transform: shorter side to 224 with Pillow's bicubic filter
//!   (the longer side truncated, as torchvision computes it), centre crop 224 (offsets rounded
//!   half-to-even), CLIP mean/std;
//! * per object class, a 10-colour classifier: 3 prompts per colour, each text embedding
//!   L2-normalised, averaged, re-normalised (cached per class);
//! * logits 100 × cosine(image, colour); the colour is the argmax.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor, D};
use candle_transformers::models::clip::{text_model, vision_model, ClipConfig, ClipModel};
use image::RgbImage;
use serde::Deserialize;
use tokenizers::Tokenizer;

use crate::rules::{ColorClassifier, Colour};

/// The hub id of the colour classifier used by default.
pub const DEFAULT_CLIP: &str = "openai/clip-vit-large-patch14";
/// The vision width of [`DEFAULT_CLIP`] (ViT-L).
const REFERENCE_VISION_WIDTH: usize = 1024;

#[allow(clippy::excessive_precision)] // as open_clip writes them
pub const CLIP_MEAN: [f32; 3] = [0.48145466, 0.4578275, 0.40821073];
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.26862954, 0.26130258, 0.27577711];

/// `config.json` of `CLIPModel` (defaults as transformers' `CLIPConfig`).
#[derive(Debug, Clone, Deserialize)]
pub struct ClipJson {
    #[serde(default = "d512")]
    pub projection_dim: usize,
    #[serde(default = "scale")]
    pub logit_scale_init_value: f32,
    pub text_config: TextJson,
    pub vision_config: VisionJson,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TextJson {
    #[serde(default = "vocab")]
    pub vocab_size: usize,
    #[serde(default = "d512")]
    pub hidden_size: usize,
    #[serde(default = "d2048")]
    pub intermediate_size: usize,
    #[serde(default = "n12")]
    pub num_hidden_layers: usize,
    #[serde(default = "n8")]
    pub num_attention_heads: usize,
    #[serde(default = "n77")]
    pub max_position_embeddings: usize,
    #[serde(default = "quick_gelu")]
    pub hidden_act: String,
    #[serde(default = "eps")]
    pub layer_norm_eps: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct VisionJson {
    #[serde(default = "d768")]
    pub hidden_size: usize,
    #[serde(default = "d3072")]
    pub intermediate_size: usize,
    #[serde(default = "n12")]
    pub num_hidden_layers: usize,
    #[serde(default = "n12")]
    pub num_attention_heads: usize,
    #[serde(default = "n3")]
    pub num_channels: usize,
    #[serde(default = "n224")]
    pub image_size: usize,
    #[serde(default = "n32")]
    pub patch_size: usize,
    #[serde(default = "quick_gelu")]
    pub hidden_act: String,
    #[serde(default = "eps")]
    pub layer_norm_eps: f64,
}

fn d512() -> usize {
    512
}
fn d768() -> usize {
    768
}
fn d2048() -> usize {
    2048
}
fn d3072() -> usize {
    3072
}
fn vocab() -> usize {
    49408
}
fn n3() -> usize {
    3
}
fn n8() -> usize {
    8
}
fn n12() -> usize {
    12
}
fn n32() -> usize {
    32
}
fn n77() -> usize {
    77
}
fn n224() -> usize {
    224
}
fn scale() -> f32 {
    2.6592
}
fn quick_gelu() -> String {
    "quick_gelu".into()
}
fn eps() -> f64 {
    1e-5
}

impl ClipJson {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let c: Self = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a CLIP config.json (CLIPModel)", path.display()))?;
        for (what, act, eps) in [
            ("text_config", &c.text_config.hidden_act, c.text_config.layer_norm_eps),
            ("vision_config", &c.vision_config.hidden_act, c.vision_config.layer_norm_eps),
        ] {
            if act != "quick_gelu" {
                bail!("{}: {what}.hidden_act {act:?} is not supported (quick_gelu is)", path.display());
            }
            if (eps - 1e-5).abs() > 1e-12 {
                bail!("{}: {what}.layer_norm_eps {eps} is not supported (1e-5 is)", path.display());
            }
        }
        Ok(c)
    }

    /// candle's `ClipConfig`.
    pub fn candle(&self) -> ClipConfig {
        let t = &self.text_config;
        let v = &self.vision_config;
        ClipConfig {
            text_config: text_model::ClipTextConfig {
                vocab_size: t.vocab_size,
                embed_dim: t.hidden_size,
                activation: text_model::Activation::QuickGelu,
                intermediate_size: t.intermediate_size,
                max_position_embeddings: t.max_position_embeddings,
                pad_with: None,
                num_hidden_layers: t.num_hidden_layers,
                num_attention_heads: t.num_attention_heads,
                projection_dim: self.projection_dim,
            },
            vision_config: vision_model::ClipVisionConfig {
                embed_dim: v.hidden_size,
                activation: text_model::Activation::QuickGelu,
                intermediate_size: v.intermediate_size,
                num_hidden_layers: v.num_hidden_layers,
                num_attention_heads: v.num_attention_heads,
                projection_dim: self.projection_dim,
                num_channels: v.num_channels,
                image_size: v.image_size,
                patch_size: v.patch_size,
            },
            logit_scale_init_value: self.logit_scale_init_value,
            image_size: v.image_size,
        }
    }
}

/// CLIP + tokenizer + the per-class zero-shot colour classifiers.
pub struct Clip {
    model: ClipModel,
    tokenizer: Tokenizer,
    image_size: usize,
    max_len: usize,
    /// The vision tower's width (`vision_config.hidden_size`).
    vision_width: usize,
    device: Device,
    name: String,
    /// Per object class: `[10, projection_dim]` normalised colour embeddings.
    classifiers: Mutex<HashMap<String, Tensor>>,
    /// The first error met behind the [`ColorClassifier`] trait (which has no error channel).
    error: Mutex<Option<String>>,
}

impl Clip {
    pub fn load(vb: candle_nn::VarBuilder, cfg: &ClipJson, tokenizer: Tokenizer) -> Result<Self> {
        let model = ClipModel::new(vb.clone(), &cfg.candle())?;
        // Text pooling takes the argmax id: the end-of-text token must be the largest id.
        let eot = tokenizer
            .token_to_id("<|endoftext|>")
            .ok_or_else(|| anyhow!("the tokenizer has no <|endoftext|> token; is this CLIP's tokenizer.json?"))?;
        if eot as usize + 1 != tokenizer.get_vocab_size(true) {
            bail!("the tokenizer's <|endoftext|> (id {eot}) is not its last id, which CLIP's pooling needs");
        }
        Ok(Self {
            model,
            tokenizer,
            image_size: cfg.vision_config.image_size,
            max_len: cfg.text_config.max_position_embeddings,
            vision_width: cfg.vision_config.hidden_size,
            device: vb.device().clone(),
            name: "CLIP ViT-L/14".into(),
            classifiers: Mutex::new(HashMap::new()),
            error: Mutex::new(None),
        })
    }

    /// Loads a hub id or local directory (default [`DEFAULT_CLIP`]) in f32 on `dev`.
    pub fn open(spec: &str, dev: &Device) -> Result<Self> {
        let files = janus::ModelFiles::resolve(spec).map_err(|e| anyhow!("--clip: {e}"))?;
        let cfg = ClipJson::from_file(&files.config)?;
        let tok_file = files.tokenizer.as_ref().ok_or_else(|| anyhow!("--clip {spec}: no tokenizer.json"))?;
        let tokenizer =
            Tokenizer::from_file(tok_file).map_err(|e| anyhow!("--clip {spec}: {}: {e}", tok_file.display()))?;
        let vb = crate::detector::var_builder(&files.weights, dev)?;
        let mut c =
            Self::load(vb, &cfg, tokenizer).with_context(|| format!("--clip {spec}: loading the CLIP weights"))?;
        c.name = format!("CLIP ViT-L/14 ({spec})");
        Ok(c)
    }

    /// A random-weight test checkpoint: a vision tower narrower than ViT-L/14's (width 1024).
    pub fn is_test_model(&self) -> bool {
        self.vision_width < REFERENCE_VISION_WIDTH
    }

    /// Token ids of `text` (with start and end tokens), truncated to the context length with
    /// the end token kept last, as open_clip's tokenizer does.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.tokenizer.encode(text, true).map_err(|e| anyhow!("tokenizing {text:?}: {e}"))?;
        let mut ids = enc.get_ids().to_vec();
        if ids.len() > self.max_len {
            let eot = *ids.last().expect("non-empty");
            ids.truncate(self.max_len);
            ids[self.max_len - 1] = eot;
        }
        Ok(ids)
    }

    /// Projected text embeddings `[n, projection_dim]` (not normalised); rows padded with 0.
    pub fn text_features(&self, texts: &[String]) -> Result<Tensor> {
        let ids = texts.iter().map(|t| self.tokenize(t)).collect::<Result<Vec<_>>>()?;
        let len = ids.iter().map(Vec::len).max().unwrap_or(1);
        let flat: Vec<u32> =
            ids.iter().flat_map(|r| r.iter().copied().chain(std::iter::repeat_n(0, len - r.len()))).collect();
        let input = Tensor::from_vec(flat, (ids.len(), len), &self.device)?;
        Ok(self.model.get_text_features(&input)?)
    }

    /// Projected image embeddings `[n, projection_dim]` of preprocessed `[n, 3, S, S]` pixels.
    pub fn image_features(&self, pixels: &Tensor) -> Result<Tensor> {
        Ok(self.model.get_image_features(pixels)?)
    }

    /// The `[10, projection_dim]` zero-shot colour classifier for `class_name` (cached).
    pub fn colour_classifier(&self, class_name: &str) -> Result<Tensor> {
        if let Some(t) = self.classifiers.lock().expect("lock").get(class_name) {
            return Ok(t.clone());
        }
        let prompts: Vec<String> = Colour::ALL.iter().flat_map(|c| c.clip_prompts(class_name)).collect();
        let text = l2_normalize(&self.text_features(&prompts)?)?;
        let (_, dim) = text.dims2()?;
        let w = l2_normalize(&text.reshape((Colour::ALL.len(), 3, dim))?.mean(1)?)?;
        self.classifiers.lock().expect("lock").insert(class_name.to_string(), w.clone());
        Ok(w)
    }

    /// `[n, 10]` logits (100 × cosine) of each crop against the colours of `class_name`.
    pub fn colour_logits(&self, crops: &[RgbImage], class_name: &str) -> Result<Tensor> {
        let w = self.colour_classifier(class_name)?;
        let pixels = crops.iter().map(|c| preprocess(c, self.image_size, &self.device)).collect::<Result<Vec<_>>>()?;
        let img = l2_normalize(&self.image_features(&Tensor::stack(&pixels, 0)?)?)?;
        Ok((img.matmul(&w.t()?)? * 100.0)?)
    }

    pub fn try_classify(&self, crops: &[RgbImage], class_name: &str) -> Result<Vec<Colour>> {
        if crops.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(crops.len());
        // clip_benchmark's batch size.
        for chunk in crops.chunks(16) {
            let logits: Vec<Vec<f32>> = self.colour_logits(chunk, class_name)?.to_vec2()?;
            for row in logits {
                let best =
                    row.iter().enumerate().fold((0, f32::NEG_INFINITY), |m, (i, &v)| if v > m.1 { (i, v) } else { m });
                out.push(Colour::ALL[best.0]);
            }
        }
        Ok(out)
    }

    /// The first error met through [`ColorClassifier::classify`], if any (cleared).
    pub fn take_error(&self) -> Option<String> {
        self.error.lock().expect("lock").take()
    }
}

impl ColorClassifier for Clip {
    fn classify(&self, crops: &[RgbImage], class_name: &str) -> Vec<Colour> {
        match self.try_classify(crops, class_name) {
            Ok(c) => c,
            Err(e) => {
                self.error.lock().expect("lock").get_or_insert(format!("colour classifier: {e:#}"));
                vec![Colour::ALL[0]; crops.len()]
            }
        }
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}

fn l2_normalize(t: &Tensor) -> Result<Tensor> {
    Ok(t.broadcast_div(&t.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?)?)
}

/// open_clip's eval transform → `[3, size, size]` f32. An empty crop (a degenerate box) is
/// treated as one black pixel.
pub fn preprocess(img: &RgbImage, size: usize, dev: &Device) -> Result<Tensor> {
    let one = RgbImage::new(1, 1);
    let img = if img.width() == 0 || img.height() == 0 { &one } else { img };
    let (w, h) = (img.width() as usize, img.height() as usize);
    // torchvision `_compute_resized_output_size`: short side → size, long side truncated.
    let (nw, nh) = if w <= h {
        (size, (size as f64 * h as f64 / w as f64) as usize)
    } else {
        ((size as f64 * w as f64 / h as f64) as usize, size)
    };
    let resized = if (nw, nh) == (w, h) { img.clone() } else { janus::input::preprocess::resize_bicubic(img, nw, nh) };
    let top = ((nh as f64 - size as f64) / 2.0).round_ties_even() as usize;
    let left = ((nw as f64 - size as f64) / 2.0).round_ties_even() as usize;
    let raw = resized.as_raw();
    let mut data = vec![0f32; 3 * size * size];
    for y in 0..size {
        for x in 0..size {
            let p = ((top + y) * nw + left + x) * 3;
            for c in 0..3 {
                let v = raw[p + c] as f32 / 255.0;
                data[c * size * size + y * size + x] = (v - CLIP_MEAN[c]) / CLIP_STD[c];
            }
        }
    }
    Ok(Tensor::from_vec(data, (3, size, size), dev)?.to_dtype(DType::F32)?)
}
