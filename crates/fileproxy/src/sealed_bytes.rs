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
//!
//! The file's memory is then collapsed into transparent huge pages
//! (`madvise(MADV_COLLAPSE)`, which works even where `shmem_enabled` is `never`): with
//! 4 KiB pages the kernel looks up every page of every `sendfile` in the file's page
//! cache, with a 2 MiB page it looks up one in 512. A copy may be padded to a whole
//! huge page ([`padding`]) so that objects just under one can use it too.

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
    /// The object's bytes (the start of the mapping).
    len: usize,
    /// The mapping's length (the file rounded up to whole pages).
    map_len: usize,
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
            libc::munmap(self.ptr.as_ptr().cast(), self.map_len);
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

/// The size of a transparent huge page for file memory (`hpage_pmd_size`), when the
/// kernel has them.
fn huge_page() -> Option<usize> {
    static HUGE: OnceLock<Option<usize>> = OnceLock::new();
    *HUGE.get_or_init(|| {
        let s =
            std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size").ok()?;
        let n: usize = s.trim().parse().ok()?;
        (n.is_power_of_two() && n > page_size()).then_some(n)
    })
}

/// The size of a base page.
fn page_size() -> usize {
    // SAFETY: `sysconf` has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// Bytes a sealed copy of `len` bytes would add past `len` to round up to a whole huge
/// page: non-zero only when that costs at most a sixteenth of `len`. Padding is a hole
/// in the file until a collapse fills it, so it is an upper bound.
pub fn padding(len: usize) -> usize {
    let Some(huge) = huge_page() else {
        return 0;
    };
    let pad = len.next_multiple_of(huge) - len;
    if pad > 0 && pad <= len / 16 {
        pad
    } else {
        0
    }
}

/// Copies `parts` (`len` bytes in all, `len > 0`) into a new sealed `memfd` and returns
/// them as one [`Bytes`] over its read-only mapping, collapsed into huge pages where
/// the kernel can; `padded` rounds the file up by [`padding`] first (the caller has
/// room for it). Errors (no `memfd`, the descriptor budget spent, no memory) leave
/// nothing behind; the caller keeps its heap copy.
pub fn seal(parts: &[Bytes], len: usize, padded: bool) -> io::Result<Bytes> {
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
    let file_len = if padded { len + padding(len) } else { len };
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
    file.set_len(file_len as u64)?;
    for p in parts {
        file.write_all(p)?;
    }
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
    // SAFETY: `fcntl` on an open descriptor; the result is checked.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let map_len = file_len.next_multiple_of(page_size());
    let huge = huge_page().filter(|&h| file_len >= h);
    let ptr = map_read_only(file.as_raw_fd(), map_len, huge)?;
    let sealed = Sealed {
        file: OwnedFd::from(file),
        ptr,
        len,
        map_len,
    };
    if let Some(h) = huge {
        collapse(ptr, file_len / h * h);
    }
    let start = ptr.as_ptr() as usize;
    MAPPINGS
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(start, (start + len, sealed.file.as_raw_fd()));
    LIVE.fetch_add(1, Ordering::Relaxed);
    Ok(Bytes::from_owner(sealed))
}

/// Maps `map_len` bytes of `fd` read-only and shared, at an address aligned to `align`
/// when given (a huge page can only be mapped, and collapsed, where the address and the
/// file offset agree on it).
fn map_read_only(fd: RawFd, map_len: usize, align: Option<usize>) -> io::Result<NonNull<u8>> {
    let ptr = match align {
        None => {
            // SAFETY: a fresh read-only shared mapping of a file at least `map_len` long
            // (rounded to pages).
            unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    map_len,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    fd,
                    0,
                )
            }
        }
        Some(align) => {
            let total = map_len + align;
            // SAFETY: reserves address space only (no access, no memory).
            let base = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    total,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            if base == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let start = (base as usize).next_multiple_of(align);
            // SAFETY: `start..start + map_len` lies inside the reservation just made,
            // which nothing else uses; MAP_FIXED replaces that part of it.
            let ptr = unsafe {
                libc::mmap(
                    start as *mut libc::c_void,
                    map_len,
                    libc::PROT_READ,
                    libc::MAP_SHARED | libc::MAP_FIXED,
                    fd,
                    0,
                )
            };
            let head = start - base as usize;
            let tail = total - head - map_len;
            if ptr == libc::MAP_FAILED {
                let e = io::Error::last_os_error();
                // SAFETY: unmaps the whole reservation made above.
                unsafe { libc::munmap(base, total) };
                return Err(e);
            }
            // SAFETY: the unused head and tail of the reservation (page-aligned: `base`,
            // `start` and `map_len` are).
            unsafe {
                if head > 0 {
                    libc::munmap(base, head);
                }
                if tail > 0 {
                    libc::munmap((start + map_len) as *mut libc::c_void, tail);
                }
            }
            ptr
        }
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned a null mapping"))
}

