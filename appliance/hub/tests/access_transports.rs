//! The hub's access service end to end over real sockets on 127.0.0.1: the HTTP transport
//! (`POST /api/v1/access/check` and `POST /api/v1/gate/frames`) and the raw-TCP transport,
//! against a store set up in a temporary data directory. Afterwards every answered
//! decision is in the access log and the database holds no raw card id. Gates sync their
//! offline allow-lists (entries checked with the gates' own math, computed here from the
//! site key file) and report door and tamper events.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_access::model::{HolidayRule, Schedule, Validity, Window};
use gatehouse_gate_proto::{
    verify, AccessRequest, AllowListDelta, AllowListRequest, CardId, Decision, DoorEvent,
    DoorEventKind, EntryHash, ErrorCode, ErrorReply, Frame, FrameDecoder, GateKey, Heartbeat,
    HeartbeatFlags, Message, OfflineAck, OfflineBatch, OfflineEntry, Reason, Repr, Tamper,
    MAX_FRAME_LEN,
};
use gatehouse_store::gate_events::GateEventFilter;
use gatehouse_store::{LogSource, NewCard, SiteKey, Store};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::net::SocketAddr;
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod support;

use support::Running;

// Distinctive 10-byte card ids, so finding their bytes in the DB file cannot be chance.
const GRANTED: &str = "a1b2c3d4e5f60718293a";
const DISABLED: &str = "b1b2c3d4e5f60718293b";
const OFF_HOURS: &str = "c1b2c3d4e5f60718293c";
const UNKNOWN: &str = "d1b2c3d4e5f60718293d";

struct Site {
    gate_a: u32,
    key_a: GateKey,
    gate_b: u32,
    key_b: GateKey,
    gate_ip: u32,
    key_ip: GateKey,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    CardId::from_hex(s).unwrap().as_bytes().to_vec()
}

fn setup(dir: &Path) -> Site {
    let store = Store::open(dir).unwrap();
    let key = SiteKey::load_or_create(dir).unwrap();
    let zone = store.add_zone("lobby", false).unwrap();
    let gate = |name: &str, ips: Option<Vec<String>>| {
        let g = support::add_gate(&store, zone, name, ips);
        (g.id, g.key)
    };
    let (gate_a, key_a) = gate("front", None);
    let (gate_b, key_b) = gate("back", None);
    let (gate_ip, key_ip) = gate("fenced", Some(vec!["10.9.9.0/24".into()]));

    let always = Schedule {
        weekly: std::array::from_fn(|_| {
            vec![Window {
                start: 0,
                end: 1440,
            }]
        }),
        holidays: HolidayRule::Ignore,
    };
    let never = Schedule {
        weekly: Default::default(),
        holidays: HolidayRule::Ignore,
    };
    let staff = store.add_level("staff", &always).unwrap();
    let closed = store.add_level("closed", &never).unwrap();
    for g in [gate_a, gate_b, gate_ip] {
        store.add_level_gate(staff, i64::from(g)).unwrap();
        store.add_level_gate(closed, i64::from(g)).unwrap();
    }
    let person = |name: &str, level| {
        let p = store.add_person(name, Validity::default()).unwrap();
        store.grant_level(p, level).unwrap();
        p
    };
    let card = |person, acc: &str| {
        store
            .add_card(
                &key,
                &unhex(acc),
                &NewCard {
                    person,
                    master: false,
                    validity: Validity::default(),
                    label: None,
                },
            )
            .unwrap()
    };
    let alice = person("alice", staff);
    card(alice, GRANTED);
    let disabled = card(alice, DISABLED);
    store.set_card_enabled(disabled, false).unwrap();
    let bob = person("bob", closed);
    card(bob, OFF_HOURS);
    Site {
        gate_a,
        key_a,
        gate_b,
        key_b,
        gate_ip,
        key_ip,
    }
}

/// A hub on `dir` with the gates' TCP transport on (MQTT has its own tests,
/// mqtt_transport.rs), serving until [`Running::stop`].
async fn start(dir: &Path) -> Running {
    let mut config = support::config(dir);
    config.hub.gate_tcp_listen = Some(support::loopback());
    Running::start(&config, |_| {}).await
}

