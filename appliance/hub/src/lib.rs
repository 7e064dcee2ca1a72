//! The hub: Gatehouse's auth broker and HTTP side.
//!
//! - [`admin`]: the admin JSON API under `/api/v1` (sessions, people, cards, levels,
//!   gates, zones, access log, admins), on `hub.http_listen`.
//! - [`access`]: the access service every gate transport calls (decide, log durably,
//!   authenticate gates, replay windows).
//! - [`http`]: the console's landing page, `/healthz`, and the gates' HTTP transport
//!   (`POST /api/v1/access/check`, and `POST /api/v1/gate/frames` for every other
//!   message), on `hub.http_listen`.
//! - [`gate_tcp`]: the gates' raw-TCP transport on `hub.gate_tcp_listen` (off when empty).
//! - [`mqtt`]: the gates' MQTT transport (`[hub.mqtt]`), with the hub's own mosquitto in
//!   embedded mode.
//! - [`gate_frames`]: what the binary transports (TCP, MQTT, HTTP frames) do with one
//!   sealed frame.
//! - [`gate_commands`]: commands the hub starts towards gates (remote door opens) and how
//!   each transport hands them over.
//! - [`allow_list`]: the gates' offline allow-lists and their versioned sync.
//! - [`provisioning`]: what a gate is set up with (ids, keys, addresses), for the CLI and
//!   the admin API.
//! - [`tls`]: the console over HTTPS on `hub.https_listen` (certificate, TLS listener),
//!   and what plain HTTP still serves on a non-loopback `hub.http_listen`.
//! - [`lora`]: the LoRa network server (sensor frames from the forwarder over MQTT,
//!   ACKs back, sensor events, heartbeat supervision), when MQTT is on.
//! - [`events`]: the events pipeline: every event stored with its notifications
//!   (accepted = committed), the event webhook, alert delivery with retries, reminders,
//!   the console's live feed and `/metrics`.
//!
//! [`Hub::bind`] opens the store, binds every listener and (embedded MQTT) starts and
//! provisions mosquitto and subscribes, so tests can bind port 0 and read the bound
//! addresses; [`Hub::run`] serves until the shutdown future completes, then lets
//! connections finish the answers they owe (live feeds end), stops the broker, lets the
//! alert delivery workers finish their attempts in flight, and stops the access-log and
//! event writers.
//! [`serve`] is both in one call, for the `gatehouse` binary.

pub mod access;
pub mod admin;
pub mod allow_list;
pub mod drops;
pub mod events;
pub mod gate_commands;
pub mod gate_frames;
pub mod gate_tcp;
pub mod http;
pub mod lora;
pub mod mqtt;
pub mod provisioning;
pub mod tls;

