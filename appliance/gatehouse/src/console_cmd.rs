//! `gatehouse console`, and the banner `gatehouse hub` / `gatehouse up` print on stderr:
//! where the web console is, its certificate's SHA-256 fingerprint (to compare with the
//! browser's before trusting it), and, while no admin exists, the first admin's one-time
//! enrolment token.
//!
//! Promises:
//! - `gatehouse console` makes the certificate if it is missing (first boot can print the
//!   fingerprint before the hub ever ran) and never creates the database.
//! - The banner makes a new enrolment token only when no admin exists and no token is
//!   live; a live token is never shown again (only its hash is stored).

use anyhow::{Context, Result};
use gatehouse_config::Config;
use gatehouse_hub::tls::{console_urls, ConsoleCert};
use gatehouse_store::admin::{EnrolToken, Enrolment, ENROL_TOKEN_VALIDITY};
use gatehouse_store::Store;
use std::fmt::Write as _;
use std::net::SocketAddr;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339)
        .unwrap_or_else(|_| format!("@{}", t.unix_timestamp()))
}

/// The console's URLs (from the configured addresses) and its certificate, made if
/// missing (`None` when HTTPS is off).
pub(crate) fn console_and_cert(config: &Config) -> Result<(Vec<String>, Option<ConsoleCert>)> {
    let cert = match config.hub.https_listen {
        Some(_) => Some(
            ConsoleCert::load_or_create(config)
                .context("cannot set up the console's certificate")?
                .0,
        ),
        None => None,
    };
    let urls = console_urls(config, config.hub.https_listen, config.hub.http_listen);
    Ok((urls, cert))
}

/// `gatehouse console`.
pub fn run(config: &Config) -> Result<()> {
    let (urls, cert) = console_and_cert(config)?;
    for (i, u) in urls.iter().enumerate() {
        println!("{:<13}{u}", if i == 0 { "console:" } else { "" });
    }
    match &cert {
        Some(c) => {
            println!("{:<13}{}", "certificate:", c.path().display());
            println!("{:<13}{}", "SHA-256:", c.fingerprint());
            println!(
                "Compare the fingerprint with the one your browser shows for the console's \
                 certificate before you accept it."
            );
        }
        None => println!("HTTPS is off (hub.https_listen is empty): the console is plain HTTP"),
    }
    let db = gatehouse_store::schema::db_path(&config.general.data_dir);
    let state = if db.exists() {
        let store = Store::open(&config.general.data_dir).context("cannot open the database")?;
        match store.enrolment(OffsetDateTime::now_utc())? {
            Enrolment::AdminExists => "closed (an admin exists; log in)".to_owned(),
            Enrolment::TokenLive { expires } => format!(
                "open until {} with the token made earlier (`gatehouse admin enrol-token` \
                 makes a new one)",
                rfc3339(expires)
            ),
            Enrolment::NoToken => {
                "no admin yet: make a token with `gatehouse admin enrol-token`".to_owned()
            }
        }
    } else {
        "no admin yet (the hub has not run): make a token with `gatehouse admin enrol-token`"
            .to_owned()
    };
    println!("{:<13}{state}", "enrolment:");
    Ok(())
}

/// The start-up banner of a hub bound at `https` / `http` (tokens are made here).
pub fn banner(
    config: &Config,
    https: Option<SocketAddr>,
    http: SocketAddr,
    cert: Option<&ConsoleCert>,
) -> Result<String> {
    let urls = console_urls(config, https, http);
    let rule = "=".repeat(76);
    let mut b = String::new();
    let _ = writeln!(b, "{rule}");
    for (i, u) in urls.iter().enumerate() {
        let label = if i == 0 { "Gatehouse console:" } else { "" };
        let _ = writeln!(b, "  {label:<19}{u}");
    }
    if let Some(c) = cert {
        let _ = writeln!(b, "  Certificate SHA-256: {}", c.fingerprint());
        let _ = writeln!(
            b,
            "  (compare it with the one your browser shows before you accept it)"
        );
    }
    let store = Store::open(&config.general.data_dir).context("cannot open the database")?;
    let now = OffsetDateTime::now_utc();
    match store.enrolment(now)? {
        Enrolment::AdminExists => {}
        Enrolment::TokenLive { expires } => {
            let _ = writeln!(
                b,
                "\n  No admin yet. An enrolment token made earlier is valid until {}.\n  \
                 It is shown only once: `gatehouse admin enrol-token` makes a new one.",
                rfc3339(expires)
            );
        }
        Enrolment::NoToken => {
            let token = EnrolToken::generate()?;
            // Ok(false): an admin appeared meanwhile; nothing to show.
            if store.replace_enrol_token(&token, now)? {
                let _ = writeln!(
                    b,
                    "\n  No admin yet. Open the console and enrol the first admin with this\n  \
                     one-time token (valid until {}):\n\n      {token}\n\n  \
                     (`gatehouse admin enrol-token` makes a new one)",
                    rfc3339(now + ENROL_TOKEN_VALIDITY)
                );
            }
        }
    }
    let _ = writeln!(b, "{rule}");
    Ok(b)
}
