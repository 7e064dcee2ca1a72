//! A Server-Sent Events client. The parser follows the WHATWG HTML standard, section
//! 9.2.6 "Interpreting an event stream": lines end in CRLF, LF or CR; a leading BOM is
//! dropped; `:` starts a comment; `event`, `data`, `id` (ignored if it holds NUL) and
//! `retry` (digits only) are the fields; a blank line dispatches the event unless its data
//! is empty; the last event id persists from event to event; an event not closed by a
//! blank line when the stream ends is dropped.

use std::collections::VecDeque;
use std::time::Duration;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseMessage {
    /// The last event id at dispatch (`None` if none was set, or it was set empty).
    pub id: Option<String>,
    /// The `event:` field, `"message"` if none was given.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// The event-stream parser, without I/O: bytes in, events out.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// The previous chunk ended in CR: a LF at the start of the next is part of that break.
    after_cr: bool,
    started: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
    last_event_id: String,
    retry: Option<Duration>,
    comments: u64,
}

impl SseParser {
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// Feeds bytes; returns the events they complete.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Vec<SseMessage> {
        let mut out = Vec::new();
        if !self.started && !bytes.is_empty() {
            // The BOM is only looked for once, at the very start (it may not straddle
            // chunks in practice: servers write it with the first line).
            self.started = true;
            bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        }
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\r' => {
                    self.after_cr = true;
                    self.end_line(&mut out);
                }
                b'\n' => self.end_line(&mut out),
                _ => self.line.push(b),
            }
        }
        out
    }

    /// The last event id the stream set (what `Last-Event-ID` resumes from).
    pub fn last_event_id(&self) -> Option<&str> {
        (!self.last_event_id.is_empty()).then_some(self.last_event_id.as_str())
    }

    /// The reconnection time the stream asked for with `retry:`.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// How many comment lines (`:...`, e.g. keep-alives) went by.
    pub fn comments(&self) -> u64 {
        self.comments
    }

    fn end_line(&mut self, out: &mut Vec<SseMessage>) {
        let line = String::from_utf8_lossy(&std::mem::take(&mut self.line)).into_owned();
        if line.is_empty() {
            let event = self.event.take();
            if self.has_data {
                self.has_data = false;
                let mut data = std::mem::take(&mut self.data);
                if data.ends_with('\n') {
                    data.pop();
                }
                out.push(SseMessage {
                    id: self.last_event_id().map(str::to_string),
                    event: event.unwrap_or_else(|| "message".to_string()),
                    data,
                });
            }
            return;
        }
        if line.starts_with(':') {
            self.comments += 1;
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_str(), ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => {
                self.has_data = true;
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => self.last_event_id = value.to_string(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse::<u64>() {
                    self.retry = Some(Duration::from_millis(ms));
                }
            }
            _ => {}
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SseError {
    #[error("connecting to the event stream: {0}")]
    Connect(String),
    #[error("the event stream answered HTTP {status}: {body:?}")]
    Status { status: u16, body: String },
    #[error("not an event stream: Content-Type {0:?}")]
    NotEventStream(String),
    #[error("no event within {0:?}")]
    Timeout(Duration),
    #[error("the event stream ended")]
    Closed,
    #[error("reading the event stream: {0}")]
    Read(String),
}

/// A connection to an event stream.
pub struct SseClient {
    http: reqwest::Client,
    url: String,
    headers: Vec<(String, String)>,
    response: Option<reqwest::Response>,
    parser: SseParser,
    queue: VecDeque<SseMessage>,
}

impl SseClient {
    /// `GET url` with `Accept: text/event-stream` and `headers` (a session cookie, an
    /// `Authorization`, a `Last-Event-ID`, ...); fails unless the answer is a 2xx event
    /// stream.
    pub async fn connect(url: &str, headers: &[(&str, &str)]) -> Result<SseClient, SseError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| SseError::Connect(e.to_string()))?;
        let mut client = SseClient {
            http,
            url: url.to_string(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            response: None,
            parser: SseParser::new(),
            queue: VecDeque::new(),
        };
        client.open().await?;
        Ok(client)
    }

    /// Connects again, as a browser's EventSource does: same URL and headers, with
    /// `Last-Event-ID` set to the last id seen (if any). Undelivered parsed events are
    /// kept; a half-received one is dropped.
    pub async fn reconnect(&mut self) -> Result<(), SseError> {
        self.response = None;
        if let Some(id) = self.parser.last_event_id().map(str::to_string) {
            self.headers
                .retain(|(n, _)| !n.eq_ignore_ascii_case("last-event-id"));
            self.headers.push(("Last-Event-ID".to_string(), id));
        }
        let kept = SseParser {
            last_event_id: std::mem::take(&mut self.parser.last_event_id),
            retry: self.parser.retry,
            comments: self.parser.comments,
            ..SseParser::default()
        };
        self.parser = kept;
        self.open().await
    }

    /// The next event, waiting at most `timeout` for it.
    pub async fn next(&mut self, timeout: Duration) -> Result<SseMessage, SseError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(m) = self.queue.pop_front() {
                return Ok(m);
            }
            let response = self.response.as_mut().ok_or(SseError::Closed)?;
            match tokio::time::timeout_at(deadline, response.chunk()).await {
                Err(_) => return Err(SseError::Timeout(timeout)),
                Ok(Ok(Some(bytes))) => {
                    let events = self.parser.feed(&bytes);
                    self.queue.extend(events);
                }
                Ok(Ok(None)) => {
                    self.response = None;
                    return Err(SseError::Closed);
                }
                Ok(Err(e)) => {
                    self.response = None;
                    return Err(SseError::Read(e.to_string()));
                }
            }
        }
    }

    /// Events until `n` are collected, all within `timeout`.
    pub async fn take(&mut self, n: usize, timeout: Duration) -> Result<Vec<SseMessage>, SseError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            out.push(self.next(left).await?);
        }
        Ok(out)
    }

    pub fn last_event_id(&self) -> Option<&str> {
        self.parser.last_event_id()
    }

    pub fn retry(&self) -> Option<Duration> {
        self.parser.retry()
    }

    /// Comment lines seen so far (keep-alives).
    pub fn comments(&self) -> u64 {
        self.parser.comments()
    }

    async fn open(&mut self) -> Result<(), SseError> {
        let mut req = self
            .http
            .get(&self.url)
            .header("Accept", "text/event-stream")
            .header("Cache-Control", "no-cache");
        for (n, v) in &self.headers {
            req = req.header(n.as_str(), v.as_str());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| SseError::Connect(e.to_string()))?;
        let status = resp.status().as_u16();
        if !resp.status().is_success() {
            let body = resp.text().await.unwrap_or_default();
            let body: String = body.chars().take(200).collect();
            return Err(SseError::Status { status, body });
        }
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if !content_type
            .to_ascii_lowercase()
            .starts_with("text/event-stream")
        {
            return Err(SseError::NotEventStream(content_type));
        }
        self.response = Some(resp);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: Option<&str>, event: &str, data: &str) -> SseMessage {
        SseMessage {
            id: id.map(str::to_string),
            event: event.to_string(),
            data: data.to_string(),
        }
    }

    #[test]
    fn parses_fields_comments_and_retry() {
        let mut p = SseParser::new();
        let out = p.feed(
            b"\xEF\xBB\xBF: hello\n\
              retry: 2500\n\
              id: 7\n\
              event: firing\n\
              data: {\"a\":1}\n\
              data:second\n\
              \n\
              data: no id change\n\
              \n\
              id\n\
              data: id reset\n\
              \n\
              event: only-type\n\
              \n\
              id: x\0y\n\
              retry: 1s\n\
              data\n\
              \n",
        );
        assert_eq!(
            out,
            [
                msg(Some("7"), "firing", "{\"a\":1}\nsecond"),
                msg(Some("7"), "message", "no id change"),
                msg(None, "message", "id reset"),
                msg(None, "message", ""),
            ]
        );
        assert_eq!(p.comments(), 1);
        assert_eq!(p.retry(), Some(Duration::from_millis(2500)));
        assert_eq!(p.last_event_id(), None);
    }

    #[test]
    fn any_line_ending_and_any_chunking() {
        let stream: &[u8] = b"id: 1\r\ndata: a\r\n\r\nid: 2\rdata: b\r\rid: 3\ndata: c\n\n";
        let want = [
            msg(Some("1"), "message", "a"),
            msg(Some("2"), "message", "b"),
            msg(Some("3"), "message", "c"),
        ];
        for split in 0..=stream.len() {
            let mut p = SseParser::new();
            let mut out = p.feed(&stream[..split]);
            out.extend(p.feed(&stream[split..]));
            assert_eq!(out, want, "split at {split}");
        }
        let mut p = SseParser::new();
        let out: Vec<_> = stream.iter().flat_map(|b| p.feed(&[*b])).collect();
        assert_eq!(out, want);
    }

    #[test]
    fn an_unterminated_event_is_not_dispatched() {
        let mut p = SseParser::new();
        assert!(p.feed(b"id: 9\ndata: half").is_empty());
        assert_eq!(p.last_event_id(), Some("9"));
    }
}
