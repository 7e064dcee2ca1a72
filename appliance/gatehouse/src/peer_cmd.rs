//! `gatehouse peer ...`: arguments and printing; the work is in `gatehouse_tunnel::admin`.

use anyhow::{Context, Result};
use clap::Subcommand;
use gatehouse_config::{Config, Role};
use gatehouse_tunnel::admin::{self, Applied, NewPeer};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::SystemTime;

#[derive(Subcommand)]
pub enum PeerCommand {
    /// Add a peer: allocates its tunnel address, generates its keys (unless --public-key),
    /// applies it live and prints the client config for the official WireGuard apps, with a
    /// QR code when printing to a terminal.
    Add {
        /// A short name for the person or device (letters, digits, '-', '_', '.').
        name: String,
        /// admin: the console and the LAN services; installer: the console only.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Last day the peer works (YYYY-MM-DD, through the end of that day UTC) or an
        /// RFC 3339 time.
        #[arg(long)]
        expires: Option<String>,
        /// Use the peer's own key pair; the printed config then has no private key.
        #[arg(long)]
        public_key: Option<String>,
        /// Also write the QR code as a PNG image.
        #[arg(long)]
        qr_png: Option<PathBuf>,
        /// Print the QR code even when not on a terminal (or never, with --qr=false).
        #[arg(long)]
        qr: Option<bool>,
    },
    /// List peers: name, role, address, endpoint, last handshake, rx/tx, expiry.
    List,
    /// Stop a peer from connecting, keeping it in the store.
    Disable { name: String },
    /// Let a disabled peer connect again.
    Enable { name: String },
    /// Remove a peer for good.
    Remove { name: String },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

fn report(applied: Applied) {
    match applied {
        Applied::Live(pid) => eprintln!("applied to the running tunnel (pid {pid})"),
        Applied::Stored => eprintln!("saved; no tunnel running, it applies when the tunnel starts"),
    }
}

pub fn run(config: &Config, cmd: &PeerCommand) -> Result<()> {
    match cmd {
        PeerCommand::Add {
            name,
            role,
            expires,
            public_key,
            qr_png,
            qr,
        } => {
            let added = admin::add_peer(
                config,
                &NewPeer {
                    name: name.clone(),
                    role: *role,
                    expires: expires.clone(),
                    public_key: public_key.clone(),
                },
            )?;
            print!("{}", added.client.to_text());
            if qr.unwrap_or_else(|| std::io::stdout().is_terminal()) {
                println!();
                print!("{}", added.client.to_terminal_qr()?);
            }
            if let Some(path) = qr_png {
                added
                    .client
                    .write_qr_png(path)
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("QR code written to {}", path.display());
            }
            let addrs: Vec<String> = added.addresses.iter().map(|a| a.to_string()).collect();
            eprintln!(
                "peer {name} ({role}) added with address {}",
                addrs.join(", ")
            );
            report(added.applied);
        }
        PeerCommand::List => {
            let rows = admin::list_peers(config)?;
            println!(
                "{:<16} {:<9} {:<9} {:<18} {:<22} {:<14} {:>10} {:>10} EXPIRES",
                "NAME", "ROLE", "STATE", "ADDRESS", "ENDPOINT", "HANDSHAKE", "RX", "TX"
            );
            for r in rows {
                let addr: Vec<String> = r.addresses.iter().map(|a| a.addr().to_string()).collect();
                println!(
                    "{:<16} {:<9} {:<9} {:<18} {:<22} {:<14} {:>10} {:>10} {}",
                    r.name,
                    r.role,
                    r.state,
                    addr.join(","),
                    r.endpoint.as_deref().unwrap_or("-"),
                    ago(r.last_handshake),
                    bytes(r.rx_bytes),
                    bytes(r.tx_bytes),
                    r.expires.map_or("never".into(), |e| e.date().to_string()),
                );
            }
        }
        PeerCommand::Disable { name } => report(admin::set_disabled(config, name, true)?),
        PeerCommand::Enable { name } => report(admin::set_disabled(config, name, false)?),
        PeerCommand::Remove { name } => report(admin::remove_peer(config, name)?),
    }
    Ok(())
}

fn ago(t: Option<SystemTime>) -> String {
    match t.and_then(|t| SystemTime::now().duration_since(t).ok()) {
        None => "never".into(),
        Some(d) if d.as_secs() < 120 => format!("{}s ago", d.as_secs()),
        Some(d) if d.as_secs() < 7200 => format!("{}m ago", d.as_secs() / 60),
        Some(d) => format!("{}h ago", d.as_secs() / 3600),
    }
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / f64::from(1u32 << 30)),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20)),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}
