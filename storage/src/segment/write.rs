//! Writing a segment: columns in memory or streamed, each checksummed whole and per block as
//! it is produced, then written in one pass and fsynced.

use std::path::Path;

use super::*;
use crate::error::{Result, StorageError};
use crate::vfs::{Vfs, VfsFile};

/// Produces a column's bytes: hands every piece, in order, to the sink it is given.
pub type Emit<'a> = dyn Fn(&mut dyn FnMut(&[u8])) + Sync + 'a;

/// Where the bytes of a column to write come from.
#[derive(Clone, Copy)]
pub enum ColumnBytes<'a> {
    /// Held in memory.
    Slice(&'a [u8]),
    /// Produced piece by piece: `emit` hands every piece, in order, to the sink it is given.
    /// It is called twice (to checksum, then to write), so the column is never held whole in
    /// memory (compaction streams the merged rows from the memory-mapped victims).
    Stream { len: usize, emit: &'a Emit<'a> },
}

impl std::fmt::Debug for ColumnBytes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ColumnBytes::Slice(b) => write!(f, "Slice({} bytes)", b.len()),
            ColumnBytes::Stream { len, .. } => write!(f, "Stream({len} bytes)"),
        }
    }
}

/// Bytes a streamed column is written in at most (bounds compaction's write buffer).
const STREAM_BUFFER: usize = 1 << 20;

