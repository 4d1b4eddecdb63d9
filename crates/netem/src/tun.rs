//! TUN devices created inside a chosen network namespace.
//!
//! A TUN device lives in the namespace its creator was in at `TUNSETIFF` time; the file
//! descriptor keeps working from any namespace afterwards. So the relay briefly `setns()`s
//! its (only) thread into the target namespace, creates the device, and switches back.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use crate::error::{Error, Result};

/// `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54CA;
/// Layer-3 device: reads and writes bare IP packets.
const IFF_TUN: libc::c_short = 0x0001;
/// No 4-byte packet-information header in front of each packet.
const IFF_NO_PI: libc::c_short = 0x1000;
/// Longest interface name the kernel accepts (without the terminating NUL).
pub const MAX_IFNAME: usize = 15;

/// `struct ifreq` reduced to the name and flags `TUNSETIFF` reads (40 bytes like the real one).
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// An open TUN device (removed by the kernel when the descriptor is closed).
#[derive(Debug)]
pub struct Tun {
    fd: OwnedFd,
    name: String,
}

impl Tun {
    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one packet into `buf`; `Ok(None)` when none is waiting (non-blocking).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: buf is valid for writes of buf.len() bytes for the duration of the call.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock => Ok(None),
            io::ErrorKind::Interrupted => Ok(None),
            _ => Err(e),
        }
    }

    /// Writes one packet (delivers it to the namespace the device lives in).
    pub fn send(&self, pkt: &[u8]) -> io::Result<()> {
        // SAFETY: pkt is valid for reads of pkt.len() bytes for the duration of the call.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), pkt.as_ptr().cast(), pkt.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl AsRawFd for Tun {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Moves the calling thread into the network namespace open as `fd`.
pub fn setns_net(fd: &File, what: &str) -> Result<()> {
    // SAFETY: plain syscall on a valid descriptor.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(Error::last_os(format!("setns into {what}")));
    }
    Ok(())
}

/// Opens the calling thread's current network namespace (to return to it later).
pub fn current_netns() -> Result<File> {
    File::open("/proc/thread-self/ns/net").map_err(|source| Error::Sys {
        what: "open /proc/thread-self/ns/net".into(),
        source,
    })
}

/// Creates TUN device `name` (IFF_TUN | IFF_NO_PI, non-blocking) inside the network
/// namespace at `netns_path` (e.g. `/run/netns/fpc`) and returns it.
pub fn open_in_netns(netns_path: &Path, name: &str) -> Result<Tun> {
    if name.is_empty() || name.len() > MAX_IFNAME || name.contains(['/', ' ', '\0']) {
        return Err(Error::Invalid {
            what: "device name",
            detail: format!("{name:?}: 1 to {MAX_IFNAME} characters, no '/', space or NUL"),
        });
    }
    let home = current_netns()?;
    let target = File::open(netns_path).map_err(|source| Error::Sys {
        what: format!("open {}", netns_path.display()),
        source,
    })?;
    setns_net(&target, &netns_path.display().to_string())?;
    let created = create_tun(name);
    // Always go back, even when creation failed; staying in the wrong namespace is fatal.
    setns_net(&home, "the original network namespace")?;
    created
}

fn create_tun(name: &str) -> Result<Tun> {
    let path = CString::new("/dev/net/tun").map_err(|_| Error::Invalid {
        what: "path",
        detail: "NUL in /dev/net/tun".into(),
    })?;
    // SAFETY: path is a valid NUL-terminated string.
    let raw = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if raw < 0 {
        return Err(Error::last_os("open /dev/net/tun"));
    }
    // SAFETY: raw is a freshly opened descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut req = IfReq {
        name: [0; 16],
        flags: IFF_TUN | IFF_NO_PI,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads a struct ifreq; IfReq has its layout for the fields used.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) } < 0 {
        return Err(Error::last_os(format!("TUNSETIFF {name}")));
    }
    Ok(Tun {
        fd,
        name: name.to_string(),
    })
}
