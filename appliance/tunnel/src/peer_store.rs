//! The tunnel's peer store: one file in WireGuard's own config format.
//!
//! The file is a plain WireGuard config that `wg setconf` accepts unchanged: an
//! `[Interface]` with `ListenPort`, and one `[Peer]` per remote peer with `PublicKey`,
//! `PresharedKey`, `AllowedIPs`, `Endpoint` and `PersistentKeepalive`. It holds no
//! private key: the gateway's is in a file of its own that only the tunnel reads
//! (`tunnel.private_key_file`, [`crate::gateway_key`]), so that the hub and the CLI,
//! which edit this file, never see it. Gatehouse's own fields are comment lines, so `wg`
//! skips them: the gateway's public key in `[Interface]` (written by the tunnel from its
//! key, read by client configs), and per peer, right after the `[Peer]` line:
//!
//! ```text
//! [Interface]
//! # PublicKey = ...
//! ListenPort = 51820
//!
//! [Peer]
//! # Name = alice
//! # Role = admin
//! # Expires = 2026-12-31T23:59:59Z
//! # Disabled = true
//! PublicKey = ...
//! ```
//!
//! Promises:
//! - [`PeerStore::parse`] reads what `wg`'s own parser reads (wireguard-tools
//!   `src/config.c`, `config_read_line` and `process_line`): `#` starts a comment anywhere
//!   on a line; every space, tab, CR, VT and FF is removed before a line is looked at (so
//!   `Private Key=` is `PrivateKey=`); section names and keys are case-insensitive;
//!   `AllowedIPs` may be repeated and adds to the list; a key with an empty value is an
//!   error. It is stricter than `wg` where a file that `wg` takes would still be a
//!   mistake here: unknown keys, a key given twice, a second `[Interface]`, two peers
//!   with the same public key, name or `AllowedIPs` entry are errors. An `[Interface]`
//!   needs the gateway's `# PublicKey`, or else a `PrivateKey`.
//! - A store written before the private key had a file of its own has a `PrivateKey`
//!   line: it still parses (its `# PublicKey` is then that key's, and must match if
//!   given), and [`PeerStore::has_private_key`] says so. Only the tunnel takes the key out
//!   ([`PeerStore::take_private_key`], moving it to the key file); nothing writes a store
//!   that holds one ([`PeerStore::save`] refuses), so no editor copies or drops it.
//! - It never panics; an error names the line and says what was expected there, and
//!   never repeats a private key.
//! - [`PeerStore::to_text`] writes only lines that `wg setconf` accepts, and
//!   `parse(to_text(store)) == store`. [`PeerStore::save`] refuses a store for which
//!   that does not hold, and replaces the file atomically (a crash leaves the old or the
//!   new file, never a mix), with mode 0660: the tunnel, the hub and the CLI run as
//!   different users of one group and all edit it. Its lock file is 0660 too.
//! - Comments other than gatehouse's fields are not kept when the store is saved.
//! - Disabled and expired peers stay in the file: the tunnel refuses them
//!   ([`StoredPeer::is_active`]); a plain `wg setconf` of the file would not.

use crate::keys::Key;
use gatehouse_config::{Cidr, Role};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read as _, Write as _};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime, UtcOffset};

/// The gateway's WireGuard interface and its peers, as kept in the store file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStore {
    /// The gateway's public key: gatehouse field `# PublicKey` of `[Interface]`, or the
    /// public half of a legacy `PrivateKey`.
    pub public_key: Key,
    /// The `PrivateKey` of a store written before the key had a file of its own; see
    /// [`PeerStore::take_private_key`]. Private so that only this module and the tunnel's
    /// migration touch it.
    private_key: Option<Key>,
    pub listen_port: Option<u16>,
    pub peers: Vec<StoredPeer>,
}

/// One `[Peer]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPeer {
    pub public_key: Key,
    pub preshared_key: Option<Key>,
    /// In file order. WireGuard routes these to the peer and accepts them from it.
    pub allowed_ips: Vec<Cidr>,
    /// `host:port` or `[v6]:port`, as written in the file.
    pub endpoint: Option<String>,
    /// Seconds; `None` when the line is absent or says `off`.
    pub persistent_keepalive: Option<u16>,
    /// Gatehouse field `# Name`; see [`validate_name`].
    pub name: Option<String>,
    /// Gatehouse field `# Role`; [`Role::Installer`] (least privilege) when absent.
    pub role: Role,
    /// Gatehouse field `# Expires`: the last instant the peer may use the tunnel.
    pub expires: Option<OffsetDateTime>,
    /// Gatehouse field `# Disabled`.
    pub disabled: bool,
}

/// Everything loading, parsing or saving the store can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("cannot read the peer store {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the peer store {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} line {line}: {message}", describe_path(.path.as_deref()))]
    Parse {
        /// `None` when parsing text that did not come from a file.
        path: Option<PathBuf>,
        /// 1-based.
        line: usize,
        message: String,
    },
    /// The store would not read back as it is (a name with a space, an endpoint with a
    /// `#`, two peers with the same key, ...), so it was not written.
    #[error("refusing to save the peer store {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    /// The store still has the gateway's `PrivateKey` (it predates
    /// `tunnel.private_key_file`); only the tunnel moves it out.
    #[error(
        "the peer store {path} still holds the gateway's PrivateKey (it was written before \
         the key moved to its own file, tunnel.private_key_file); start `gatehouse tunnel` \
         once, which moves the key out of it, then try again"
    )]
    HoldsPrivateKey { path: PathBuf },
    /// No store yet: the tunnel makes it (with the gateway's key) on its first start.
    #[error(
        "there is no peer store {path} yet: the tunnel makes it, with the gateway's key, when \
         it first starts; start `gatehouse tunnel` (or `gatehouse up`) once, then try again"
    )]
    NotMadeYet { path: PathBuf },
}

fn describe_path(path: Option<&Path>) -> String {
    match path {
        Some(p) => format!("peer store {}", p.display()),
        None => "peer store".to_owned(),
    }
}

/// The first lines of every file we write. No `=` in them, so they never read as fields.
const HEADER: &str = "\
# Gatehouse's WireGuard peer store. Managed by gatehouse: change it with `gatehouse peer`.
# It is a plain WireGuard config that `wg setconf` accepts as it is. The gateway's private
# key is not here but in its own file (tunnel.private_key_file); the PublicKey comment in
# [Interface] is its public half. The comments right after a [Peer] line (Name, Role,
# Expires, Disabled) are gatehouse's fields for that peer; other comments are dropped when
# gatehouse saves the file. Disabled and expired peers stay listed: gatehouse's tunnel
# refuses them, a plain `wg setconf` would not.
";

/// Mode of the store and its lock file: the tunnel, the hub and the CLI share a group.
pub const STORE_MODE: u32 = 0o660;

/// Longest peer name, in characters.
pub const MAX_NAME_LEN: usize = 32;

/// An exclusive lock on one peer store for a read-modify-write (`gatehouse peer`, the
/// console's peer pages, the tunnel writing `wg set` changes back): taken on
/// `<store>.lock` beside it with flock(2), across processes, and released when dropped.
/// Without it two writers that loaded the same version would each save their own change
/// and one would be lost.
#[derive(Debug)]
pub struct StoreLock {
    _file: fs::File,
}

impl StoreLock {
    /// Blocks until no other writer holds the store `path`.
    #[allow(unsafe_code)] // flock(2) on a descriptor we own; no memory is involved.
    pub fn acquire(path: &Path) -> Result<StoreLock, StoreError> {
        use std::os::fd::AsRawFd as _;
        let mut name = path.as_os_str().to_owned();
        name.push(".lock");
        let lock_path = PathBuf::from(name);
        let error = |source| StoreError::Write {
            path: lock_path.clone(),
            source,
        };
        create_private_dir(parent_dir(path)).map_err(error)?;
        // Whoever makes the file makes it group-writable (explicitly: the units run with
        // UMask=0077); one made by another user is used as it is.
        let file = match fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(STORE_MODE)
            .open(&lock_path)
        {
            Ok(file) => {
                file.set_permissions(fs::Permissions::from_mode(STORE_MODE))
                    .map_err(error)?;
                file
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => fs::OpenOptions::new()
                .write(true)
                .open(&lock_path)
                .map_err(error)?,
            Err(e) => return Err(error(e)),
        };
        loop {
            // SAFETY: the descriptor is open and stays open for this call.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(StoreLock { _file: file });
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(error(e));
            }
        }
    }
}

impl PeerStore {
    /// An empty store for the gateway with this public key.
    pub fn new(public_key: Key, listen_port: Option<u16>) -> PeerStore {
        PeerStore {
            public_key,
            private_key: None,
            listen_port,
            peers: Vec::new(),
        }
    }

