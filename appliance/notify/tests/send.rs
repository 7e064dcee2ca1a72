//! The sender against the test peers on 127.0.0.1: webhooks (both formats) and ntfy
//! against the fault-injecting webhook receiver, e-mail against the SMTP sink. No traffic
//! leaves loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_alerts::{
    Event, EventId, Lifecycle, NewEvent, Notification, NotificationKind, ReceiverConfig, Severity,
    SmtpSecurity, SourceKind, WebhookFormat,
};
use gatehouse_notify::{SendError, Sender, SenderConfig};
use gatehouse_testpeers::{free_port, Faults, SmtpSink, WebhookReceiver};
use std::time::Duration;
use time::OffsetDateTime;

fn notification(kind: NotificationKind, random: u128) -> Notification {
    let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
    Notification {
        delivery: 1,
        kind,
        event: Event {
            id: EventId::new(t, random),
            seq: 1,
            new: NewEvent {
                source: "nvr-yard".into(),
                source_kind: SourceKind::Nvr,
                kind: "intrusion".into(),
                severity: Severity::Critical,
                time: t,
                camera: Some("front".into()),
                zone: Some("driveway".into()),
                device: None,
                message: Some("Person in driveway".into()),
                snapshot_url: Some("http://nvr.local/snap.jpg".into()),
                clip_url: None,
                external_id: None,
                lifecycle: Lifecycle::Instant,
            },
            received_at: t,
            ended_at: None,
            grouped_into: None,
            ack: None,
        },
    }
}

fn sender(request_timeout: Duration) -> Sender {
    Sender::new(SenderConfig {
        request_timeout,
        connect_timeout: Duration::from_secs(2),
        ..SenderConfig::default()
    })
    .unwrap()
}

fn webhook(url: String, format: WebhookFormat) -> ReceiverConfig {
    ReceiverConfig::Webhook { url, format }
}

#[tokio::test]
async fn webhook_delivers_slack_and_json_bodies_with_the_key() {
    let rx = WebhookReceiver::start(Faults::default()).await.unwrap();
    let s = sender(Duration::from_secs(5));
    let n = notification(NotificationKind::Firing, 1);
    let key = n.event.id.to_string();

    let sent = s
        .send(&webhook(rx.url(), WebhookFormat::Slack), &n)
        .await
        .unwrap();
    assert_eq!(sent.status, Some(200));
    let n2 = notification(NotificationKind::Repeat(1), 1);
    s.send(&webhook(rx.url(), WebhookFormat::Json), &n2)
        .await
        .unwrap();

    let reqs = rx.requests();
    assert_eq!(reqs.len(), 2);
    let slack = &reqs[0];
    assert_eq!(slack.method, "POST");
    assert_eq!(slack.uri, "/hook");
    assert_eq!(slack.header("content-type"), Some("application/json"));
    assert_eq!(slack.header("idempotency-key"), Some(key.as_str()));
    assert_eq!(
        slack.header("user-agent"),
        Some(format!("gatehouse/{}", env!("CARGO_PKG_VERSION")).as_str())
    );
    let body = slack.json.as_ref().unwrap();
    assert_eq!(body["event_id"], key.as_str());
    assert_eq!(body["idempotency_key"], key.as_str());
    assert!(body["blocks"].is_array());

    let json = reqs[1].json.as_ref().unwrap();
    assert_eq!(json["notification"], "repeat");
    assert_eq!(json["idempotency_key"], format!("{key}:repeat:1"));
    assert_eq!(rx.accepted_keys(), [key.clone(), format!("{key}:repeat:1")]);
}

