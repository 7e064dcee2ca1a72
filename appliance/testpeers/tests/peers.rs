//! The test peers against plain clients on 127.0.0.1: the webhook receiver's faults and
//! ledger with reqwest, the SMTP sink with a hand-typed session, the SSE client against a
//! hand-written event-stream server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_testpeers::{
    free_port, Faults, SmtpSink, SseClient, SseError, SseMessage, WebhookReceiver,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

async fn post(url: &str, key: Option<&str>, body: &str) -> u16 {
    let mut req = reqwest::Client::new().post(url).body(body.to_string());
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn ledger_accepts_each_key_once_and_counts_duplicates() {
    let rx = WebhookReceiver::start(Faults::default()).await.unwrap();
    let url = rx.url();
    assert_eq!(post(&url, Some("a"), "{}").await, 200);
    assert_eq!(post(&url, Some("b"), "{}").await, 200);
    assert_eq!(post(&url, Some("a"), "{}").await, 200);
    assert_eq!(post(&url, Some("a"), "{}").await, 200);
    // The key may come in the body only.
    assert_eq!(post(&url, None, r#"{"idempotency_key":"c"}"#).await, 200);
    assert_eq!(post(&url, None, "not json").await, 200);

    assert_eq!(rx.accepted_keys(), ["a", "b", "c"]);
    assert_eq!(rx.duplicates_seen(), 2);
    assert_eq!(rx.duplicate_keys(), ["a", "a"]);
    let c = rx.counts();
    assert_eq!(
        (
            c.requests,
            c.accepted,
            c.duplicates,
            c.failed,
            c.without_key
        ),
        (6, 3, 2, 0, 1)
    );
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 6);
    assert_eq!(reqs[4].idempotency_key.as_deref(), Some("c"));
    assert_eq!(reqs[5].json, None);
    assert_eq!(reqs[5].body, b"not json");
    assert_eq!(
        rx.wait_for_accepted(3, Duration::from_millis(10))
            .await
            .unwrap()
            .len(),
        3
    );
    let e = rx
        .wait_for_accepted(4, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!((e.wanted, e.got), (4, 3));
}

#[tokio::test]
async fn faults_follow_the_seed_and_the_ratio() {
    let faults = Faults {
        fail_ratio: 0.3,
        seed: 42,
        ..Faults::default()
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        let rx = WebhookReceiver::start(faults).await.unwrap();
        let mut statuses = Vec::new();
        for i in 0..300 {
            statuses.push(post(&rx.url(), Some(&format!("k{i}")), "{}").await);
        }
        let failed = statuses.iter().filter(|s| **s == 500).count();
        assert_eq!(rx.counts().failed as usize, failed);
        assert_eq!(rx.accepted_keys().len(), 300 - failed);
        assert!((60..120).contains(&failed), "{failed} of 300 failed");
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[1], "same seed, same faults");
}

async fn reply(r: &mut BufReader<TcpStream>) -> String {
    // A reply is one or more lines; the last has a space after the code.
    let mut all = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).await.unwrap();
        all.push_str(&line);
        if line.len() < 4 || line.as_bytes()[3] == b' ' {
            return all;
        }
    }
}

async fn say(r: &mut BufReader<TcpStream>, line: &str) -> String {
    r.get_mut().write_all(line.as_bytes()).await.unwrap();
    reply(r).await
}

#[tokio::test]
async fn smtp_sink_speaks_rfc_5321() {
    let sink = SmtpSink::start().await.unwrap();
    let mut r = BufReader::new(TcpStream::connect(sink.addr()).await.unwrap());
    assert!(reply(&mut r).await.starts_with("220 "));
    assert!(say(&mut r, "MAIL FROM:<a@x>\r\n").await.starts_with("503"));
    let ehlo = say(&mut r, "EHLO client.test\r\n").await;
    assert!(ehlo.starts_with("250-") && !ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"));
    assert!(say(&mut r, "RCPT TO:<b@x>\r\n").await.starts_with("503"));
    assert!(say(&mut r, "mail from:<dropped@x>\r\n")
        .await
        .starts_with("250"));
    assert!(say(&mut r, "RSET\r\n").await.starts_with("250"));
    assert!(say(&mut r, "MAIL FROM:<a@x> BODY=8BITMIME\r\n")
        .await
        .starts_with("250"));
    assert!(say(&mut r, "DATA\r\n").await.starts_with("503"));
    assert!(say(&mut r, "RCPT TO:<b@x>\r\n").await.starts_with("250"));
    assert!(say(&mut r, "RCPT TO:<c@x>\r\n").await.starts_with("250"));
    assert!(say(&mut r, "NOOP\r\n").await.starts_with("250"));
    assert!(say(&mut r, "DATA\r\n").await.starts_with("354"));
    let data = "Subject: [CRITICAL] fire at hall (nvr-1)\r\n\
                X-Gatehouse-Idempotency-Key: 01HF7YAT000000000000000001\r\n\
                \r\n\
                line one\r\n\
                ..a line that began with a dot\r\n\
                .\r\n";
    assert!(say(&mut r, data).await.starts_with("250"));
    assert!(say(&mut r, "VRFY b\r\n").await.starts_with("502"));
    assert!(say(&mut r, "QUIT\r\n").await.starts_with("221"));

    let msgs = sink.wait_for(1, Duration::from_secs(2)).await.unwrap();
    let m = &msgs[0];
    assert_eq!(m.from, "a@x");
    assert_eq!(m.to, ["b@x", "c@x"]);
    assert_eq!(
        m.subject.as_deref(),
        Some("[CRITICAL] fire at hall (nvr-1)")
    );
    assert_eq!(
        m.idempotency_key.as_deref(),
        Some("01HF7YAT000000000000000001")
    );
    assert_eq!(m.body(), b"line one\r\n.a line that began with a dot\r\n");
    let e = sink
        .wait_for(2, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!((e.wanted, e.got), (2, 1));
}

/// A hand-written event-stream server: the first connection gets events 1..=3 and is
/// closed; a later one gets the events after its `Last-Event-ID` and is held open.
async fn event_stream_server(seen_last_ids: Arc<Mutex<Vec<Option<String>>>>) -> String {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let seen = Arc::clone(&seen_last_ids);
            tokio::spawn(async move {
                let mut r = BufReader::new(stream);
                let mut last_id = None;
                loop {
                    let mut line = String::new();
                    r.read_line(&mut line).await.unwrap();
                    if line == "\r\n" || line.is_empty() {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("last-event-id:") {
                        last_id = Some(v.trim().to_string());
                    }
                }
                seen.lock().unwrap().push(last_id.clone());
                let first = last_id.map_or(1, |id| id.parse::<u32>().unwrap() + 1);
                let last = if first == 1 { 3 } else { 5 };
                let mut out = String::from(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n\
                     : keep-alive\n\nretry: 1500\n\n",
                );
                for i in first..=last {
                    out.push_str(&format!("id: {i}\nevent: firing\ndata: {{\"n\":{i}}}\n\n"));
                }
                let s = r.get_mut();
                // Dribble it out in small pieces, so events straddle reads.
                for piece in out.as_bytes().chunks(7) {
                    s.write_all(piece).await.unwrap();
                    s.flush().await.unwrap();
                }
                if first == 1 {
                    return; // closes the connection
                }
                let mut sink = [0u8; 64];
                let _ = s.read(&mut sink).await; // held until the client goes
            });
        }
    });
    format!("http://{addr}/api/v1/events/stream")
}

fn firing(i: u32) -> SseMessage {
    SseMessage {
        id: Some(i.to_string()),
        event: "firing".into(),
        data: format!("{{\"n\":{i}}}"),
    }
}

#[tokio::test]
async fn sse_client_reads_events_and_resumes_with_last_event_id() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let url = event_stream_server(Arc::clone(&seen)).await;
    let mut c = SseClient::connect(&url, &[("Cookie", "session=abc")])
        .await
        .unwrap();
    let got = c.take(3, Duration::from_secs(2)).await.unwrap();
    assert_eq!(got, [firing(1), firing(2), firing(3)]);
    assert_eq!(c.next(Duration::from_secs(2)).await, Err(SseError::Closed));
    assert_eq!(c.last_event_id(), Some("3"));
    assert_eq!(c.retry(), Some(Duration::from_millis(1500)));
    assert_eq!(c.comments(), 1);

    c.reconnect().await.unwrap();
    assert_eq!(c.next(Duration::from_secs(2)).await.unwrap(), firing(4));
    assert_eq!(c.next(Duration::from_secs(2)).await.unwrap(), firing(5));
    assert_eq!(
        c.next(Duration::from_millis(100)).await,
        Err(SseError::Timeout(Duration::from_millis(100)))
    );
    assert_eq!(*seen.lock().unwrap(), [None, Some("3".to_string())]);

    // Resuming from a given id on a fresh client.
    let mut c = SseClient::connect(&url, &[("Last-Event-ID", "4")])
        .await
        .unwrap();
    assert_eq!(c.next(Duration::from_secs(2)).await.unwrap(), firing(5));
}

#[tokio::test]
async fn sse_client_refuses_what_is_not_an_event_stream() {
    let rx = WebhookReceiver::start(Faults::default()).await.unwrap();
    let e = SseClient::connect(&rx.url(), &[]).await.err().unwrap();
    assert!(
        matches!(e, SseError::NotEventStream(ref t) if t.starts_with("text/plain")),
        "{e:?}"
    );
    rx.set_faults(Faults {
        fail_ratio: 1.0,
        ..Faults::default()
    });
    let e = SseClient::connect(&rx.url(), &[]).await.err().unwrap();
    assert_eq!(
        e,
        SseError::Status {
            status: 500,
            body: "injected failure".into()
        }
    );
    let port = free_port().unwrap();
    let e = SseClient::connect(&format!("http://127.0.0.1:{port}/"), &[])
        .await
        .err()
        .unwrap();
    assert!(matches!(e, SseError::Connect(_)), "{e:?}");
}
