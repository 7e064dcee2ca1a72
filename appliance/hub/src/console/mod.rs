//! The web console: one page (`/`) and its script, style sheet and icon, compiled into the
//! binary (`include_str!`), so the hub serves them with no files on disk and no build step.
//! The app (assets/app.js) talks only to the JSON API under `/api/v1`; the UI contract it
//! follows (routes, selectors, forms) is in `.design/issue5.md`.
//!
//! Promises:
//! - Every console response carries [`CSP`] (same-origin scripts, styles, images and
//!   fetches only; no framing; no `<base>`), `X-Content-Type-Options: nosniff`,
//!   `Referrer-Policy: no-referrer` and `X-Frame-Options: DENY`.
//! - Each asset has a strong `ETag` (a SHA-256 of its bytes, computed once) and answers
//!   `If-None-Match` with 304. The page names its assets with `?v=<version>` (a hash of
//!   all of them), so an asset asked for at the current version may be cached for a year;
//!   the page itself, and assets asked for without the current version, are revalidated
//!   every time (`no-cache`).

use axum::extract::Query;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::OnceLock;

/// The Content-Security-Policy of every console response (CSP Level 3): nothing from
/// other origins, no inline script or style, no framing (clickjacking), no `<base>`.
pub const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
     script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'self'";

/// The page's placeholder for the assets' version (replaced when the page is served).
const VERSION_MARK: &str = "__VERSION__";

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const FAVICON_SVG: &str = include_str!("assets/favicon.svg");

/// The console's assets: path, content type, body.
const ASSETS: [(&str, &str, &str); 3] = [
    ("/console/app.js", "text/javascript; charset=utf-8", APP_JS),
    ("/console/app.css", "text/css; charset=utf-8", APP_CSS),
    ("/console/favicon.svg", "image/svg+xml", FAVICON_SVG),
];

/// One servable file with its validator.
#[derive(Debug)]
struct Served {
    content_type: &'static str,
    body: String,
    etag: String,
}

impl Served {
    fn new(content_type: &'static str, body: String) -> Served {
        let etag = format!("\"{}\"", short_hash(body.as_bytes()));
        Served {
            content_type,
            body,
            etag,
        }
    }
}

#[derive(Debug)]
struct Console {
    /// A hash of every asset: what the page appends as `?v=`.
    version: String,
    index: Served,
    assets: HashMap<&'static str, Served>,
}

fn short_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    crate::provisioning::hex(digest.get(..12).unwrap_or(&digest))
}

fn console() -> &'static Console {
    static CONSOLE: OnceLock<Console> = OnceLock::new();
    CONSOLE.get_or_init(|| {
        let mut all = Sha256::new();
        for (path, _, body) in ASSETS {
            all.update(path.as_bytes());
            all.update([0]);
            all.update(body.as_bytes());
            all.update([0]);
        }
        let digest = all.finalize();
        let version = crate::provisioning::hex(digest.get(..8).unwrap_or(&digest));
        Console {
            index: Served::new(
                "text/html; charset=utf-8",
                INDEX_HTML.replace(VERSION_MARK, &version),
            ),
            assets: ASSETS
                .into_iter()
                .map(|(path, ct, body)| (path, Served::new(ct, body.to_owned())))
                .collect(),
            version,
        }
    })
}

/// The version the page asks its assets for (`?v=`).
pub fn version() -> &'static str {
    &console().version
}

/// The console's routes: `/` and its assets.
pub fn routes() -> Router {
    let mut r = Router::new().route("/", get(index));
    for (path, _, _) in ASSETS {
        r = r.route(
            path,
            get(move |q: Query<HashMap<String, String>>, h: HeaderMap| asset(path, q, h)),
        );
    }
    r
}

async fn index(headers: HeaderMap) -> Response {
    respond(&console().index, &headers, false)
}

async fn asset(
    path: &'static str,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let c = console();
    match c.assets.get(path) {
        Some(served) => {
            let current = q.get("v").is_some_and(|v| *v == c.version);
            respond(served, &headers, current)
        }
        None => with_security_headers(StatusCode::NOT_FOUND.into_response()),
    }
}

/// `served`, or 304 when the client's copy matches; `immutable` for versioned URLs.
fn respond(served: &Served, headers: &HeaderMap, immutable: bool) -> Response {
    let cache = if immutable {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == served.etag || t.trim() == "*");
    let mut r = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, served.content_type)],
            served.body.clone(),
        )
            .into_response()
    };
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&served.etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    with_security_headers(r)
}

