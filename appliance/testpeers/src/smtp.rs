//! A minimal SMTP server that stores what it is sent (RFC 5321 section 4: the greeting,
//! EHLO/HELO, MAIL, RCPT, DATA with dot-unstuffing (4.5.2), RSET, NOOP, QUIT). It offers
//! no extension that needs TLS or AUTH, so clients must speak plain SMTP to it.

use crate::{lock, TimedOut};
use base64::Engine as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// RFC 5321 4.5.3.1.4: a command line is at most 512 octets; a text line 1000. Lines
/// longer than this are refused.
const MAX_LINE: usize = 1000;
/// Messages larger than this are refused with 552.
const MAX_MESSAGE: usize = 10 * 1024 * 1024;

/// One message the sink accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkMessage {
    pub received_at: SystemTime,
    /// The reverse path of `MAIL FROM:<...>` (empty for `<>`).
    pub from: String,
    /// The forward paths of `RCPT TO:<...>`.
    pub to: Vec<String>,
    /// The message as sent after DATA, dot-unstuffed, without the final `.` line.
    pub data: Vec<u8>,
    /// The header section, unfolded, in order (names as sent).
    pub headers: Vec<(String, String)>,
    /// `Subject`, with RFC 2047 encoded words decoded.
    pub subject: Option<String>,
    /// `X-Gatehouse-Idempotency-Key`.
    pub idempotency_key: Option<String>,
}

impl SinkMessage {
    /// The first header called `name` (any case), as sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// What follows the header section (still in its transfer encoding).
    pub fn body(&self) -> &[u8] {
        let d = &self.data[..];
        find(d, b"\r\n\r\n")
            .map(|i| &d[i + 4..])
            .or_else(|| find(d, b"\n\n").map(|i| &d[i + 2..]))
            .unwrap_or(&[])
    }
}

/// A running SMTP sink on 127.0.0.1; stops when dropped.
pub struct SmtpSink {
    addr: SocketAddr,
    messages: Arc<Mutex<Vec<SinkMessage>>>,
    count_rx: watch::Receiver<usize>,
    server: JoinHandle<()>,
}

