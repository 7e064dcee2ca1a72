//! The broker's accounts and the three files written from them.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand_core::{OsRng, RngCore as _};

use crate::{acl, passwd, BrokerConfig, BrokerError, Result, Topics};

/// A broker account: user name and password in the clear (hashed only when written).
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    /// The MQTT user name.
    pub username: String,
    /// The MQTT password.
    pub password: String,
}

impl Account {
    /// An account; names are checked when the files are written.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Account {
            username: username.into(),
            password: password.into(),
        }
    }
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A gate's broker account: its gate id picks its response topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateAccount {
    /// The gate id of the gate link (`gate_id` in its frames).
    pub gate_id: u32,
    /// The gate's MQTT credentials.
    pub account: Account,
}

impl GateAccount {
    /// The conventional account `gate-<gate_id>`.
    pub fn new(gate_id: u32, password: impl Into<String>) -> Self {
        GateAccount {
            gate_id,
            account: Account::new(Self::default_username(gate_id), password),
        }
    }

    /// An account with a user name chosen elsewhere (the store's `mqtt_username`).
    pub fn with_username(
        gate_id: u32,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        GateAccount {
            gate_id,
            account: Account::new(username, password),
        }
    }

    /// `gate-<gate_id>`.
    pub fn default_username(gate_id: u32) -> String {
        format!("gate-{gate_id}")
    }
}

/// An NVR's broker account: it may read and write `<prefix>/#` (Frigate's topics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvrAccount {
    /// The NVR's MQTT topic prefix (Frigate's `mqtt.topic_prefix`).
    pub prefix: String,
    /// The NVR's MQTT credentials.
    pub account: Account,
}

impl NvrAccount {
    /// An account for the NVR publishing under `prefix`.
    pub fn new(prefix: impl Into<String>, account: Account) -> Self {
        NvrAccount {
            prefix: prefix.into(),
            account,
        }
    }
}

/// A fresh random password: 24 bytes from the OS, base64url without padding (32 chars).
pub fn random_password() -> Result<String> {
    let mut bytes = [0u8; 24];
    OsRng.try_fill_bytes(&mut bytes)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Where the three files live: `<dir>/mosquitto.conf`, `<dir>/passwd`, `<dir>/acl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerFiles {
    dir: PathBuf,
    conf: PathBuf,
    password_file: PathBuf,
    acl_file: PathBuf,
}

impl BrokerFiles {
    /// The files inside `dir` (which should be absolute: mosquitto reads these paths).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        BrokerFiles {
            conf: dir.join("mosquitto.conf"),
            password_file: dir.join("passwd"),
            acl_file: dir.join("acl"),
            dir,
        }
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `mosquitto.conf`.
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// The password file.
    pub fn password_file(&self) -> &Path {
        &self.password_file
    }

    /// The ACL file.
    pub fn acl_file(&self) -> &Path {
        &self.acl_file
    }
}

/// Every account of the broker and the topics they may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioning {
    hub: Account,
    gates: Vec<GateAccount>,
    nvrs: Vec<NvrAccount>,
    topics: Topics,
    /// The LoRa packet forwarder's account (read and write `lora/#`), if any.
    lora_forwarder: Option<Account>,
}

impl Provisioning {
    /// The hub's account, no gates yet.
    pub fn new(hub: Account, topics: Topics) -> Result<Self> {
        passwd::check_username(&hub.username)?;
        passwd::check_password(&hub.password)?;
        Ok(Provisioning {
            hub,
            gates: Vec::new(),
            nvrs: Vec::new(),
            topics,
            lora_forwarder: None,
        })
    }

