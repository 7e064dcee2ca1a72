//! `gatehouse-bench-access`: the seeding half of `make bench-access` (the driving half is
//! gate-sim, the script is `scripts/bench-access.sh`).
//!
//!     gatehouse-bench-access seed --data-dir D --out O --gates 100 --cards 100000 --log-rows 1000000
//!     gatehouse-bench-access log-count --data-dir D
//!
//! `seed` fills a hub's data directory through the store's own API (the same calls the
//! `gatehouse` CLI makes, and [`gatehouse_store::bulk`] for the cards, whose one-by-one
//! enrolment would cost one fsync each) and writes what gate-sim reads into `--out`:
//! `gates.toml` (id, secret, allow-list key, MQTT user and password per gate),
//! `cards.txt` (the enrolled cards' raw ids, hex, one per line) and `sim-state.json` (each
//! gate's last sequence number used in the synthetic log, for gate-sim's `--state`).
//! `log-count` prints the number of access-log rows, read while the hub runs.

mod seed;

use anyhow::{Context, Result};
use clap::{ArgGroup, Args, Parser, Subcommand};
use gatehouse_config::Config;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "gatehouse-bench-access", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create gates, one level opening all of them always, people with one card each, and
    /// synthetic access-log rows; write the gate-sim files.
    Seed(seed::SeedArgs),
    /// Print the number of rows in the access log.
    LogCount(DataDir),
}

/// Which hub: its data directory, or a config file naming it (`general.data_dir`).
#[derive(Args, Clone)]
#[command(group(ArgGroup::new("hub_data").required(true).args(["data_dir", "config"])))]
pub struct DataDir {
    /// The hub's data directory.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The hub's configuration file; its general.data_dir is used.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

impl DataDir {
    fn resolve(&self) -> Result<PathBuf> {
        match (&self.data_dir, &self.config) {
            (Some(d), _) => Ok(d.clone()),
            (None, Some(c)) => Ok(Config::load(c)?.general.data_dir),
            (None, None) => anyhow::bail!("give --data-dir or --config"),
        }
    }
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("gatehouse-bench-access: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Seed(args) => {
            let data_dir = args.hub.resolve()?;
            seed::run(&data_dir, &args)
        }
        Command::LogCount(d) => {
            let data_dir = d.resolve()?;
            let store = gatehouse_store::Store::open(&data_dir)
                .with_context(|| format!("cannot open the database in {}", data_dir.display()))?;
            println!("{}", store.log_count()?);
            Ok(())
        }
    }
}