/// Asks the kernel to move the first `len` bytes (whole huge pages) of the mapping at
/// `ptr` into huge pages. Best effort: a refusal (an older kernel, `shmem_enabled =
/// deny`, no free huge page) leaves 4 KiB pages, which work the same, only slower;
/// the first one is logged.
fn collapse(ptr: NonNull<u8>, len: usize) {
    static LOGGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    // SAFETY: `ptr..ptr + len` lies inside a mapping this module made; MADV_COLLAPSE
    // only changes how its (sealed, unchanging) pages are held.
    if unsafe { libc::madvise(ptr.as_ptr().cast(), len, libc::MADV_COLLAPSE) } != 0 {
        let e = io::Error::last_os_error();
        if !LOGGED.swap(true, Ordering::Relaxed) {
            tracing::info!(error = %e, "cached objects stay in 4 KiB pages: the kernel did not collapse one into huge pages (logged once)");
        }
    }
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
        let all = seal(&parts, 100_006, false).unwrap();
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
        let all = seal(&[Bytes::from_static(b"immutable")], 9, false).unwrap();
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

    /// The `ShmemPmdMapped` kB of the mapping of this process that starts at `at`.
    fn pmd_mapped_kb(at: usize) -> Option<u64> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut lines = smaps.lines();
        lines.find(|l| {
            l.split('-')
                .next()
                .and_then(|a| usize::from_str_radix(a, 16).ok())
                == Some(at)
        })?;
        lines
            .find_map(|l| l.strip_prefix("ShmemPmdMapped:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    #[test]
    fn an_object_just_under_a_huge_page_is_padded_and_collapsed_into_one() {
        let Some(huge) = huge_page() else {
            eprintln!("SKIP: this kernel has no transparent huge pages for files");
            return;
        };
        let shmem = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/shmem_enabled")
            .unwrap_or_default();
        if shmem.contains("[deny]") {
            eprintln!("SKIP: shmem_enabled = deny forbids huge pages for memfd");
            return;
        }
        let len = huge - huge / 20;
        assert_eq!(padding(len), huge / 20);
        assert_eq!(
            padding(huge / 2),
            0,
            "padding past a sixteenth is not worth it"
        );
        let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let all = seal(&[Bytes::from(body.clone())], len, true).unwrap();
        assert_eq!(all.len(), len);
        assert_eq!(
            all.as_ptr() as usize % huge,
            0,
            "the mapping is huge-page aligned"
        );
        // Reading it faults the mapping in: one PMD when the collapse worked.
        assert!(all[..] == body[..]);
        assert_eq!(
            pmd_mapped_kb(all.as_ptr() as usize),
            Some((huge / 1024) as u64),
            "the sealed copy is one huge page"
        );
        let (fd, off) = locate(&all.slice(len - 10..)).unwrap();
        assert_eq!(pread(fd, off, 10), body[len - 10..].to_vec());
        // Unpadded, only whole huge pages collapse; the mapping still reads back.
        let small = seal(&[Bytes::from(body.clone())], len, false).unwrap();
        assert!(small[..] == body[..]);
        assert_eq!(pmd_mapped_kb(small.as_ptr() as usize), Some(0));
    }

    #[test]
    fn parts_that_do_not_add_up_are_refused() {
        assert!(seal(&[Bytes::from_static(b"abc")], 4, false).is_err());
        assert!(seal(&[], 0, false).is_err());
    }
}
