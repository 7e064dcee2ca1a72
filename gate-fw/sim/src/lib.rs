//! `gate-sim`: many simulated gate controllers, each running the firmware's own core
//! (`gate-core`) against the hub over a real transport (HTTP, raw TCP or MQTT), driven by
//! the real clock, reading cards at a fixed rate. The end of a run is one summary line
//! ([`Summary`]): requests, grants, denies by reason, offline decisions, timeouts, errors,
//! latency percentiles. Numbers are printed, never judged: there are no thresholds here.
//!
//! [`run`] is the whole program; `main.rs` only parses arguments and prints.

pub mod args;
pub mod gate;
pub mod gates_file;
pub mod report;
pub mod rng;
pub mod state;
pub mod transport;

pub use args::{Args, ConfigError, SimConfig, Transport};
pub use report::{GateReport, Summary};

use std::sync::Arc;

/// Why a run could not happen or finish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("a gate task failed: {0}")]
    Task(String),
}

/// Runs every gate of `config` to the end and sums their reports; persists the gates'
/// sequence numbers and allow-lists to the state file, if one is configured.
pub fn run(config: SimConfig) -> Result<Summary, RunError> {
    let mut saved = match &config.state {
        Some(p) => state::load(p)?,
        None => Default::default(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    let config = Arc::new(config);
    let started = std::time::Instant::now();
    let reports = runtime.block_on(async {
        let tasks: Vec<_> = config
            .gates
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let resume = saved.get(&g.id).cloned().unwrap_or_default();
                tokio::spawn(gate::run(i, g.clone(), Arc::clone(&config), resume))
            })
            .collect();
        let mut reports = Vec::with_capacity(tasks.len());
        for t in tasks {
            reports.push(t.await.map_err(|e| RunError::Task(e.to_string()))?);
        }
        Ok::<_, RunError>(reports)
    })?;
    let elapsed = started.elapsed();
    runtime.shutdown_background();
    let (reports, kept): (Vec<_>, Vec<_>) = reports.into_iter().unzip();
    if let Some(p) = &config.state {
        for (g, k) in config.gates.iter().zip(kept) {
            saved.insert(g.id, k);
        }
        state::save(p, &saved)?;
    }
    Ok(Summary::new(config.transport.name(), elapsed, reports))
}
