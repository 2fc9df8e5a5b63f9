//! The quantized decode-step kernels against the memory floor (issue 28): `m` rows (2 = one CFG
//! image) times weights of the 1B's shapes, spread over more memory than any cache holds, so each
//! product streams its weight from memory as a real step does. Prints, per kernel and row count,
//! the bytes read per second and the ratio to the floor of the bandwidth probed just before and
//! just after (`janus::membw`). Numbers go to docs/PERF.md; nothing is asserted.
//!
//! `cargo bench -p janus-model --bench kernels` (`JANUS_KERNEL_BENCH_ROWS=1,2,4`,
//! `JANUS_KERNEL_BENCH_MIB=512` to change the rows or the bytes of weights).

use std::time::Instant;

use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};
use janus::kernels::packed::Packing;
use janus::kernels::quant::{available, matmul};
use janus::membw;

/// The 1B's decode-step weight shapes `(n, k)`: fused QKV, O, fused gate/up, down.
const SHAPES: [(usize, usize); 4] = [(6144, 2048), (2048, 2048), (11264, 2048), (2048, 5632)];
/// Passes over all the weights per measurement; the best is kept.
const PASSES: usize = 5;

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(|v| v.trim().parse().unwrap_or_else(|_| panic!("{name}: {v:?} is not a number")))
        .collect()
}

/// Copies of the four shapes' packed blocks until they hold `bytes` (the values matter little to
/// the speed: one random weight per shape, copied so that no two products share cache lines).
fn weights(packing: Packing, bytes: usize) -> Vec<(usize, usize, Vec<u8>)> {
    let dev = Device::Cpu;
    let once: Vec<_> = SHAPES
        .iter()
        .map(|&(n, k)| {
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev).expect("randn");
            let q = QTensor::quantize(&w, packing.dtype()).expect("quantize");
            (n, k, packing.pack(&q.data().expect("data"), n, k))
        })
        .collect();
    let mut out = Vec::new();
    let mut held = 0;
    while held < bytes {
        for (n, k, d) in &once {
            held += d.len();
            out.push((*n, *k, d.clone()));
        }
    }
    out
}

fn main() {
    let rows = env_list("JANUS_KERNEL_BENCH_ROWS", "1,2,4,16");
    let mib = env_list("JANUS_KERNEL_BENCH_MIB", "512")[0];
    assert!(available(), "the kernels need AVX-512 VNNI: nothing to measure on this CPU");
    println!("| kernel | rows | weights MB | best pass ms | GB/s read | probe GB/s (before / after) | × floor |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for packing in [Packing::Q4K, Packing::Q8_0] {
        let ws = weights(packing, mib << 20);
        let bytes: usize = ws.iter().map(|w| w.2.len()).sum();
        for &m in &rows {
            let xs: Vec<Vec<f32>> = [2048, 5632]
                .iter()
                .map(|&k| Tensor::randn(0f32, 1.0, m * k, &Device::Cpu).and_then(|t| t.to_vec1()).expect("x"))
                .collect();
            let x_for = |k: usize| if k == 2048 { &xs[0] } else { &xs[1] };
            let before = membw::probe();
            let mut best = f64::MAX;
            for _ in 0..PASSES {
                let t = Instant::now();
                for (n, k, d) in &ws {
                    std::hint::black_box(matmul(packing, x_for(*k), m, *k, *n, d));
                }
                best = best.min(t.elapsed().as_secs_f64());
            }
            let after = membw::probe();
            let floor = membw::floor_ms(bytes, (before + after) / 2.0);
            println!(
                "| {packing:?} | {m} | {:.0} | {:.1} | {:.1} | {before:.1} / {after:.1} | {:.2} |",
                bytes as f64 / 1e6,
                best * 1e3,
                bytes as f64 / best / 1e9,
                best * 1e3 / floor
            );
        }
    }
}
