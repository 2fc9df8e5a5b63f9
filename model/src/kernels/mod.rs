//! The CPU kernels: plain functions over slices and candle custom ops, no model types.
//!
//! | file | what |
//! | --- | --- |
//! | `attention.rs` | one-token attention of many rows, each against its own KV cache |
//! | `conv.rs` | the VQ decoder's convolutions and GroupNorm |
//! | `quant.rs` | quantized weights × f32 rows with AVX-512 VNNI (q4k, q8_0) |

pub mod attention;
pub mod conv;
pub mod dot;
pub mod quant;