use access::{AccessError, AccessService};
use axum::routing::get;
use axum::Router;
use gatehouse_config::Config;
use std::future::Future;
use std::net::SocketAddr;
use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    #[error("cannot listen on {addr} ({key}): {source}; choose a free address:port")]
    Bind {
        addr: SocketAddr,
        key: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("invalid hub.timezone_offset: {0}")]
    TimeZone(String),
    #[error("MQTT transport ([hub.mqtt]): {0}")]
    Mqtt(#[from] mqtt::MqttError),
    #[error("events pipeline: {0}")]
    Events(#[from] events::EventsError),
    #[error("LoRa network server: {0}")]
    Lora(#[from] lora::LoraError),
    #[error("console HTTPS (hub.https_listen): {0}")]
    Tls(#[from] tls::TlsError),
}

/// The web console's page and assets ([`console::routes`]).
pub mod console;

/// The hub's routes without the gate transport (the console and health).
pub fn router() -> Router {
    console::routes().route("/healthz", get(|| async { "ok\n" }))
}

/// A hub with its store open and its listeners bound, not yet serving.
#[derive(Debug)]
pub struct Hub {
    access: AccessService,
    admin: admin::AdminApi,
    http: TcpListener,
    http_addr: SocketAddr,
    /// The console's HTTPS listener and certificate (`None`: hub.https_listen is off).
    https: Option<(TcpListener, SocketAddr, tls::ConsoleCert)>,
    plain_http: tls::PlainHttp,
    gate_tcp: Option<(TcpListener, SocketAddr)>,
    mqtt: Option<mqtt::MqttTransport>,
    lora: Option<lora::LoraServer>,
    events: events::EventService,
    delivery: events::delivery::DeliverySettings,
    data_dir: std::path::PathBuf,
    monitor: events::monitor::MonitorSettings,
}

async fn bind(addr: SocketAddr, key: &'static str) -> Result<(TcpListener, SocketAddr), HubError> {
    let err = |source| HubError::Bind { addr, key, source };
    let l = TcpListener::bind(addr).await.map_err(err)?;
    let local = l.local_addr().map_err(err)?;
    Ok((l, local))
}

impl Hub {
    /// Opens the access service in `general.data_dir`, binds `hub.http_listen` and
    /// `hub.gate_tcp_listen`, and starts the MQTT transport (`hub.mqtt`; embedded mode:
    /// returns once the hub is subscribed on its own broker).
    pub async fn bind(config: &Config) -> Result<Hub, HubError> {
        let offset = time::UtcOffset::from_whole_seconds(config.hub.timezone_offset.seconds())
            .map_err(|e| HubError::TimeZone(e.to_string()))?;
        let access = AccessService::open(&config.general.data_dir, offset).await?;
        let events = open_events(config, offset).await?;
        gate_frames::raise_alarms_through(&access, &events, &config.general.data_dir);
        let delivery = events::delivery::DeliverySettings::from_config(&config.hub.alerts)
            .map_err(events::EventsError::Sender)?;
        let mut admin = admin::AdminApi::open(config, access.clone()).await?;
        admin.set_events(events.clone());
        let (http, http_addr) = bind(config.hub.http_listen, "hub.http_listen").await?;
        let https = match config.hub.https_listen {
            Some(addr) => {
                let cert_config = config.clone();
                let (cert, created) = tokio::task::spawn_blocking(move || {
                    tls::ConsoleCert::load_or_create(&cert_config)
                })
                .await
                .map_err(|e| AccessError::Task(e.to_string()))??;
                if created {
                    tracing::info!(path = %cert.path().display(), "console certificate made");
                }
                let (l, a) = bind(addr, "hub.https_listen").await?;
                Some((l, a, cert))
            }
            None => None,
        };
        let plain_http = tls::PlainHttp::for_config(config, https.as_ref().map(|h| h.1));
        let gate_tcp = match config.hub.gate_tcp_listen {
            Some(addr) => Some(bind(addr, "hub.gate_tcp_listen").await?),
            None => None,
        };
        let mqtt = mqtt::MqttTransport::start(config, &access).await?;
        let lora = lora::LoraServer::start(
            config,
            mqtt.as_ref().and_then(|m| m.broker_addr()),
            &events,
            lora::LoraSettings::default(),
        )?;
        admin.set_listening(provisioning::Listening {
            http: Some(http_addr),
            gate_tcp: gate_tcp.as_ref().map(|(_, a)| *a),
            mqtt: mqtt.as_ref().and_then(|m| m.broker_addr()),
        });
        Ok(Hub {
            access,
            admin,
            http,
            http_addr,
            https,
            plain_http,
            gate_tcp,
            mqtt,
            lora,
            events,
            delivery,
            data_dir: config.general.data_dir.clone(),
            monitor: events::monitor::MonitorSettings::from_config(&config.hub.alerts),
        })
    }

    /// Where the console, JSON API and gates' HTTP transport listen.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Where the console listens over HTTPS, if it is on.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https.as_ref().map(|h| h.1)
    }

    /// The console's certificate, if HTTPS is on.
    pub fn console_cert(&self) -> Option<&tls::ConsoleCert> {
        self.https.as_ref().map(|h| &h.2)
    }

    /// What the plain-HTTP listener serves.
    pub fn plain_http(&self) -> &tls::PlainHttp {
        &self.plain_http
    }

    /// Overrides what the plain-HTTP listener serves (tests: a loopback listener that
    /// behaves like one on the LAN).
    pub fn set_plain_http(&mut self, policy: tls::PlainHttp) {
        self.plain_http = policy;
    }

    /// Where the gates' raw-TCP transport listens, if it is on.
    pub fn gate_tcp_addr(&self) -> Option<SocketAddr> {
        self.gate_tcp.as_ref().map(|(_, a)| *a)
    }

    /// The MQTT broker's address: in embedded mode its loopback listener (the port it
    /// picked when `hub.mqtt.listen` had port 0); in external mode the configured broker
    /// if it is an `ip:port`; `None` when MQTT is off.
    pub fn mqtt_addr(&self) -> Option<SocketAddr> {
        self.mqtt.as_ref().and_then(|m| m.broker_addr())
    }

    /// The access service (counters, refresh).
    pub fn access(&self) -> &AccessService {
        &self.access
    }

    /// The events pipeline (submit events, counters).
    pub fn events(&self) -> &events::EventService {
        &self.events
    }

    /// The counters of Frigate messages taken over MQTT (`None` when MQTT is off).
    pub fn frigate_counters(&self) -> Option<std::sync::Arc<events::frigate::FrigateCounters>> {
        self.mqtt.as_ref().map(|m| m.frigate_counters())
    }

    /// The LoRa network server's counters (`None` when MQTT is off).
    pub fn lora_counters(&self) -> Option<std::sync::Arc<lora::LoraCounters>> {
        self.lora.as_ref().map(|l| l.counters())
    }

    /// The admin API (tests set its clock).
    pub fn admin_mut(&mut self) -> &mut admin::AdminApi {
        &mut self.admin
    }

    /// Serves until `shutdown` completes, then drains and stops the access log and the
    /// events pipeline (see the module docs for the order).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), HubError> {
        // Before any task starts, so that a failure here leaves nothing running.
        let https_listener = match self.https {
            Some((listener, addr, cert)) => {
                let config = cert.server_config()?;
                let listener = tls::TlsListener::new(listener, config, tls::HANDSHAKE_TIMEOUT)
                    .map_err(HubError::Serve)?;
                tracing::info!(
                    %addr,
                    "console listening over HTTPS; certificate SHA-256 {}",
                    cert.fingerprint()
                );
                Some(listener)
            }
            None => None,
        };
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stop_tx = std::sync::Arc::new(stop_tx);
        let on_shutdown = stop_tx.clone();
        tokio::spawn(async move {
            shutdown.await;
            let _ = on_shutdown.send(true);
        });
        let refresher = self.access.spawn_refresher(stop_rx.clone());
        let tcp = self.gate_tcp.map(|(listener, addr)| {
            tracing::info!(%addr, "gate TCP transport listening");
            tokio::spawn(gate_tcp::run(
                listener,
                self.access.clone(),
                stop_rx.clone(),
            ))
        });
        let mqtt = self.mqtt.map(|m| {
            tokio::spawn(m.run(self.access.clone(), self.events.clone(), stop_rx.clone()))
        });
        let lora_counters = self.lora.as_ref().map(|l| l.counters());
        let lora = self.lora.map(|l| tokio::spawn(l.run(stop_rx.clone())));
        let delivery = events::delivery::spawn(
            &self.data_dir,
            self.events.clone(),
            self.delivery,
            stop_rx.clone(),
        );
        let repeats = events::repeat::spawn(&self.data_dir, self.events.clone(), stop_rx.clone());
        let monitor = events::monitor::spawn(
            &self.data_dir,
            self.monitor,
            self.events.clone(),
            self.access.clone(),
            stop_rx.clone(),
        );
        let app = router()
            .merge(http::routes(self.access.clone()))
            .merge(events::routes(
                &self.events,
                self.admin.clone(),
                self.access.clone(),
                &self.data_dir,
                stop_rx.clone(),
            ))
            .merge(admin::routes(self.admin));
        // For /metrics (events::metrics).
        let app = match lora_counters {
            Some(c) => app.layer(axum::Extension(c)),
            None => app,
        };
        tracing::info!(addr = %self.http_addr, plain = ?self.plain_http, "hub listening");
        let https = match https_listener {
            Some(listener) => {
                let mut https_stop = stop_rx.clone();
                let stop_all = stop_tx.clone();
                let app = tls::https_app(app.clone());
                Some(async move {
                    use axum::serve::ListenerExt;
                    let served = axum::serve(
                        listener.tap_io(|_| ()),
                        app.into_make_service_with_connect_info::<SocketAddr>(),
                    )
                    .with_graceful_shutdown(async move {
                        stopped(&mut https_stop).await;
                    })
                    .await;
                    let _ = stop_all.send(true);
                    served
                })
            }
            None => None,
        };
        let mut http_stop = stop_rx.clone();
        let plain = axum::serve(
            self.http,
            tls::gates_only(app, self.plain_http)
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            stopped(&mut http_stop).await;
        });
        let served = match https {
            Some(https) => {
                let stop_all = stop_tx.clone();
                let plain = async move {
                    let served = plain.await;
                    let _ = stop_all.send(true);
                    served
                };
                let (a, b) = tokio::join!(plain, https);
                a.and(b)
            }
            None => plain.await,
        }
        .map_err(HubError::Serve);
        // Also when the HTTP server failed: stop the other tasks.
        let _ = stop_tx.send(true);
        if let Some(t) = tcp {
            let _ = t.await;
        }
        if let Some(m) = mqtt {
            let _ = m.await;
        }
        if let Some(l) = lora {
            let _ = l.await;
        }
        // Delivery workers finish their attempts in flight and may raise dead-letter
        // events: before the writer stops.
        let _ = delivery.await;
        let _ = repeats.await;
        let _ = refresher.await;
        let access = self.access;
        let _ = tokio::task::spawn_blocking(move || access.shutdown()).await;
        let events = self.events;
        let _ = tokio::task::spawn_blocking(move || events.shutdown()).await;
        // Last: removes the running marker (a clean shutdown).
        monitor.finish().await;
        served
    }
}

/// Opens the events pipeline (its writer thread) on a blocking thread.
async fn open_events(
    config: &Config,
    offset: time::UtcOffset,
) -> Result<events::EventService, HubError> {
    let dir = config.general.data_dir.clone();
    tokio::task::spawn_blocking(move || events::EventService::open(&dir, offset))
        .await
        .map_err(|e| events::EventsError::Task(e.to_string()))?
        .map_err(HubError::from)
}

/// Completes once the stop flag is set (or its sender is gone).
pub(crate) async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Serves the hub until `shutdown` completes.
pub async fn serve(
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HubError> {
    Hub::bind(config).await?.run(shutdown).await
}
