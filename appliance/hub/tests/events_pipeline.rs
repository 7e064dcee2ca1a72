//! The events pipeline end to end: a real hub (bound on port 0, its own temporary data
//! directory, MQTT off) takes events on its webhook and delivers them to real peers on
//! loopback: webhook receivers (Slack and plain JSON, with injected failures), an SMTP
//! sink, and the console's live feed (Server-Sent Events, with resume). Sources,
//! receivers, rules and silences are made with the store on the same data directory, as
//! the CLI makes them. Every wait polls until what it waits for is true, with a generous
//! timeout; nothing sleeps to assert.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_alerts::model::{
    DeliveryStatus, EventId, Lifecycle, Matcher, NotificationKind, ReceiverConfig, ReceiverId,
    Severity, SmtpSecurity, SourceKind, WebhookFormat,
};
use gatehouse_store::events::{EventFilter, NewRule, NewSilence};
use gatehouse_testpeers::{Faults, RecordedRequest, SmtpSink, SseClient, WebhookReceiver};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod support;

use support::{Reply, Setup, Site, ALICE, ALICE_PW};

/// The longest any wait here waits.
const WAIT: Duration = Duration::from_secs(30);

/// A site's data directory before its hub starts: an admin, and whatever the test adds.
fn fresh_setup() -> Setup {
    Setup::new().with_admins(&[ALICE]).with_config(|c| {
        c.hub.alerts.request_timeout_ms = 5_000;
        // The hub's own "disk nearly full" alarm would reach the console feed on a full
        // build machine; 100% is never exceeded.
        c.hub.alerts.disk_full_percent = 100;
    })
}

impl Setup {
    /// A source of kind nvr; returns its id and key.
    fn source(&self, name: &str) -> (i64, String) {
        let (s, key) = self
            .store()
            .add_event_source(name, SourceKind::Nvr, None, None, OffsetDateTime::now_utc())
            .unwrap();
        (s.id, key.expose().to_owned())
    }

    fn webhook(&self, name: &str, url: String, format: WebhookFormat) -> ReceiverId {
        self.store()
            .add_receiver(name, &ReceiverConfig::Webhook { url, format })
            .unwrap()
    }

    fn console(&self) -> ReceiverId {
        self.store().console_receiver_id().unwrap().unwrap()
    }

    fn rule(
        &self,
        name: &str,
        matcher: Matcher,
        receivers: Vec<ReceiverId>,
        group_window_s: u64,
        repeat_every_s: Option<u64>,
    ) {
        self.store()
            .add_rule(&NewRule {
                name: name.into(),
                matcher,
                active: None,
                receivers,
                group_window: Duration::from_secs(group_window_s),
                repeat_every: repeat_every_s.map(Duration::from_secs),
            })
            .unwrap();
    }
}

/// The source the tests send from. Rules match only it: the hub raises events of its
/// own (`system.started`, ...), which must not reach the tests' receivers.
const NVR: &str = "nvr-yard";

fn from_nvr() -> Matcher {
    Matcher {
        sources: vec![NVR.into()],
        ..Matcher::default()
    }
}

fn kinds(k: &[&str]) -> Matcher {
    Matcher {
        kinds: k.iter().map(|s| s.to_string()).collect(),
        ..from_nvr()
    }
}

fn at_least(severity: Severity) -> Matcher {
    Matcher {
        min_severity: severity,
        ..from_nvr()
    }
}

impl Reply {
    fn id(&self) -> EventId {
        self.json["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no id in {self:?}"))
            .parse()
            .unwrap()
    }
}

impl Site {
    async fn post_raw(&self, headers: &[(&str, &str)], body: impl Into<reqwest::Body>) -> Reply {
        let mut req = self
            .client
            .post(self.url("/api/v1/events"))
            .header("Content-Type", "application/json")
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
        Reply {
            status,
            headers,
            text,
            json,
        }
    }

