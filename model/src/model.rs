//! One loaded Janus-Pro model (`MultiModalityCausalLM`): config, tokenizer and modules.
//!
//! Reference: deepseek-ai/Janus `janus/models/modeling_vlm.py`. Module names follow the
//! original checkpoint; [`crate::load::checkpoint`] maps the transformers names onto them.

use std::sync::Arc;

use candle_core::{DType, Device, Module, Tensor};

use crate::error::{Error, Result};
use crate::input::preprocess::PreprocessConfig;
use crate::input::tokenizer::JanusTokenizer;
use crate::limits::DEFAULT_PREFIX_CACHE_POSITIONS;
use crate::load::checkpoint::Checkpoint;
use crate::load::config::{CheckpointFormat, JanusConfig};
use crate::load::hub::ModelFiles;
use crate::load::quant::Quant;
use crate::modules::gen::{GenEmbed, GenHead};
use crate::modules::linears::Linears;
use crate::modules::llm::Llama;
use crate::modules::vision::VisionEncoder;
use crate::modules::vq::{VqConfig, VqDecoder};
use crate::modules::vq_encoder::{VqEncoder, VqEncoderConfig};
use crate::text::prefix_cache::PrefixCache;
use crate::text::prompt::Prompter;

/// Where and how to run a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: Device,
    /// dtype of the language model and heads; logits, CFG and sampling are always f32.
    pub dtype: DType,
    /// dtype of the VQ decoder.
    pub vq_dtype: DType,
    /// Storage of the language model's and `gen_head`'s linear layers.
    pub quant: Quant,
    /// Which jobs to load for (the other jobs' modules are left on disk).
    pub parts: Parts,
}

/// The jobs a loaded model can do. A one-job process leaves the other jobs' modules on disk:
/// SigLIP, its aligner and `lm_head` (0.5 B parameters) and the VQ encoder for generation, the
/// VQ decoder and encoder for understanding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Parts {
    /// Everything, the VQ encoder included when the checkpoint has one (a quantized checkpoint
    /// written before the encoder was loaded has none; then only encoding is unavailable).
    #[default]
    All,
    /// Text-to-image only (no vision encoder, no VQ encoder).
    Generation,
    /// Image understanding only (no VQ decoder, no VQ encoder).
    Understanding,
    /// Images to tokens and back (`janus encode`, edits): generation plus the VQ encoder, which
    /// the checkpoint must have; no vision encoder.
    Edit,
}

impl Parts {
    /// Text-to-image: the generation head and the VQ decoder.
    pub fn generation(self) -> bool {
        self != Parts::Understanding
    }

    /// Image understanding: SigLIP, its aligner and `lm_head`.
    pub fn understanding(self) -> bool {
        matches!(self, Parts::All | Parts::Understanding)
    }

    /// Images to codebook indices: the VQ encoder.
    pub fn vq_encoder(self) -> bool {
        matches!(self, Parts::All | Parts::Edit)
    }
}

impl LoadOptions {
    /// The defaults for a device: everything in bf16 on CUDA (as the reference runs), f32 on CPU.
    pub fn for_device(device: Device) -> Self {
        let dtype = if device.is_cuda() { DType::BF16 } else { DType::F32 };
        Self { device, dtype, vq_dtype: dtype, quant: Quant::None, parts: Parts::All }.with_dtype(dtype)
    }

    /// Sets the model dtype. On CUDA the VQ decoder follows it (except f16, whose range its
    /// activations can exceed); on the CPU it stays in f32, where half precision is slower.
    pub fn with_dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self.vq_dtype = if self.device.is_cuda() && dtype != DType::F16 { dtype } else { DType::F32 };
        self
    }
}

