//! The file format of every derived file (docs/FORMAT.md, "Derived files"):
//!
//! ```text
//! offset  size  field
//!      0     8  magic "IMGVDRV\0"
//!      8     8  kind tag (ASCII, NUL-padded): IVFPQ, HAMMING, BIVF, WHITEN, VLAD, VOTING,
//!                   DENSE, VIEW
//!     16     4  format version of the kind's body (u32 LE)
//!     20     4  reserved, 0
//!     24     8  body length in bytes (u64 LE)
//!     32     n  body (the kind's own layout)
//!   32+n     4  CRC32 of bytes 0..32+n (u32 LE)
//! ```
//! Files are written to a temporary name, synced, renamed and their folder synced, so a reader
//! sees a whole file or none. Reading checks every header field and the CRC.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use imgvec_storage::{write_atomic, Vfs};

use crate::error::IndexError;

const MAGIC: &[u8; 8] = b"IMGVDRV\0";
/// Bytes before the body.
pub(crate) const HEADER_LEN: usize = 32;
/// Bytes after the body.
pub(crate) const FOOTER_LEN: usize = 4;

/// What a derived file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    IvfPq,
    Hamming,
    BinaryIvf,
    Whitening,
    Vlad,
    Voting,
    Dense,
    View,
}

impl Kind {
    pub(crate) const ALL: [Kind; 8] = [
        Kind::IvfPq,
        Kind::Hamming,
        Kind::BinaryIvf,
        Kind::Whitening,
        Kind::Vlad,
        Kind::Voting,
        Kind::Dense,
        Kind::View,
    ];

    fn tag(self) -> [u8; 8] {
        let name: &[u8] = match self {
            Kind::IvfPq => b"IVFPQ",
            Kind::Hamming => b"HAMMING",
            Kind::BinaryIvf => b"BIVF",
            Kind::Whitening => b"WHITEN",
            Kind::Vlad => b"VLAD",
            Kind::Voting => b"VOTING",
            Kind::Dense => b"DENSE",
            Kind::View => b"VIEW",
        };
        let mut tag = [0u8; 8];
        tag[..name.len()].copy_from_slice(name);
        tag
    }

    /// Version of the kind's body layout; bumped when it changes (older files are rebuilt).
    fn version(self) -> u32 {
        1
    }
}

/// The header of a file of `kind` whose body is `body_len` bytes.
fn header(kind: Kind, body_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&kind.tag());
    out.extend_from_slice(&kind.version().to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(body_len as u64).to_le_bytes());
    out
}

