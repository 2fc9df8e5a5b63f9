//! `janus`: run Janus-Pro from the command line, or serve it over HTTP (`janus serve`).

use clap::Parser as _;
use janus_server::cli;

fn main() {
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        // --help and --version print and exit 0
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            // one line, as every other failure: clap's message without its usage block
            let text = e.render().to_string();
            let lines = text.lines().take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"));
            let msg = lines.map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ");
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    cli::init_logging(args.log_filter(), args.log_format);
    if let Err(e) = cli::run(args) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
