//! Signals for the services: SIGHUP reloads, SIGTERM/SIGINT stop. One watcher thread turns
//! them into events that the tunnel loop waits on and a future the hub awaits.

use anyhow::Result;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Mutex, OnceLock};
use tokio::sync::watch;

pub enum Event {
    Reload,
    Stop,
}

struct Hub {
    events: Mutex<Receiver<Event>>,
    sender: Sender<Event>,
    stop: watch::Sender<bool>,
}

static HUB: OnceLock<Hub> = OnceLock::new();

fn hub() -> Result<&'static Hub> {
    if let Some(h) = HUB.get() {
        return Ok(h);
    }
    let (sender, rx) = channel();
    let (stop, _) = watch::channel(false);
    let mut signals = Signals::new([SIGHUP, SIGINT, SIGTERM])?;
    let h = HUB.get_or_init(|| Hub {
        events: Mutex::new(rx),
        sender,
        stop,
    });
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig == SIGHUP {
                    let _ = h.sender.send(Event::Reload);
                } else {
                    request_stop();
                }
            }
        })?;
    Ok(h)
}

/// Blocks until the next reload or stop.
pub fn wait() -> Result<Event> {
    let h = hub()?;
    let rx = h.events.lock().unwrap_or_else(|e| e.into_inner());
    Ok(rx.recv().unwrap_or(Event::Stop))
}

/// Like [`wait`], but gives up after `timeout` (`None`).
pub fn wait_timeout(timeout: std::time::Duration) -> Result<Option<Event>> {
    use std::sync::mpsc::RecvTimeoutError;
    let h = hub()?;
    let rx = h.events.lock().unwrap_or_else(|e| e.into_inner());
    match rx.recv_timeout(timeout) {
        Ok(e) => Ok(Some(e)),
        Err(RecvTimeoutError::Timeout) => Ok(None),
        Err(RecvTimeoutError::Disconnected) => Ok(Some(Event::Stop)),
    }
}

/// Asks every service of this process to stop.
pub fn request_stop() {
    if let Ok(h) = hub() {
        h.stop.send_replace(true);
        let _ = h.sender.send(Event::Stop);
    }
}

/// Completes when the process is asked to stop.
pub async fn stopped() {
    let Ok(h) = hub() else { return };
    let mut rx = h.stop.subscribe();
    let _ = rx.wait_for(|s| *s).await;
}

/// True once the process was asked to stop.
pub fn stop_requested() -> bool {
    hub().is_ok_and(|h| *h.stop.borrow())
}
