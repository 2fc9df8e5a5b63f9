//! The neural modules, each built with `load(vb, cfg)` from the checkpoint's names.
//!
//! | file | what |
//! | --- | --- |
//! | `linear.rs` | `Linear`: dense (with a CPU fast path for decode steps) or quantized |
//! | `linears.rs` | `Linears`: the linear layers `--quant` applies to, quantized while loading or taken as stored |
//! | `quant.rs` | `QWeight` (a quantized weight and its product), `quantize` |
//! | `llm.rs` | the LLaMA language model and its KV caches |
//! | `vision.rs` | the SigLIP encoder and its aligner (understanding) |
//! | `gen.rs` | the generation embedding, aligner and head |
//! | `vq.rs` | the VQ-16 decoder, and the blocks it shares with the encoder |
//! | `vq_encoder.rs` | the VQ-16 encoder and quantizer (image → codebook indices) |

pub mod gen;
pub mod linear;
pub mod linears;
pub mod llm;
pub mod quant;
pub mod vision;
pub mod vq;
pub mod vq_encoder;
