//! The CPU kernels: plain functions over slices and candle custom ops, no model types.
//!
//! | file | what |
//! | --- | --- |
//! | `attention.rs` | one-token attention of many rows, each against its own KV cache |
//! | `conv.rs` | the VQ decoder's convolutions and GroupNorm |
//! | `dot.rs` | the f32 decode-step product: dot products along f32 or bf16 weight rows |
//! | `packed.rs` | the row-interleaved layout of q4k and q8_0 weights those kernels stream |
//! | `quant.rs` | packed quantized weights × f32 rows with AVX-512 VNNI (q4k, q8_0) |

pub mod attention;
pub mod conv;
pub mod dot;
pub mod packed;
pub mod quant;

/// Whether a kernel test skips because this CPU lacks `feature` (`present` is false): it says so
/// on stderr (`SKIP <test>: this CPU lacks <feature>`), past the test harness's capture so that
/// the line shows in a passing run. Panics instead when `JANUS_CPU_FEATURES` (comma-separated,
/// std's names: `avx2,fma,f16c,avx512f,avx512bw,avx512vnni`; `.ci/run` sets it from
/// /proc/cpuinfo) names the feature: there the CPU has it, so the kernel test must run.
#[cfg(test)]
pub(crate) fn skip_without(feature: &str, present: bool) -> bool {
    use std::io::Write;

    if present {
        return false;
    }
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a kernel test");
    let listed = std::env::var("JANUS_CPU_FEATURES").unwrap_or_default();
    if listed.split(',').any(|f| f.trim() == feature) {
        panic!("{test}: JANUS_CPU_FEATURES lists {feature}, but the test found it missing and would have skipped");
    }
    // Not `eprintln!`: the harness captures that and shows it only for failing tests.
    let _ = writeln!(std::io::stderr(), "SKIP {test}: this CPU lacks {feature}");
    true
}