pub struct Janus {
    pub cfg: JanusConfig,
    pub vq_cfg: VqConfig,
    pub tokenizer: Arc<JanusTokenizer>,
    pub format: CheckpointFormat,
    pub(crate) llm: Llama,
    pub(crate) gen_embed: GenEmbed,
    pub(crate) gen_head: GenHead,
    vq: Option<VqDecoder>,
    vq_encoder: Option<VqEncoder>,
    vision: Option<VisionEncoder>,
    pub preprocess: PreprocessConfig,
    /// Tokenization and image preprocessing, shareable with threads that prepare requests.
    prompter: Prompter,
    /// Side of a generated image in pixels.
    image_size: usize,
    device: Device,
    dtype: DType,
    quant: Quant,
    /// Keys and values of prompt prefixes of text answers (system prompts, conversations up to
    /// their last question).
    prefix_cache: PrefixCache,
}

impl Janus {
    pub fn load(files: &ModelFiles, opts: &LoadOptions) -> Result<Self> {
        Self::load_checkpoint(files, opts, Arc::new(Checkpoint::open(&files.weights)?))
    }

    /// [`Janus::load`] from an opened checkpoint.
    pub(crate) fn load_checkpoint(files: &ModelFiles, opts: &LoadOptions, ckpt: Arc<Checkpoint>) -> Result<Self> {
        let mut cfg = JanusConfig::from_file(&files.config)?;
        let tokenizer_file =
            files.tokenizer.as_ref().ok_or_else(|| Error::ModelFiles(format!("{}: no tokenizer.json", files.name)))?;
        let tokenizer = Arc::new(JanusTokenizer::from_file(tokenizer_file)?);
        let quant = match (ckpt.stored_quant(), opts.quant) {
            (None, q) => q,
            (Some(stored), Quant::None) => stored,
            (Some(stored), q) if q == stored => q,
            (Some(stored), q) => {
                return Err(Error::InvalidInput(format!(
                    "{} is quantized as {stored}; it cannot be loaded as {q} (quantize the original weights, or drop --quant)",
                    files.name
                )))
            }
        };
        let ge = ckpt
            .shape_of("gen_embed.weight")
            .ok_or_else(|| Error::Weights("tensor gen_embed.weight is missing from the checkpoint".into()))?;
        if ge.len() != 2 {
            return Err(Error::Weights(format!("gen_embed.weight has shape {ge:?}, expected 2-D")));
        }
        cfg.complete_from_gen_embed(ge[0], ge[1]);
        let vq_cfg = VqConfig::from_checkpoint(&ckpt)?;
        if vq_cfg.codebook_size != cfg.gen.image_token_size {
            return Err(Error::Weights(format!(
                "the VQ codebook has {} entries but gen_head predicts {} image tokens",
                vq_cfg.codebook_size, cfg.gen.image_token_size
            )));
        }
        // Generated images: the grid comes from the config (by its format's rule), the pixels
        // from the VQ decoder's upsampling of that grid.
        let image_size = cfg.image_grid.grid_size * vq_cfg.downsample();
        if let Some(fixed) = cfg.image_grid.image_size.filter(|&s| s != image_size && opts.parts.generation()) {
            return Err(Error::Config {
                path: files.config.clone(),
                msg: format!(
                    "generated images are {fixed} pixels on a {g}×{g} token grid, but the VQ decoder upsamples by {f} \
                     (to {image_size} pixels)",
                    g = cfg.image_grid.grid_size,
                    f = vq_cfg.downsample()
                ),
            });
        }
        let vb = ckpt.var_builder(opts.dtype, &opts.device);
        let vq_vb = ckpt.var_builder(opts.vq_dtype, &opts.device);
        let linears = Linears::new(ckpt.clone(), opts.quant);
        let llm = Llama::load(vb.pp("language_model"), &cfg.llm, &linears, opts.parts.understanding())?;
        let gen_embed = GenEmbed::load(vb.clone(), &cfg.gen, &cfg.gen_aligner)?;
        let gen_head = GenHead::load(vb.pp("gen_head"), cfg.llm.hidden_size, &cfg.gen, &linears)?;
        if linears.fallbacks() > 0 {
            tracing::warn!(
                layers = linears.fallbacks(),
                quant = %opts.quant,
                "layers whose width is not a multiple of the block size were stored as q8_0 or left unquantized"
            );
        }
        let vq = opts.parts.generation().then(|| VqDecoder::load(vq_vb.pp("gen_vision_model"), &vq_cfg)).transpose()?;
        let vq_encoder = if opts.parts.vq_encoder() {
            Self::load_vq_encoder(&ckpt, &vq_vb, opts.parts, image_size, cfg.image_grid.grid_size)?
        } else {
            None
        };
        let vision = opts
            .parts
            .understanding()
            .then(|| VisionEncoder::load(vb.clone(), &cfg.vision, &cfg.aligner))
            .transpose()?;
        let preprocess = PreprocessConfig::load(files.preprocessor.as_deref(), cfg.vision.image_size)?;
        let prompter = Prompter::new(tokenizer.clone(), &cfg, preprocess.clone());
        tracing::info!(
            model = %files.name,
            format = ?ckpt.format(),
            stored = ?ckpt.stored_dtype(),
            dtype = ?opts.dtype,
            quant = %quant,
            layers = cfg.llm.num_hidden_layers,
            hidden = cfg.llm.hidden_size,
            "model loaded"
        );
        Ok(Self {
            format: ckpt.format(),
            cfg,
            vq_cfg,
            tokenizer,
            llm,
            gen_embed,
            gen_head,
            vq,
            vq_encoder,
            vision,
            preprocess,
            prompter,
            image_size,
            device: opts.device.clone(),
            dtype: opts.dtype,
            quant,
            prefix_cache: PrefixCache::new(DEFAULT_PREFIX_CACHE_POSITIONS),
        })
    }