/// One HTTP/1.1 request on its own connection; returns the status and the JSON body.
async fn post(addr: SocketAddr, auth: Option<&str>, body: &[u8]) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "POST /api/v1/access/check HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    // A refused oversize body may be cut short by the server: ignore write errors.
    let _ = s.write_all(body).await;
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp).await;
    let text = String::from_utf8_lossy(&resp).to_string();
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    (status, json)
}

fn bearer(key: &GateKey) -> String {
    format!("Bearer {}", hex(key))
}

fn check_body(gate: u32, acc: &str) -> Vec<u8> {
    format!("{{\"gate_id\": {gate}, \"acc_id\": \"{acc}\"}}").into_bytes()
}

fn frame(key: &GateKey, gate: u32, message: Message) -> Vec<u8> {
    let repr = Repr {
        gate_id: gate,
        message,
    };
    let mut buf = vec![0u8; repr.buffer_len()];
    repr.emit_sealed(key, &mut buf).unwrap();
    buf
}

fn request(key: &GateKey, gate: u32, seq: u32, acc: &str) -> Vec<u8> {
    frame(
        key,
        gate,
        Message::AccessRequest(AccessRequest {
            gate_id: gate,
            seq,
            time: 0,
            card: CardId::from_hex(acc).unwrap(),
        }),
    )
}