/// A whole file: header, `body`, footer.
#[cfg(test)]
pub(crate) fn encode(kind: Kind, body: &[u8]) -> Vec<u8> {
    let mut out = header(kind, body.len());
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The body of a whole file of `kind`, or why it is not one.
pub(crate) fn decode(kind: Kind, bytes: &[u8]) -> Result<&[u8], String> {
    let len = check_header(kind, bytes)?;
    let (whole, footer) = bytes.split_at(bytes.len() - FOOTER_LEN);
    let crc = u32::from_le_bytes(footer.try_into().expect("4 bytes"));
    if crc32fast::hash(whole) != crc {
        return Err("checksum mismatch".into());
    }
    Ok(&whole[HEADER_LEN..HEADER_LEN + len])
}

/// The body length of a file of `kind` from its header, checked against the file's length (the
/// CRC is not checked), or why it is not one.
fn check_header(kind: Kind, bytes: &[u8]) -> Result<usize, String> {
    if bytes.len() < HEADER_LEN + FOOTER_LEN {
        return Err(format!("too short ({} bytes)", bytes.len()));
    }
    let (head, rest) = bytes.split_at(HEADER_LEN);
    if &head[..8] != MAGIC {
        return Err("not an imgvec derived file (bad magic)".into());
    }
    if head[8..16] != kind.tag() {
        return Err(format!(
            "holds {}, expected {:?}",
            String::from_utf8_lossy(&head[8..16]).trim_end_matches('\0'),
            kind
        ));
    }
    let word = |at: usize| u32::from_le_bytes(head[at..at + 4].try_into().expect("4 bytes"));
    if word(16) != kind.version() {
        return Err(format!(
            "format version {} (expected {})",
            word(16),
            kind.version()
        ));
    }
    let body_len = u64::from_le_bytes(head[24..32].try_into().expect("8 bytes"));
    if body_len != (rest.len() - FOOTER_LEN) as u64 {
        return Err(format!(
            "body of {} bytes, header says {body_len} (truncated or extended)",
            rest.len() - FOOTER_LEN
        ));
    }
    Ok(rest.len() - FOOTER_LEN)
}

/// Writes a derived file atomically through `vfs`: temporary file, synced, renamed, folder
/// synced (`imgvec_storage::write_atomic`).
pub(crate) fn write(vfs: &dyn Vfs, path: &Path, kind: Kind, body: &[u8]) -> Result<(), IndexError> {
    // Streamed: a body of a gigabyte is not copied once more to frame it.
    let head = header(kind, body.len());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head);
    crc.update(body);
    let footer = crc.finalize().to_le_bytes();
    write_atomic(vfs, path, &[&head, body, &footer]).map_err(|e| IndexError::Invalid(e.to_string()))
}

/// Checks a derived file of any kind (named by its own header): header fields, length and CRC.
/// Returns the file's size, or why it is damaged.
pub(crate) fn check_file(path: &Path) -> Result<u64, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let tag = bytes.get(8..16).ok_or("too short for a header")?;
    let kind = Kind::ALL
        .iter()
        .copied()
        .find(|k| k.tag() == tag)
        .ok_or_else(|| format!("unknown kind {:?}", String::from_utf8_lossy(tag)))?;
    decode(kind, &bytes)?;
    Ok(bytes.len() as u64)
}

/// Reads a derived file of `kind`, checking its header and CRC; returns the body.
pub(crate) fn read(path: &Path, kind: Kind) -> Result<Vec<u8>, IndexError> {
    read_with(path, kind, |body| Ok(body.to_vec()))
}

/// Maps the derived file at `path` read-only.
fn map_file(path: &Path) -> Result<memmap2::Mmap, IndexError> {
    let file = std::fs::File::open(path)?;
    // SAFETY: derived files are written whole under a new name and published by rename
    // (derived/publish.rs); imgvec never truncates or rewrites one in place, and sweeping one
    // unlinks it, which leaves a mapping intact.
    Ok(unsafe { memmap2::Mmap::map(&file)? })
}

/// Reads a derived file of `kind`, checks its header and CRC, and hands `parse` the body in
/// place: the file is mapped, not copied into memory; the map lives only while `parse` reads it.
pub(crate) fn read_with<T>(
    path: &Path,
    kind: Kind,
    parse: impl FnOnce(&[u8]) -> Result<T, IndexError>,
) -> Result<T, IndexError> {
    let bytes = map_file(path)?;
    let _ = bytes.advise(memmap2::Advice::Sequential);
    let body = decode(kind, &bytes)
        .map_err(|e| IndexError::Invalid(format!("{}: {e}", path.display())))?;
    parse(body).map_err(|e| IndexError::Invalid(format!("{}: {e}", path.display())))
}

/// A derived file's body kept where it lies: the file's read-only mapping (or, for bodies made
/// in memory, an aligned heap copy), shared by what is read from it. Structures whose bulk is
/// searched in place (the voting and dense-window lists, `index::mapped_lists`) hold one for as
/// long as they use it; the rest parse [`Body::bytes`] and let it go.
#[derive(Clone)]
pub(crate) struct Body {
    backing: Arc<dyn AsRef<[u8]> + Send + Sync>,
    /// Where the whole body starts in `backing` (slices keep it: [`Body::leading`]).
    origin: usize,
    start: usize,
    end: usize,
    /// The file `backing` maps, for a body read without its CRC checked
    /// ([`read_body_unchecked`]); `None` for bodies made in memory.
    file: Option<Arc<Unchecked>>,
}

