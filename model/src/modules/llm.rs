//! The language model: a LLaMA decoder (DeepSeek-LLM 1.5B / 7B) that takes input embeddings
//! and returns the post-norm hidden state, with a preallocated batched KV cache.
//!
//! Reference: transformers `models/llama/modeling_llama.py` (pre-RMSNorm blocks, rotate-half
//! RoPE, SwiGLU MLP, no biases), as used by `MultiModalityCausalLM.language_model` in
//! deepseek-ai/Janus; structure after candle-transformers `models/llama.rs`. Unlike candle's
//! model this one exposes the hidden state (Janus feeds it to `gen_head`, not `lm_head`),
//! writes keys/values into a preallocated cache instead of concatenating, and supports
//! left-padded rows (per-row positions and a key mask) so requests of different prompt lengths
//! can share a batch.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{rms_norm, Embedding, RmsNorm, VarBuilder};

use crate::error::{Error, Result};
use crate::kernels::attention;
use crate::load::config::LlmConfig;
use crate::modules::linear::Linear;
use crate::modules::linears::Linears;

/// Keys and values of every layer for a batch of rows, preallocated to `capacity` positions.
pub struct LlmCache {
    layers: Vec<(Tensor, Tensor)>,
    /// Left padding of each row (positions before it are masked and have no position id).
    pads: Vec<usize>,
    /// Positions written so far (including padding).
    len: usize,
    capacity: usize,
    /// With padding, made once on the device: each row's position id of every slot
    /// `[B, capacity]` (u32) and the additive key mask of a one-token step `[B, 1, 1, capacity]`.
    padding: Option<(Tensor, Tensor)>,
}