    /// Whether the file had a `PrivateKey` line (a store from before the key had a file
    /// of its own). Such a store is not saved until the tunnel took the key out.
    pub fn has_private_key(&self) -> bool {
        self.private_key.is_some()
    }

    /// Takes the legacy `PrivateKey` out of the store, for the tunnel to move it to its
    /// key file; the store can be saved afterwards. Only the tunnel calls this.
    pub fn take_private_key(&mut self) -> Option<Key> {
        self.private_key.take()
    }

    /// Parses the store file's text; see the module documentation for the format.
    pub fn parse(text: &str) -> Result<PeerStore, StoreError> {
        Parser::default().run(text)
    }

    /// The file's text: the header comment, `[Interface]`, then the peers in order.
    pub fn to_text(&self) -> String {
        let mut out = String::from(HEADER);
        // `write!` into a String cannot fail; the results are ignored below.
        out.push_str("\n[Interface]\n");
        let _ = writeln!(out, "# PublicKey = {}", self.public_key.to_base64());
        // Only so that to_text reads back; `save` refuses a store that has one.
        if let Some(k) = self.private_key {
            let _ = writeln!(out, "PrivateKey = {}", k.to_base64());
        }
        if let Some(port) = self.listen_port {
            let _ = writeln!(out, "ListenPort = {port}");
        }
        for peer in &self.peers {
            out.push_str("\n[Peer]\n");
            if let Some(name) = &peer.name {
                let _ = writeln!(out, "# Name = {name}");
            }
            let _ = writeln!(out, "# Role = {}", peer.role);
            if let Some(expires) = peer.expires {
                let _ = writeln!(out, "# Expires = {}", format_expiry(expires));
            }
            if peer.disabled {
                out.push_str("# Disabled = true\n");
            }
            let _ = writeln!(out, "PublicKey = {}", peer.public_key.to_base64());
            if let Some(psk) = peer.preshared_key {
                let _ = writeln!(out, "PresharedKey = {}", psk.to_base64());
            }
            // `wg` rejects `AllowedIPs =` with nothing after it, so no entries: no line.
            if !peer.allowed_ips.is_empty() {
                let list: Vec<String> = peer.allowed_ips.iter().map(Cidr::to_string).collect();
                let _ = writeln!(out, "AllowedIPs = {}", list.join(", "));
            }
            if let Some(endpoint) = &peer.endpoint {
                let _ = writeln!(out, "Endpoint = {endpoint}");
            }
            if let Some(seconds) = peer.persistent_keepalive {
                let _ = writeln!(out, "PersistentKeepalive = {seconds}");
            }
        }
        out
    }

    /// Reads and parses the store file. Warns when users outside the owner and group
    /// may read or change it (it says who may use the tunnel), or when it still holds a
    /// private key that others than its owner may read.
    pub fn load(path: &Path) -> Result<PeerStore, StoreError> {
        let read_error = |source| StoreError::Read {
            path: path.to_owned(),
            source,
        };
        let mut file = fs::File::open(path).map_err(read_error)?;
        let mode = file.metadata().map_err(read_error)?.permissions().mode();
        if mode & 0o007 != 0 {
            let mode = format!("{:o}", mode & 0o777);
            tracing::warn!(
                path = %path.display(),
                %mode,
                "others than the tunnel's and the hub's users may read or change the peer \
                 store; run chmod 660 on it"
            );
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(read_error)?;
        let store = Self::parse_bytes(&bytes).map_err(|e| e.with_path(path))?;
        if store.has_private_key() && mode & 0o077 != 0 {
            let mode = format!("{:o}", mode & 0o777);
            tracing::warn!(
                path = %path.display(),
                %mode,
                "the peer store still holds the gateway's private key and others than its \
                 owner may read it; start the tunnel, which moves the key to its own file"
            );
        }
        Ok(store)
    }

    /// Creates the store for a new gateway (mode 0660, parent directories 0700 when it
    /// makes them): no peers, `public_key` and `listen_port`. When the file exists
    /// already it is loaded instead, so two processes creating it at once end up with
    /// the same one.
    pub fn create(path: &Path, public_key: Key, listen_port: u16) -> Result<PeerStore, StoreError> {
        let write_error = |source| StoreError::Write {
            path: path.to_owned(),
            source,
        };
        create_private_dir(parent_dir(path)).map_err(write_error)?;
        let store = PeerStore::new(public_key, Some(listen_port));
        match write_atomically(
            path,
            store.to_text().as_bytes(),
            Publish::IfAbsent,
            STORE_MODE,
        )
        .map_err(write_error)?
        {
            Published::Yes => {
                tracing::info!(path = %path.display(), "created the peer store");
                Ok(store)
            }
            // Someone else created it between our check and our write: theirs wins.
            Published::AlreadyExists => Self::load(path),
        }
    }

    /// Writes the store atomically: a temporary file in the same directory (mode 0660),
    /// fsync, rename over `path`, fsync the directory. Refuses a store that would not
    /// read back unchanged, and one that still holds a private key.
    pub fn save(&self, path: &Path) -> Result<(), StoreError> {
        if self.has_private_key() {
            return Err(StoreError::HoldsPrivateKey {
                path: path.to_owned(),
            });
        }
        let text = self.to_text();
        match PeerStore::parse(&text) {
            Ok(back) if back == *self => {}
            Ok(_) => {
                return Err(StoreError::Invalid {
                    path: path.to_owned(),
                    message: "a value would not read back as it is; endpoints must be \
                              host:port without spaces or `#`"
                        .to_owned(),
                })
            }
            Err(e) => {
                return Err(StoreError::Invalid {
                    path: path.to_owned(),
                    message: format!("the text it would write is not a valid store: {e}"),
                })
            }
        }
        write_atomically(path, text.as_bytes(), Publish::Replace, STORE_MODE)
            .map(|_| ())
            .map_err(|source| StoreError::Write {
                path: path.to_owned(),
                source,
            })
    }

    /// The peer with this name, or else with this base64 public key.
    pub fn find(&self, name_or_key: &str) -> Option<&StoredPeer> {
        self.position(name_or_key).and_then(|i| self.peers.get(i))
    }

    /// The peer with this name, or else with this base64 public key.
    pub fn find_mut(&mut self, name_or_key: &str) -> Option<&mut StoredPeer> {
        self.position(name_or_key)
            .and_then(|i| self.peers.get_mut(i))
    }

    fn position(&self, name_or_key: &str) -> Option<usize> {
        if let Some(i) = self
            .peers
            .iter()
            .position(|p| p.name.as_deref() == Some(name_or_key))
        {
            return Some(i);
        }
        let key = Key::from_base64(name_or_key).ok()?;
        self.peers.iter().position(|p| p.public_key == key)
    }

    /// The lowest address of `subnet` that is not the gateway's (`gateway`), not
    /// reserved (the network address, and on IPv4 the broadcast address, when the subnet
    /// has more than two addresses) and not inside any peer's allowed IPs, disabled and
    /// expired peers included. `None` when the subnet is full.
    pub fn next_free_address(&self, subnet: Cidr, gateway: IpAddr) -> Option<IpAddr> {
        let max_prefix: u32 = if subnet.addr().is_ipv4() { 32 } else { 128 };
        let host_bits = max_prefix - u32::from(subnet.prefix());
        let last: u128 = low_bits(host_bits);
        let (mut n, end) = if host_bits >= 2 {
            (
                1,
                if subnet.addr().is_ipv4() {
                    last - 1
                } else {
                    last
                },
            )
        } else {
            (0, last)
        };
        while n <= end {
            let ip = subnet.nth(n)?;
            if ip == gateway {
                n = n.checked_add(1)?;
                continue;
            }
            let taken = self
                .peers
                .iter()
                .flat_map(|p| p.allowed_ips.iter())
                .find(|c| c.contains(ip));
            match taken {
                None => return Some(ip),
                // A peer's entry covers the whole subnet.
                Some(c) if c.prefix() <= subnet.prefix() => return None,
                // Jump past the entry: it lies inside the subnet, aligned on its size.
                Some(c) => n = (n | low_bits(max_prefix - u32::from(c.prefix()))).checked_add(1)?,
            }
        }
        None
    }

    fn parse_bytes(bytes: &[u8]) -> Result<PeerStore, StoreError> {
        match std::str::from_utf8(bytes) {
            Ok(text) => PeerStore::parse(text),
            Err(e) => {
                let before = bytes.get(..e.valid_up_to()).unwrap_or_default();
                let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
                Err(parse_error(
                    line,
                    "the file is not UTF-8 text; expected a WireGuard config as `wg showconf` writes",
                ))
            }
        }
    }
}

/// A number with the lowest `bits` bits set (all of them for 128 and more).
fn low_bits(bits: u32) -> u128 {
    1u128.checked_shl(bits).map_or(u128::MAX, |v| v - 1)
}

impl StoredPeer {
    /// A peer with only its public key: no name, role installer, never expires.
    pub fn new(public_key: Key) -> StoredPeer {
        StoredPeer {
            public_key,
            preshared_key: None,
            allowed_ips: Vec::new(),
            endpoint: None,
            persistent_keepalive: None,
            name: None,
            role: Role::Installer,
            expires: None,
            disabled: false,
        }
    }

