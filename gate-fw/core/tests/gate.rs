//! The gate core against a fake hub: the hub side parses every frame the core sends with
//! the gate link crate (verifying the tag and the strictly increasing sequence numbers the
//! real hub enforces) and answers with sealed replies. Time is a fake clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gate_core::proto::{
    seal, verify, AllowListDelta, CardId, Decision, DoorEventKind, EntryHash, ErrorCode,
    ErrorReply, Frame, GateKey, Message, MessageType, OfflineAck, Reason, RemoteOpen, ReplayWindow,
    Repr, MAX_DELTA_ENTRIES,
};
use gate_core::{
    EntryScheme, GateConfig, GateCore, HmacEntryScheme, Now, Output, RxError, Signal, Transmit,
};

const GATE: u32 = 7;
const KEY: GateKey = [0x11; 32];
const CARD_KEY: [u8; 32] = [0x33; 32];
const ALLOW_KEY: [u8; 32] = [0x22; 32];

/// The hub's side of one gate's link.
struct Hub {
    window: ReplayWindow,
}

impl Hub {
    /// Parses a frame the way the hub does, insisting on a fresh seq.
    fn receive(&mut self, t: &Transmit) -> Message {
        let frame = Frame::new_checked(&t.bytes[..]).unwrap();
        assert_eq!(frame.gate_id(), GATE);
        verify(&KEY, &frame).unwrap();
        let repr = Repr::parse(&frame).unwrap();
        assert_eq!(repr.message.seq(), t.seq);
        assert_eq!(frame.msg_type(), t.msg_type);
        self.window
            .accept(t.seq)
            .unwrap_or_else(|e| panic!("hub would refuse {:?}: {e}", t.msg_type));
        repr.message
    }
}

fn sealed(message: Message) -> Vec<u8> {
    sealed_with(&KEY, GATE, message)
}

fn sealed_with(key: &GateKey, gate_id: u32, message: Message) -> Vec<u8> {
    let repr = Repr { gate_id, message };
    let mut buf = vec![0u8; repr.buffer_len()];
    repr.emit_sealed(key, &mut buf).unwrap();
    buf
}

fn card(b: u8) -> CardId {
    CardId::new(&[0x04, b, b, b]).unwrap()
}

fn entry(c: &CardId) -> EntryHash {
    HmacEntryScheme::new(CARD_KEY, ALLOW_KEY).entry(c)
}

struct Rig {
    gate: GateCore,
    hub: Hub,
    now: Now,
}

impl Rig {
    fn new() -> Rig {
        Rig::with(|_| {})
    }

    fn with(tune: impl FnOnce(&mut GateConfig)) -> Rig {
        let mut config = GateConfig::new(GATE, KEY, CARD_KEY, ALLOW_KEY);
        tune(&mut config);
        let mut gate = GateCore::new(config);
        let now = Now::new(0, 1_700_000_000);
        gate.door_contact(true, now);
        Rig {
            gate,
            hub: Hub {
                window: ReplayWindow::new(),
            },
            now,
        }
    }

    /// Link up, the hub answers the allow-list request with a full list of `cards`.
    fn online_with(cards: &[CardId]) -> Rig {
        let mut rig = Rig::new();
        rig.gate.link_up(rig.now);
        let (msgs, _) = rig.drain();
        let req = find_allow_list_request(&msgs);
        assert_eq!(req.1, 0);
        rig.deliver(Message::AllowListDelta(delta(
            req.0,
            0,
            1,
            true,
            &cards.iter().map(entry).collect::<Vec<_>>(),
            &[],
            false,
        )))
        .unwrap();
        assert_eq!(rig.gate.allow_list().version(), 1);
        rig
    }

    fn at(&mut self, ms: u64) -> Now {
        self.now = Now::new(ms, 1_700_000_000 + (ms / 1000) as u32);
        self.now
    }

    fn advance(&mut self, ms: u64) -> Now {
        self.at(self.now.ms + ms)
    }

    /// Everything the core wants done: frames (parsed by the hub) and local outputs.
    fn drain(&mut self) -> (Vec<Message>, Vec<Output>) {
        let (mut msgs, mut local) = (Vec::new(), Vec::new());
        while let Some(out) = self.gate.poll_output() {
            match out {
                Output::Transmit(t) => msgs.push(self.hub.receive(&t)),
                other => local.push(other),
            }
        }
        (msgs, local)
    }

    fn deliver(&mut self, message: Message) -> Result<(), RxError> {
        self.gate.frame_received(&sealed(message), self.now)
    }

    /// Reads a card, returns the access request's seq.
    fn read(&mut self, c: CardId) -> u32 {
        self.gate.card_read(c, self.now);
        let (msgs, local) = self.drain();
        assert!(
            local.contains(&Output::Signal(Signal::Waiting)),
            "{local:?}"
        );
        let reqs: Vec<_> = msgs
            .iter()
            .filter_map(|m| match m {
                Message::AccessRequest(r) => Some(*r),
                _ => None,
            })
            .collect();
        assert_eq!(reqs.len(), 1, "{msgs:?}");
        assert_eq!(reqs[0].card, c);
        assert_eq!(reqs[0].gate_id, GATE);
        assert_eq!(reqs[0].time, self.now.unix);
        reqs[0].seq
    }
}

