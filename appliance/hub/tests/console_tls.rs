//! The console over HTTPS end to end: a hub on 127.0.0.1 port 0 for both listeners, with
//! its certificate made on first start in a temporary data directory. Clients trust
//! exactly that certificate (no built-in roots), so a handshake that succeeds proves the
//! hub served the certificate on file. Covers the first admin's enrolment (Secure
//! cookie, single use, throttle per client address over TLS), what a plain listener on
//! the LAN still serves (its policy forced with `Hub::set_plain_http`, since a test may
//! only use loopback), and that a client stalling its handshake holds up no one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_hub::tls::{cert_paths, sha256_fingerprint, PlainHttp};
use gatehouse_store::admin::EnrolToken;
use gatehouse_store::Store;
use reqwest::redirect::Policy;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use tokio::io::AsyncWriteExt;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::CertificateDer;

mod support;

use support::{next_ip, Setup};

const PASSWORD: &str = "a long enough passphrase";

/// A site serving the console over HTTPS, and the certificate it made.
struct Site {
    base: support::Site,
    https: SocketAddr,
    cert_pem: String,
    fingerprint: String,
}

impl Site {
    /// A hub with HTTPS on; `lan`: the plain listener behaves as one on a LAN address.
    async fn start(lan: bool) -> Site {
        Site::start_in(tempfile::tempdir().unwrap(), lan).await
    }

    async fn start_in(dir: tempfile::TempDir, lan: bool) -> Site {
        let mut cert = None;
        let base = Setup::in_dir(dir)
            .with_config(|c| c.hub.https_listen = Some(support::loopback()))
            .start_with(|hub| {
                assert_eq!(hub.plain_http(), &PlainHttp::Everything);
                if lan {
                    hub.set_plain_http(PlainHttp::gates_only(hub.https_addr()));
                }
                let c = hub.console_cert().unwrap();
                cert = Some((c.cert_pem().to_owned(), c.fingerprint().to_owned()));
            })
            .await;
        let (cert_pem, fingerprint) = cert.unwrap();
        Site {
            https: base.hub.https.unwrap(),
            base,
            cert_pem,
            fingerprint,
        }
    }

    /// Stops the hub and waits for it to finish (graceful shutdown over both listeners).
    async fn stop(&mut self) {
        self.base.stop().await;
    }

    /// A client trusting only the hub's certificate, from its own loopback address, that
    /// resolves gatehouse.local to the hub.
    fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(self.cert_pem.as_bytes()).unwrap())
            .tls_built_in_root_certs(false)
            .resolve("gatehouse.local", self.https)
            .local_address(IpAddr::V4(next_ip()))
            .redirect(Policy::none())
            .tls_info(true)
            .build()
            .unwrap()
    }

    fn https_url(&self, path: &str) -> String {
        format!("https://gatehouse.local:{}{path}", self.https.port())
    }

    fn http_url(&self, path: &str) -> String {
        self.base.url(path)
    }

    fn new_token(&self) -> EnrolToken {
        let t = EnrolToken::generate().unwrap();
        let now = time::OffsetDateTime::now_utc();
        assert!(self.base.store().replace_enrol_token(&t, now).unwrap());
        t
    }
}

async fn json_of(r: reqwest::Response) -> (StatusCode, Vec<String>, Value) {
    let status = r.status();
    let cookies = r
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let body = r.json::<Value>().await.unwrap_or(Value::Null);
    (status, cookies, body)
}

