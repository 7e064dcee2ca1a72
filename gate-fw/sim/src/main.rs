//! `gate-sim`: see the library ([`gate_sim`]) and `gate-sim --help`.
//!
//!     gate-sim --transport tcp --hub 127.0.0.1:7300 --gates gates.toml \
//!         --card 04a1b2c3 --card 0badcafe --requests 50 --rate 20 --state sim-state.json
//!
//! With `--warmup` a `window` line follows the summary line: the figures of the
//! `--duration` after the warm-up alone. With `--json-summary` the same figures follow as
//! one JSON object on its own line (`make bench-access` reads that one).
//!
//! Exit status: 0 after a run (whatever it measured), 2 for a configuration error
//! (arguments, gates file, state file), 1 if the run could not happen.

use clap::Parser;
use gate_sim::args::Length;
use gate_sim::{Args, RunError, SimConfig};
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let args = Args::parse();
    let json = args.json_summary;
    let config = match SimConfig::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gate-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let offered = config.offered_per_s;
    let load = match config.length {
        Length::Duration(d) => Some(d),
        Length::Requests(_) => None,
    };
    let window = config.window();
    let started = Instant::now();
    match gate_sim::run(config) {
        Ok(summary) => {
            println!("{summary}");
            let window = window.map(|(skip, len)| summary.window(started, skip, len));
            if let Some(w) = &window {
                println!("{w}");
            }
            if json {
                println!("{}", summary.json(offered, load, window.as_ref()));
            }
            ExitCode::SUCCESS
        }
        Err(RunError::Config(e)) => {
            eprintln!("gate-sim: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("gate-sim: {e}");
            ExitCode::FAILURE
        }
    }
}
