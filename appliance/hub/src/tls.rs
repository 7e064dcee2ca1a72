//! The console over HTTPS: its certificate, the TLS listener, and what the plain-HTTP
//! listener still serves when it is on the network.
//!
//! - [`ConsoleCert`]: a self-signed ECDSA P-256 certificate (rcgen on ring) made on first
//!   start in `<data_dir>/tls/console.crt` with its key in `console.key` (0600), valid
//!   [`VALIDITY_DAYS`], for the names of [`cert_names`]; its SHA-256 fingerprint
//!   ([`sha256_fingerprint`], colon hex) is what admins compare with their browser's.
//! - [`TlsListener`]: an [`axum::serve::Listener`] that accepts TCP connections and runs
//!   each TLS handshake in its own task with a [`HANDSHAKE_TIMEOUT`], handing finished
//!   streams to `axum::serve`; a client that never finishes its handshake holds up no
//!   one else, and graceful shutdown and `ConnectInfo<SocketAddr>` work as on plain TCP
//!   (wrap it with [`axum::serve::ListenerExt::tap_io`]).
//! - [`ViaTls`]: the request extension the HTTPS app carries ([`https_app`]); handlers
//!   read it through the [`Transport`] extractor (the session cookie is `Secure` only
//!   over TLS).
//! - [`PlainHttp`] / [`gates_only`]: on a non-loopback `hub.http_listen` (unless
//!   `hub.dev_plain_http`), console pages, the admin API and the live feed get a 308 to
//!   HTTPS (GET, HEAD) or a 403 (anything else); the gates' routes, the events webhook,
//!   `/healthz` and `/metrics` stay (they carry their own keys and HMACs).
//!
//! Promises: no key material is logged or printed; a missing or unreadable pair of files
//! is replaced by a new pair (never half a pair: the key is written before the
//! certificate, each through a temporary file renamed into place).

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use gatehouse_config::{Config, TunnelMode};
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::fmt;
use std::io::Write;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// The directory in `general.data_dir` holding the console's certificate and key.
pub const TLS_DIR: &str = "tls";
/// The certificate (PEM) in [`TLS_DIR`].
pub const CERT_FILE: &str = "console.crt";
/// The private key (PKCS#8 PEM, 0600) in [`TLS_DIR`].
pub const KEY_FILE: &str = "console.key";
/// How long a new certificate is valid.
pub const VALIDITY_DAYS: i64 = 3653;
/// How long a client may take over its TLS handshake before it is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; further connections wait in the kernel's backlog.
pub const MAX_HANDSHAKES: usize = 256;
/// Fixed names every certificate carries (mDNS name of the box, and loopback).
const FIXED_NAMES: [&str; 4] = ["localhost", "gatehouse.local", "127.0.0.1", "::1"];

/// Why the console's certificate or listener could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("cannot {action} {path}: {source}; check the permissions of general.data_dir")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make the console certificate: {0}")]
    Generate(String),
    #[error("the console certificate {path} is unusable ({detail}); delete {path} and its key to make a new one")]
    Unusable { path: PathBuf, detail: String },
}

// ---- certificate -------------------------------------------------------------------

/// The console's certificate and key. `Debug` leaves the key out.
#[derive(Clone)]
pub struct ConsoleCert {
    cert_pem: String,
    cert: CertificateDer<'static>,
    key: Arc<PrivateKeyDer<'static>>,
    fingerprint: String,
    path: PathBuf,
}

impl fmt::Debug for ConsoleCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsoleCert")
            .field("path", &self.path)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// SHA-256 of `der` as upper-case colon hex (`AB:CD:...`), as browsers show it.
pub fn sha256_fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The names a new certificate is made for: `localhost`, `gatehouse.local`, 127.0.0.1,
/// ::1, the IP of `hub.https_listen` when it is not unspecified, the tunnel address, and
/// `hub.tls_names` (duplicates dropped, order kept).
pub fn cert_names(config: &Config) -> Vec<String> {
    let mut names: Vec<String> = FIXED_NAMES.iter().map(|s| (*s).to_owned()).collect();
    if let Some(a) = config.hub.https_listen.filter(|a| !a.ip().is_unspecified()) {
        names.push(a.ip().to_string());
    }
    names.push(config.tunnel.address.addr().to_string());
    if let Some(a6) = config.tunnel.address6 {
        names.push(a6.addr().to_string());
    }
    names.extend(config.hub.tls_names.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.to_ascii_lowercase()));
    names
}

