//! `gate-sim`: see the library ([`gate_sim`]) and `gate-sim --help`.
//!
//!     gate-sim --transport tcp --hub 127.0.0.1:7300 --gates gates.toml \
//!         --card 04a1b2c3 --card 0badcafe --requests 50 --rate 20 --state sim-state.json
//!
//! Exit status: 0 after a run (whatever it measured), 2 for a configuration error
//! (arguments, gates file, state file), 1 if the run could not happen.

use clap::Parser;
use gate_sim::{Args, RunError, SimConfig};
use std::process::ExitCode;

fn main() -> ExitCode {
    let config = match SimConfig::from_args(Args::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gate-sim: {e}");
            return ExitCode::from(2);
        }
    };
    match gate_sim::run(config) {
        Ok(summary) => {
            println!("{summary}");
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