    /// True once `now` is past the expiry instant.
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        self.expires.is_some_and(|e| now > e)
    }

    /// Neither disabled nor expired: the tunnel accepts this peer.
    pub fn is_active(&self, now: OffsetDateTime) -> bool {
        !self.disabled && !self.is_expired(now)
    }

    /// The peer's name if it has one, else its public key.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => self.public_key.to_base64(),
        }
    }
}

impl StoreError {
    fn with_path(self, file: &Path) -> StoreError {
        match self {
            StoreError::Parse { line, message, .. } => StoreError::Parse {
                path: Some(file.to_owned()),
                line,
                message,
            },
            other => other,
        }
    }
}

/// Parses a user-given expiry: `YYYY-MM-DD` (the peer works through the end of that day,
/// UTC: 23:59:59Z) or an RFC 3339 time. The result is in UTC.
pub fn parse_expiry(s: &str) -> Result<OffsetDateTime, String> {
    let s = s.trim();
    let wrong = || {
        format!(
            "expected a date like 2026-12-31 (the peer then works through the end of that day, \
             UTC) or an RFC 3339 time like 2026-12-31T18:00:00Z or 2026-12-31T18:00:00+01:00, \
             found {}",
            shown(s)
        )
    };
    if let Ok(date) = Date::parse(s, DATE) {
        return date
            .with_hms(23, 59, 59)
            .map(|t| t.assume_utc())
            .map_err(|_| wrong());
    }
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .and_then(|t| t.checked_to_offset(UtcOffset::UTC))
        .ok_or_else(wrong)
}

const DATE: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]");

/// RFC 3339 in UTC; a time RFC 3339 cannot hold (year past 9999) comes out as text that
/// [`parse_expiry`] rejects, so [`PeerStore::save`] refuses it.
fn format_expiry(t: OffsetDateTime) -> String {
    t.checked_to_offset(UtcOffset::UTC)
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "out-of-range".to_owned())
}

/// Validates a peer name: 1 to 32 ASCII letters, digits, `-`, `_` and `.`.
pub fn validate_name(s: &str) -> Result<(), String> {
    let ok = (1..=MAX_NAME_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "a peer name is 1 to {MAX_NAME_LEN} characters of letters (a-z, A-Z), digits, \
             '-', '_' and '.'; found {}",
            shown(s)
        ))
    }
}

/// User text for an error message: quoted, escaped, cut at 48 characters.
fn shown(s: &str) -> String {
    let mut t: String = s.chars().take(48).collect();
    if s.chars().nth(48).is_some() {
        t.push_str("...");
    }
    format!("`{}`", t.escape_debug())
}

/// For a key such as `PrivateKeyyAnz...`: a known key run together with what follows,
/// as when the `=` is missing and the value ends in base64 padding.
fn missing_equals(key: &str, known: &[&str]) -> Option<String> {
    let k = known.iter().find(|k| {
        key.len() > k.len()
            && key
                .get(..k.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(k))
    })?;
    Some(format!(
        "expected `{k} = <value>`; the `=` after {k} is missing"
    ))
}

/// The key of a line for an error message. A "key" that is not a short word is likely a
/// key and value run together (`PrivateKey<base64>` with the `=` missing), and is not
/// repeated: it may hold a private key.
fn shown_key(key: &str) -> String {
    if key.len() <= 24 && key.bytes().all(|b| b.is_ascii_alphabetic()) {
        format!("`{key}`")
    } else {
        "this line's key".to_owned()
    }
}

fn parse_error(line: usize, message: impl Into<String>) -> StoreError {
    StoreError::Parse {
        path: None,
        line,
        message: message.into(),
    }
}

/// wg's `char_is_space` (wireguard-tools `src/ctype.h`): tab, LF, VT, FF, CR and space.
/// Note VT, which Rust's `is_ascii_whitespace` leaves out.
fn is_wg_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\u{0b}' | '\u{0c}' | '\r' | ' ')
}

/// Gatehouse's fields of a peer, kept in comments (`# Name = alice`).
const FIELDS: [&str; 4] = ["Name", "Role", "Expires", "Disabled"];

/// Gatehouse's fields of `[Interface]`: the gateway's public key.
const INTERFACE_FIELDS: [&str; 1] = ["PublicKey"];

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Section {
    #[default]
    Preamble,
    Interface,
    Peer,
}

#[derive(Default)]
struct Parser {
    section: Section,
    interface_line: Option<usize>,
    private_key: Option<Key>,
    /// `# PublicKey` of `[Interface]`, with its line.
    public_key: Option<(Key, usize)>,
    listen_port: Option<u16>,
    current: Option<PeerDraft>,
    peers: Vec<(usize, StoredPeer)>,
    by_key: HashMap<Key, usize>,
    by_name: HashMap<String, usize>,
    by_allowed_ip: HashMap<Cidr, usize>,
}

/// A `[Peer]` section being read; each field `None` until its line is seen.
struct PeerDraft {
    line: usize,
    /// A key line was seen, so gatehouse field comments may no longer come.
    keys_started: bool,
    public_key: Option<Key>,
    preshared_key: Option<Key>,
    allowed_ips: Vec<Cidr>,
    endpoint: Option<String>,
    persistent_keepalive: Option<Option<u16>>,
    name: Option<String>,
    role: Option<Role>,
    expires: Option<OffsetDateTime>,
    disabled: Option<bool>,
}

impl PeerDraft {
    fn new(line: usize) -> PeerDraft {
        PeerDraft {
            line,
            keys_started: false,
            public_key: None,
            preshared_key: None,
            allowed_ips: Vec::new(),
            endpoint: None,
            persistent_keepalive: None,
            name: None,
            role: None,
            expires: None,
            disabled: None,
        }
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T, key: &str, line: usize) -> Result<(), StoreError> {
    if slot.is_some() {
        return Err(parse_error(
            line,
            format!("`{key}` is given twice in this section; keep one"),
        ));
    }
    *slot = Some(value);
    Ok(())
}

impl Parser {
    fn run(mut self, text: &str) -> Result<PeerStore, StoreError> {
        for (i, raw) in text.split('\n').enumerate() {
            self.read_line(i + 1, raw)?;
        }
        let last_line = text.lines().count().max(1);
        self.finish_peer()?;
        let Some(interface_line) = self.interface_line else {
            return Err(parse_error(
                last_line,
                "the file has no [Interface] section; expected one with the gateway's \
                 `# PublicKey = <base64 key>` (the tunnel writes it)",
            ));
        };
        let own = match (self.public_key, self.private_key) {
            (Some((public, _)), None) => public,
            (None, Some(private)) => private.public(),
            (Some((public, line)), Some(private)) => {
                if public != private.public() {
                    return Err(parse_error(
                        line,
                        "this `# PublicKey` is not the public key of the PrivateKey in this \
                         [Interface]; remove the `# PublicKey` line (the tunnel writes it \
                         again)",
                    ));
                }
                public
            }
            (None, None) => {
                return Err(parse_error(
                    interface_line,
                    "this [Interface] has no `# PublicKey = <base64 key>` (the gateway's \
                     public key); the tunnel writes it from its key file when it starts, so \
                     start `gatehouse tunnel` once",
                ))
            }
        };
        if let Some((line, _)) = self.peers.iter().find(|(_, p)| p.public_key == own) {
            return Err(parse_error(
                *line,
                "this peer's PublicKey is the gateway's own (the public key of [Interface]); \
                 a peer needs a key pair of its own",
            ));
        }
        Ok(PeerStore {
            public_key: own,
            private_key: self.private_key,
            listen_port: self.listen_port,
            peers: self.peers.into_iter().map(|(_, p)| p).collect(),
        })
    }

