//! Arbitrary bytes through the UAPI server and parsers (`cargo +nightly fuzz run uapi_set`
//! in appliance/tunnel).
//!
//! Checks that nothing panics, that every answer ends in `errno=N` and a blank line, and
//! that whatever parses survives being written back and parsed again: `set` bodies
//! through `format_set`, `get` answers through `format_get`.

#![no_main]

use gatehouse_tunnel::uapi::{self, DeviceInfo, DeviceUpdate, PeerInfo, UapiError, UapiHandler};
use gatehouse_tunnel::Key;
use libfuzzer_sys::fuzz_target;
use std::io::{self, Read, Write};

/// Answers `get` with a fixed device; accepts every `set` but one asking for port 1, and
/// checks on the way that each update it is given round-trips.
struct FakeDevice(DeviceInfo);

impl UapiHandler for FakeDevice {
    fn get(&self) -> DeviceInfo {
        self.0.clone()
    }

    fn set(&self, update: DeviceUpdate) -> Result<(), UapiError> {
        let again = uapi::parse_set(&uapi::format_set(&update)).expect("format_set output parses");
        assert_eq!(again, update);
        if update.listen_port == Some(1) {
            return Err(UapiError::PortInUse("port 1 is taken here".into()));
        }
        Ok(())
    }
}

/// An in-memory connection: reads the fuzz input, collects the answers.
struct Connection<'a> {
    input: &'a [u8],
    output: Vec<u8>,
}

impl Read for Connection<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Connection<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn device() -> FakeDevice {
    let mut peer = PeerInfo::new(Key([7; 32]));
    peer.endpoint = Some("192.0.2.1:51820".parse().expect("valid endpoint"));
    peer.allowed_ips = vec!["10.0.0.2/32".parse().expect("valid prefix")];
    FakeDevice(DeviceInfo {
        private_key: Some(Key([1; 32])),
        listen_port: 51820,
        fwmark: 0,
        peers: vec![peer],
    })
}

fuzz_target!(|data: &[u8]| {
    let device = device();
    let mut conn = Connection {
        input: data,
        output: Vec::new(),
    };
    uapi::serve_connection(&mut conn, &device).expect("in-memory I/O cannot fail");
    assert!(conn.output.is_empty() || conn.output.ends_with(b"\n\n"));

    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(update) = uapi::parse_set(text) {
            let again =
                uapi::parse_set(&uapi::format_set(&update)).expect("format_set output parses");
            assert_eq!(again, update);
        }
        if let Ok(info) = uapi::parse_get(text) {
            let again =
                uapi::parse_get(&uapi::format_get(&info)).expect("format_get output parses");
            assert_eq!(again, info);
        }
    }
});
