//! Rows made in one process and stored in another: the workers of a distributed ingest
//! (docs/RAY.md) run a database's pipeline over images ([`Database::prepare`]) and hand the rows,
//! as bytes, to the one writer of the shard that stores them ([`Database::commit_prepared`]).
//!
//! [`Database::prepare`]: crate::Database::prepare
//! [`Database::commit_prepared`]: crate::Database::commit_prepared

use std::time::Duration;

use imgvec_storage::{NewRow, Store};

use crate::error::{Error, Result};
use crate::ingest::{run_committer, IngestEvent, IngestStatus, IngestSummary};
use crate::pipeline::PipelineConfig;
use crate::stages::StageClock;

/// Format tag of [`PreparedRow::to_bytes`]: a row of another layout is refused, not misread.
const MAGIC: &[u8; 8] = b"IVROW\0\0\x01";

/// One image made into a row by a database's pipeline (vector, local features, thumbnail,
/// record), not stored anywhere yet.
#[derive(Debug, Clone)]
pub struct PreparedRow(pub(crate) NewRow);

impl PreparedRow {
    /// The row's key: the canonical path of a file, or the caller's key for bytes.
    pub fn path(&self) -> &str {
        &self.0.path
    }

    /// The row's fused vector's length.
    pub fn dims(&self) -> usize {
        self.0.vector.len()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        bincode::serialize_into(&mut out, &self.0).expect("a row always serializes");
        out
    }

    /// A row from [`to_bytes`](Self::to_bytes); anything else is `InvalidArgument`.
    pub fn from_bytes(bytes: &[u8]) -> Result<PreparedRow> {
        let body = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or_else(|| Error::Invalid("not a prepared imgvec row".into()))?;
        bincode::deserialize(body)
            .map(PreparedRow)
            .map_err(|e| Error::Invalid(format!("a damaged prepared row: {e}")))
    }
}

/// Why `row` cannot be stored in a database with pipeline `config`, if it cannot.
fn misfit(row: &NewRow, config: &PipelineConfig) -> Option<String> {
    if row.vector.len() != config.dims {
        return Some(format!(
            "its vector has {} dimensions, the database's pipeline makes {}",
            row.vector.len(),
            config.dims
        ));
    }
    if !row.vector.iter().all(|x| x.is_finite()) {
        return Some("its vector is not finite".into());
    }
    if config.local.is_none() && !row.local.is_empty() {
        return Some("it has local features, the database's pipeline stores none".into());
    }
    None
}

/// Stores `rows` in `store`: each is checked against the pipeline (a misfit is an error event,
/// the rest go on), one whose key is stored with the same content is unchanged, and the others
/// are committed in batches of `commit_rows`, each reported once durable.
pub(crate) fn commit(
    store: &Store,
    config: &PipelineConfig,
    rows: Vec<PreparedRow>,
    commit_rows: usize,
    on_event: &(dyn Fn(&IngestEvent) + Sync),
) -> Result<IngestSummary> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let (mut unchanged, mut errors) = (0, 0);
    for PreparedRow(row) in rows {
        if let Some(why) = misfit(&row, config) {
            errors += 1;
            on_event(&IngestEvent::error(row.path, format!("not stored: {why}")));
            continue;
        }
        let key = imgvec_storage::key::key_bytes(&row.path, &row.path_bytes);
        match store.get_by_key(key)? {
            Some(rec) if rec.content_hash == row.content_hash => {
                unchanged += 1;
                on_event(&IngestEvent {
                    path: row.path,
                    id: Some(rec.id),
                    status: IngestStatus::Unchanged,
                    error: None,
                    duplicate_of: rec.duplicate_of,
                    replaced_id: None,
                });
            }
            _ => tx.send(row).expect("the receiver is held here"),
        }
    }
    drop(tx);
    let clock = StageClock::default();
    let interval = Duration::from_secs(3600); // everything is here: commit in full batches
    let mut summary = run_committer(store, rx, commit_rows.max(1), interval, on_event, &clock)?;
    summary.unchanged = unchanged;
    summary.errors = errors;
    summary.stages = clock.times();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(dims: usize, local: &[u8]) -> NewRow {
        NewRow {
            path: "/p/a.jpg".into(),
            path_bytes: None,
            content_hash: imgvec_storage::ContentHash([7; 32]),
            width: 4,
            height: 3,
            format: "jpeg".into(),
            attributes: [("k".to_string(), "v".to_string())].into(),
            thumbnail: vec![1, 2, 3],
            vector: vec![0.5; dims],
            local: local.to_vec(),
        }
    }

    #[test]
    fn rows_round_trip_and_anything_else_is_refused() {
        let r = PreparedRow(row(3, &[9, 9]));
        let back = PreparedRow::from_bytes(&r.to_bytes()).unwrap();
        assert_eq!(format!("{:?}", back.0), format!("{:?}", r.0));
        for bad in [&b""[..], b"IVROW", &r.to_bytes()[..20], b"{\"path\": 1}"] {
            assert!(
                matches!(PreparedRow::from_bytes(bad), Err(Error::Invalid(_))),
                "{bad:?}"
            );
        }
    }
}