/// Where the certificate and key of `data_dir` are.
pub fn cert_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join(TLS_DIR);
    (dir.join(CERT_FILE), dir.join(KEY_FILE))
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> TlsError + 'a {
    move |source| TlsError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

impl ConsoleCert {
    /// Loads the certificate of `general.data_dir`, making a new one (and its key) if
    /// either file is missing. The flag says whether it was made now.
    pub fn load_or_create(config: &Config) -> Result<(ConsoleCert, bool), TlsError> {
        let data_dir = &config.general.data_dir;
        let (cert_path, key_path) = cert_paths(data_dir);
        if cert_path.exists() && key_path.exists() {
            return Ok((ConsoleCert::load(&cert_path, &key_path)?, false));
        }
        let dir = data_dir.join(TLS_DIR);
        std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        set_mode(&dir, 0o700)?;
        let (cert_pem, key_pem) = generate(&cert_names(config))?;
        write_file(&key_path, key_pem.as_bytes(), 0o600)?;
        write_file(&cert_path, cert_pem.as_bytes(), 0o644)?;
        // Run as root (`gatehouse console` on the box's shell), the files still belong to
        // the hub's user, the owner of data_dir.
        give_to_owner_of(data_dir, &[&dir, &key_path, &cert_path]);
        Ok((ConsoleCert::load(&cert_path, &key_path)?, true))
    }

    /// Loads a certificate and its key from PEM files.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<ConsoleCert, TlsError> {
        let cert_pem = std::fs::read_to_string(cert_path).map_err(io_err("read", cert_path))?;
        let key_pem = std::fs::read(key_path).map_err(io_err("read", key_path))?;
        let unusable = |detail: String| TlsError::Unusable {
            path: cert_path.to_owned(),
            detail,
        };
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| unusable(format!("no PEM certificate: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::Unusable {
            path: key_path.to_owned(),
            detail: "no PEM private key".into(),
        })?;
        let c = ConsoleCert {
            fingerprint: sha256_fingerprint(&cert),
            cert_pem,
            cert,
            key: Arc::new(key),
            path: cert_path.to_owned(),
        };
        // Refuses a key that does not belong to the certificate.
        c.server_config()?;
        Ok(c)
    }

    /// The certificate in PEM (what a client adds to its trust store).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The certificate's SHA-256 fingerprint, colon hex.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The certificate file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A rustls server configuration (TLS 1.2 and 1.3, ring, HTTP/1.1 by ALPN).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let unusable = |e: rustls::Error| TlsError::Unusable {
            path: self.path.clone(),
            detail: e.to_string(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(unusable)?
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], self.key.clone_key())
            .map_err(unusable)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// A self-signed certificate and its key, both PEM.
fn generate(names: &[String]) -> Result<(String, String), TlsError> {
    use rcgen::{
        CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
        KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
    };
    let gen = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen)?;
    let mut params = CertificateParams::default();
    params.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(n.clone().try_into().map_err(gen)?)),
        })
        .collect::<Result<_, TlsError>>()?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Gatehouse console");
    dn.push(DnType::OrganizationName, "Gatehouse");
    params.distinguished_name = dn;
    let mut serial = [0u8; 16];
    rand_core::RngCore::try_fill_bytes(&mut rand_core::OsRng, &mut serial)
        .map_err(|e| TlsError::Generate(format!("no randomness from the OS: {e}")))?;
    serial[0] &= 0x7f; // a positive INTEGER (RFC 5280 4.1.2.2)
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    // A box without a real-time clock may boot in 1970 before NTP: start the validity
    // no later than 2026 and end it ten years after the later of now and 2026, so the
    // certificate is not born expired.
    let floor = time::macros::datetime!(2026-01-01 00:00 UTC);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now.min(floor) - time::Duration::days(1);
    params.not_after = now.max(floor) + time::Duration::days(VALIDITY_DAYS);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.self_signed(&key).map_err(gen)?;
    Ok((cert.pem(), key.serialize_pem()))
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> Result<(), TlsError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_err("set permissions of", path))
}

#[cfg(not(unix))]
fn set_mode(_: &Path, _: u32) -> Result<(), TlsError> {
    Ok(())
}

/// Writes `bytes` to a temporary file created with `mode`, then renames it to `path`.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    let written = opts.open(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    written.map_err(io_err("write", &tmp))?;
    set_mode(&tmp, mode)?;
    std::fs::rename(&tmp, path).map_err(io_err("rename into place", path))
}

#[cfg(unix)]
fn give_to_owner_of(dir: &Path, paths: &[&Path]) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    for p in paths {
        // Fails (harmlessly) unless run as root or already the owner.
        let _ = std::os::unix::fs::chown(p, Some(meta.uid()), Some(meta.gid()));
    }
}

