//! Files on disk → named tensors, in one name space whatever the format.
//!
//! | file | what |
//! | --- | --- |
//! | `hub.rs` | `--model` → files on disk: a local directory, or a hub id through the HF cache |
//! | `config/` | one internal config from either format's `config.json` |
//! | `checkpoint.rs` | safetensors, PyTorch pickles (single or sharded) and our `model.gguf`, read under the original names |
//! | `gguf.rs` | our `model.gguf`: reading it (`quantize.rs` at the top writes it) |
//! | `quant.rs` | `Quant`: how the linear layers are stored |

pub mod checkpoint;
pub mod config;
pub mod gguf;
pub mod hub;
pub mod quant;
