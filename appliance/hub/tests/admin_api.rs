//! The admin JSON API end to end over real HTTP on 127.0.0.1: a hub bound on port 0 with a
//! temporary data directory, admins made with the store and the password module as the CLI
//! makes them, and a manual clock so expiry and lockout need no sleeping. Requests come
//! from different loopback addresses (127.0.0.0/8 is all local on Linux), so the per-address
//! login throttle is exercised only where a test means to.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_store::schema::db_path;
use gatehouse_store::Store;
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::time::Duration;

mod support;

use support::{
    call, login_reply, next_ip, raw, Auth, Session, Setup, Site, ADMINS, ALICE_PW, IVAN_PW,
    OSCAR_PW,
};

impl Site {
    /// A hub with one admin of each role, the admin API on a manual clock.
    async fn start() -> Site {
        Setup::new()
            .with_admins(&ADMINS)
            .manual_clock()
            .start()
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_me_logout_and_refusals() {
    let mut site = Site::start().await;

    let r = login_reply(&site, next_ip(), "alice", ALICE_PW).await;
    assert_eq!(r.status, 200, "{r:?}");
    let token = r.json["token"].as_str().unwrap();
    assert_eq!(token.len(), 64);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        r.json["admin"],
        json!({"id": 1, "name": "alice", "role": "admin"})
    );
    assert!(r.json["expires_at"].as_str().is_some());
    assert_eq!(r.json["csrf"].as_str().unwrap().len(), 64);
    assert_ne!(r.json["csrf"], r.json["token"]);
    let cookie = r.header("set-cookie").unwrap();
    assert!(
        cookie.starts_with(&format!("gh_session={token};")),
        "{cookie}"
    );
    for part in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let alice = Session {
        token: token.to_owned(),
        csrf: r.json["csrf"].as_str().unwrap().to_owned(),
    };

    let me = call(&site, Auth::Bearer(&alice), "GET", "/api/v1/auth/me", None).await;
    assert_eq!(me.status, 200, "{me:?}");
    assert_eq!(me.json["admin"]["name"], "alice");
    assert_eq!(me.json["csrf"], json!(alice.csrf));
    assert!(me.json["may"]
        .as_array()
        .unwrap()
        .contains(&json!("change_admins")));

    // Wrong password and unknown name: the same answer.
    let bad = login_reply(&site, next_ip(), "alice", "not her password").await;
    assert_eq!(bad.status, 401, "{bad:?}");
    assert!(bad.error().contains("wrong name or password"), "{bad:?}");
    let unknown = login_reply(&site, next_ip(), "mallory", "not her password").await;
    assert_eq!(unknown.status, 401, "{unknown:?}");
    assert_eq!(unknown.error(), bad.error());

    // Malformed bodies name the field.
    let r = raw(
        site.addr(),
        next_ip(),
        "POST",
        "/api/v1/auth/login",
        &[],
        br#"{"name": "alice"}"#,
    )
    .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.error().contains("`password` is required"), "{r:?}");

    // No session, a malformed one, an unknown one: 401 saying to log in again.
    for auth in [
        vec![],
        vec![("Authorization", "Bearer nope".to_owned())],
        vec![("Authorization", format!("Bearer {}", "ab".repeat(32)))],
    ] {
        let r = raw(site.addr(), next_ip(), "GET", "/api/v1/people", &auth, b"").await;
        assert_eq!(r.status, 401, "{r:?}");
        assert!(r.error().contains("log in again"), "{r:?}");
    }