    /// The VQ encoder, when the checkpoint has one; [`Parts::Edit`] requires it. Its token grid
    /// for a generated-size image must be the generation grid, so that encoded tokens decode
    /// (and generate) like generated ones.
    fn load_vq_encoder(
        ckpt: &Checkpoint,
        vb: &candle_nn::VarBuilder,
        parts: Parts,
        image_size: usize,
        grid: usize,
    ) -> Result<Option<VqEncoder>> {
        let Some(enc_cfg) = VqEncoderConfig::from_checkpoint(ckpt)? else {
            if parts == Parts::Edit {
                return Err(Error::Weights(
                    "the checkpoint has no VQ encoder (gen_vision_model.encoder.conv_in.weight is missing)".into(),
                ));
            }
            tracing::debug!("the checkpoint has no VQ encoder; images cannot be encoded into tokens");
            return Ok(None);
        };
        if image_size != grid * enc_cfg.downsample() {
            let msg = format!(
                "the VQ encoder downsamples by {} but the decoder upsamples the {grid}×{grid} grid to {image_size} pixels",
                enc_cfg.downsample()
            );
            if parts == Parts::Edit {
                return Err(Error::Weights(msg));
            }
            tracing::warn!("{msg}; the VQ encoder is not loaded");
            return Ok(None);
        }
        Ok(Some(VqEncoder::load(vb.pp("gen_vision_model"), &enc_cfg)?))
    }

    /// Resolves `model` (directory or hub id), picks the device (`auto`, `cpu`, `cuda[:N]`) and
    /// dtype (`f32`, `bf16`, `f16`, or the device default) and loads all parts with `quant`.
    pub fn open(model: &str, device: &str, dtype: Option<&str>, quant: Quant) -> Result<Self> {
        Self::open_parts(model, device, dtype, quant, Parts::All)
    }

