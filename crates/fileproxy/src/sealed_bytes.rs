//! Immutable bytes kept in a sealed `memfd` and mapped read-only, so that a plain TCP
//! connection can send them with `sendfile(2)`: the kernel then references the pages
//! instead of copying every byte from user memory into the socket, as nginx does from
//! its disk cache. Every other reader (TLS, HTTP/2, ranges) sees ordinary [`Bytes`].
//!
//! A process-wide registry maps each live mapping's address range to its file, so the
//! socket writer (`server/sendfile_io.rs`) can tell, from an `IoSlice` alone,
//! which file and offset it came from. The file is sealed (no write, grow or shrink)
//! before it is mapped, so pages a socket still references never change; dropping the
//! last `Bytes` unmaps and closes it, and the kernel keeps pages in flight alive.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{OnceLock, PoisonError, RwLock};

use bytes::Bytes;

/// Live mappings: start address → (end address, file).
static MAPPINGS: RwLock<BTreeMap<usize, (usize, RawFd)>> = RwLock::new(BTreeMap::new());
/// Number of live mappings (a lock-free "none" for connections that never send any).
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// A sealed `memfd` and its read-only mapping; the owner behind the [`Bytes`] of
/// [`seal`].
struct Sealed {
    file: OwnedFd,
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is read-only and never changes (the file is sealed against
// writes before it is mapped), so sharing and sending the pointer is sound.
unsafe impl Send for Sealed {}
// SAFETY: as above: only shared reads of immutable memory.
unsafe impl Sync for Sealed {}

impl AsRef<[u8]> for Sealed {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Sealed {
    fn drop(&mut self) {
        let start = self.ptr.as_ptr() as usize;
        MAPPINGS
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&start);
        LIVE.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: `ptr`/`len` are the mapping made in `seal`; no `Bytes` refers to it any
        // more (this is the owner's drop). Pages a socket still holds stay alive in the
        // kernel. The file closes when `file` drops.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// How many sealed files may be open at once: a quarter of the open-files limit, so
/// that cached objects never take the descriptors connections need.
fn budget() -> usize {
    static BUDGET: OnceLock<usize> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        // SAFETY: an all-zero `rlimit` is valid; `getrlimit` fills it.
        let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
        // SAFETY: a valid resource and pointer.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return 0;
        }
        usize::try_from(lim.rlim_cur / 4).unwrap_or(usize::MAX)
    })
}

/// Copies `parts` (`len` bytes in all, `len > 0`) into a new sealed `memfd` and returns
/// them as one [`Bytes`] over its read-only mapping. Errors (no `memfd`, the descriptor
/// budget spent, no memory) leave nothing behind; the caller keeps its heap copy.
pub fn seal(parts: &[Bytes], len: usize) -> io::Result<Bytes> {
    if live() >= budget() {
        return Err(io::Error::other(
            "sealed bytes: a quarter of the open-files limit is in use by cached objects",
        ));
    }
    if len == 0 || parts.iter().map(Bytes::len).sum::<usize>() != len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "sealed bytes: empty or the parts do not add up",
        ));
    }
    // SAFETY: a NUL-terminated name and valid flags; the result is checked.
    let fd = unsafe {
        libc::memfd_create(
            c"fileproxy-cache".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.set_len(len as u64)?;
    for p in parts {
        file.write_all(p)?;
    }
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
    // SAFETY: `fcntl` on an open descriptor; the result is checked.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh read-only shared mapping of `len` bytes of a file that long.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let Some(ptr) = NonNull::new(ptr.cast::<u8>()) else {
        return Err(io::Error::other("mmap returned a null mapping"));
    };
    let sealed = Sealed {
        file: OwnedFd::from(file),
        ptr,
        len,
    };
    let start = ptr.as_ptr() as usize;
    MAPPINGS
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(start, (start + len, sealed.file.as_raw_fd()));
    LIVE.fetch_add(1, Ordering::Relaxed);
    Ok(Bytes::from_owner(sealed))
}

/// The sealed file and offset `slice` lies in, when it lies wholly inside one mapping
/// made by [`seal`]. The descriptor stays valid as long as the `Bytes` the slice was
/// borrowed from lives.
pub fn locate(slice: &[u8]) -> Option<(RawFd, u64)> {
    if slice.is_empty() || LIVE.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let at = slice.as_ptr() as usize;
    let map = MAPPINGS.read().unwrap_or_else(PoisonError::into_inner);
    let (&start, &(end, fd)) = map.range(..=at).next_back()?;
    (at + slice.len() <= end).then_some((fd, (at - start) as u64))
}

/// Number of sealed mappings alive now.
pub fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pread(fd: RawFd, off: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        // SAFETY: reads at most `len` bytes into a buffer that long.
        let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), len, off as libc::off_t) };
        assert_eq!(n, len as isize);
        buf
    }

    #[test]
    fn sealed_bytes_read_back_and_locate_their_file_offset() {
        let parts = [
            Bytes::from_static(b"hello "),
            Bytes::from(vec![7u8; 100_000]),
        ];
        let all = seal(&parts, 100_006).unwrap();
        assert_eq!(&all[..6], b"hello ");
        assert!(all[6..].iter().all(|&b| b == 7));
        let piece = all.slice(3..50_000);
        let (fd, off) = locate(&piece).unwrap();
        assert_eq!(off, 3);
        assert_eq!(pread(fd, off, piece.len()), piece.to_vec());
        // Heap memory and slices running past the mapping are not located.
        assert!(locate(&parts[1]).is_none());
        assert!(locate(&[]).is_none());
    }

    #[test]
    fn a_sealed_file_refuses_writes_and_is_closed_with_its_last_bytes() {
        let all = seal(&[Bytes::from_static(b"immutable")], 9).unwrap();
        let (fd, _) = locate(&all).unwrap();
        // SAFETY: writes 1 byte from a valid buffer to an open descriptor.
        let n = unsafe { libc::pwrite(fd, b"X".as_ptr().cast(), 1, 0) };
        assert_eq!(n, -1);
        assert_eq!(io::Error::last_os_error().raw_os_error(), Some(libc::EPERM));
        // SAFETY: an all-zero `stat` is a valid value; `fstat` fills it from an open fd.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::fstat(fd, &mut st) }, 0);
        let mapped = || {
            let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
            maps.lines().any(|l| {
                l.contains("fileproxy-cache")
                    && l.split_whitespace().nth(4) == Some(&st.st_ino.to_string())
            })
        };
        let piece = all.slice(2..5);
        drop(all);
        assert!(
            mapped() && locate(&piece).is_some(),
            "a slice keeps the mapping alive"
        );
        drop(piece);
        assert!(!mapped(), "the last slice unmaps the file");
    }

    #[test]
    fn parts_that_do_not_add_up_are_refused() {
        assert!(seal(&[Bytes::from_static(b"abc")], 4).is_err());
        assert!(seal(&[], 0).is_err());
    }
}
