//! What the `*_cli` tests share: a tempdir "site" with a config file (`[general] data_dir`
//! plus the TOML a test adds), the real `gatehouse` binary run against it, and the checks
//! for a command that must succeed or must fail the way a user-caused error fails (exit 1,
//! one line naming the problem, no panic). Each test file uses a part only.
#![allow(dead_code)]

use gatehouse_store::schema::db_path;
use gatehouse_store::Store;
use std::fmt::Debug;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const GATEHOUSE: &str = env!("CARGO_BIN_EXE_gatehouse");

/// A userspace tunnel section, the start of most test configs.
pub const TUNNEL: &str = "[tunnel]\nmode = \"userspace\"\naddress = \"10.77.0.1/24\"\n\
                          public_endpoint = \"vpn.example.net:51820\"\n";

/// Writes `dir/gatehouse.toml`: `[general] data_dir = "dir/data"`, then `extra`.
pub fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("gatehouse.toml");
    std::fs::write(
        &path,
        format!(
            "[general]\ndata_dir = \"{}\"\n{extra}",
            dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

/// `gatehouse --config <config> <args>`, not yet started.
pub fn command(config: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(GATEHOUSE);
    c.arg("--config").arg(config).args(args);
    c
}

/// Runs `gatehouse --config <config> <args>` to its end.
pub fn gatehouse(config: &Path, args: &[&str]) -> Output {
    command(config, args).output().unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The value printed after `label` (a line starting with it, after indentation).
pub fn field<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {label:?} in {out}"))
}

/// Checks `o` failed as a user-caused error does: exit code 1, one line of stderr
/// containing `want`, no panic. Returns that stderr; `what` labels the messages.
pub fn failed(o: &Output, want: &str, what: impl Debug) -> String {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(1), "{what:?}: {e}");
    assert!(e.contains(want), "{what:?}: wanted {want:?} in {e:?}");
    assert_eq!(e.trim_end().lines().count(), 1, "{what:?}: one line: {e}");
    assert!(!e.contains("panicked"), "{e}");
    e
}

/// A config under a fresh tempdir; the data directory is not made.
pub struct CliSite {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub data: PathBuf,
    /// Runs as this `USER`, with `SUDO_USER` unset.
    user: Option<String>,
}

impl CliSite {
    /// `[general] data_dir = ...` followed by `extra` (whole TOML lines).
    pub fn new(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), extra);
        let data = dir.path().join("data");
        CliSite {
            dir,
            config,
            data,
            user: None,
        }
    }

    /// Commands run as `user` (`USER` set, `SUDO_USER` removed).
    pub fn run_as(mut self, user: &str) -> Self {
        self.user = Some(user.to_owned());
        self
    }

    /// `gatehouse --config <config> <args>`, not yet started.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = command(&self.config, args);
        if let Some(user) = &self.user {
            c.env_remove("SUDO_USER").env("USER", user);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs with `stdin` as its standard input (a pipe, not a terminal).
    pub fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "{args:?} failed: {}{}",
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    }

    /// Runs a command that must fail with exit code 1 and one line naming `want`.
    pub fn fails(&self, args: &[&str], want: &str) -> String {
        failed(&self.run(args), want, args)
    }

    pub fn store(&self) -> Store {
        Store::open(&self.data).unwrap()
    }

    /// A file in the site's directory holding `text`.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Every file the site keeps in its data directory (database, WAL, site key).
    pub fn data_files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        std::fs::read_dir(&self.data)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .map(|p| {
                let b = std::fs::read(&p).unwrap();
                (p, b)
            })
            .collect()
    }

    /// Every byte the site keeps in its data directory, one file after another.
    pub fn disk(&self) -> Vec<u8> {
        self.data_files().into_iter().flat_map(|(_, b)| b).collect()
    }

    /// Whether one file in the data directory holds `needle`.
    pub fn disk_holds(&self, needle: &[u8]) -> bool {
        self.data_files()
            .iter()
            .any(|(_, bytes)| contains(bytes, needle))
    }

    pub fn db_bytes(&self) -> Vec<u8> {
        std::fs::read(db_path(&self.data)).unwrap()
    }
}
