//! `gatehouse admin add|list|passwd|disable|enable|remove|enrol-token`: the console and
//! API admins, managed on the box's shell (how the first admin is made, or the one-time
//! token with which the first admin enrols in the console). Arguments, password input and
//! printing only; the rule and the hashing are `gatehouse_hub::admin::password`'s, the
//! rows `gatehouse_store`'s.
//!
//! Promises:
//! - A password is read from `--password-file`, else twice from the terminal without echo,
//!   else (stdin not a terminal) as one line of stdin; it is never printed or logged, and
//!   only its argon2id hash is stored.
//! - A password the rule refuses (shorter than 12 characters, ...) saves nothing.
//! - Changing a password, disabling or removing an admin ends its sessions at once.
//! - Every error a user can cause is one line; `main` prints it and exits 1.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Subcommand, ValueEnum};
use gatehouse_config::Config;
use gatehouse_hub::admin::password;
use gatehouse_store::admin::{AdminRecord, AdminRole, EnrolToken, ENROL_TOKEN_VALIDITY};
use gatehouse_store::Store;
use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Add a console/API admin. The password comes from --password-file, else is asked
    /// twice on the terminal (not shown), else is read as one line of stdin.
    Add {
        /// The login name: letters, digits, '.', '_', '-' or '@' (unique).
        name: String,
        /// admin: everything; operator: reads gates, people and the log, changes nothing;
        /// installer: gates and zones only.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Read the password from this file (its first line; at least 12 characters).
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// List admins: id, name, role, state, created, locked until.
    List,
    /// Set a new password (ends the admin's sessions and lifts a lockout).
    Passwd {
        name: String,
        /// Read the password from this file (its first line; at least 12 characters).
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// Stop an admin from logging in (ends its sessions).
    Disable { name: String },
    /// Let a disabled admin log in again.
    Enable { name: String },
    /// Remove an admin for good (ends its sessions).
    Remove { name: String },
    /// Make a one-time token with which the first admin enrols in the web console
    /// (replaces any earlier token; valid 7 days; only while no admin exists).
    EnrolToken,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum RoleArg {
    Admin,
    Operator,
    Installer,
}

impl From<RoleArg> for AdminRole {
    fn from(r: RoleArg) -> AdminRole {
        match r {
            RoleArg::Admin => AdminRole::Admin,
            RoleArg::Operator => AdminRole::Operator,
            RoleArg::Installer => AdminRole::Installer,
        }
    }
}

fn open(config: &Config) -> Result<Store> {
    Store::open(&config.general.data_dir).context("cannot open the database")
}

fn find(store: &Store, name: &str) -> Result<AdminRecord> {
    store
        .admin_by_name(name)?
        .ok_or_else(|| anyhow!("no admin is named {name:?} (see `gatehouse admin list`)"))
}

/// The first line of `s`, without its line ending.
fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

fn read_password_file(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the password file {}", path.display()))?;
    Ok(first_line(&text).to_owned())
}

/// The new password for `name`, checked against the rule.
fn new_password(name: &str, file: Option<&Path>) -> Result<String> {
    let pw = match file {
        Some(path) => read_password_file(path)?,
        None if std::io::stdin().is_terminal() => {
            let first = rpassword::prompt_password(format!("Password for {name}: "))
                .context("cannot read the password from the terminal")?;
            password::check_policy(&first)?;
            let again = rpassword::prompt_password("Again: ")
                .context("cannot read the password from the terminal")?;
            if first != again {
                bail!("the two passwords differ; nothing was changed");
            }
            first
        }
        None => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("cannot read the password from stdin")?;
            first_line(&line).to_owned()
        }
    };
    password::check_policy(&pw)?;
    Ok(pw)
}

fn show(t: OffsetDateTime, tz: UtcOffset) -> String {
    t.checked_to_offset(tz)
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_else(|_| format!("@{}", t.unix_timestamp()))
}

pub fn run(config: &Config, cmd: &AdminCommand) -> Result<()> {
    let store = open(config)?;
    let now = OffsetDateTime::now_utc();
    match cmd {
        AdminCommand::Add {
            name,
            role,
            password_file,
        } => {
            // Refuse a taken name before asking for a password.
            if store.admin_by_name(name)?.is_some() {
                bail!("an admin named {name:?} already exists");
            }
            let pw = new_password(name, password_file.as_deref())?;
            let hash = password::hash_password(&pw)?;
            let role = AdminRole::from(*role);
            let id = store.add_admin(name, role, &hash, now)?;
            println!("admin {name:?} added (id {id}, role {role})");
        }
        AdminCommand::List => {
            let tz = UtcOffset::from_whole_seconds(config.hub.timezone_offset.seconds())
                .map_err(|e| anyhow!("hub.timezone_offset: {e}"))?;
            println!(
                "{:>4} {:<24} {:<10} {:<9} {:<26} LOCKED UNTIL",
                "ID", "NAME", "ROLE", "STATE", "CREATED"
            );
            for a in store.list_admins()? {
                println!(
                    "{:>4} {:<24} {:<10} {:<9} {:<26} {}",
                    a.id,
                    a.name,
                    a.role.as_str(),
                    if a.enabled { "enabled" } else { "disabled" },
                    show(a.created, tz),
                    a.locked_until
                        .filter(|t| *t > now)
                        .map_or("-".to_owned(), |t| show(t, tz)),
                );
            }
        }
        AdminCommand::Passwd {
            name,
            password_file,
        } => {
            let a = find(&store, name)?;
            let pw = new_password(name, password_file.as_deref())?;
            let hash = password::hash_password(&pw)?;
            if !store.set_admin_password(a.id, &hash)? {
                bail!("no admin is named {name:?} (removed meanwhile)");
            }
            println!("password of {name:?} changed; its sessions were ended");
        }
        AdminCommand::Disable { name } => {
            let a = find(&store, name)?;
            store.set_admin_enabled(a.id, false)?;
            println!("admin {name:?} disabled; its sessions were ended");
        }
        AdminCommand::Enable { name } => {
            let a = find(&store, name)?;
            store.set_admin_enabled(a.id, true)?;
            println!("admin {name:?} enabled");
        }
        AdminCommand::Remove { name } => {
            let a = find(&store, name)?;
            store.remove_admin(a.id)?;
            println!("admin {name:?} removed");
        }
        AdminCommand::EnrolToken => {
            let token = EnrolToken::generate()?;
            if !store.replace_enrol_token(&token, now)? {
                bail!(
                    "an admin exists already, so there is nothing to enrol: log in to the \
                     console, or add admins with `gatehouse admin add NAME --role admin`"
                );
            }
            println!("enrolment token: {token}");
            println!(
                "valid until {} (7 days), for one enrolment, while no admin exists",
                crate::console_cmd::rfc3339(now + ENROL_TOKEN_VALIDITY)
            );
            let (urls, cert) = crate::console_cmd::console_and_cert(config)?;
            for (i, u) in urls.iter().enumerate() {
                let label = if i == 0 { "enrol at:" } else { "" };
                println!("{label:<17}{u}#/enrol");
            }
            if let Some(c) = cert {
                println!("certificate SHA-256: {}", c.fingerprint());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn password_files_give_their_first_line() {
        assert_eq!(
            first_line("correct horse battery\n"),
            "correct horse battery"
        );
        assert_eq!(
            first_line("correct horse battery\r\nmore"),
            "correct horse battery"
        );
        assert_eq!(first_line(""), "");
    }
}
