//! `janus`: run Janus-Pro from the command line, or serve it over HTTP (`janus serve`).

use clap::Parser;
use janus_server::cli;

fn main() {
    let args = cli::Cli::parse();
    cli::init_logging(args.log_filter(), args.log_format);
    if let Err(e) = cli::run(args) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