/// Reads `n` reply frames, checks each tag with `key`, returns the messages.
async fn replies(s: &mut TcpStream, key: &GateKey, n: usize) -> Vec<Message> {
    let mut decoder = FrameDecoder::new(vec![0u8; MAX_FRAME_LEN]);
    let mut out = Vec::new();
    while out.len() < n {
        let got = s.read(decoder.spare_mut()).await.unwrap();
        assert!(got > 0, "connection closed after {} replies", out.len());
        decoder.commit(got);
        while let Some(f) = decoder.next_frame().unwrap() {
            verify(key, &f).expect("reply sealed with the gate's key");
            out.push(Repr::parse(&f).unwrap().message);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_tcp_transports_decide_log_and_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let site = setup(dir.path());
    let mut hub = start(dir.path()).await;
    let (http, tcp) = (hub.http, hub.tcp());
    let mut answered = 0u64;

    // ---- HTTP -------------------------------------------------------------------------
    let key_a = bearer(&site.key_a);
    let (st, j) = post(http, Some(&key_a), &check_body(site.gate_a, GRANTED)).await;
    assert_eq!(st, 200, "{j}");
    assert_eq!(j["allow"], true);
    assert_eq!(j["reason"], "granted");
    assert_eq!(j["relay_ms"], 1500);
    assert_eq!(j["seq"], 0);
    answered += 1;
    for (acc, reason) in [
        (UNKNOWN, Reason::UnknownCard),
        (DISABLED, Reason::Disabled),
        (OFF_HOURS, Reason::OutsideSchedule),
    ] {
        let (st, j) = post(http, Some(&key_a), &check_body(site.gate_a, acc)).await;
        assert_eq!(st, 200, "{j}");
        assert_eq!(j["allow"], false);
        assert_eq!(j["reason"], reason.as_str());
        assert_eq!(j["relay_ms"], 0);
        answered += 1;
    }
    // With a sequence number: echoed, and replay-checked.
    let body = format!(
        "{{\"gate_id\": {}, \"acc_id\": \"{GRANTED}\", \"seq\": 7, \"time\": 1}}",
        site.gate_b
    );
    let key_b = bearer(&site.key_b);
    let (st, j) = post(http, Some(&key_b), body.as_bytes()).await;
    assert_eq!((st, &j["seq"]), (200, &serde_json::json!(7)), "{j}");
    answered += 1;
    let (st, j) = post(http, Some(&key_b), body.as_bytes()).await;
    assert_eq!(st, 409, "{j}");
    assert!(j["error"].as_str().unwrap().contains("already used"), "{j}");

    // Refusals.
    let (st, j) = post(http, None, &check_body(site.gate_a, GRANTED)).await;
    assert_eq!(st, 401, "{j}");
    assert!(j["error"].as_str().unwrap().contains("Bearer"), "{j}");
    let (st, j) = post(
        http,
        Some(&bearer(&[0x55; 32])),
        &check_body(site.gate_a, GRANTED),
    )
    .await;
    assert_eq!(st, 401, "{j}");
    // Another gate's (valid) key is refused.
    let (st, j) = post(http, Some(&key_b), &check_body(site.gate_a, GRANTED)).await;
    assert_eq!(st, 401, "{j}");
    let (st, j) = post(http, Some(&key_a), &check_body(9999, GRANTED)).await;
    assert_eq!(st, 404, "{j}");
    let (st, j) = post(
        http,
        Some(&bearer(&site.key_ip)),
        &check_body(site.gate_ip, GRANTED),
    )
    .await;
    assert_eq!(st, 403, "{j}");
    for bad in [
        &b"{not json"[..],
        &b"{\"gate_id\": 1}"[..],
        &b"{\"gate_id\": 1, \"acc_id\": \"xyz1\"}"[..],
        &b"{\"gate_id\": 1, \"acc_id\": \"\"}"[..],
    ] {
        let (st, j) = post(http, Some(&key_a), bad).await;
        assert_eq!(st, 400, "{}: {j}", String::from_utf8_lossy(bad));
        assert!(j["error"].as_str().unwrap().contains("acc_id"), "{j}");
    }
    let long = format!("{{\"gate_id\": 1, \"acc_id\": \"{}\"}}", "ab".repeat(33));
    let (st, _) = post(http, Some(&key_a), long.as_bytes()).await;
    assert_eq!(st, 400);
    let huge = vec![b' '; 5000];
    let (st, j) = post(http, Some(&key_a), &huge).await;
    assert_eq!(st, 413, "{j}");

    // ---- raw TCP ----------------------------------------------------------------------
    let mut conn = TcpStream::connect(tcp).await.unwrap();
    // 200 pipelined requests in one write; seq continues above HTTP's 0.
    let mut batch = Vec::new();
    for seq in 1..=200u32 {
        let acc = if seq % 3 == 0 { UNKNOWN } else { GRANTED };
        batch.extend(request(&site.key_a, site.gate_a, seq, acc));
    }
    conn.write_all(&batch).await.unwrap();
    let got = replies(&mut conn, &site.key_a, 200).await;
    for (i, m) in got.iter().enumerate() {
        let seq = u32::try_from(i).unwrap() + 1;
        let expect = if seq % 3 == 0 {
            Decision {
                seq,
                reason: Reason::UnknownCard,
                relay_ms: 0,
            }
        } else {
            Decision {
                seq,
                reason: Reason::Granted,
                relay_ms: 1500,
            }
        };
        assert_eq!(m, &Message::Decision(expect));
    }
    answered += 200;

    // A heartbeat gets no answer; a replayed frame gets ErrorReply Replay.
    let hb = frame(
        &site.key_a,
        site.gate_a,
        Message::Heartbeat(Heartbeat {
            seq: 201,
            time: 0,
            allowlist_version: 0,
            offline_pending: 0,
            flags: HeartbeatFlags::new(true, false, true),
        }),
    );
    conn.write_all(&hb).await.unwrap();
    conn.write_all(&request(&site.key_a, site.gate_a, 5, GRANTED))
        .await
        .unwrap();
    // A frame for an unknown gate is dropped silently...
    conn.write_all(&request(&[1; 32], 4242, 1, GRANTED))
        .await
        .unwrap();
    // ...a frame for gate A sealed with gate B's key is refused without a reply (a sealed
    // refusal would hand a forger authentic frames)...
    conn.write_all(&request(&site.key_b, site.gate_a, 300, GRANTED))
        .await
        .unwrap();
    // ...and the connection still works.
    conn.write_all(&request(&site.key_a, site.gate_a, 301, GRANTED))
        .await
        .unwrap();
    let got = replies(&mut conn, &site.key_a, 2).await;
    assert_eq!(
        got,
        vec![
            Message::Error(ErrorReply {
                seq: 5,
                code: ErrorCode::Replay
            }),
            Message::Decision(Decision {
                seq: 301,
                reason: Reason::Granted,
                relay_ms: 1500
            }),
        ]
    );
    answered += 1;

    // Gate B's own key over TCP: its window continues after HTTP's seq 7.
    let mut conn_b = TcpStream::connect(tcp).await.unwrap();
    conn_b
        .write_all(&request(&site.key_b, site.gate_b, 7, GRANTED))
        .await
        .unwrap();
    conn_b
        .write_all(&request(&site.key_b, site.gate_b, 8, OFF_HOURS))
        .await
        .unwrap();
    let got = replies(&mut conn_b, &site.key_b, 2).await;
    assert_eq!(
        got[0],
        Message::Error(ErrorReply {
            seq: 7,
            code: ErrorCode::Replay
        })
    );
    assert_eq!(
        got[1],
        Message::Decision(Decision {
            seq: 8,
            reason: Reason::OutsideSchedule,
            relay_ms: 0
        })
    );
    answered += 1;

    // Garbage: a length field past the maximum, and one below the minimum, close the
    // connection; the hub keeps serving.
    for junk in [
        &[0xffu8, 0xff, 1, 2, 3][..],
        &[0x00, 0x01, 0xaa][..],
        &[0u8; 64][..],
    ] {
        let mut g = TcpStream::connect(tcp).await.unwrap();
        g.write_all(junk).await.unwrap();
        let mut sink = Vec::new();
        let n = g.read_to_end(&mut sink).await.unwrap_or(0);
        assert_eq!(n, 0, "no reply to garbage");
    }
    conn.write_all(&request(&site.key_a, site.gate_a, 302, DISABLED))
        .await
        .unwrap();
    let got = replies(&mut conn, &site.key_a, 1).await;
    assert_eq!(
        got[0],
        Message::Decision(Decision {
            seq: 302,
            reason: Reason::Disabled,
            relay_ms: 0
        })
    );
    answered += 1;
    drop(conn);
    drop(conn_b);

    let (st, _) = post(http, Some(&key_a), &check_body(site.gate_a, GRANTED)).await;
    assert_eq!(st, 200, "hub still serves HTTP");
    answered += 1;

    hub.stop().await;

    // ---- afterwards -------------------------------------------------------------------
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.log_count().unwrap(), answered);
    let rows = store.log_tail(10_000).unwrap();
    let seqs: Vec<u64> = rows
        .iter()
        .filter(|r| r.gate == i64::from(site.gate_a))
        .filter_map(|r| r.gate_seq)
        .collect();
    assert_eq!(seqs.len(), 202, "200 pipelined + 301 + 302");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "logged in order");
    assert!(store
        .gate(i64::from(site.gate_a))
        .unwrap()
        .last_seen
        .is_some());
    assert_eq!(store.integrity_check().unwrap(), "ok");
    drop(store);
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        for acc in [GRANTED, DISABLED, OFF_HOURS, UNKNOWN] {
            let raw = unhex(acc);
            assert!(
                !bytes.windows(raw.len()).any(|w| w == raw.as_slice()),
                "raw card id found in {}",
                path.display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_windows_resume_from_the_log_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let site = setup(dir.path());
    let mut hub = start(dir.path()).await;
    let tcp = hub.tcp();
    let mut conn = TcpStream::connect(tcp).await.unwrap();
    conn.write_all(&request(&site.key_a, site.gate_a, 40, GRANTED))
        .await
        .unwrap();
    assert!(matches!(
        replies(&mut conn, &site.key_a, 1).await[0],
        Message::Decision(_)
    ));
    drop(conn);
    hub.stop().await;

    let mut hub = start(dir.path()).await;
    let tcp = hub.tcp();
    let mut conn = TcpStream::connect(tcp).await.unwrap();
    conn.write_all(&request(&site.key_a, site.gate_a, 40, GRANTED))
        .await
        .unwrap();
    conn.write_all(&request(&site.key_a, site.gate_a, 39, GRANTED))
        .await
        .unwrap();
    conn.write_all(&request(&site.key_a, site.gate_a, 41, GRANTED))
        .await
        .unwrap();
    let got = replies(&mut conn, &site.key_a, 3).await;
    assert_eq!(
        got[0],
        Message::Error(ErrorReply {
            seq: 40,
            code: ErrorCode::Replay
        })
    );
    assert_eq!(
        got[1],
        Message::Error(ErrorReply {
            seq: 39,
            code: ErrorCode::Replay
        })
    );
    assert!(matches!(
        got[2],
        Message::Decision(Decision { seq: 41, .. })
    ));
    drop(conn);
    hub.stop().await;
    assert_eq!(Store::open(dir.path()).unwrap().log_count().unwrap(), 2);
}

fn offline_batch(key: &GateKey, gate: u32, seq: u32, gate_seqs: &[u32], reason: Reason) -> Vec<u8> {
    let mut entries = gatehouse_gate_proto::heapless::Vec::new();
    for s in gate_seqs {
        entries
            .push(OfflineEntry {
                gate_seq: *s,
                time: 1_800_000_000 + s,
                card: CardId::from_hex(GRANTED).unwrap(),
                reason,
            })
            .unwrap();
    }
    frame(
        key,
        gate,
        Message::OfflineBatch(OfflineBatch { seq, entries }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_uploads_are_stored_once_and_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let site = setup(dir.path());
    let mut hub = start(dir.path()).await;
    let tcp = hub.tcp();
    let mut conn = TcpStream::connect(tcp).await.unwrap();
    let (k, g) = (&site.key_a, site.gate_a);
    // A batch, the same entries again after a "lost" ack (a new frame seq), then a batch
    // overlapping both.
    conn.write_all(&offline_batch(k, g, 10, &[3, 4, 5], Reason::OfflineGranted))
        .await
        .unwrap();
    conn.write_all(&offline_batch(k, g, 11, &[3, 4, 5], Reason::OfflineGranted))
        .await
        .unwrap();
    conn.write_all(&offline_batch(k, g, 12, &[5, 6], Reason::OfflineDenied))
        .await
        .unwrap();
    // An entry claiming an online reason is refused (the whole batch).
    conn.write_all(&offline_batch(k, g, 13, &[7], Reason::Granted))
        .await
        .unwrap();
    let got = replies(&mut conn, k, 4).await;
    let ack = |seq, accepted, duplicates| {
        Message::OfflineAck(OfflineAck {
            seq,
            accepted,
            duplicates,
        })
    };
    assert_eq!(got[0], ack(10, 3, 0));
    assert_eq!(got[1], ack(11, 0, 3));
    assert_eq!(got[2], ack(12, 1, 1));
    assert_eq!(
        got[3],
        Message::Error(ErrorReply {
            seq: 13,
            code: ErrorCode::Malformed
        })
    );
    drop(conn);
    hub.stop().await;
    let store = Store::open(dir.path()).unwrap();
    let rows = store.log_tail(100).unwrap();
    let mut offline: Vec<u64> = rows
        .iter()
        .filter(|r| r.source == LogSource::Offline)
        .filter_map(|r| r.gate_seq)
        .collect();
    offline.sort_unstable();
    assert_eq!(
        offline,
        vec![3, 4, 5, 6],
        "each offline decision stored once"
    );
    assert!(
        rows.iter().all(|r| r.card.is_some()),
        "mapped to the enrolled card"
    );
}

// ---- allow-lists, events and the frames endpoint -------------------------------------

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// The entry a gate computes for `acc` (gate-core's `HmacEntryScheme`, written out here
/// from the site key file): HMAC(gate key, HMAC(card key, raw card))[..16].
fn gate_entry(dir: &Path, gate: u32, acc: &str) -> EntryHash {
    let site = std::fs::read(dir.join("site.key")).unwrap();
    let card_key = hmac(&site, &[b"gatehouse card key v1"]);
    let gate_key = hmac(
        &site,
        &[
            b"gatehouse gate allow-list v1",
            &u64::from(gate).to_be_bytes(),
        ],
    );
    let card_hash = hmac(&card_key, &[&unhex(acc)]);
    let mut e = [0u8; 16];
    e.copy_from_slice(&hmac(&gate_key, &[&card_hash])[..16]);
    EntryHash(e)
}

fn allow_list_request(key: &GateKey, gate: u32, seq: u32, have_version: u32) -> Vec<u8> {
    frame(
        key,
        gate,
        Message::AllowListRequest(AllowListRequest { seq, have_version }),
    )
}

/// A gate's side of one TCP connection: one decoder for the whole stream.
struct GateConn {
    stream: TcpStream,
    decoder: FrameDecoder<Vec<u8>>,
    key: GateKey,
}

impl GateConn {
    async fn connect(addr: SocketAddr, key: GateKey) -> GateConn {
        GateConn {
            stream: TcpStream::connect(addr).await.unwrap(),
            decoder: FrameDecoder::new(vec![0u8; MAX_FRAME_LEN]),
            key,
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    async fn next(&mut self) -> Message {
        loop {
            if let Some(f) = self.decoder.next_frame().unwrap() {
                verify(&self.key, &f).expect("reply sealed with the gate's key");
                return Repr::parse(&f).unwrap().message;
            }
            let got = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                self.stream.read(self.decoder.spare_mut()),
            )
            .await
            .expect("a reply within 10 s")
            .unwrap();
            assert!(got > 0, "connection closed");
            self.decoder.commit(got);
        }
    }

    /// Every chunk of one allow-list answer.
    async fn transfer(&mut self) -> Vec<AllowListDelta> {
        let mut chunks = Vec::new();
        loop {
            match self.next().await {
                Message::AllowListDelta(d) => {
                    let more = d.more;
                    chunks.push(d);
                    if !more {
                        return chunks;
                    }
                }
                other => panic!("expected an allow-list chunk, got {other:?}"),
            }
        }
    }
}

fn adds(chunks: &[AllowListDelta]) -> Vec<EntryHash> {
    let mut v: Vec<EntryHash> = chunks.iter().flat_map(|d| d.adds.iter().copied()).collect();
    v.sort_unstable();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_gate_gets_its_full_allow_list_then_a_delta_after_card_disable() {
    let dir = tempfile::tempdir().unwrap();
    let site = setup(dir.path());
    let mut hub = start(dir.path()).await;
    let tcp = hub.tcp();
    let mut gate = GateConn::connect(tcp, site.key_a).await;
    let (k, g) = (site.key_a, site.gate_a);

    // Full list: alice's enabled card, and bob's (schedules are not applied offline);
    // not the disabled card nor the unknown one.
    gate.send(&allow_list_request(&k, g, 1, 0)).await;
    let full = gate.transfer().await;
    assert_eq!(full.len(), 1, "{full:?}");
    let (v1, chunk) = (full[0].to_version, &full[0]);
    assert!(
        chunk.full && !chunk.more && chunk.removes.is_empty(),
        "{chunk:?}"
    );
    assert_eq!(chunk.seq, 1);
    let mut want = vec![
        gate_entry(dir.path(), g, GRANTED),
        gate_entry(dir.path(), g, OFF_HOURS),
    ];
    want.sort_unstable();
    assert_eq!(adds(&full), want);
    // Entries are per gate: gate B's differ.
    assert_ne!(
        gate_entry(dir.path(), g, GRANTED),
        gate_entry(dir.path(), site.gate_b, GRANTED)
    );

    // Current: one empty chunk from = to = v1.
    gate.send(&allow_list_request(&k, g, 2, v1)).await;
    let same = gate.transfer().await;
    assert_eq!(same.len(), 1);
    assert_eq!(
        (same[0].from_version, same[0].to_version, same[0].full),
        (v1, v1, false)
    );
    assert!(same[0].adds.is_empty() && same[0].removes.is_empty());

    // `card disable` (the store call the CLI makes); the hub reloads within ~200 ms.
    {
        let store = Store::open(dir.path()).unwrap();
        let key = SiteKey::load_or_create(dir.path()).unwrap();
        let card = store
            .find_card_by_acc_id(&key, &unhex(GRANTED))
            .unwrap()
            .unwrap();
        store.set_card_enabled(card.id, false).unwrap();
    }
    let mut seq = 3;
    let delta = loop {
        gate.send(&allow_list_request(&k, g, seq, v1)).await;
        seq += 1;
        let got = gate.transfer().await;
        if got[0].to_version != v1 {
            break got;
        }
        assert!(seq < 100, "the hub never moved its allow-list version");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(delta.len(), 1, "{delta:?}");
    let d = &delta[0];
    assert!(!d.full && !d.more);
    assert_eq!(d.from_version, v1);
    assert!(d.to_version > v1);
    assert!(d.adds.is_empty(), "{d:?}");
    assert_eq!(
        d.removes.as_slice(),
        &[gate_entry(dir.path(), g, GRANTED)],
        "the disabled card is removed"
    );
    // A version from the future gets the full list again, now without the card.
    gate.send(&allow_list_request(&k, g, seq, d.to_version + 1000))
        .await;
    let again = gate.transfer().await;
    assert!(again[0].full);
    assert_eq!(adds(&again), vec![gate_entry(dir.path(), g, OFF_HOURS)]);

    drop(gate);
    hub.stop().await;

    // A restarted hub starts above every version it handed out: the gate gets a full list.
    let mut hub = start(dir.path()).await;
    let tcp = hub.tcp();
    let mut gate = GateConn::connect(tcp, site.key_a).await;
    gate.send(&allow_list_request(&k, g, 500, d.to_version))
        .await;
    let after = gate.transfer().await;
    assert!(after[0].full, "{after:?}");
    assert!(after[0].to_version > d.to_version);
    assert_eq!(adds(&after), vec![gate_entry(dir.path(), g, OFF_HOURS)]);
    drop(gate);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn door_and_tamper_events_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let site = setup(dir.path());
    let mut hub = start(dir.path()).await;
    let tcp = hub.tcp();
    let mut gate = GateConn::connect(tcp, site.key_a).await;
    let (k, g) = (site.key_a, site.gate_a);
    let door = |seq, kind| {
        frame(
            &k,
            g,
            Message::DoorEvent(DoorEvent {
                seq,
                time: 1_800_000_000,
                kind,
            }),
        )
    };
    gate.send(&door(10, DoorEventKind::Forced)).await;
    gate.send(&frame(
        &k,
        g,
        Message::Tamper(Tamper {
            seq: 11,
            time: 1_800_000_001,
            active: true,
        }),
    ))
    .await;
    gate.send(&door(12, DoorEventKind::Unknown(42))).await;
    // Replayed: refused by the window, stored once anyway.
    gate.send(&door(12, DoorEventKind::Closed)).await;
    // Events have no reply; the next answer is the replay refusal, then a decision.
    gate.send(&request(&k, g, 13, GRANTED)).await;
    assert_eq!(
        gate.next().await,
        Message::Error(ErrorReply {
            seq: 12,
            code: ErrorCode::Replay
        })
    );
    assert!(matches!(
        gate.next().await,
        Message::Decision(Decision { seq: 13, .. })
    ));
    drop(gate);
    hub.stop().await;

    let store = Store::open(dir.path()).unwrap();
    let rows = store
        .gate_events(&GateEventFilter {
            gate: Some(i64::from(g)),
            limit: 10,
        })
        .unwrap();
    let got: Vec<(u64, &str)> = rows.iter().map(|r| (r.gate_seq, r.kind.as_str())).collect();
    assert_eq!(
        got,
        [(10, "forced_open"), (11, "tamper_on"), (12, "unknown_42")]
    );
    assert_eq!(rows[0].at.unix_timestamp(), 1_800_000_000);

    // After a restart the replay window resumes above the events' numbers too.
    drop(store);
    let mut hub = start(dir.path()).await;
    let tcp = hub.tcp();
    let mut gate = GateConn::connect(tcp, site.key_a).await;
    gate.send(&door(12, DoorEventKind::Opened)).await;
    gate.send(&door(14, DoorEventKind::Opened)).await;
    gate.send(&request(&k, g, 15, GRANTED)).await;
    // 13 was an access request (in the log); 12 an event: both below the window.
    assert_eq!(
        gate.next().await,
        Message::Error(ErrorReply {
            seq: 12,
            code: ErrorCode::Replay
        })
    );
    assert!(matches!(
        gate.next().await,
        Message::Decision(Decision { seq: 15, .. })
    ));
    drop(gate);
    hub.stop().await;
}

/// `POST /api/v1/gate/frames` with a binary body; the status and the raw answer body.
async fn post_frame(addr: SocketAddr, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST /api/v1/gate/frames HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let _ = s.write_all(body).await;
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp).await;
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {resp:?}"));
    let head = String::from_utf8_lossy(&resp[..end]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, resp[end + 4..].to_vec())
}

/// The frames of a frames-endpoint answer, each verified with `key`.
fn frames_of(key: &GateKey, mut body: &[u8]) -> Vec<Message> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let len = usize::from(u16::from_be_bytes([body[0], body[1]])) + 2;
        let f = Frame::new_checked(&body[..len]).unwrap();
        verify(key, &f).unwrap();
        out.push(Repr::parse(&f).unwrap().message);
        body = &body[len..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_frames_endpoint_carries_every_message() {
    let dir = tempfile::tempdir().unwrap();
    let site = setup(dir.path());
    let mut hub = start(dir.path()).await;
    let http = hub.http;
    let (k, g) = (site.key_a, site.gate_a);

    // A heartbeat: 200, no reply frame.
    let hb = frame(
        &k,
        g,
        Message::Heartbeat(Heartbeat {
            seq: 1,
            time: 0,
            allowlist_version: 0,
            offline_pending: 0,
            flags: HeartbeatFlags::new(true, false, true),
        }),
    );
    assert_eq!(post_frame(http, &hb).await, (200, Vec::new()));
    // The same frame again: the replay refusal, sealed.
    let (st, body) = post_frame(http, &hb).await;
    assert_eq!(st, 200);
    assert_eq!(
        frames_of(&k, &body),
        [Message::Error(ErrorReply {
            seq: 1,
            code: ErrorCode::Replay
        })]
    );
    // The allow-list, as over TCP.
    let (st, body) = post_frame(http, &allow_list_request(&k, g, 2, 0)).await;
    assert_eq!(st, 200);
    let chunks: Vec<AllowListDelta> = frames_of(&k, &body)
        .into_iter()
        .map(|m| match m {
            Message::AllowListDelta(d) => d,
            other => panic!("{other:?}"),
        })
        .collect();
    let mut want = vec![
        gate_entry(dir.path(), g, GRANTED),
        gate_entry(dir.path(), g, OFF_HOURS),
    ];
    want.sort_unstable();
    assert_eq!(adds(&chunks), want);
    // An offline upload is acknowledged; an access request is decided.
    let (st, body) = post_frame(
        http,
        &offline_batch(&k, g, 3, &[1, 2], Reason::OfflineGranted),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        frames_of(&k, &body),
        [Message::OfflineAck(OfflineAck {
            seq: 3,
            accepted: 2,
            duplicates: 0
        })]
    );
    let (st, body) = post_frame(http, &request(&k, g, 4, GRANTED)).await;
    assert_eq!(st, 200);
    assert_eq!(
        frames_of(&k, &body),
        [Message::Decision(Decision {
            seq: 4,
            reason: Reason::Granted,
            relay_ms: 1500
        })]
    );
    // Sealed with another gate's key: 401, and no sealed frame to learn from.
    let (st, body) = post_frame(http, &request(&site.key_b, g, 5, GRANTED)).await;
    assert_eq!(st, 401);
    let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        j["error"].as_str().unwrap().contains("does not verify"),
        "{j}"
    );
    // The IP allow-list applies: the fenced gate may not come from 127.0.0.1.
    let (st, body) = post_frame(http, &request(&site.key_ip, site.gate_ip, 1, GRANTED)).await;
    assert_eq!(st, 200);
    assert_eq!(
        frames_of(&site.key_ip, &body),
        [Message::Error(ErrorReply {
            seq: 1,
            code: ErrorCode::BadAuth
        })]
    );
    // Transport errors: JSON.
    let (st, body) = post_frame(http, b"not a frame").await;
    assert_eq!(st, 400, "{}", String::from_utf8_lossy(&body));
    let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        j["error"].as_str().unwrap().contains("one sealed frame"),
        "{j}"
    );
    let mut two = hb.clone();
    two.extend_from_slice(&hb);
    assert_eq!(post_frame(http, &two).await.0, 400, "exactly one frame");
    assert_eq!(post_frame(http, &vec![0u8; 2000]).await.0, 413);
    let (st, body) = post_frame(http, &request(&[1; 32], 4242, 1, GRANTED)).await;
    assert_eq!(st, 404, "{}", String::from_utf8_lossy(&body));

    hub.stop().await;
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.log_count().unwrap(),
        3,
        "two offline entries and one decision"
    );
}
