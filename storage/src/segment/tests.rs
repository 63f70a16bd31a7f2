//! Segment round trips, damage detection at open and on read, and the writer's refusals.

use std::path::{Path, PathBuf};

use crate::error::{Result, StorageError};
use crate::vfs::StdFs;

use super::write::write_columns;
use super::*;

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
