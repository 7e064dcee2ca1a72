//! `gatehouse console`, `gatehouse admin enrol-token` and the banner of `gatehouse hub`,
//! as an installer meets them on the box's shell: the real binary against a tempdir
//! config. The certificate's fingerprint is checked with `openssl x509`, the way an
//! admin would check it; printed tokens are checked by enrolling with them in the store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_hub::admin::password;
use gatehouse_store::admin::{EnrolOutcome, EnrolToken, Enrolment};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

mod cli_support;

use cli_support::{stderr as err, stdout as out, CliSite, TUNNEL};

/// A config whose console is HTTPS on `https` (not bound by these commands), with the
/// tunnel forwarding port 443 to it.
fn site(https: &str) -> CliSite {
    CliSite::new(&format!(
        "{TUNNEL}[[tunnel.service]]\nname = \"console-https\"\nport = 443\ntarget = \"127.0.0.1:18443\"\n\
         [hub]\nhttp_listen = \"127.0.0.1:0\"\nhttps_listen = \"{https}\"\ngate_tcp_listen = \"\"\n\
         [hub.mqtt]\nmode = \"off\"\n"
    ))
}

/// The value after `label` on its line of `text`.
fn field<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} in {text}"))
        .trim()
}

/// What `openssl x509 -fingerprint -sha256` says about `cert`, as colon hex.
fn openssl_fingerprint(cert: &Path) -> String {
    let o = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(cert)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    // "sha256 Fingerprint=AB:CD:..." (the prefix's case varies between versions).
    out(&o).trim().rsplit('=').next().unwrap().to_owned()
}

fn openssl_text(cert: &Path) -> String {
    let o = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(cert)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    out(&o)
}

#[test]
fn console_prints_where_it_is_and_the_fingerprint_of_its_certificate() {
    let s = site("127.0.0.1:18443");
    let text = s.ok(&["console"]);
    assert!(text.contains("https://127.0.0.1:18443/"), "{text}");
    // Through the tunnel's console-https service.
    assert!(text.contains("https://10.77.0.1/"), "{text}");
    let cert = s.data.join("tls").join("console.crt");
    assert_eq!(field(&text, "certificate:"), cert.display().to_string());
    let fingerprint = field(&text, "SHA-256:").to_owned();
    assert_eq!(fingerprint, openssl_fingerprint(&cert));
    let details = openssl_text(&cert);
    for want in [
        "DNS:localhost",
        "DNS:gatehouse.local",
        "IP Address:127.0.0.1",
        "IP Address:10.77.0.1",
        "prime256v1",
    ] {
        assert!(details.contains(want), "{want}: {details}");
    }
    assert!(
        field(&text, "enrolment:").contains("gatehouse admin enrol-token"),
        "{text}"
    );
    // It made the certificate but not the database.
    assert!(!gatehouse_store::schema::db_path(&s.data).exists());
    // Asked again: the same certificate.
    let again = s.ok(&["console"]);
    assert_eq!(field(&again, "SHA-256:"), fingerprint);

    // HTTPS off: the plain URL, no certificate.
    let plain = site("");
    let text = plain.ok(&["console"]);
    assert!(text.contains("http://127.0.0.1:0/"), "{text}");
    assert!(text.contains("HTTPS is off"), "{text}");
    assert!(!plain.data.join("tls").exists());
}

#[test]
fn enrol_token_is_printed_once_replaced_and_refused_once_an_admin_exists() {
    let s = site("0.0.0.0:18443");
    let first = s.ok(&["admin", "enrol-token"]);
    let old = EnrolToken::parse(field(&first, "enrolment token:")).unwrap();
    assert!(
        first.contains("https://gatehouse.local:18443/#/enrol"),
        "{first}"
    );
    let cert = s.data.join("tls").join("console.crt");
    assert_eq!(
        field(&first, "certificate SHA-256:"),
        openssl_fingerprint(&cert)
    );
    let now = time::OffsetDateTime::now_utc();
    assert!(matches!(
        s.store().enrolment(now).unwrap(),
        Enrolment::TokenLive { .. }
    ));
    // A new token replaces the old one.
    let second = s.ok(&["admin", "enrol-token"]);
    let new = EnrolToken::parse(field(&second, "enrolment token:")).unwrap();
    assert_ne!(new, old);
    let hash = password::hash_password("a long and boring passphrase").unwrap();
    let store = s.store();
    assert_eq!(
        store.enrol_first_admin(&old, "alice", &hash, now).unwrap(),
        EnrolOutcome::WrongToken
    );
    assert!(matches!(
        store.enrol_first_admin(&new, "alice", &hash, now).unwrap(),
        EnrolOutcome::Enrolled(_)
    ));
    // An admin exists: no more tokens.
    let o = s.run(&["admin", "enrol-token"]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    let e = err(&o);
    assert!(e.contains("an admin exists already"), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    assert!(field(&s.ok(&["console"]), "enrolment:").starts_with("closed"));
}

/// Runs `gatehouse hub` until its banner is complete; returns the banner, then stops it.
fn hub_banner(s: &CliSite) -> String {
    let mut child = s
        .command(&["hub"])
        .env("GATEHOUSE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut banner = String::new();
    let mut rules = 0;
    while rules < 2 {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("hub ended before its banner: {banner}"))
            .unwrap();
        if line.starts_with("=====") {
            rules += 1;
        }
        banner.push_str(&line);
        banner.push('\n');
    }
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    banner
}

#[test]
fn hub_banner_shows_a_new_token_only_while_there_is_none() {
    let s = site("127.0.0.1:0");
    let banner = hub_banner(&s);
    assert!(
        banner.contains("Gatehouse console: https://127.0.0.1:"),
        "{banner}"
    );
    let cert = s.data.join("tls").join("console.crt");
    assert_eq!(
        field(&banner, "  Certificate SHA-256:"),
        openssl_fingerprint(&cert)
    );
    let token_line = banner
        .lines()
        .map(str::trim)
        .find(|l| l.len() == 34 && l.matches('-').count() == 6)
        .unwrap_or_else(|| panic!("no token in {banner}"));
    let token = EnrolToken::parse(token_line).unwrap();

    // Restarted while that token is live: it is not shown (nor replaced).
    let again = hub_banner(&s);
    assert!(again.contains("made earlier is valid until"), "{again}");
    assert!(!again.contains(token_line), "{again}");
    let hash = password::hash_password("a long and boring passphrase").unwrap();
    let now = time::OffsetDateTime::now_utc();
    assert!(matches!(
        s.store()
            .enrol_first_admin(&token, "alice", &hash, now)
            .unwrap(),
        EnrolOutcome::Enrolled(_)
    ));
    // With an admin: address and fingerprint only.
    let last = hub_banner(&s);
    assert!(!last.contains("No admin yet"), "{last}");
    assert!(last.contains("Certificate SHA-256:"), "{last}");
}
