//! The scaffolding the hub's integration tests share (each test file says `mod support;`):
//! admins made with the store and the password module as the CLI makes them, the test
//! config (a temporary data directory, HTTP on 127.0.0.1 port 0, HTTPS, the gates' TCP
//! transport and MQTT off unless a test turns them on), a hub served on its own task until
//! [`Running::stop`], and two ways to talk HTTP to it: [`raw`] (one request on its own
//! connection from a chosen loopback address, so per-address throttles are only hit where
//! a test means to) and [`Site::send`] (the site's reqwest client). Both give a [`Reply`].
//!
//! What varies between files is a parameter: the admins to seed ([`Setup::with_admins`]),
//! the config ([`Setup::with_config`]), a manual clock for the admin API
//! ([`Setup::manual_clock`]), and whatever a test does to the bound hub before it serves
//! ([`Setup::start_with`], [`Running::start`]).

// Every test file compiles this module and uses only part of it.
#![allow(dead_code)]

use gatehouse_access::model::Direction;
use gatehouse_config::{Config, MqttMode};
use gatehouse_gate_proto::GateKey;
use gatehouse_hub::access::AccessService;
use gatehouse_hub::admin::password::hash_password;
use gatehouse_hub::admin::ManualClock;
use gatehouse_hub::events::EventService;
use gatehouse_hub::Hub;
use gatehouse_store::admin::AdminRole;
use gatehouse_store::{NewGate, Store};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Value};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

pub const ALICE_PW: &str = "alice's long passphrase";
pub const OSCAR_PW: &str = "oscar watches the gates";
pub const IVAN_PW: &str = "ivan installs the doors";

/// How long [`Running::stop`] waits for the hub to finish: an upper bound so a hub that
/// hangs fails the test, never a threshold a slow machine could trip.
pub const STOP_WAIT: Duration = Duration::from_secs(30);

/// An admin a test logs in as.
#[derive(Debug, Clone, Copy)]
pub struct Admin {
    pub name: &'static str,
    pub role: AdminRole,
    pub password: &'static str,
}

pub const ALICE: Admin = Admin {
    name: "alice",
    role: AdminRole::Admin,
    password: ALICE_PW,
};
pub const OSCAR: Admin = Admin {
    name: "oscar",
    role: AdminRole::Operator,
    password: OSCAR_PW,
};
pub const IVAN: Admin = Admin {
    name: "ivan",
    role: AdminRole::Installer,
    password: IVAN_PW,
};
/// One admin of each role: alice (admin), oscar (operator), ivan (installer).
pub const ADMINS: [Admin; 3] = [ALICE, OSCAR, IVAN];

/// Adds `admins` to the store in `dir`, as `gatehouse admin add` does.
pub fn add_admins(dir: &Path, admins: &[Admin]) {
    let store = Store::open(dir).unwrap();
    let now = time::OffsetDateTime::now_utc();
    for a in admins {
        store
            .add_admin(a.name, a.role, &hash_password(a.password).unwrap(), now)
            .unwrap();
    }
}

/// A gate as the tests drive it: its id, key and MQTT user name.
pub struct TestGate {
    pub id: u32,
    pub key: GateKey,
    pub username: String,
}

/// Adds an inbound gate `name` in `zone` (relay 1.5 s, allowed from `allowed_ips` or
/// anywhere), as `gatehouse gate add` does.
pub fn add_gate(
    store: &Store,
    zone: i64,
    name: &str,
    allowed_ips: Option<Vec<String>>,
) -> TestGate {
    let c = store
        .add_gate(&NewGate {
            name: name.into(),
            zone,
            direction: Direction::In,
            relay_ms: 1500,
            allowed_ips,
            mqtt_username: None,
        })
        .unwrap();
    TestGate {
        id: u32::try_from(c.id).unwrap(),
        key: *c.secret.expose(),
        username: c.mqtt_username,
    }
}

/// The tests' config for data directory `dir`: HTTP on 127.0.0.1 port 0; HTTPS, the
/// gates' TCP transport and MQTT off.
pub fn config(dir: &Path) -> Config {
    let mut config = Config::default();
    config.general.data_dir = dir.to_path_buf();
    config.hub.http_listen = loopback();
    config.hub.https_listen = None;
    config.hub.gate_tcp_listen = None;
    config.hub.mqtt.mode = MqttMode::Off;
    config
}

/// 127.0.0.1 port 0: a free loopback port chosen when the hub binds.
pub fn loopback() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

