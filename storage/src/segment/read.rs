//! Reading a segment: the memory map, what opening checks, and the block checks of later reads.

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{Advice, Mmap};

use super::*;
use crate::error::{IoContext, Result, StorageError};

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
    pub(super) map: Mmap,
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
