//! `lora-sim`: see the library ([`lora_sim`]) and `lora-sim --help`.
//!
//!     lora-sim --sensors sensors.toml --air 127.0.0.1:7700 --duration 30 \
//!         --alarm-every 20 --silence door-7@5 --replay door-3 --forge door-4 \
//!         --json-summary summary.json
//!
//! Prints one `summary key=value ...` line at the end.
//!
//! Exit status: 0 after a run (whatever it measured), 2 for a configuration error
//! (arguments, provisioning file), 1 if the run could not happen.

use clap::Parser;
use lora_sim::{Args, SimConfig};
use std::process::ExitCode;

fn main() -> ExitCode {
    let config = match SimConfig::from_args(Args::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lora-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let json = config.json_summary.clone();
    match lora_sim::run(config) {
        Ok(summary) => {
            println!("{summary}");
            if let Some(path) = json {
                if let Err(e) = std::fs::write(&path, summary.json()) {
                    eprintln!(
                        "lora-sim: cannot write the JSON summary to {}: {e}",
                        path.display()
                    );
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lora-sim: {e}");
            ExitCode::FAILURE
        }
    }
}
