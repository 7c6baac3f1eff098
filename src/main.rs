//! The `wspush` binary: parse the command line, set up logging, run.

use clap::Parser;
use wspush::cli::{Cli, Command};

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => wspush::serve(*args),
        other => wspush::client::run(other),
    };
    if let Err(message) = result {
        eprintln!("wspush: {message}");
        std::process::exit(1);
    }
}