#[tokio::test]
async fn https_serves_the_certificate_on_file() {
    let mut site = Site::start(false).await;
    let (crt, key) = cert_paths(site.base.dir.path());
    let der = CertificateDer::from_pem_file(&crt).unwrap();
    assert_eq!(sha256_fingerprint(&der), site.fingerprint);
    assert_eq!(std::fs::read_to_string(&crt).unwrap(), site.cert_pem);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // By name (a SAN DNS name) and by address (a SAN IP).
    let c = site.client();
    for url in [
        site.https_url("/healthz"),
        format!("https://127.0.0.1:{}/healthz", site.https.port()),
    ] {
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{url}");
        let info = r.extensions().get::<reqwest::tls::TlsInfo>().unwrap();
        let presented = info.peer_certificate().unwrap();
        assert_eq!(sha256_fingerprint(presented), site.fingerprint);
        assert_eq!(r.text().await.unwrap(), "ok\n");
    }
    // A client that does not trust the certificate gets no answer.
    let stranger = reqwest::Client::builder()
        .resolve("gatehouse.local", site.https)
        .build()
        .unwrap();
    let e = stranger
        .get(site.https_url("/healthz"))
        .send()
        .await
        .unwrap_err();
    assert!(e.is_connect(), "{e:?}");
    // Plain HTTP on loopback serves everything as before.
    let r = c.get(site.http_url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    site.stop().await;

    // A restart keeps the certificate.
    let mut again = Site::start_in(site.base.dir, false).await;
    assert_eq!(again.fingerprint, site.fingerprint);
    assert_eq!(again.cert_pem, site.cert_pem);
    again.stop().await;
}

#[tokio::test]
async fn first_admin_enrols_over_https_once() {
    let mut site = Site::start(false).await;
    let c = site.client();
    let r = c
        .get(site.https_url("/api/v1/auth/enrol"))
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(r).await.2, json!({ "needed": true }));

    let token = site.new_token();
    let enrol = |c: &reqwest::Client, token: String, password: &str| {
        c.post(site.https_url("/api/v1/auth/enrol"))
            .json(&json!({ "token": token, "name": "alice", "password": password }))
            .send()
    };
    // A wrong token, an unparsable one, a weak password: nothing is made.
    let wrong = EnrolToken::generate().unwrap().to_string();
    let (status, _, body) = json_of(enrol(&c, wrong, PASSWORD).await.unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let e = body["error"].as_str().unwrap();
    assert!(e.contains("gatehouse admin enrol-token"), "{e}");
    let (status, _, _) = json_of(enrol(&c, "1234".into(), PASSWORD).await.unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let c = site.client();
    let (status, _, body) = json_of(enrol(&c, token.to_string(), "short").await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"].as_str().unwrap().contains("`password`"),
        "{body}"
    );

    // The right token (typed in lower case): an admin and a session, cookie Secure.
    let typed = token.to_string().to_lowercase();
    let (status, cookies, body) = json_of(enrol(&c, typed, PASSWORD).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["admin"]["name"], "alice");
    assert_eq!(body["admin"]["role"], "admin");
    assert!(body["csrf"].is_string());
    let cookie = cookies
        .iter()
        .find(|c| c.starts_with("gh_session="))
        .unwrap();
    assert!(
        cookie.contains("; Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let session = body["token"].as_str().unwrap().to_owned();
    let r = c
        .get(site.https_url("/api/v1/auth/me"))
        .bearer_auth(&session)
        .send()
        .await
        .unwrap();
    let (status, _, me) = json_of(r).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["admin"]["name"], "alice");

    // Used up: a second enrolment, even with the same token, is gone for good.
    let c2 = site.client();
    let (status, _, body) = json_of(enrol(&c2, token.to_string(), PASSWORD).await.unwrap()).await;
    assert_eq!(status, StatusCode::GONE);
    assert!(body["error"].as_str().unwrap().contains("log in"), "{body}");
    let r = c2
        .get(site.https_url("/api/v1/auth/enrol"))
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(r).await.2, json!({ "needed": false }));
    assert_eq!(
        Store::open(site.base.dir.path())
            .unwrap()
            .list_admins()
            .unwrap()
            .len(),
        1
    );

    // Login works over HTTPS (Secure cookie) and on loopback plain HTTP (no Secure).
    let login = json!({ "name": "alice", "password": PASSWORD });
    let r = c2
        .post(site.https_url("/api/v1/auth/login"))
        .json(&login)
        .send()
        .await
        .unwrap();
    let (status, cookies, _) = json_of(r).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        cookies.iter().any(|c| c.contains("; Secure")),
        "{cookies:?}"
    );
    let r = c2
        .post(site.http_url("/api/v1/auth/login"))
        .json(&login)
        .send()
        .await
        .unwrap();
    let (status, cookies, _) = json_of(r).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        cookies.iter().all(|c| !c.contains("Secure")) && !cookies.is_empty(),
        "{cookies:?}"
    );
    site.stop().await;
}

