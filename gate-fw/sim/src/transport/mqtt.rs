//! MQTT through the site's broker with rumqttc: each gate is its own client, logging in
//! with its own credentials (`mqtt_username`, `mqtt_password` of the gates file, or
//! `--mqtt-password`), publishing its sealed frames (one frame per payload, QoS 0 as the hub answers: the gate link has its own timeouts
//! and retries) to the
//! request topic (`access/request`) and subscribing to its answer topic
//! (`access/response/<gate_id>`). The link is up from the subscription's acknowledgement
//! until the connection fails; rumqttc reconnects on the next poll.

use super::{LinkEvent, RECONNECT};
use crate::args::SimConfig;
use crate::gates_file::GateSpec;
use rumqttc::{AsyncClient, Event, MqttOptions, NetworkOptions, Packet, QoS, SubscribeReasonCode};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// Client requests buffered between the gate and rumqttc's event loop.
const CLIENT_CAP: usize = 64;

/// The answer topic of `gate_id`.
pub fn response_topic(template: &str, gate_id: u32) -> String {
    template.replace("{gate_id}", &gate_id.to_string())
}

pub async fn run(
    config: Arc<SimConfig>,
    gate: GateSpec,
    mut out: UnboundedReceiver<Vec<u8>>,
    events: UnboundedSender<LinkEvent>,
) {
    let (host, port) = match config.hub.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.parse::<u16>().unwrap_or(1883)),
        None => (config.hub.clone(), 1883),
    };
    let client_id = format!("gate-sim-{}-{}", gate.id, std::process::id());
    let mut options = MqttOptions::new(client_id, host, port);
    options.set_keep_alive(Duration::from_secs(5));
    options.set_clean_session(true);
    options.set_credentials(
        gate.mqtt_username.clone(),
        gate.mqtt_password.clone().unwrap_or_default(),
    );
    let (client, mut eventloop) = AsyncClient::new(options, CLIENT_CAP);
    // Like a gate's own stack: small frames leave at once (no Nagle).
    let mut net = NetworkOptions::new();
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);
    let answers = response_topic(&config.mqtt_response_topic, gate.id);
    let mut up = false;
    loop {
        tokio::select! {
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    if client.try_subscribe(answers.clone(), QoS::AtLeastOnce).is_err()
                        && events.send(LinkEvent::MqttRefused).is_err()
                    {
                        return;
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    let ok = ack
                        .return_codes
                        .iter()
                        .all(|c| !matches!(c, SubscribeReasonCode::Failure));
                    let event = if ok { LinkEvent::Up } else { LinkEvent::MqttRefused };
                    if ok {
                        up = true;
                        while out.try_recv().is_ok() {}
                    }
                    if events.send(event).is_err() {
                        return;
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == answers => {
                    if events.send(LinkEvent::Frame(p.payload.to_vec())).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let refused = matches!(e, rumqttc::ConnectionError::ConnectionRefused(_));
                    let _ = events.send(if refused { LinkEvent::MqttRefused } else { LinkEvent::IoError });
                    if up {
                        up = false;
                        if events.send(LinkEvent::Down).is_err() {
                            return;
                        }
                    }
                    tokio::time::sleep(RECONNECT).await;
                }
            },
            frame = out.recv() => match frame {
                Some(bytes) => {
                    if client
                        .try_publish(config.mqtt_request_topic.clone(), QoS::AtMostOnce, false, bytes)
                        .is_err()
                        && events.send(LinkEvent::IoError).is_err()
                    {
                        return;
                    }
                }
                None => {
                    let _ = client.try_disconnect();
                    return;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn response_topic_per_gate() {
        assert_eq!(
            super::response_topic("access/response/{gate_id}", 12),
            "access/response/12"
        );
    }
}
