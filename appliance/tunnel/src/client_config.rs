//! The client side of a peer: the config `gatehouse peer add` prints, as text for
//! wg-quick and the official WireGuard apps, as a QR code for a terminal, as a PNG and as
//! SVG (for the web console).
//!
//! Promises:
//! - [`ClientConfig::to_text`] writes only standard keys, in the layout `wg-quick` and the
//!   apps import: `[Interface]` with `PrivateKey`, `Address`, `MTU`, then one `[Peer]`
//!   with `PublicKey`, `PresharedKey`, `Endpoint`, `AllowedIPs`, `PersistentKeepalive`.
//!   After wg-quick's strip (which drops `Address` and `MTU`), `wg setconf` accepts it.
//! - A key, list or number that is empty or zero is left out rather than written empty
//!   (wg rejects `Key =` with no value).
//! - The QR codes hold exactly that text, at error correction level L (as `qrencode`,
//!   which WireGuard's documentation uses, does by default), with the 4-module quiet zone
//!   of ISO/IEC 18004, drawn dark on light.

use crate::keys::Key;
use crate::peer_store::StoredPeer;
use gatehouse_config::{Cidr, Role, Tunnel};
use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder as _};
use qrcode::types::QrError;
use qrcode::{Color, EcLevel, QrCode};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufWriter, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// Light modules around the code on every side (ISO/IEC 18004, "quiet zone").
pub const QUIET_ZONE: usize = 4;
/// PNG pixels per module side.
pub const PNG_MODULE_PX: usize = 8;