/// A hub serving on its own task until [`Running::stop`], with the addresses it bound and
/// handles to its services.
pub struct Running {
    pub http: SocketAddr,
    pub https: Option<SocketAddr>,
    gate_tcp: Option<SocketAddr>,
    mqtt: Option<SocketAddr>,
    pub events: EventService,
    pub access: AccessService,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Binds a hub on `config`, lets `prepare` change it before it serves, and serves it.
    pub async fn start(config: &Config, prepare: impl FnOnce(&mut Hub)) -> Running {
        let mut hub = Hub::bind(config).await.unwrap();
        prepare(&mut hub);
        Running::serve(hub)
    }

    /// Serves a bound hub on a task of the current runtime.
    pub fn serve(hub: Hub) -> Running {
        let (http, https, gate_tcp, mqtt) = (
            hub.http_addr(),
            hub.https_addr(),
            hub.gate_tcp_addr(),
            hub.mqtt_addr(),
        );
        let (events, access) = (hub.events().clone(), hub.access().clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            hub.run(async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Running {
            http,
            https,
            gate_tcp,
            mqtt,
            events,
            access,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// The gates' TCP transport's address (the config must have turned it on).
    pub fn tcp(&self) -> SocketAddr {
        self.gate_tcp.expect("the gates' TCP transport is on")
    }

    /// The embedded MQTT broker's address (the config must have turned it on).
    pub fn mqtt(&self) -> SocketAddr {
        self.mqtt.expect("the embedded MQTT broker is on")
    }

    /// `path` on the plain HTTP listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// Stops the hub (it must still be running) and waits for it to finish, at most
    /// [`STOP_WAIT`]. A second call does nothing.
    pub async fn stop(&mut self) {
        self.try_stop().await.unwrap();
    }

    /// [`Running::stop`], saying what went wrong instead of panicking (for a `Drop`, which
    /// may run while a failed test unwinds).
    pub async fn try_stop(&mut self) -> Result<(), String> {
        if let Some(s) = self.stop.take() {
            s.send(())
                .map_err(|()| "the hub had already stopped".to_owned())?;
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(STOP_WAIT, t)
                .await
                .map_err(|_| format!("the hub did not stop within {STOP_WAIT:?}"))?
                .map_err(|e| format!("the hub failed: {e}"))?;
        }
        Ok(())
    }
}

/// A site before its hub starts: its data directory and config, for the test to add to.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub config: Config,
    clock: Option<ManualClock>,
}

impl Setup {
    /// A fresh temporary data directory with the tests' [`config`].
    pub fn new() -> Setup {
        Setup::in_dir(tempfile::tempdir().unwrap())
    }

    /// The tests' [`config`] on an existing data directory (a restart).
    pub fn in_dir(dir: tempfile::TempDir) -> Setup {
        let config = config(dir.path());
        Setup {
            dir,
            config,
            clock: None,
        }
    }

    /// Adds `admins` to the store now.
    pub fn with_admins(self, admins: &[Admin]) -> Setup {
        add_admins(self.dir.path(), admins);
        self
    }

    /// Changes the config.
    pub fn with_config(mut self, change: impl FnOnce(&mut Config)) -> Setup {
        change(&mut self.config);
        self
    }

    /// The admin API runs on a [`ManualClock`] starting now ([`Site::clock`]).
    pub fn manual_clock(mut self) -> Setup {
        self.clock = Some(ManualClock::new(SystemTime::now()));
        self
    }

    /// The store in the data directory.
    pub fn store(&self) -> Store {
        Store::open(self.dir.path()).unwrap()
    }

    pub async fn start(self) -> Site {
        self.start_with(|_| {}).await
    }

    /// Starts the hub, letting `prepare` change it before it serves.
    pub async fn start_with(self, prepare: impl FnOnce(&mut Hub)) -> Site {
        let clock = self.clock;
        let hub = Running::start(&self.config, |hub| {
            if let Some(c) = &clock {
                hub.admin_mut().set_clock(Arc::new(c.clone()));
            }
            prepare(hub);
        })
        .await;
        Site {
            dir: self.dir,
            hub,
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            clock,
        }
    }
}

/// A running hub with its data directory and an HTTP client.
pub struct Site {
    pub dir: tempfile::TempDir,
    pub hub: Running,
    pub client: reqwest::Client,
    clock: Option<ManualClock>,
}

impl Site {
    pub async fn stop(&mut self) {
        self.hub.stop().await;
    }

    /// The plain HTTP listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.hub.http
    }

    pub fn data(&self) -> &Path {
        self.dir.path()
    }

    pub fn store(&self) -> Store {
        Store::open(self.data()).unwrap()
    }

    /// The admin API's clock (the site must have been set up with
    /// [`Setup::manual_clock`]).
    pub fn clock(&self) -> &ManualClock {
        self.clock.as_ref().expect("set up with a manual clock")
    }

    /// `path` on the plain HTTP listener.
    pub fn url(&self, path: &str) -> String {
        self.hub.url(path)
    }

    /// Logs in from a fresh loopback address; the session (asserts it succeeded).
    pub async fn login(&self, name: &str, password: &str) -> Session {
        let r = login_reply(self, next_ip(), name, password).await;
        assert_eq!(r.status, 200, "{r:?}");
        Session {
            token: r.json["token"].as_str().unwrap().to_owned(),
            csrf: r.json["csrf"].as_str().unwrap().to_owned(),
        }
    }

    /// One request with the site's client, with `bearer` (a session, or a gate's or a
    /// source's key) if given, `body` as JSON.
    pub async fn send(
        &self,
        bearer: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self.client.request(method.parse().unwrap(), self.url(path));
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Reply::of(req.send().await.unwrap()).await
    }
}

/// A fresh loopback source address per call (127.0.1.1, 127.0.1.2, ...): the login
/// throttle counts per address (127.0.0.0/8 is all local on Linux).
pub fn next_ip() -> Ipv4Addr {
    static N: AtomicU32 = AtomicU32::new(0x7f00_0101);
    Ipv4Addr::from(N.fetch_add(1, Ordering::Relaxed))
}

/// An HTTP reply: its status, headers, body, and the body as JSON (`Null` if there is none).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Reply {
    /// Reads a reqwest response; a body that is not JSON gives `json` `Null`.
    pub async fn of(r: reqwest::Response) -> Reply {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            text,
            json,
        }
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `error` the hub answered with.
    pub fn error(&self) -> &str {
        self.json["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error in {self:?}"))
    }