impl LlmCache {
    /// A cache for `pads.len()` rows, row `i` left-padded by `pads[i]` tokens.
    pub fn new(cfg: &LlmConfig, pads: Vec<usize>, capacity: usize, dtype: DType, dev: &Device) -> Result<Self> {
        let b = pads.len();
        let shape = (b, cfg.num_key_value_heads, capacity, cfg.head_dim);
        let layers = (0..cfg.num_hidden_layers)
            .map(|_| Ok((Tensor::zeros(shape, dtype, dev)?, Tensor::zeros(shape, dtype, dev)?)))
            .collect::<Result<_>>()?;
        let padding = Self::padding(&pads, capacity, dev)?;
        Ok(Self { layers, pads, len: 0, capacity, padding })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// One batch cache of `capacity` positions from `parts`, each holding its rows' prompt from
    /// position 0 and placed after `pad` positions of left padding (so all end at the same
    /// position). Each part is prefilled alone, without padding, so its rows hold exactly what
    /// they would alone.
    pub fn from_parts(parts: Vec<(LlmCache, usize)>, capacity: usize) -> Result<Self> {
        let len = parts.first().map_or(0, |(c, pad)| c.len + pad);
        if parts.iter().any(|(c, pad)| c.len + pad != len || c.padding.is_some()) || len > capacity {
            return Err(Error::InvalidInput("cache parts must be unpadded and end at one position".into()));
        }
        let pads: Vec<usize> = parts.iter().flat_map(|(c, pad)| std::iter::repeat_n(*pad, c.batch_size())).collect();
        let dev = match parts.first().and_then(|(c, _)| c.layers.first()) {
            Some((k, _)) => k.device().clone(),
            None => return Err(Error::InvalidInput("no cache parts".into())),
        };
        // The whole cache once, then each part's keys and values written in place: its rows, after
        // its padding.
        let mut layers = Vec::with_capacity(parts[0].0.layers.len());
        for l in 0..parts[0].0.layers.len() {
            let (_, h, _, d) = parts[0].0.layers[l].0.dims4()?;
            let like = &parts[0].0.layers[l].0;
            let k = Tensor::zeros((pads.len(), h, capacity, d), like.dtype(), &dev)?;
            let v = Tensor::zeros((pads.len(), h, capacity, d), like.dtype(), &dev)?;
            let mut row = 0;
            for (c, pad) in &parts {
                let b = c.batch_size();
                k.narrow(0, row, b)?.slice_set(&c.layers[l].0.narrow(2, 0, c.len)?.contiguous()?, 2, *pad)?;
                v.narrow(0, row, b)?.slice_set(&c.layers[l].1.narrow(2, 0, c.len)?.contiguous()?, 2, *pad)?;
                row += b;
            }
            layers.push((k, v));
        }
        let padding = Self::padding(&pads, capacity, &dev)?;
        Ok(Self { layers, pads, len, capacity, padding })
    }

    /// A copy of the keys and values of the first `n` positions of every layer (a one-row,
    /// unpadded cache), for [`crate::text::prefix_cache::PrefixCache`].
    pub(crate) fn prefix(&self, n: usize) -> Result<PrefixKv> {
        if self.batch_size() != 1 || self.padding.is_some() || n > self.len {
            return Err(Error::InvalidInput("a prefix is taken from one unpadded row's written positions".into()));
        }
        let copy = |t: &Tensor| -> Result<Tensor> { Ok(t.narrow(2, 0, n)?.force_contiguous()?) };
        self.layers.iter().map(|(k, v)| Ok((copy(k)?, copy(v)?))).collect()
    }

    /// Writes a prefix's keys and values (from [`LlmCache::prefix`] of a cache of the same
    /// model) at position 0 of an empty one-row cache.
    pub(crate) fn write_prefix(&mut self, kv: &PrefixKv) -> Result<()> {
        let n = kv.first().map_or(0, |(k, _)| k.dim(2).unwrap_or(0));
        if self.batch_size() != 1 || self.len != 0 || kv.len() != self.layers.len() || n > self.capacity {
            return Err(Error::InvalidInput("a prefix is written into an empty one-row cache".into()));
        }
        for ((k, v), (pk, pv)) in self.layers.iter_mut().zip(kv) {
            k.slice_set(pk, 2, 0)?;
            v.slice_set(pv, 2, 0)?;
        }
        self.len = n;
        Ok(())
    }

    /// Makes room for `capacity` positions in all (a text answer grows its cache in chunks
    /// instead of reserving its whole `max_tokens` up front). Never shrinks.
    pub fn grow_to(&mut self, capacity: usize) -> Result<()> {
        if capacity <= self.capacity {
            return Ok(());
        }
        let extra = capacity - self.capacity;
        for (k, v) in self.layers.iter_mut() {
            let (b, h, _, d) = k.dims4()?;
            let zeros = Tensor::zeros((b, h, extra, d), k.dtype(), k.device())?;
            *k = Tensor::cat(&[&*k, &zeros], 2)?;
            *v = Tensor::cat(&[&*v, &zeros], 2)?;
        }
        if let Some((positions, _)) = &self.padding {
            self.padding = Self::padding(&self.pads, capacity, &positions.device().clone())?;
        }
        self.capacity = capacity;
        Ok(())
    }

    fn padding(pads: &[usize], capacity: usize, dev: &Device) -> Result<Option<(Tensor, Tensor)>> {
        let b = pads.len();
        Ok(if pads.iter().any(|&p| p > 0) {
            let ids = pads.iter().flat_map(|&p| (0..capacity).map(move |j| j.saturating_sub(p) as u32));
            let mask =
                pads.iter().flat_map(|&p| (0..capacity).map(move |j| if j < p { f32::NEG_INFINITY } else { 0.0 }));
            Some((
                Tensor::from_iter(ids, dev)?.reshape((b, capacity))?,
                Tensor::from_iter(mask, dev)?.reshape((b, 1, 1, capacity))?,
            ))
        } else {
            None
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Forgets the positions from `len` on (what a failed step wrote; they are overwritten by
    /// the next).
    pub(crate) fn rewind(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn batch_size(&self) -> usize {
        self.pads.len()
    }

    /// Each row's left padding.
    pub fn pads(&self) -> &[usize] {
        &self.pads
    }

    /// Keeps only the rows in `keep` (in that order), e.g. when a request leaves the batch.
    pub fn retain_rows(&mut self, keep: &[usize]) -> Result<()> {
        let dev = self.layers.first().map(|(k, _)| k.device().clone());
        if let Some(dev) = dev {
            let idx = Tensor::from_iter(keep.iter().map(|&i| i as u32), &dev)?;
            for (k, v) in self.layers.iter_mut() {
                *k = k.index_select(&idx, 0)?;
                *v = v.index_select(&idx, 0)?;
            }
        }
        self.pads = keep.iter().map(|&i| self.pads[i]).collect();
        if let Some((positions, mask)) = &mut self.padding {
            let idx = Tensor::from_iter(keep.iter().map(|&i| i as u32), positions.device())?;
            *positions = positions.index_select(&idx, 0)?;
            *mask = mask.index_select(&idx, 0)?;
        }
        Ok(())
    }

    /// Position ids `[B, S]` and the additive attention mask `[B, 1, S, T]` for `s` new
    /// tokens; the mask is `None` when causality alone suffices (no padding, one token).
    fn positions_and_mask(&self, s: usize, dev: &Device) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (b, start, t) = (self.pads.len(), self.len, self.len + s);
        let positions = match &self.padding {
            Some((positions, _)) => Some(positions.narrow(1, start, s)?),
            None => None,
        };
        if s == 1 && self.pads.iter().all(|&p| start >= p) {
            // One token past the padding sees every key but the padding.
            return Ok((positions, self.padding.as_ref().map(|(_, mask)| mask.narrow(3, 0, t)).transpose()?));
        }
        let mut mask = Vec::with_capacity(b * s * t);
        for &p in &self.pads {
            for i in start..t {
                // Padding is masked as a key; a padding query sees only itself (never a NaN row).
                let hidden = |j: usize| j > i || (j < p && j != i);
                mask.extend((0..t).map(|j| if hidden(j) { f32::NEG_INFINITY } else { 0.0 }));
            }
        }
        Ok((positions, Some(Tensor::from_vec(mask, (b, 1, s, t), dev)?)))
    }
}

/// The keys and values of a cache's first positions, every layer's, `[1, kv heads, positions,
/// head_dim]` each (what the prefix cache keeps: `text::prefix_cache`).
pub(crate) type PrefixKv = Vec<(Tensor, Tensor)>;

/// Precomputed RoPE tables (rotate-half convention), `[max_positions, head_dim / 2]`.
struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    fn new(cfg: &LlmConfig, dtype: DType, dev: &Device) -> Result<Self> {
        let half = cfg.head_dim / 2;
        let inv_freq: Vec<f32> =
            (0..half).map(|i| 1.0 / cfg.rope_theta.powf(2.0 * i as f64 / cfg.head_dim as f64) as f32).collect();
        let n = cfg.max_position_embeddings;
        let inv_freq = Tensor::from_vec(inv_freq, (1, half), dev)?;
        let t = Tensor::arange(0u32, n as u32, dev)?.to_dtype(DType::F32)?.reshape((n, 1))?;
        let freqs = t.broadcast_mul(&inv_freq)?;
        Ok(Self { cos: freqs.cos()?.to_dtype(dtype)?, sin: freqs.sin()?.to_dtype(dtype)? })
    }

    /// cos/sin for positions `start..start+s` (shared by all rows) or per-row `positions`.
    fn select(&self, start: usize, s: usize, positions: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        match positions {
            None => Ok((self.cos.narrow(0, start, s)?, self.sin.narrow(0, start, s)?)),
            Some(p) => {
                let (b, s) = p.dims2()?;
                let flat = p.flatten_all()?;
                let pick = |t: &Tensor| -> Result<Tensor> {
                    let half = t.dim(1)?;
                    Ok(t.index_select(&flat, 0)?.reshape((b, s, half))?)
                };
                Ok((pick(&self.cos)?, pick(&self.sin)?))
            }
        }
    }
}

/// One layer of a batch cache in a step: its keys and values, its length before the step, its
/// rows' left padding, and the step's rotary tables and mask for its rows.
struct BatchLayer<'a> {
    kv: &'a mut (Tensor, Tensor),
    offset: usize,
    pads: &'a [usize],
    cos: &'a Tensor,
    sin: &'a Tensor,
    mask: Option<&'a Tensor>,
}

/// Self-attention with `q_proj`, `k_proj` and `v_proj` fused into one matmul at load time.
struct Attention {
    qkv: Linear,
    o_proj: Linear,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn weight_bytes(&self) -> usize {
        self.qkv.weight_bytes() + self.o_proj.weight_bytes()
    }

    fn load(vb: VarBuilder, cfg: &LlmConfig, lin: &Linears) -> Result<Self> {
        let (d, hd) = (cfg.hidden_size, cfg.head_dim);
        let (q, kv) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
        Ok(Self {
            qkv: lin.fused(&vb, "qkv_proj", &[("q_proj", q), ("k_proj", kv), ("v_proj", kv)], d)?,
            o_proj: lin.load(&vb.pp("o_proj"), q, d, false)?,
            num_heads: cfg.num_attention_heads,
            num_kv_heads: cfg.num_key_value_heads,
            head_dim: hd,
        })
    }

    fn heads(&self) -> attention::Heads {
        attention::Heads { num_heads: self.num_heads, num_kv_heads: self.num_kv_heads, head_dim: self.head_dim }
    }

    /// The attention of one-token rows that share nothing but the weights (each its own cache
    /// and position) → `[R, 1, heads · head_dim]`: on the CPU (f32) the rotary embedding for all
    /// rows at once and the attention in one call ([`attention::attend_rows`]), elsewhere
    /// row by row.
    fn attend_singles(
        &self,
        qkv: &Tensor,
        rope: &Rope,
        caches: &mut [(&mut (Tensor, Tensor), usize)],
    ) -> Result<Tensor> {
        if !attention::takes(qkv) {
            let ys = (caches.iter_mut().enumerate())
                .map(|(r, (kv, offset))| {
                    let (cos, sin) = rope.select(*offset, 1, None)?;
                    let layer = BatchLayer { kv, offset: *offset, pads: &[0], cos: &cos, sin: &sin, mask: None };
                    self.attend(&qkv.narrow(0, r, 1)?, layer)
                })
                .collect::<Result<Vec<_>>>()?;
            return Ok(Tensor::cat(&ys, 0)?);
        }
        let (r, _, _) = qkv.dims3()?;
        let (h, kvh, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let qkv = qkv.reshape((r, 1, h + 2 * kvh, d))?;
        let heads =
            |start: usize, n: usize| -> Result<Tensor> { Ok(qkv.narrow(2, start, n)?.transpose(1, 2)?.contiguous()?) };
        let (q, k, v) = (heads(0, h)?, heads(h, kvh)?, heads(h + kvh, kvh)?);
        let positions = Tensor::from_iter(caches.iter().map(|(_, o)| *o as u32), qkv.device())?.reshape((r, 1))?;
        let (cos, sin) = rope.select(0, 1, Some(&positions))?;
        let q = candle_nn::rotary_emb::rope(&q, &cos, &sin)?;
        let k = candle_nn::rotary_emb::rope(&k, &cos, &sin)?;
        for (i, (kv, offset)) in caches.iter_mut().enumerate() {
            kv.0.slice_set(&k.narrow(0, i, 1)?, 2, *offset)?;
            kv.1.slice_set(&v.narrow(0, i, 1)?, 2, *offset)?;
        }
        let tensors: Vec<(&Tensor, &Tensor)> = caches.iter().map(|(kv, _)| (&kv.0, &kv.1)).collect();
        let spans: Vec<attention::RowSpan> = (caches.iter().enumerate())
            .map(|(c, (_, o))| attention::RowSpan { cache: c, row: 0, start: 0, end: o + 1 })
            .collect();
        let y = attention::attend_rows(&q.reshape((r, h, d))?, &tensors, &spans, self.heads())?;
        Ok(y.reshape((r, 1, h * d))?)
    }

    /// `qkv` `[B, S, (heads + 2 kv heads) · head_dim]` → rotary embedding, cache write at
    /// `offset`, attention over the cache → `[B, S, heads · head_dim]` (before `o_proj`). Row
    /// `r` is left-padded by `pads[r]`. A one-token step on the CPU (f32) attends with
    /// [`attention::attend_rows`] from each row's first real position, so a padded row
    /// computes exactly what it would unpadded (alone); the mask is then not needed.
    fn attend(&self, qkv: &Tensor, layer: BatchLayer<'_>) -> Result<Tensor> {
        let (b, s, _) = qkv.dims3()?;
        let BatchLayer { kv, offset, pads, cos, sin, mask } = layer;
        let (h, kvh) = (self.num_heads, self.num_kv_heads);
        // [B, S, heads of q, k and v, head_dim]; each part → [B, heads, S, head_dim] (one copy).
        let qkv = qkv.reshape((b, s, h + 2 * kvh, self.head_dim))?;
        let heads =
            |start: usize, n: usize| -> Result<Tensor> { Ok(qkv.narrow(2, start, n)?.transpose(1, 2)?.contiguous()?) };
        let (q, k, v) = (heads(0, h)?, heads(h, kvh)?, heads(h + kvh, kvh)?);
        let q = candle_nn::rotary_emb::rope(&q, cos, sin)?;
        let k = candle_nn::rotary_emb::rope(&k, cos, sin)?;

        kv.0.slice_set(&k, 2, offset)?;
        kv.1.slice_set(&v, 2, offset)?;
        let t = offset + s;
        if s == 1 && attention::takes(&q) && pads.len() == b {
            let spans: Vec<attention::RowSpan> =
                (0..b).map(|row| attention::RowSpan { cache: 0, row, start: pads[row], end: t }).collect();
            let y =
                attention::attend_rows(&q.reshape((b, h, self.head_dim))?, &[(&kv.0, &kv.1)], &spans, self.heads())?;
            return Ok(y.reshape((b, 1, h * self.head_dim))?);
        }
        let k = repeat_kv(kv.0.narrow(2, 0, t)?, self.num_heads / self.num_kv_heads)?;
        let v = repeat_kv(kv.1.narrow(2, 0, t)?, self.num_heads / self.num_kv_heads)?;

        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let att = (q.matmul(&k.t()?)? * scale)?.to_dtype(attention_dtype(&q))?;
        let att = match mask {
            Some(m) => att.broadcast_add(m)?,
            None => att,
        };
        let att = candle_nn::ops::softmax_last_dim(&att)?.to_dtype(v.dtype())?;
        Ok(att.matmul(&v)?.transpose(1, 2)?.reshape((b, s, self.num_heads * self.head_dim))?)
    }
}

/// The dtype of attention scores and masks for activations `x`: CUDA's softmax kernel
/// accumulates in f32 whatever the input dtype; on the CPU a half-precision softmax would not,
/// so there the scores go through f32.
fn attention_dtype(x: &Tensor) -> DType {
    if x.device().is_cuda() {
        x.dtype()
    } else {
        DType::F32
    }
}

fn repeat_kv(x: Tensor, n_rep: usize) -> Result<Tensor> {
    if n_rep == 1 {
        return Ok(x);
    }
    let (b, h, t, d) = x.dims4()?;
    Ok(Tensor::cat(&vec![&x; n_rep], 2)?.reshape((b, h * n_rep, t, d))?)
}

/// SwiGLU MLP with `gate_proj` and `up_proj` fused into one matmul at load time.
struct Mlp {
    gate_up: Linear,
    down_proj: Linear,
    intermediate: usize,
}

impl Mlp {
    fn weight_bytes(&self) -> usize {
        self.gate_up.weight_bytes() + self.down_proj.weight_bytes()
    }

    fn load(vb: VarBuilder, cfg: &LlmConfig, lin: &Linears) -> Result<Self> {
        let (d, f) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            gate_up: lin.fused(&vb, "gate_up_proj", &[("gate_proj", f), ("up_proj", f)], d)?,
            down_proj: lin.load(&vb.pp("down_proj"), f, d, false)?,
            intermediate: f,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gu = self.gate_up.forward(x)?;
        let f = self.intermediate;
        let gate = candle_nn::ops::silu(&gu.narrow(candle_core::D::Minus1, 0, f)?)?;
        let up = gu.narrow(candle_core::D::Minus1, f, f)?;
        Ok(self.down_proj.forward(&(gate * up)?)?)
    }
}

struct Block {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl Block {
    fn load(vb: VarBuilder, cfg: &LlmConfig, lin: &Linears) -> Result<Self> {
        Ok(Self {
            input_layernorm: rms_norm(cfg.hidden_size, cfg.rms_norm_eps, vb.pp("input_layernorm"))?,
            self_attn: Attention::load(vb.pp("self_attn"), cfg, lin)?,
            post_attention_layernorm: rms_norm(cfg.hidden_size, cfg.rms_norm_eps, vb.pp("post_attention_layernorm"))?,
            mlp: Mlp::load(vb.pp("mlp"), cfg, lin)?,
        })
    }

    /// Layer `i` for a step's rows (`x` as `step` lays them out): the normed input through
    /// `q/k/v` for all rows at once, each group's attention against its own cache, `o_proj` and
    /// the MLP for all rows again, with the residuals.
    fn forward(&self, i: usize, x: &Tensor, step: &mut Step<'_>, rope: &Rope) -> Result<Tensor> {
        let attn = &self.self_attn;
        let qkv = attn.qkv.forward(&self.input_layernorm.forward(x)?)?;
        let mut parts = step.split(&qkv)?.into_iter();
        let mut ys = Vec::with_capacity(step.groups.len() + 1);
        for (g, qkv) in step.groups.iter_mut().zip(parts.by_ref()) {
            ys.push(attn.attend(&qkv, g.layer(i))?);
        }
        if let Some(qkv) = parts.next() {
            let mut singles: Vec<(&mut (Tensor, Tensor), usize)> =
                step.singles.iter_mut().map(|c| (&mut c.layers[i], c.len)).collect();
            ys.push(attn.attend_singles(&qkv, rope, &mut singles)?);
        }
        let x = (x + attn.o_proj.forward(&step.join(ys)?)?)?;
        let h = self.mlp.forward(&self.post_attention_layernorm.forward(&x)?)?;
        Ok((x + h)?)
    }
}

/// A group of rows that attends against one batch cache: the cache, and the step's rotary tables
/// and mask for its `rows` × `positions`.
struct Group<'c> {
    cache: &'c mut LlmCache,
    cos: Tensor,
    sin: Tensor,
    mask: Option<Tensor>,
    offset: usize,
    rows: usize,
    positions: usize,
}

impl<'c> Group<'c> {
    /// `positions` new positions for every row of `cache`, at its length; `x` gives the
    /// activations' device and dtype.
    fn new(cache: &'c mut LlmCache, positions: usize, rope: &Rope, x: &Tensor) -> Result<Self> {
        let (pos, mask) = cache.positions_and_mask(positions, x.device())?;
        let mask = mask.map(|m| m.to_dtype(attention_dtype(x))).transpose()?;
        let (cos, sin) = rope.select(cache.len, positions, pos.as_ref())?;
        let (offset, rows) = (cache.len, cache.batch_size());
        Ok(Self { cache, cos, sin, mask, offset, rows, positions })
    }

    fn layer(&mut self, i: usize) -> BatchLayer<'_> {
        let c = &mut *self.cache;
        BatchLayer {
            kv: &mut c.layers[i],
            offset: self.offset,
            pads: &c.pads,
            cos: &self.cos,
            sin: &self.sin,
            mask: self.mask.as_ref(),
        }
    }
}

/// Packed positions (`[1, Σ B·S, D]`, or `[Σ B·S, D]` `as_rows`) → each group's `[B, S, D]`.
fn unpack(x: &Tensor, dims: &[(usize, usize)], as_rows: bool) -> Result<Vec<Tensor>> {
    let x = if as_rows { x.unsqueeze(0)? } else { x.clone() };
    let mut at = 0;
    (dims.iter())
        .map(|&(b, s)| {
            let part = x.narrow(1, at, b * s)?.reshape((b, s, x.dim(2)?))?.contiguous()?;
            at += b * s;
            Ok(part)
        })
        .collect()
}

/// How a step's rows lie in the layers' input.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// `[rows, positions, D]`: the groups' rows one after another, then the one-row caches'.
    Rows,
    /// Every group's positions one after another as one sequence `[1, Σ B·S, D]` (one GEMM per
    /// linear layer), or, `as_rows`, as rows of one position `[Σ B·S, D]` (the decode kernel).
    Packed { as_rows: bool },
}

/// What a forward attends with: groups of rows each against its own batch cache, and rows of one
/// position each against its own one-row cache (attended together), laid out as `layout` says.
struct Step<'c> {
    groups: Vec<Group<'c>>,
    singles: Vec<&'c mut LlmCache>,
    layout: Layout,
}

impl Step<'_> {
    /// `x` (laid out as the step's input) → each group's part `[B, S, ..]`, then the one-row
    /// caches' part `[R, 1, ..]` when there are any.
    fn split(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let mut parts = Vec::with_capacity(self.groups.len() + 1);
        let mut at = 0;
        match self.layout {
            Layout::Rows => {
                for g in &self.groups {
                    parts.push(x.narrow(0, at, g.rows)?);
                    at += g.rows;
                }
                if !self.singles.is_empty() {
                    parts.push(x.narrow(0, at, self.singles.len())?);
                }
            }
            Layout::Packed { as_rows } => {
                let dims: Vec<(usize, usize)> = self.groups.iter().map(|g| (g.rows, g.positions)).collect();
                parts = unpack(x, &dims, as_rows)?;
            }
        }
        Ok(parts)
    }

