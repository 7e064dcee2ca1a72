//! Sends notifications: webhooks (Slack-compatible or plain JSON), e-mail over SMTP and
//! ntfy pushes. The bodies come from [`gatehouse_alerts::render`]; this crate only moves
//! them, one attempt per call. Retrying, backoff and the delivery log are the caller's
//! (the hub's delivery workers, with `gatehouse_alerts` deciding when to try again).
//!
//! Promises:
//! - One attempt, bounded in time: an HTTP request (connect, send, answer) takes at most
//!   [`SenderConfig::request_timeout`]; an SMTP session too (lettre's per-step timeout
//!   plus an overall one).
//! - Success means the receiver took it: an HTTP 2xx (redirects are not followed, so a 3xx
//!   is a failure), or the SMTP server's 250 after DATA. Every other answer is a
//!   [`SendError`] the caller retries; [`SendError::http_status`] gives the status for the
//!   delivery log.
//! - Every request carries the notification's idempotency key: webhooks in the
//!   `Idempotency-Key` header and the body, ntfy in `X-Idempotency-Key` and the body,
//!   e-mail in `X-Gatehouse-Idempotency-Key` and a `Message-ID` made from it.
//! - Error messages name the host and port, never a URL's path or query (a Slack webhook
//!   URL or an ntfy topic is itself a secret), a password or a token.
//! - TLS is rustls with the ring provider and the webpki-roots CA set, for HTTP and SMTP
//!   alike.

use base64::Engine as _;
use gatehouse_alerts::render;
use gatehouse_alerts::{Notification, ReceiverConfig, SmtpSecurity, WebhookFormat};
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::time::{Duration, Instant};

/// The header (and, for JSON bodies, the field) that carries the idempotency key.
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";
/// ntfy's server ignores unknown headers; the key travels as this one.
pub const NTFY_IDEMPOTENCY_KEY_HEADER: &str = "X-Idempotency-Key";
/// The e-mail header that carries the idempotency key.
pub const EMAIL_IDEMPOTENCY_KEY_HEADER: &str = "X-Gatehouse-Idempotency-Key";
/// How much of a refusing answer's body goes into [`SendError::Status`].
pub const ERROR_BODY_BYTES: usize = 200;
/// How much of a successful answer's body is read (so the connection can be reused).
const SUCCESS_BODY_BYTES: usize = 64 * 1024;

/// How the [`Sender`] talks to receivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderConfig {
    /// The whole of one attempt: connect, send, answer. Default 10 s.
    pub request_timeout: Duration,
    /// Establishing a connection (TCP and TLS). Default 5 s.
    pub connect_timeout: Duration,
    /// HTTP `User-Agent` and e-mail `User-Agent` header. Default `gatehouse/<version>`.
    pub user_agent: String,
}

