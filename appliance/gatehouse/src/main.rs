//! `gatehouse`: one binary, a subcommand per service (busybox style). Each subcommand
//! parses its arguments, loads the configuration and calls into a library crate.

mod access_cmd;
mod admin_cmd;
mod alerts_cmd;
mod console_cmd;
mod lora_cmd;
mod peer_cmd;
mod sd_notify;
mod sensor_cmd;
mod signals;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use gatehouse_config::{Config, LogFormat};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "Gatehouse site-security gateway: WireGuard access for remote admins, gate access control, alerts",
    long_about = None
)]
struct Cli {
    /// Configuration file (TOML); every key is documented in config/gatehouse.toml.
    #[arg(
        long,
        short,
        global = true,
        env = "GATEHOUSE_CONFIG",
        default_value = "/etc/gatehouse/gatehouse.toml"
    )]
    config: PathBuf,
    /// Log JSON objects instead of plain lines.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every service in one process tree (development and demos): tunnel, hub, and the
    /// LoRa forwarder when lora.mode is not "off" (with mode "sim", also an air on lora.air
    /// unless one already listens there).
    Up,
    /// Run the WireGuard endpoint configured by [tunnel] and the peer store (the box's
    /// `gatehouse-tunnel` unit). SIGHUP reloads the peer store.
    Tunnel,
    /// Run the hub: the console and JSON API on hub.https_listen (and hub.http_listen),
    /// the gates' transports and the events pipeline. Prints the console's address and
    /// certificate fingerprint on stderr, and an enrolment token while no admin exists.
    Hub,
    /// Run the LoRa packet forwarder configured by [lora] (the box's `gatehouse-lora`
    /// unit): frames from the radio to the hub over MQTT, the hub's downlinks back, inside
    /// the EU868 duty cycle. `gatehouse lora air` runs the simulated air instead.
    Lora(lora_cmd::LoraArgs),
    /// Print the console's address(es) and its certificate's SHA-256 fingerprint (makes
    /// the certificate if it is missing), and whether the first admin may still enrol.
    Console,
    /// A WireGuard userspace implementation driven by `wg` and wg-quick exactly like
    /// wireguard-go: creates the TUN device IFNAME, serves /var/run/wireguard/IFNAME.sock,
    /// and goes to the background unless -f or WG_PROCESS_FOREGROUND=1.
    Wg {
        /// Stay in the foreground.
        #[arg(short = 'f', long = "foreground")]
        foreground: bool,
        /// Interface name.
        ifname: String,
    },
    /// Manage remote peers (admins and installers) in the peer store.
    #[command(subcommand)]
    Peer(peer_cmd::PeerCommand),
    /// Manage gates: add one (prints its credentials and connection settings), list them.
    #[command(subcommand)]
    Gate(access_cmd::GateCommand),
    /// Manage the people cards and access levels belong to.
    #[command(subcommand)]
    Person(access_cmd::PersonCommand),
    /// Manage access levels (gates open on a weekly schedule) and grant them to people.
    #[command(subcommand)]
    Level(access_cmd::LevelCommand),
    /// Enrol, list, disable, enable and remove cards (stored only as keyed hashes).
    #[command(subcommand)]
    Card(access_cmd::CardCommand),
    /// Read the access log: every decision the hub and the gates made.
    #[command(subcommand)]
    Log(access_cmd::LogCommand),
    /// Manage the console and API admins (roles admin, operator, installer).
    #[command(subcommand)]
    Admin(admin_cmd::AdminCommand),
    /// Manage event sources (NVRs, sensor gateways) and their API keys.
    #[command(subcommand)]
    Source(alerts_cmd::SourceCommand),
    /// Manage alert receivers: webhook (Slack or JSON), e-mail, ntfy push; send a test.
    #[command(subcommand)]
    Receiver(alerts_cmd::ReceiverCommand),
    /// Manage alert rules: which events go to which receivers, when, grouped and repeated how.
    #[command(subcommand)]
    Rule(alerts_cmd::RuleCommand),
    /// Silence matching events for a while (stored, not notified).
    #[command(subcommand)]
    Silence(alerts_cmd::SilenceCommand),
    /// List, show and acknowledge events; check the delivery log reconciles.
    #[command(subcommand)]
    Event(alerts_cmd::EventCommand),
    /// Manage LoRa sensor nodes: add one (prints its provisioning TOML), list, disable,
    /// enable, remove.
    #[command(subcommand)]
    Sensor(sensor_cmd::SensorCommand),
    /// Load and validate the configuration (every key, as the services do at start) and
    /// print what it enables; exits 1 naming the first bad key.
    CheckConfig,
}

