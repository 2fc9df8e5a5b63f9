//! `janus`: run Janus-Pro from the command line, or serve it over HTTP (`janus serve`).

use clap::Parser;
use janus_server::cli;

/// jemalloc keeps freed pages for reuse: the VQ decoder's activations (tens of MiB each) would
/// otherwise come fresh from the kernel, zero-filled, at every convolution (glibc serves
/// allocations above 32 MiB with mmap).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let args = cli::Cli::parse();
    cli::init_logging(args.log_filter(), args.log_format);
    if let Err(e) = cli::run(args) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
