//! Immutable columnar segment files: a header, an id column and a vector column, a footer.
//!
//! The byte layout is specified in docs/FORMAT.md. A segment is written once, fsynced, and then
//! only ever read through a memory map; columns are 64-byte aligned so they are cast to `&[u64]`
//! and `&[f32]` without copying.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{IoContext, Result, StorageError};

pub const SEGMENT_MAGIC: [u8; 8] = *b"IMGVSEG\0";
pub const FOOTER_MAGIC: [u8; 8] = *b"IMGVEND\0";
pub const SEGMENT_FORMAT_VERSION: u32 = 1;
pub const HEADER_LEN: usize = 64;
pub const FOOTER_LEN: usize = 16;
const COLUMN_ALIGN: usize = 64;

#[cfg(not(target_endian = "little"))]
compile_error!("imgvec segment files are little-endian and are mapped without conversion");

fn align_up(n: usize) -> usize {
    n.div_ceil(COLUMN_ALIGN) * COLUMN_ALIGN
}

/// Where each part of a segment with `rows` rows of `dims` floats lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    ids_offset: usize,
    vectors_offset: usize,
    footer_offset: usize,
    file_len: usize,
}

impl Layout {
    fn new(rows: usize, dims: usize) -> Option<Layout> {
        let ids_offset = HEADER_LEN;
        let ids_len = rows.checked_mul(8)?;
        let vectors_offset = align_up(ids_offset.checked_add(ids_len)?);
        let vectors_len = rows.checked_mul(dims)?.checked_mul(4)?;
        let footer_offset = vectors_offset.checked_add(vectors_len)?;
        let file_len = footer_offset.checked_add(FOOTER_LEN)?;
        Some(Layout {
            ids_offset,
            vectors_offset,
            footer_offset,
            file_len,
        })
    }
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Writes a complete segment file at `path` and fsyncs it (the caller fsyncs the directory).
/// `vectors` holds `ids.len() * dims` floats, row-major.
pub fn write_segment(path: &Path, dims: usize, ids: &[u64], vectors: &[f32]) -> Result<()> {
    if dims == 0 || vectors.len() != ids.len() * dims {
        return Err(StorageError::Invalid {
            path: path.to_path_buf(),
            message: format!(
                "segment of {} rows with dims {dims} got {} floats",
                ids.len(),
                vectors.len()
            ),
        });
    }
    let layout = Layout::new(ids.len(), dims).ok_or_else(|| StorageError::Invalid {
        path: path.to_path_buf(),
        message: "segment too large".into(),
    })?;
    let id_bytes: &[u8] = bytemuck::cast_slice(ids);
    let vec_bytes: &[u8] = bytemuck::cast_slice(vectors);

    let mut header = [0u8; HEADER_LEN];
    header[0..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&(dims as u32).to_le_bytes());
    header[16..24].copy_from_slice(&(ids.len() as u64).to_le_bytes());
    header[24..32].copy_from_slice(&(layout.ids_offset as u64).to_le_bytes());
    header[32..40].copy_from_slice(&(layout.vectors_offset as u64).to_le_bytes());
    header[40..44].copy_from_slice(&crc32fast::hash(id_bytes).to_le_bytes());
    header[44..48].copy_from_slice(&crc32fast::hash(vec_bytes).to_le_bytes());
    let header_crc = crc32fast::hash(&header[..60]);
    header[60..64].copy_from_slice(&header_crc.to_le_bytes());

    let mut footer = [0u8; FOOTER_LEN];
    footer[0..8].copy_from_slice(&(layout.file_len as u64).to_le_bytes());
    footer[8..16].copy_from_slice(&FOOTER_MAGIC);

    let file = File::create(path).at(path)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let pad = [0u8; COLUMN_ALIGN];
    out.write_all(&header).at(path)?;
    out.write_all(id_bytes).at(path)?;
    out.write_all(&pad[..layout.vectors_offset - layout.ids_offset - id_bytes.len()])
        .at(path)?;
    out.write_all(vec_bytes).at(path)?;
    out.write_all(&footer).at(path)?;
    let file = out
        .into_inner()
        .map_err(|e| StorageError::io(path, e.into_error()))?;
    file.sync_all().at(path)?;
    Ok(())
}

/// A sealed, verified, memory-mapped segment.
pub struct Segment {
    path: PathBuf,
    map: Mmap,
    dims: usize,
    rows: usize,
    layout: Layout,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("path", &self.path)
            .field("dims", &self.dims)
            .field("rows", &self.rows)
            .finish()
    }
}

