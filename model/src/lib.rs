//! Janus-Pro inference on candle.
//!
//! - [`hub::ModelFiles`]: a model directory or hub id → files on disk.
//! - [`config::JanusConfig`]: `config.json` in the original or transformers format.
//! - [`weights::Checkpoint`]: safetensors / PyTorch pickles, both naming schemes, one name space.
//! - [`model::Janus`]: the loaded model; [`generate::T2iBatch`] runs text-to-image step by step;
//!   [`Janus::answer`] answers a [`Conversation`] with images (understanding).
//! - [`prompt::Prompter`]: requests tokenized and their images preprocessed without the weights.

pub mod attention_cpu;
pub mod config;
pub mod conversation;
pub mod device;
pub mod error;
pub mod gen;
pub mod generate;
pub mod gguf;
pub mod hub;
pub mod image;
pub mod limits;
pub mod llm;
pub mod model;
pub mod nn;
pub mod prefix_cache;
pub mod preprocess;
pub mod prompt;
pub mod quality;
pub mod quant;
pub mod quant_cpu;
pub mod request;
pub mod sampling;
pub mod shared_step;
pub mod text_batch;
pub mod tokenizer;
pub mod understand;
pub mod vision;
pub mod vq;
pub mod vq_cpu;
pub mod weights;

pub use config::{CheckpointFormat, JanusConfig};
pub use conversation::{Conversation, Message, Part, Role};
pub use device::{memory_in_use, parse_dtype, select_device};
pub use error::{Error, Field, Invalid, Result};
pub use generate::{ImageJob, T2iBatch};
pub use hub::{ModelFiles, DEFAULT_MODEL};
pub use model::{Janus, LoadOptions, Parts};
pub use prompt::{PreparedImage, PreparedPrompt, PromptTokens, Prompter, TextRequest};
pub use quant::Quant;
pub use request::{ImageAsk, ImageRequest, TextAsk};
pub use sampling::SamplingParams;
pub use understand::{FinishReason, TextOutput, TextParams, TextSession};

pub use candle_core::{DType, Device, Tensor};
