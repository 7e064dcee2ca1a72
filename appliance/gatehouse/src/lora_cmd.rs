//! `gatehouse lora`: the LoRa packet forwarder ([lora] in the configuration), and
//! `gatehouse lora air`: the simulated air radios meet on in development and tests.

use crate::signals;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use gatehouse_config::{Config, LoraMode};
use gatehouse_lora_proto::air::{Air, AirConfig, AirError, AirHandle};
use std::net::SocketAddr;
use tokio::sync::watch;

#[derive(Args)]
pub struct LoraArgs {
    #[command(subcommand)]
    command: Option<LoraCommand>,
}

#[derive(Subcommand)]
enum LoraCommand {
    /// Run the simulated air: radios (the forwarder with lora.mode = "sim", simulated
    /// nodes) exchange frames through it over UDP, with collisions, half duplex and
    /// random loss. Prints its statistics when stopped (SIGINT/SIGTERM).
    Air {
        /// UDP address to listen on.
        #[arg(long, default_value = "127.0.0.1:7301")]
        listen: SocketAddr,
        /// Fraction of receptions lost at random (0.0 to 1.0).
        #[arg(long, default_value_t = 0.0)]
        loss: f64,
        /// Seed of the loss: the same seed and traffic lose the same frames.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

/// `gatehouse lora [air ...]`. `load` reads the configuration (the air needs none).
pub fn run(args: &LoraArgs, load: impl FnOnce() -> Result<Config>, log_json: bool) -> Result<()> {
    match &args.command {
        Some(LoraCommand::Air { listen, loss, seed }) => {
            crate::init_logging(log_json);
            run_air(*listen, *loss, *seed)
        }
        None => {
            let config = load()?;
            crate::init_logging(
                log_json || config.general.log_format == gatehouse_config::LogFormat::Json,
            );
            if config.lora.mode == LoraMode::Off {
                anyhow::bail!(
                    "lora.mode is \"off\" in the configuration; set it to \"sim\" or \"sx1262\" under [lora] to run the forwarder"
                );
            }
            crate::sd_notify::register("lora");
            run_forwarder(&config, None)
        }
    }
}

fn run_air(listen: SocketAddr, loss: f64, seed: u64) -> Result<()> {
    let air = Air::start(AirConfig {
        loss,
        seed,
        bind: listen,
    })
    .with_context(|| format!("cannot start the LoRa air on {listen}"))?;
    eprintln!(
        "gatehouse: LoRa air listening on {} (loss {loss}, seed {seed})",
        air.addr()
    );
    while let signals::Event::Reload = signals::wait()? {}
    let s = air.stats();
    eprintln!(
        "gatehouse: LoRa air stopped: {} transmissions, {} delivered, {} collided, {} lost, {} missed while transmitting",
        s.transmissions, s.delivered, s.collided, s.lost, s.deaf
    );
    Ok(())
}

/// Runs the forwarder until the process is asked to stop. `broker`: the hub's embedded
/// broker when `gatehouse up` knows it.
pub fn run_forwarder(config: &Config, broker: Option<SocketAddr>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            signals::stopped().await;
            crate::sd_notify::stopping();
            let _ = stop_tx.send(true);
        });
        // Proves the forwarder's runtime alive to systemd (a no-op under `gatehouse up`,
        // where "lora" is not registered).
        tokio::spawn(crate::sd_notify::prove_lora());
        gatehouse_lora::run(config, broker, stop_rx).await
    })?;
    tracing::info!("LoRa forwarder stopped");
    Ok(())
}

/// For `gatehouse up` with lora.mode = "sim": an air on lora.air, unless something already
/// listens there (an air started by hand or by the node simulator), then `None`.
pub fn ensure_air(config: &Config) -> Result<Option<AirHandle>> {
    if config.lora.mode != LoraMode::Sim {
        return Ok(None);
    }
    match Air::start(AirConfig {
        bind: config.lora.air,
        ..AirConfig::default()
    }) {
        Ok(air) => {
            tracing::info!(addr = %air.addr(), "LoRa air started");
            Ok(Some(air))
        }
        Err(AirError::Io(e)) if e.kind() == std::io::ErrorKind::AddrInUse => {
            tracing::info!(addr = %config.lora.air, "using the LoRa air already listening");
            Ok(None)
        }
        Err(e) => Err(e).with_context(|| {
            format!(
                "cannot start the LoRa air on {} (lora.air)",
                config.lora.air
            )
        }),
    }
}