impl Segment {
    /// Maps `path` and verifies magic numbers, version, layout and every checksum before any
    /// byte of it is used; a damaged file is a `DataCorruption` error naming it.
    pub fn open(path: &Path) -> Result<Segment> {
        let file = File::open(path).at(path)?;
        // SAFETY: segment files are immutable once sealed (written, fsynced, then published in
        // the manifest) and only ever deleted, never modified in place, by imgvec. A process
        // outside imgvec truncating the file underneath us is outside the contract of mmap.
        let map = unsafe { Mmap::map(&file) }.at(path)?;
        let bad = |reason: String| StorageError::corruption(path, reason);
        let b: &[u8] = &map;
        if b.len() < HEADER_LEN + FOOTER_LEN {
            return Err(bad(format!(
                "file is {} bytes, shorter than header + footer",
                b.len()
            )));
        }
        if b[0..8] != SEGMENT_MAGIC {
            return Err(bad("bad magic: not an imgvec segment".into()));
        }
        if crc32fast::hash(&b[..60]) != le_u32(b, 60) {
            return Err(bad("header checksum mismatch".into()));
        }
        let version = le_u32(b, 8);
        if version != SEGMENT_FORMAT_VERSION {
            return Err(bad(format!("unsupported segment format version {version}")));
        }
        let dims = le_u32(b, 12) as usize;
        let rows = usize::try_from(le_u64(b, 16)).map_err(|_| bad("row count overflows".into()))?;
        let layout = Layout::new(rows, dims)
            .filter(|_| dims > 0)
            .ok_or_else(|| bad(format!("impossible shape {rows} x {dims}")))?;
        if le_u64(b, 24) != layout.ids_offset as u64
            || le_u64(b, 32) != layout.vectors_offset as u64
        {
            return Err(bad("column offsets do not match the header's shape".into()));
        }
        if b.len() != layout.file_len {
            return Err(bad(format!(
                "file is {} bytes, header says {} (truncated or extended)",
                b.len(),
                layout.file_len
            )));
        }
        let f = layout.footer_offset;
        if b[f + 8..f + 16] != FOOTER_MAGIC || le_u64(b, f) != layout.file_len as u64 {
            return Err(bad("bad footer".into()));
        }
        let ids_end = layout.ids_offset + rows * 8;
        if crc32fast::hash(&b[layout.ids_offset..ids_end]) != le_u32(b, 40) {
            return Err(bad("id column checksum mismatch".into()));
        }
        if b[ids_end..layout.vectors_offset].iter().any(|&x| x != 0) {
            return Err(bad("non-zero column padding".into()));
        }
        if crc32fast::hash(&b[layout.vectors_offset..f]) != le_u32(b, 44) {
            return Err(bad("vector column checksum mismatch".into()));
        }
        Ok(Segment {
            path: path.to_path_buf(),
            map,
            dims,
            rows,
            layout,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn dims(&self) -> usize {
        self.dims
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Size of the file in bytes.
    pub fn byte_len(&self) -> usize {
        self.layout.file_len
    }

    /// Row ids, in row order (includes rows deleted since the segment was sealed).
    pub fn ids(&self) -> &[u64] {
        let o = self.layout.ids_offset;
        // Alignment and length were established in `open`; the map is page aligned.
        bytemuck::cast_slice(&self.map[o..o + self.rows * 8])
    }

    /// All vectors, row-major, `rows * dims` floats.
    pub fn vectors(&self) -> &[f32] {
        let o = self.layout.vectors_offset;
        bytemuck::cast_slice(&self.map[o..self.layout.footer_offset])
    }

    pub fn vector(&self, row: usize) -> &[f32] {
        &self.vectors()[row * self.dims..(row + 1) * self.dims]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &Path) -> PathBuf {
        let path = dir.join("s.ivs");
        let ids = [7u64, 9, 11];
        let vectors: Vec<f32> = (0..12).map(|i| i as f32 * 0.5).collect();
        write_segment(&path, 4, &ids, &vectors).unwrap();
        path
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let seg = Segment::open(&sample(dir.path())).unwrap();
        assert_eq!(seg.ids(), &[7, 9, 11]);
        assert_eq!(seg.dims(), 4);
        assert_eq!(seg.vector(2), &[4.0, 4.5, 5.0, 5.5]);
    }

    #[test]
    fn every_flipped_byte_and_truncation_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample(dir.path());
        let good = std::fs::read(&path).unwrap();
        let damaged = dir.path().join("d.ivs");
        for i in 0..good.len() {
            let mut bytes = good.clone();
            bytes[i] ^= 0x5a;
            std::fs::write(&damaged, &bytes).unwrap();
            match Segment::open(&damaged) {
                Err(StorageError::DataCorruption { path, .. }) => assert_eq!(path, damaged),
                other => panic!("flip at byte {i}: {other:?}"),
            }
        }
        for len in [0, 10, good.len() - 1, good.len() - FOOTER_LEN] {
            std::fs::write(&damaged, &good[..len]).unwrap();
            assert!(matches!(
                Segment::open(&damaged),
                Err(StorageError::DataCorruption { .. })
            ));
        }
    }
}
