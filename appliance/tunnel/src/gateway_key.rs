//! The gateway's WireGuard private key, in a file of its own (`tunnel.private_key_file`,
//! default `<data_dir>/<interface>.key`).
//!
//! On the box the tunnel and the hub run as different users of one group: the hub edits
//! the peer store (group-writable) but must never read this key, so it is not in the
//! store. Only the tunnel's code paths ([`crate::service`]) call this module.
//!
//! Promises:
//! - The format is what `wg genkey` writes: the key in base64 and a newline (a file
//!   without the newline, or with CRLF, is read too).
//! - The file is written with mode 0600 (set explicitly, whatever the umask), atomically:
//!   a temporary file beside it, fsync, rename (or a hard link when creating, so two
//!   starts at once never replace each other's key), fsync of the directory.
//! - [`load`] refuses a file that others than its owner may read or write, one it cannot
//!   read, and one that is not a single key; the error names the file and says what to do,
//!   and never repeats the file's content.

use crate::keys::Key;
use crate::peer_store::{create_private_dir, parent_dir, write_atomically, Publish, Published};
use std::fs;
use std::io::{self, Read as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// Mode of the key file: owner only.
pub const KEY_MODE: u32 = 0o600;

/// Longest file we read: a key line with room for stray whitespace.
const MAX_LEN: u64 = 256;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    #[error(
        "cannot read the gateway's private key file {path} (tunnel.private_key_file): \
         {source}; it must be readable by the tunnel's user only (chmod 600, owned by that user)"
    )]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "cannot write the gateway's private key file {path} (tunnel.private_key_file): {source}"
    )]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the gateway's private key file {path} has mode {mode:o}, so others than its owner \
         may read or change it; run `chmod 600 {path}` (and if others did read it, make a new \
         key: delete the file, restart the tunnel and give every peer a new config)"
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error(
        "the gateway's private key file {path} is not a WireGuard private key: {message}; it \
         holds one base64 key and a newline, as `wg genkey` writes. Restore it, or delete it \
         to have the tunnel make a new key (every peer then needs a new config)"
    )]
    Malformed { path: PathBuf, message: String },
}

/// Reads the key file, checking its mode first.
pub fn load(path: &Path) -> Result<Key, KeyFileError> {
    let read_error = |source| KeyFileError::Read {
        path: path.to_owned(),
        source,
    };
    let file = fs::File::open(path).map_err(read_error)?;
    let meta = file.metadata().map_err(read_error)?;
    if !meta.is_file() {
        return Err(KeyFileError::Malformed {
            path: path.to_owned(),
            message: "it is not a regular file".into(),
        });
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Exposed {
            path: path.to_owned(),
            mode,
        });
    }
    let mut bytes = Vec::new();
    file.take(MAX_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    parse(&bytes).map_err(|message| KeyFileError::Malformed {
        path: path.to_owned(),
        message,
    })
}

/// The key in a file's bytes; the message never quotes them.
fn parse(bytes: &[u8]) -> Result<Key, String> {
    if bytes.len() as u64 > MAX_LEN {
        return Err(format!("it is longer than {MAX_LEN} bytes"));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "it is not text".to_owned())?;
    let line = text
        .strip_suffix('\n')
        .unwrap_or(text)
        .trim_end_matches('\r');
    if line.is_empty() {
        return Err("it is empty".into());
    }
    if line.contains('\n') {
        return Err("it has more than one line".into());
    }
    let key = Key::from_base64(line).map_err(|e| e.to_string())?;
    if key.is_zero() {
        return Err("the key is all zeros".into());
    }
    Ok(key)
}

/// Loads the key file, or makes it with a new random key when there is none. Returns the
/// key and whether it was made now.
pub fn load_or_create(path: &Path) -> Result<(Key, bool), KeyFileError> {
    match fs::symlink_metadata(path) {
        Ok(_) => return load(path).map(|k| (k, false)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(KeyFileError::Read {
                path: path.to_owned(),
                source,
            })
        }
    }
    let key = Key::generate_private();
    if create(path, key)? {
        tracing::info!(path = %path.display(), public_key = %key.public(), "made the gateway's WireGuard key");
        Ok((key, true))
    } else {
        // Made by someone else between our look and our write: theirs wins.
        load(path).map(|k| (k, false))
    }
}

