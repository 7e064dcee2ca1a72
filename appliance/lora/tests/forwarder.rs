//! The forwarder end to end: a real mosquitto provisioned like the hub's embedded broker
//! (the hub's account and the forwarder's, ACL `lora/#`), the simulated air with a node
//! on it, the forwarder on a `SimRadio`, and a test client in the hub's place.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use gatehouse_broker::{Account, BrokerConfig, BrokerFiles, Mosquitto, Provisioning, Topics};
use gatehouse_lora::messages::{TxStatus, Uplink, DOWN_TOPIC, TX_TOPIC, UP_TOPIC};
use gatehouse_lora::tx_log::{self, TxLogLine};
use gatehouse_lora::{Forwarder, ForwarderOptions, SimRadio};
use gatehouse_lora_proto::air::{Air, AirClient, AirConfig, AirHandle};
use gatehouse_lora_proto::link::RX1_DELAY_US;
use gatehouse_lora_proto::{Modulation, SubBand};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeReasonCode};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Upper bound of every wait (never reached when things work).
const WAIT: Duration = Duration::from_secs(30);
const HUB_USER: &str = "gatehouse-hub";
const HUB_PW: &str = "hub-password";
const FWD_USER: &str = "lora-forwarder";
const FWD_PW: &str = "forwarder-password";
const FREQ: u32 = 868_100_000;
const SF: u8 = 7;
const BW: u32 = 125_000;

struct Site {
    _dir: tempfile::TempDir,
    _broker: Mosquitto,
    air: AirHandle,
    tx_log: PathBuf,
    hub: HubClient,
    stop: watch::Sender<bool>,
    forwarder: tokio::task::JoinHandle<Result<(), gatehouse_lora::LoraError>>,
}

/// The hub's side of the topics.
struct HubClient {
    client: AsyncClient,
    up: mpsc::UnboundedReceiver<Uplink>,
    tx: mpsc::UnboundedReceiver<TxStatus>,
}