/// A mapped file read without its CRC checked: its kind, and whether a check found the CRC to
/// hold (shared by the body's slices, so the file is read for it once).
struct Unchecked {
    kind: Kind,
    held: AtomicBool,
}

impl Body {
    /// `bytes` copied into memory aligned as a mapping is (page size), for bodies not read from
    /// a file (tests, formats converted in memory).
    pub fn copied(bytes: &[u8]) -> Body {
        let backing = Arc::new(Aligned::copy_of(bytes));
        Body {
            backing,
            origin: 0,
            start: 0,
            end: bytes.len(),
            file: None,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &(*self.backing).as_ref()[self.start..self.end]
    }

    /// The part `range` of this body (relative to its start), sharing its memory.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Body {
        assert!(range.start <= range.end && range.end <= self.end - self.start);
        Body {
            backing: self.backing.clone(),
            origin: self.origin,
            start: self.start + range.start,
            end: self.start + range.end,
            file: self.file.clone(),
        }
    }

    /// The whole body's bytes before this slice's byte `upto` (the body's own when this is the
    /// whole body): what a structure checking its own parts covers with a checksum.
    pub fn leading(&self, upto: usize) -> &[u8] {
        assert!(upto <= self.end - self.start);
        &(*self.backing).as_ref()[self.origin..self.start + upto]
    }

    /// Checks the CRC of the whole file this body was mapped from ([`read_body_unchecked`]).
    pub fn check_file(&self, kind: Kind) -> Result<(), String> {
        decode(kind, (*self.backing).as_ref()).map(|_| ())
    }

