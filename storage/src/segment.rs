//! Immutable columnar segment files: a header, a column directory, 64-byte aligned columns, a
//! footer. Every byte is specified in docs/FORMAT.md.
//!
//! A segment is written once, fsynced, and from then on only read through a memory map; columns
//! are cast to `&[u64]` / `&[f32]` / `&[u8]` without copying. Every segment has an `ids` column
//! (u64, strictly ascending) and a `vectors` column (f32, `dims` per row); further columns
//! (binary codes, local features, more feature spaces) are named and typed by the directory.

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{Advice, Mmap};

use crate::error::{IoContext, Result, StorageError};
use crate::vfs::{Vfs, VfsFile};

pub const SEGMENT_MAGIC: [u8; 8] = *b"IMGVSEG\0";
pub const FOOTER_MAGIC: [u8; 8] = *b"IMGVEND\0";
pub const SEGMENT_FORMAT_VERSION: u32 = 1;
pub const HEADER_LEN: usize = 64;
pub const DIR_ENTRY_LEN: usize = 64;
pub const FOOTER_LEN: usize = 16;
pub const MAX_COLUMNS: usize = 64;
pub const COLUMN_NAME_LEN: usize = 32;
const COLUMN_ALIGN: usize = 64;
pub const IDS_COLUMN: &str = "ids";
pub const VECTORS_COLUMN: &str = "vectors";
/// Optional pair: row `r`'s local features are `local[local_offsets[r]..local_offsets[r + 1]]`
/// (`local_offsets` holds `rows + 1` ascending u64 values, starting at 0).
pub const LOCAL_OFFSETS_COLUMN: &str = "local_offsets";
pub const LOCAL_COLUMN: &str = "local";
/// Written last by every writer since block checksums: one CRC-32 (u32 LE) per [`CHECK_BLOCK`]
/// bytes of each column before it, in directory order. Opening reads it (and the small columns
/// open interprets) whole; every other column's bytes are checked a block at a time when first
/// read (docs/FORMAT.md).
pub const BLOCK_CRCS_COLUMN: &str = "block_crcs";
/// Bytes of a column one block checksum covers (the last block of a column may be shorter).
pub const CHECK_BLOCK: usize = 16 * 1024;

#[cfg(not(target_endian = "little"))]
compile_error!("imgvec segment files are little-endian and are mapped without conversion");

/// Element type of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    U64 = 1,
    F32 = 2,
    U8 = 3,
}

impl ColumnKind {
    fn from_code(code: u32) -> Option<ColumnKind> {
        match code {
            1 => Some(ColumnKind::U64),
            2 => Some(ColumnKind::F32),
            3 => Some(ColumnKind::U8),
            _ => None,
        }
    }

    pub fn size(self) -> usize {
        match self {
            ColumnKind::U64 => 8,
            ColumnKind::F32 => 4,
            ColumnKind::U8 => 1,
        }
    }
}

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

/// Byte offsets inside the header, a column directory entry and the footer (docs/FORMAT.md):
/// the one definition the writer and the reader share.
mod at {
    /// Header: format version (u32).
    pub const VERSION: usize = 8;
    /// Header: number of columns (u32).
    pub const COLUMNS: usize = 12;
    /// Header: number of rows (u64).
    pub const ROWS: usize = 16;
    /// Header: CRC32 of the column directory (u32).
    pub const DIR_CRC: usize = 24;
    /// Header: reserved zero bytes, up to the header CRC.
    pub const RESERVED: usize = 28;
    /// Header: CRC32 of the header bytes before it (u32).
    pub const HEADER_CRC: usize = 60;
    /// Entry: column kind (u32), after the NUL-padded name.
    pub const KIND: usize = 32;
    /// Entry: values per row (u32; 0 for free-length columns).
    pub const WIDTH: usize = 36;
    /// Entry: byte offset of the column in the file (u64).
    pub const OFFSET: usize = 40;
    /// Entry: byte length of the column (u64).
    pub const LEN: usize = 48;
    /// Entry: CRC32 of the column bytes (u32); zero padding follows.
    pub const CRC: usize = 56;
    /// Entry: zero padding to the end of the entry.
    pub const PAD: usize = 60;
    /// Footer: total file length (u64), then the footer magic.
    pub const FOOTER_MAGIC: usize = 8;
}