#[tokio::test]
async fn enrolment_is_throttled_per_client_address_over_tls() {
    let mut site = Site::start(false).await;
    site.new_token();
    let c = site.client();
    let attempt = |c: &reqwest::Client| {
        c.post(site.https_url("/api/v1/auth/enrol"))
            .json(&json!({
                "token": EnrolToken::generate().unwrap().to_string(),
                "name": "mallory",
                "password": PASSWORD
            }))
            .send()
    };
    for _ in 0..5 {
        assert_eq!(
            attempt(&c).await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let r = attempt(&c).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key(reqwest::header::RETRY_AFTER));
    // Another address (ConnectInfo over TLS is the real peer) still may try.
    let other = site.client();
    assert_eq!(
        attempt(&other).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    site.stop().await;
}

#[tokio::test]
async fn plain_http_on_the_lan_serves_only_gates_webhook_and_health() {
    let mut site = Site::start(true).await;
    let c = site.client();
    let https_base = format!("https://127.0.0.1:{}", site.https.port());

    // Console pages and API reads: a permanent redirect to the same path over HTTPS.
    for path in [
        "/",
        "/api/v1/events?severity=critical",
        "/api/v1/events/stream",
    ] {
        let r = c.get(site.http_url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT, "{path}");
        let location = r.headers()[reqwest::header::LOCATION].to_str().unwrap();
        assert_eq!(location, format!("{https_base}{path}"));
    }
    // The redirect target works (by address: a SAN of the certificate).
    let r = c
        .get(format!("{https_base}/api/v1/auth/enrol"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Changes: 403 naming the HTTPS address, and nothing is done.
    site.new_token();
    for path in ["/api/v1/auth/login", "/api/v1/auth/enrol", "/api/v1/people"] {
        let r = c
            .post(site.http_url(path))
            .json(&json!({ "name": "alice", "password": PASSWORD }))
            .send()
            .await
            .unwrap();
        let (status, cookies, body) = json_of(r).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        assert!(cookies.is_empty());
        let e = body["error"].as_str().unwrap();
        assert!(
            e.contains(&format!("{https_base}/")) && e.contains("HTTPS"),
            "{path}: {e}"
        );
    }

    // Still on plain HTTP: health, metrics, the gates' check, the events webhook (each
    // answering with its own checks, not the HTTPS refusal).
    let r = c.get(site.http_url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "ok\n");
    let r = c.get(site.http_url("/metrics")).send().await.unwrap();
    assert!(
        r.status() != StatusCode::PERMANENT_REDIRECT && r.status() != StatusCode::FORBIDDEN,
        "{}",
        r.status()
    );
    let r = c
        .post(site.http_url("/api/v1/access/check"))
        .json(&json!({ "acc_id": "01020304", "gate_id": 1 }))
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(r).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(!body["error"].as_str().unwrap().contains("HTTPS"), "{body}");
    let r = c
        .post(site.http_url("/api/v1/events"))
        .json(&json!({ "kind": "intrusion" }))
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_of(r).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(!body["error"].as_str().unwrap().contains("HTTPS"), "{body}");
    // And no admin was made by any of the refused requests.
    assert!(!Store::open(site.base.dir.path())
        .unwrap()
        .has_admin()
        .unwrap());
    site.stop().await;
}

#[tokio::test]
async fn a_stalled_handshake_holds_up_no_one() {
    let mut site = Site::start(false).await;
    // Clients that connect and send part of a TLS record header, then nothing.
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let mut s = tokio::net::TcpStream::connect(site.https).await.unwrap();
        s.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
        stalled.push(s);
    }
    // Others are served meanwhile, on new connections each.
    for _ in 0..3 {
        let r = site
            .client()
            .get(site.https_url("/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    // ... while every stalled handshake is still waiting (not closed by a timeout first).
    for s in &stalled {
        let mut buf = [0u8; 16];
        match s.try_read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("stalled connection was answered or closed: {other:?}"),
        }
    }
    // Shutdown does not wait for them.
    site.stop().await;
    drop(stalled);
}
