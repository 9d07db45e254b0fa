//! Page-aligned band writes that bypass the page cache.
//!
//! Copying gigabytes of freshly produced tensor data into the page cache (a buffered `pwrite`)
//! costs more kernel CPU than producing it, and the bytes still have to reach the disk before
//! the final `fsync`. A [`PageBuf`] places a band in memory at the same offset within a 4 KiB
//! page as its destination in the file, so the band's whole pages can go straight to the device
//! through an `O_DIRECT` handle; the partial first and last pages (shared with neighbouring
//! bands) go through the ordinary buffered handle. Where the file system refuses `O_DIRECT`
//! (at open or with `EINVAL` on a write), every write falls back to the buffered handle.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Alignment of direct writes, in memory and in the file: the page size, a multiple of the
/// logical block size of the devices this runs on (a device needing more gets `EINVAL`, and the
/// writer falls back to buffered writes).
pub const DIRECT_ALIGN: usize = 4096;

/// A reusable buffer holding one band at its file offset's position within a page.
#[derive(Default)]
pub struct PageBuf {
    bytes: Vec<u8>,
    /// Index in `bytes` of the band's first byte.
    start: usize,
    len: usize,
    at: u64,
}

impl PageBuf {
    pub fn new() -> PageBuf {
        PageBuf::default()
    }

    /// A window of `len` bytes for the band that goes to file offset `at`, placed so that
    /// `at`'s page boundaries fall on `DIRECT_ALIGN`-aligned addresses. Its contents are
    /// whatever an earlier band left (zero when the buffer grows): callers overwrite all of it.
    pub fn window(&mut self, at: u64, len: usize) -> &mut [u8] {
        let lead = (at % DIRECT_ALIGN as u64) as usize;
        // Room for the lead, the band rounded up to whole pages, and aligning the start.
        let need = (lead + len).div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN + DIRECT_ALIGN;
        if self.bytes.len() < need {
            self.bytes = vec![0; need];
        }
        let base = self.bytes.as_ptr().align_offset(DIRECT_ALIGN);
        self.start = base + lead;
        self.len = len;
        self.at = at;
        &mut self.bytes[self.start..self.start + len]
    }

    /// The band prepared by the last [`window`](Self::window).
    pub fn data(&self) -> &[u8] {
        &self.bytes[self.start..self.start + self.len]
    }

    /// The file offset given to the last [`window`](Self::window).
    pub fn file_offset(&self) -> u64 {
        self.at
    }

    /// The band split at its destination's page boundaries: (partial head, whole pages,
    /// partial tail). The middle part starts at a page boundary of the file and at an aligned
    /// address, and its length is a multiple of `DIRECT_ALIGN`.
    fn split(&self) -> (&[u8], &[u8], &[u8]) {
        let data = self.data();
        let lead = (self.at % DIRECT_ALIGN as u64) as usize;
        let head = if lead == 0 {
            0
        } else {
            (DIRECT_ALIGN - lead).min(data.len())
        };
        let pages = (data.len() - head) / DIRECT_ALIGN * DIRECT_ALIGN;
        let (h, rest) = data.split_at(head);
        let (m, t) = rest.split_at(pages);
        (h, m, t)
    }
}

/// The `O_DIRECT` companion of a writable file, with its fallback state.
#[derive(Debug)]
pub struct DirectFile {
    file: Option<File>,
    ok: AtomicBool,
    direct_bytes: AtomicU64,
}

impl DirectFile {
    /// Open `path` a second time with `O_DIRECT` when `want`; a refusal leaves only buffered
    /// writes (not an error).
    pub fn open(path: &Path, want: bool) -> DirectFile {
        let file = if want {
            OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(path)
                .ok()
        } else {
            None
        };
        DirectFile {
            ok: AtomicBool::new(file.is_some()),
            file,
            direct_bytes: AtomicU64::new(0),
        }
    }

    /// Bytes that went through the `O_DIRECT` handle so far.
    pub fn direct_bytes(&self) -> u64 {
        self.direct_bytes.load(Ordering::Relaxed)
    }

    /// Whether direct writes are (still) in use.
    pub fn active(&self) -> bool {
        self.ok.load(Ordering::Relaxed)
    }