#[cfg(not(unix))]
fn give_to_owner_of(_: &Path, _: &[&Path]) {}

// ---- console URLs ------------------------------------------------------------------

fn url(scheme: &str, host: &str, port: u16) -> String {
    let default = if scheme == "https" { 443 } else { 80 };
    if port == default {
        format!("{scheme}://{host}/")
    } else {
        format!("{scheme}://{host}:{port}/")
    }
}

fn host_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    }
}

/// Where admins open the console: over HTTPS when `https` (the bound HTTPS address) is
/// set, else over plain HTTP at `http`; plus the tunnel services that forward to it.
pub fn console_urls(config: &Config, https: Option<SocketAddr>, http: SocketAddr) -> Vec<String> {
    let (scheme, addr) = match https {
        Some(a) => ("https", a),
        None => ("http", http),
    };
    let tunnel_ip = config.tunnel.address.addr();
    let mut urls = Vec::new();
    if addr.ip().is_unspecified() {
        urls.push(url(scheme, "gatehouse.local", addr.port()));
        if config.tunnel.mode == TunnelMode::Tun {
            urls.push(url(scheme, &host_of(tunnel_ip), addr.port()));
        }
    } else {
        urls.push(url(scheme, &host_of(addr.ip()), addr.port()));
    }
    for s in &config.tunnel.services {
        let reaches = s.target.port() == addr.port()
            && (s.target.ip() == addr.ip()
                || addr.ip().is_unspecified()
                || (s.target.ip().is_loopback() && addr.ip().is_loopback()));
        if reaches {
            urls.push(url(scheme, &host_of(tunnel_ip), s.port));
        }
    }
    let mut seen = std::collections::HashSet::new();
    urls.retain(|u| seen.insert(u.clone()));
    urls
}

// ---- listener ----------------------------------------------------------------------

/// A TLS listener for `axum::serve`: TCP accepts and handshakes run in a background task
/// (one task per handshake, at most [`MAX_HANDSHAKES`] at once, each at most its
/// timeout); [`axum::serve::Listener::accept`] returns finished streams. The background
/// task, and with it the TCP listener, ends when this is dropped.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsListener")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// Starts accepting on `tcp` (must be called inside a tokio runtime).
    pub fn new(
        tcp: TcpListener,
        config: Arc<rustls::ServerConfig>,
        handshake_timeout: Duration,
    ) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(accept_loop(
            tcp,
            TlsAcceptor::from(config),
            handshake_timeout,
            tx,
        ));
        Ok(TlsListener { ready, local })
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    timeout: Duration,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let permit = tokio::select! {
            _ = tx.closed() => return,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            _ = tx.closed() => return,
            a = tcp.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning
                // (as axum's own TCP listener does).
                tracing::warn!(error = %e, "console HTTPS accept failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send((tls, peer)).await;
                }
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "console TLS handshake failed");
                }
                Err(_) => {
                    tracing::debug!(%peer, "console TLS handshake timed out");
                }
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task holds the sender for as long as this listener lives: it
            // cannot end first. Wait forever rather than panic.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

// ---- request transport -------------------------------------------------------------

/// Request extension: the request came over the console's TLS listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViaTls;

/// How a request reached the hub (extractor; never rejects).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tls,
    Plain,
}

impl<S: Send + Sync> FromRequestParts<S> for Transport {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Transport, Infallible> {
        Ok(if parts.extensions.get::<ViaTls>().is_some() {
            Transport::Tls
        } else {
            Transport::Plain
        })
    }
}

/// The app as served on the HTTPS listener: every request carries [`ViaTls`].
pub fn https_app(app: Router) -> Router {
    app.layer(axum::Extension(ViaTls))
}

// ---- plain HTTP policy -------------------------------------------------------------

/// What the plain-HTTP listener serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlainHttp {
    /// Everything (a loopback `hub.http_listen`, or `hub.dev_plain_http`).
    Everything,
    /// Only [`open_on_plain_http`] routes; the console is at HTTPS on `https_port`
    /// (`None`: HTTPS is off), reached by the host the client asked for, else
    /// `fallback_host`.
    GatesOnly {
        https_port: Option<u16>,
        fallback_host: String,
    },
}

impl PlainHttp {
    /// The policy for `config`, with the bound HTTPS address.
    pub fn for_config(config: &Config, https: Option<SocketAddr>) -> PlainHttp {
        if config.hub.http_listen.ip().is_loopback() || config.hub.dev_plain_http {
            return PlainHttp::Everything;
        }
        PlainHttp::gates_only(https)
    }

