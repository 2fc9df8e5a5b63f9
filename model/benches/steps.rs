//! Criterion benches of the three hot paths on the tiny checkpoint (CPU, f32): one text-to-image
//! decode step for a CFG batch, one VQ decode, one SigLIP encode. Numbers go to docs/PERF.md;
//! for full-size timings use `janus bench`.
//!
//! `cargo bench -p janus-model` (or `JANUS_BENCH_MODEL=/path/to/model` for another model).

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use janus::{DType, Device, Janus, LoadOptions, ModelFiles, SamplingParams, T2iBatch, Tensor};

fn model() -> Janus {
    let dir = std::env::var("JANUS_BENCH_MODEL")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/tiny/janus-pro-tiny").to_string());
    let files = ModelFiles::from_dir(std::path::Path::new(&dir), &dir).expect("model files");
    Janus::load(&files, &LoadOptions::for_device(Device::Cpu)).expect("model")
}

fn benches(c: &mut Criterion) {
    let m = model();
    let n_tok = m.num_image_tokens();

    c.bench_function("t2i decode step (4 images, CFG)", |b| {
        let jobs = m.t2i_jobs("a photo of a cat", 4, 0, SamplingParams::default()).unwrap();
        // A batch past its prompt; making and prefilling the next one is not timed.
        let prefilled = || {
            let mut batch = T2iBatch::new(&m, jobs.clone()).unwrap();
            batch.step().unwrap();
            batch
        };
        let mut batch = prefilled();
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                if batch.is_done() {
                    batch = prefilled();
                }
                let t = Instant::now();
                std::hint::black_box(batch.step().unwrap());
                timed += t.elapsed();
            }
            timed
        })
    });

    let tokens =
        Tensor::from_vec((0..n_tok as u32).map(|i| i % 7).collect::<Vec<_>>(), (1, n_tok), &Device::Cpu).unwrap();
    c.bench_function("VQ decode (1 image)", |b| b.iter(|| m.decode_raw(&tokens).unwrap()));

    let s = m.image_size();
    let pixels = Tensor::zeros((1, 3, s, s), DType::F32, &Device::Cpu).unwrap();
    c.bench_function("SigLIP encode + aligner (1 image)", |b| b.iter(|| m.encode_images(&pixels).unwrap()));
}

criterion_group!(steps, benches);
criterion_main!(steps);