    /// The whole file's CRC checked, when this body (or the body it is part of) was read from a
    /// file without it: what a part that does not check itself asks before a parser that
    /// trusts its input (FAISS) reads it. Bodies made in memory have nothing to check.
    /// Once it held, later calls (on the body or its slices) do not read the file again.
    pub fn check_whole(&self) -> Result<(), String> {
        match &self.file {
            Some(f) if !f.held.load(Ordering::Acquire) => {
                self.check_file(f.kind)?;
                f.held.store(true, Ordering::Release);
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Heap bytes aligned to 4,096 (as a mapping's start is).
struct Aligned {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: `Aligned` owns its allocation and only hands out shared slices of it.
unsafe impl Send for Aligned {}
// SAFETY: as above; nothing mutates the bytes after `copy_of`.
unsafe impl Sync for Aligned {}

impl Aligned {
    const ALIGN: usize = 4096;

    fn layout(len: usize) -> std::alloc::Layout {
        std::alloc::Layout::from_size_align(len.max(1), Self::ALIGN).expect("valid layout")
    }

    fn copy_of(bytes: &[u8]) -> Aligned {
        let layout = Self::layout(bytes.len());
        // SAFETY: the layout has a nonzero size; the copy writes `bytes.len()` bytes into the
        // new allocation of at least that size.
        unsafe {
            let raw = std::alloc::alloc(layout);
            let Some(ptr) = std::ptr::NonNull::new(raw) else {
                std::alloc::handle_alloc_error(layout)
            };
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr.as_ptr(), bytes.len());
            Aligned {
                ptr,
                len: bytes.len(),
            }
        }
    }
}

impl AsRef<[u8]> for Aligned {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` holds `len` initialised bytes for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in `copy_of` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.len)) }
    }
}

/// A derived file of `kind` mapped, its header fields and length checked but not its CRC, which
/// reads every byte: the caller checks it ([`Body::check_whole`]) unless the structure it reads
/// checks its own parts as it uses them (the voting and dense-window lists,
/// `index::mapped_lists`).
pub(crate) fn read_body_unchecked(path: &Path, kind: Kind) -> Result<Body, IndexError> {
    // The mapping lives as long as the last `Body` holding it.
    let map = map_file(path)?;
    let len = check_header(kind, &map)
        .map_err(|e| IndexError::Invalid(format!("{}: {e}", path.display())))?;
    Ok(Body {
        backing: Arc::new(map),
        origin: HEADER_LEN,
        start: HEADER_LEN,
        end: HEADER_LEN + len,
        file: Some(Arc::new(Unchecked {
            kind,
            held: AtomicBool::new(false),
        })),
    })
}

/// Reads a body's little-endian fields front to back.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], IndexError> {
        if n > self.bytes.len() {
            return Err(IndexError::Invalid(format!(
                "body ends early ({n} bytes wanted, {} left)",
                self.bytes.len()
            )));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    pub fn u64(&mut self) -> Result<u64, IndexError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    pub fn u32(&mut self) -> Result<u32, IndexError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    /// Bytes not yet taken.
    pub fn remaining(&self) -> usize {
        self.bytes.len()
    }

    /// What is left.
    pub fn rest(self) -> &'a [u8] {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_damage_is_refused() {
        let body = b"some index bytes".to_vec();
        let file = encode(Kind::Hamming, &body);
        assert_eq!(file.len(), HEADER_LEN + body.len() + FOOTER_LEN);
        assert_eq!(decode(Kind::Hamming, &file).unwrap(), &body[..]);
        assert!(decode(Kind::IvfPq, &file).unwrap_err().contains("HAMMING"));
        for at in 0..file.len() {
            let mut bad = file.clone();
            bad[at] ^= 0x01;
            assert!(
                decode(Kind::Hamming, &bad).is_err(),
                "flip at {at} accepted"
            );
        }
        for len in 0..file.len() {
            assert!(decode(Kind::Hamming, &file[..len]).is_err(), "cut at {len}");
        }
        let mut longer = file.clone();
        longer.push(0);
        assert!(decode(Kind::Hamming, &longer).is_err());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.idx");
        write(&imgvec_storage::StdFs, &path, Kind::Vlad, &body).unwrap();
        assert_eq!(read(&path, Kind::Vlad).unwrap(), body);
        assert!(!path.with_extension("tmp").exists());
        let err = read(&path, Kind::Whitening).unwrap_err().to_string();
        assert!(err.contains("x.idx"), "{err}");

        // Mapped: the body in place, at its file offset; slices share it.
        let mapped = read_body_unchecked(&path, Kind::Vlad).unwrap();
        mapped.check_file(Kind::Vlad).unwrap();
        assert_eq!(mapped.bytes(), &body[..]);
        assert_eq!(mapped.slice(5..9).bytes(), &body[5..9]);
        assert_eq!(
            mapped.bytes().as_ptr() as usize % 4096,
            HEADER_LEN,
            "not the file's mapping"
        );
        let copied = Body::copied(&body);
        assert_eq!(copied.bytes(), &body[..]);
        assert_eq!(copied.bytes().as_ptr() as usize % 4096, 0);
        let mut bad = std::fs::read(&path).unwrap();
        bad[HEADER_LEN + 2] ^= 1;
        std::fs::write(&path, bad).unwrap();
        let err = read_body_unchecked(&path, Kind::Vlad)
            .unwrap()
            .check_file(Kind::Vlad)
            .unwrap_err();
        assert!(err.contains("checksum"), "{err}");
        // The whole-file check, on the body or a slice of it, fails every time; a body made in
        // memory has none.
        let damaged = read_body_unchecked(&path, Kind::Vlad).unwrap();
        for _ in 0..2 {
            assert!(damaged.slice(5..9).check_whole().is_err());
            assert!(damaged.check_whole().is_err());
        }
        assert!(copied.check_whole().is_ok());
    }
}