impl HubClient {
    async fn connect(port: u16) -> HubClient {
        let mut options = MqttOptions::new("test-hub", "127.0.0.1", port);
        options
            .set_credentials(HUB_USER, HUB_PW)
            .set_keep_alive(Duration::from_secs(5));
        let (client, mut eventloop) = AsyncClient::new(options, 256);
        let (up_tx, up) = mpsc::unbounded_channel();
        let (tx_tx, tx) = mpsc::unbounded_channel();
        let (sub_tx, mut sub_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == UP_TOPIC => {
                        let _ = up_tx.send(serde_json::from_slice(&p.payload).unwrap());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == TX_TOPIC => {
                        let _ = tx_tx.send(serde_json::from_slice(&p.payload).unwrap());
                    }
                    Ok(Event::Incoming(Packet::SubAck(a))) => {
                        let _ = sub_tx.send(a.return_codes);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        for topic in [UP_TOPIC, TX_TOPIC] {
            client.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
            let codes = tokio::time::timeout(WAIT, sub_rx.recv())
                .await
                .unwrap()
                .unwrap();
            assert!(!codes.contains(&SubscribeReasonCode::Failure), "{topic}");
        }
        HubClient { client, up, tx }
    }

    async fn down(&self, body: serde_json::Value) {
        self.client
            .publish(
                DOWN_TOPIC,
                QoS::AtLeastOnce,
                false,
                serde_json::to_vec(&body).unwrap(),
            )
            .await
            .unwrap();
    }

    async fn next_up(&mut self) -> Uplink {
        tokio::time::timeout(WAIT, self.up.recv())
            .await
            .unwrap()
            .unwrap()
    }

    async fn next_tx(&mut self) -> TxStatus {
        tokio::time::timeout(WAIT, self.tx.recv())
            .await
            .unwrap()
            .unwrap()
    }
}

async fn site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let mut provisioning =
        Provisioning::new(Account::new(HUB_USER, HUB_PW), Topics::default()).unwrap();
    provisioning
        .set_lora_forwarder(Account::new(FWD_USER, FWD_PW))
        .unwrap();
    let files = BrokerFiles::new(dir.path().join("broker"));
    let broker = Mosquitto::start(files, &provisioning, &BrokerConfig::loopback(0)).unwrap();
    let port = broker.port();
    let air = Air::start(AirConfig::default()).unwrap();
    let air_addr = air.addr();
    let radio = tokio::task::spawn_blocking(move || SimRadio::connect(air_addr, FREQ, SF, BW))
        .await
        .unwrap()
        .unwrap();
    let tx_log = dir.path().join(tx_log::TX_LOG_FILE);
    let options = ForwarderOptions {
        host: "127.0.0.1".into(),
        port,
        username: FWD_USER.into(),
        password: FWD_PW.into(),
        tx_log: tx_log.clone(),
    };
    let forwarder = Forwarder::connect(radio, &options).await.unwrap();
    let (stop, stop_rx) = watch::channel(false);
    let forwarder = tokio::spawn(forwarder.run(stop_rx));
    let hub = HubClient::connect(port).await;
    Site {
        _dir: dir,
        _broker: broker,
        air,
        tx_log,
        hub,
        stop,
        forwarder,
    }
}

impl Site {
    async fn node(&self, freq: u32, sf: u8) -> AirClient {
        let addr = self.air.addr();
        tokio::task::spawn_blocking(move || AirClient::connect(addr, freq, sf))
            .await
            .unwrap()
            .unwrap()
    }

    async fn shutdown(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(WAIT, self.forwarder)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

/// Receives on `node` in a blocking task.
async fn hear(node: AirClient) -> (AirClient, gatehouse_lora_proto::air::RxPacket) {
    tokio::task::spawn_blocking(move || {
        let p = node.recv_timeout(WAIT).unwrap().expect("nothing heard");
        (node, p)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn uplink_published_and_downlink_sent_at_tx_us() {
    let mut site = site().await;
    let node = site.node(FREQ, SF).await;
    let frame = [
        0x10u8, 0, 0, 0, 7, 0, 0, 0, 1, 0xAA, 0xBB, 1, 2, 3, 4, 5, 6, 7, 8,
    ];
    let airtime = Modulation::lora(SF, BW).airtime_us(frame.len());
    // Asked to start a little ahead, so the air starts it exactly then.
    let start = node.now_us() + 100_000;
    node.send_at(start, FREQ, SF, &frame, airtime).unwrap();

    let up = site.hub.next_up().await;
    assert_eq!(B64.decode(&up.frame).unwrap(), frame);
    assert_eq!((up.freq_hz, up.sf, up.bw_hz), (FREQ, SF, BW));
    // rx_us is the air's end of the transmission: the node's clock and the forwarder's
    // are the air's.
    assert_eq!(up.rx_us, start + u64::from(airtime));
    // The air's RSSI: -60 to -110 dBm by the sender's address, then ±2 dB of jitter.
    assert!((-112..=-58).contains(&up.rssi), "{}", up.rssi);
    assert!((-10.0..=13.0).contains(&up.snr), "{}", up.snr);
    time::OffsetDateTime::parse(&up.rx_at, &time::format_description::well_known::Rfc3339).unwrap();

    // The hub's ACK, in the node's receive window.
    let ack = [0x41u8, 0, 0, 0, 7, 0, 0, 0, 1, 9, 9, 9, 9, 9, 9, 9, 9, 9];
    let tx_us = up.rx_us + RX1_DELAY_US;
    let ack_airtime = Modulation::lora(SF, BW).airtime_us(ack.len());
    site.hub
        .down(serde_json::json!({
            "frame": B64.encode(ack), "freq_hz": FREQ, "sf": SF, "bw_hz": BW,
            "tx_us": tx_us, "priority": "alarm", "id": "ack-1"
        }))
        .await;
    let (_node, heard) = hear(node).await;
    assert_eq!(heard.bytes, ack);
    assert_eq!(heard.end_us, tx_us + u64::from(ack_airtime));
    let st = site.hub.next_tx().await;
    assert_eq!(
        st,
        TxStatus {
            id: "ack-1".into(),
            status: gatehouse_lora::messages::Status::Sent,
            airtime_us: ack_airtime
        }
    );
    assert_eq!(
        tx_log::read(&site.tx_log).unwrap(),
        [TxLogLine {
            at_us: tx_us,
            freq_hz: FREQ,
            sf: SF,
            bw_hz: BW,
            airtime_us: ack_airtime,
            sub_band: "868.0-868.6".into(),
            priority: "alarm".into(),
            id: "ack-1".into(),
        }]
    );
    site.shutdown().await;
}

#[tokio::test]
async fn downlink_over_the_duty_cycle_is_refused_and_never_sent() {
    let mut site = site().await;
    // 868.9 MHz lies in 868.7-869.2, a 0.1 % band: 3.6 s per hour, 2.88 s for normal
    // traffic. SF12 frames of 40 bytes take about 1.97 s each: one fits, two do not.
    const F: u32 = 868_900_000;
    let node = site.node(F, 12).await;
    let airtime = Modulation::lora(12, BW).airtime_us(40);
    assert!(u64::from(airtime) * 2 > SubBand::G868_7.budget_us());
    let t0 = node.now_us() + 500_000;
    let down = |id: &str, tx_us: u64| {
        serde_json::json!({
            "frame": B64.encode([0x41u8; 40]), "freq_hz": F, "sf": 12, "bw_hz": BW,
            "tx_us": tx_us, "priority": "normal", "id": id
        })
    };
    site.hub.down(down("first", t0)).await;
    let st = site.hub.next_tx().await;
    assert_eq!((st.id.as_str(), st.status.as_str()), ("first", "sent"));
    site.hub
        .down(down("second", t0 + u64::from(airtime) + 500_000))
        .await;
    let st = site.hub.next_tx().await;
    assert_eq!(
        (st.id.as_str(), st.status.as_str()),
        ("second", "duty_cycle")
    );
    assert_eq!(st.airtime_us, airtime);
    // Even an alarm does not fit the rest of the hour.
    site.hub
        .down(serde_json::json!({
            "frame": B64.encode([0x41u8; 40]), "freq_hz": F, "sf": 12, "bw_hz": BW,
            "tx_us": t0 + 2 * u64::from(airtime) + 500_000, "priority": "alarm", "id": "third"
        }))
        .await;
    let st = site.hub.next_tx().await;
    assert_eq!(
        (st.id.as_str(), st.status.as_str()),
        ("third", "duty_cycle")
    );

    let log = tx_log::read(&site.tx_log).unwrap();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!((log[0].id.as_str(), log[0].at_us), ("first", t0));
    assert_eq!(log[0].sub_band, SubBand::G868_7.as_str());
    let hourly = tx_log::max_hourly_airtime_us(&log);
    assert!(hourly[SubBand::G868_7.as_str()] <= SubBand::G868_7.budget_us());
    // The node heard exactly the one transmission.
    let (_node, p) = hear(node).await;
    assert_eq!(p.end_us, t0 + u64::from(airtime));
    assert_eq!(site.air.stats().transmissions, 1);
    site.shutdown().await;
}

#[tokio::test]
async fn late_and_malformed_downlinks_are_answered_not_sent() {
    let mut site = site().await;
    let node = site.node(FREQ, SF).await;
    // Its time has passed (the air's clock is well past 0 by now).
    site.hub
        .down(serde_json::json!({
            "frame": B64.encode([1u8, 2, 3]), "freq_hz": FREQ, "sf": SF, "bw_hz": BW,
            "tx_us": node.now_us().saturating_sub(1), "priority": "alarm", "id": "late"
        }))
        .await;
    let st = site.hub.next_tx().await;
    assert_eq!((st.id.as_str(), st.status.as_str()), ("late", "too_late"));
    // Not JSON of a downlink, but with an id.
    site.hub
        .down(serde_json::json!({"id": "bad", "frame": 5}))
        .await;
    let st = site.hub.next_tx().await;
    assert_eq!((st.id.as_str(), st.status.as_str()), ("bad", "invalid"));
    // A frequency outside EU868's sub-bands.
    site.hub
        .down(serde_json::json!({
            "frame": B64.encode([1u8, 2, 3]), "freq_hz": 915_000_000u32, "sf": SF, "bw_hz": BW,
            "tx_us": node.now_us() + 2_000_000, "priority": "normal", "id": "us915"
        }))
        .await;
    let st = site.hub.next_tx().await;
    assert_eq!((st.id.as_str(), st.status.as_str()), ("us915", "invalid"));
    assert!(tx_log::read(&site.tx_log).unwrap().is_empty());
    assert_eq!(site.air.stats().transmissions, 0);
    site.shutdown().await;
}

#[tokio::test]
async fn wrong_password_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut provisioning =
        Provisioning::new(Account::new(HUB_USER, HUB_PW), Topics::default()).unwrap();
    provisioning
        .set_lora_forwarder(Account::new(FWD_USER, FWD_PW))
        .unwrap();
    let broker = Mosquitto::start(
        BrokerFiles::new(dir.path().join("broker")),
        &provisioning,
        &BrokerConfig::loopback(0),
    )
    .unwrap();
    let air = Air::start(AirConfig::default()).unwrap();
    let addr = air.addr();
    let radio = tokio::task::spawn_blocking(move || SimRadio::connect(addr, FREQ, SF, BW))
        .await
        .unwrap()
        .unwrap();
    let options = ForwarderOptions {
        host: "127.0.0.1".into(),
        port: broker.port(),
        username: FWD_USER.into(),
        password: "wrong".into(),
        tx_log: dir.path().join("tx.log"),
    };
    let e = Forwarder::connect(radio, &options).await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains(FWD_USER) && text.contains(&broker.port().to_string()),
        "{text}"
    );
}