    /// Gives the LoRa packet forwarder its account: read and write [`acl::LORA_TOPICS`]
    /// (the hub has those too). Refuses a user name already taken.
    pub fn set_lora_forwarder(&mut self, account: Account) -> Result<()> {
        passwd::check_username(&account.username)?;
        passwd::check_password(&account.password)?;
        let own = self
            .lora_forwarder
            .as_ref()
            .is_some_and(|a| a.username == account.username);
        if !own && self.username_taken(&account.username) {
            return Err(BrokerError::Duplicate {
                what: "user name",
                value: account.username,
            });
        }
        self.lora_forwarder = Some(account);
        Ok(())
    }

    /// The LoRa packet forwarder's account.
    pub fn lora_forwarder(&self) -> Option<&Account> {
        self.lora_forwarder.as_ref()
    }

    /// The hub's account.
    pub fn hub(&self) -> &Account {
        &self.hub
    }

    /// The gate accounts, in the order they were added.
    pub fn gates(&self) -> &[GateAccount] {
        &self.gates
    }

    /// The NVR accounts, in the order they were added.
    pub fn nvrs(&self) -> &[NvrAccount] {
        &self.nvrs
    }

    /// The gate link's topics.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Whether `username` is taken by the hub, a gate or an NVR.
    fn username_taken(&self, username: &str) -> bool {
        username == self.hub.username
            || self.gates.iter().any(|g| g.account.username == username)
            || self.nvrs.iter().any(|n| n.account.username == username)
            || self
                .lora_forwarder
                .as_ref()
                .is_some_and(|a| a.username == username)
    }

    /// Adds a gate account. Refuses a second account for the same gate id or a user name
    /// already taken (by the hub or another gate).
    pub fn add_gate(&mut self, gate: GateAccount) -> Result<()> {
        passwd::check_username(&gate.account.username)?;
        passwd::check_password(&gate.account.password)?;
        if self.gates.iter().any(|g| g.gate_id == gate.gate_id) {
            return Err(BrokerError::Duplicate {
                what: "gate id",
                value: gate.gate_id.to_string(),
            });
        }
        if self.username_taken(&gate.account.username) {
            return Err(BrokerError::Duplicate {
                what: "user name",
                value: gate.account.username,
            });
        }
        self.gates.push(gate);
        Ok(())
    }

    /// Adds an NVR account. Refuses a user name already taken, and a prefix that
    /// [`acl::check_nvr_prefix`] refuses (wildcards, or overlapping the gate link's topics
    /// or an NVR added before).
    pub fn add_nvr(&mut self, nvr: NvrAccount) -> Result<()> {
        passwd::check_username(&nvr.account.username)?;
        passwd::check_password(&nvr.account.password)?;
        acl::check_nvr_prefix(
            &nvr.prefix,
            &self.topics,
            self.nvrs.iter().map(|n| n.prefix.as_str()),
        )?;
        if self.username_taken(&nvr.account.username) {
            return Err(BrokerError::Duplicate {
                what: "user name",
                value: nvr.account.username,
            });
        }
        self.nvrs.push(nvr);
        Ok(())
    }

    /// Removes the NVR account of `prefix`; returns whether there was one.
    pub fn remove_nvr(&mut self, prefix: &str) -> bool {
        let before = self.nvrs.len();
        self.nvrs.retain(|n| n.prefix != prefix);
        self.nvrs.len() != before
    }

    /// Removes the account of `gate_id`; returns whether there was one.
    pub fn remove_gate(&mut self, gate_id: u32) -> bool {
        let before = self.gates.len();
        self.gates.retain(|g| g.gate_id != gate_id);
        self.gates.len() != before
    }

    /// The password file's text, with fresh random salts.
    pub fn password_file(&self) -> Result<String> {
        let mut seen = BTreeSet::new();
        let mut out = String::new();
        let accounts = std::iter::once(&self.hub)
            .chain(self.gates.iter().map(|g| &g.account))
            .chain(self.nvrs.iter().map(|n| &n.account))
            .chain(self.lora_forwarder.as_ref());
        for account in accounts {
            if !seen.insert(account.username.as_str()) {
                return Err(BrokerError::Duplicate {
                    what: "user name",
                    value: account.username.clone(),
                });
            }
            out.push_str(&passwd::password_line(
                &account.username,
                &account.password,
                &mut OsRng,
            )?);
            out.push('\n');
        }
        Ok(out)
    }

