//! `geneval generate`: images for the GenEval prompts, in the folder layout the official
//! evaluator reads (`docs/geneval-rules.md` §1.3):
//!
//! ```text
//! <out>/run.json                  this tool's run manifest (settings, times)
//! <out>/00000/metadata.jsonl      the prompt's JSON object, exactly as the official
//!                                 generator writes it (`json.dump`: the source line, no newline)
//! <out>/00000/samples/0000.png    sample 0, 1, ... (the evaluator takes `\d+\.png`)
//! ...
//! <out>/00552/...
//! ```
//!
//! `dpg generate`: DPG-Bench's layout (`docs/geneval-rules.md` §2.2, TencentQQGYLab/ELLA
//! `dpg_bench/compute_dpg_bench.py`): one `<out>/<item_id>.png` per prompt holding the 4 samples
//! as a 2×2 grid of equal tiles, row-major (sample 0 top left, 1 top right, 2 bottom left,
//! 3 bottom right), each tile at the model's own resolution; with `--samples 1` the image itself.
//!
//! Both share one runner ([`generate_items`]): resumable (a finished prompt is skipped), `run.json`
//! manifest, progress bar, prompts in flight at once. Files are written to a temporary name and
//! renamed, so an interrupted run never leaves a truncated PNG under a final name.
//!
//! Backends: [`InProcess`] (a loaded Janus model) and [`Endpoint`] (any OpenAI-compatible
//! `POST /v1/images/generations`, following OpenAI's Images API reference: `n`, `response_format`,
//! `b64_json` or `url` answers, the `{"error": {"message", "type", "param", "code"}}` envelope,
//! parsed into [`ApiError`]). Endpoint quirks handled, decided by the envelope's `param`: servers
//! that accept only `n=1` (DALL·E 3), servers that refuse `response_format` (gpt-image-1); and
//! `url` answers; the served model is recorded in `run.json`.
//!
//! Scale-out: [`Endpoint`] takes several endpoints (replicas), spreads requests over them and
//! retries failures elsewhere ([`EndpointError`], [`RetryPolicy`]); [`Shard`] splits the prompts
//! between processes (`--shard I/N`, an Indexed Job), which write into one folder and one
//! `run.json` (a session each).
//!
//! Files: `layout` (the two layouts, [`Item`]), `runner` (the shared runner and its `run.json`),
//! `shard` ([`Shard`]), `backend` ([`ImageBackend`] and the seed policy), `in_process` and
//! `endpoint` (the two backends), `util` (atomic writes, progress bar, time).

mod backend;
mod endpoint;
mod in_process;
mod layout;
mod runner;
mod shard;
mod util;

pub use backend::{sample_seed, ImageBackend};
pub use endpoint::{ApiError, Endpoint, EndpointError, Param, RetryPolicy};
pub use in_process::InProcess;
pub use layout::{dpg_file_name, folder_done, grid, metadata_bytes, sample_name, Item};
pub use runner::{generate_dpg, generate_geneval, generate_items, Benchmark, GenerateOptions, RunReport, DPG, GENEVAL};
pub use shard::{Shard, ShardError};
pub(crate) use util::{now, progress_bar, write_atomic};
