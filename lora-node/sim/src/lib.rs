//! `lora-sim`: many simulated LoRa sensor nodes, each running the node firmware's own
//! core (`lora-node-core`) over the simulated air (`gatehouse_lora_proto::air`, the same
//! one the forwarder's `SimRadio` uses), driven by the real clock. One thread per node
//! (a node sleeps most of the time; 200 threads are cheap). The end of a run is a
//! [`Summary`]: per node, alarms sent / acknowledged / given up, frames, airtime, reports,
//! heartbeats. Numbers are reported, never judged.
//!
//! Besides its scripted sensor inputs ([`node`]) a run can silence nodes (`--silence`:
//! the node stops, as if its battery were pulled, so the hub's supervision must notice),
//! replay an acknowledged frame of a node verbatim (`--replay`: the hub must refuse its old
//! counter) and send frames with a node's address but a wrong key (`--forge`: the hub
//! must refuse the MIC).
//!
//! [`run`] is the whole program; `main.rs` only parses arguments and prints.

pub mod args;
pub mod node;
pub mod provisioning;
pub mod rng;
pub mod summary;

pub use args::{Args, ConfigError, SimConfig};
pub use summary::{NodeReport, Summary};

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

/// Why a run could not happen or finish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Node(#[from] node::NodeError),
    #[error("cannot start a node thread: {0}")]
    Thread(std::io::Error),
    #[error("a node thread failed: {0}")]
    Panicked(String),
}

/// Runs every node of `config` to the end and gathers their reports. If one node fails
/// (the air is unreachable), the others are stopped and the first error is returned.
pub fn run(config: SimConfig) -> Result<Summary, RunError> {
    let config = Arc::new(config);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut threads = Vec::with_capacity(config.sensors.len());
    for (i, spec) in config.sensors.iter().enumerate() {
        let extras = node::Extras {
            silence_after: config.silence.iter().find(|s| s.node == i).map(|s| s.at),
            replay_at: config
                .replay
                .iter()
                .filter(|s| s.node == i)
                .map(|s| s.at)
                .collect(),
            forge_at: config
                .forge
                .iter()
                .filter(|s| s.node == i)
                .map(|s| s.at)
                .collect(),
        };
        let (spec, cfg, node_stop) = (spec.clone(), Arc::clone(&config), Arc::clone(&stop));
        let t = std::thread::Builder::new()
            .name(format!("node-{i}"))
            .stack_size(256 * 1024)
            .spawn(move || {
                let r = node::run(i, spec, &cfg, extras, started, &node_stop);
                if r.is_err() {
                    node_stop.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                r
            });
        match t {
            Ok(t) => threads.push(t),
            Err(e) => {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                for t in threads {
                    let _ = t.join();
                }
                return Err(RunError::Thread(e));
            }
        }
    }
    let mut reports = Vec::with_capacity(threads.len());
    let mut first_err = None;
    for t in threads {
        match t.join() {
            Ok(Ok(r)) => reports.push(r),
            Ok(Err(e)) => {
                first_err.get_or_insert(RunError::Node(e));
            }
            Err(_) => {
                first_err.get_or_insert(RunError::Panicked("a node thread panicked".into()));
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    Ok(Summary::new(started.elapsed(), reports))
}