fn align_up(n: usize) -> usize {
    n.div_ceil(COLUMN_ALIGN) * COLUMN_ALIGN
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
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
fn write_columns(
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
    if columns.len() < 2
        || columns.len() >= MAX_COLUMNS
        || columns[0].name != IDS_COLUMN
        || columns[0].kind != ColumnKind::U64
        || columns[1].name != VECTORS_COLUMN
        || columns[1].kind != ColumnKind::F32
        || columns[1].width == 0
    {
        return Err(invalid(
            "a segment needs `ids` (u64) then `vectors` (f32) columns".into(),
        ));
    }
    let ColumnBytes::Slice(id_bytes) = columns[0].bytes else {
        return Err(invalid("the id column must be in memory".into()));
    };
    let ids: &[u64] =
        bytemuck::try_cast_slice(id_bytes).map_err(|_| invalid("misaligned id column".into()))?;
    if ids.windows(2).any(|w| w[0] >= w[1]) {
        return Err(invalid("row ids must be strictly ascending".into()));
    }
    let mut crcs = Vec::with_capacity(columns.len() + 1);
    let mut block_crcs = Vec::new();
    for (i, c) in columns.iter().enumerate() {
        if c.name.is_empty()
            || c.name.len() > COLUMN_NAME_LEN
            || c.name == BLOCK_CRCS_COLUMN
            || columns[..i].iter().any(|o| o.name == c.name)
        {
            return Err(invalid(format!("bad or repeated column name `{}`", c.name)));
        }
        let expected = rows * c.width as usize * c.kind.size();
        let (crc, blocks, produced) = c.bytes.checksums();
        if produced != c.bytes.len() {
            return Err(invalid(format!(
                "column `{}` produced {produced} bytes, {} announced",
                c.name,
                c.bytes.len()
            )));
        }
        if c.width > 0 && c.bytes.len() != expected {
            return Err(invalid(format!(
                "column `{}` has {} bytes, {rows} rows of width {} need {expected}",
                c.name,
                c.bytes.len(),
                c.width
            )));
        }
        crcs.push(crc);
        block_crcs.extend(blocks.iter().flat_map(|b| b.to_le_bytes()));
    }
    let mut columns = columns.to_vec();
    if block_checks {
        crcs.push(crc32fast::hash(&block_crcs));
        columns.push(ColumnData::u8(BLOCK_CRCS_COLUMN, 0, &block_crcs));
    }
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

/// One column of a mapped segment.
#[derive(Debug, Clone, Copy)]
struct Column {
    name: [u8; COLUMN_NAME_LEN],
    kind: ColumnKind,
    width: u32,
    offset: usize,
    len: usize,
}

impl Column {
    fn name(&self) -> &[u8] {
        let end = self
            .name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(COLUMN_NAME_LEN);
        &self.name[..end]
    }
}

/// The block checksums of one column, and which blocks this process has checked already.
#[derive(Debug)]
struct BlockChecks {
    /// Index of the column's first block CRC in the `block_crcs` column.
    first: usize,
    /// One bit per block, set once the block matched its CRC.
    checked: Vec<AtomicU64>,
}

/// A sealed, memory-mapped segment. Opening checks the frame, the directory and the columns
/// open interprets (ids, local offsets, block checksums); every other column is checked a block
/// at a time when first read, so reading damaged bytes is a `DataCorruption` error naming the
/// file, never a wrong value. Segments written before block checksums are checked whole at open.
pub struct Segment {
    path: PathBuf,
    map: Mmap,
    rows: usize,
    columns: Vec<Column>,
    dims: usize,
    file_len: usize,
    /// Indexes in `columns` of `local_offsets` and `local`, when the segment has them.
    local: Option<(usize, usize)>,
    /// Per column: `None` when checked whole at open.
    checks: Vec<Option<BlockChecks>>,
    /// Index in `columns` of `block_crcs` (checked at open), when the segment has it.
    block_crcs: Option<usize>,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("path", &self.path)
            .field("rows", &self.rows)
            .field("dims", &self.dims)
            .finish()
    }
}

impl Segment {
    /// Maps `path` and checks magic numbers, version, directory, layout, padding and the columns
    /// opening interprets (see [`Segment`]); a damaged file is a `DataCorruption` error naming
    /// it. Reads a few bytes per row, not the vectors or local features.
    pub fn open(path: &Path) -> Result<Segment> {
        let file = File::open(path).at(path)?;
        // SAFETY: segment files are immutable once sealed (written, fsynced, then published in
        // the manifest) and only ever deleted, never modified in place, by imgvec. A process
        // outside imgvec truncating the file underneath us is outside the contract of mmap.
        let map = unsafe { Mmap::map(&file) }.at(path)?;
        let corrupt = |reason| StorageError::corruption(path, reason);
        let (rows, columns, block_crcs) = verify(&map).map_err(corrupt)?;
        let local = verify_local(&map, rows, &columns).map_err(corrupt)?;
        let mut checks = Vec::with_capacity(columns.len());
        let mut first = 0;
        for (i, c) in columns.iter().enumerate() {
            let opened = Some(i) == block_crcs || block_crcs.is_none() || checked_at_open(c);
            let blocks = c.len.div_ceil(CHECK_BLOCK);
            checks.push((!opened).then(|| {
                BlockChecks {
                    first,
                    checked: (0..blocks.div_ceil(64))
                        .map(|_| AtomicU64::new(0))
                        .collect(),
                }
            }));
            if Some(i) != block_crcs {
                first += blocks;
            }
        }
        if let Some(b) = block_crcs {
            if columns[b].len != first * 4 {
                return Err(corrupt(format!(
                    "`{BLOCK_CRCS_COLUMN}` holds {} bytes, the columns need {}",
                    columns[b].len,
                    first * 4
                )));
            }
        }
        let segment = Segment {
            path: path.to_path_buf(),
            rows,
            dims: columns[1].width as usize,
            columns,
            file_len: map.len(),
            map,
            local,
            checks,
            block_crcs,
        };
        segment.expect_sequential_local(false);
        Ok(segment)
    }

    /// Tells the kernel how the local-feature column will be read. By default it is read at
    /// random (a search reads its candidates' rows, ~100 KB each): without this hint, each page
    /// fault there reads ahead the device's whole window (8 MiB here), and one cold search
    /// pulled 488 MB of other rows' features into memory for 60 candidates. Walks over many rows
    /// (an index build, a compaction, `verify`) switch it to sequential read-ahead for their
    /// duration. Only a hint: a failure changes speed, never results.
    pub fn expect_sequential_local(&self, sequential: bool) {
        let Some((_, blob)) = self.local else {
            return;
        };
        let c = &self.columns[blob];
        // madvise needs a page-aligned start: the mapping is, the column may not be.
        let start = c.offset - c.offset % 4096;
        let advice = match sequential {
            true => Advice::Sequential,
            false => Advice::Random,
        };
        if c.len > 0 {
            let _ = self
                .map
                .advise_range(advice, start, c.offset + c.len - start);
        }
    }

    /// Checks every byte of every column not checked yet (`imgvec verify`, a new segment just
    /// written, the segments a compaction reads).
    pub fn verify_all(&self) -> Result<()> {
        self.expect_sequential_local(true);
        let checked = self
            .columns
            .iter()
            .enumerate()
            .try_for_each(|(i, c)| self.checked(i, 0..c.len).map(|_| ()));
        self.expect_sequential_local(false);
        checked
    }

    /// Bytes `range` of column `c`, after checking the blocks they lie in that were not checked
    /// yet.
    fn checked(&self, c: usize, range: Range<usize>) -> Result<&[u8]> {
        let column = &self.columns[c];
        let bytes = &self.map[column.offset..column.offset + column.len];
        let (Some(check), Some(crcs)) = (&self.checks[c], self.block_crcs) else {
            return Ok(&bytes[range]);
        };
        if range.is_empty() {
            return Ok(&bytes[range]);
        }
        let crcs = &self.columns[crcs];
        for block in range.start / CHECK_BLOCK..=(range.end - 1) / CHECK_BLOCK {
            let (word, bit) = (&check.checked[block / 64], 1u64 << (block % 64));
            if word.load(Ordering::Relaxed) & bit != 0 {
                continue;
            }
            let start = block * CHECK_BLOCK;
            let end = (start + CHECK_BLOCK).min(column.len);
            let want = le_u32(&self.map, crcs.offset + (check.first + block) * 4);
            if crc32fast::hash(&bytes[start..end]) != want {
                return Err(StorageError::corruption(
                    &self.path,
                    format!(
                        "column `{}` bytes {start}..{end}: checksum mismatch",
                        String::from_utf8_lossy(column.name())
                    ),
                ));
            }
            word.fetch_or(bit, Ordering::Relaxed);
        }
        Ok(&bytes[range])
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Size of the file in bytes.
    pub fn byte_len(&self) -> usize {
        self.file_len
    }

    /// The whole file, after checking every byte (a backup writes it out when it cannot link
    /// the file).
    pub fn file_bytes(&self) -> Result<&[u8]> {
        self.verify_all()?;
        Ok(&self.map)
    }

    /// Row ids, strictly ascending (includes rows deleted since the segment was sealed).
    pub fn ids(&self) -> &[u64] {
        // Checked in `open`: alignment, length, kind, checksum; the map is page aligned.
        let c = &self.columns[0];
        bytemuck::cast_slice(&self.map[c.offset..c.offset + c.len])
    }

    /// All vectors, row-major, `rows * dims` floats.
    pub fn vectors(&self) -> Result<&[f32]> {
        Ok(bytemuck::cast_slice(
            self.checked(1, 0..self.columns[1].len)?,
        ))
    }

    pub fn vector(&self, row: usize) -> Result<&[f32]> {
        let size = self.dims * 4;
        Ok(bytemuck::cast_slice(
            self.checked(1, row * size..(row + 1) * size)?,
        ))
    }

    /// The row holding `id`, if this segment has it.
    pub fn row_of(&self, id: u64) -> Option<usize> {
        let ids = self.ids();
        // Ids are allocated in sequence, so a segment's ids are usually dense: guess the row
        // from the first id and check it (one memory access) before the binary search.
        let first = *ids.first()?;
        if let Some(guess) = id.checked_sub(first).map(|d| d as usize) {
            if ids.get(guess) == Some(&id) {
                return Some(guess);
            }
        }
        ids.binary_search(&id).ok()
    }

    /// Where row `row`'s local features lie in the `local` column (checked at open).
    fn local_range(&self, row: usize) -> Option<(usize, Range<usize>)> {
        let (offsets, blob) = self.local?;
        let c = &self.columns[offsets];
        let offsets: &[u64] = bytemuck::cast_slice(&self.map[c.offset..c.offset + c.len]);
        Some((blob, offsets[row] as usize..offsets[row + 1] as usize))
    }

    /// Row `row`'s local features (empty when the segment has none).
    pub fn local(&self, row: usize) -> Result<&[u8]> {
        match self.local_range(row) {
            Some((blob, range)) => self.checked(blob, range),
            None => Ok(&[]),
        }
    }

    /// How many bytes of local features row `row` has (read without touching them).
    pub fn local_len(&self, row: usize) -> usize {
        self.local_range(row).map_or(0, |(_, r)| r.len())
    }

    /// Whether the segment has block checksums (else it was checked whole when opened).
    pub fn has_block_checks(&self) -> bool {
        self.block_crcs.is_some()
    }

    /// Whether the segment stores local features.
    pub fn has_local(&self) -> bool {
        self.local.is_some()
    }

    /// A named column's kind, width and raw bytes (all of them checked).
    pub fn column(&self, name: &str) -> Result<Option<(ColumnKind, u32, &[u8])>> {
        let Some(i) = self
            .columns
            .iter()
            .position(|c| c.name() == name.as_bytes())
        else {
            return Ok(None);
        };
        let c = &self.columns[i];
        Ok(Some((c.kind, c.width, self.checked(i, 0..c.len)?)))
    }

    pub fn column_names(&self) -> Vec<String> {
        self.columns
            .iter()
            .map(|c| String::from_utf8_lossy(c.name()).into_owned())
            .collect()
    }
}

/// Whether opening checks column `c` whole even when the segment has block checksums: the
/// columns whose values opening interprets (ids, local offsets).
fn checked_at_open(c: &Column) -> bool {
    c.name() == IDS_COLUMN.as_bytes() || c.name() == LOCAL_OFFSETS_COLUMN.as_bytes()
}

/// Checks the optional local-feature columns: both or neither, offsets ascending from 0 to the
/// blob's length, one more than the rows.
fn verify_local(
    b: &[u8],
    rows: usize,
    columns: &[Column],
) -> Result<Option<(usize, usize)>, String> {
    let find = |name: &str| columns.iter().position(|c| c.name() == name.as_bytes());
    let (offsets, blob) = match (find(LOCAL_OFFSETS_COLUMN), find(LOCAL_COLUMN)) {
        (None, None) => return Ok(None),
        (Some(o), Some(l)) => (o, l),
        _ => return Err("`local_offsets` and `local` columns come in pairs".into()),
    };
    let (oc, lc) = (&columns[offsets], &columns[blob]);
    if oc.kind != ColumnKind::U64 || lc.kind != ColumnKind::U8 || oc.width != 0 || lc.width != 0 {
        return Err("local-feature columns must be free-length u64 offsets and u8 bytes".into());
    }
    let values: &[u64] = bytemuck::try_cast_slice(&b[oc.offset..oc.offset + oc.len])
        .map_err(|_| "misaligned `local_offsets` column".to_string())?;
    if values.len() != rows + 1
        || values[0] != 0
        || values.windows(2).any(|w| w[0] > w[1])
        || values[rows] != lc.len as u64
    {
        return Err("`local_offsets` do not describe the `local` column".into());
    }
    Ok(Some((offsets, blob)))
}

/// Checks the header and footer; returns (columns, rows, end of the column directory).
fn verify_frame(b: &[u8]) -> Result<(usize, usize, usize), String> {
    if b.len() < HEADER_LEN + FOOTER_LEN {
        return Err(format!(
            "file is {} bytes, shorter than header + footer",
            b.len()
        ));
    }
    if b[0..8] != SEGMENT_MAGIC {
        return Err("bad magic: not an imgvec segment".into());
    }
    if crc32fast::hash(&b[..at::HEADER_CRC]) != le_u32(b, at::HEADER_CRC) {
        return Err("header checksum mismatch".into());
    }
    let version = le_u32(b, at::VERSION);
    if version != SEGMENT_FORMAT_VERSION {
        return Err(format!("unsupported segment format version {version}"));
    }
    if b[at::RESERVED..at::HEADER_CRC].iter().any(|&x| x != 0) {
        return Err("non-zero reserved header bytes".into());
    }
    let n = le_u32(b, at::COLUMNS) as usize;
    let rows =
        usize::try_from(le_u64(b, at::ROWS)).map_err(|_| "row count overflows".to_string())?;
    if !(2..=MAX_COLUMNS).contains(&n) {
        return Err(format!("{n} columns (2..={MAX_COLUMNS} allowed)"));
    }
    let dir_end = HEADER_LEN + n * DIR_ENTRY_LEN;
    if dir_end > b.len() {
        return Err("column directory runs past the end of the file".into());
    }
    if crc32fast::hash(&b[HEADER_LEN..dir_end]) != le_u32(b, at::DIR_CRC) {
        return Err("column directory checksum mismatch".into());
    }
    let footer_offset = b.len() - FOOTER_LEN;
    if b[footer_offset + at::FOOTER_MAGIC..] != FOOTER_MAGIC
        || le_u64(b, footer_offset) != b.len() as u64
    {
        return Err("bad footer (truncated or extended file)".into());
    }
    Ok((n, rows, dir_end))
}

/// Checks the layout and the columns checked at open; returns the rows, the columns and the
/// index of the block checksums column, if any (without it, every column is checked here).
fn verify(b: &[u8]) -> Result<(usize, Vec<Column>, Option<usize>), String> {
    let (n, rows, dir_end) = verify_frame(b)?;
    let block_crcs = {
        let last = &directory_entry(b, n - 1)[..COLUMN_NAME_LEN];
        let name = BLOCK_CRCS_COLUMN.as_bytes();
        (last[..name.len()] == *name && last[name.len()..].iter().all(|&x| x == 0)).then_some(n - 1)
    };
    let directory = &b[HEADER_LEN..dir_end];
    let footer_offset = b.len() - FOOTER_LEN;
    let mut columns: Vec<Column> = Vec::with_capacity(n);
    let mut pos = dir_end;
    for e in directory.chunks_exact(DIR_ENTRY_LEN) {
        let mut name = [0u8; COLUMN_NAME_LEN];
        name.copy_from_slice(&e[..COLUMN_NAME_LEN]);
        let kind = ColumnKind::from_code(le_u32(e, at::KIND)).ok_or("unknown column kind")?;
        let width = le_u32(e, at::WIDTH);
        let offset = usize::try_from(le_u64(e, at::OFFSET)).map_err(|_| "offset overflows")?;
        let len = usize::try_from(le_u64(e, at::LEN)).map_err(|_| "length overflows")?;
        let column = Column {
            name,
            kind,
            width,
            offset,
            len,
        };
        let label = String::from_utf8_lossy(column.name()).into_owned();
        if offset % COLUMN_ALIGN != 0 || offset < pos || offset - pos >= COLUMN_ALIGN {
            return Err(format!(
                "column `{label}` is not at the next aligned offset"
            ));
        }
        let end = offset.checked_add(len).ok_or("column length overflows")?;
        if end > footer_offset {
            return Err(format!("column `{label}` runs past the footer"));
        }
        let fixed = rows
            .checked_mul(width as usize)
            .and_then(|x| x.checked_mul(kind.size()));
        if width > 0 && fixed != Some(len) || len % kind.size() != 0 {
            return Err(format!("column `{label}` length does not match its shape"));
        }
        if b[pos..offset].iter().any(|&x| x != 0) || e[at::PAD..].iter().any(|&x| x != 0) {
            return Err("non-zero padding".into());
        }
        if columns.iter().any(|c| c.name() == column.name()) || column.name().is_empty() {
            return Err(format!("repeated or empty column name `{label}`"));
        }
        let at_open =
            block_crcs.is_none() || block_crcs == Some(columns.len()) || checked_at_open(&column);
        if at_open && crc32fast::hash(&b[offset..end]) != le_u32(e, at::CRC) {
            return Err(format!("column `{label}` checksum mismatch"));
        }
        columns.push(column);
        pos = end;
    }
    if pos != footer_offset {
        return Err("bytes between the last column and the footer".into());
    }
    let (ids, vectors) = (&columns[0], &columns[1]);
    if ids.name() != IDS_COLUMN.as_bytes()
        || ids.kind != ColumnKind::U64
        || ids.width != 1
        || vectors.name() != VECTORS_COLUMN.as_bytes()
        || vectors.kind != ColumnKind::F32
        || vectors.width == 0
    {
        return Err("first columns must be `ids` (u64 × 1) and `vectors` (f32)".into());
    }
    let id_values: &[u64] = bytemuck::try_cast_slice(&b[ids.offset..ids.offset + ids.len])
        .map_err(|_| "misaligned id column")?;
    if id_values.windows(2).any(|w| w[0] >= w[1]) {
        return Err("row ids are not strictly ascending".into());
    }
    if let Some(i) = block_crcs {
        let c = &columns[i];
        if c.kind != ColumnKind::U8 || c.width != 0 || i < 2 {
            return Err(format!(
                "`{BLOCK_CRCS_COLUMN}` must be a free-length u8 column"
            ));
        }
    }
    Ok((rows, columns, block_crcs))
}

/// The `i`th column directory entry (the directory was bounds-checked by `verify_frame`).
fn directory_entry(b: &[u8], i: usize) -> &[u8] {
    &b[HEADER_LEN + i * DIR_ENTRY_LEN..HEADER_LEN + (i + 1) * DIR_ENTRY_LEN]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfs::StdFs;

    fn sample(dir: &Path) -> PathBuf {
        let path = dir.join("s.ivs");
        let ids = [7u64, 9, 11];
        let vectors: Vec<f32> = (0..12).map(|i| i as f32 * 0.5).collect();
        let codes = [1u8, 2, 3, 4, 5, 6];
        let blob = [42u8; 5];
        let columns = [
            ColumnData::u64(IDS_COLUMN, &ids),
            ColumnData::f32(VECTORS_COLUMN, 4, &vectors),
            ColumnData::u8("codes", 2, &codes),
            ColumnData::u8("blob", 0, &blob),
        ];
        write_segment(&StdFs, &path, 3, &columns).unwrap();
        path
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let seg = Segment::open(&sample(dir.path())).unwrap();
        assert_eq!(seg.ids(), &[7, 9, 11]);
        assert_eq!(seg.dims(), 4);
        assert_eq!(seg.vector(2).unwrap(), &[4.0, 4.5, 5.0, 5.5]);
        assert_eq!(seg.row_of(9), Some(1));
        assert_eq!(seg.row_of(8), None);
        assert_eq!(
            seg.column("codes").unwrap(),
            Some((ColumnKind::U8, 2, &[1u8, 2, 3, 4, 5, 6][..]))
        );
        assert_eq!(seg.column("blob").unwrap().unwrap().2, &[42u8; 5]);
        assert!(seg.column("nothing").unwrap().is_none());
        assert_eq!(
            seg.column_names(),
            ["ids", "vectors", "codes", "blob", BLOCK_CRCS_COLUMN]
        );
    }

    /// Opens `path` and reads every byte; the first error, if any.
    fn open_and_read(path: &Path) -> Result<Segment> {
        let seg = Segment::open(path)?;
        seg.verify_all()?;
        Ok(seg)
    }

    /// Every flipped byte, truncation and extension of the segment at `good_path` is a
    /// `DataCorruption` error naming the file, at open or when the bytes are read; returns how
    /// many flips opening itself caught.
    fn assert_all_damage_detected(dir: &Path, good_path: &Path) -> usize {
        let good = std::fs::read(good_path).unwrap();
        let damaged = dir.join("d.ivs");
        let mut at_open = 0;
        for i in 0..good.len() {
            for mask in [0x01u8, 0x80] {
                let mut bytes = good.clone();
                bytes[i] ^= mask;
                std::fs::write(&damaged, &bytes).unwrap();
                at_open += usize::from(Segment::open(&damaged).is_err());
                match open_and_read(&damaged) {
                    Err(StorageError::DataCorruption { path, .. }) => assert_eq!(path, damaged),
                    other => panic!("flip {mask:#x} at byte {i}: {other:?}"),
                }
            }
        }
        let mut lengths: Vec<usize> = (0..good.len()).collect();
        lengths.push(good.len() + 1);
        for len in lengths {
            let mut bytes = good.clone();
            bytes.resize(len, 0);
            std::fs::write(&damaged, &bytes).unwrap();
            assert!(
                matches!(
                    Segment::open(&damaged),
                    Err(StorageError::DataCorruption { .. })
                ),
                "length {len}"
            );
        }
        at_open
    }

    #[test]
    fn every_flipped_byte_truncation_and_extension_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample(dir.path());
        let caught = assert_all_damage_detected(dir.path(), &path);
        let len = std::fs::metadata(&path).unwrap().len() as usize;
        assert!(
            caught < 2 * len,
            "some bytes are left to be checked when read"
        );
    }

    #[test]
    fn segments_without_block_checksums_are_checked_whole_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.ivs");
        let ids = [3u64, 4];
        let vectors = [0.5f32, 1.5, 2.5, 3.5];
        let columns = [
            ColumnData::u64(IDS_COLUMN, &ids),
            ColumnData::f32(VECTORS_COLUMN, 2, &vectors),
        ];
        write_columns(&StdFs, &path, 2, &columns, false).unwrap();
        let seg = Segment::open(&path).unwrap();
        assert_eq!(seg.column_names(), ["ids", "vectors"]);
        assert_eq!(seg.vector(1).unwrap(), &[2.5, 3.5]);
        let len = std::fs::metadata(&path).unwrap().len() as usize;
        assert_eq!(assert_all_damage_detected(dir.path(), &path), 2 * len);
    }

    #[test]
    fn damage_is_found_in_the_block_that_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.ivs");
        let (rows, dims) = (64usize, 256usize);
        let ids: Vec<u64> = (1..=rows as u64).collect();
        let vectors: Vec<f32> = (0..rows * dims).map(|i| i as f32).collect();
        let columns = [
            ColumnData::u64(IDS_COLUMN, &ids),
            ColumnData::f32(VECTORS_COLUMN, dims, &vectors),
        ];
        write_segment(&StdFs, &path, rows, &columns).unwrap();
        // Row 50's vector lies in the fourth block of the column (1 KiB rows, 16 per block).
        let seg = Segment::open(&path).unwrap();
        let (_, _, bytes) = seg.column(VECTORS_COLUMN).unwrap().unwrap();
        let at = bytes.as_ptr() as usize - seg.map.as_ptr() as usize + 50 * dims * 4 + 7;
        drop(seg);
        let mut file = std::fs::read(&path).unwrap();
        file[at] ^= 0x10;
        std::fs::write(&path, &file).unwrap();

        let seg = Segment::open(&path).expect("opening reads no vector");
        assert_eq!(seg.vector(3).unwrap()[0], (3 * dims) as f32);
        assert_eq!(seg.vector(47).unwrap()[0], (47 * dims) as f32);
        for row in [48, 50, 63] {
            match seg.vector(row) {
                Err(StorageError::DataCorruption { path: p, reason }) => {
                    assert_eq!(p, path);
                    assert!(reason.contains("`vectors` bytes 49152..65536"), "{reason}");
                }
                other => panic!("row {row}: {other:?}"),
            }
        }
        assert!(seg.vectors().is_err() && seg.verify_all().is_err());
        assert!(seg.file_bytes().is_err());
    }

    #[test]
    fn writer_refuses_bad_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.ivs");
        let v = [0f32; 4];
        let unsorted = [2u64, 1];
        let cols = [
            ColumnData::u64(IDS_COLUMN, &unsorted),
            ColumnData::f32(VECTORS_COLUMN, 2, &v),
        ];
        assert!(write_segment(&StdFs, &path, 2, &cols).is_err());
        let ids = [1u64, 2];
        let cols = [
            ColumnData::u64(IDS_COLUMN, &ids),
            ColumnData::f32(VECTORS_COLUMN, 3, &v),
        ];
        assert!(write_segment(&StdFs, &path, 2, &cols).is_err());
        let cols = [
            ColumnData::u64(IDS_COLUMN, &ids),
            ColumnData::f32(VECTORS_COLUMN, 2, &v),
            ColumnData::u8(BLOCK_CRCS_COLUMN, 0, &[]),
        ];
        assert!(write_segment(&StdFs, &path, 2, &cols).is_err());
    }
}
