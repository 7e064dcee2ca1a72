//! A Linux TUN device (`/dev/net/tun`, IFF_TUN | IFF_NO_PI): one read or write is one IP
//! packet. Needs CAP_NET_ADMIN. Addresses and routes are set with `ip` (iproute2), as
//! wg-quick does, so what the box runs is what an admin would type.

#![allow(unsafe_code)] // the TUNSETIFF ioctl; its buffer is a correctly sized ifreq.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::process::Command;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;

/// An open TUN interface.
#[derive(Debug)]
pub struct TunDevice {
    file: File,
    name: String,
}

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

impl TunDevice {
    /// Creates (or attaches to) the TUN interface `name`.
    pub fn open(name: &str) -> io::Result<TunDevice> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("interface name {name:?} must be 1 to 15 bytes"),
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| io::Error::new(e.kind(), format!("cannot open /dev/net/tun: {e}")))?;
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TUN | IFF_NO_PI,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes a struct ifreq; IfReq has its layout and size.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            let hint = if e.raw_os_error() == Some(libc::EPERM) {
                " (TUN mode needs root or CAP_NET_ADMIN; use mode = \"userspace\" otherwise)"
            } else {
                ""
            };
            return Err(io::Error::new(
                e.kind(),
                format!("cannot create TUN device {name}: {e}{hint}"),
            ));
        }
        Ok(TunDevice {
            file,
            name: name.to_owned(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Reads one packet; blocks until one is there.
    pub fn read_packet(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Writes one packet.
    pub fn write_packet(&self, packet: &[u8]) -> io::Result<()> {
        (&self.file).write(packet).map(|_| ())
    }

    /// Sets the MTU, adds `addresses` and brings the link up, with `ip`.
    pub fn configure(&self, mtu: u16, addresses: &[String]) -> io::Result<()> {
        ip(&["link", "set", "dev", &self.name, "mtu", &mtu.to_string()])?;
        for a in addresses {
            ip(&["address", "replace", a, "dev", &self.name])?;
        }
        ip(&["link", "set", "dev", &self.name, "up"])
    }
}

fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run `ip` (iproute2): {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