impl SmtpSink {
    /// Binds 127.0.0.1:0 and serves until dropped.
    pub async fn start() -> std::io::Result<SmtpSink> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let messages = Arc::new(Mutex::new(Vec::new()));
        let (count_tx, count_rx) = watch::channel(0);
        let count_tx = Arc::new(count_tx);
        let store = Arc::clone(&messages);
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let store = Arc::clone(&store);
                let count_tx = Arc::clone(&count_tx);
                tokio::spawn(async move {
                    // A session that fails (client gone) just ends.
                    let _ = session(stream, &store, &count_tx).await;
                });
            }
        });
        Ok(SmtpSink {
            addr,
            messages,
            count_rx,
            server,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every message accepted so far, in order.
    pub fn messages(&self) -> Vec<SinkMessage> {
        lock(&self.messages).clone()
    }

    /// Waits until at least `n` messages are accepted; returns them all.
    pub async fn wait_for(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<SinkMessage>, TimedOut> {
        let mut rx = self.count_rx.clone();
        let reached = matches!(
            tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n)).await,
            Ok(Ok(_))
        );
        if reached {
            Ok(self.messages())
        } else {
            Err(TimedOut {
                what: "e-mail messages",
                wanted: n,
                got: self.messages().len(),
            })
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[derive(Default)]
struct Transaction {
    from: Option<String>,
    to: Vec<String>,
}

async fn session(
    stream: TcpStream,
    store: &Mutex<Vec<SinkMessage>>,
    count_tx: &watch::Sender<usize>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    write
        .write_all(b"220 sink.gatehouse.test ESMTP gatehouse-testpeers\r\n")
        .await?;
    let mut greeted = false;
    let mut tx = Transaction::default();
    let mut line = Vec::new();
    loop {
        line.clear();
        if read.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        if line.len() > MAX_LINE {
            write.write_all(b"500 5.5.2 line too long\r\n").await?;
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        let (verb, arg) = match text.split_once(' ') {
            Some((v, a)) => (v.to_ascii_uppercase(), a.trim()),
            None => (text.to_ascii_uppercase(), ""),
        };
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => {
                greeted = true;
                tx = Transaction::default();
                b"250-sink.gatehouse.test\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 10485760\r\n"
            }
            "HELO" => {
                greeted = true;
                tx = Transaction::default();
                b"250 sink.gatehouse.test\r\n"
            }
            "MAIL" if !greeted => b"503 5.5.1 EHLO or HELO first\r\n",
            "MAIL" if tx.from.is_some() => b"503 5.5.1 nested MAIL command\r\n",
            "MAIL" => match path_arg(arg, "FROM:") {
                Some(p) => {
                    tx.from = Some(p);
                    b"250 2.1.0 OK\r\n"
                }
                None => b"501 5.5.4 syntax: MAIL FROM:<address>\r\n",
            },
            "RCPT" if tx.from.is_none() => b"503 5.5.1 MAIL first\r\n",
            "RCPT" => match path_arg(arg, "TO:") {
                Some(p) if !p.is_empty() => {
                    tx.to.push(p);
                    b"250 2.1.5 OK\r\n"
                }
                _ => b"501 5.5.4 syntax: RCPT TO:<address>\r\n",
            },
            "DATA" if tx.to.is_empty() => b"503 5.5.1 RCPT first\r\n",
            "DATA" => {
                write
                    .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                match read_data(&mut read).await? {
                    Some(data) => {
                        let message = parse_message(std::mem::take(&mut tx), data);
                        let n = {
                            let mut s = lock(store);
                            s.push(message);
                            s.len()
                        };
                        count_tx.send_replace(n);
                        b"250 2.0.0 OK queued\r\n"
                    }
                    None => {
                        tx = Transaction::default();
                        b"552 5.3.4 message too big\r\n"
                    }
                }
            }
            "RSET" => {
                tx = Transaction::default();
                b"250 2.0.0 OK\r\n"
            }
            "NOOP" => b"250 2.0.0 OK\r\n",
            "QUIT" => {
                write.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
            }
            _ => b"502 5.5.2 command not recognised\r\n",
        };
        write.write_all(reply).await?;
    }
}

/// The address in `FROM:<a@b> PARAMS` / `TO:<a@b>` (an empty one for `<>`).
fn path_arg(arg: &str, prefix: &str) -> Option<String> {
    let head = arg.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = arg[prefix.len()..].trim_start();
    let rest = rest.strip_prefix('<')?;
    let end = rest.find('>')?;
    Some(rest[..end].to_string())
}

/// Lines up to the lone `.`, dot-unstuffed (RFC 5321 4.5.2). `None` when larger than
/// [`MAX_MESSAGE`] (the rest is read and dropped so the session can go on).
async fn read_data<R: tokio::io::AsyncBufRead + Unpin>(
    read: &mut R,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut data = Vec::new();
    let mut too_big = false;
    let mut line = Vec::new();
    loop {
        line.clear();
        if read.read_until(b'\n', &mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == b".\r\n" || line == b".\n" {
            return Ok((!too_big).then_some(data));
        }
        let unstuffed = if line.first() == Some(&b'.') {
            &line[1..]
        } else {
            &line[..]
        };
        if data.len() + unstuffed.len() > MAX_MESSAGE {
            too_big = true;
            data.clear();
        }
        if !too_big {
            data.extend_from_slice(unstuffed);
        }
    }
}

fn parse_message(tx: Transaction, data: Vec<u8>) -> SinkMessage {
    let headers = parse_headers(&data);
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let subject = get("Subject").map(|s| decode_encoded_words(&s));
    let idempotency_key = get("X-Gatehouse-Idempotency-Key");
    SinkMessage {
        received_at: SystemTime::now(),
        from: tx.from.unwrap_or_default(),
        to: tx.to,
        headers,
        subject,
        idempotency_key,
        data,
    }
}

/// RFC 5322 2.2: header fields up to the first empty line; a line starting with space or
/// tab continues the previous field (unfolding removes the line break only).
fn parse_headers(data: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(data);
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = fields.last_mut() {
                v.push_str(line);
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            fields.push((name.trim().to_string(), value.trim_start().to_string()));
        }
    }
    for (_, v) in &mut fields {
        *v = v.trim().to_string();
    }
    fields
}

/// RFC 2047 encoded words (`=?charset?B|Q?text?=`, UTF-8 or ASCII assumed); whitespace
/// between adjacent encoded words is dropped (6.2).
fn decode_encoded_words(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    let mut last_was_word = false;
    while !rest.is_empty() {
        let Some(start) = rest.find("=?") else {
            out.push_str(rest);
            break;
        };
        let (before, from) = rest.split_at(start);
        match decode_word(from) {
            Some((decoded, used)) => {
                if !(last_was_word && before.trim().is_empty()) {
                    out.push_str(before);
                }
                out.push_str(&decoded);
                rest = &from[used..];
                last_was_word = true;
            }
            None => {
                out.push_str(before);
                out.push_str("=?");
                rest = &from[2..];
                last_was_word = false;
            }
        }
    }
    out
}

/// One encoded word at the start of `s`: its text and how many bytes it took.
fn decode_word(s: &str) -> Option<(String, usize)> {
    let body = s.strip_prefix("=?")?;
    let (_charset, body) = body.split_once('?')?;
    let (encoding, body) = body.split_once('?')?;
    let end = body.find("?=")?;
    let text = &body[..end];
    let used = s.len() - body.len() + end + 2;
    let bytes = match encoding {
        "B" | "b" => base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()?,
        "Q" | "q" => {
            let mut out = Vec::new();
            let b = text.as_bytes();
            let mut i = 0;
            while i < b.len() {
                match b[i] {
                    b'_' => out.push(b' '),
                    b'=' => {
                        let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                        out.push(u8::from_str_radix(hex, 16).ok()?);
                        i += 2;
                    }
                    c => out.push(c),
                }
                i += 1;
            }
            out
        }
        _ => return None,
    };
    Some((String::from_utf8_lossy(&bytes).into_owned(), used))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(path_arg("FROM:<a@b.c>", "FROM:").as_deref(), Some("a@b.c"));
        assert_eq!(
            path_arg("from: <a@b.c> BODY=8BITMIME", "FROM:").as_deref(),
            Some("a@b.c")
        );
        assert_eq!(path_arg("FROM:<>", "FROM:").as_deref(), Some(""));
        assert_eq!(path_arg("TO:a@b.c", "TO:"), None);
        assert_eq!(path_arg("", "TO:"), None);
    }

    #[test]
    fn headers_unfold_and_subjects_decode() {
        let data = b"Subject: =?utf-8?b?Y2Fmw6k=?= =?utf-8?q?_au_lait?=\r\n\
                     X-Long: one\r\n two\r\n\
                     \r\n\
                     Subject: not a header\r\n";
        let m = parse_message(Transaction::default(), data.to_vec());
        assert_eq!(m.subject.as_deref(), Some("café au lait"));
        assert_eq!(m.header("x-long"), Some("one two"));
        assert_eq!(m.headers.len(), 2);
        assert_eq!(m.body(), b"Subject: not a header\r\n");
        assert_eq!(decode_encoded_words("plain =?x"), "plain =?x");
    }

    #[tokio::test]
    async fn data_is_dot_unstuffed() {
        let input: &[u8] = b"a\r\n..b\r\n.c\r\n.\r\nNOOP\r\n";
        let mut r = BufReader::new(input);
        let data = read_data(&mut r).await.unwrap().unwrap();
        assert_eq!(data, b"a\r\n.b\r\nc\r\n");
    }
}