/// Writes `key` to a new key file; `false` when a file is there already (it is left).
pub fn create(path: &Path, key: Key) -> Result<bool, KeyFileError> {
    let write_error = |source| KeyFileError::Write {
        path: path.to_owned(),
        source,
    };
    create_private_dir(parent_dir(path)).map_err(write_error)?;
    let published =
        write_atomically(path, &text(key), Publish::IfAbsent, KEY_MODE).map_err(write_error)?;
    Ok(published == Published::Yes)
}

/// Replaces the key file with `key` (`wg set <if> private-key ...`).
pub fn save(path: &Path, key: Key) -> Result<(), KeyFileError> {
    let write_error = |source| KeyFileError::Write {
        path: path.to_owned(),
        source,
    };
    create_private_dir(parent_dir(path)).map_err(write_error)?;
    write_atomically(path, &text(key), Publish::Replace, KEY_MODE)
        .map(|_| ())
        .map_err(write_error)
}

fn text(key: Key) -> Vec<u8> {
    format!("{}\n", key.to_base64()).into_bytes()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const PRIVATE: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn created_0600_in_wg_genkey_format_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/wg0.key");
        let (key, made) = load_or_create(&path).unwrap();
        assert!(made);
        assert!(!key.is_zero());
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("state")), 0o700);
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{}\n", key.to_base64())
        );
        let (again, made) = load_or_create(&path).unwrap();
        assert_eq!((again, made), (key, false));
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("wg0.key")]);
        // `create` never replaces a key; `save` does, and keeps 0600.
        let other = Key::generate_private();
        assert!(!create(&path, other).unwrap());
        assert_eq!(load(&path).unwrap(), key);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        save(&path, other).unwrap();
        assert_eq!(load(&path).unwrap(), other);
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn reads_what_wg_genkey_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let want = Key::from_base64(PRIVATE).unwrap();
        for text in [
            format!("{PRIVATE}\n"),
            PRIVATE.to_owned(),
            format!("{PRIVATE}\r\n"),
        ] {
            fs::write(&path, &text).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            assert_eq!(load(&path).unwrap(), want, "{text:?}");
        }
        // The real tool's output, when it is installed.
        if let Ok(out) = std::process::Command::new("wg").arg("genkey").output() {
            if out.status.success() {
                fs::write(&path, &out.stdout).unwrap();
                let key = load(&path).unwrap();
                assert_eq!(format!("{}\n", key.to_base64()).as_bytes(), out.stdout);
            }
        }
    }

    #[test]
    fn refuses_exposed_malformed_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wg0.key");
        let write = |text: &[u8], mode: u32| {
            fs::write(&path, text).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        };
        for m in [0o640, 0o604, 0o660, 0o644, 0o666, 0o620] {
            write(format!("{PRIVATE}\n").as_bytes(), m);
            let e = load(&path).unwrap_err();
            assert!(matches!(e, KeyFileError::Exposed { .. }), "{m:o}: {e}");
            let shown = e.to_string();
            assert!(shown.contains(&format!("mode {m:o}")), "{shown}");
            assert!(shown.contains("chmod 600"), "{shown}");
            assert!(shown.contains(&path.display().to_string()), "{shown}");
            assert!(!shown.contains(&PRIVATE[..20]), "{shown}");
        }
        let cases: [(&[u8], &str); 7] = [
            (b"", "it is empty"),
            (b"\n", "it is empty"),
            (b"abc\n", "44 characters"),
            (
                b"yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBm!=\n",
                "not valid base64",
            ),
            (b"\xff\xfe\n", "not text"),
            (
                b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
                "all zeros",
            ),
            (&[b'A'; 300], "longer than"),
        ];
        for (text, want) in cases {
            write(text, 0o600);
            let e = load(&path).unwrap_err();
            assert!(matches!(e, KeyFileError::Malformed { .. }), "{e}");
            let shown = e.to_string();
            assert!(shown.contains(want), "{want}: {shown}");
            assert!(shown.contains("wg genkey"), "{shown}");
            assert!(shown.contains(&path.display().to_string()), "{shown}");
        }
        write(format!("{PRIVATE}\n{PRIVATE}\n").as_bytes(), 0o600);
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("more than one line"), "{e}");
        assert!(!e.contains(&PRIVATE[..20]), "{e}");
        let missing = dir.path().join("nope.key");
        let e = load(&missing).unwrap_err();
        assert!(matches!(e, KeyFileError::Read { .. }), "{e}");
        assert!(e.to_string().contains("nope.key"), "{e}");
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("not a regular file") || e.contains("Is a directory"),
            "{e}"
        );
    }
}