    /// Write `buf`'s band at its file offset: whole pages directly, partial pages through
    /// `buffered`, or, with `defer`, kept there to be written later by
    /// [`write_partial_pages`](Self::write_partial_pages) (a buffered write waits for the
    /// inode lock a direct write holds; deferred pieces of neighbouring bands join into whole
    /// pages). `EINVAL` from a direct write switches this file to buffered writes for good.
    pub fn write_band(
        &self,
        buffered: &File,
        buf: &PageBuf,
        defer: Option<&mut PartialPages>,
    ) -> io::Result<()> {
        let at = buf.file_offset();
        let (head, pages, tail) = buf.split();
        let Some(direct) = self
            .file
            .as_ref()
            .filter(|_| self.active() && !pages.is_empty())
        else {
            return buffered.write_all_at(buf.data(), at);
        };
        let mid = at + head.len() as u64;
        match write_direct(direct, pages, mid) {
            Ok(()) => {
                self.direct_bytes
                    .fetch_add(pages.len() as u64, Ordering::Relaxed);
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                self.ok.store(false, Ordering::Relaxed);
                return buffered.write_all_at(buf.data(), at);
            }
            Err(e) => return Err(e),
        }
        let end = mid + pages.len() as u64;
        match defer {
            Some(d) => {
                d.push(at, head);
                d.push(end, tail);
                Ok(())
            }
            None => {
                buffered.write_all_at(head, at)?;
                buffered.write_all_at(tail, end)
            }
        }
    }

    /// Write deferred partial pages: runs of contiguous pieces are joined, their whole pages
    /// written directly (where direct I/O is active), the rest through `buffered`.
    pub fn write_partial_pages(&self, buffered: &File, pages: PartialPages) -> io::Result<()> {
        let mut pieces = pages.0;
        pieces.sort_unstable_by_key(|p| p.0);
        let mut buf = PageBuf::new();
        let mut k = 0;
        while k < pieces.len() {
            // The run of pieces that follow each other without a gap.
            let mut end = k + 1;
            let mut run_end = pieces[k].0 + pieces[k].1.len() as u64;
            while end < pieces.len() && pieces[end].0 == run_end {
                run_end += pieces[end].1.len() as u64;
                end += 1;
            }
            let at = pieces[k].0;
            let len = usize::try_from(run_end - at).map_err(io::Error::other)?;
            let w = buf.window(at, len);
            let mut o = 0;
            for (_, bytes) in &pieces[k..end] {
                w[o..o + bytes.len()].copy_from_slice(bytes);
                o += bytes.len();
            }
            self.write_band(buffered, &buf, None)?;
            k = end;
        }
        Ok(())
    }
}

/// Partial first and last pages of bands, kept until their neighbours are written.
#[derive(Debug, Default)]
pub struct PartialPages(Vec<(u64, Vec<u8>)>);

impl PartialPages {
    pub fn new() -> PartialPages {
        PartialPages::default()
    }

    fn push(&mut self, at: u64, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.0.push((at, bytes.to_vec()));
        }
    }

    /// Take over `other`'s pieces.
    pub fn append(&mut self, mut other: PartialPages) {
        self.0.append(&mut other.0);
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.0.iter().map(|p| p.1.len()).sum()
    }
}

