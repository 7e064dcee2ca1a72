//! A Linux TUN device (`/dev/net/tun`, IFF_TUN | IFF_NO_PI). Needs CAP_NET_ADMIN.
//! Addresses and routes are set with `ip` (iproute2), as wg-quick does, so what the box
//! runs is what an admin would type.
//!
//! Where the kernel allows, the device is opened with a virtio-net header
//! (`IFF_VNET_HDR`) and TCP segmentation offload (`TUNSETOFFLOAD`): one read or write is
//! then a header and a packet of up to 64 KiB (see `offload.rs`). Otherwise one read or
//! write is one IP packet. [`TunDevice::vnet_hdr`] says which.

#![allow(unsafe_code)] // the TUNSETIFF/TUNSETOFFLOAD ioctls and writev.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::process::Command;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;

/// An open TUN interface.
#[derive(Debug)]
pub struct TunDevice {
    file: File,
    name: String,
    vnet_hdr: bool,
}

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

impl TunDevice {
    /// Creates (or attaches to) the TUN interface `name`, with offloads when the kernel
    /// has them.
    pub fn open(name: &str) -> io::Result<TunDevice> {
        match Self::open_with(name, true) {
            Ok(t) => Ok(t),
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => Self::open_with(name, false),
            Err(e) => Err(e),
        }
    }

    /// Creates (or attaches to) the TUN interface `name` without offloads: one read or
    /// write is one IP packet.
    pub fn open_plain(name: &str) -> io::Result<TunDevice> {
        Self::open_with(name, false)
    }

    fn open_with(name: &str, offload: bool) -> io::Result<TunDevice> {
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
            flags: IFF_TUN | IFF_NO_PI | if offload { IFF_VNET_HDR } else { 0 },
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
        if offload {
            // Checksum and TCP segmentation offload: the kernel may hand us 64 KiB TCP
            // frames and accepts the same. Without it the header stays (always "no GSO").
            let flags = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
            // SAFETY: TUNSETOFFLOAD takes an unsigned int by value.
            let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETOFFLOAD as _, flags) };
            if rc < 0 {
                tracing::debug!(error = %io::Error::last_os_error(), "TUN offloads unavailable");
            }
        }
        Ok(TunDevice {
            file,
            name: name.to_owned(),
            vnet_hdr: offload,
        })
    }

    /// Whether every read and write starts with a `virtio_net_hdr` (`offload.rs`).
    pub fn vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Reads one frame: with [`TunDevice::vnet_hdr`], a virtio header and a packet of up
    /// to 64 KiB; else one IP packet. Blocks until one is there (unless non-blocking).
    pub fn read_frame(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Writes one frame as [`TunDevice::read_frame`] returns them.
    pub fn write_frame(&self, frame: &[u8]) -> io::Result<()> {
        (&self.file).write(frame).map(|_| ())
    }

    /// Writes one IP packet (adding an empty virtio header when the device has them).
    pub fn write_packet(&self, packet: &[u8]) -> io::Result<()> {
        if !self.vnet_hdr {
            return self.write_frame(packet);
        }
        let hdr = [0u8; crate::offload::VNET_HDR_LEN];
        let iov = [
            libc::iovec {
                iov_base: hdr.as_ptr() as *mut libc::c_void,
                iov_len: hdr.len(),
            },
            libc::iovec {
                iov_base: packet.as_ptr() as *mut libc::c_void,
                iov_len: packet.len(),
            },
        ];
        // SAFETY: two iovecs over live, readable buffers; writev does not write to them.
        let n = unsafe { libc::writev(self.file.as_raw_fd(), iov.as_ptr(), 2) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
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