#[tokio::test]
async fn a_failing_receiver_is_a_status_error_with_the_body() {
    let rx = WebhookReceiver::start(Faults {
        fail_ratio: 1.0,
        ..Faults::default()
    })
    .await
    .unwrap();
    let s = sender(Duration::from_secs(5));
    let n = notification(NotificationKind::Firing, 2);
    let e = s
        .send(&webhook(rx.url(), WebhookFormat::Json), &n)
        .await
        .unwrap_err();
    assert_eq!(e.http_status(), Some(500));
    match &e {
        SendError::Status { status, body, .. } => {
            assert_eq!(*status, 500);
            assert_eq!(body, "injected failure");
        }
        other => panic!("{other:?}"),
    }
    let text = e.to_string();
    assert!(text.contains("HTTP 500"), "{text}");
    assert!(!text.contains("/hook"), "the URL's path stays out: {text}");
    assert!(rx.accepted_keys().is_empty());
    assert_eq!(rx.counts().failed, 1);
}

#[tokio::test]
async fn a_stalling_receiver_times_out_and_a_retry_is_a_duplicate() {
    let rx = WebhookReceiver::start(Faults {
        stall_ratio: 1.0,
        stall: Duration::from_millis(600),
        ..Faults::default()
    })
    .await
    .unwrap();
    let s = sender(Duration::from_millis(200));
    let n = notification(NotificationKind::Firing, 3);
    let e = s
        .send(&webhook(rx.url(), WebhookFormat::Json), &n)
        .await
        .unwrap_err();
    assert!(matches!(e, SendError::Timeout { .. }), "{e:?}");
    assert!(e.to_string().contains("did not answer within 200ms"), "{e}");

    // The stalled request is still handled after the stall, though its answer was lost:
    // the receiver accepted the key the sender thinks failed.
    let keys = rx
        .wait_for_accepted(1, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(keys, [n.event.id.to_string()]);

    // The retry arrives with the same key: answered 200, counted as a duplicate.
    rx.set_faults(Faults::default());
    let sent = s
        .send(&webhook(rx.url(), WebhookFormat::Json), &n)
        .await
        .unwrap();
    assert_eq!(sent.status, Some(200));
    let c = rx.counts();
    assert_eq!(
        (c.requests, c.accepted, c.duplicates, c.stalled),
        (2, 1, 1, 1)
    );
    assert_eq!(rx.duplicates_seen(), 1);
    assert_eq!(rx.duplicate_keys(), [n.event.id.to_string()]);
    assert_eq!(rx.accepted_keys().len(), 1);
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error() {
    let port = free_port().unwrap();
    let s = sender(Duration::from_secs(2));
    let n = notification(NotificationKind::Firing, 4);
    let url = format!("http://127.0.0.1:{port}/services/T0/B0/secret-token");
    let e = s
        .send(&webhook(url, WebhookFormat::Slack), &n)
        .await
        .unwrap_err();
    assert!(matches!(e, SendError::Connect { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(!text.contains("secret-token"), "{text}");
}

#[tokio::test]
async fn ntfy_push_carries_title_priority_tags_click_token_and_key() {
    let rx = WebhookReceiver::start(Faults::default()).await.unwrap();
    let s = sender(Duration::from_secs(5));
    let n = notification(NotificationKind::Firing, 5);
    let receiver = ReceiverConfig::Ntfy {
        url: format!("http://{}/gatehouse-alerts", rx.addr()),
        token: Some("tk_secret".into()),
    };
    s.send(&receiver, &n).await.unwrap();
    let r = &rx.requests()[0];
    assert_eq!(r.uri, "/gatehouse-alerts");
    assert_eq!(
        r.header("title"),
        Some("[CRITICAL] intrusion at driveway (nvr-yard)")
    );
    assert_eq!(r.header("priority"), Some("5"));
    assert_eq!(r.header("tags"), Some("rotating_light,intrusion,nvr-yard"));
    assert_eq!(r.header("click"), Some("http://nvr.local/snap.jpg"));
    assert_eq!(r.header("authorization"), Some("Bearer tk_secret"));
    let key = n.event.id.to_string();
    assert_eq!(r.header("x-idempotency-key"), Some(key.as_str()));
    let body = String::from_utf8(r.body.clone()).unwrap();
    assert!(body.starts_with("Person in driveway\n"), "{body}");
    assert!(
        body.ends_with(&format!("event {key} · key {key}")),
        "{body}"
    );
    assert_eq!(rx.accepted_keys(), [key]);
}

#[tokio::test]
async fn ntfy_errors_do_not_show_the_token() {
    let rx = WebhookReceiver::start(Faults {
        fail_ratio: 1.0,
        ..Faults::default()
    })
    .await
    .unwrap();
    let s = sender(Duration::from_secs(5));
    let receiver = ReceiverConfig::Ntfy {
        url: format!("http://{}/topic-secret", rx.addr()),
        token: Some("tk_secret".into()),
    };
    let e = s
        .send(&receiver, &notification(NotificationKind::Firing, 6))
        .await
        .unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(
        !text.contains("tk_secret") && !text.contains("topic-secret"),
        "{text}"
    );
}

fn email(port: u16, security: SmtpSecurity) -> ReceiverConfig {
    ReceiverConfig::Email {
        host: "127.0.0.1".into(),
        port,
        security,
        username: None,
        password: None,
        from: "Gatehouse <gatehouse@site.test>".into(),
        to: vec!["guard@site.test".into(), "boss@site.test".into()],
    }
}

#[tokio::test]
async fn email_reaches_the_sink() {
    let sink = SmtpSink::start().await.unwrap();
    let s = sender(Duration::from_secs(5));
    let n = notification(NotificationKind::Repeat(2), 7);
    let sent = s
        .send(&email(sink.port(), SmtpSecurity::None), &n)
        .await
        .unwrap();
    assert_eq!(sent.status, None);

    let msgs = sink.wait_for(1, Duration::from_secs(5)).await.unwrap();
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    let key = format!("{}:repeat:2", n.event.id);
    assert_eq!(m.from, "gatehouse@site.test");
    assert_eq!(m.to, ["guard@site.test", "boss@site.test"]);
    assert_eq!(
        m.subject.as_deref(),
        Some("[REMINDER 2] intrusion at driveway (nvr-yard)")
    );
    assert_eq!(m.idempotency_key.as_deref(), Some(key.as_str()));
    assert_eq!(
        m.header("message-id"),
        Some(format!("<{}.repeat.2@gatehouse>", n.event.id).as_str())
    );
    let body = String::from_utf8_lossy(m.body());
    assert!(body.contains("Reminder 2: not acknowledged yet."), "{body}");
    assert!(body.contains(&format!("Idempotency key: {key}")), "{body}");
}

#[tokio::test]
async fn starttls_is_required_when_configured() {
    // The sink offers no STARTTLS: a receiver that asks for it must not fall back to
    // plain text.
    let sink = SmtpSink::start().await.unwrap();
    let s = sender(Duration::from_secs(5));
    let e = s
        .send(
            &email(sink.port(), SmtpSecurity::Starttls),
            &notification(NotificationKind::Firing, 8),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, SendError::Smtp { .. } | SendError::Connect { .. }),
        "{e:?}"
    );
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn smtp_auth_failure_names_no_password() {
    let sink = SmtpSink::start().await.unwrap();
    let s = sender(Duration::from_secs(5));
    let mut receiver = email(sink.port(), SmtpSecurity::None);
    if let ReceiverConfig::Email {
        username, password, ..
    } = &mut receiver
    {
        *username = Some("gate".into());
        *password = Some("hunter2-very-secret".into());
    }
    let e = s
        .send(&receiver, &notification(NotificationKind::Firing, 9))
        .await
        .unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn console_and_bad_configs_are_refused_without_sending() {
    let s = sender(Duration::from_secs(1));
    let n = notification(NotificationKind::Firing, 10);
    assert_eq!(
        s.send(&ReceiverConfig::Console, &n).await.unwrap_err(),
        SendError::Console
    );
    let e = s
        .send(
            &webhook("file:///etc/passwd".into(), WebhookFormat::Json),
            &n,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, SendError::Config(_)), "{e:?}");
    let mut r = email(25, SmtpSecurity::None);
    if let ReceiverConfig::Email { to, .. } = &mut r {
        to.clear();
    }
    assert!(matches!(
        s.send(&r, &n).await.unwrap_err(),
        SendError::Config(_)
    ));
}
