//! `janus bench`: speed and memory numbers for docs/PERF.md (never asserted in tests).
//!
//! | file | what |
//! | --- | --- |
//! | `args.rs` | [`BenchArgs`], the flags |
//! | `images.rs` | one batch of images timed step by step, per quantization (and their quality); the serving engine's image batching (`--requests`) |
//! | `chat.rs` | chat answers through the serving engine together, one by one, and beside images (`--chat-requests`) |

pub mod args;
mod chat;
mod images;

use anyhow::Result;

pub use args::BenchArgs;

/// Runs the bench the flags ask for.
pub fn run(a: BenchArgs) -> Result<()> {
    if let Some(r) = a.requests {
        return images::run_engine_batching(&a, r);
    }
    if let Some(r) = a.chat_requests {
        return chat::run(&a, r);
    }
    images::run(a)
}