    /// The ACL file's text.
    pub fn acl_file(&self) -> String {
        let nvrs: Vec<(&str, &str)> = self
            .nvrs
            .iter()
            .map(|n| (n.account.username.as_str(), n.prefix.as_str()))
            .collect();
        acl::render(
            &self.topics,
            &self.hub.username,
            self.gates
                .iter()
                .map(|g| (g.account.username.as_str(), g.gate_id)),
            &nvrs,
            self.lora_forwarder.as_ref().map(|a| a.username.as_str()),
        )
    }

    /// Writes the password file, the ACL file and `mosquitto.conf` (creating `files.dir()`
    /// with mode 0700 if missing), each atomically with mode 0600.
    pub fn write(&self, files: &BrokerFiles, config: &BrokerConfig) -> Result<()> {
        // Render everything first: an invalid value writes nothing.
        let conf = config.render(files)?;
        let password_file = self.password_file()?;
        let acl_file = self.acl_file();
        create_private_dir(files.dir())?;
        write_atomically(files.password_file(), password_file.as_bytes())?;
        write_atomically(files.acl_file(), acl_file.as_bytes())?;
        write_atomically(files.conf(), conf.as_bytes())?;
        Ok(())
    }

    /// Rewrites only the password and ACL files (what mosquitto re-reads on SIGHUP).
    pub fn write_credentials(&self, files: &BrokerFiles) -> Result<()> {
        let password_file = self.password_file()?;
        let acl_file = self.acl_file();
        write_atomically(files.password_file(), password_file.as_bytes())?;
        write_atomically(files.acl_file(), acl_file.as_bytes())?;
        Ok(())
    }
}

pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| BrokerError::io(dir, e))
}