    fn read_line(&mut self, line: usize, raw: &str) -> Result<(), StoreError> {
        let trimmed = raw.trim_start_matches(is_wg_space);
        if let Some(comment) = trimmed.strip_prefix('#') {
            return self.comment(line, comment);
        }
        // As wg does: drop the comment, then every whitespace character.
        let content = raw.split('#').next().unwrap_or_default();
        let cleaned: String = content.chars().filter(|&c| !is_wg_space(c)).collect();
        if cleaned.is_empty() {
            return Ok(());
        }
        if cleaned.eq_ignore_ascii_case("[Interface]") {
            self.finish_peer()?;
            if let Some(first) = self.interface_line {
                return Err(parse_error(
                    line,
                    format!(
                        "a second [Interface] section (the first is on line {first}); \
                         the file has one"
                    ),
                ));
            }
            self.interface_line = Some(line);
            self.section = Section::Interface;
            return Ok(());
        }
        if cleaned.eq_ignore_ascii_case("[Peer]") {
            self.finish_peer()?;
            self.current = Some(PeerDraft::new(line));
            self.section = Section::Peer;
            return Ok(());
        }
        if cleaned.starts_with('[') {
            return Err(parse_error(
                line,
                format!(
                    "unknown section {}; expected [Interface] or [Peer]",
                    shown(&cleaned)
                ),
            ));
        }
        let Some((key, value)) = cleaned.split_once('=') else {
            return Err(parse_error(
                line,
                "expected `Key = value`, a section header like [Peer], or a `#` comment",
            ));
        };
        match self.section {
            Section::Preamble => Err(parse_error(
                line,
                format!(
                    "{} comes before any section; the file starts with [Interface]",
                    shown_key(key)
                ),
            )),
            Section::Interface => self.interface_key(line, key, value),
            Section::Peer => self.peer_key(line, key, value),
        }
    }

    fn interface_key(&mut self, line: usize, key: &str, value: &str) -> Result<(), StoreError> {
        const KEYS: [&str; 3] = ["PrivateKey", "ListenPort", "FwMark"];
        let key = canonical(key, &KEYS).ok_or_else(|| {
            parse_error(
                line,
                missing_equals(key, &KEYS).unwrap_or_else(|| {
                    format!(
                        "{} is not a key of [Interface]; expected ListenPort \
                     (wg-quick keys such as Address, DNS and MTU belong in client configs, \
                     not in the peer store)",
                        shown_key(key)
                    )
                }),
            )
        })?;
        if value.is_empty() {
            return Err(empty_value(line, key));
        }
        match key {
            "PrivateKey" => {
                let k = Key::from_base64(value)
                    .map_err(|e| parse_error(line, format!("PrivateKey: {e}")))?;
                set_once(&mut self.private_key, k, key, line)
            }
            "ListenPort" => {
                let port = parse_u16(value).ok_or_else(|| {
                    parse_error(
                        line,
                        format!(
                            "ListenPort: expected a UDP port number from 0 to 65535, found {}",
                            shown(value)
                        ),
                    )
                })?;
                set_once(&mut self.listen_port, port, key, line)
            }
            _ => Err(parse_error(
                line,
                "FwMark is not supported by gatehouse's tunnel; remove the line",
            )),
        }
    }

    fn peer_key(&mut self, line: usize, key: &str, value: &str) -> Result<(), StoreError> {
        let Some(peer) = self.current.as_mut() else {
            // The section is Peer only while a draft is open.
            return Err(parse_error(line, "a key outside any [Peer] section"));
        };
        peer.keys_started = true;
        const KEYS: [&str; 5] = [
            "PublicKey",
            "PresharedKey",
            "AllowedIPs",
            "Endpoint",
            "PersistentKeepalive",
        ];
        let key = canonical(key, &KEYS).ok_or_else(|| {
            parse_error(
                line,
                missing_equals(key, &KEYS).unwrap_or_else(|| {
                    format!(
                        "{} is not a key of [Peer]; expected PublicKey, PresharedKey, \
                         AllowedIPs, Endpoint or PersistentKeepalive",
                        shown_key(key)
                    )
                }),
            )
        })?;
        if value.is_empty() {
            return Err(empty_value(line, key));
        }
        match key {
            "PublicKey" | "PresharedKey" => {
                let k = Key::from_base64(value)
                    .map_err(|e| parse_error(line, format!("{key}: {e}")))?;
                let slot = if key == "PublicKey" {
                    &mut peer.public_key
                } else {
                    &mut peer.preshared_key
                };
                set_once(slot, k, key, line)
            }
            "AllowedIPs" => {
                for entry in value.split(',') {
                    let cidr = parse_allowed_ip(entry)
                        .map_err(|m| parse_error(line, format!("AllowedIPs: {m}")))?;
                    peer.allowed_ips.push(cidr);
                }
                Ok(())
            }
            "Endpoint" => {
                check_endpoint(value).map_err(|m| parse_error(line, format!("Endpoint: {m}")))?;
                set_once(&mut peer.endpoint, value.to_owned(), key, line)
            }
            _ => {
                let seconds = if value.eq_ignore_ascii_case("off") {
                    None
                } else {
                    Some(parse_u16(value).ok_or_else(|| {
                        parse_error(
                            line,
                            format!(
                                "PersistentKeepalive: expected seconds from 0 to 65535 or \
                                 `off`, found {}",
                                shown(value)
                            ),
                        )
                    })?)
                };
                set_once(&mut peer.persistent_keepalive, seconds, key, line)
            }
        }
    }

    /// A full-line comment: a gatehouse field (`# Name = alice`) or free text.
    fn comment(&mut self, line: usize, comment: &str) -> Result<(), StoreError> {
        let Some((key, value)) = comment.split_once('=') else {
            return Ok(());
        };
        let key = key.trim_matches(is_wg_space);
        let value = value.trim_matches(is_wg_space);
        if self.section == Section::Interface {
            if let Some(field) = canonical(key, &INTERFACE_FIELDS) {
                return self.interface_field(line, field, value);
            }
        }
        let Some(field) = canonical(key, &FIELDS) else {
            return Ok(());
        };
        let placement = format!(
            "`# {field} = ...` is a gatehouse peer field; it goes right after a [Peer] line, \
             before PublicKey and the peer's other keys"
        );
        let Some(peer) = self.current.as_mut() else {
            return Err(parse_error(line, placement));
        };
        if peer.keys_started {
            return Err(parse_error(line, placement));
        }
        if value.is_empty() {
            return Err(parse_error(
                line,
                format!("`# {field}` needs a value after `=`"),
            ));
        }
        let bad = |m: String| parse_error(line, format!("`# {field}`: {m}"));
        match field {
            "Name" => {
                validate_name(value).map_err(bad)?;
                set_once(&mut peer.name, value.to_owned(), field, line)
            }
            "Role" => {
                let role: Role = value.to_ascii_lowercase().parse().map_err(bad)?;
                set_once(&mut peer.role, role, field, line)
            }
            "Expires" => {
                let t = parse_expiry(value).map_err(bad)?;
                set_once(&mut peer.expires, t, field, line)
            }
            _ => {
                let disabled = if value.eq_ignore_ascii_case("true") {
                    true
                } else if value.eq_ignore_ascii_case("false") {
                    false
                } else {
                    return Err(bad(format!(
                        "expected true or false, found {}",
                        shown(value)
                    )));
                };
                set_once(&mut peer.disabled, disabled, field, line)
            }
        }
    }

    /// `# PublicKey = ...` in `[Interface]`.
    fn interface_field(&mut self, line: usize, field: &str, value: &str) -> Result<(), StoreError> {
        if value.is_empty() {
            return Err(parse_error(
                line,
                format!("`# {field}` needs a value after `=`"),
            ));
        }
        let k =
            Key::from_base64(value).map_err(|e| parse_error(line, format!("`# {field}`: {e}")))?;
        if let Some((_, first)) = self.public_key {
            return Err(parse_error(
                line,
                format!(
                    "`# {field}` is given twice in this section (first on line {first}); keep one"
                ),
            ));
        }
        self.public_key = Some((k, line));
        Ok(())
    }

