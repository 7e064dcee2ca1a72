//! The hub: Gatehouse's HTTP side. For now it serves the console's landing page and a
//! health endpoint on `hub.http_listen`, which the tunnel exposes to peers as the
//! `console` service; access decisions, events, alerts and the full console arrive with
//! the issues that build them, each as its own module behind this router.

use axum::routing::get;
use axum::Router;
use gatehouse_config::Config;
use std::future::Future;
use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    #[error("cannot listen on {addr} (hub.http_listen): {source}; choose a free address:port")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// The hub's routes.
pub fn router() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(|| async { "ok\n" }))
}

async fn index() -> axum::response::Html<String> {
    axum::response::Html(format!(
        "<!doctype html><title>Gatehouse</title><h1>Gatehouse</h1><p>version {}</p>\n",
        env!("CARGO_PKG_VERSION")
    ))
}

/// Serves the hub until `shutdown` completes.
pub async fn serve(
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HubError> {
    let addr = config.hub.http_listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HubError::Bind { addr, source })?;
    tracing::info!(%addr, "hub listening");
    axum::serve(listener, router())
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(HubError::Serve)
}