impl Default for SenderConfig {
    fn default() -> SenderConfig {
        SenderConfig {
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            user_agent: format!("gatehouse/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// A successful attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// The HTTP status (webhook, ntfy); `None` for e-mail.
    pub status: Option<u16>,
    /// From the start of the attempt to the receiver's answer.
    pub latency: Duration,
}

/// Why an attempt failed. The caller retries all of them except [`SendError::Console`]
/// and, until the receiver is edited, [`SendError::Config`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    #[error("console notifications are not sent: the console's live feed delivers them")]
    Console,
    #[error("receiver configuration: {0}")]
    Config(String),
    #[error("could not connect to {target}: {detail}")]
    Connect { target: String, detail: String },
    #[error("{target} did not answer within {after:?}")]
    Timeout { target: String, after: Duration },
    #[error("{target} answered HTTP {status}: {body:?}")]
    Status {
        target: String,
        status: u16,
        /// The first [`ERROR_BODY_BYTES`] bytes of the answer (lossy UTF-8, one line).
        body: String,
    },
    #[error("SMTP server {target}: {detail}")]
    Smtp {
        target: String,
        /// The server's reply code, when it sent one.
        reply: Option<u16>,
        detail: String,
    },
    #[error("sending to {target}: {detail}")]
    Transport { target: String, detail: String },
}

impl SendError {
    /// The HTTP status the receiver answered with, if it answered.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            SendError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Sends notifications. Cheap to clone (clones share the HTTP connection pool).
#[derive(Debug, Clone)]
pub struct Sender {
    http: reqwest::Client,
    config: SenderConfig,
}

impl Sender {
    pub fn new(config: SenderConfig) -> Result<Sender, SendError> {
        let http = reqwest::Client::builder()
            .user_agent(config.user_agent.clone())
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| SendError::Config(format!("HTTP client: {}", error_chain(&e))))?;
        Ok(Sender { http, config })
    }

    pub fn config(&self) -> &SenderConfig {
        &self.config
    }

    /// One attempt to deliver `n` to `receiver`.
    pub async fn send(
        &self,
        receiver: &ReceiverConfig,
        n: &Notification,
    ) -> Result<Sent, SendError> {
        match receiver {
            ReceiverConfig::Console => Err(SendError::Console),
            ReceiverConfig::Webhook { url, format } => self.webhook(url, *format, n).await,
            ReceiverConfig::Email {
                host,
                port,
                security,
                username,
                password,
                from,
                to,
            } => {
                let credentials = match (username, password) {
                    (Some(u), Some(p)) => Some(Credentials::new(u.clone(), p.clone())),
                    (None, None) => None,
                    _ => {
                        return Err(SendError::Config(
                            "e-mail receiver: give both a username and a password, or neither"
                                .into(),
                        ))
                    }
                };
                let smtp = Smtp {
                    host,
                    port: *port,
                    security: *security,
                    credentials,
                    from,
                    to,
                };
                self.email(smtp, n).await
            }
            ReceiverConfig::Ntfy { url, token } => self.ntfy(url, token.as_deref(), n).await,
        }
    }

    async fn webhook(
        &self,
        url: &str,
        format: WebhookFormat,
        n: &Notification,
    ) -> Result<Sent, SendError> {
        let (url, target) = parse_http_url(url, "webhook")?;
        let body = match format {
            WebhookFormat::Slack => render::slack_body(n),
            WebhookFormat::Json => render::json_body(n),
        };
        let req = self
            .http
            .post(url)
            .header(IDEMPOTENCY_KEY_HEADER, render::idempotency_key(n))
            .json(&body);
        self.post(req, &target).await
    }

    async fn ntfy(
        &self,
        url: &str,
        token: Option<&str>,
        n: &Notification,
    ) -> Result<Sent, SendError> {
        let (url, target) = parse_http_url(url, "ntfy")?;
        let m = render::ntfy(n);
        let mut req = self
            .http
            .post(url)
            .header("Title", header_text(&m.title))
            .header("Priority", m.priority.to_string())
            .header("Tags", header_text(&m.tags.join(",")))
            .header(NTFY_IDEMPOTENCY_KEY_HEADER, render::idempotency_key(n))
            .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(m.body);
        // A URL with bytes a header cannot hold is left out rather than failing the push.
        if let Some(click) = m
            .click
            .filter(|c| reqwest::header::HeaderValue::from_str(c).is_ok())
        {
            req = req.header("Click", click);
        }
        if let Some(token) = token {
            // bearer_auth marks the header sensitive (kept out of Debug output).
            req = req.bearer_auth(token);
        }
        self.post(req, &target).await
    }

    async fn post(&self, req: reqwest::RequestBuilder, target: &str) -> Result<Sent, SendError> {
        let started = Instant::now();
        let mut resp = req.send().await.map_err(|e| self.http_error(e, target))?;
        let status = resp.status().as_u16();
        let ok = resp.status().is_success();
        let limit = if ok {
            SUCCESS_BODY_BYTES
        } else {
            ERROR_BODY_BYTES
        };
        let mut body = Vec::new();
        while body.len() < limit {
            match resp.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                // The status is what counts; a body cut short does not change it, unless
                // the deadline passed before the answer was whole.
                Err(e) if e.is_timeout() && ok => return Err(self.http_error(e, target)),
                Err(_) => break,
            }
        }
        let latency = started.elapsed();
        if ok {
            return Ok(Sent {
                status: Some(status),
                latency,
            });
        }
        body.truncate(ERROR_BODY_BYTES);
        Err(SendError::Status {
            target: target.to_string(),
            status,
            body: one_line(&String::from_utf8_lossy(&body)),
        })
    }

    fn http_error(&self, e: reqwest::Error, target: &str) -> SendError {
        // reqwest would print the URL, whose path may be a secret.
        let e = e.without_url();
        let target = target.to_string();
        if e.is_connect() {
            let detail = if e.is_timeout() {
                format!("no connection within {:?}", self.config.connect_timeout)
            } else {
                error_chain(&e)
            };
            SendError::Connect { target, detail }
        } else if e.is_timeout() {
            SendError::Timeout {
                target,
                after: self.config.request_timeout,
            }
        } else {
            SendError::Transport {
                target,
                detail: error_chain(&e),
            }
        }
    }

    async fn email(&self, smtp: Smtp<'_>, n: &Notification) -> Result<Sent, SendError> {
        let target = format!("{}:{}", smtp.host, smtp.port);
        let message = self.email_message(&smtp, n)?;

        let builder = match smtp.security {
            SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(smtp.host),
            SmtpSecurity::Starttls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(smtp.host)
            }
            SmtpSecurity::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
                smtp.host,
            )),
        }
        .map_err(|e| {
            SendError::Config(format!(
                "e-mail receiver host {:?}: {}",
                smtp.host,
                error_chain(&e)
            ))
        })?;
        let mut builder = builder
            .port(smtp.port)
            .timeout(Some(self.config.request_timeout));
        if let Some(c) = smtp.credentials {
            builder = builder.credentials(c);
        }
        let transport = builder.build();

        let started = Instant::now();
        match tokio::time::timeout(self.config.request_timeout, transport.send(message)).await {
            Err(_elapsed) => Err(SendError::Timeout {
                target,
                after: self.config.request_timeout,
            }),
            Ok(Ok(_response)) => Ok(Sent {
                status: None,
                latency: started.elapsed(),
            }),
            Ok(Err(e)) => Err(smtp_error(&e, target, self.config.request_timeout)),
        }
    }

    fn email_message(&self, smtp: &Smtp<'_>, n: &Notification) -> Result<Message, SendError> {
        let content = render::email(n);
        let key = render::idempotency_key(n);
        let from: Mailbox = smtp
            .from
            .parse()
            .map_err(|e| SendError::Config(format!("e-mail sender {:?}: {e}", smtp.from)))?;
        if smtp.to.is_empty() {
            return Err(SendError::Config(
                "e-mail receiver has no recipients".into(),
            ));
        }
        let mut b = Message::builder()
            .from(from)
            .subject(content.subject)
            // RFC 5322 3.6.4: the id's left part is a dot-atom; the key's ':' is not atext.
            .message_id(Some(format!("<{}@gatehouse>", key.replace(':', "."))))
            .user_agent(self.config.user_agent.clone())
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str(EMAIL_IDEMPOTENCY_KEY_HEADER),
                key,
            ))
            .header(ContentType::TEXT_PLAIN);
        for to in smtp.to {
            let to: Mailbox = to
                .parse()
                .map_err(|e| SendError::Config(format!("e-mail recipient {to:?}: {e}")))?;
            b = b.to(to);
        }
        b.body(content.text)
            .map_err(|e| SendError::Config(format!("e-mail message: {e}")))
    }
}