/// A remote peer's WireGuard config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// `None` when the user supplied only a public key: the text then asks them to add
    /// their own private key.
    pub private_key: Option<Key>,
    /// The peer's tunnel address(es), as /32 and /128.
    pub address: Vec<Cidr>,
    /// 0: left out.
    pub mtu: u16,
    pub server_public_key: Key,
    pub preshared_key: Option<Key>,
    /// The gateway's `host:port`.
    pub endpoint: String,
    /// What the client routes into the tunnel.
    pub allowed_ips: Vec<Cidr>,
    /// Seconds; 0: left out.
    pub persistent_keepalive: u16,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientConfigError {
    #[error("the client config does not fit in a QR code: {0}")]
    Qr(#[source] QrError),
    #[error("cannot write the QR code image {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot encode the QR code image {path} as PNG: {source}")]
    Png {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
}

impl ClientConfig {
    /// The config for `peer` from the tunnel settings: its addresses are its host
    /// entries (/32, /128) inside the tunnel subnets; it routes the tunnel subnets, plus
    /// `tunnel.client_routes` for admins; MTU, endpoint and keepalive come from `tunnel`.
    pub fn for_peer(
        tunnel: &Tunnel,
        server_public_key: Key,
        peer: &StoredPeer,
        private_key: Option<Key>,
    ) -> ClientConfig {
        let subnets: Vec<Cidr> = std::iter::once(tunnel.address)
            .chain(tunnel.address6)
            .collect();
        let address = peer
            .allowed_ips
            .iter()
            .filter(|c| **c == Cidr::host(c.addr()) && subnets.iter().any(|s| s.contains(c.addr())))
            .copied()
            .collect();
        let mut allowed_ips: Vec<Cidr> = Vec::new();
        let routes = subnets.iter().chain(
            tunnel
                .client_routes
                .iter()
                .filter(|_| peer.role == Role::Admin),
        );
        for c in routes.map(Cidr::network) {
            if !allowed_ips.contains(&c) {
                allowed_ips.push(c);
            }
        }
        ClientConfig {
            private_key,
            address,
            mtu: tunnel.mtu,
            server_public_key,
            preshared_key: peer.preshared_key,
            endpoint: tunnel.public_endpoint.clone(),
            allowed_ips,
            persistent_keepalive: tunnel.client_keepalive,
        }
    }

    /// The config text for wg-quick and the WireGuard apps.
    pub fn to_text(&self) -> String {
        // `write!` into a String cannot fail; the results are ignored below.
        let mut out = String::from("[Interface]\n");
        match self.private_key {
            Some(k) => {
                let _ = writeln!(out, "PrivateKey = {}", k.to_base64());
            }
            None => out.push_str(
                "# Add your private key here, as a PrivateKey line: the one whose public key\n\
                 # you gave to gatehouse. Gatehouse never saw it.\n",
            ),
        }
        if !self.address.is_empty() {
            let _ = writeln!(out, "Address = {}", join(&self.address));
        }
        if self.mtu != 0 {
            let _ = writeln!(out, "MTU = {}", self.mtu);
        }
        out.push_str("\n[Peer]\n");
        let _ = writeln!(out, "PublicKey = {}", self.server_public_key.to_base64());
        if let Some(psk) = self.preshared_key {
            let _ = writeln!(out, "PresharedKey = {}", psk.to_base64());
        }
        if !self.endpoint.is_empty() {
            let _ = writeln!(out, "Endpoint = {}", self.endpoint);
        }
        if !self.allowed_ips.is_empty() {
            let _ = writeln!(out, "AllowedIPs = {}", join(&self.allowed_ips));
        }
        if self.persistent_keepalive != 0 {
            let _ = writeln!(out, "PersistentKeepalive = {}", self.persistent_keepalive);
        }
        out
    }

    fn qr(&self) -> Result<QrCode, ClientConfigError> {
        QrCode::with_error_correction_level(self.to_text(), EcLevel::L)
            .map_err(ClientConfigError::Qr)
    }

    /// The config as a QR code for a terminal: each character cell holds two modules
    /// (Unicode half blocks), with ANSI colours setting black on white so that the code
    /// is dark on light whatever the terminal's theme. One line per two module rows,
    /// quiet zone included, each ending in a colour reset and `\n`.
    pub fn to_terminal_qr(&self) -> Result<String, ClientConfigError> {
        let modules = Modules::new(&self.qr()?);
        let mut out = String::new();
        for y in (0..modules.side).step_by(2) {
            out.push_str("\x1b[30;107m");
            for x in 0..modules.side {
                out.push(match (modules.dark(x, y), modules.dark(x, y + 1)) {
                    (true, true) => '\u{2588}',  // full block
                    (true, false) => '\u{2580}', // upper half block
                    (false, true) => '\u{2584}', // lower half block
                    (false, false) => ' ',
                });
            }
            out.push_str("\x1b[0m\n");
        }
        Ok(out)
    }

    /// The QR code as a standalone SVG document (for the web console to show inline):
    /// one unit per module, quiet zone included, a white square under one black path
    /// with a run per horizontal stretch of dark modules, drawn with `crispEdges` so
    /// scaling keeps the modules sharp. `size_px` is its shown width and height.
    pub fn to_svg_qr(&self, size_px: u32) -> Result<String, ClientConfigError> {
        let modules = Modules::new(&self.qr()?);
        let side = modules.side;
        // `write!` into a String cannot fail; the results are ignored below.
        let mut out = String::with_capacity(side * side);
        let _ = write!(
            out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {side} {side}\" \
             width=\"{size_px}\" height=\"{size_px}\" shape-rendering=\"crispEdges\" \
             role=\"img\" aria-label=\"WireGuard configuration QR code\">\
             <rect width=\"{side}\" height=\"{side}\" fill=\"#fff\"/><path fill=\"#000\" d=\""
        );
        for y in 0..side {
            let mut x = 0;
            while x < side {
                if !modules.dark(x, y) {
                    x += 1;
                    continue;
                }
                let start = x;
                while x < side && modules.dark(x, y) {
                    x += 1;
                }
                let run = x - start;
                let _ = write!(out, "M{start} {y}h{run}v1h-{run}z");
            }
        }
        out.push_str("\"/></svg>");
        Ok(out)
    }

    /// Writes the QR code as a greyscale PNG, [`PNG_MODULE_PX`] pixels per module, quiet
    /// zone included, to `path` with mode 0600 (the config holds the private key).
    pub fn write_qr_png(&self, path: &Path) -> Result<(), ClientConfigError> {
        let modules = Modules::new(&self.qr()?);
        let side_px = modules.side * PNG_MODULE_PX;
        let mut pixels = Vec::with_capacity(side_px * side_px);
        for py in 0..side_px {
            for px in 0..side_px {
                let dark = modules.dark(px / PNG_MODULE_PX, py / PNG_MODULE_PX);
                pixels.push(if dark { 0u8 } else { 255u8 });
            }
        }
        // A QR code is at most 177 modules wide, so this always fits.
        let side = u32::try_from(side_px).unwrap_or(u32::MAX);
        let write_error = |source| ClientConfigError::Write {
            path: path.to_owned(),
            source,
        };
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(write_error)?;
        // `mode` only applies to a new file; narrow an existing one too.
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(write_error)?;
        let mut writer = BufWriter::new(file);
        // The buffer is side * side one-byte pixels, as write_image requires.
        PngEncoder::new(&mut writer)
            .write_image(&pixels, side, side, ExtendedColorType::L8)
            .map_err(|source| ClientConfigError::Png {
                path: path.to_owned(),
                source,
            })?;
        writer.flush().map_err(write_error)
    }
}

fn join(list: &[Cidr]) -> String {
    list.iter()
        .map(Cidr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A QR code's modules with the quiet zone around them.
struct Modules {
    width: usize,
    /// `width` plus the quiet zone on both sides.
    side: usize,
    colors: Vec<Color>,
}

impl Modules {
    fn new(code: &QrCode) -> Modules {
        let width = code.width();
        Modules {
            width,
            side: width + 2 * QUIET_ZONE,
            colors: code.to_colors(),
        }
    }

    /// Whether the module at (`x`, `y`), counted from the quiet zone's corner, is dark;
    /// anything outside the code is light.
    fn dark(&self, x: usize, y: usize) -> bool {
        let (Some(x), Some(y)) = (x.checked_sub(QUIET_ZONE), y.checked_sub(QUIET_ZONE)) else {
            return false;
        };
        x < self.width
            && y < self.width
            && self.colors.get(y * self.width + x) == Some(&Color::Dark)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    const CLIENT_PRIVATE: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
    const CLIENT_PUBLIC: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";
    const SERVER_PUBLIC: &str = "cqQo0are0POFxMLgI9f+eUk5ElWaazQyo7Ek/SZuF3Q=";
    const PSK: &str = "er6Y5j6uzyrsC32mvLcwcl9YgdzOqCViMBh/Yq5Blek=";

    fn key(s: &str) -> Key {
        Key::from_base64(s).unwrap()
    }

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn tunnel() -> Tunnel {
        Tunnel {
            address6: Some(cidr("fd77::1/64")),
            public_endpoint: "gate.example.net:51820".into(),
            client_routes: vec![cidr("192.168.1.0/24"), cidr("10.77.0.0/24")],
            ..Tunnel::default()
        }
    }

    fn peer(role: Role) -> StoredPeer {
        StoredPeer {
            preshared_key: Some(key(PSK)),
            allowed_ips: vec![
                cidr("10.77.0.2/32"),
                cidr("fd77::2/128"),
                cidr("10.99.0.0/24"),
            ],
            role,
            ..StoredPeer::new(key(CLIENT_PUBLIC))
        }
    }

    fn admin_config() -> ClientConfig {
        ClientConfig::for_peer(
            &tunnel(),
            key(SERVER_PUBLIC),
            &peer(Role::Admin),
            Some(key(CLIENT_PRIVATE)),
        )
    }

    const ADMIN_TEXT: &str = "\
[Interface]
PrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=
Address = 10.77.0.2/32, fd77::2/128
MTU = 1420

[Peer]
PublicKey = cqQo0are0POFxMLgI9f+eUk5ElWaazQyo7Ek/SZuF3Q=
PresharedKey = er6Y5j6uzyrsC32mvLcwcl9YgdzOqCViMBh/Yq5Blek=
Endpoint = gate.example.net:51820
AllowedIPs = 10.77.0.0/24, fd77::/64, 192.168.1.0/24
PersistentKeepalive = 25
";

    #[test]
    fn admin_text_matches_fixture() {
        assert_eq!(admin_config().to_text(), ADMIN_TEXT);
    }

    #[test]
    fn installer_routes_only_the_tunnel() {
        let c = ClientConfig::for_peer(&tunnel(), key(SERVER_PUBLIC), &peer(Role::Installer), None);
        assert_eq!(c.allowed_ips, vec![cidr("10.77.0.0/24"), cidr("fd77::/64")]);
        assert_eq!(c.address, vec![cidr("10.77.0.2/32"), cidr("fd77::2/128")]);
        assert_eq!(c.persistent_keepalive, 25);
        assert_eq!(c.mtu, 1420);
    }

    #[test]
    fn public_key_only_asks_for_the_private_key() {
        let mut c = admin_config();
        c.private_key = None;
        c.preshared_key = None;
        c.persistent_keepalive = 0;
        c.mtu = 0;
        assert_eq!(
            c.to_text(),
            "\
[Interface]
# Add your private key here, as a PrivateKey line: the one whose public key
# you gave to gatehouse. Gatehouse never saw it.
Address = 10.77.0.2/32, fd77::2/128

[Peer]
PublicKey = cqQo0are0POFxMLgI9f+eUk5ElWaazQyo7Ek/SZuF3Q=
Endpoint = gate.example.net:51820
AllowedIPs = 10.77.0.0/24, fd77::/64, 192.168.1.0/24
"
        );
    }

    #[test]
    fn ipv4_only_tunnel() {
        let t = Tunnel {
            address6: None,
            ..tunnel()
        };
        let mut p = peer(Role::Installer);
        p.allowed_ips = vec![cidr("10.77.0.9/32")];
        let c = ClientConfig::for_peer(&t, key(SERVER_PUBLIC), &p, None);
        assert_eq!(c.address, vec![cidr("10.77.0.9/32")]);
        assert_eq!(c.allowed_ips, vec![cidr("10.77.0.0/24")]);
    }

    /// Reads the terminal drawing back into modules and compares them with the code.
    #[test]
    fn terminal_qr_draws_every_module() {
        let config = admin_config();
        let code = QrCode::with_error_correction_level(config.to_text(), EcLevel::L).unwrap();
        let width = code.width();
        let side = width + 2 * QUIET_ZONE;
        let drawn = config.to_terminal_qr().unwrap();
        let rows: Vec<&str> = drawn.lines().collect();
        assert_eq!(rows.len(), side.div_ceil(2));
        let mut seen = vec![vec![false; side]; rows.len() * 2];
        for (r, row) in rows.iter().enumerate() {
            let cells = row
                .strip_prefix("\x1b[30;107m")
                .and_then(|s| s.strip_suffix("\x1b[0m"))
                .unwrap();
            assert_eq!(cells.chars().count(), side);
            for (x, c) in cells.chars().enumerate() {
                let (top, bottom) = match c {
                    '\u{2588}' => (true, true),
                    '\u{2580}' => (true, false),
                    '\u{2584}' => (false, true),
                    ' ' => (false, false),
                    other => panic!("unexpected {other:?}"),
                };
                seen[2 * r][x] = top;
                seen[2 * r + 1][x] = bottom;
            }
        }
        let colors = code.to_colors();
        for (y, row) in seen.iter().enumerate() {
            for (x, &dark) in row.iter().enumerate() {
                let inside = (QUIET_ZONE..QUIET_ZONE + width).contains(&x)
                    && (QUIET_ZONE..QUIET_ZONE + width).contains(&y);
                let want =
                    inside && colors[(y - QUIET_ZONE) * width + (x - QUIET_ZONE)] == Color::Dark;
                assert_eq!(dark, want, "module ({x}, {y})");
            }
        }
        // A full config with keys still fits an 80-column terminal.
        assert!(side <= 80, "{side} columns");
    }

    #[test]
    fn png_has_the_expected_size_and_modules() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alice.png");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let config = admin_config();
        config.write_qr_png(&path).unwrap();
        let bytes = fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );

        let code = QrCode::with_error_correction_level(config.to_text(), EcLevel::L).unwrap();
        let side = (code.width() + 2 * QUIET_ZONE) * PNG_MODULE_PX;
        let img = image::load_from_memory(&bytes).unwrap().to_luma8();
        assert_eq!(img.dimensions(), (side as u32, side as u32));
        let colors = code.to_colors();
        let w = code.width();
        let px = |mx: usize, my: usize, dx: usize, dy: usize| {
            img.get_pixel(
                (mx * PNG_MODULE_PX + dx) as u32,
                (my * PNG_MODULE_PX + dy) as u32,
            )[0]
        };
        for my in 0..w + 2 * QUIET_ZONE {
            for mx in 0..w + 2 * QUIET_ZONE {
                let inside = (QUIET_ZONE..QUIET_ZONE + w).contains(&mx)
                    && (QUIET_ZONE..QUIET_ZONE + w).contains(&my);
                let dark =
                    inside && colors[(my - QUIET_ZONE) * w + (mx - QUIET_ZONE)] == Color::Dark;
                let want = if dark { 0 } else { 255 };
                for (dx, dy) in [(0, 0), (PNG_MODULE_PX - 1, PNG_MODULE_PX - 1)] {
                    assert_eq!(px(mx, my, dx, dy), want, "module ({mx}, {my})");
                }
            }
        }
        // The finder pattern's corner is dark, the quiet zone light.
        assert_eq!(px(QUIET_ZONE, QUIET_ZONE, 0, 0), 0);
        assert_eq!(px(0, 0, 0, 0), 255);
    }

    /// Reads the SVG's runs back into modules and compares them with the code.
    #[test]
    fn svg_qr_draws_every_module() {
        let config = admin_config();
        let code = QrCode::with_error_correction_level(config.to_text(), EcLevel::L).unwrap();
        let width = code.width();
        let side = width + 2 * QUIET_ZONE;
        let svg = config.to_svg_qr(256).unwrap();
        assert!(
            svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
            "{svg}"
        );
        assert!(svg.ends_with("\"/></svg>"));
        assert!(svg.contains(&format!("viewBox=\"0 0 {side} {side}\"")));
        assert!(svg.contains("width=\"256\" height=\"256\""));
        let d = svg
            .split(" d=\"")
            .nth(1)
            .unwrap()
            .trim_end_matches("\"/></svg>");
        let mut seen = vec![vec![false; side]; side];
        for cmd in d.split('z').filter(|c| !c.is_empty()) {
            // M{x} {y}h{run}v1h-{run}
            let rest = cmd.strip_prefix('M').unwrap();
            let (xy, rest) = rest.split_once('h').unwrap();
            let (x, y) = xy.split_once(' ').unwrap();
            let (run, back) = rest.split_once("v1h-").unwrap();
            assert_eq!(run, back);
            let (x, y, run): (usize, usize, usize) =
                (x.parse().unwrap(), y.parse().unwrap(), run.parse().unwrap());
            assert!(run > 0);
            for cell in &mut seen[y][x..x + run] {
                assert!(!*cell, "drawn twice");
                *cell = true;
            }
        }
        let colors = code.to_colors();
        for (y, row) in seen.iter().enumerate() {
            for (x, &dark) in row.iter().enumerate() {
                let inside = (QUIET_ZONE..QUIET_ZONE + width).contains(&x)
                    && (QUIET_ZONE..QUIET_ZONE + width).contains(&y);
                let want =
                    inside && colors[(y - QUIET_ZONE) * width + (x - QUIET_ZONE)] == Color::Dark;
                assert_eq!(dark, want, "module ({x}, {y})");
            }
        }
    }

    #[test]
    fn png_write_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir/alice.png");
        let e = admin_config().write_qr_png(&path).unwrap_err();
        assert!(matches!(e, ClientConfigError::Write { .. }));
        assert!(e.to_string().contains("missing-dir/alice.png"), "{e}");
    }

    #[test]
    fn too_long_for_a_qr_code() {
        let mut c = admin_config();
        c.endpoint = "x".repeat(3000);
        assert!(matches!(
            c.to_terminal_qr(),
            Err(ClientConfigError::Qr(QrError::DataTooLong))
        ));
    }

    /// wg-quick's strip (`parse_options` in wg-quick/linux.bash): drop the wg-quick keys
    /// of the [Interface] section, case-insensitively; keep every other line.
    fn strip_like_wg_quick(text: &str) -> String {
        let mut interface = false;
        let mut out = String::new();
        for line in text.lines() {
            let stripped = line.split('#').next().unwrap_or_default();
            let key = stripped.split('=').next().unwrap_or_default().trim();
            if key.starts_with('[') {
                interface = key.eq_ignore_ascii_case("[Interface]");
            }
            let wg_quick_key = [
                "Address",
                "MTU",
                "DNS",
                "Table",
                "PreUp",
                "PreDown",
                "PostUp",
                "PostDown",
                "SaveConfig",
            ]
            .iter()
            .any(|k| k.eq_ignore_ascii_case(key));
            if !(interface && wg_quick_key) {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// When the `wg` tool is installed, the stripped config goes through `wg setconf` on
    /// an interface that does not exist: wg parses the whole file first, so a parse error
    /// and the missing interface are told apart. When `wg-quick` is there and we are root
    /// (it re-runs itself with sudo otherwise), our strip is checked against its own.
    #[test]
    fn wg_accepts_the_stripped_config() {
        if Command::new("wg").arg("--version").output().is_err() {
            eprintln!("wg not installed; skipping");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut config = admin_config();
        config.endpoint = "192.0.2.1:51820".into(); // no DNS lookup in tests
        for private_key in [Some(key(CLIENT_PRIVATE)), None] {
            config.private_key = private_key;
            let text = config.to_text();
            let stripped = strip_like_wg_quick(&text);
            assert!(!stripped.contains("Address") && !stripped.contains("MTU"));
            let path = dir.path().join("ghc0.conf");
            fs::write(&path, &text).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            let root = Command::new("id")
                .arg("-u")
                .output()
                .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
            if root {
                if let Ok(out) = Command::new("wg-quick").arg("strip").arg(&path).output() {
                    assert!(
                        out.status.success(),
                        "{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    // `echo` in cmd_strip adds one more newline.
                    assert_eq!(
                        String::from_utf8_lossy(&out.stdout),
                        format!("{stripped}\n")
                    );
                }
            }
            let stripped_path = dir.path().join("stripped.conf");
            fs::write(&stripped_path, &stripped).unwrap();
            let out = Command::new("wg")
                .args(["setconf", "ghtest-nx1"])
                .arg(&stripped_path)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!stderr.contains("parsing error"), "{stderr}");
            assert!(stderr.contains("Unable to modify interface"), "{stderr}");
            // Unstripped, wg refuses Address: the control that parse errors are seen.
            let out = Command::new("wg")
                .args(["setconf", "ghtest-nx1"])
                .arg(&path)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("Configuration parsing error"), "{stderr}");
        }
    }
}