    /// The parts' outputs back in the step's layout.
    fn join(&self, mut parts: Vec<Tensor>) -> Result<Tensor> {
        match self.layout {
            Layout::Rows if parts.len() == 1 => Ok(parts.remove(0)),
            Layout::Rows => Ok(Tensor::cat(&parts, 0)?),
            Layout::Packed { as_rows } => {
                let rows = parts.iter().map(|x| Ok(x.reshape((1, (), x.dim(2)?))?)).collect::<Result<Vec<_>>>()?;
                let seq = Tensor::cat(&rows, 1)?;
                Ok(if as_rows { seq.squeeze(0)? } else { seq })
            }
        }
    }

    /// After the last layer: every cache holds the step's positions.
    fn advance(self) {
        for g in self.groups {
            g.cache.len += g.positions;
        }
        for c in self.singles {
            c.len += 1;
        }
    }
}

/// `language_model` of Janus: `model.{embed_tokens,layers,norm}` and `lm_head`.
pub struct Llama {
    embed_tokens: Embedding,
    layers: Vec<Block>,
    norm: RmsNorm,
    /// `None` when loaded for image generation only (images go through `gen_head`).
    lm_head: Option<Linear>,
    rope: Rope,
    cfg: LlmConfig,
    /// The activations' dtype (the embeddings may be stored narrower).
    dtype: DType,
}