struct Smtp<'a> {
    host: &'a str,
    port: u16,
    security: SmtpSecurity,
    credentials: Option<Credentials>,
    from: &'a str,
    to: &'a [String],
}

fn smtp_error(e: &lettre::transport::smtp::Error, target: String, after: Duration) -> SendError {
    if e.is_timeout() {
        return SendError::Timeout { target, after };
    }
    if let Some(code) = e.status() {
        // "permanent error (550): <the server's text>"
        return SendError::Smtp {
            target,
            reply: code.to_string().parse::<u16>().ok(),
            detail: one_line(&e.to_string()),
        };
    }
    // lettre wraps its own errors ("Connection error: Connection error: ..."): the
    // innermost cause says what happened.
    let mut cause: &(dyn std::error::Error + 'static) = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    let detail = one_line(&cause.to_string());
    if e.is_tls() {
        SendError::Smtp {
            target,
            reply: None,
            detail: format!("TLS: {detail}"),
        }
    } else if e.is_client() || e.is_response() {
        SendError::Smtp {
            target,
            reply: None,
            detail,
        }
    } else {
        SendError::Connect { target, detail }
    }
}

/// An http(s) URL and the `host:port` that error messages may name.
fn parse_http_url(url: &str, what: &str) -> Result<(reqwest::Url, String), SendError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| SendError::Config(format!("{what} URL is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(SendError::Config(format!(
            "{what} URL must be http or https, not {:?}",
            parsed.scheme()
        )));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| SendError::Config(format!("{what} URL has no host")))?;
    let port = parsed.port_or_known_default().unwrap_or(0);
    let target = format!("{what} {host}:{port}");
    Ok((parsed, target))
}

/// An error and its sources, `: `-joined (each source once).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    one_line(&out)
}

/// A header value: as is when it is visible ASCII, else RFC 2047 base64 (ntfy decodes it).
fn header_text(s: &str) -> String {
    let s = one_line(s);
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        s
    } else {
        format!(
            "=?UTF-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
        )
    }
}

fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_text_encodes_non_ascii() {
        assert_eq!(header_text("[INFO] a (b)"), "[INFO] a (b)");
        assert_eq!(header_text("x\r\ny"), "x  y");
        assert_eq!(header_text("café"), "=?UTF-8?B?Y2Fmw6k=?=");
    }

    #[test]
    fn url_targets_name_host_and_port_only() {
        let (_, t) =
            parse_http_url("https://hooks.example.com/services/T0/B0/secret", "webhook").unwrap();
        assert_eq!(t, "webhook hooks.example.com:443");
        let (_, t) = parse_http_url("http://127.0.0.1:8080/topic?auth=x", "ntfy").unwrap();
        assert_eq!(t, "ntfy 127.0.0.1:8080");
        let e = parse_http_url("ftp://x/y", "webhook")
            .unwrap_err()
            .to_string();
        assert!(e.contains("http or https"), "{e}");
        let e = parse_http_url("not a url", "webhook")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a URL"), "{e}");
    }

    #[test]
    fn default_config() {
        let c = SenderConfig::default();
        assert_eq!(c.request_timeout, Duration::from_secs(10));
        assert_eq!(
            c.user_agent,
            format!("gatehouse/{}", env!("CARGO_PKG_VERSION"))
        );
    }
}