    /// [`Janus::open`] for only the `parts` a process uses.
    pub fn open_parts(model: &str, device: &str, dtype: Option<&str>, quant: Quant, parts: Parts) -> Result<Self> {
        let mut opts = LoadOptions::for_device(crate::device::select_device(device)?);
        if let Some(d) = dtype {
            opts = opts.with_dtype(crate::device::parse_dtype(d)?);
        }
        opts.quant = quant;
        opts.parts = parts;
        Self::load(&ModelFiles::resolve(model)?, &opts)
    }

    pub(crate) fn vision(&self) -> Result<&VisionEncoder> {
        self.vision.as_ref().ok_or(Error::PartNotLoaded("vision encoder (it was loaded for image generation only)"))
    }

    fn vq(&self) -> Result<&VqDecoder> {
        self.vq.as_ref().ok_or(Error::PartNotLoaded("VQ decoder (it was loaded for image understanding only)"))
    }

    fn vq_encoder(&self) -> Result<&VqEncoder> {
        self.vq_encoder.as_ref().ok_or(Error::PartNotLoaded(
            "VQ encoder (it is loaded with Parts::All or Parts::Edit, from a checkpoint that has it)",
        ))
    }

    /// The VQ encoder's structure, when it is loaded.
    pub fn vq_encoder_config(&self) -> Option<&VqEncoderConfig> {
        self.vq_encoder.as_ref().map(|e| e.config())
    }

    /// What prepares requests for this model (tokenization, image preprocessing, lengths); a
    /// clone can be handed to other threads.
    pub fn prompter(&self) -> &Prompter {
        &self.prompter
    }

