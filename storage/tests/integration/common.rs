//! Shared by the storage crash tests: deterministic rows and the invariants a database must
//! satisfy after any crash.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};

use imgvec_storage::{NewRow, Store};

pub const DIMS: usize = 4;

/// The vector stored for `path`: a pure function of the path, so a survivor can be checked.
pub fn vector_for(path: &str) -> Vec<f32> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    (0..DIMS)
        .map(|i| ((h >> (i * 16)) & 0xffff) as f32 / 65535.0)
        .collect()
}

/// The local-feature bytes stored for `path`: 0 to 40 bytes, a pure function of the path.
pub fn local_for(path: &str) -> Vec<u8> {
    let v = vector_for(path);
    let n = (v[0] * 40.0) as usize;
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31) ^ path.len() as u8)
        .collect()
}

pub fn row(path: &str) -> NewRow {
    let hash = content_hash(path);
    NewRow {
        path: path.to_string(),
        path_bytes: None,
        content_hash: imgvec_storage::ContentHash(hash),
        width: 1,
        height: 1,
        format: "png".into(),
        attributes: BTreeMap::new(),
        thumbnail: vec![0xff, 0xd8],
        vector: vector_for(path),
        local: local_for(path),
    }
}

/// A stand-in content hash, distinct for the short distinct paths these tests use.
fn content_hash(path: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, b) in path.bytes().enumerate() {
        out[i % 32] ^= b.wrapping_add(i as u8);
    }
    out
}

/// What a crash may leave: acknowledged rows must be there, acknowledged deletes must hold,
/// rows whose operation was in flight may go either way.
#[derive(Debug, Default, Clone)]
pub struct Model {
    /// path -> id of every acknowledged, not (acknowledged-)deleted row.
    pub live: HashMap<String, u64>,
    /// Ids whose delete was acknowledged.
    pub deleted: HashSet<u64>,
    /// Ids whose delete was started but not acknowledged.
    pub maybe_deleted: HashSet<u64>,
}

/// Checks every invariant; returns a description of the first violation.
pub fn check(store: &Store, model: &Model) -> Result<(), String> {
    let snap = store.snapshot();
    for (path, &id) in &model.live {
        match store.get_by_path(path).map_err(|e| e.to_string())? {
            Some(rec) if rec.id == id => {}
            None if model.maybe_deleted.contains(&id) => continue,
            other => {
                return Err(format!(
                    "acknowledged {path} (id {id}) lost: found {other:?}"
                ))
            }
        }
        let v = store.vector(id).map_err(|e| e.to_string())?;
        if v.as_deref() != Some(&vector_for(path)[..]) {
            return Err(format!("acknowledged {path} (id {id}) has vector {v:?}"));
        }
    }
    for &id in &model.deleted {
        if store.get(id).map_err(|e| e.to_string())?.is_some()
            || store.vector(id).map_err(|e| e.to_string())?.is_some()
        {
            return Err(format!("deleted id {id} came back"));
        }
    }
    // Nothing half-written: the rows a scan sees are exactly the live records, complete.
    let mut scanned = HashSet::new();
    for (_, seg) in snap.segments() {
        scanned.extend(seg.ids().iter().copied());
    }
    for chunk in snap.pending() {
        scanned.extend(chunk.ids.iter().copied());
    }
    let visible: HashSet<u64> = scanned.difference(snap.tombstones()).copied().collect();
    let records = store.records().map_err(|e| e.to_string())?;
    let recorded: HashSet<u64> = records.iter().map(|r| r.id).collect();
    if visible != recorded {
        return Err(format!(
            "scan sees {:?} without records, records {:?} without vectors",
            visible.difference(&recorded).collect::<Vec<_>>(),
            recorded.difference(&visible).collect::<Vec<_>>()
        ));
    }
    for rec in &records {
        if snap.vector(rec.id).ok().flatten() != Some(&vector_for(&rec.path)[..])
            || snap.local(rec.id).ok().flatten() != Some(&local_for(&rec.path)[..])
        {
            return Err(format!("row {} ({}) is half-written", rec.id, rec.path));
        }
        if store.id_for_path(&rec.path).map_err(|e| e.to_string())? != Some(rec.id) {
            return Err(format!("path index does not point at row {}", rec.id));
        }
    }
    Ok(())
}