fn find_allow_list_request(msgs: &[Message]) -> (u32, u32) {
    msgs.iter()
        .find_map(|m| match m {
            Message::AllowListRequest(r) => Some((r.seq, r.have_version)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no allow-list request in {msgs:?}"))
}

fn delta(
    seq: u32,
    from_version: u32,
    to_version: u32,
    full: bool,
    adds: &[EntryHash],
    removes: &[EntryHash],
    more: bool,
) -> AllowListDelta {
    AllowListDelta {
        seq,
        from_version,
        to_version,
        full,
        adds: heapless::Vec::from_slice(adds).unwrap(),
        removes: heapless::Vec::from_slice(removes).unwrap(),
        more,
    }
}

fn decision(seq: u32, reason: Reason, relay_ms: u16) -> Message {
    Message::Decision(Decision {
        seq,
        reason,
        relay_ms,
    })
}

fn door_events(msgs: &[Message]) -> Vec<DoorEventKind> {
    msgs.iter()
        .filter_map(|m| match m {
            Message::DoorEvent(e) => Some(e.kind),
            _ => None,
        })
        .collect()
}

fn relays(local: &[Output]) -> Vec<u16> {
    local
        .iter()
        .filter_map(|o| match o {
            Output::Relay { open_ms } => Some(*open_ms),
            _ => None,
        })
        .collect()
}

fn decided(local: &[Output]) -> Vec<gate_core::Decided> {
    local
        .iter()
        .filter_map(|o| match o {
            Output::Decided(d) => Some(*d),
            _ => None,
        })
        .collect()
}

#[test]
fn link_up_sends_heartbeat_and_allow_list_request() {
    let mut rig = Rig::new();
    assert_eq!(
        rig.gate.poll_output(),
        None,
        "nothing to do while the link is down"
    );
    rig.gate.link_up(rig.now);
    let (msgs, local) = rig.drain();
    assert!(local.is_empty());
    assert!(
        matches!(msgs[0], Message::Heartbeat(h) if h.allowlist_version == 0
        && h.offline_pending == 0 && h.flags.door_closed() && !h.flags.tamper())
    );
    assert_eq!(find_allow_list_request(&msgs).1, 0);
    assert_eq!(msgs.len(), 2);
}

#[test]
fn grant_path_pulses_the_relay_for_the_hubs_time() {
    let mut rig = Rig::online_with(&[]);
    let seq = rig.read(card(1));
    assert!(rig.gate.is_waiting());
    rig.advance(40);
    rig.deliver(decision(seq, Reason::Granted, 5_000)).unwrap();
    let (msgs, local) = rig.drain();
    assert!(msgs.is_empty());
    assert_eq!(relays(&local), [5_000]);
    assert!(local.contains(&Output::Signal(Signal::Granted)));
    let d = decided(&local);
    assert_eq!(d.len(), 1);
    assert!(d[0].allowed && !d[0].offline && d[0].reason == Some(Reason::Granted));
    assert!(!rig.gate.is_waiting());
    assert!(
        rig.gate.offline_log().is_empty(),
        "online decisions are the hub's to log"
    );

    // relay_ms 0 means the gate's own default.
    let seq = rig.read(card(2));
    rig.deliver(decision(seq, Reason::GrantedMaster, 0))
        .unwrap();
    assert_eq!(relays(&rig.drain().1), [3_000]);
}

#[test]
fn deny_path_does_not_touch_the_relay() {
    let mut rig = Rig::online_with(&[card(1)]);
    let seq = rig.read(card(1));
    rig.deliver(decision(seq, Reason::OutsideSchedule, 0))
        .unwrap();
    let (_, local) = rig.drain();
    assert!(relays(&local).is_empty());
    assert!(local.contains(&Output::Signal(Signal::Denied)));
    assert_eq!(decided(&local)[0].reason, Some(Reason::OutsideSchedule));
    // The hub's deny stands even though the allow-list has the card.
    rig.advance(10_000);
    rig.gate.tick(rig.now);
    assert!(relays(&rig.drain().1).is_empty());
}

#[test]
fn timeout_decides_from_the_allow_list_both_ways_and_logs() {
    let mut rig = Rig::online_with(&[card(1)]);
    let granted_seq = rig.read(card(1));
    assert_eq!(rig.gate.poll_at(), Some(1_500));
    rig.at(1_499);
    rig.gate.tick(rig.now);
    assert!(rig.drain().1.is_empty(), "not yet");
    rig.at(1_500);
    rig.gate.tick(rig.now);
    let (msgs, local) = rig.drain();
    assert_eq!(relays(&local), [3_000]);
    let d = decided(&local);
    assert!(d[0].allowed && d[0].offline && d[0].reason == Some(Reason::OfflineGranted));
    assert!(
        matches!(local.iter().find(|o| matches!(o, Output::LogOffline(_))),
        Some(Output::LogOffline(e)) if e.gate_seq == granted_seq && e.card == card(1)
            && e.reason == Reason::OfflineGranted)
    );
    // The link is up, so the entry goes to the hub at once.
    assert!(matches!(&msgs[..], [Message::OfflineBatch(b)] if b.entries.len() == 1));

    // The late decision is ignored.
    assert_eq!(
        rig.deliver(decision(granted_seq, Reason::Granted, 1_000)),
        Err(RxError::Unmatched {
            msg_type: MessageType::Decision,
            seq: granted_seq
        })
    );
    assert!(rig.drain().1.is_empty());

    rig.advance(5_000);
    let denied_seq = rig.read(card(9));
    rig.advance(1_500);
    rig.gate.tick(rig.now);
    let (_, local) = rig.drain();
    assert!(relays(&local).is_empty());
    assert!(local.contains(&Output::Signal(Signal::Denied)));
    let log: Vec<_> = rig
        .gate
        .offline_log()
        .iter()
        .map(|e| (e.gate_seq, e.reason))
        .collect();
    assert_eq!(
        log,
        [
            (granted_seq, Reason::OfflineGranted),
            (denied_seq, Reason::OfflineDenied)
        ]
    );
    assert_eq!(rig.gate.stats().timeouts, 2);
}

#[test]
fn link_down_decides_the_waiting_request_and_later_reads_at_once() {
    let mut rig = Rig::online_with(&[card(1)]);
    let seq = rig.read(card(1));
    rig.gate.link_down(rig.now);
    let (msgs, local) = rig.drain();
    assert!(msgs.is_empty());
    assert_eq!(decided(&local)[0].seq, seq);
    assert_eq!(relays(&local), [3_000]);

    rig.advance(1);
    rig.gate.card_read(card(2), rig.now);
    let (msgs, local) = rig.drain();
    assert!(msgs.is_empty(), "no request while the link is down");
    assert_eq!(decided(&local)[0].reason, Some(Reason::OfflineDenied));
    assert!(!local.contains(&Output::Signal(Signal::Waiting)));
    assert_eq!(rig.gate.offline_log().len(), 2);
}

#[test]
fn reads_while_waiting_are_ignored() {
    let mut rig = Rig::online_with(&[]);
    let seq = rig.read(card(1));
    rig.gate.card_read(card(1), rig.now);
    let (msgs, local) = rig.drain();
    assert!(msgs.is_empty() && local.is_empty());
    assert_eq!(rig.gate.stats().reads_ignored, 1);
    rig.deliver(decision(seq, Reason::Granted, 100)).unwrap();
}

#[test]
fn offline_log_is_uploaded_in_batches_and_cleared_only_on_ack() {
    let mut rig = Rig::online_with(&[card(1)]);
    rig.gate.link_down(rig.now);
    rig.drain();
    for i in 0..20u8 {
        rig.advance(100);
        rig.gate.card_read(card(i), rig.now);
    }
    rig.drain();
    let all: Vec<u32> = rig.gate.offline_log().iter().map(|e| e.gate_seq).collect();
    assert_eq!(all.len(), 20);

    rig.advance(1_000);
    rig.gate.link_up(rig.now);
    let (msgs, _) = rig.drain();
    let Some(Message::Heartbeat(hb)) = msgs.first() else {
        panic!("{msgs:?}")
    };
    assert_eq!(hb.offline_pending, 20);
    let batch = |msgs: &[Message]| {
        msgs.iter()
            .find_map(|m| match m {
                Message::OfflineBatch(b) => Some(b.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no batch in {msgs:?}"))
    };
    let first = batch(&msgs);
    let seqs: Vec<u32> = first.entries.iter().map(|e| e.gate_seq).collect();
    assert_eq!(seqs, all[..16]);
    assert_eq!(first.entries[0].card, card(0));
    assert_eq!(first.entries[1].reason, Reason::OfflineGranted);

    // The ack is lost: after the ack timeout the same entries go out in a new frame.
    rig.advance(9_999);
    rig.gate.tick(rig.now);
    assert!(rig.drain().0.is_empty());
    rig.advance(1);
    rig.gate.tick(rig.now);
    let again = batch(&rig.drain().0);
    assert_ne!(again.seq, first.seq);
    assert_eq!(
        again.entries, first.entries,
        "same gate_seqs: the hub stores them once"
    );
    assert_eq!(
        rig.gate.offline_log().len(),
        20,
        "nothing dropped without an ack"
    );

    // The first batch's ack arriving now answers nothing in flight.
    let late = Message::OfflineAck(OfflineAck {
        seq: first.seq,
        accepted: 16,
        duplicates: 0,
    });
    assert!(matches!(rig.deliver(late), Err(RxError::Unmatched { .. })));
    assert_eq!(rig.gate.offline_log().len(), 20);

    rig.deliver(Message::OfflineAck(OfflineAck {
        seq: again.seq,
        accepted: 0,
        duplicates: 16,
    }))
    .unwrap();
    let (msgs, local) = rig.drain();
    assert!(local.contains(&Output::OfflineAcked {
        up_to_gate_seq: all[15]
    }));
    let rest = batch(&msgs);
    assert_eq!(
        rest.entries.iter().map(|e| e.gate_seq).collect::<Vec<_>>(),
        all[16..]
    );
    assert_eq!(rig.gate.offline_log().len(), 4);
    rig.deliver(Message::OfflineAck(OfflineAck {
        seq: rest.seq,
        accepted: 4,
        duplicates: 0,
    }))
    .unwrap();
    assert!(rig.drain().0.is_empty(), "nothing more to send");
    assert!(rig.gate.offline_log().is_empty());
    // A replayed ack changes nothing.
    let replay = Message::OfflineAck(OfflineAck {
        seq: rest.seq,
        accepted: 4,
        duplicates: 0,
    });
    assert!(rig.deliver(replay).is_err());
}

#[test]
fn link_loss_during_upload_resends_after_reconnect() {
    let mut rig = Rig::new();
    rig.gate.card_read(card(1), rig.now);
    rig.gate.link_up(rig.now);
    let (msgs, _) = rig.drain();
    let first = msgs
        .iter()
        .find_map(|m| match m {
            Message::OfflineBatch(b) => Some(b.clone()),
            _ => None,
        })
        .unwrap();
    rig.gate.link_down(rig.now);
    let now = rig.advance(5);
    rig.gate.link_up(now);
    let (msgs, _) = rig.drain();
    let second = msgs
        .iter()
        .find_map(|m| match m {
            Message::OfflineBatch(b) => Some(b.clone()),
            _ => None,
        })
        .unwrap();
    assert!(second.seq > first.seq);
    assert_eq!(second.entries, first.entries);
}

#[test]
fn forged_replayed_and_mismatched_decisions_are_ignored() {
    let mut rig = Rig::online_with(&[]);
    let seq = rig.read(card(1));

    // Wrong key.
    let forged = sealed_with(&[0x99; 32], GATE, decision(seq, Reason::Granted, 9_000));
    assert_eq!(
        rig.gate.frame_received(&forged, rig.now),
        Err(RxError::BadTag)
    );
    // Altered after sealing.
    let mut altered = sealed(decision(seq, Reason::UnknownCard, 0));
    altered[12] = Reason::Granted as u8;
    assert_eq!(
        rig.gate.frame_received(&altered, rig.now),
        Err(RxError::BadTag)
    );
    // Another gate's frame.
    let other = sealed_with(&KEY, GATE + 1, decision(seq, Reason::Granted, 9_000));
    assert_eq!(
        rig.gate.frame_received(&other, rig.now),
        Err(RxError::WrongGate { gate_id: GATE + 1 })
    );
    // Wrong seq.
    assert!(matches!(
        rig.deliver(decision(seq + 1, Reason::Granted, 9_000)),
        Err(RxError::Unmatched { .. })
    ));
    assert!(matches!(
        rig.deliver(decision(seq - 1, Reason::Granted, 9_000)),
        Err(RxError::Unmatched { .. })
    ));
    // Garbage.
    assert!(matches!(
        rig.gate.frame_received(&[0, 1, 2], rig.now),
        Err(RxError::Malformed(_))
    ));
    // A message the hub does not send.
    let heartbeat = Message::Heartbeat(gate_core::proto::Heartbeat {
        seq,
        time: 0,
        allowlist_version: 0,
        offline_pending: 0,
        flags: Default::default(),
    });
    assert_eq!(
        rig.deliver(heartbeat),
        Err(RxError::Unexpected(MessageType::Heartbeat))
    );
    assert!(rig.drain().1.is_empty(), "none of that moved the relay");
    assert!(rig.gate.is_waiting());

    // The genuine decision, then its replay.
    let genuine = sealed(decision(seq, Reason::Granted, 2_000));
    rig.gate.frame_received(&genuine, rig.now).unwrap();
    assert_eq!(relays(&rig.drain().1), [2_000]);
    rig.advance(10_000);
    let seq2 = rig.read(card(2));
    assert!(matches!(
        rig.gate.frame_received(&genuine, rig.now),
        Err(RxError::Unmatched { .. })
    ));
    assert!(relays(&rig.drain().1).is_empty());
    rig.deliver(decision(seq2, Reason::Disabled, 0)).unwrap();

    let s = rig.gate.stats();
    assert_eq!(
        (
            s.bad_tag,
            s.wrong_gate,
            s.unmatched,
            s.malformed,
            s.unexpected
        ),
        (2, 1, 3, 1, 1)
    );
}

#[test]
fn unknown_reason_code_is_a_deny_not_a_fallback() {
    let mut rig = Rig::online_with(&[card(1)]);
    let seq = rig.read(card(1));
    let mut bytes = sealed(decision(seq, Reason::Granted, 1_000));
    bytes[12] = 200; // the reason byte
    seal(&KEY, &mut bytes).unwrap();
    rig.gate.frame_received(&bytes, rig.now).unwrap();
    let (_, local) = rig.drain();
    assert!(relays(&local).is_empty());
    assert!(local.contains(&Output::Signal(Signal::Denied)));
    let d = decided(&local);
    assert!(!d[0].allowed && d[0].reason.is_none() && !d[0].offline);
    assert!(rig.gate.offline_log().is_empty());
}

#[test]
fn error_reply_to_a_request_decides_offline() {
    let mut rig = Rig::online_with(&[card(1)]);
    let seq = rig.read(card(1));
    let reply = Message::Error(ErrorReply {
        seq,
        code: ErrorCode::Replay,
    });
    assert_eq!(
        rig.deliver(reply),
        Err(RxError::Refused {
            seq,
            code: ErrorCode::Replay
        })
    );
    let (_, local) = rig.drain();
    assert_eq!(decided(&local)[0].reason, Some(Reason::OfflineGranted));
    assert_eq!(rig.gate.stats().last_error, Some(ErrorCode::Replay));
}

#[test]
fn forced_door_and_held_open() {
    let mut rig = Rig::online_with(&[]);
    rig.at(1_000);
    rig.gate.door_contact(false, rig.now);
    assert_eq!(door_events(&rig.drain().0), [DoorEventKind::Forced]);
    assert_eq!(rig.gate.poll_at().unwrap().min(31_000), 31_000);
    rig.at(30_999);
    rig.gate.tick(rig.now);
    assert!(door_events(&rig.drain().0).is_empty());
    rig.at(31_000);
    rig.gate.tick(rig.now);
    assert_eq!(door_events(&rig.drain().0), [DoorEventKind::HeldOpen]);
    rig.at(90_000);
    rig.gate.tick(rig.now);
    assert!(
        door_events(&rig.drain().0).is_empty(),
        "held open is reported once"
    );
    rig.gate.door_contact(true, rig.now);
    assert_eq!(door_events(&rig.drain().0), [DoorEventKind::Closed]);
    // Repeated reports of the same state are not events.
    rig.gate.door_contact(true, rig.now);
    assert!(door_events(&rig.drain().0).is_empty());
}

#[test]
fn a_grant_allows_one_opening_then_held_open() {
    let mut rig = Rig::online_with(&[]);
    let seq = rig.read(card(1));
    rig.deliver(decision(seq, Reason::Granted, 3_000)).unwrap();
    rig.drain();
    rig.advance(2_000);
    rig.gate.door_contact(false, rig.now);
    assert_eq!(door_events(&rig.drain().0), [DoorEventKind::Opened]);
    rig.advance(30_000);
    rig.gate.tick(rig.now);
    assert_eq!(door_events(&rig.drain().0), [DoorEventKind::HeldOpen]);
    rig.gate.door_contact(true, rig.now);
    rig.advance(100);
    rig.gate.door_contact(false, rig.now);
    let events = door_events(&rig.drain().0);
    assert_eq!(
        events,
        [DoorEventKind::Closed, DoorEventKind::Forced],
        "the grant was used up"
    );

    // Opening after the pulse and the grace period is forced too.
    rig.gate.door_contact(true, rig.now);
    let seq = rig.read(card(1));
    rig.deliver(decision(seq, Reason::Granted, 3_000)).unwrap();
    rig.advance(3_000 + 1_000 + 1);
    rig.gate.door_contact(false, rig.now);
    assert_eq!(door_events(&rig.drain().0), [DoorEventKind::Forced]);
}

#[test]
fn exit_button_pulses_and_reports() {
    let mut rig = Rig::online_with(&[]);
    rig.gate.exit_button(rig.now);
    let (msgs, local) = rig.drain();
    assert_eq!(door_events(&msgs), [DoorEventKind::ExitButton]);
    assert_eq!(relays(&local), [3_000]);
    rig.advance(500);
    rig.gate.door_contact(false, rig.now);
    assert_eq!(door_events(&rig.drain().0), [DoorEventKind::Opened]);
}

#[test]
fn tamper_is_reported_on_change_and_in_heartbeats() {
    let mut rig = Rig::online_with(&[]);
    rig.gate.tamper(true, rig.now);
    rig.gate.tamper(true, rig.now);
    let (msgs, _) = rig.drain();
    assert!(matches!(&msgs[..], [Message::Tamper(t)] if t.active && t.time == rig.now.unix));
    rig.at(60_000);
    rig.gate.tick(rig.now);
    let (msgs, _) = rig.drain();
    assert!(matches!(&msgs[..], [Message::Heartbeat(h)] if h.flags.tamper()));
    rig.gate.tamper(false, rig.now);
    let (msgs, _) = rig.drain();
    assert!(matches!(&msgs[..], [Message::Tamper(t)] if !t.active));
}

#[test]
fn heartbeat_cadence() {
    let mut rig = Rig::with(|c| c.heartbeat_interval_ms = 60_000);
    rig.gate.link_up(rig.now);
    let count = |rig: &mut Rig| {
        rig.drain()
            .0
            .iter()
            .filter(|m| matches!(m, Message::Heartbeat(_)))
            .count()
    };
    assert_eq!(count(&mut rig), 1, "one at link-up");
    assert_eq!(rig.gate.poll_at(), Some(60_000));
    let mut sent = Vec::new();
    // Tick every second for ten minutes.
    for s in 1..=600u64 {
        rig.at(s * 1_000);
        rig.gate.tick(rig.now);
        if count(&mut rig) == 1 {
            sent.push(s);
        }
    }
    assert_eq!(sent, [60, 120, 180, 240, 300, 360, 420, 480, 540, 600]);
    // None while the link is down.
    rig.gate.link_down(rig.now);
    rig.at(1_000_000);
    rig.gate.tick(rig.now);
    assert_eq!(count(&mut rig), 0);
}

#[test]
fn events_raised_offline_are_sent_in_order_on_reconnect() {
    let mut rig = Rig::new();
    rig.gate.door_contact(false, rig.now);
    let now = rig.advance(10);
    rig.gate.tamper(true, now);
    let now = rig.advance(10);
    rig.gate.card_read(card(3), now);
    assert_eq!(
        rig.drain().0.len(),
        0,
        "nothing goes out while the link is down"
    );
    let now = rig.advance(10);
    rig.gate.link_up(now);
    let (msgs, _) = rig.drain();
    let kinds: Vec<&str> = msgs
        .iter()
        .map(|m| match m {
            Message::DoorEvent(_) => "door",
            Message::Tamper(_) => "tamper",
            Message::Heartbeat(_) => "heartbeat",
            Message::AllowListRequest(_) => "allow-list",
            Message::OfflineBatch(_) => "batch",
            other => panic!("{other:?}"),
        })
        .collect();
    // The hub's replay window accepted every one (checked in Hub::receive).
    assert_eq!(
        kinds,
        ["door", "tamper", "heartbeat", "allow-list", "batch"]
    );
}

#[test]
fn full_allow_list_in_chunks_then_incremental_deltas() {
    let mut rig = Rig::new();
    rig.gate.link_up(rig.now);
    let (seq, have) = find_allow_list_request(&rig.drain().0);
    assert_eq!(have, 0);
    let cards: Vec<CardId> = (0..45u8).map(card).collect();
    let entries: Vec<EntryHash> = cards.iter().map(entry).collect();
    rig.deliver(Message::AllowListDelta(delta(
        seq,
        0,
        5,
        true,
        &entries[..MAX_DELTA_ENTRIES],
        &[],
        true,
    )))
    .unwrap();
    assert_eq!(
        rig.gate.allow_list().version(),
        0,
        "not adopted mid-transfer"
    );
    assert_eq!(rig.gate.allow_list().len(), 30);
    rig.deliver(Message::AllowListDelta(delta(
        seq,
        0,
        5,
        true,
        &entries[MAX_DELTA_ENTRIES..],
        &[],
        false,
    )))
    .unwrap();
    assert_eq!(rig.gate.allow_list().version(), 5);
    assert_eq!(rig.gate.allow_list().len(), 45);
    // The transfer is over: a replayed chunk is not applied.
    assert!(matches!(
        rig.deliver(Message::AllowListDelta(delta(
            seq,
            0,
            5,
            true,
            &[],
            &[],
            false
        ))),
        Err(RxError::Unmatched { .. })
    ));

    // Refresh: an incremental delta 5 -> 6 removing card 0 and adding card 100.
    rig.at(600_000);
    rig.gate.tick(rig.now);
    let (seq, have) = find_allow_list_request(&rig.drain().0);
    assert_eq!(have, 5);
    rig.deliver(Message::AllowListDelta(delta(
        seq,
        5,
        6,
        false,
        &[entry(&card(100))],
        &[entry(&card(0))],
        false,
    )))
    .unwrap();
    assert_eq!(rig.gate.allow_list().version(), 6);
    assert!(!rig.gate.allow_list().contains(&entry(&card(0))));
    assert!(rig.gate.allow_list().contains(&entry(&card(100))));
    assert_eq!(rig.gate.allow_list().len(), 45);

    // Offline decisions use it.
    rig.gate.link_down(rig.now);
    rig.gate.card_read(card(100), rig.now);
    rig.gate.card_read(card(0), rig.now);
    let reasons: Vec<_> = decided(&rig.drain().1).iter().map(|d| d.reason).collect();
    assert_eq!(
        reasons,
        [Some(Reason::OfflineGranted), Some(Reason::OfflineDenied)]
    );

    // The heartbeat reports the version.
    rig.gate.link_up(rig.now);
    let (msgs, _) = rig.drain();
    assert!(matches!(msgs[0], Message::Heartbeat(h) if h.allowlist_version == 6));
}

#[test]
fn delta_from_another_version_is_ignored_and_a_full_list_requested() {
    let mut rig = Rig::online_with(&[card(1)]);
    rig.at(600_000);
    rig.gate.tick(rig.now);
    let (seq, have) = find_allow_list_request(&rig.drain().0);
    assert_eq!(have, 1);
    let stale = delta(
        seq,
        3,
        4,
        false,
        &[entry(&card(2))],
        &[entry(&card(1))],
        false,
    );
    assert_eq!(
        rig.deliver(Message::AllowListDelta(stale)),
        Err(RxError::StaleDelta {
            from_version: 3,
            have_version: 1
        })
    );
    assert_eq!(rig.gate.allow_list().version(), 1);
    assert!(
        rig.gate.allow_list().contains(&entry(&card(1))),
        "not applied"
    );
    let (full_seq, have) = find_allow_list_request(&rig.drain().0);
    assert_eq!(have, 0, "asks for the full list");
    assert!(full_seq > seq);
    // Later chunks answering the old request are ignored.
    assert!(matches!(
        rig.deliver(Message::AllowListDelta(delta(
            seq,
            3,
            4,
            false,
            &[],
            &[],
            false
        ))),
        Err(RxError::Unmatched { .. })
    ));
    rig.deliver(Message::AllowListDelta(delta(
        full_seq,
        0,
        4,
        true,
        &[entry(&card(2))],
        &[],
        false,
    )))
    .unwrap();
    assert_eq!(rig.gate.allow_list().version(), 4);
    assert_eq!(rig.gate.allow_list().len(), 1);
    assert!(rig.gate.allow_list().contains(&entry(&card(2))));
}

#[test]
fn a_transfer_cut_short_leaves_version_zero() {
    let mut rig = Rig::online_with(&[card(1)]);
    rig.at(600_000);
    rig.gate.tick(rig.now);
    let (seq, _) = find_allow_list_request(&rig.drain().0);
    rig.deliver(Message::AllowListDelta(delta(
        seq,
        1,
        2,
        false,
        &[entry(&card(2))],
        &[],
        true,
    )))
    .unwrap();
    // A chunk of another transfer under the same seq breaks it off.
    assert_eq!(
        rig.deliver(Message::AllowListDelta(delta(
            seq,
            1,
            3,
            false,
            &[],
            &[],
            false
        ))),
        Err(RxError::InconsistentDelta)
    );
    assert_eq!(rig.gate.allow_list().version(), 0);
    assert_eq!(find_allow_list_request(&rig.drain().0).1, 0);
    // Same when the link drops mid-transfer: the next request asks for everything.
    rig.gate.link_down(rig.now);
    rig.gate.link_up(rig.now);
    assert_eq!(find_allow_list_request(&rig.drain().0).1, 0);
}

#[test]
fn sequence_numbers_resume_and_never_go_back() {
    let mut rig = Rig::new();
    rig.gate.resume(1_000);
    rig.gate.link_up(rig.now);
    let (msgs, _) = rig.drain();
    assert_eq!(msgs[0].seq(), 1_001);
    rig.gate.resume(5);
    assert_eq!(rig.gate.seq(), 1_002);
}

#[test]
fn hostile_bytes_never_panic() {
    let mut rig = Rig::online_with(&[]);
    let seq = rig.read(card(1));
    let good = sealed(decision(seq, Reason::Granted, 1));
    // Every truncation, every single-byte corruption, and some noise.
    for n in 0..good.len() {
        assert!(rig.gate.frame_received(&good[..n], rig.now).is_err());
    }
    for i in 0..good.len() {
        for bit in 0..8 {
            let mut bad = good.clone();
            bad[i] ^= 1 << bit;
            assert!(
                rig.gate.frame_received(&bad, rig.now).is_err(),
                "byte {i} bit {bit}"
            );
        }
    }
    let mut x: u32 = 0x1234_5678;
    for _ in 0..2_000 {
        let len = (x % 64) as usize;
        let noise: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let _ = rig.gate.frame_received(&noise, rig.now);
    }
    assert!(rig.gate.is_waiting(), "none of it was taken as an answer");
    rig.gate.frame_received(&good, rig.now).unwrap();
}

#[test]
fn offline_log_overflow_keeps_the_newest() {
    let config = GateConfig::new(GATE, KEY, CARD_KEY, ALLOW_KEY);
    let mut gate: GateCore<HmacEntryScheme, 16, 4> =
        GateCore::with_scheme(config, HmacEntryScheme::new(CARD_KEY, ALLOW_KEY));
    let now = Now::new(0, 0);
    for i in 0..6u8 {
        gate.card_read(card(i), now);
    }
    while gate.poll_output().is_some() {}
    let seqs: Vec<u32> = gate.offline_log().iter().map(|e| e.gate_seq).collect();
    assert_eq!(seqs, [3, 4, 5, 6]);
    assert_eq!(gate.offline_log().dropped(), 2);
}

#[test]
fn a_restored_allow_list_decides_offline_at_boot_and_syncs_as_a_delta() {
    // The list a gate held before a reboot, as it would keep it in flash.
    let before = Rig::online_with(&[card(1), card(2)]);
    let saved: Vec<EntryHash> = before.gate.allow_list().iter().copied().collect();
    let version = before.gate.allow_list().version();

    let mut rig = Rig::new();
    rig.gate.restore_allow_list(version, &saved);
    assert_eq!(rig.gate.allow_list().version(), version);
    // Hub unreachable at boot: the restored list decides.
    rig.gate.card_read(card(1), rig.now);
    rig.gate.card_read(card(3), rig.now);
    let (_, local) = rig.drain();
    let reasons: Vec<_> = decided(&local).iter().map(|d| d.reason).collect();
    assert_eq!(
        reasons,
        [Some(Reason::OfflineGranted), Some(Reason::OfflineDenied)]
    );
    // Link up: the gate asks for what changed since the version it restored.
    rig.gate.link_up(rig.now);
    let (msgs, _) = rig.drain();
    assert_eq!(find_allow_list_request(&msgs).1, version);
}

#[test]
fn a_restored_allow_list_that_does_not_fit_asks_for_a_full_list() {
    let mut rig = Rig::new();
    let too_many: Vec<EntryHash> = (0..=rig.gate.allow_list().capacity())
        .map(|i| {
            EntryHash([
                (i % 251) as u8,
                (i / 251) as u8,
                1,
                2,
                3,
                4,
                5,
                6,
                7,
                8,
                9,
                10,
                11,
                12,
                13,
                14,
            ])
        })
        .collect();
    rig.gate.restore_allow_list(9, &too_many);
    assert_eq!(rig.gate.allow_list().version(), 0);
    rig.gate.link_up(rig.now);
    let (msgs, _) = rig.drain();
    assert_eq!(find_allow_list_request(&msgs).1, 0);
}

fn remote_open(seq: u32, relay_ms: u16) -> Message {
    Message::RemoteOpen(RemoteOpen { seq, relay_ms })
}

#[test]
fn a_sealed_remote_open_pulses_the_relay_once_and_a_replay_is_refused() {
    let mut rig = Rig::online_with(&[]);
    rig.drain();
    let frame = sealed(remote_open(40, 2500));
    rig.gate.frame_received(&frame, rig.now).unwrap();
    let (msgs, local) = rig.drain();
    assert!(msgs.is_empty(), "nothing is sent back: {msgs:?}");
    assert_eq!(relays(&local), [2500]);
    assert_eq!(rig.gate.stats().remote_opens, 1);
    assert_eq!(rig.gate.command_seq(), Some(40));

    // The door opens within the pulse: an authorised opening, reported as usual.
    let now = rig.advance(500);
    rig.gate.door_contact(false, now);
    assert_eq!(door_events(&rig.drain().0), [DoorEventKind::Opened]);
    let now = rig.advance(500);
    rig.gate.door_contact(true, now);
    rig.drain();

    // The same frame again, and an older number: refused, no pulse.
    assert_eq!(
        rig.gate.frame_received(&frame, rig.now),
        Err(RxError::Replayed {
            seq: 40,
            highest: 40
        })
    );
    assert_eq!(
        rig.deliver(remote_open(39, 2500)),
        Err(RxError::Replayed {
            seq: 39,
            highest: 40
        })
    );
    assert!(relays(&rig.drain().1).is_empty());
    assert_eq!(rig.gate.stats().replayed, 2);
    assert_eq!(rig.gate.stats().remote_opens, 1);

    // A forged one (another key) does not even reach the counter check.
    let forged = sealed_with(&[0x99; 32], GATE, remote_open(41, 2500));
    assert_eq!(
        rig.gate.frame_received(&forged, rig.now),
        Err(RxError::BadTag)
    );
    // The next number is accepted; 0 means the gate's own relay time.
    rig.deliver(remote_open(41, 0)).unwrap();
    assert_eq!(relays(&rig.drain().1), [rig.gate.config().relay_ms]);
}

#[test]
fn the_command_counter_survives_a_reboot_through_the_board() {
    let mut rig = Rig::new();
    assert_eq!(rig.gate.command_seq(), None);
    rig.gate.resume_commands(100);
    rig.gate.resume_commands(50); // never goes back
    assert_eq!(rig.gate.command_seq(), Some(100));
    assert!(matches!(
        rig.deliver(remote_open(100, 1000)),
        Err(RxError::Replayed { .. })
    ));
    // Commands are acted on with the link down too (they came over it just now).
    rig.deliver(remote_open(101, 1000)).unwrap();
    assert_eq!(relays(&rig.drain().1), [1000]);
}
