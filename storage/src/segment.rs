//! Immutable columnar segment files: a header, a column directory, 64-byte aligned columns, a
//! footer. Every byte is specified in docs/FORMAT.md.
//!
//! A segment is written once, fsynced, and from then on only read through a memory map; columns
//! are cast to `&[u64]` / `&[f32]` / `&[u8]` without copying. Every segment has an `ids` column
//! (u64, strictly ascending) and a `vectors` column (f32, `dims` per row); further columns
//! (binary codes, local features, more feature spaces) are named and typed by the directory.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

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

    /// CRC32 of the bytes, and how many there were.
    fn crc(&self) -> (u32, usize) {
        match self {
            ColumnBytes::Slice(b) => (crc32fast::hash(b), b.len()),
            ColumnBytes::Stream { emit, .. } => {
                let mut hasher = crc32fast::Hasher::new();
                let mut n = 0;
                emit(&mut |piece| {
                    hasher.update(piece);
                    n += piece.len();
                });
                (hasher.finalize(), n)
            }
        }
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
/// The first two columns must be `ids` (u64, strictly ascending) and `vectors` (f32).
pub fn write_segment(
    vfs: &dyn Vfs,
    path: &Path,
    rows: usize,
    columns: &[ColumnData],
) -> Result<()> {
    let invalid = |message: String| StorageError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    if columns.len() < 2
        || columns.len() > MAX_COLUMNS
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
    let mut directory = Vec::with_capacity(columns.len() * DIR_ENTRY_LEN);
    let mut offset = align_up(HEADER_LEN + columns.len() * DIR_ENTRY_LEN);
    let mut offsets = Vec::with_capacity(columns.len());
    for (i, c) in columns.iter().enumerate() {
        if c.name.is_empty()
            || c.name.len() > COLUMN_NAME_LEN
            || columns[..i].iter().any(|o| o.name == c.name)
        {
            return Err(invalid(format!("bad or repeated column name `{}`", c.name)));
        }
        let expected = rows * c.width as usize * c.kind.size();
        let (crc, produced) = c.bytes.crc();
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

/// A sealed, verified, memory-mapped segment.
pub struct Segment {
    path: PathBuf,
    map: Mmap,
    rows: usize,
    columns: Vec<Column>,
    dims: usize,
    /// Index in `columns` of `ids` (0) and `vectors` (1).
    file_len: usize,
    /// Indexes in `columns` of `local_offsets` and `local`, when the segment has them.
    local: Option<(usize, usize)>,
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
    /// Maps `path` and verifies magic numbers, version, directory, layout, padding, every
    /// checksum and the id order before any byte is used; a damaged file is a `DataCorruption`
    /// error naming it.
    pub fn open(path: &Path) -> Result<Segment> {
        let file = File::open(path).at(path)?;
        // SAFETY: segment files are immutable once sealed (written, fsynced, then published in
        // the manifest) and only ever deleted, never modified in place, by imgvec. A process
        // outside imgvec truncating the file underneath us is outside the contract of mmap.
        let map = unsafe { Mmap::map(&file) }.at(path)?;
        let (rows, columns) =
            verify(&map).map_err(|reason| StorageError::corruption(path, reason))?;
        let local = verify_local(&map, rows, &columns)
            .map_err(|reason| StorageError::corruption(path, reason))?;
        Ok(Segment {
            path: path.to_path_buf(),
            rows,
            dims: columns[1].width as usize,
            columns,
            file_len: map.len(),
            map,
            local,
        })
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

    /// The whole file, as mapped (a backup writes it out when it cannot link the file).
    pub fn file_bytes(&self) -> &[u8] {
        &self.map
    }

    fn bytes(&self, c: &Column) -> &[u8] {
        &self.map[c.offset..c.offset + c.len]
    }

    /// Row ids, strictly ascending (includes rows deleted since the segment was sealed).
    pub fn ids(&self) -> &[u64] {
        // Alignment, length and kind were established in `open`; the map is page aligned.
        bytemuck::cast_slice(self.bytes(&self.columns[0]))
    }

    /// All vectors, row-major, `rows * dims` floats.
    pub fn vectors(&self) -> &[f32] {
        bytemuck::cast_slice(self.bytes(&self.columns[1]))
    }

    pub fn vector(&self, row: usize) -> &[f32] {
        &self.vectors()[row * self.dims..(row + 1) * self.dims]
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

    /// Row `row`'s local features (empty when the segment has none).
    pub fn local(&self, row: usize) -> &[u8] {
        match self.local {
            Some((offsets, blob)) => {
                let offsets: &[u64] = bytemuck::cast_slice(self.bytes(&self.columns[offsets]));
                let (a, b) = (offsets[row] as usize, offsets[row + 1] as usize);
                &self.bytes(&self.columns[blob])[a..b]
            }
            None => &[],
        }
    }

    /// Whether the segment stores local features.
    pub fn has_local(&self) -> bool {
        self.local.is_some()
    }

    /// A named column's kind, width and raw bytes.
    pub fn column(&self, name: &str) -> Option<(ColumnKind, u32, &[u8])> {
        self.columns
            .iter()
            .find(|c| c.name() == name.as_bytes())
            .map(|c| (c.kind, c.width, self.bytes(c)))
    }

    pub fn column_names(&self) -> Vec<String> {
        self.columns
            .iter()
            .map(|c| String::from_utf8_lossy(c.name()).into_owned())
            .collect()
    }
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

fn verify(b: &[u8]) -> Result<(usize, Vec<Column>), String> {
    let (n, rows, dir_end) = verify_frame(b)?;
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
        if crc32fast::hash(&b[offset..end]) != le_u32(e, at::CRC) {
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
    Ok((rows, columns))
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
        assert_eq!(seg.vector(2), &[4.0, 4.5, 5.0, 5.5]);
        assert_eq!(seg.row_of(9), Some(1));
        assert_eq!(seg.row_of(8), None);
        assert_eq!(
            seg.column("codes"),
            Some((ColumnKind::U8, 2, &[1u8, 2, 3, 4, 5, 6][..]))
        );
        assert_eq!(seg.column("blob").unwrap().2, &[42u8; 5]);
        assert_eq!(seg.column_names(), ["ids", "vectors", "codes", "blob"]);
    }

    #[test]
    fn every_flipped_byte_truncation_and_extension_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample(dir.path());
        let good = std::fs::read(&path).unwrap();
        let damaged = dir.path().join("d.ivs");
        for i in 0..good.len() {
            for mask in [0x01u8, 0x80] {
                let mut bytes = good.clone();
                bytes[i] ^= mask;
                std::fs::write(&damaged, &bytes).unwrap();
                match Segment::open(&damaged) {
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
    }
}