impl ColumnBytes<'_> {
    pub fn len(&self) -> usize {
        match self {
            ColumnBytes::Slice(b) => b.len(),
            ColumnBytes::Stream { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The column's CRC-32, its block CRC-32s, and how many bytes there were.
    fn checksums(&self) -> (u32, Vec<u32>, usize) {
        let mut sums = Checksums::default();
        match self {
            ColumnBytes::Slice(b) => sums.update(b),
            ColumnBytes::Stream { emit, .. } => emit(&mut |piece| sums.update(piece)),
        }
        sums.finish()
    }

    /// Writes the bytes to `out` (a stream through a bounded buffer).
    fn write_to(&self, out: &mut dyn VfsFile) -> Result<()> {
        let emit = match self {
            ColumnBytes::Slice(b) => return out.write_all(b),
            ColumnBytes::Stream { emit, .. } => emit,
        };
        let mut buf = Vec::with_capacity(STREAM_BUFFER);
        let mut failed = None;
        emit(&mut |piece| {
            if failed.is_some() {
                return;
            }
            if buf.len() + piece.len() > STREAM_BUFFER && !buf.is_empty() {
                failed = out.write_all(&buf).err();
                buf.clear();
            }
            if failed.is_some() {
                return;
            }
            if piece.len() >= STREAM_BUFFER {
                failed = out.write_all(piece).err();
            } else {
                buf.extend_from_slice(piece);
            }
        });
        match failed {
            Some(e) => Err(e),
            None => out.write_all(&buf),
        }
    }
}

/// CRC-32s of a column's bytes as they are produced: of all of them, and of each
/// [`CHECK_BLOCK`] bytes.
#[derive(Default)]
struct Checksums {
    whole: crc32fast::Hasher,
    block: crc32fast::Hasher,
    in_block: usize,
    blocks: Vec<u32>,
    len: usize,
}

impl Checksums {
    fn update(&mut self, mut piece: &[u8]) {
        self.whole.update(piece);
        self.len += piece.len();
        while !piece.is_empty() {
            let take = (CHECK_BLOCK - self.in_block).min(piece.len());
            self.block.update(&piece[..take]);
            self.in_block += take;
            piece = &piece[take..];
            if self.in_block == CHECK_BLOCK {
                self.blocks.push(std::mem::take(&mut self.block).finalize());
                self.in_block = 0;
            }
        }
    }

    fn finish(mut self) -> (u32, Vec<u32>, usize) {
        if self.in_block > 0 {
            self.blocks.push(self.block.finalize());
        }
        (self.whole.finalize(), self.blocks, self.len)
    }
}

/// A column to write: `width` values per row, or `width == 0` for a free-length blob whose
/// meaning is given by other columns (e.g. per-row offsets).
#[derive(Debug, Clone, Copy)]
pub struct ColumnData<'a> {
    pub name: &'a str,
    pub kind: ColumnKind,
    pub width: u32,
    pub bytes: ColumnBytes<'a>,
}

impl<'a> ColumnData<'a> {
    pub fn u64(name: &'a str, values: &'a [u64]) -> Self {
        ColumnData {
            name,
            kind: ColumnKind::U64,
            width: 1,
            bytes: ColumnBytes::Slice(bytemuck::cast_slice(values)),
        }
    }

    pub fn f32(name: &'a str, width: usize, values: &'a [f32]) -> Self {
        ColumnData {
            name,
            kind: ColumnKind::F32,
            width: width as u32,
            bytes: ColumnBytes::Slice(bytemuck::cast_slice(values)),
        }
    }

    /// A free-length u64 column (`width == 0`), e.g. per-row offsets into a blob.
    pub fn free_u64(name: &'a str, values: &'a [u64]) -> Self {
        ColumnData {
            name,
            kind: ColumnKind::U64,
            width: 0,
            bytes: ColumnBytes::Slice(bytemuck::cast_slice(values)),
        }
    }

    pub fn u8(name: &'a str, width: usize, values: &'a [u8]) -> Self {
        ColumnData {
            name,
            kind: ColumnKind::U8,
            width: width as u32,
            bytes: ColumnBytes::Slice(values),
        }
    }

    /// A column whose `len` bytes `emit` produces in pieces (see [`ColumnBytes::Stream`]).
    pub fn stream(
        name: &'a str,
        kind: ColumnKind,
        width: u32,
        len: usize,
        emit: &'a Emit<'a>,
    ) -> Self {
        ColumnData {
            name,
            kind,
            width,
            bytes: ColumnBytes::Stream { len, emit },
        }
    }
}

/// Writes a complete segment at `path` and fsyncs it; the caller fsyncs the directory.
/// The first two columns must be `ids` (u64, strictly ascending) and `vectors` (f32); the
/// block checksums column is added after them.
pub fn write_segment(
    vfs: &dyn Vfs,
    path: &Path,
    rows: usize,
    columns: &[ColumnData],
) -> Result<()> {
    write_columns(vfs, path, rows, columns, true)
}

/// [`write_segment`]; without `block_checks` the file is what imgvec wrote before block
/// checksums existed (kept to test that such files are still read, and checked whole at open).
pub(super) fn write_columns(
    vfs: &dyn Vfs,
    path: &Path,
    rows: usize,
    columns: &[ColumnData],
    block_checks: bool,
) -> Result<()> {
    let invalid = |message: String| StorageError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    check_leading_columns(columns).map_err(invalid)?;
    let (mut crcs, block_crcs) = checksums(rows, columns).map_err(invalid)?;
    let mut columns = columns.to_vec();
    if block_checks {
        crcs.push(crc32fast::hash(&block_crcs));
        columns.push(ColumnData::u8(BLOCK_CRCS_COLUMN, 0, &block_crcs));
    }
    let (directory, offsets) = directory(&columns, &crcs);
    let last = columns.last().map(|c| c.bytes.len()).unwrap_or(0);
    let footer_offset = offsets.last().copied().unwrap_or(0) + last;
    let file_len = footer_offset + FOOTER_LEN;

    let mut header = [0u8; HEADER_LEN];
    header[0..8].copy_from_slice(&SEGMENT_MAGIC);
    header[at::VERSION..at::COLUMNS].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
    header[at::COLUMNS..at::ROWS].copy_from_slice(&(columns.len() as u32).to_le_bytes());
    header[at::ROWS..at::DIR_CRC].copy_from_slice(&(rows as u64).to_le_bytes());
    header[at::DIR_CRC..at::RESERVED].copy_from_slice(&crc32fast::hash(&directory).to_le_bytes());
    let header_crc = crc32fast::hash(&header[..at::HEADER_CRC]);
    header[at::HEADER_CRC..HEADER_LEN].copy_from_slice(&header_crc.to_le_bytes());

    let mut out = vfs.create(path)?;
    let zeros = [0u8; COLUMN_ALIGN];
    out.write_all(&header)?;
    out.write_all(&directory)?;
    let mut pos = HEADER_LEN + directory.len();
    for (c, &at) in columns.iter().zip(&offsets) {
        out.write_all(&zeros[..at - pos])?;
        c.bytes.write_to(out.as_mut())?;
        pos = at + c.bytes.len();
    }
    let mut footer = [0u8; FOOTER_LEN];
    footer[..at::FOOTER_MAGIC].copy_from_slice(&(file_len as u64).to_le_bytes());
    footer[at::FOOTER_MAGIC..].copy_from_slice(&FOOTER_MAGIC);
    out.write_all(&footer)?;
    out.sync()
}

/// `ids` (u64, in memory, strictly ascending) then `vectors` (f32) come first, and there is room
/// for the block checksums column.
fn check_leading_columns(columns: &[ColumnData]) -> std::result::Result<(), String> {
    if columns.len() < 2
        || columns.len() >= MAX_COLUMNS
        || columns[0].name != IDS_COLUMN
        || columns[0].kind != ColumnKind::U64
        || columns[1].name != VECTORS_COLUMN
        || columns[1].kind != ColumnKind::F32
        || columns[1].width == 0
    {
        return Err("a segment needs `ids` (u64) then `vectors` (f32) columns".into());
    }
    let ColumnBytes::Slice(id_bytes) = columns[0].bytes else {
        return Err("the id column must be in memory".into());
    };
    let ids: &[u64] =
        bytemuck::try_cast_slice(id_bytes).map_err(|_| "misaligned id column".to_string())?;
    if ids.windows(2).any(|w| w[0] >= w[1]) {
        return Err("row ids must be strictly ascending".into());
    }
    Ok(())
}

/// Checks every column's name and length while producing it once: its whole CRC-32 (one per
/// column) and its block CRC-32s (all columns', back to back, little-endian).
fn checksums(
    rows: usize,
    columns: &[ColumnData],
) -> std::result::Result<(Vec<u32>, Vec<u8>), String> {
    let mut crcs = Vec::with_capacity(columns.len() + 1);
    let mut block_crcs = Vec::new();
    for (i, c) in columns.iter().enumerate() {
        if c.name.is_empty()
            || c.name.len() > COLUMN_NAME_LEN
            || c.name == BLOCK_CRCS_COLUMN
            || columns[..i].iter().any(|o| o.name == c.name)
        {
            return Err(format!("bad or repeated column name `{}`", c.name));
        }
        let expected = rows * c.width as usize * c.kind.size();
        let (crc, blocks, produced) = c.bytes.checksums();
        if produced != c.bytes.len() {
            return Err(format!(
                "column `{}` produced {produced} bytes, {} announced",
                c.name,
                c.bytes.len()
            ));
        }
        if c.width > 0 && c.bytes.len() != expected {
            return Err(format!(
                "column `{}` has {} bytes, {rows} rows of width {} need {expected}",
                c.name,
                c.bytes.len(),
                c.width
            ));
        }
        crcs.push(crc);
        block_crcs.extend(blocks.iter().flat_map(|b| b.to_le_bytes()));
    }
    Ok((crcs, block_crcs))
}

/// The column directory (one entry per column, with its CRC) and each column's aligned offset.
fn directory(columns: &[ColumnData], crcs: &[u32]) -> (Vec<u8>, Vec<usize>) {
    let mut directory = Vec::with_capacity(columns.len() * DIR_ENTRY_LEN);
    let mut offset = align_up(HEADER_LEN + columns.len() * DIR_ENTRY_LEN);
    let mut offsets = Vec::with_capacity(columns.len());
    for (c, crc) in columns.iter().zip(crcs) {
        let mut entry = [0u8; DIR_ENTRY_LEN];
        entry[..c.name.len()].copy_from_slice(c.name.as_bytes());
        entry[at::KIND..at::WIDTH].copy_from_slice(&(c.kind as u32).to_le_bytes());
        entry[at::WIDTH..at::OFFSET].copy_from_slice(&c.width.to_le_bytes());
        entry[at::OFFSET..at::LEN].copy_from_slice(&(offset as u64).to_le_bytes());
        entry[at::LEN..at::CRC].copy_from_slice(&(c.bytes.len() as u64).to_le_bytes());
        entry[at::CRC..at::PAD].copy_from_slice(&crc.to_le_bytes());
        directory.extend_from_slice(&entry);
        offsets.push(offset);
        offset = align_up(offset + c.bytes.len());
    }
    (directory, offsets)
}
