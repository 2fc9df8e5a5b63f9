//! One-token attention for many independent rows on the CPU (f32), in one call: row `r`'s
//! query against the first `len_r` positions of its own KV cache. It replaces, for a batched
//! text step, about fifteen small tensor ops per row and layer (views, copies, two tiny
//! matmuls, a softmax) whose fixed costs dominated the step (docs/PERF.md, "continuous
//! batching"). Scores and the softmax are in f32, as the tensor path computes them on the CPU.

use candle_core::{CpuStorage, Layout, Storage, Tensor};
use rayon::prelude::*;

use crate::error::{Error, Result};

/// The shape of the heads.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

/// Whether [`attend_rows`] takes these caches (f32 tensors on the CPU).
pub fn takes(q: &Tensor) -> bool {
    q.device().is_cpu() && q.dtype() == candle_core::DType::F32
}

/// One query row's keys and values: row `row` of cache `cache` (an index into the caches given
/// to [`attend_rows`]), positions `start..end` (a left-padded row starts after its padding, so
/// that it attends exactly as it would unpadded).
#[derive(Debug, Clone, Copy)]
pub struct RowSpan {
    pub cache: usize,
    pub row: usize,
    pub start: usize,
    pub end: usize,
}

/// `q` `[R, heads, head_dim]` (f32, CPU); `caches` = (keys, values), each `[B, kv_heads,
/// capacity, head_dim]` contiguous; query row `r` attends over `rows[r]`. Returns
/// `[R, heads · head_dim]`.
pub fn attend_rows(q: &Tensor, caches: &[(&Tensor, &Tensor)], rows: &[RowSpan], heads: Heads) -> Result<Tensor> {
    let Heads { num_heads: h, num_kv_heads: kvh, head_dim: d } = heads;
    let r = rows.len();
    let q = q.contiguous()?;
    let (q_storage, q_layout) = q.storage_and_layout();
    let qs = f32_data(&q_storage, q_layout)?;
    if qs.len() != r * h * d {
        return Err(Error::InvalidInput(format!("{} query values for {r} rows of {h} heads × {d}", qs.len())));
    }
    let group = h / kvh;
    let scale = 1.0 / (d as f32).sqrt();
    // One read guard per cache, then plain slices.
    let guards: Vec<_> = caches.iter().map(|(k, v)| (k.storage_and_layout(), v.storage_and_layout())).collect();
    let views = (guards.iter().zip(caches))
        .map(|(((ks, kl), (vs, vl)), (k, _))| Ok((f32_data(ks, kl)?, f32_data(vs, vl)?, k.dims4()?.2)))
        .collect::<Result<Vec<_>>>()?;
    if let Some(bad) = rows.iter().find(|s| s.cache >= views.len() || s.start > s.end || s.end > views[s.cache].2) {
        return Err(Error::InvalidInput(format!("attend_rows: {bad:?} is outside its cache")));
    }
    let mut out = vec![0f32; r * h * d];
    out.par_chunks_mut(d).enumerate().for_each(|(i, o)| {
        let (span, head) = (rows[i / h], i % h);
        let (k, v, cap) = views[span.cache];
        let base = ((span.row * kvh + head / group) * cap) * d;
        let qv = &qs[i * d..(i + 1) * d];
        let at = |j: usize| base + j * d..base + (j + 1) * d;
        let mut scores: Vec<f32> = (span.start..span.end).map(|j| dot(qv, &k[at(j)]) * scale).collect();
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        for (j, p) in (span.start..).zip(&scores) {
            let w = p / sum;
            for (o, x) in o.iter_mut().zip(&v[at(j)]) {
                *o += w * x;
            }
        }
    });
    drop(q_storage);
    Ok(Tensor::from_vec(out, (r, h * d), q.device())?)
}

/// A dot product in eight lanes (a plain `sum` is one sequential chain the compiler may not
/// vectorize).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The values of a contiguous f32 CPU tensor.
fn f32_data<'a>(storage: &'a Storage, layout: &Layout) -> Result<&'a [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F32(data)), Some((start, end))) => Ok(&data[start..end]),
        _ => Err(Error::InvalidInput("attend_rows takes contiguous f32 CPU tensors".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, IndexOp};

    /// The same attention with tensor ops, row by row.
    fn reference(q: &Tensor, caches: &[(&Tensor, &Tensor, usize)], heads: Heads) -> Tensor {
        let Heads { num_heads: h, num_kv_heads: kvh, head_dim: d } = heads;
        let rows: Vec<Tensor> = caches
            .iter()
            .enumerate()
            .map(|(r, (k, v, len))| {
                let q = q.i(r).unwrap().reshape((h, 1, d)).unwrap();
                let rep = |t: &Tensor| {
                    let t = t.i(0).unwrap().narrow(1, 0, *len).unwrap(); // [kvh, len, d]
                    let t = t.unsqueeze(1).unwrap().broadcast_as((kvh, h / kvh, *len, d)).unwrap();
                    t.reshape((h, *len, d)).unwrap()
                };
                let (k, v) = (rep(k), rep(v));
                let s = (q.matmul(&k.t().unwrap()).unwrap() / (d as f64).sqrt()).unwrap();
                let p = candle_nn::ops::softmax_last_dim(&s).unwrap();
                p.matmul(&v).unwrap().reshape((1, h * d)).unwrap()
            })
            .collect();
        Tensor::cat(&rows, 0).unwrap()
    }

    #[test]
    fn matches_tensor_attention_for_rows_of_different_lengths() {
        let dev = Device::Cpu;
        for heads in [
            Heads { num_heads: 4, num_kv_heads: 4, head_dim: 8 },
            Heads { num_heads: 4, num_kv_heads: 2, head_dim: 16 },
        ] {
            let lens = [1usize, 5, 17, 3];
            let cap = 20;
            let kv: Vec<(Tensor, Tensor)> = lens
                .iter()
                .map(|_| {
                    let shape = (1, heads.num_kv_heads, cap, heads.head_dim);
                    (Tensor::randn(0f32, 1.0, shape, &dev).unwrap(), Tensor::randn(0f32, 1.0, shape, &dev).unwrap())
                })
                .collect();
            let caches: Vec<_> = kv.iter().zip(lens).map(|((k, v), len)| (k, v, len)).collect();
            let q = Tensor::randn(0f32, 1.0, (lens.len(), heads.num_heads, heads.head_dim), &dev).unwrap();
            let tensors: Vec<(&Tensor, &Tensor)> = kv.iter().map(|(k, v)| (k, v)).collect();
            let spans: Vec<RowSpan> =
                lens.iter().enumerate().map(|(c, &len)| RowSpan { cache: c, row: 0, start: 0, end: len }).collect();
            let ours = attend_rows(&q, &tensors, &spans, heads).unwrap();
            let want = reference(&q, &caches, heads);
            let diff = (ours - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-5, "{diff}");
        }
    }
}