/// Writes `bytes` to `path` through a temporary file in the same directory: created 0600,
/// fsynced, renamed over `path`, then the directory fsynced. Readers see the old file or
/// the new one, never a part.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().ok_or_else(|| {
        BrokerError::invalid("file path", &path.to_string_lossy(), "has no parent")
    })?;
    let name = path
        .file_name()
        .ok_or_else(|| BrokerError::invalid("file path", &path.to_string_lossy(), "has no name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| BrokerError::io(&tmp, e))?;
        file.write_all(bytes)
            .map_err(|e| BrokerError::io(&tmp, e))?;
        file.sync_all().map_err(|e| BrokerError::io(&tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| BrokerError::io(path, e))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| BrokerError::io(dir, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn provisioning() -> Provisioning {
        let mut p = Provisioning::new(Account::new("hub", "hub-pw"), Topics::default()).unwrap();
        p.add_gate(GateAccount::new(1, "one")).unwrap();
        p.add_gate(GateAccount::with_username(2, "door-b", "two"))
            .unwrap();
        p
    }

    #[test]
    fn refuses_duplicates() {
        let mut p = provisioning();
        assert!(p.add_gate(GateAccount::new(1, "x")).is_err());
        assert!(p
            .add_gate(GateAccount::with_username(3, "hub", "x"))
            .is_err());
        assert!(p
            .add_gate(GateAccount::with_username(3, "door-b", "x"))
            .is_err());
        assert!(p
            .add_gate(GateAccount::with_username(3, "bad:name", "x"))
            .is_err());
        assert_eq!(p.gates().len(), 2);
        assert!(p.remove_gate(1));
        assert!(!p.remove_gate(1));
        assert_eq!(p.gates().len(), 1);
    }

    #[test]
    fn nvr_accounts() {
        let mut p = provisioning();
        p.add_nvr(NvrAccount::new("frigate", Account::new("nvr-yard", "y")))
            .unwrap();
        // Same user name as a gate, the hub or an NVR; overlapping prefixes; wildcards.
        for (prefix, user) in [
            ("other", "door-b"),
            ("other", "hub"),
            ("other", "nvr-yard"),
            ("frigate", "nvr-b"),
            ("frigate/cam", "nvr-b"),
            ("access", "nvr-b"),
            ("x/#", "nvr-b"),
        ] {
            assert!(
                p.add_nvr(NvrAccount::new(prefix, Account::new(user, "p")))
                    .is_err(),
                "{prefix} {user}"
            );
        }
        // A gate may not take an NVR's user name either.
        assert!(p
            .add_gate(GateAccount::with_username(5, "nvr-yard", "x"))
            .is_err());
        p.add_nvr(NvrAccount::new("site/b", Account::new("nvr-b", "b")))
            .unwrap();
        assert_eq!(p.nvrs().len(), 2);
        let text = p.password_file().unwrap();
        let users: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(u, _)| u)
            .collect();
        assert_eq!(users, ["hub", "gate-1", "door-b", "nvr-yard", "nvr-b"]);
        let acl = p.acl_file();
        assert!(
            acl.contains("topic read frigate/events\ntopic read frigate/reviews\n"),
            "{acl}"
        );
        assert!(
            acl.contains("user nvr-b\ntopic readwrite site/b/#\n"),
            "{acl}"
        );
        assert!(p.remove_nvr("frigate"));
        assert!(!p.remove_nvr("frigate"));
        assert!(!p.acl_file().contains("frigate"));
    }

    #[test]
    fn password_file_has_every_account() {
        let text = provisioning().password_file().unwrap();
        let lines: Vec<(&str, &str)> = text.lines().filter_map(|l| l.split_once(':')).collect();
        let users: Vec<&str> = lines.iter().map(|(u, _)| *u).collect();
        assert_eq!(users, ["hub", "gate-1", "door-b"]);
        assert!(passwd::verify(lines[0].1, "hub-pw"));
        assert!(passwd::verify(lines[1].1, "one"));
        assert!(passwd::verify(lines[2].1, "two"));
    }

    #[test]
    fn writes_three_private_files() {
        let tmp = tempfile::tempdir().unwrap();
        let files = BrokerFiles::new(tmp.path().join("broker"));
        provisioning()
            .write(&files, &BrokerConfig::loopback(1883))
            .unwrap();
        for path in [files.conf(), files.password_file(), files.acl_file()] {
            let mode = fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", path.display());
        }
        let acl = fs::read_to_string(files.acl_file()).unwrap();
        assert!(
            acl.contains("user door-b\ntopic write access/request\ntopic read access/response/2\n")
        );
        let leftovers: Vec<_> = fs::read_dir(files.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn lora_forwarder_account() {
        let mut p = provisioning();
        assert!(p.set_lora_forwarder(Account::new("door-b", "x")).is_err());
        p.set_lora_forwarder(Account::new("lora-forwarder", "lf-pw"))
            .unwrap();
        // Set again (a new password): still one account.
        p.set_lora_forwarder(Account::new("lora-forwarder", "lf-pw2"))
            .unwrap();
        assert!(p
            .add_gate(GateAccount::with_username(9, "lora-forwarder", "x"))
            .is_err());
        let text = p.password_file().unwrap();
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("lora-forwarder:"))
            .unwrap();
        assert!(passwd::verify(line, "lf-pw2"));
        let acl = p.acl_file();
        assert!(
            acl.ends_with("\nuser lora-forwarder\ntopic readwrite lora/#\n"),
            "{acl}"
        );
        assert!(acl.contains("user hub\n"), "{acl}");
    }

    #[test]
    fn debug_hides_passwords() {
        let shown = format!("{:?}", provisioning());
        assert!(!shown.contains("hub-pw"), "{shown}");
    }

    #[test]
    fn random_passwords_differ() {
        let a = random_password().unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, random_password().unwrap());
    }
}