/// `pwrite` all of `data` through the direct handle. A short direct write that leaves an
/// unaligned remainder makes the next call fail with `EINVAL`, which the caller handles.
fn write_direct(direct: &File, data: &[u8], at: u64) -> io::Result<()> {
    #[cfg(test)]
    if tests::FORCE_MISALIGNED.with(|f| f.get()) {
        // Test hook: a real direct write from a misaligned address, so the file system's own
        // EINVAL exercises the fallback.
        let v = vec![0u8; data.len() + 1];
        let off = if v.as_ptr().align_offset(DIRECT_ALIGN) == 1 {
            2
        } else {
            1
        };
        let mut w = vec![0u8; data.len() + off];
        w[off..].copy_from_slice(data);
        return direct.write_all_at(&w[off..], at);
    }
    direct.write_all_at(data, at)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        pub static FORCE_MISALIGNED: Cell<bool> = const { Cell::new(false) };
    }

    #[test]
    fn window_is_aligned_to_the_file_offset() {
        let mut b = PageBuf::new();
        for (at, len) in [
            (0u64, 10usize),
            (4095, 2),
            (4096, 8192),
            (12345, 100000),
            (7, 0),
        ] {
            let w = b.window(at, len);
            assert_eq!(w.len(), len);
            let addr = w.as_ptr() as usize;
            assert_eq!(addr % DIRECT_ALIGN, at as usize % DIRECT_ALIGN, "{at}");
            let (h, m, t) = b.split();
            assert_eq!(h.len() + m.len() + t.len(), len);
            assert_eq!(m.len() % DIRECT_ALIGN, 0);
            if !m.is_empty() {
                assert_eq!(m.as_ptr() as usize % DIRECT_ALIGN, 0);
                assert_eq!((at + h.len() as u64) % DIRECT_ALIGN as u64, 0);
            }
            assert!(t.len() < DIRECT_ALIGN);
        }
    }

    fn fs_magic(p: &Path) -> i64 {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: statfs is a plain C struct of integers, for which all-zero bytes are valid.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid C string and a writable statfs.
        assert_eq!(unsafe { libc::statfs(c.as_ptr(), &mut st) }, 0);
        st.f_type as i64
    }

    /// Bands of odd sizes at odd offsets written through `d`; the file must hold exactly them.
    fn write_bands(path: &Path, d: &DirectFile, deferred: bool) -> Vec<u8> {
        let mut defer = deferred.then(PartialPages::new);
        let size = 5 * DIRECT_ALIGN + 777;
        let buffered = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .unwrap();
        buffered.set_len(size as u64).unwrap();
        let mut want = vec![0u8; size];
        // Whole pages: 8192..12288 and 16384..20480; everything else is partial.
        let cuts = [0, 100, 4096, 4097, 3 * 4096 + 5, 5 * 4096, size];
        let mut b = PageBuf::new();
        for (k, w) in cuts.windows(2).enumerate().rev() {
            let (a, z) = (w[0], w[1]);
            for (i, v) in b.window(a as u64, z - a).iter_mut().enumerate() {
                *v = (i * 31 + k * 7 + 1) as u8;
            }
            want[a..z].copy_from_slice(b.data());
            match defer.as_mut() {
                Some(p) => d.write_band(&buffered, &b, Some(p)).unwrap(),
                None => d.write_band(&buffered, &b, None).unwrap(),
            }
        }
        if let Some(p) = defer {
            d.write_partial_pages(&buffered, p).unwrap();
        }
        want
    }

    #[test]
    fn direct_buffered_and_fallback_writes_give_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        for mode in ["direct", "deferred", "buffered", "fallback"] {
            let path = dir.path().join(mode);
            std::fs::write(&path, b"").unwrap();
            let d = DirectFile::open(&path, mode != "buffered");
            let direct_open = d.active();
            FORCE_MISALIGNED.with(|f| f.set(mode == "fallback"));
            let want = write_bands(&path, &d, mode == "deferred");
            FORCE_MISALIGNED.with(|f| f.set(false));
            assert_eq!(std::fs::read(&path).unwrap(), want, "{mode}");
            match mode {
                "buffered" => assert_eq!(d.direct_bytes(), 0),
                // Where the file system takes O_DIRECT, whole pages went through it.
                "direct" if direct_open => assert_eq!(d.direct_bytes(), 2 * 4096),
                // … and the deferred pieces 12288..12293 + 12293..16384 join into a third.
                "deferred" if direct_open => assert_eq!(d.direct_bytes(), 3 * 4096),
                "direct" | "deferred" => {
                    eprintln!("note: {} refuses O_DIRECT", dir.path().display())
                }
                _ => {
                    // A file system that accepts misaligned direct writes (tmpfs) never
                    // reaches the fallback; one that enforces alignment (ext4, xfs) must.
                    let enforcing = matches!(fs_magic(dir.path()), 0xEF53 | 0x5846_5342);
                    if direct_open && enforcing {
                        assert!(!d.active(), "EINVAL must switch to buffered writes");
                        assert_eq!(d.direct_bytes(), 0);
                    } else {
                        eprintln!("note: fallback not reached on this file system");
                    }
                }
            }
        }
    }
}
