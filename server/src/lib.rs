//! The `janus-server` library behind the `janus` binary: the command line ([`cli`]), the
//! serving engine ([`engine`]), the admission stage in front of it ([`admission`]) and the
//! OpenAI-compatible HTTP service ([`http`]). `main.rs` is a thin caller; the library exists so
//! that integration tests and the fuzz targets (`server/fuzz/`) call the same parsing and
//! validation code as the running server.

pub mod admission;
pub mod bench;
pub mod cli;
pub mod engine;
pub mod engine_args;
pub mod fuzz;
pub mod http;
pub mod rss;