fn main() {
    // Before any thread starts: takes NOTIFY_SOCKET and WATCHDOG_* out of the environment.
    sd_notify::init_from_env();
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("gatehouse: {e:#}");
        std::process::exit(1);
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GATEHOUSE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        // journald stamps the time itself.
        b.without_time().init();
    }
}

fn load(cli: &Cli) -> Result<Config> {
    Ok(Config::load(&cli.config)?)
}

fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Wg { foreground, ifname } => {
            let fg = *foreground || std::env::var("WG_PROCESS_FOREGROUND").is_ok_and(|v| v == "1");
            init_logging(cli.log_json);
            gatehouse_tunnel::wg_compat::run(ifname, fg, &signals::stop_requested)
                .map_err(Into::into)
        }
        Command::Peer(cmd) => {
            let config = load(&cli)?;
            peer_cmd::run(&config, cmd)
        }
        Command::Gate(cmd) => access_cmd::gate(&load(&cli)?, cmd),
        Command::Person(cmd) => access_cmd::person(&load(&cli)?, cmd),
        Command::Level(cmd) => access_cmd::level(&load(&cli)?, cmd),
        Command::Card(cmd) => access_cmd::card(&load(&cli)?, cmd),
        Command::Log(cmd) => access_cmd::log(&load(&cli)?, cmd),
        Command::Admin(cmd) => admin_cmd::run(&load(&cli)?, cmd),
        Command::Console => console_cmd::run(&load(&cli)?),
        Command::Lora(args) => lora_cmd::run(args, || load(&cli), cli.log_json),
        Command::Source(cmd) => alerts_cmd::source(&load(&cli)?, cmd),
        Command::Receiver(cmd) => alerts_cmd::receiver(&load(&cli)?, cmd),
        Command::Rule(cmd) => alerts_cmd::rule(&load(&cli)?, cmd),
        Command::Silence(cmd) => alerts_cmd::silence(&load(&cli)?, cmd),
        Command::Event(cmd) => alerts_cmd::event(&load(&cli)?, cmd),
        Command::Sensor(cmd) => sensor_cmd::run(&load(&cli)?, cmd),
        Command::CheckConfig => check_config(&cli.config, &load(&cli)?),
        Command::Tunnel => {
            let config = load(&cli)?;
            init_logging(cli.log_json || config.general.log_format == LogFormat::Json);
            sd_notify::register("tunnel");
            run_tunnel(&config)
        }
        Command::Hub => {
            let config = load(&cli)?;
            init_logging(cli.log_json || config.general.log_format == LogFormat::Json);
            sd_notify::register("hub");
            run_hub(config, None)
        }
        Command::Up => {
            let config = load(&cli)?;
            init_logging(cli.log_json || config.general.log_format == LogFormat::Json);
            std::fs::create_dir_all(&config.general.data_dir).with_context(|| {
                format!(
                    "cannot create data_dir {}",
                    config.general.data_dir.display()
                )
            })?;
            // Ready (and the watchdog's pings) need both; LoRa is optional here.
            sd_notify::register("tunnel");
            sd_notify::register("hub");
            let hub_config = config.clone();
            let (broker_tx, broker_rx) = std::sync::mpsc::channel();
            let hub = std::thread::Builder::new()
                .name("hub".into())
                .spawn(move || run_hub(hub_config, Some(broker_tx)))?;
            let lora = (config.lora.mode != gatehouse_config::LoraMode::Off)
                .then(|| {
                    let lora_config = config.clone();
                    std::thread::Builder::new()
                        .name("lora".into())
                        .spawn(move || run_up_lora(&lora_config, &broker_rx))
                })
                .transpose()?;
            let tunnel = run_tunnel(&config);
            signals::request_stop();
            let hub = hub
                .join()
                .map_err(|_| anyhow::anyhow!("hub thread panicked"))?;
            if let Some(lora) = lora {
                // A LoRa failure was logged; it does not fail the other services.
                let _ = lora.join();
            }
            tunnel.and(hub)
        }
    }
}

