//! lora-sim against the real simulated air and a minimal network server in the test (a
//! stand-in for forwarder + hub with the same rules: open with the node's key, counters
//! must rise, ACK every alarm copy at end of reception + RX1_DELAY_US on the uplink's
//! channel): every alarm is acknowledged, replayed and forged frames are told apart, and
//! a silenced node stops sending once it has been heard. (Replays and forgeries are sent apart from each other,
//! after the load: two at the same moment would only collide.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_lora_proto::air::{Air, AirClient, AirConfig};
use gatehouse_lora_proto::link::RX1_DELAY_US;
use gatehouse_lora_proto::{
    open, peek, seal, Dir, Downlink, Frame, FrameError, Key, Modulation, Payload, MAX_FRAME_LEN,
};
use lora_sim::{Args, SimConfig};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const FREQ: u32 = 868_100_000;

#[derive(Debug, Default)]
#[allow(dead_code)]
struct Seen {
    accepted: u64,
    alarms: u64,
    replayed: u64,
    forged: u64,
    last_heard: HashMap<u32, std::time::Instant>,
}

fn gateway(
    air: std::net::SocketAddr,
    keys: HashMap<u32, [u8; 16]>,
    bw_hz: u32,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
) {
    let radio = AirClient::connect(air, FREQ, 7).unwrap();
    let modulation = Modulation::lora(7, bw_hz);
    let mut last_up: HashMap<u32, u32> = HashMap::new();
    let mut down: HashMap<u32, u32> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let Some(p) = radio.recv_timeout(Duration::from_millis(50)).unwrap() else {
            continue;
        };
        let Ok(h) = peek(&p.bytes) else { continue };
        let Some(key) = keys.get(&h.dev_addr.0) else {
            continue;
        };
        let mut s = seen.lock().unwrap();
        let frame = match open(&p.bytes, &Key(*key), Dir::Up) {
            Ok(f) => f,
            Err(FrameError::BadMic) => {
                s.forged += 1;
                continue;
            }
            Err(e) => panic!("{e}"),
        };
        if last_up.get(&h.dev_addr.0).is_some_and(|l| frame.fcnt <= *l) {
            s.replayed += 1;
            continue;
        }
        last_up.insert(h.dev_addr.0, frame.fcnt);
        s.accepted += 1;
        s.last_heard.insert(h.dev_addr.0, std::time::Instant::now());
        if let Payload::Alarm(_) = frame.payload {
            s.alarms += 1;
            let n = down.entry(h.dev_addr.0).or_insert(0);
            *n += 1;
            let ack = Frame::new(h.dev_addr, *n, Payload::Downlink(Downlink::ack(frame.fcnt)));
            let mut buf = [0u8; MAX_FRAME_LEN];
            let len = seal(&ack, &Key(*key), Dir::Down, &mut buf).unwrap();
            radio
                .send_at(
                    p.end_us + RX1_DELAY_US,
                    FREQ,
                    7,
                    &buf[..len],
                    modulation.airtime_us(len),
                )
                .unwrap();
        }
    }
}

/// Runs `nodes` nodes (named n0, n1, ...; kinds round robin; heartbeat `heartbeat_s`) on
/// an air with 10 % loss against the test's gateway, with lora-sim arguments `args`.
fn run_case(
    nodes: u32,
    heartbeat_s: u32,
    bw_hz: u32,
    args: &[&str],
) -> (lora_sim::Summary, Seen, gatehouse_lora_proto::air::AirStats) {
    let dir = tempfile::tempdir().unwrap();
    let air = Air::start(AirConfig {
        loss: 0.1,
        seed: 5,
        ..AirConfig::default()
    })
    .unwrap();
    let mut text = String::new();
    let mut keys = HashMap::new();
    for i in 0..nodes {
        let key: [u8; 16] = core::array::from_fn(|b| (b as u8).wrapping_mul(7) ^ i as u8);
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        let kind = ["door", "pir", "smoke", "temp"][i as usize % 4];
        text.push_str(&format!(
            "[[sensor]]\nname = \"n{i}\"\nkind = \"{kind}\"\ndev_addr = \"{:08x}\"\nkey = \"{hex}\"\n\
             frequency_hz = {FREQ}\nspreading_factor = 7\nbandwidth_hz = {bw_hz}\nheartbeat_s = {heartbeat_s}\n\n",
            0x2600_0000 + i
        ));
        keys.insert(0x2600_0000 + i, key);
    }
    let sensors = dir.path().join("sensors.toml");
    std::fs::write(&sensors, text).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let gw = {
        let (addr, stop, seen) = (air.addr(), Arc::clone(&stop), Arc::clone(&seen));
        std::thread::spawn(move || gateway(addr, keys, bw_hz, stop, seen))
    };
    let air_addr = air.addr().to_string();
    let mut argv = vec![
        "lora-sim",
        "--sensors",
        sensors.to_str().unwrap(),
        "--air",
        &air_addr,
    ];
    argv.extend_from_slice(args);
    let summary =
        lora_sim::run(SimConfig::from_args(Args::try_parse_from_strs(&argv)).unwrap()).unwrap();
    stop.store(true, Ordering::Relaxed);
    gw.join().unwrap();
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    println!("{summary}");
    println!(
        "gateway: accepted {} (alarm frames {}), replayed {}, forged {}; air: {:?}",
        seen.accepted,
        seen.alarms,
        seen.replayed,
        seen.forged,
        air.stats()
    );
    (summary, seen, air.stats())
}

#[test]
fn alarms_acked_replays_and_forgeries_told_apart_silenced_node_stops() {
    let (summary, s, _) = run_case(
        20,
        20,
        125_000,
        &[
            "--duration",
            "8",
            "--drain",
            "90",
            "--alarm-every",
            "12",
            "--alarm-hold",
            "1",
            "--alarm-backoff-ms",
            "1000",
            "--alarm-backoff-max-ms",
            "8000",
            "--start-spread",
            "6",
            "--silence",
            "n3@0.5",
            "--replay",
            "n5@9",
            "--replay",
            "n6@9.6",
            "--replay",
            "n9@10.2",
            "--forge",
            "n7@9.3",
            "--forge",
            "n8@9.9",
            "--forge",
            "n10@10.5",
        ],
    );
    let t = &summary.totals;
    assert!(t.alarms_sent > 5, "{summary}");
    assert_eq!(t.alarms_gave_up, 0, "{summary}");
    assert_eq!(t.alarms_pending, 0, "{summary}");
    assert_eq!(
        t.alarms_acked + t.alarms_cut_off,
        t.alarms_sent,
        "{summary}"
    );
    assert!(s.alarms >= t.alarms_sent && s.alarms <= t.alarm_frames);
    assert_eq!((t.replays, t.forgeries), (3, 3));
    assert!(
        (1..=3).contains(&s.replayed) && (1..=3).contains(&s.forged),
        "{s:?}"
    );
    assert!(s.accepted <= t.frames);
    // n3 pressed its panic button at boot, and stopped once that was acknowledged.
    let n3 = &summary.per_node["n3"];
    assert!(n3.silenced_after_ms.is_some(), "{n3:?}");
    assert_eq!(n3.alarm_ids_acked.len(), 1, "{n3:?}");
    assert!(n3.frames <= n3.alarm_frames + 2, "{n3:?}");
}

/// `Args::try_parse_from` for a slice of &str.
trait ParseStrs: Sized {
    fn try_parse_from_strs(v: &[&str]) -> Self;
}

impl ParseStrs for Args {
    fn try_parse_from_strs(v: &[&str]) -> Args {
        <Args as clap::Parser>::try_parse_from(v).unwrap()
    }
}