fn with_security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// GETs `uri` from the console's routes served on a loopback port.
    async fn get(uri: &str, if_none_match: Option<&str>) -> (StatusCode, HeaderMap, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, routes()).await;
        });
        let mut req = reqwest::Client::new().get(format!("http://{addr}{uri}"));
        if let Some(t) = if_none_match {
            req = req.header(header::IF_NONE_MATCH, t);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let body = r.text().await.unwrap();
        server.abort();
        (status, headers, body)
    }

    fn assert_security_headers(uri: &str, h: &HeaderMap) {
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], CSP, "{uri}");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{uri}");
        assert_eq!(h[header::REFERRER_POLICY], "no-referrer", "{uri}");
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY", "{uri}");
    }

    #[tokio::test]
    async fn every_asset_has_its_type_security_headers_and_etag() {
        let v = version();
        let cases = [
            ("/", "text/html; charset=utf-8", "no-cache"),
            (
                "/console/app.js",
                "text/javascript; charset=utf-8",
                "no-cache",
            ),
            ("/console/app.css", "text/css; charset=utf-8", "no-cache"),
            ("/console/favicon.svg", "image/svg+xml", "no-cache"),
            (
                &format!("/console/app.js?v={v}"),
                "text/javascript; charset=utf-8",
                "public, max-age=31536000, immutable",
            ),
            (
                // An old version is not cached for long.
                "/console/app.css?v=0000",
                "text/css; charset=utf-8",
                "no-cache",
            ),
        ];
        for (uri, ct, cache) in cases {
            let (status, h, body) = get(uri, None).await;
            assert_eq!(status, StatusCode::OK, "{uri}");
            assert_eq!(h[header::CONTENT_TYPE], ct, "{uri}");
            assert_eq!(h[header::CACHE_CONTROL], cache, "{uri}");
            assert_security_headers(uri, &h);
            assert!(!body.is_empty(), "{uri}");
            let etag = h[header::ETAG].to_str().unwrap().to_owned();
            assert!(etag.starts_with('"') && etag.len() > 10, "{uri}: {etag}");
            // Revalidation: the same ETag gets 304 (with the headers), another one 200.
            let (status, h, body) = get(uri, Some(&etag)).await;
            assert_eq!(status, StatusCode::NOT_MODIFIED, "{uri}");
            assert_eq!(h[header::ETAG].to_str().unwrap(), etag, "{uri}");
            assert_security_headers(uri, &h);
            assert!(body.is_empty());
            let (status, _, _) = get(uri, Some("\"other\"")).await;
            assert_eq!(status, StatusCode::OK, "{uri}");
        }
        let (status, h, _) = get("/console/nothing.js", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let _ = h;
    }

    /// Every `src=` and `href=` value in `html`.
    fn references(html: &str) -> Vec<String> {
        let mut out = Vec::new();
        for attr in ["src=\"", "href=\""] {
            let mut rest = html;
            while let Some(i) = rest.find(attr) {
                let after = &rest[i + attr.len()..];
                let end = after.find('"').unwrap();
                out.push(after[..end].to_owned());
                rest = &after[end..];
            }
        }
        out
    }

    #[tokio::test]
    async fn the_page_references_only_its_own_versioned_assets() {
        let (_, _, html) = get("/", None).await;
        assert!(!html.contains(VERSION_MARK));
        let refs = references(&html);
        assert!(!refs.is_empty());
        for r in &refs {
            assert!(
                r.starts_with('/') && !r.starts_with("//") || r.starts_with('#'),
                "not same-origin: {r}"
            );
        }
        for (path, _, _) in ASSETS {
            let want = format!("{path}?v={}", version());
            assert!(refs.contains(&want), "the page does not load {want}");
        }
        // No inline script or style (the CSP would block it anyway).
        assert!(!html.contains("<script>") && !html.contains("style="));
        assert!(!html.contains("<style"));
        // The contract's fixed elements.
        for id in [
            "id=\"page\"",
            "id=\"flash\"",
            "id=\"popups\"",
            "id=\"sound\"",
            "id=\"logout\"",
            "id=\"whoami\"",
        ] {
            assert!(html.contains(id), "{id}");
        }
    }

    #[test]
    fn the_script_builds_the_dom_without_html_strings() {
        for banned in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ] {
            assert!(!APP_JS.contains(banned), "app.js uses {banned}");
        }
        // Only the API and the console's own paths are fetched: no other origin (the
        // SVG namespace is a name, not a request).
        let js = APP_JS.replace("'http://www.w3.org/2000/svg'", "");
        assert!(!js.contains("http://") && !js.contains("//cdn"));
        // The one place markup is parsed: the QR code, as SVG, checked before use.
        assert_eq!(APP_JS.matches("parseFromString(").count(), 1);
        assert!(APP_JS.contains("'image/svg+xml'"));
    }

    #[test]
    fn the_favicon_is_plain_svg() {
        assert!(FAVICON_SVG.trim_start().starts_with("<svg"));
        assert!(!FAVICON_SVG.contains("<script"));
    }
}