    /// [`PlainHttp::GatesOnly`] for the bound HTTPS address.
    pub fn gates_only(https: Option<SocketAddr>) -> PlainHttp {
        let fallback_host = match https.map(|a| a.ip()) {
            Some(ip) if !ip.is_unspecified() && !ip.is_loopback() => host_of(ip),
            _ => "gatehouse.local".to_owned(),
        };
        PlainHttp::GatesOnly {
            https_port: https.map(|a| a.port()),
            fallback_host,
        }
    }
}

/// Whether `method path` stays on a gates-only plain-HTTP listener: the gates' HTTP
/// transport, the events webhook, `/healthz` and `/metrics`.
pub fn open_on_plain_http(method: &Method, path: &str) -> bool {
    match path {
        "/healthz" | "/metrics" | "/api/v1/access/check" | crate::http::FRAMES_PATH => true,
        "/api/v1/events" => method == Method::POST,
        _ => false,
    }
}

/// The host part of a `Host` header (no port), if it is a plain name or address.
fn request_host(parts: &axum::http::HeaderMap) -> Option<String> {
    let host = parts.get(header::HOST)?.to_str().ok()?;
    let name = if let Some(rest) = host.strip_prefix('[') {
        let (inside, _) = rest.split_once(']')?;
        inside.parse::<Ipv6Addr>().ok()?;
        return Some(format!("[{inside}]"));
    } else {
        host.split(':').next()?
    };
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    ok.then(|| name.to_owned())
}

/// `app` limited to what a gates-only plain-HTTP listener serves (see the module docs).
pub fn gates_only(app: Router, policy: PlainHttp) -> Router {
    let PlainHttp::GatesOnly {
        https_port,
        fallback_host,
    } = policy
    else {
        return app;
    };
    let fallback: Arc<str> = fallback_host.into();
    app.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let fallback = fallback.clone();
            async move {
                if open_on_plain_http(req.method(), req.uri().path()) {
                    return next.run(req).await;
                }
                refuse_plain(&req, https_port, &fallback)
            }
        },
    ))
}

