//! Janus-Pro inference on candle. The folders are the layers, and depend one way: the jobs
//! (`generate`, `text`) on the loaded model (`model`), the model on its `modules`, the modules
//! on `load` (checkpoints) and `kernels` (CPU kernels); `input` (tokenizer, images) and
//! `sampling` stand beside them. `scripts/module-cycles.py` checks that no files import each other
//! in a circle.
//!
//! | path | what |
//! | --- | --- |
//! | `error.rs`, `limits.rs`, `device.rs`, `request.rs` | typed errors; every limit and default; devices and dtypes; what a caller asks, validated |
//! | `load/` | files on disk → named tensors: [`load::hub::ModelFiles`], [`load::config::JanusConfig`], [`load::checkpoint::Checkpoint`] (safetensors, pickles, our GGUF) |
//! | `kernels/` | the CPU kernels: attention rows, convolutions, dot products, quantized products |
//! | `modules/` | the neural modules: the language model, SigLIP, the VQ decoder, the generation heads, linear and quantized layers |
//! | `input/` | the tokenizer, image decoding and preprocessing, pixels out |
//! | `sampling/` | CFG, temperature, top-k/top-p and the draws, on the host and on the device |
//! | `model.rs` | [`Janus`]: one loaded model |
//! | `generate.rs` | text-to-image, step by step ([`T2iBatch`]) |
//! | `text/` | image understanding: the conversation and its template, preparation ([`text::prompt::Prompter`]), the session, batched steps, steps shared with images, the prefix cache |
//! | `quality.rs`, `quantize.rs` | teacher-forced traces and their divergence; `janus quantize` |
//! | `membw.rs` | the machine's memory read bandwidth, for the floor a CPU step is measured against |

#![deny(unsafe_op_in_unsafe_fn)]

pub mod device;
pub mod edit;
pub mod error;
pub mod generate;
pub mod input;
pub mod kernels;
pub mod limits;
pub mod load;
pub mod membw;
pub mod model;
pub mod modules;
pub mod quality;
pub mod quantize;
pub mod request;
pub mod sampling;
pub mod text;

pub use device::{memory_in_use, parse_dtype, select_device};
pub use error::{Error, Field, Invalid, Result};
pub use generate::{ImageJob, T2iBatch};
pub use load::config::{CheckpointFormat, JanusConfig};
pub use load::hub::{ModelFiles, DEFAULT_MODEL};
pub use load::quant::Quant;
pub use model::{Janus, LoadOptions, Parts};
pub use request::{ImageAsk, ImageRequest, TextAsk, TextParams};
pub use sampling::SamplingParams;
pub use text::conversation::{Conversation, Message, Part, Role};
pub use text::prompt::{PreparedImage, PreparedPrompt, PromptTokens, Prompter, TextRequest};
pub use text::session::{FinishReason, TextOutput, TextSession};

pub use candle_core::{DType, Device, Tensor};
