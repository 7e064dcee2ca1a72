//! `gatehouse admin ...` as an installer meets it on the box's shell: the real binary
//! against a tempdir config. Passwords come from a file or from stdin (the tests have no
//! terminal); what is refused exits 1 with one line and saves nothing; only argon2id
//! hashes reach the database.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_hub::admin::password;
use gatehouse_store::admin::AdminRole;
use gatehouse_store::Store;
use std::path::Path;

mod cli_support;

use cli_support::{failed, stderr as err, stdout as out, CliSite, TUNNEL};

const PASSWORD: &str = "a long and boring passphrase";

fn site() -> CliSite {
    CliSite::new(TUNNEL)
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn admin_add_with_a_password_file_stores_only_an_argon2id_hash() {
    let s = site();
    let file = s.file("pw", &format!("{PASSWORD}\n"));
    let o = s.ok(&[
        "admin",
        "add",
        "alice",
        "--role",
        "admin",
        "--password-file",
        path(&file),
    ]);
    assert!(o.contains("admin \"alice\" added"), "{o}");
    assert!(o.contains("role admin"), "{o}");
    assert!(!o.contains(PASSWORD));

    let creds = s.store().admin_credentials("alice").unwrap().unwrap();
    assert_eq!(creds.admin.role, AdminRole::Admin);
    assert!(creds.admin.enabled);
    assert!(
        creds
            .password_hash
            .starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{}",
        creds.password_hash
    );
    // The trailing newline of the file is not part of the password.
    assert!(password::verify(PASSWORD, &creds.password_hash));
    assert!(!s.disk_holds(PASSWORD.as_bytes()));

    let list = s.ok(&["admin", "list"]);
    let row = list.lines().find(|l| l.contains("alice")).unwrap();
    assert!(row.contains("admin") && row.contains("enabled"), "{list}");
}

#[test]
fn a_short_password_is_refused_with_the_rule_and_nothing_is_saved() {
    let s = site();
    let file = s.file("pw", "too short\n");
    let o = s.run(&[
        "admin",
        "add",
        "bob",
        "--role",
        "operator",
        "--password-file",
        path(&file),
    ]);
    failed(&o, "at least 12 characters", "admin add");
    assert!(s.store().admin_by_name("bob").unwrap().is_none());
    assert!(s.store().list_admins().unwrap().is_empty());
    // From stdin (no terminal) the same rule applies.
    let o = s.run_with_stdin(&["admin", "add", "bob", "--role", "operator"], "short\n");
    failed(&o, "at least 12 characters", "admin add");
    assert!(s.store().list_admins().unwrap().is_empty());
    // A missing file is one line too.
    let o = s.run(&[
        "admin",
        "add",
        "bob",
        "--role",
        "operator",
        "--password-file",
        "/nonexistent/pw",
    ]);
    failed(&o, "cannot read the password file", "admin add");
}

#[test]
fn a_duplicate_name_is_refused() {
    let s = site();
    let file = s.file("pw", PASSWORD);
    s.ok(&[
        "admin",
        "add",
        "alice",
        "--role",
        "admin",
        "--password-file",
        path(&file),
    ]);
    let o = s.run(&[
        "admin",
        "add",
        "alice",
        "--role",
        "installer",
        "--password-file",
        path(&file),
    ]);
    failed(&o, "an admin named \"alice\" already exists", "admin add");
    let admins = s.store().list_admins().unwrap();
    assert_eq!(admins.len(), 1);
    assert_eq!(admins[0].role, AdminRole::Admin);
}

#[test]
fn passwd_disable_enable_remove() {
    let s = site();
    let file = s.file("pw", PASSWORD);
    s.ok(&[
        "admin",
        "add",
        "ivan",
        "--role",
        "installer",
        "--password-file",
        path(&file),
    ]);
    let store = s.store();
    let id = store.admin_by_name("ivan").unwrap().unwrap().id;
    let now = time::OffsetDateTime::now_utc();
    store
        .create_admin_session(&[9u8; 32], id, now, now + time::Duration::days(1))
        .unwrap();
    let live = |store: &Store| {
        store
            .admin_session(&[9u8; 32], now, std::time::Duration::from_secs(3600))
            .unwrap()
            .is_some()
    };
    assert!(live(&store));

    // A new password from stdin ends the sessions.
    let o = s.run_with_stdin(&["admin", "passwd", "ivan"], "another long passphrase\n");
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).contains("sessions were ended"));
    let hash = store
        .admin_credentials("ivan")
        .unwrap()
        .unwrap()
        .password_hash;
    assert!(password::verify("another long passphrase", &hash));
    assert!(!live(&store));

    store
        .create_admin_session(&[9u8; 32], id, now, now + time::Duration::days(1))
        .unwrap();
    s.ok(&["admin", "disable", "ivan"]);
    assert!(!store.admin(id).unwrap().unwrap().enabled);
    assert!(!live(&store));
    assert!(s.ok(&["admin", "list"]).contains("disabled"));
    s.ok(&["admin", "enable", "ivan"]);
    assert!(store.admin(id).unwrap().unwrap().enabled);
    s.ok(&["admin", "remove", "ivan"]);
    assert!(store.admin(id).unwrap().is_none());

    let o = s.run(&["admin", "remove", "ivan"]);
    failed(&o, "no admin is named \"ivan\"", "admin remove");
    let o = s.run(&["admin", "passwd", "nobody"]);
    failed(&o, "no admin is named \"nobody\"", "admin passwd");
}