fn refuse_plain(req: &Request, https_port: Option<u16>, fallback: &str) -> Response {
    let Some(port) = https_port else {
        return crate::admin::ApiError::new(
            StatusCode::FORBIDDEN,
            "the console and admin API are not served over plain HTTP on this address, and \
             hub.https_listen is off; set hub.https_listen (or use the loopback address)",
        )
        .into_response();
    };
    let host = request_host(req.headers()).unwrap_or_else(|| fallback.to_owned());
    let base = url("https", &host, port);
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .trim_start_matches('/');
        let location = format!("{base}{path}");
        let mut r = StatusCode::PERMANENT_REDIRECT.into_response();
        if let Ok(v) = HeaderValue::from_str(&location) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        return r;
    }
    crate::admin::ApiError::new(
        StatusCode::FORBIDDEN,
        format!(
            "the console is served over HTTPS at {base}; plain HTTP on this address serves only \
             gates, the events webhook and health checks. Use the HTTPS address (compare the \
             certificate fingerprint with `gatehouse console` on the box)"
        ),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn config(dir: &Path) -> Config {
        let mut c = Config::default();
        c.general.data_dir = dir.to_owned();
        c.hub.tls_names = vec![
            "gh.example.net".into(),
            "192.0.2.9".into(),
            "LOCALHOST".into(),
        ];
        c
    }

    #[test]
    fn fingerprints_are_colon_hex_sha256() {
        let f = sha256_fingerprint(b"abc");
        assert_eq!(
            f,
            "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD"
        );
    }

    #[test]
    fn names_cover_loopback_box_tunnel_and_configured() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        assert_eq!(
            cert_names(&c),
            [
                "localhost",
                "gatehouse.local",
                "127.0.0.1",
                "::1",
                "10.77.0.1",
                "gh.example.net",
                "192.0.2.9"
            ]
        );
        c.hub.https_listen = Some("192.0.2.1:8443".parse().unwrap());
        assert!(cert_names(&c).contains(&"192.0.2.1".to_owned()));
    }

    #[test]
    fn certificate_is_made_once_with_a_private_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        let (cert, created) = ConsoleCert::load_or_create(&c).unwrap();
        assert!(created);
        let (again, created) = ConsoleCert::load_or_create(&c).unwrap();
        assert!(!created);
        assert_eq!(again.fingerprint(), cert.fingerprint());
        let (crt, key) = cert_paths(dir.path());
        let der = CertificateDer::from_pem_file(&crt).unwrap();
        assert_eq!(sha256_fingerprint(&der), cert.fingerprint());
        assert_eq!(cert.fingerprint().len(), 32 * 3 - 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(!format!("{cert:?}").contains("PRIVATE"));
        // A lost key makes a new pair.
        std::fs::remove_file(&key).unwrap();
        let (new, created) = ConsoleCert::load_or_create(&c).unwrap();
        assert!(created);
        assert_ne!(new.fingerprint(), cert.fingerprint());
        // A key of another certificate is refused.
        let other = tempfile::tempdir().unwrap();
        ConsoleCert::load_or_create(&config(other.path())).unwrap();
        let (_, other_key) = cert_paths(other.path());
        std::fs::copy(&other_key, &key).unwrap();
        let e = ConsoleCert::load(&crt, &key).unwrap_err().to_string();
        assert!(e.contains("delete"), "{e}");
    }

    #[test]
    fn plain_policy_follows_the_listen_address() {
        let mut c = Config::default();
        c.hub.http_listen = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(PlainHttp::for_config(&c, None), PlainHttp::Everything);
        c.hub.http_listen = "[::1]:8080".parse().unwrap();
        assert_eq!(PlainHttp::for_config(&c, None), PlainHttp::Everything);
        c.hub.http_listen = "0.0.0.0:8080".parse().unwrap();
        let https = Some("0.0.0.0:8443".parse().unwrap());
        assert_eq!(
            PlainHttp::for_config(&c, https),
            PlainHttp::GatesOnly {
                https_port: Some(8443),
                fallback_host: "gatehouse.local".into()
            }
        );
        c.hub.http_listen = "192.0.2.1:80".parse().unwrap();
        assert_eq!(
            PlainHttp::for_config(&c, Some("192.0.2.1:443".parse().unwrap())),
            PlainHttp::GatesOnly {
                https_port: Some(443),
                fallback_host: "192.0.2.1".into()
            }
        );
        c.hub.dev_plain_http = true;
        assert_eq!(PlainHttp::for_config(&c, https), PlainHttp::Everything);

        for (m, p, open) in [
            (Method::POST, "/api/v1/access/check", true),
            (Method::POST, crate::http::FRAMES_PATH, true),
            (Method::POST, "/api/v1/events", true),
            (Method::GET, "/healthz", true),
            (Method::GET, "/metrics", true),
            (Method::GET, "/api/v1/events", false),
            (Method::GET, "/api/v1/events/stream", false),
            (Method::POST, "/api/v1/auth/login", false),
            (Method::POST, "/api/v1/auth/enrol", false),
            (Method::GET, "/", false),
            (Method::GET, "/console/app.js", false),
            (Method::GET, "/healthz/x", false),
        ] {
            assert_eq!(open_on_plain_http(&m, p), open, "{m} {p}");
        }
    }

    #[test]
    fn hosts_are_taken_from_the_request_only_when_plain() {
        let h = |v: &str| {
            let mut m = axum::http::HeaderMap::new();
            m.insert(header::HOST, HeaderValue::from_str(v).unwrap());
            request_host(&m)
        };
        assert_eq!(h("box.example:8080").as_deref(), Some("box.example"));
        assert_eq!(h("192.0.2.1").as_deref(), Some("192.0.2.1"));
        assert_eq!(h("[fd00::1]:8080").as_deref(), Some("[fd00::1]"));
        assert_eq!(h("[nope]:1"), None);
        assert_eq!(h("a/b"), None);
        assert_eq!(h(""), None);
        assert_eq!(request_host(&axum::http::HeaderMap::new()), None);
    }

    #[test]
    fn urls_name_the_https_address_and_tunnel_services() {
        let mut c = Config::default();
        let http = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(
            console_urls(&c, Some("0.0.0.0:8443".parse().unwrap()), http),
            ["https://gatehouse.local:8443/", "https://10.77.0.1:8443/"]
        );
        c.tunnel.mode = TunnelMode::Userspace;
        c.tunnel.services.push(gatehouse_config::Service {
            name: "console-https".into(),
            port: 443,
            target: "127.0.0.1:8443".parse().unwrap(),
            roles: vec![],
        });
        assert_eq!(
            console_urls(&c, Some("127.0.0.1:8443".parse().unwrap()), http),
            ["https://127.0.0.1:8443/", "https://10.77.0.1/"]
        );
        assert_eq!(console_urls(&c, None, http), ["http://127.0.0.1:8080/"]);
    }
}
