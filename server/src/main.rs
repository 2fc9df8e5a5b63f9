//! `janus`: run Janus-Pro from the command line (and, later, serve it over HTTP).

mod bench;
mod engine;
mod cli;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    cli::init_logging(&args.log);
    if let Err(e) = cli::run(args) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