    /// Asserts the status and that the error contains every one of `want`.
    pub fn refused(&self, status: u16, want: &[&str]) {
        assert_eq!(self.status, status, "{self:?}");
        for w in want {
            assert!(self.error().contains(w), "wanted {w:?} in {self:?}");
        }
    }
}

/// One HTTP/1.1 request on its own connection from `from`. Asserts the reply is not
/// chunked and its body, if any, is JSON.
pub async fn raw(
    addr: SocketAddr,
    from: Ipv4Addr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Reply {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::from((from, 0))).unwrap();
    let mut s = sock.connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: hub\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let _ = s.write_all(body).await;
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp).await;
    let text = String::from_utf8_lossy(&resp).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let mut headers = HeaderMap::new();
    for (k, v) in lines.filter_map(|l| l.split_once(':')) {
        headers.append(
            HeaderName::from_bytes(k.trim().as_bytes()).unwrap(),
            HeaderValue::from_str(v.trim()).unwrap(),
        );
    }
    assert!(
        !headers
            .get_all("transfer-encoding")
            .iter()
            .any(|v| v.to_str().unwrap_or("").contains("chunked")),
        "chunked reply: {text}"
    );
    let json = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"))
    };
    Reply {
        status,
        headers,
        text: body.to_owned(),
        json,
    }
}

/// A logged-in admin's session.
#[derive(Debug, Clone)]
pub struct Session {
    pub token: String,
    pub csrf: String,
}

/// How a request authenticates.
#[derive(Clone, Copy)]
pub enum Auth<'a> {
    Bearer(&'a Session),
    /// The cookie, and the CSRF header if `true`.
    Cookie(&'a Session, bool),
}

/// One request with [`raw`] from a fresh loopback address, authenticated by `auth`.
pub async fn call(
    site: &Site,
    auth: Auth<'_>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Reply {
    let mut headers = Vec::new();
    match auth {
        Auth::Bearer(s) => headers.push(("Authorization", format!("Bearer {}", s.token))),
        Auth::Cookie(s, csrf) => {
            headers.push(("Cookie", format!("gh_session={}", s.token)));
            if csrf {
                headers.push(("X-CSRF-Token", s.csrf.clone()));
            }
        }
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    raw(
        site.addr(),
        next_ip(),
        method,
        path,
        &headers,
        body.as_bytes(),
    )
    .await
}

/// A login attempt from `from`, whatever its outcome.
pub async fn login_reply(site: &Site, from: Ipv4Addr, name: &str, password: &str) -> Reply {
    let body = json!({ "name": name, "password": password }).to_string();
    raw(
        site.addr(),
        from,
        "POST",
        "/api/v1/auth/login",
        &[],
        body.as_bytes(),
    )
    .await
}