impl Llama {
    /// Bytes of the decoder layers' linear weights: what every step reads once, whatever its
    /// rows (the embeddings read a row per token; `lm_head` only for text).
    pub fn layer_weight_bytes(&self) -> usize {
        self.layers.iter().map(|b| b.self_attn.weight_bytes() + b.mlp.weight_bytes()).sum()
    }

    /// `vb` points at `language_model`; `lin` stores the linear layers (quantized or not);
    /// `text` loads `lm_head` (text answers need it, image generation does not).
    pub fn load(vb: VarBuilder, cfg: &LlmConfig, lin: &Linears, text: bool) -> Result<Self> {
        let m = vb.pp("model");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Block::load(m.pp(format!("layers.{i}")), cfg, lin))
            .collect::<Result<_>>()?;
        let embed_tokens = lin.embedding(&m.pp("embed_tokens"), cfg.vocab_size, cfg.hidden_size)?;
        // The original checkpoints store a separate lm_head; a transformers export with tied
        // embeddings omits it, and then the embedding matrix is the head.
        let lm_head = if !text {
            None
        } else if vb.contains_tensor("lm_head.weight") {
            Some(lin.load(&vb.pp("lm_head"), cfg.hidden_size, cfg.vocab_size, false)?)
        } else {
            tracing::info!("no lm_head.weight in the checkpoint: using the tied token embeddings");
            let w = embed_tokens.embeddings().to_dtype(vb.dtype())?;
            Some(lin.from_tensor(&format!("{}.lm_head.weight", vb.prefix()), &w, &vb)?)
        };
        Ok(Self {
            embed_tokens,
            layers,
            norm: rms_norm(cfg.hidden_size, cfg.rms_norm_eps, m.pp("norm"))?,
            lm_head,
            rope: Rope::new(cfg, vb.dtype(), vb.device())?,
            cfg: cfg.clone(),
            dtype: vb.dtype(),
        })
    }

    pub fn config(&self) -> &LlmConfig {
        &self.cfg
    }

    /// Token ids `[B, S]` → input embeddings `[B, S, D]`.
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(self.embed_tokens.forward(ids)?.to_dtype(self.dtype)?)
    }

    /// Runs `embeds` `[B, S, D]` through the decoder, appending to `cache`, and returns the
    /// hidden state after the final RMSNorm, `[B, S, D]`.
    pub fn forward(&self, embeds: &Tensor, cache: &mut LlmCache) -> Result<Tensor> {
        let (b, s, _) = embeds.dims3()?;
        if b != cache.batch_size() {
            return Err(Error::InvalidInput(format!("batch of {b} rows for a cache of {} rows", cache.batch_size())));
        }
        let offset = cache.len;
        if offset + s > cache.capacity || offset + s > self.cfg.max_position_embeddings {
            return Err(Error::InvalidInput(format!(
                "sequence of {} tokens exceeds the context ({} cached, max {})",
                offset + s,
                cache.capacity,
                self.cfg.max_position_embeddings
            )));
        }
        let group = Group::new(cache, s, &self.rope, embeds)?;
        self.run(embeds, Step { groups: vec![group], singles: Vec::new(), layout: Layout::Rows })
    }

    /// Every layer for a step's rows, each cache then holding them, and the final norm.
    fn run(&self, x: &Tensor, mut step: Step<'_>) -> Result<Tensor> {
        let mut x = x.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(i, &x, &mut step, &self.rope)?;
        }
        step.advance();
        Ok(self.norm.forward(&x)?)
    }

    /// One token for the rows of a batch cache (an image cohort, the first `batch.batch_size()`
    /// rows of `embeds`) and for independent one-row caches (text answers, the rest) in one
    /// pass over the weights: the linear layers for all rows together, each group's attention
    /// against its own cache (either group may be absent). Returns the post-norm hidden states
    /// `[R, 1, D]`.
    pub fn forward_shared(
        &self,
        embeds: &Tensor,
        batch: Option<&mut LlmCache>,
        singles: &mut [&mut LlmCache],
    ) -> Result<Tensor> {
        let (r, s, _) = embeds.dims3()?;
        let batch_rows = batch.as_ref().map_or(0, |b| b.batch_size());
        if r != batch_rows + singles.len() || s != 1 {
            return Err(Error::InvalidInput(format!(
                "{r} rows of {s} tokens for {batch_rows} batch rows and {} one-row caches",
                singles.len()
            )));
        }
        for c in batch.iter().map(|b| &**b).chain(singles.iter().map(|c| &**c)) {
            if c.len + 1 > c.capacity || c.len + 1 > self.cfg.max_position_embeddings {
                return Err(Error::InvalidInput(format!("a row of {} tokens exceeds its cache", c.len + 1)));
            }
        }
        if singles.iter().any(|c| c.batch_size() != 1 || c.padding.is_some()) {
            return Err(Error::InvalidInput("one unpadded row per single cache".into()));
        }
        let groups = batch.map(|b| Group::new(b, 1, &self.rope, embeds)).into_iter().collect::<Result<Vec<_>>>()?;
        let singles = singles.iter_mut().map(|c| &mut **c).collect();
        self.run(embeds, Step { groups, singles, layout: Layout::Rows })
    }

    /// Several unpadded groups of rows (image prompts, each a CFG pair), each with its own cache,
    /// in one pass over the weights: every group's positions go through the linear layers
    /// together, packed one after another, and each group's attention runs against its own
    /// cache, as it would alone. `embeds[g]` is `[B_g, S_g, D]`; returns each group's post-norm
    /// hidden states. The packed positions go through the linear layers as one sequence (the
    /// GEMM, whose rows do not depend on how many there are) or, with `as_rows`, as rows of one
    /// position (the decode kernel, each row on its own: for short chunks, since the GEMM of two
    /// rows alone does not always give what it gives them among more).
    pub fn forward_packed(
        &self,
        embeds: &[Tensor],
        caches: &mut [&mut LlmCache],
        as_rows: bool,
    ) -> Result<Vec<Tensor>> {
        if embeds.is_empty() || embeds.len() != caches.len() || caches.iter().any(|c| c.padding.is_some()) {
            return Err(Error::InvalidInput("one unpadded cache per group".into()));
        }
        let mut groups = Vec::with_capacity(caches.len());
        for (c, e) in caches.iter_mut().zip(embeds) {
            let (b, s, _) = e.dims3()?;
            if b != c.batch_size() || c.len + s > c.capacity || c.len + s > self.cfg.max_position_embeddings {
                return Err(Error::InvalidInput(format!("{b} rows of {} positions exceed the cache", c.len + s)));
            }
            groups.push(Group::new(c, s, &self.rope, &embeds[0])?);
        }
        let step = Step { groups, singles: Vec::new(), layout: Layout::Packed { as_rows } };
        let x = step.join(embeds.to_vec())?;
        let dims: Vec<(usize, usize)> = step.groups.iter().map(|g| (g.rows, g.positions)).collect();
        unpack(&self.run(&x, step)?, &dims, as_rows)
    }

    /// Text logits (f32) for post-norm hidden states.
    pub fn lm_logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let head =
            self.lm_head.as_ref().ok_or(Error::PartNotLoaded("lm_head (it was loaded for image generation only)"))?;
        Ok(head.forward(hidden)?.to_dtype(DType::F32)?)
    }
}

/// The hidden state of the last position of each row, `[B, D]`.
pub fn last_position(hidden: &Tensor) -> Result<Tensor> {
    let s = hidden.dim(1)?;
    // Contiguous: CUDA matmuls need densely packed rows.
    Ok(hidden.narrow(1, s - 1, 1)?.squeeze(1)?.contiguous()?)
}
