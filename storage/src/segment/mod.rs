//! Immutable columnar segment files: a header, a column directory, 64-byte aligned columns, a
//! footer. Every byte is specified in docs/FORMAT.md.
//!
//! A segment is written once, fsynced, and from then on only read through a memory map; columns
//! are cast to `&[u64]` / `&[f32]` / `&[u8]` without copying. Every segment has an `ids` column
//! (u64, strictly ascending) and a `vectors` column (f32, `dims` per row); further columns
//! (binary codes, local features, more feature spaces) are named and typed by the directory.

//!
//! `write.rs` produces the bytes (and every checksum); `read.rs` maps a file and checks it, at
//! open and a block at a time when read. Both share the layout below.

mod read;
mod write;

#[cfg(test)]
mod tests;

pub use read::Segment;
pub use write::{write_segment, ColumnBytes, ColumnData, Emit};

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