fn run_tunnel(config: &Config) -> Result<()> {
    let service = gatehouse_tunnel::service::TunnelService::start(config)?;
    tracing::info!(
        interface = %config.tunnel.interface,
        mode = ?config.tunnel.mode,
        port = config.tunnel.listen_port,
        "tunnel up"
    );
    // The loop also proves the tunnel alive to systemd (sd_notify: a UAPI `get`), and
    // applies the peer store when another process saved it (the hub, as another user on
    // the box, cannot send SIGHUP).
    let uapi = config.uapi_socket();
    let mut next_proof = sd_notify::next_proof().map(|d| std::time::Instant::now() + d);
    let poll = gatehouse_tunnel::service::STORE_POLL;
    loop {
        let wait = next_proof.map_or(poll, |at| {
            at.saturating_duration_since(std::time::Instant::now())
                .min(poll)
        });
        let reloaded = match signals::wait_timeout(wait)? {
            Some(signals::Event::Stop) => break,
            Some(signals::Event::Reload) => Some(service.reload()),
            None => {
                if next_proof.is_some_and(|at| std::time::Instant::now() >= at) {
                    sd_notify::prove_tunnel(&uapi);
                    next_proof = sd_notify::next_proof().map(|d| std::time::Instant::now() + d);
                }
                service.reload_if_changed()
            }
        };
        match reloaded {
            Some(Ok(n)) => tracing::info!(peers = n, "peer store reloaded"),
            Some(Err(e)) => tracing::error!(error = %e, "reload failed; keeping the running peers"),
            None => {}
        }
    }
    sd_notify::stopping();
    service.stop();
    tracing::info!("tunnel stopped");
    Ok(())
}

/// `gatehouse up`'s forwarder: waits for the hub's broker, starts an air if needed, runs
/// until stopped. Errors are logged, not returned: the other services go on.
fn run_up_lora(config: &Config, broker: &std::sync::mpsc::Receiver<Option<std::net::SocketAddr>>) {
    // The hub sends its broker's address once bound (it has provisioned the forwarder's
    // account by then); a hub that failed to start sends nothing.
    let Ok(addr) = broker.recv() else { return };
    let result =
        lora_cmd::ensure_air(config).and_then(|_air| lora_cmd::run_forwarder(config, addr));
    if let Err(e) = result {
        tracing::error!(error = %format!("{e:#}"), "LoRa forwarder failed");
    }
}

/// Runs the hub until stopped; `broker`, if given, gets the hub's MQTT broker address
/// once the hub is bound.
fn run_hub(
    config: Config,
    broker: Option<std::sync::mpsc::Sender<Option<std::net::SocketAddr>>>,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // Installs the signal handlers now: a SIGTERM during start-up (or while the banner is
    // read) then stops the hub as soon as it runs, instead of killing it.
    if signals::stop_requested() {
        return Ok(());
    }
    let hub = rt.block_on(gatehouse_hub::Hub::bind(&config))?;
    if let Some(b) = broker {
        let _ = b.send(hub.mqtt_addr());
    }
    match console_cmd::banner(
        &config,
        hub.https_addr(),
        hub.http_addr(),
        hub.console_cert(),
    ) {
        Ok(banner) => eprint!("{banner}"),
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot show the console banner"),
    }
    // Proves the hub alive to systemd from its own runtime (sd_notify: GET /healthz).
    rt.spawn(sd_notify::prove_hub(hub.http_addr()));
    rt.block_on(hub.run(async {
        signals::stopped().await;
        sd_notify::stopping();
    }))?;
    Ok(())
}

/// `gatehouse check-config`: the configuration loaded (and so validated) by the caller.
fn check_config(path: &std::path::Path, config: &Config) -> Result<()> {
    let t = &config.tunnel;
    let h = &config.hub;
    let or_off = |a: Option<std::net::SocketAddr>| a.map_or("off".to_owned(), |a| a.to_string());
    println!("{}: ok", path.display());
    println!("  data_dir   {}", config.general.data_dir.display());
    println!(
        "  tunnel     {} mode {}, UDP {}, {} service(s), {} forward(s)",
        t.interface,
        format!("{:?}", t.mode).to_lowercase(),
        t.listen_port,
        t.services.len(),
        t.forwards.len()
    );
    println!(
        "  hub        http {}, https {}, gate tcp {}, mqtt {}",
        h.http_listen,
        or_off(h.https_listen),
        or_off(h.gate_tcp_listen),
        format!("{:?}", h.mqtt.mode).to_lowercase()
    );
    println!(
        "  lora       {}",
        format!("{:?}", config.lora.mode).to_lowercase()
    );
    Ok(())
}