    /// Closes the open `[Peer]`, checking it against the peers before it.
    fn finish_peer(&mut self) -> Result<(), StoreError> {
        let Some(draft) = self.current.take() else {
            return Ok(());
        };
        let line = draft.line;
        let Some(public_key) = draft.public_key else {
            return Err(parse_error(
                line,
                "this [Peer] has no PublicKey; expected `PublicKey = <base64 key>`",
            ));
        };
        if let Some(first) = self.by_key.insert(public_key, line) {
            return Err(parse_error(
                line,
                format!("this peer's PublicKey is also the key of the peer on line {first}; each peer appears once"),
            ));
        }
        if let Some(name) = &draft.name {
            if let Some(first) = self.by_name.insert(name.clone(), line) {
                return Err(parse_error(
                    line,
                    format!("the name `{name}` is also used by the peer on line {first}; names are unique"),
                ));
            }
        }
        for cidr in &draft.allowed_ips {
            let network = cidr.network();
            match self.by_allowed_ip.get(&network) {
                Some(&first) if first != line => {
                    return Err(parse_error(
                        line,
                        format!(
                            "AllowedIPs {cidr} is also given to the peer on line {first}; \
                             WireGuard would silently move it to the later peer"
                        ),
                    ));
                }
                _ => {
                    self.by_allowed_ip.insert(network, line);
                }
            }
        }
        self.peers.push((
            line,
            StoredPeer {
                public_key,
                preshared_key: draft.preshared_key,
                allowed_ips: draft.allowed_ips,
                endpoint: draft.endpoint,
                persistent_keepalive: draft.persistent_keepalive.flatten(),
                name: draft.name,
                role: draft.role.unwrap_or(Role::Installer),
                expires: draft.expires,
                disabled: draft.disabled.unwrap_or(false),
            },
        ));
        Ok(())
    }
}

/// The canonical spelling of `key` among `known`, compared case-insensitively as wg does.
fn canonical(key: &str, known: &[&'static str]) -> Option<&'static str> {
    known.iter().copied().find(|k| k.eq_ignore_ascii_case(key))
}

fn empty_value(line: usize, key: &str) -> StoreError {
    parse_error(
        line,
        format!("`{key}` needs a value after `=` (wg rejects an empty one too)"),
    )
}

/// Decimal digits only (wg starts with a digit and uses strtoul; Rust's parser would
/// also take a `+`).
fn parse_u16(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// One `AllowedIPs` entry: `addr/prefix`, or a bare address meaning one host (as wg).
fn parse_allowed_ip(entry: &str) -> Result<Cidr, String> {
    if entry.is_empty() {
        return Err("an empty entry (a stray comma?); expected addresses like \
                    10.77.0.2/32, fd77::2/128 separated by commas"
            .to_owned());
    }
    if entry.starts_with('+') || entry.starts_with('-') {
        return Err(format!(
            "{} adds or removes an entry, which only `wg set` does; a config file lists them",
            shown(entry)
        ));
    }
    if entry.contains('/') {
        entry.parse::<Cidr>().map_err(|e| e.to_string())
    } else {
        entry.parse::<IpAddr>().map(Cidr::host).map_err(|_| {
            format!(
                "expected an address with prefix length like 10.77.0.2/32 or fd77::2/128, found {}",
                shown(entry)
            )
        })
    }
}

/// `host:port` or `[v6]:port`, split as wg's `parse_endpoint` does; the port must be a
/// number (wg would also look up a service name).
fn check_endpoint(value: &str) -> Result<(), String> {
    let expected = || {
        format!(
            "expected host:port, like vpn.example.com:51820, 192.0.2.1:51820 or \
             [2001:db8::1]:51820, found {}",
            shown(value)
        )
    };
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(expected)?;
        (host, after.strip_prefix(':').ok_or_else(expected)?)
    } else {
        value.rsplit_once(':').ok_or_else(expected)?
    };
    if host.is_empty() || parse_u16(port).is_none() {
        return Err(expected());
    }
    Ok(())
}

/// Creates `dir` and missing parents, 0700 (the data directory of a developer's run
/// is private to one user; on the box tmpfiles makes the shared ones beforehand).
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Publish {
    /// Rename over any existing file.
    Replace,
    /// Link into place only if nothing is there yet.
    IfAbsent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Published {
    Yes,
    AlreadyExists,
}

/// Makes temporary file names unique within the process (the pid covers processes).
static TEMP_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Writes `bytes` to a new file next to `path` with exactly `mode` (set with fchmod, so
/// the umask does not narrow it), fsyncs it, moves it into place and fsyncs the
/// directory, so that after a crash `path` is either the old or the new file.
pub(crate) fn write_atomically(
    path: &Path,
    bytes: &[u8],
    publish: Publish,
    mode: u32,
) -> io::Result<Published> {
    let dir = parent_dir(path);
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "the path does not name a file")
    })?;
    let (temp, mut file) = create_temp(dir, &file_name.to_string_lossy())?;
    let result = (|| {
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        let published = match publish {
            Publish::Replace => {
                fs::rename(&temp, path)?;
                Published::Yes
            }
            // A hard link never replaces an existing file, unlike rename.
            Publish::IfAbsent => match fs::hard_link(&temp, path) {
                Ok(()) => Published::Yes,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Published::AlreadyExists,
                Err(e) => return Err(e),
            },
        };
        fs::File::open(dir)?.sync_all()?;
        Ok(published)
    })();
    // After a rename the temporary name is gone already; otherwise remove it.
    if publish == Publish::IfAbsent || result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

fn create_temp(dir: &Path, file_name: &str) -> io::Result<(PathBuf, fs::File)> {
    let mut last_error = None;
    for _ in 0..16 {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = dir.join(format!(".{file_name}.tmp-{}-{n}", std::process::id()));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
        {
            Ok(file) => return Ok((temp, file)),
            // A leftover from a crashed process that had our pid: try the next name.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_error = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("no free temporary file name")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use time::macros::datetime;

    // Fixture keys (`wg genkey`, `wg pubkey`).
    const SERVER_PRIVATE: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
    const SERVER_PUBLIC: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";
    const ALICE: &str = "YSDLeGOtBku7GnYN8mxSQzbYEqb+GuhSZmUHYM9uEhQ=";
    const BOB: &str = "cqQo0are0POFxMLgI9f+eUk5ElWaazQyo7Ek/SZuF3Q=";
    const CAROL: &str = "kTEZUBX/d8MOMv3trLUYJgbkhrKVmpcomYj/sqk4NgE=";
    const PSK: &str = "er6Y5j6uzyrsC32mvLcwcl9YgdzOqCViMBh/Yq5Blek=";

    fn key(s: &str) -> Key {
        Key::from_base64(s).unwrap()
    }

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    /// What `to_text` writes for [`sample`], byte for byte.
    const SAMPLE_TEXT: &str = "\
# Gatehouse's WireGuard peer store. Managed by gatehouse: change it with `gatehouse peer`.
# It is a plain WireGuard config that `wg setconf` accepts as it is. The gateway's private
# key is not here but in its own file (tunnel.private_key_file); the PublicKey comment in
# [Interface] is its public half. The comments right after a [Peer] line (Name, Role,
# Expires, Disabled) are gatehouse's fields for that peer; other comments are dropped when
# gatehouse saves the file. Disabled and expired peers stay listed: gatehouse's tunnel
# refuses them, a plain `wg setconf` would not.

[Interface]
# PublicKey = HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=
ListenPort = 51820

[Peer]
# Name = alice
# Role = admin
PublicKey = YSDLeGOtBku7GnYN8mxSQzbYEqb+GuhSZmUHYM9uEhQ=
PresharedKey = er6Y5j6uzyrsC32mvLcwcl9YgdzOqCViMBh/Yq5Blek=
AllowedIPs = 10.77.0.2/32, fd77::2/128
PersistentKeepalive = 25

[Peer]
# Name = bob.installer
# Role = installer
# Expires = 2026-12-31T23:59:59Z
# Disabled = true
PublicKey = cqQo0are0POFxMLgI9f+eUk5ElWaazQyo7Ek/SZuF3Q=
AllowedIPs = 10.77.0.3/32
Endpoint = 192.0.2.7:51820

[Peer]
# Role = installer
PublicKey = kTEZUBX/d8MOMv3trLUYJgbkhrKVmpcomYj/sqk4NgE=
";

    fn sample() -> PeerStore {
        PeerStore {
            public_key: key(SERVER_PUBLIC),
            private_key: None,
            listen_port: Some(51820),
            peers: vec![
                StoredPeer {
                    preshared_key: Some(key(PSK)),
                    allowed_ips: vec![cidr("10.77.0.2/32"), cidr("fd77::2/128")],
                    persistent_keepalive: Some(25),
                    name: Some("alice".into()),
                    role: Role::Admin,
                    ..StoredPeer::new(key(ALICE))
                },
                StoredPeer {
                    allowed_ips: vec![cidr("10.77.0.3/32")],
                    endpoint: Some("192.0.2.7:51820".into()),
                    name: Some("bob.installer".into()),
                    expires: Some(datetime!(2026-12-31 23:59:59 UTC)),
                    disabled: true,
                    ..StoredPeer::new(key(BOB))
                },
                StoredPeer::new(key(CAROL)),
            ],
        }
    }

    fn parse_err(text: &str) -> (usize, String) {
        match PeerStore::parse(text) {
            Err(StoreError::Parse {
                line,
                message,
                path: None,
            }) => (line, message),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    fn with_interface(rest: &str) -> String {
        format!("[Interface]\n# PublicKey = {SERVER_PUBLIC}\n{rest}")
    }

    #[test]
    fn fixture_keys_are_consistent() {
        assert_eq!(key(SERVER_PRIVATE).public(), key(SERVER_PUBLIC));
    }

    #[test]
    fn to_text_matches_fixture() {
        assert_eq!(sample().to_text(), SAMPLE_TEXT);
    }

    #[test]
    fn parses_fixture() {
        assert_eq!(PeerStore::parse(SAMPLE_TEXT).unwrap(), sample());
    }

    #[test]
    fn round_trips() {
        let gw = Key::generate_private().public();
        let mut stores = vec![
            sample(),
            PeerStore::new(gw, None),
            PeerStore::new(gw, Some(0)),
        ];
        let mut odd = sample();
        odd.peers[0].expires = Some(datetime!(2030-02-03 04:05:06.789 +02:00));
        odd.peers[0].persistent_keepalive = Some(0);
        odd.peers[1].endpoint = Some("[2001:db8::1]:65535".into());
        odd.peers[1].allowed_ips = vec![cidr("0.0.0.0/0"), cidr("::/0")];
        odd.peers[2].name = Some("A-z_0.9".repeat(4));
        odd.peers[2].endpoint = Some("vpn.example.com:1".into());
        stores.push(odd);
        for store in stores {
            let text = store.to_text();
            assert_eq!(PeerStore::parse(&text).unwrap(), store, "{text}");
        }
    }

    /// A file as a person might write it, using what wg's parser allows: case, spaces
    /// inside keys and values, CRLF, VT, inline comments, repeated AllowedIPs, bare
    /// addresses, `off`, leading zeros. `wg_setconf_accepts_our_files` checks that wg
    /// takes it too.
    fn hand_written() -> String {
        format!(
            "# a hand-written file\r\n\
             [interface]\r\n\
             private key = {SERVER_PRIVATE}   # inline comment\r\n\
             listenport=51820\r\n\
             \r\n\
             [ PEER ]\r\n\
             #name=alice\r\n\
             # ROLE =  Admin\r\n\
             #  a free comment, kept out of the fields\r\n\
             #   Disabled = FALSE\r\n\
             publickey = {ALICE}\r\n\
             AllowedIPs = 10.77.0.2/32,\tfd77::2/128\r\n\
             AllowedIPs = 10.77.1.0/24 # a second line adds to the list\r\n\
             allowedips = 10.77.2.9\r\n\
             Endpoint = 192.0.2.7 : 51820\r\n\
             PersistentKeepalive = off\r\n\
             \u{0b}\r\n\
             [Peer]\n\
             # Expires = 2026-12-31\n\
             PublicKey = {BOB}\n\
             PersistentKeepalive = 0025"
        )
    }

    #[test]
    fn reads_what_wg_reads() {
        let store = PeerStore::parse(&hand_written()).unwrap();
        // A hand-written (or legacy) file with the private key: its public half is the
        // gateway's public key, and the key is kept for the tunnel to move out.
        assert!(store.has_private_key());
        assert_eq!(store.public_key, key(SERVER_PUBLIC));
        assert_eq!(store.clone().take_private_key(), Some(key(SERVER_PRIVATE)));
        assert_eq!(store.listen_port, Some(51820));
        let alice = &store.peers[0];
        assert_eq!(alice.name.as_deref(), Some("alice"));
        assert_eq!(alice.role, Role::Admin);
        assert!(!alice.disabled);
        assert_eq!(
            alice.allowed_ips,
            vec![
                cidr("10.77.0.2/32"),
                cidr("fd77::2/128"),
                cidr("10.77.1.0/24"),
                cidr("10.77.2.9/32")
            ]
        );
        assert_eq!(alice.endpoint.as_deref(), Some("192.0.2.7:51820"));
        assert_eq!(alice.persistent_keepalive, None);
        let bob = &store.peers[1];
        assert_eq!(bob.role, Role::Installer, "least privilege when absent");
        assert_eq!(bob.expires, Some(datetime!(2026-12-31 23:59:59 UTC)));
        assert_eq!(bob.persistent_keepalive, Some(25));
        assert_eq!(bob.allowed_ips, vec![]);
    }

    #[test]
    fn reports_line_and_expectation() {
        let peer = |body: &str| with_interface(&format!("\n[Peer]\nPublicKey = {ALICE}\n{body}"));
        let cases: Vec<(String, usize, &str)> = vec![
            ("ListenPort = 51820\n".into(), 1, "comes before any section"),
            ("[Interface]\nAddress = 10.77.0.1/24\n".into(), 2, "not a key of [Interface]"),
            (with_interface("FwMark = 0x10\n"), 3, "FwMark is not supported"),
            (with_interface("ListenPort = \n"), 3, "needs a value"),
            (with_interface("ListenPort = 65536\n"), 3, "0 to 65535"),
            (with_interface("ListenPort = +5\n"), 3, "0 to 65535"),
            (with_interface("ListenPort = 1\nListenPort = 2\n"), 4, "given twice"),
            (with_interface("[Interface]\n"), 3, "second [Interface] section (the first is on line 1)"),
            (with_interface("[Peers]\n"), 3, "expected [Interface] or [Peer]"),
            (with_interface("just words\n"), 3, "expected `Key = value`"),
            ("[Interface]\nPrivateKey = abc\n".into(), 2, "44 characters"),
            ("[Interface]\nListenPort = 1\n".into(), 1, "has no `# PublicKey"),
            ("[Interface]\n# PublicKey = abc\n".into(), 2, "`# PublicKey`: a WireGuard key is 44"),
            ("[Interface]\n# PublicKey =\n".into(), 2, "needs a value"),
            (with_interface(&format!("#publickey={SERVER_PUBLIC}\n")), 3, "given twice in this section (first on line 2)"),
            (
                format!("[Interface]\n# PublicKey = {ALICE}\nPrivateKey = {SERVER_PRIVATE}\n"),
                2,
                "not the public key of the PrivateKey",
            ),
            (
                format!("[Interface]\nPrivateKey = {SERVER_PRIVATE}\n[Peer]\nPublicKey = {SERVER_PUBLIC}\n"),
                3,
                "the gateway's own",
            ),
            ("# only a comment\n\n".into(), 2, "no [Interface] section"),
            ("".into(), 1, "no [Interface] section"),
            (peer("Name = alice\n"), 6, "not a key of [Peer]"),
            (peer("AllowedIPs =\n"), 6, "needs a value"),
            (peer("AllowedIPs = 10.77.0.2/32,\n"), 6, "stray comma"),
            (peer("AllowedIPs = 10.77.0.2/33\n"), 6, "prefix length 33"),
            (peer("AllowedIPs = 10.77.0.300/32\n"), 6, "expected an address with prefix length"),
            (peer("AllowedIPs = +10.77.0.2/32\n"), 6, "only `wg set`"),
            (peer("AllowedIPs = 10.77.0.x\n"), 6, "expected an address with prefix length"),
            (peer("Endpoint = 192.0.2.7\n"), 6, "expected host:port"),
            (peer("Endpoint = [2001:db8::1:51820\n"), 6, "expected host:port"),
            (peer("Endpoint = :51820\n"), 6, "expected host:port"),
            (peer("Endpoint = host:http\n"), 6, "expected host:port"),
            (peer("PersistentKeepalive = 70000\n"), 6, "0 to 65535 or `off`"),
            (peer(&format!("PublicKey = {BOB}\n")), 6, "given twice"),
            (peer("PresharedKey = nope\n"), 6, "PresharedKey: a WireGuard key is 44"),
            (peer("# Name = alice\n"), 6, "goes right after a [Peer] line"),
            (with_interface("# Role = admin\n"), 3, "goes right after a [Peer] line"),
            (with_interface("[Peer]\n# Name = has space\n"), 4, "1 to 32 characters"),
            (with_interface("[Peer]\n# Name =\n"), 4, "needs a value"),
            (with_interface("[Peer]\n# Name = a\n# Name = b\n"), 5, "given twice"),
            (with_interface("[Peer]\n# Role = root\n"), 4, "expected admin or installer"),
            (with_interface("[Peer]\n# Expires = soon\n"), 4, "2026-12-31"),
            (with_interface("[Peer]\n# Disabled = yes\n"), 4, "true or false"),
            (with_interface("[Peer]\nAllowedIPs = 10.77.0.2/32\n[Peer]\n"), 3, "has no PublicKey"),
            (
                with_interface(&format!("[Peer]\nPublicKey = {ALICE}\n[Peer]\nPublicKey = {ALICE}\n")),
                5,
                "also the key of the peer on line 3",
            ),
            (
                with_interface(&format!(
                    "[Peer]\n# Name = x\nPublicKey = {ALICE}\n[Peer]\n# Name = x\nPublicKey = {BOB}\n"
                )),
                6,
                "also used by the peer on line 3",
            ),
            (
                with_interface(&format!(
                    "[Peer]\nPublicKey = {ALICE}\nAllowedIPs = 10.77.0.2/32\n\
                     [Peer]\nPublicKey = {BOB}\nAllowedIPs = 10.77.0.2\n"
                )),
                6,
                "also given to the peer on line 3",
            ),
            (
                with_interface(&format!("[Peer]\nPublicKey = {SERVER_PUBLIC}\n")),
                3,
                "the gateway's own",
            ),
        ];
        for (text, line, needle) in cases {
            let (got_line, message) = parse_err(&text);
            assert_eq!(got_line, line, "{text:?}: {message}");
            assert!(
                message.contains(needle),
                "{text:?}: {message:?} lacks {needle:?}"
            );
        }
    }

    #[test]
    fn error_display_names_file_and_line() {
        let e = parse_err("x = 1");
        assert_eq!(e.0, 1);
        let shown = PeerStore::parse("x = 1")
            .unwrap_err()
            .with_path(Path::new("/d/wg0.conf"));
        assert!(
            shown
                .to_string()
                .starts_with("peer store /d/wg0.conf line 1: `x` comes before"),
            "{shown}"
        );
    }

    #[test]
    fn private_key_never_echoed_in_errors() {
        let text = format!("[Interface]\nPrivateKey {SERVER_PRIVATE}\n");
        let (_, message) = parse_err(&text);
        assert!(!message.contains(&SERVER_PRIVATE[..20]), "{message}");
        assert!(
            message.contains("the `=` after PrivateKey is missing"),
            "{message}"
        );
        let text = format!("[Interface]\nX{SERVER_PRIVATE}\n");
        let (_, message) = parse_err(&text);
        assert!(!message.contains(&SERVER_PRIVATE[..20]), "{message}");
        assert!(
            message.contains("this line's key is not a key of [Interface]"),
            "{message}"
        );
    }

    /// Overlapping but different prefixes are legal: WireGuard routes the longest match.
    #[test]
    fn overlapping_allowed_ips_of_different_length_are_fine() {
        let text = with_interface(&format!(
            "[Peer]\nPublicKey = {ALICE}\nAllowedIPs = 10.77.0.0/24\n\
             [Peer]\nPublicKey = {BOB}\nAllowedIPs = 10.77.0.2/32\n"
        ));
        assert_eq!(PeerStore::parse(&text).unwrap().peers.len(), 2);
    }

    #[test]
    fn never_panics() {
        let base = SAMPLE_TEXT.to_owned()
            + "# Expires = 2026-01-01T00:00:00+01:00\nEndpoint = [::1]:5\n[peer]\nAllowedIPs=::/0\n";
        // Every prefix and every suffix.
        for (i, _) in base.char_indices() {
            let _ = PeerStore::parse(&base[..i]);
            let _ = PeerStore::parse(&base[i..]);
        }
        // Seeded random edits: replace, insert and delete characters.
        let alphabet: Vec<char> = "[]#=,:/. \t\r\n\u{0b}0123456789abcdefABCDEF+-xé"
            .chars()
            .collect();
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let chars: Vec<char> = base.chars().collect();
        for _ in 0..3000 {
            let mut text = chars.clone();
            for _ in 0..(next() % 6 + 1) {
                let at = (next() as usize) % (text.len() + 1);
                let c = alphabet[(next() as usize) % alphabet.len()];
                match next() % 3 {
                    0 if at < text.len() => text[at] = c,
                    1 => text.insert(at, c),
                    _ if at < text.len() => {
                        text.remove(at);
                    }
                    _ => {}
                }
            }
            let text: String = text.into_iter().collect();
            if let Ok(store) = PeerStore::parse(&text) {
                // Whatever parses also survives the trip through to_text.
                assert_eq!(PeerStore::parse(&store.to_text()).unwrap(), store, "{text}");
            }
        }
    }

    #[test]
    fn find_by_name_or_key() {
        let mut store = sample();
        assert_eq!(store.find("alice").unwrap().public_key, key(ALICE));
        assert_eq!(
            store.find(BOB).unwrap().name.as_deref(),
            Some("bob.installer")
        );
        assert_eq!(store.find(CAROL).unwrap().name, None);
        assert!(store.find("Alice").is_none());
        assert!(store.find(SERVER_PUBLIC).is_none());
        assert!(store.find("").is_none());
        store.find_mut("alice").unwrap().disabled = true;
        assert!(store.peers[0].disabled);
        assert_eq!(store.peers[2].label(), CAROL);
    }

    #[test]
    fn next_free_address_skips_gateway_peers_and_reserved() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let subnet = cidr("10.77.0.1/24");
        let gw = ip("10.77.0.1");
        let store = sample();
        assert_eq!(store.next_free_address(subnet, gw), Some(ip("10.77.0.4")));
        let empty = PeerStore::new(key(SERVER_PUBLIC), None);
        assert_eq!(empty.next_free_address(subnet, gw), Some(ip("10.77.0.2")));
        assert_eq!(
            empty.next_free_address(subnet, ip("10.77.0.200")),
            Some(ip("10.77.0.1"))
        );
        // Filling a /29 (.1 gateway, .2 to .6 usable, .7 broadcast).
        let small = cidr("10.9.0.0/29");
        let mut store = PeerStore::new(key(SERVER_PUBLIC), None);
        let mut given = Vec::new();
        while let Some(a) = store.next_free_address(small, ip("10.9.0.1")) {
            given.push(a);
            let mut p = StoredPeer::new(Key::generate_private().public());
            p.allowed_ips.push(Cidr::host(a));
            store.peers.push(p);
        }
        let want: Vec<IpAddr> = (2..=6).map(|i| ip(&format!("10.9.0.{i}"))).collect();
        assert_eq!(given, want);
        // A peer whose entry covers a block is jumped over in one step, even a huge one.
        let mut store = PeerStore::new(key(SERVER_PUBLIC), None);
        let mut p = StoredPeer::new(key(ALICE));
        p.allowed_ips = vec![cidr("fd77::/65"), cidr("10.77.0.0/25")];
        store.peers.push(p);
        assert_eq!(
            store.next_free_address(cidr("fd77::1/64"), ip("fd77::1")),
            Some(ip("fd77::8000:0:0:0"))
        );
        assert_eq!(store.next_free_address(subnet, gw), Some(ip("10.77.0.128")));
        // An entry covering the whole subnet leaves nothing.
        store.peers[0].allowed_ips.push(cidr("10.0.0.0/8"));
        assert_eq!(store.next_free_address(subnet, gw), None);
        // Two-address and one-address subnets have no reserved addresses.
        assert_eq!(
            empty.next_free_address(cidr("10.1.1.0/31"), ip("10.1.1.0")),
            Some(ip("10.1.1.1"))
        );
        assert_eq!(
            empty.next_free_address(cidr("10.1.1.5/32"), ip("10.1.1.5")),
            None
        );
        // IPv6 has no broadcast: the last address is usable.
        assert_eq!(
            empty.next_free_address(cidr("fd00::/126"), ip("fd00::1")),
            Some(ip("fd00::2"))
        );
        // Other address family entries do not count.
        let mut store = PeerStore::new(key(SERVER_PUBLIC), None);
        let mut p = StoredPeer::new(key(ALICE));
        p.allowed_ips = vec![cidr("::/0")];
        store.peers.push(p);
        assert_eq!(store.next_free_address(subnet, gw), Some(ip("10.77.0.2")));
    }

    #[test]
    fn expiry_forms() {
        assert_eq!(
            parse_expiry("2026-12-31").unwrap(),
            datetime!(2026-12-31 23:59:59 UTC)
        );
        assert_eq!(
            parse_expiry(" 2026-06-01T12:00:00+02:00 ").unwrap(),
            datetime!(2026-06-01 10:00:00 UTC)
        );
        assert_eq!(
            parse_expiry("2026-06-01T12:00:00.5Z").unwrap(),
            datetime!(2026-06-01 12:00:00.5 UTC)
        );
        assert_eq!(
            parse_expiry("2026-06-01T12:00:00Z").unwrap().offset(),
            UtcOffset::UTC
        );
        for bad in [
            "",
            "2026-13-01",
            "2026-02-30",
            "31.12.2026",
            "2026-12-31 12:00",
            "tomorrow",
            "2026-12-31T12:00:00",
        ] {
            let e = parse_expiry(bad).unwrap_err();
            assert!(
                e.contains("2026-12-31") && e.contains("RFC 3339"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn expiry_and_activity() {
        let mut p = StoredPeer::new(key(ALICE));
        let end = datetime!(2026-12-31 23:59:59 UTC);
        assert!(!p.is_expired(end) && p.is_active(end));
        p.expires = Some(end);
        assert!(!p.is_expired(end), "works through the last second");
        assert!(p.is_active(datetime!(2026-12-31 23:59:59 UTC)));
        assert!(p.is_expired(datetime!(2027-01-01 00:00 UTC)));
        assert!(!p.is_active(datetime!(2027-01-01 00:00 UTC)));
        p.expires = None;
        p.disabled = true;
        assert!(!p.is_active(end) && !p.is_expired(end));
    }

    #[test]
    fn names() {
        for good in ["a", "alice", "Bob-2", "x_y.z", &"n".repeat(32)] {
            assert_eq!(validate_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            &"n".repeat(33),
            "a b",
            "a#b",
            "a=b",
            "é",
            "a\n",
            "ünïcode",
            "a/b",
        ] {
            let e = validate_name(bad).unwrap_err();
            assert!(e.contains("1 to 32 characters"), "{bad}: {e}");
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn dir_entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wg0.conf");
        let store = sample();
        store.save(&path).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), SAMPLE_TEXT);
        assert!(!SAMPLE_TEXT.contains("PrivateKey"));
        assert_eq!(mode(&path), 0o660, "the hub's user edits it too");
        assert_eq!(PeerStore::load(&path).unwrap(), store);
        // Replacing an existing file, whatever its mode.
        for old in [0o644, 0o600] {
            fs::set_permissions(&path, fs::Permissions::from_mode(old)).unwrap();
            let mut changed = store.clone();
            changed.peers.pop();
            changed.save(&path).unwrap();
            assert_eq!(PeerStore::load(&path).unwrap(), changed);
            assert_eq!(mode(&path), 0o660);
        }
        assert_eq!(
            dir_entries(dir.path()),
            vec!["wg0.conf"],
            "no temporary files left"
        );
    }

    #[test]
    fn save_refuses_what_would_not_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wg0.conf");
        let cases: [fn(&mut PeerStore); 8] = [
            |s| s.peers[0].name = Some("has space".into()),
            |s| s.peers[0].name = Some("x\n[Peer]".into()),
            |s| s.peers[1].name = Some("alice".into()),
            |s| s.peers[1].public_key = s.peers[0].public_key,
            |s| s.peers[0].endpoint = Some("host:51820 # x".into()),
            |s| s.peers[0].endpoint = Some("no-port".into()),
            |s| s.peers[0].expires = Some(datetime!(9999-12-31 23:00 -05:00)),
            |s| s.peers[0].expires = Some(datetime!(-0001-01-01 00:00 UTC)),
        ];
        for (i, change) in cases.iter().enumerate() {
            let mut s = sample();
            change(&mut s);
            let e = s.save(&path).unwrap_err();
            assert!(matches!(e, StoreError::Invalid { .. }), "case {i}: {e}");
        }
        assert!(dir_entries(dir.path()).is_empty(), "nothing written");
    }

    #[test]
    fn create_makes_dirs_and_keeps_an_existing_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/gatehouse/wg0.conf");
        let created = PeerStore::create(&path, key(SERVER_PUBLIC), 51821).unwrap();
        assert_eq!(created.listen_port, Some(51821));
        assert!(created.peers.is_empty());
        assert_eq!(created.public_key, key(SERVER_PUBLIC));
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains(&format!("\n[Interface]\n# PublicKey = {SERVER_PUBLIC}\n")));
        assert!(!text.contains("PrivateKey"), "{text}");
        assert_eq!(mode(&path), 0o660);
        assert_eq!(mode(&dir.path().join("state")), 0o700);
        assert_eq!(dir_entries(path.parent().unwrap()), vec!["wg0.conf"]);
        let again = PeerStore::create(&path, key(ALICE), 9).unwrap();
        assert_eq!(
            again, created,
            "an existing file is loaded, its key and port kept"
        );
    }

    /// A store from before the key file: it reads, but is never written back with its
    /// key, nor without it unless the key was taken out (by the tunnel).
    #[test]
    fn a_legacy_store_is_not_saved_until_its_key_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wg0.conf");
        let legacy = SAMPLE_TEXT.replace(
            &format!("# PublicKey = {SERVER_PUBLIC}\n"),
            &format!("PrivateKey = {SERVER_PRIVATE}\n"),
        );
        fs::write(&path, &legacy).unwrap();
        let mut store = PeerStore::load(&path).unwrap();
        assert!(store.has_private_key());
        assert_eq!(store.public_key, key(SERVER_PUBLIC));
        assert_eq!(PeerStore::parse(&store.to_text()).unwrap(), store);
        let e = store.save(&path).unwrap_err();
        assert!(matches!(e, StoreError::HoldsPrivateKey { .. }), "{e}");
        assert!(e.to_string().contains("start `gatehouse tunnel`"), "{e}");
        assert!(!e.to_string().contains(&SERVER_PRIVATE[..20]), "{e}");
        assert_eq!(fs::read_to_string(&path).unwrap(), legacy, "untouched");
        assert_eq!(store.take_private_key(), Some(key(SERVER_PRIVATE)));
        store.save(&path).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), SAMPLE_TEXT);
    }

    /// Every process makes the lock file 0660, so the others can take the lock too.
    #[test]
    fn lock_file_is_group_writable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data/wg0.conf");
        let lock = StoreLock::acquire(&path).unwrap();
        let lock_path = dir.path().join("data/wg0.conf.lock");
        assert_eq!(mode(&lock_path), 0o660);
        assert_eq!(mode(&dir.path().join("data")), 0o700);
        drop(lock);
        // An existing one (made by another user on the box) is used as it is.
        fs::set_permissions(&lock_path, fs::Permissions::from_mode(0o640)).unwrap();
        drop(StoreLock::acquire(&path).unwrap());
        assert_eq!(mode(&lock_path), 0o640);
    }

    #[test]
    fn create_never_replaces_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wg0.conf");
        sample().save(&path).unwrap();
        let other = PeerStore::new(key(ALICE), Some(1)).to_text();
        let got = write_atomically(&path, other.as_bytes(), Publish::IfAbsent, STORE_MODE).unwrap();
        assert_eq!(got, Published::AlreadyExists);
        assert_eq!(fs::read_to_string(&path).unwrap(), SAMPLE_TEXT);
        assert_eq!(dir_entries(dir.path()), vec!["wg0.conf"]);
    }

    #[test]
    fn load_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.conf");
        assert!(matches!(
            PeerStore::load(&missing),
            Err(StoreError::Read { path, .. }) if path == missing
        ));
        let path = dir.path().join("wg0.conf");
        let mut bytes = SAMPLE_TEXT.as_bytes().to_vec();
        let at = SAMPLE_TEXT.find("# Name = alice").unwrap() + 9;
        bytes[at] = 0xff;
        fs::write(&path, &bytes).unwrap();
        match PeerStore::load(&path) {
            Err(StoreError::Parse {
                path: Some(p),
                line,
                message,
            }) => {
                assert_eq!(p, path);
                assert_eq!(line, 14);
                assert!(message.contains("not UTF-8"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        fs::write(&path, "[Interface]\nPrivateKey = x\n").unwrap();
        let e = PeerStore::load(&path).unwrap_err().to_string();
        assert!(e.contains("wg0.conf line 2: PrivateKey"), "{e}");
    }

    /// Feeds a file we wrote to the real `wg setconf` when the tool is installed. wg
    /// parses the whole file before it looks for the interface, so with an interface
    /// that does not exist a parse error and a missing interface are told apart.
    #[test]
    fn wg_setconf_accepts_our_files() {
        let Ok(out) = Command::new("wg").arg("--version").output() else {
            eprintln!("wg not installed; skipping");
            return;
        };
        assert!(out.status.success());
        let dir = tempfile::tempdir().unwrap();
        let run = |text: &str| {
            let path = dir.path().join("t.conf");
            fs::write(&path, text).unwrap();
            let out = Command::new("wg")
                .args(["setconf", "ghtest-nx0"])
                .arg(&path)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stderr).into_owned()
        };
        let mut store = sample();
        store.peers[2].endpoint = Some("[2001:db8::1]:51820".into());
        store.peers[2].allowed_ips = vec![cidr("10.77.5.0/24")];
        store.peers[2].persistent_keepalive = Some(0);
        let stderr = run(&store.to_text());
        assert!(!stderr.contains("parsing error"), "{stderr}");
        assert!(stderr.contains("Unable to modify interface"), "{stderr}");
        // The hand-written fixture: what we read, wg reads too.
        let stderr = run(&hand_written());
        assert!(!stderr.contains("parsing error"), "{stderr}");
        assert!(stderr.contains("Unable to modify interface"), "{stderr}");
        // The control: wg does report what it cannot parse.
        let stderr = run(&format!("{}AllowedIPs =\n", store.to_text()));
        assert!(stderr.contains("Configuration parsing error"), "{stderr}");
    }
}