    async fn post(&self, key: &str, body: Value) -> Reply {
        self.post_raw(
            &[("Authorization", &format!("Bearer {key}"))],
            body.to_string(),
        )
        .await
    }

    /// Posts and expects a new event; returns its id.
    async fn new_event(&self, key: &str, body: Value) -> EventId {
        let r = self.post(key, body).await;
        assert_eq!(r.status, 201, "{r:?}");
        assert!(r.json["seq"].as_i64().is_some(), "{r:?}");
        r.id()
    }

    async fn feed(&self, token: &str, extra: &[(&str, &str)], query: &str) -> SseClient {
        let auth = format!("Bearer {token}");
        let mut headers = vec![("Authorization", auth.as_str())];
        headers.extend_from_slice(extra);
        SseClient::connect(
            &self.url(&format!("/api/v1/events/stream{query}")),
            &headers,
        )
        .await
        .unwrap()
    }

    async fn metrics(&self) -> String {
        let r = self.client.get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        r.text().await.unwrap()
    }

    /// Waits until every `(series, value)` is exported (counters are bumped just after
    /// the commits the store shows); returns the last scrape.
    async fn wait_metrics(&self, want: &[(&str, f64)]) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let m = self.metrics().await;
            let missing: Vec<_> = want
                .iter()
                .filter(|(series, value)| sample(&m, series) != Some(*value))
                .collect();
            if missing.is_empty() {
                return m;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {missing:?} in\n{m}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the outbox has nothing pending.
    async fn drained(&self) {
        let store = self.store();
        wait_until("the outbox to drain", || {
            store.reconcile().unwrap().pending == 0
        })
        .await;
    }
}

/// Polls `cond` until it holds; panics naming `what` after [`WAIT`].
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of the sample line `series` (name and labels, exactly as exported).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

/// The request `hook` answered 2xx with idempotency key `key` (the receiver counts a key
/// accepted a moment before it records the request: poll).
async fn accepted_request(hook: &WebhookReceiver, key: &str) -> RecordedRequest {
    let find = || {
        hook.requests()
            .into_iter()
            .find(|r| r.status == 200 && r.idempotency_key.as_deref() == Some(key))
    };
    wait_until("the accepted request", || find().is_some()).await;
    find().unwrap()
}

fn json_body(r: &RecordedRequest) -> &Value {
    r.json.as_ref().unwrap_or_else(|| panic!("not JSON: {r:?}"))
}

fn intrusion(id: &str) -> Value {
    json!({
        "kind": "intrusion", "severity": "critical", "camera": "yard-east",
        "zone": "fence", "message": "fence cut", "id": id,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhook_events_reach_webhooks_email_and_the_live_feed() {
    let slack = WebhookReceiver::start(Faults::default()).await.unwrap();
    let plain = WebhookReceiver::start(Faults::default()).await.unwrap();
    let smtp = SmtpSink::start().await.unwrap();
    let setup = fresh_setup();
    let (_, key) = setup.source(NVR);
    let slack_id = setup.webhook("slack", slack.url(), WebhookFormat::Slack);
    let plain_id = setup.webhook("plain", plain.url(), WebhookFormat::Json);
    let mail = setup
        .store()
        .add_receiver(
            "mail",
            &ReceiverConfig::Email {
                host: "127.0.0.1".into(),
                port: smtp.port(),
                security: SmtpSecurity::None,
                username: None,
                password: None,
                from: "Gatehouse <gatehouse@site.test>".into(),
                to: vec!["guard@site.test".into()],
            },
        )
        .unwrap();
    let console = setup.console();
    setup.rule(
        "everything critical",
        at_least(Severity::Critical),
        vec![slack_id, plain_id, mail, console],
        0,
        None,
    );
    let mut site = setup.start().await;
    let token = site.login("alice", ALICE_PW).await.token;
    let mut feed = site.feed(&token, &[], "").await;

    // A new event: 201, then one notification at each receiver, keyed by the event id.
    let id = site.new_event(&key, intrusion("alarm-1")).await;
    let keys = slack.wait_for_accepted(1, WAIT).await.unwrap();
    assert_eq!(keys, vec![id.to_string()]);
    let req = accepted_request(&slack, &id.to_string()).await;
    assert_eq!(req.header("idempotency-key"), Some(id.to_string().as_str()));
    let body = json_body(&req);
    assert!(
        body["text"].as_str().unwrap().contains("intrusion"),
        "{body}"
    );
    assert!(body["blocks"].is_array(), "{body}");
    assert_eq!(body["event_id"], id.to_string());

    plain.wait_for_accepted(1, WAIT).await.unwrap();
    let req = accepted_request(&plain, &id.to_string()).await;
    assert_eq!(req.header("idempotency-key"), Some(id.to_string().as_str()));
    let body = json_body(&req);
    assert_eq!(body["notification"], "firing");
    assert_eq!(body["idempotency_key"], id.to_string());
    assert_eq!(body["event"]["zone"], "fence");
    assert_eq!(body["event"]["source"], "nvr-yard");

    let mails = smtp.wait_for(1, WAIT).await.unwrap();
    assert_eq!(
        mails[0].idempotency_key.as_deref(),
        Some(id.to_string().as_str())
    );
    assert!(
        mails[0].subject.as_deref().unwrap().contains("intrusion"),
        "{:?}",
        mails[0].subject
    );
    assert_eq!(mails[0].to, vec!["guard@site.test".to_string()]);

    let m = feed.next(WAIT).await.unwrap();
    assert_eq!(m.event, "firing");
    let first_feed_id: i64 = m.id.as_deref().unwrap().parse().unwrap();
    let data: Value = serde_json::from_str(&m.data).unwrap();
    assert_eq!(data["event_id"], id.to_string());
    assert_eq!(feed.retry(), Some(Duration::from_millis(2000)));

    // A retransmission is the same event and enqueues nothing.
    let again = site.post(&key, intrusion("alarm-1")).await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.json["duplicate"], true);
    assert_eq!(again.id(), id);
    assert_eq!(site.store().event_detail(id).unwrap().deliveries.len(), 4);

    // Active, then ended: one firing, then one resolved notice everywhere.
    let mut active = intrusion("alarm-2");
    active["state"] = json!("active");
    let id2 = site.new_event(&key, active.clone()).await;
    active["state"] = json!("ended");
    let ended = site.post(&key, active).await;
    assert_eq!(ended.status, 200, "{ended:?}");
    assert_eq!(ended.json["updated"], true);
    assert_eq!(ended.id(), id2);
    let keys = plain.wait_for_accepted(3, WAIT).await.unwrap();
    assert_eq!(
        keys[1..].iter().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from([id2.to_string(), format!("{id2}:resolved")])
    );
    let resolved = accepted_request(&plain, &format!("{id2}:resolved")).await;
    assert_eq!(json_body(&resolved)["notification"], "resolved");
    slack.wait_for_accepted(3, WAIT).await.unwrap();
    smtp.wait_for(3, WAIT).await.unwrap();
    let live = feed.take(2, WAIT).await.unwrap();
    assert_eq!(
        live.iter().map(|m| m.event.as_str()).collect::<Vec<_>>(),
        ["firing", "resolved"]
    );
    let ids: Vec<i64> = live
        .iter()
        .map(|m| m.id.as_deref().unwrap().parse().unwrap())
        .collect();
    assert!(first_feed_id < ids[0] && ids[0] < ids[1], "{ids:?}");

    // The store agrees, every key arrived once, and /metrics counts it all.
    site.drained().await;
    let r = site.store().reconcile().unwrap();
    assert!(r.is_consistent(), "{r}");
    for hook in [&slack, &plain] {
        assert_eq!(hook.duplicates_seen(), 0);
        assert_eq!(hook.accepted_keys().len(), 3);
    }
    site.wait_metrics(&[
        (
            r#"gatehouse_events_in_total{ingress="webhook",source_kind="nvr",outcome="new"}"#,
            2.0,
        ),
        (
            r#"gatehouse_events_in_total{ingress="webhook",source_kind="nvr",outcome="duplicate"}"#,
            1.0,
        ),
        (
            r#"gatehouse_events_in_total{ingress="webhook",source_kind="nvr",outcome="updated"}"#,
            1.0,
        ),
        (
            r#"gatehouse_deliveries_total{receiver="plain",status="delivered"}"#,
            3.0,
        ),
        (
            r#"gatehouse_deliveries_total{receiver="mail",status="delivered"}"#,
            3.0,
        ),
        (r#"gatehouse_delivery_queue_depth{receiver="slack"}"#, 0.0),
        (
            r#"gatehouse_delivery_attempts_total{receiver="slack",outcome="delivered"}"#,
            3.0,
        ),
        (
            r#"gatehouse_delivery_latency_seconds_count{receiver="mail"}"#,
            3.0,
        ),
    ])
    .await;
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_live_feed_resumes_with_exactly_what_was_missed() {
    let setup = fresh_setup();
    let (_, key) = setup.source(NVR);
    let mut site = setup.start().await;
    let token = site.login("alice", ALICE_PW).await.token;
    let warning =
        |n: usize| json!({"kind": "motion", "severity": "warning", "id": format!("m-{n}")});

    // A feed without a resume point starts with what comes next.
    site.new_event(&key, warning(0)).await;
    let mut feed = site.feed(&token, &[], "").await;
    let mut sent = Vec::new();
    for n in 1..=3 {
        sent.push(site.new_event(&key, warning(n)).await);
    }
    let got = feed.take(3, WAIT).await.unwrap();
    let event_ids = |ms: &[gatehouse_testpeers::SseMessage]| -> Vec<String> {
        ms.iter()
            .map(|m| {
                serde_json::from_str::<Value>(&m.data).unwrap()["event_id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(
        event_ids(&got),
        sent.iter().map(|i| i.to_string()).collect::<Vec<_>>()
    );
    let last = feed.last_event_id().unwrap().to_owned();
    drop(feed);

    // Missed while disconnected, then resumed with Last-Event-ID: exactly those, then
    // what comes after.
    let mut missed = Vec::new();
    for n in 4..=7 {
        missed.push(site.new_event(&key, warning(n)).await);
    }
    let mut feed = site.feed(&token, &[("Last-Event-ID", &last)], "").await;
    let marker = site.new_event(&key, warning(8)).await;
    let got = feed.take(5, WAIT).await.unwrap();
    let mut want: Vec<String> = missed.iter().map(|i| i.to_string()).collect();
    want.push(marker.to_string());
    assert_eq!(event_ids(&got), want);
    let ids: Vec<i64> = got
        .iter()
        .map(|m| m.id.as_deref().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert!(ids[0] > last.parse::<i64>().unwrap());

    // `?after=` resumes the same way.
    let mut feed = site.feed(&token, &[], &format!("?after={}", ids[2])).await;
    let got = feed.take(2, WAIT).await.unwrap();
    assert_eq!(event_ids(&got), want[3..].to_vec());

    // Without a session: 401, and a bad resume point: 400.
    let r = site
        .client
        .get(site.url("/api/v1/events/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = site
        .client
        .get(site.url("/api/v1/events/stream"))
        .bearer_auth(&token)
        .header("Last-Event-ID", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("Last-Event-ID"));

    // The hub stops although a feed is open.
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_deliveries_are_retried_until_each_key_is_delivered_once() {
    let hook = WebhookReceiver::start(Faults {
        fail_ratio: 0.5,
        seed: 42,
        ..Faults::default()
    })
    .await
    .unwrap();
    let mut setup = fresh_setup();
    setup.config.hub.alerts.retry_base_ms = 10;
    setup.config.hub.alerts.retry_max_ms = 100;
    setup.config.hub.alerts.max_attempts = 100;
    let (_, key) = setup.source(NVR);
    let hook_id = setup.webhook("flaky", hook.url(), WebhookFormat::Json);
    setup.rule("all", from_nvr(), vec![hook_id], 0, None);
    let mut site = setup.start().await;

    let mut ids = BTreeSet::new();
    for n in 0..60 {
        let body = json!({"kind": "intrusion", "severity": "info", "id": format!("e-{n}")});
        ids.insert(site.new_event(&key, body).await.to_string());
    }
    hook.wait_for_accepted(ids.len(), WAIT).await.unwrap();
    site.drained().await;
    assert_eq!(
        hook.accepted_keys().into_iter().collect::<BTreeSet<_>>(),
        ids
    );
    assert_eq!(hook.duplicates_seen(), 0);
    let counts = hook.counts();
    assert!(counts.failed > 0, "{counts:?}");
    let store = site.store();
    let r = store.reconcile().unwrap();
    assert!(r.is_consistent(), "{r}");
    assert_eq!((r.delivered, r.dead), (60, 0));
    // Every request the receiver answered is one attempt in the log.
    assert_eq!(r.log_rows, counts.requests);
    site.wait_metrics(&[
        (
            r#"gatehouse_delivery_attempts_total{receiver="flaky",outcome="failed"}"#,
            counts.failed as f64,
        ),
        (
            r#"gatehouse_delivery_attempts_total{receiver="flaky",outcome="delivered"}"#,
            60.0,
        ),
        (
            r#"gatehouse_deliveries_total{receiver="flaky",status="delivered"}"#,
            60.0,
        ),
    ])
    .await;
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_that_always_fails_goes_dead_and_raises_an_event() {
    let hook = WebhookReceiver::start(Faults {
        fail_ratio: 1.0,
        ..Faults::default()
    })
    .await
    .unwrap();
    let mut setup = fresh_setup();
    setup.config.hub.alerts.retry_base_ms = 5;
    setup.config.hub.alerts.retry_max_ms = 20;
    setup.config.hub.alerts.max_attempts = 3;
    let (_, key) = setup.source(NVR);
    let hook_id = setup.webhook("broken", hook.url(), WebhookFormat::Json);
    let console = setup.console();
    setup.rule(
        "critical",
        at_least(Severity::Critical),
        vec![hook_id, console],
        0,
        None,
    );
    let mut site = setup.start().await;
    let id = site.new_event(&key, intrusion("a-1")).await;

    let store = site.store();
    let dead_kind = || {
        store
            .list_events(&EventFilter {
                kind: Some("alert.delivery_dead".into()),
                ..EventFilter::default()
            })
            .unwrap()
    };
    wait_until("the delivery_dead event", || !dead_kind().is_empty()).await;
    let dead = dead_kind();
    assert_eq!(dead.len(), 1);
    let dead = &dead[0];
    assert_eq!(dead.new.source_kind, SourceKind::System);
    assert_eq!(dead.new.severity, Severity::Critical);
    assert_eq!(
        dead.new.device.as_deref(),
        Some(format!("receiver:{hook_id}").as_str())
    );
    let message = dead.new.message.as_deref().unwrap();
    assert!(message.contains(&id.to_string()), "{message}");
    assert!(message.contains("broken"), "{message}");
    assert!(message.contains("500"), "{message}");

    let detail = store.event_detail(id).unwrap();
    let to_hook = detail
        .deliveries
        .iter()
        .find(|d| d.receiver == hook_id)
        .unwrap();
    assert_eq!(to_hook.status, DeliveryStatus::Dead);
    assert_eq!(to_hook.attempts, 3);
    assert_eq!(hook.counts().requests, 3);
    // The dead letter's own event goes to the console, never to the receiver that failed.
    let dead_detail = store.event_detail(dead.id).unwrap();
    assert!(!dead_detail.deliveries.is_empty());
    assert!(dead_detail.deliveries.iter().all(|d| d.receiver != hook_id));
    let r = store.reconcile().unwrap();
    assert!(r.is_consistent(), "{r}");
    assert_eq!(r.dead, 1);
    site.wait_metrics(&[
        (
            r#"gatehouse_delivery_attempts_total{receiver="broken",outcome="dead"}"#,
            1.0,
        ),
        (
            r#"gatehouse_delivery_attempts_total{receiver="broken",outcome="failed"}"#,
            2.0,
        ),
    ])
    .await;
    // The dead letter's event is counted as it comes in (with the hub's own others).
    let system_events = || {
        store
            .list_events(&EventFilter {
                source: Some("system".into()),
                ..EventFilter::default()
            })
            .unwrap()
            .len() as f64
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let m = site.metrics().await;
        let counted = sample(
            &m,
            r#"gatehouse_events_in_total{ingress="system",source_kind="system",outcome="new"}"#,
        );
        if counted.is_some() && counted == Some(system_events()) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn critical_events_repeat_until_acknowledged() {
    let hook = WebhookReceiver::start(Faults::default()).await.unwrap();
    let setup = fresh_setup();
    let (_, key) = setup.source(NVR);
    let hook_id = setup.webhook("pager", hook.url(), WebhookFormat::Json);
    setup.rule(
        "critical until acked",
        at_least(Severity::Critical),
        vec![hook_id],
        0,
        Some(1),
    );
    let mut site = setup.start().await;
    let a = site.new_event(&key, intrusion("a")).await;
    let keys_of = |id: EventId| -> BTreeSet<String> {
        hook.accepted_keys()
            .into_iter()
            .filter(|k| k.starts_with(&id.to_string()))
            .collect()
    };
    hook.wait_for_accepted(3, WAIT).await.unwrap();
    assert_eq!(
        keys_of(a),
        BTreeSet::from([
            a.to_string(),
            format!("{a}:repeat:1"),
            format!("{a}:repeat:2")
        ])
    );
    let reminder = accepted_request(&hook, &format!("{a}:repeat:1")).await;
    assert_eq!(json_body(&reminder)["notification"], "repeat");

    // Acknowledged: the reminders enqueued by then are the last.
    let store = site.store();
    store
        .ack_event(a, "alice", Some("on it"), OffsetDateTime::now_utc())
        .unwrap();
    let repeats_of = |id: EventId| -> BTreeSet<String> {
        store
            .event_detail(id)
            .unwrap()
            .deliveries
            .into_iter()
            .filter(|d| matches!(d.kind, NotificationKind::Repeat(_)))
            .map(|d| d.kind.idempotency_key(id))
            .collect()
    };
    let at_ack = repeats_of(a);
    // Another critical event's second reminder comes two intervals later: by then `a`
    // would have had more had the acknowledgement not stopped them.
    let b = site.new_event(&key, intrusion("b")).await;
    let b2 = format!("{b}:repeat:2");
    wait_until("b's second reminder", || hook.accepted_keys().contains(&b2)).await;
    site.drained().await;
    assert_eq!(repeats_of(a), at_ack);
    let mut want = at_ack.clone();
    want.insert(a.to_string());
    assert_eq!(keys_of(a), want);
    assert_eq!(hook.duplicates_seen(), 0);
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grouping_and_silences_hold_notifications_back() {
    let hook = WebhookReceiver::start(Faults::default()).await.unwrap();
    let setup = fresh_setup();
    let (_, key) = setup.source(NVR);
    let hook_id = setup.webhook("ops", hook.url(), WebhookFormat::Json);
    setup.rule(
        "motion grouped",
        kinds(&["motion"]),
        vec![hook_id],
        60,
        None,
    );
    setup.rule("tamper", kinds(&["tamper"]), vec![hook_id], 0, None);
    let now = OffsetDateTime::now_utc();
    setup
        .store()
        .add_silence(
            &NewSilence {
                matcher: Matcher {
                    kinds: vec!["tamper".into()],
                    zones: vec!["workshop".into()],
                    ..Matcher::default()
                },
                starts_at: now - time::Duration::minutes(1),
                ends_at: now + time::Duration::hours(1),
                author: "alice".into(),
                comment: "maintenance in the workshop".into(),
            },
            now,
        )
        .unwrap();
    let mut site = setup.start().await;
    let motion = |zone: &str| json!({"kind": "motion", "severity": "info", "zone": zone});
    let head = site.new_event(&key, motion("gate")).await;
    let grouped = site.new_event(&key, motion("gate")).await;
    let other_zone = site.new_event(&key, motion("yard")).await;
    let silenced = site
        .new_event(
            &key,
            json!({"kind": "tamper", "severity": "critical", "zone": "workshop"}),
        )
        .await;
    let loud = site
        .new_event(
            &key,
            json!({"kind": "tamper", "severity": "critical", "zone": "yard"}),
        )
        .await;
    hook.wait_for_accepted(3, WAIT).await.unwrap();
    site.drained().await;
    assert_eq!(
        hook.accepted_keys().into_iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([head.to_string(), other_zone.to_string(), loud.to_string()])
    );
    let store = site.store();
    let g = store.event_detail(grouped).unwrap();
    assert_eq!(g.event.grouped_into, Some(head));
    assert!(g.deliveries.is_empty(), "{:?}", g.deliveries);
    let s = store.event_detail(silenced).unwrap();
    assert!(s.silenced_by.is_some());
    assert!(s.deliveries.is_empty(), "{:?}", s.deliveries);
    assert_eq!(s.event.new.lifecycle, Lifecycle::Instant);
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn receivers_added_or_changed_while_running_are_picked_up() {
    let first = WebhookReceiver::start(Faults::default()).await.unwrap();
    let second = WebhookReceiver::start(Faults::default()).await.unwrap();
    let setup = fresh_setup();
    let (_, key) = setup.source(NVR);
    let mut site = setup.start().await;

    // Added while the hub runs: its worker starts and takes what was enqueued for it.
    let store = site.store();
    let hook = store
        .add_receiver(
            "late",
            &ReceiverConfig::Webhook {
                url: first.url(),
                format: WebhookFormat::Json,
            },
        )
        .unwrap();
    store
        .add_rule(&NewRule {
            name: "late rule".into(),
            matcher: from_nvr(),
            active: None,
            receivers: vec![hook],
            group_window: Duration::ZERO,
            repeat_every: None,
        })
        .unwrap();
    let a = site.new_event(&key, intrusion("late-1")).await;
    assert_eq!(
        first.wait_for_accepted(1, WAIT).await.unwrap(),
        vec![a.to_string()]
    );

    // Pointed elsewhere: later notifications go to the new address.
    store
        .set_receiver_config(
            hook,
            &ReceiverConfig::Webhook {
                url: second.url(),
                format: WebhookFormat::Slack,
            },
        )
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut n = 0;
    let moved = loop {
        n += 1;
        let id = site
            .new_event(&key, intrusion(&format!("late-{}", n + 1)))
            .await;
        let at = |hook: &WebhookReceiver| hook.accepted_keys().contains(&id.to_string());
        wait_until("the notification at either address", || {
            at(&first) || at(&second)
        })
        .await;
        if at(&second) {
            break id;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the change was not picked up"
        );
    };
    let req = accepted_request(&second, &moved.to_string()).await;
    assert!(json_body(&req)["blocks"].is_array(), "slack format now");

    // Disabled: what the rules call for no longer goes there (and its worker stops).
    store.set_receiver_enabled(hook, false).unwrap();
    loop {
        n += 1;
        let id = site
            .new_event(&key, intrusion(&format!("late-{}", n + 1)))
            .await;
        let detail = site.store().event_detail(id).unwrap();
        if detail.deliveries.iter().all(|d| d.receiver != hook) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the receiver was not disabled"
        );
    }
    site.stop().await;
}

/// One HTTP/1.1 request with a chunked body that never says how long it is.
async fn post_chunked(addr: SocketAddr, key: &str, chunks: usize) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/v1/events HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\
         Authorization: Bearer {key}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b' '; 4096];
    for _ in 0..chunks {
        // The hub may answer and close before all is sent.
        if s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .is_err()
            || s.write_all(&chunk).await.is_err()
            || s.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp).await;
    let text = String::from_utf8_lossy(&resp).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_a_clear_error_and_is_counted() {
    let setup = fresh_setup();
    let (source_id, key) = setup.source(NVR);
    let mut site = setup.start().await;
    let bearer = format!("Bearer {key}");
    let auth = [("Authorization", bearer.as_str())];

    let r = site.post_raw(&auth, "{\"kind\": \"intrusion\",").await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.error().contains("not valid JSON"), "{}", r.error());

    let r = site
        .post(
            &key,
            json!({"kind": "intrusion", "severity": "critical", "colour": "red"}),
        )
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.error().contains("colour"), "{}", r.error());

    let r = site.post(&key, json!({"kind": "intrusion"})).await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.error().contains("severity"), "{}", r.error());

    let r = site
        .post(
            &key,
            json!({"kind": "alert.delivery_dead", "severity": "critical"}),
        )
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.error().contains("reserved"), "{}", r.error());

    let r = site
        .post(
            "not-a-key-anyone-has",
            json!({"kind": "x", "severity": "info"}),
        )
        .await;
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.error().contains("gatehouse source add"), "{}", r.error());
    assert!(r.headers.contains_key("www-authenticate"));

    let r = site
        .post_raw(&[], json!({"kind": "x", "severity": "info"}).to_string())
        .await;
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.error().contains("X-Api-Key"), "{}", r.error());

    // The key also works as X-Api-Key.
    let r = site
        .post_raw(
            &[("X-Api-Key", &key)],
            json!({"kind": "x", "severity": "info"}).to_string(),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");

    // Over the limit, said up front or found while reading.
    let big = json!({"kind": "x", "severity": "info", "message": "m".repeat(20_000)});
    let r = site.post(&key, big).await;
    assert_eq!(r.status, 413, "{r:?}");
    assert!(r.error().contains("16384"), "{}", r.error());
    let (status, text) = post_chunked(site.addr(), &key, 8).await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("16384"), "{text}");

    // A disabled source is refused within a few seconds (its key lookup is cached).
    site.store()
        .set_event_source_enabled(source_id, false)
        .unwrap();
    let mut refused = None;
    let deadline = tokio::time::Instant::now() + WAIT;
    while refused.is_none() {
        assert!(tokio::time::Instant::now() < deadline, "still accepted");
        let r = site
            .post(&key, json!({"kind": "x", "severity": "info"}))
            .await;
        if r.status == 403 {
            refused = Some(r);
        } else {
            assert_eq!(r.status, 201, "{r:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let r = refused.unwrap();
    assert!(r.error().contains("disabled"), "{}", r.error());
    assert!(r.error().contains("nvr-yard"), "{}", r.error());

    let m = site.metrics().await;
    for (reason, n) in [
        ("not_json", 1.0),
        ("shape", 1.0),
        ("missing", 1.0),
        ("field", 1.0),
        ("unknown_key", 1.0),
        ("no_key", 1.0),
        ("too_large", 2.0),
        ("disabled_source", 1.0),
    ] {
        let series =
            format!(r#"gatehouse_events_rejected_total{{ingress="webhook",reason="{reason}"}}"#);
        assert_eq!(sample(&m, &series), Some(n), "{series} in\n{m}");
    }
    assert!(m.contains("# TYPE gatehouse_gate_input_dropped_total counter"));
    site.stop().await;
}