    /// The prefix cache of text answers (its capacity can be changed while serving).
    pub fn prefix_cache(&self) -> &PrefixCache {
        &self.prefix_cache
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Bytes of weights one image-token step reads (the decoder layers' linear layers,
    /// `gen_head` and `gen_aligner`, once for all rows): with the memory bandwidth, the floor of
    /// a step's time.
    pub fn image_step_weight_bytes(&self) -> usize {
        self.llm.layer_weight_bytes() + self.gen_head.weight_bytes() + self.gen_embed.weight_bytes()
    }

    /// How the language model's and `gen_head`'s linear layers are stored.
    pub fn quant(&self) -> Quant {
        self.quant
    }

    pub fn llm(&self) -> &Llama {
        &self.llm
    }

    /// Side of the token grid of a generated image (24 for Janus-Pro), see [`crate::load::config::ImageGrid`].
    pub fn grid_size(&self) -> usize {
        self.cfg.image_grid.grid_size
    }

    /// Image tokens per generated image (576 for Janus-Pro).
    pub fn num_image_tokens(&self) -> usize {
        self.cfg.image_grid.num_image_tokens
    }

    /// Side of a generated image in pixels (384 for Janus-Pro): the grid times the VQ decoder's
    /// upsampling.
    pub fn image_size(&self) -> usize {
        self.image_size
    }

    /// Image-token logits (f32) for post-norm LM hidden states.
    pub fn gen_logits(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(self.gen_head.forward(hidden)?.to_dtype(DType::F32)?)
    }

    /// LM input embeddings of image tokens `[..]` → `[.., D]`.
    pub fn embed_image_tokens(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(self.gen_embed.forward(ids)?)
    }

    /// Checks image tokens for range and count, then decodes them with the VQ decoder into
    /// RGB images, `chunk` images at a time (bounds peak memory).
    pub fn decode_images(&self, tokens: &[Vec<u32>], chunk: usize) -> Result<Vec<image::RgbImage>> {
        let n_tok = self.num_image_tokens();
        let k = self.cfg.gen.image_token_size as u32;
        for (i, t) in tokens.iter().enumerate() {
            if t.len() != n_tok {
                return Err(Error::InvalidInput(format!(
                    "image {i} has {} tokens; this model's images have {n_tok}",
                    t.len()
                )));
            }
            if let Some(bad) = t.iter().find(|&&x| x >= k) {
                return Err(Error::InvalidInput(format!("image {i} has token {bad}, outside the codebook (0..{k})")));
            }
        }
        let mut out = Vec::with_capacity(tokens.len());
        for group in tokens.chunks(chunk.max(1)) {
            let flat: Vec<u32> = group.iter().flatten().copied().collect();
            let ids = Tensor::from_vec(flat, (group.len(), n_tok), &self.device)?;
            let pixels = self.vq()?.decode_tokens(&ids, self.grid_size())?;
            out.extend(crate::input::image::to_rgb(&pixels)?);
        }
        Ok(out)
    }

    /// The raw VQ decoder output `[N, 3, H, W]` (f32) for image tokens `[N, grid²]`, for parity
    /// tests.
    pub fn decode_raw(&self, tokens: &Tensor) -> Result<Tensor> {
        Ok(self.vq()?.decode_tokens(tokens, self.grid_size())?.to_dtype(DType::F32)?)
    }

    /// RGB images → their token grids (`grid_size()²` codebook indices each, raster order): the
    /// ids [`Janus::decode_images`], `janus decode-tokens` and generation use. Each image is
    /// converted to RGB (alpha dropped) and resized as a whole, without cropping or padding
    /// (the aspect ratio is not kept, so every pixel maps back), to the generated-image square
    /// [`Janus::image_size`] with Pillow's bicubic filter; then normalised to [-1, 1] as
    /// x / 127.5 − 1 ([`Janus::encoder_pixels`]) and encoded one image at a time.
    pub fn encode_image_tokens(&self, images: &[image::DynamicImage]) -> Result<Vec<Vec<u32>>> {
        let enc = self.vq_encoder()?;
        let mut out = Vec::with_capacity(images.len());
        for img in images {
            out.extend(enc.encode(&self.encoder_pixels(std::slice::from_ref(img))?)?);
        }
        Ok(out)
    }

    /// What [`Janus::encode_image_tokens`] feeds the encoder: `[N, 3, S, S]` f32 on the model's
    /// device, S = [`Janus::image_size`].
    pub fn encoder_pixels(&self, images: &[image::DynamicImage]) -> Result<Tensor> {
        let pixels = (images.iter())
            .map(|img| match img {
                image::DynamicImage::ImageRgb8(rgb) => crate::edit::encoder_pixels(rgb, self.image_size),
                other => crate::edit::encoder_pixels(&other.to_rgb8(), self.image_size),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::stack(&pixels, 0)?.to_device(&self.device)?)
    }

    /// Pixels `[N, 3, S, S]` (or one image, `[3, S, S]`) in [-1, 1], S = [`Janus::image_size`],
    /// on any device → token grids (`grid_size()²` codebook indices each), raster order.
    pub fn encode_pixels(&self, pixels: &Tensor) -> Result<Vec<Vec<u32>>> {
        let pixels = self.encoder_input(pixels)?;
        self.vq_encoder()?.encode(&pixels)
    }

    /// The encoder's latents `z` `[N, embed_dim, grid, grid]` (f32, after `quant_conv`, before
    /// quantization) for pixels as [`Janus::encode_pixels`] takes them, for parity tests.
    pub fn encode_raw(&self, pixels: &Tensor) -> Result<Tensor> {
        let pixels = self.encoder_input(pixels)?;
        Ok(self.vq_encoder()?.forward(&pixels)?.to_dtype(DType::F32)?)
    }

    /// Checks the pixels' shape; a batch of one on the model's device.
    fn encoder_input(&self, pixels: &Tensor) -> Result<Tensor> {
        let s = self.image_size;
        let pixels = match pixels.dims() {
            &[3, h, w] if (h, w) == (s, s) => pixels.unsqueeze(0)?,
            &[_, 3, h, w] if (h, w) == (s, s) => pixels.clone(),
            d => return Err(Error::InvalidInput(format!("the VQ encoder takes [N, 3, {s}, {s}] pixels, not {d:?}"))),
        };
        Ok(pixels.to_device(&self.device)?)
    }
}