    // Logout ends the session (a cookie client needs the CSRF header for it too).
    let r = call(
        &site,
        Auth::Cookie(&alice, false),
        "POST",
        "/api/v1/auth/logout",
        None,
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    let r = call(
        &site,
        Auth::Cookie(&alice, true),
        "POST",
        "/api/v1/auth/logout",
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    let r = call(&site, Auth::Bearer(&alice), "GET", "/api/v1/auth/me", None).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.error().contains("log in again"), "{r:?}");

    // A disabled admin may not log in, and disabling ends its sessions.
    let oscar = site.login("oscar", OSCAR_PW).await;
    {
        let store = Store::open(site.data()).unwrap();
        let id = store.admin_by_name("oscar").unwrap().unwrap().id;
        store.set_admin_enabled(id, false).unwrap();
    }
    let r = call(&site, Auth::Bearer(&oscar), "GET", "/api/v1/gates", None).await;
    assert_eq!(r.status, 401, "{r:?}");
    let r = login_reply(&site, next_ip(), "oscar", OSCAR_PW).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.error().contains("disabled"), "{r:?}");
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_failures_lock_the_account_for_fifteen_minutes() {
    let mut site = Site::start().await;
    // From a different address each time: the lock is per account, not per address.
    for n in 1..=4 {
        let r = login_reply(&site, next_ip(), "alice", "guess guess guess").await;
        assert_eq!(r.status, 401, "failure {n}: {r:?}");
    }
    let r = login_reply(&site, next_ip(), "alice", "guess guess guess").await;
    assert_eq!(r.status, 423, "{r:?}");
    assert!(r.error().contains("locked after 5 failed logins"), "{r:?}");
    assert!(r.error().contains("15 minutes"), "{r:?}");
    assert_eq!(r.header("retry-after"), Some("900"));
    // Locked: even the right password is refused.
    let r = login_reply(&site, next_ip(), "alice", ALICE_PW).await;
    assert_eq!(r.status, 423, "{r:?}");
    assert!(r.error().contains("try again in 15 minutes"), "{r:?}");
    // Other accounts are not affected.
    site.login("oscar", OSCAR_PW).await;
    site.clock().advance(Duration::from_secs(14 * 60));
    let r = login_reply(&site, next_ip(), "alice", ALICE_PW).await;
    assert_eq!(r.status, 423, "{r:?}");
    assert!(r.error().contains("1 minute"), "{r:?}");
    site.clock().advance(Duration::from_secs(60));
    site.login("alice", ALICE_PW).await;
    // The success reset the count: four more failures do not lock.
    for _ in 1..=4 {
        let r = login_reply(&site, next_ip(), "alice", "guess guess guess").await;
        assert_eq!(r.status, 401, "{r:?}");
    }
    site.login("alice", ALICE_PW).await;
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_gets_429_after_the_burst() {
    let mut site = Site::start().await;
    let ip = Ipv4Addr::new(127, 0, 9, 9);
    // Unknown names, so no account lock gets in the way.
    for n in 0..5 {
        let r = login_reply(&site, ip, &format!("nobody{n}"), "whatever it is").await;
        assert_eq!(r.status, 401, "{r:?}");
    }
    // Even with the right password.
    let r = login_reply(&site, ip, "alice", ALICE_PW).await;
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.header("retry-after"), Some("10"));
    assert!(r.error().contains("too many login attempts"), "{r:?}");
    // Another address is not throttled.
    site.login("alice", ALICE_PW).await;
    // One refill later, one more attempt.
    site.clock().advance(Duration::from_secs(10));
    let r = login_reply(&site, ip, "alice", ALICE_PW).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = login_reply(&site, ip, "alice", ALICE_PW).await;
    assert_eq!(r.status, 429, "{r:?}");
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_changes_need_the_csrf_header_bearer_ones_do_not() {
    let mut site = Site::start().await;
    let alice = site.login("alice", ALICE_PW).await;
    let add = |name: &str| Some(json!({ "name": name }));

    let r = call(
        &site,
        Auth::Cookie(&alice, false),
        "POST",
        "/api/v1/people",
        add("p1"),
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.error().contains("X-CSRF-Token"), "{r:?}");
    let wrong = Session {
        token: alice.token.clone(),
        csrf: "0".repeat(64),
    };
    let r = call(
        &site,
        Auth::Cookie(&wrong, true),
        "POST",
        "/api/v1/people",
        add("p1"),
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    // Reads need no CSRF header.
    let r = call(
        &site,
        Auth::Cookie(&alice, false),
        "GET",
        "/api/v1/people",
        None,
    )
    .await;
    assert_eq!((r.status, &r.json), (200, &json!([])), "{r:?}");

    let r = call(
        &site,
        Auth::Cookie(&alice, true),
        "POST",
        "/api/v1/people",
        add("p1"),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = call(
        &site,
        Auth::Bearer(&alice),
        "POST",
        "/api/v1/people",
        add("p2"),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json["name"], "p2");
    let r = call(&site, Auth::Bearer(&alice), "GET", "/api/v1/people", None).await;
    assert_eq!(r.json.as_array().unwrap().len(), 2, "{r:?}");
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire_when_idle_and_after_a_week() {
    let mut site = Site::start().await;
    let idle = site.login("alice", ALICE_PW).await;
    let busy = site.login("alice", ALICE_PW).await;
    site.clock().advance(Duration::from_secs(11 * 3600));
    let r = call(&site, Auth::Bearer(&busy), "GET", "/api/v1/auth/me", None).await;
    assert_eq!(r.status, 200, "{r:?}");
    site.clock().advance(Duration::from_secs(3600));
    // 12 h since its last use.
    let r = call(&site, Auth::Bearer(&idle), "GET", "/api/v1/auth/me", None).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.error().contains("expired"), "{r:?}");
    assert!(r.error().contains("log in again"), "{r:?}");
    let r = call(&site, Auth::Bearer(&busy), "GET", "/api/v1/auth/me", None).await;
    assert_eq!(r.status, 200, "{r:?}");
    // Used every 11 h, a session still ends 7 days after login.
    let mut used = 12 * 3600;
    while used + 11 * 3600 < 7 * 86400 {
        site.clock().advance(Duration::from_secs(11 * 3600));
        used += 11 * 3600;
        let r = call(&site, Auth::Bearer(&busy), "GET", "/api/v1/auth/me", None).await;
        assert_eq!(r.status, 200, "at {used} s: {r:?}");
    }
    site.clock().advance(Duration::from_secs(7 * 86400 - used));
    let r = call(&site, Auth::Bearer(&busy), "GET", "/api/v1/auth/me", None).await;
    assert_eq!(r.status, 401, "{r:?}");
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_limit_what_each_admin_may_do() {
    let mut site = Site::start().await;
    let alice = site.login("alice", ALICE_PW).await;
    let oscar = site.login("oscar", OSCAR_PW).await;
    let ivan = site.login("ivan", IVAN_PW).await;

    // Operator: watches (gates, zones, the log), acknowledges and opens doors; no people
    // pages, changes nothing.
    let r = call(
        &site,
        Auth::Bearer(&oscar),
        "POST",
        "/api/v1/people",
        Some(json!({"name": "x"})),
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(
        r.error()
            .contains("operator role may not add or change people"),
        "{r:?}"
    );
    for path in ["/api/v1/gates", "/api/v1/zones", "/api/v1/access/log"] {
        let r = call(&site, Auth::Bearer(&oscar), "GET", path, None).await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
    }
    for path in ["/api/v1/people", "/api/v1/cards", "/api/v1/admins"] {
        let r = call(&site, Auth::Bearer(&oscar), "GET", path, None).await;
        assert_eq!(r.status, 403, "{path}: {r:?}");
    }
    let r = call(
        &site,
        Auth::Bearer(&oscar),
        "POST",
        "/api/v1/gates",
        Some(json!({"name": "g"})),
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");

    // Installer: gates and zones; no people, cards or log.
    let r = call(
        &site,
        Auth::Bearer(&ivan),
        "GET",
        "/api/v1/access/log",
        None,
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(
        r.error()
            .contains("installer role may not read the access log"),
        "{r:?}"
    );
    for path in ["/api/v1/people", "/api/v1/cards", "/api/v1/admins"] {
        let r = call(&site, Auth::Bearer(&ivan), "GET", path, None).await;
        assert_eq!(r.status, 403, "{path}: {r:?}");
    }
    let r = call(
        &site,
        Auth::Bearer(&ivan),
        "POST",
        "/api/v1/zones",
        Some(json!({"name": "yard"})),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = call(
        &site,
        Auth::Bearer(&ivan),
        "POST",
        "/api/v1/gates",
        Some(json!({"name": "yard-gate", "zone": "yard"})),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = call(&site, Auth::Bearer(&ivan), "GET", "/api/v1/gates", None).await;
    assert_eq!(r.json[0]["name"], "yard-gate", "{r:?}");
    assert!(
        r.json[0].get("provisioning").is_none(),
        "secret only once: {r:?}"
    );
    assert!(!r.text.contains("secret"), "secret only once: {r:?}");

    // Admins: only the admin role.
    let r = call(
        &site,
        Auth::Bearer(&ivan),
        "POST",
        "/api/v1/admins",
        Some(json!({"name": "eve", "role": "admin", "password": "a long enough password"})),
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    let r = call(
        &site,
        Auth::Bearer(&alice),
        "POST",
        "/api/v1/admins",
        Some(json!({"name": "dora", "role": "operator", "password": "short"})),
    )
    .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.error().contains("at least 12 characters"), "{r:?}");
    let r = call(
        &site,
        Auth::Bearer(&alice),
        "POST",
        "/api/v1/admins",
        Some(json!({"name": "dora", "role": "operator", "password": "dora's long passphrase"})),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json["role"], "operator");
    assert!(
        !r.text.contains("passphrase") && !r.text.contains("argon2"),
        "{r:?}"
    );
    let r = call(
        &site,
        Auth::Bearer(&alice),
        "POST",
        "/api/v1/admins",
        Some(json!({"name": "dora", "role": "operator", "password": "dora's long passphrase"})),
    )
    .await;
    assert_eq!(r.status, 409, "{r:?}");
    let r = call(&site, Auth::Bearer(&alice), "GET", "/api/v1/admins", None).await;
    assert_eq!(r.json.as_array().unwrap().len(), 4, "{r:?}");
    site.login("dora", "dora's long passphrase").await;
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_names_the_field_unknown_ids_404_taken_names_409() {
    let mut site = Site::start().await;
    let alice = site.login("alice", ALICE_PW).await;
    let a = Auth::Bearer(&alice);
    let r = call(&site, a, "POST", "/api/v1/people", Some(json!({}))).await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.error().contains("`name` is required"), "{r:?}");
    let r = call(
        &site,
        a,
        "POST",
        "/api/v1/people",
        Some(json!({"name": "x", "nmae": 1})),
    )
    .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.error().contains("unknown field `nmae`"), "{r:?}");
    let r = call(
        &site,
        a,
        "POST",
        "/api/v1/people",
        Some(json!({"name": "x", "valid_until": "soon"})),
    )
    .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.error().contains("`valid_until`"), "{r:?}");
    let r = call(
        &site,
        a,
        "POST",
        "/api/v1/people",
        Some(json!({"name": "bob", "valid_until": "2030-12-31"})),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    let bob = r.json["id"].as_i64().unwrap();
    let r = call(
        &site,
        a,
        "POST",
        "/api/v1/people",
        Some(json!({"name": "bob"})),
    )
    .await;
    assert_eq!(r.status, 409, "{r:?}");
    assert!(r.error().contains("already taken"), "{r:?}");
    let r = call(
        &site,
        a,
        "PATCH",
        "/api/v1/people/999",
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(r.status, 404, "{r:?}");
    assert!(r.error().contains("no such person"), "{r:?}");
    let r = call(
        &site,
        a,
        "PATCH",
        "/api/v1/people/abc",
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(r.status, 400, "{r:?}");
    let r = call(
        &site,
        a,
        "PATCH",
        &format!("/api/v1/people/{bob}"),
        Some(json!({"enabled": false, "name": "robert", "valid_until": null})),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        (&r.json["name"], &r.json["enabled"], &r.json["valid_until"]),
        (&json!("robert"), &json!(false), &Value::Null)
    );
    let r = call(&site, a, "DELETE", &format!("/api/v1/people/{bob}"), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = call(&site, a, "DELETE", &format!("/api/v1/people/{bob}"), None).await;
    assert_eq!(r.status, 404, "{r:?}");
    let r = call(
        &site,
        a,
        "POST",
        "/api/v1/levels",
        Some(json!({"name": "l", "gates": ["nope"], "schedule": "always"})),
    )
    .await;
    assert_eq!(r.status, 404, "{r:?}");
    let r = call(
        &site,
        a,
        "POST",
        "/api/v1/levels",
        Some(json!({"name": "l", "gates": [1], "schedule": "mon 22:00-06:00"})),
    )
    .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(
        r.error().contains("`schedule`") && r.error().contains("overnight"),
        "{r:?}"
    );
    // The body limit.
    let big = json!({ "name": "x".repeat(70 * 1024) }).to_string();
    let r = raw(
        site.addr(),
        next_ip(),
        "POST",
        "/api/v1/people",
        &[("Authorization", format!("Bearer {}", alice.token))],
        big.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 413, "{r:?}");
    assert!(r.error().contains("65536 bytes"), "{r:?}");
    site.stop().await;
}

/// A 9-byte card id given in hex, and an 8-byte one given in decimal, as typed.
const CARD_HEX: &str = "0x04A1B2C3D4E5F6A7B8";
const CARD_HEX_BYTES: [u8; 9] = [0x04, 0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6, 0xa7, 0xb8];
const CARD_DEC: &str = "0012345678901234567";
/// 12345678901234567 big-endian, without its leading zero byte (as a reader sends it).
const CARD_DEC_BYTES: [u8; 7] = [0x2b, 0xdc, 0x54, 0x5d, 0x6b, 0x4b, 0x87];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cards_enrolled_over_the_api_are_stored_hashed_and_their_decisions_logged() {
    let mut site = Site::start().await;
    let alice = site.login("alice", ALICE_PW).await;
    let a = Auth::Bearer(&alice);

    let r = call(
        &site,
        a,
        "POST",
        "/api/v1/gates",
        Some(json!({"name": "front", "relay_ms": 1500})),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json["zone_name"], "main");
    assert_eq!(r.json["zone_created"], true);
    let gate = r.json["id"].as_i64().unwrap();
    let prov = &r.json["provisioning"];
    assert_eq!(prov["gate_id"], json!(gate));
    assert_eq!(
        prov["http_url"],
        json!(format!("http://{}/api/v1/access/check", site.addr()))
    );
    let secret = prov["secret"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 64);
    assert_eq!(prov["allow_list_key"].as_str().unwrap().len(), 64);

    let r = call(
        &site,
        a,
        "POST",
        "/api/v1/people",
        Some(json!({"name": "carol"})),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    let carol = r.json["id"].as_i64().unwrap();
    let r = call(
        &site,
        a,
        "POST",
        "/api/v1/levels",
        Some(json!({"name": "staff", "gates": ["front"], "schedule": "always"})),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json["schedule"], "always");
    let level = r.json["id"].as_i64().unwrap();
    let r = call(
        &site,
        a,
        "POST",
        &format!("/api/v1/levels/{level}/grant"),
        Some(json!({"person": "carol"})),
    )
    .await;
    assert_eq!((r.status, &r.json["granted"]), (200, &json!(true)), "{r:?}");

    // The raw id never comes back, not even in an error.
    let r = call(
        &site,
        a,
        "POST",
        "/api/v1/cards",
        Some(json!({"acc_id": CARD_HEX, "person": "carol", "label": "blue fob"})),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(
        (&r.json["person"], &r.json["label"]),
        (&json!(carol), &json!("blue fob"))
    );
    let card = r.json["id"].as_i64().unwrap();
    let r2 = call(
        &site,
        a,
        "POST",
        "/api/v1/cards",
        Some(json!({"acc_id": CARD_DEC, "person": carol, "master": true})),
    )
    .await;
    assert_eq!(r2.status, 201, "{r2:?}");
    let again = call(
        &site,
        a,
        "POST",
        "/api/v1/cards",
        Some(json!({"acc_id": CARD_HEX.to_lowercase(), "person": carol})),
    )
    .await;
    assert_eq!(again.status, 409, "{again:?}");
    let leaky = call(
        &site,
        a,
        "POST",
        "/api/v1/cards",
        Some(json!({"acc_id": "04A1B2C3D4E5F6A7B8", "person": carol})),
    )
    .await;
    assert_eq!(leaky.status, 400, "{leaky:?}");
    let label = call(
        &site,
        a,
        "POST",
        "/api/v1/cards",
        Some(json!({"acc_id": "0x0102030405", "person": carol, "label": "card 0102030405"})),
    )
    .await;
    assert_eq!(label.status, 400, "{label:?}");
    let list = call(&site, a, "GET", "/api/v1/cards", None).await;
    assert_eq!(list.json.as_array().unwrap().len(), 2, "{list:?}");
    for reply in [&r, &r2, &again, &leaky, &label, &list] {
        let t = reply.text.to_lowercase();
        for needle in [
            hex(&CARD_HEX_BYTES),
            "a1b2c3d4e5f6a7b8".to_owned(),
            hex(&CARD_DEC_BYTES),
            "12345678901234567".to_owned(),
            "0102030405".to_owned(),
        ] {
            assert!(!t.contains(&needle), "{needle} in {t}");
        }
    }
    let r = call(
        &site,
        a,
        "PATCH",
        &format!("/api/v1/cards/{card}"),
        Some(json!({"valid_until": "2099-12-31"})),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.json["valid_until"]
            .as_str()
            .unwrap()
            .starts_with("2100-01-01"),
        "{r:?}"
    );

    // The gate presents the card: granted and logged.
    let check = json!({ "gate_id": gate, "acc_id": hex(&CARD_HEX_BYTES) }).to_string();
    let r = raw(
        site.addr(),
        next_ip(),
        "POST",
        "/api/v1/access/check",
        &[("Authorization", format!("Bearer {secret}"))],
        check.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        (&r.json["allow"], &r.json["relay_ms"]),
        (&json!(true), &json!(1500)),
        "{r:?}"
    );

    let r = call(
        &site,
        a,
        "GET",
        "/api/v1/access/log?person=carol&gate=front",
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let rows = r.json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{r:?}");
    assert_eq!(rows[0]["card"], json!(card));
    assert_eq!(rows[0]["person_name"], "carol");
    assert_eq!(rows[0]["gate_name"], "front");
    assert_eq!(rows[0]["allowed"], true);
    assert_eq!(rows[0]["reason"], "granted");
    assert_eq!(rows[0]["source"], "online");
    // Filters that match nothing, and bad filters.
    let since = (time::OffsetDateTime::now_utc() + time::Duration::days(2)).date();
    let r = call(
        &site,
        a,
        "GET",
        &format!("/api/v1/access/log?since={since}"),
        None,
    )
    .await;
    assert_eq!(r.json["rows"], json!([]), "{r:?}");
    let r = call(&site, a, "GET", "/api/v1/access/log?limit=0", None).await;
    assert_eq!(r.status, 400, "{r:?}");
    let r = call(&site, a, "GET", "/api/v1/access/log?persn=1", None).await;
    assert_eq!(r.status, 400, "{r:?}");
    let r = call(&site, a, "GET", "/api/v1/access/log?person=nobody", None).await;
    assert_eq!(r.status, 404, "{r:?}");
    site.stop().await;

    // Only hashes on disk: no raw id bytes, and no hex or decimal text of them.
    let mut disk = Vec::new();
    for entry in std::fs::read_dir(site.data()).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            disk.extend(std::fs::read(&p).unwrap());
        }
    }
    assert!(std::fs::metadata(db_path(site.data())).unwrap().len() > 0);
    let lower = String::from_utf8_lossy(&disk).to_lowercase();
    for raw in [&CARD_HEX_BYTES[..], &CARD_DEC_BYTES[..]] {
        assert!(
            !disk.windows(raw.len()).any(|w| w == raw),
            "raw id bytes on disk"
        );
        assert!(!lower.contains(&hex(raw)), "hex id on disk");
    }
    assert!(!lower.contains("12345678901234567"), "decimal id on disk");
    assert!(!lower.contains("a1b2c3d4e5f6a7b8"), "typed hex id on disk");
}
