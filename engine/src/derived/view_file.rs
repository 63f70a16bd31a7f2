//! The whitened view persisted: the ids and projected vectors of the rows it covers, for one
//! projection, so that a handle loads them instead of projecting every stored vector again (at
//! 10⁵ rows that is gigabytes of raw vectors read and a large matrix product per process).
//! Published like every derived file (`indexes/view/`, meta key `derived:view`) and tied to the
//! projection's fingerprint: a view saved for another whitening is never loaded.

use std::sync::Arc;

use imgvec_storage::{PendingChunk, Store};
use serde::{Deserialize, Serialize};

use super::artifact::{self, Kind, Reader};
use super::publish::{Manifest, Publisher};
use crate::error::IndexError;
use crate::index::INDEX_DIR;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Published {
    generation: u64,
    file: String,
    /// Fingerprint of the projection the rows were projected with.
    space: u64,
}

impl Manifest for Published {
    fn files(&self) -> Vec<&str> {
        vec![self.file.as_str()]
    }
}

/// Saved view rows: ids ascending, covering every live row up to `watermark` when saved.
pub(crate) struct SavedView {
    pub watermark: u64,
    pub chunk: PendingChunk,
}

pub(crate) struct ViewFile {
    publisher: Publisher,
}

impl ViewFile {
    pub fn new(store: &Store) -> ViewFile {
        ViewFile {
            publisher: Publisher::new(
                store.vfs().clone(),
                store.dir().join(INDEX_DIR).join("view"),
                "derived:view",
            ),
        }
    }

    /// The saved rows of projection `space` with `dims` dimensions; `None` when there are none,
    /// they belong to another projection, or the file is damaged (logged; projected again).
    /// A writer sweeps unpublished files.
    pub fn load(&self, store: &Store, space: u64, dims: usize) -> Option<SavedView> {
        let published: Option<Published> = self.publisher.load(store);
        self.publisher.sweep_unpublished(store, published.as_ref());
        let p = published.filter(|p| p.space == space)?;
        let path = self.publisher.path(&p.file);
        match artifact::read_with(&path, Kind::View, |body| parse(body, space, dims)) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!("{e}; the view will be projected again");
                None
            }
        }
    }

    /// Writes `chunks` (ids ascending across them) as the view of projection `space` up to
    /// `watermark`, and publishes it.
    pub fn save(
        &self,
        store: &Store,
        space: u64,
        watermark: u64,
        chunks: &[Arc<PendingChunk>],
    ) -> Result<(), IndexError> {
        let dims = chunks.first().map_or(0, |c| c.dims);
        let rows: usize = chunks.iter().map(|c| c.ids.len()).sum();
        let mut body = Vec::with_capacity(32 + rows * (8 + 4 * dims));
        for w in [space, watermark, dims as u64, rows as u64] {
            body.extend_from_slice(&w.to_le_bytes());
        }
        for c in chunks {
            for id in &c.ids {
                body.extend_from_slice(&id.to_le_bytes());
            }
        }
        for c in chunks {
            for v in &c.vectors {
                body.extend_from_slice(&v.to_le_bytes());
            }
        }
        self.publisher.prepare()?;
        let previous: Option<Published> = self.publisher.load(store);
        let generation = previous.map_or(0, |p| p.generation) + 1;
        let file = Publisher::file_name("view", generation, "bin");
        self.publisher.write(&file, Kind::View, &body)?;
        self.publisher.publish(
            store,
            &Published {
                generation,
                file,
                space,
            },
        )
    }
}

pub(crate) fn parse(body: &[u8], space: u64, dims: usize) -> Result<SavedView, IndexError> {
    let mut r = Reader::new(body);
    let (saved_space, watermark, saved_dims, rows) = (r.u64()?, r.u64()?, r.u64()?, r.u64()?);
    if saved_space != space || saved_dims != dims as u64 {
        return Err(IndexError::Invalid(format!(
            "view of projection {saved_space:x} ({saved_dims} dims), expected {space:x} ({dims})"
        )));
    }
    let rows = usize::try_from(rows).map_err(|_| IndexError::Invalid("row count".into()))?;
    let ids: Vec<u64> = r
        .take(rows.saturating_mul(8))?
        .chunks_exact(8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect();
    let vectors: Vec<f32> = r
        .take(rows.saturating_mul(dims).saturating_mul(4))?
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
        .collect();
    if !r.rest().is_empty() || ids.windows(2).any(|w| w[0] >= w[1]) {
        return Err(IndexError::Invalid(
            "view rows out of order or trailing bytes".into(),
        ));
    }
    Ok(SavedView {
        watermark,
        chunk: PendingChunk {
            ids,
            vectors,
            dims,
            ..PendingChunk::default()
        },
    })
}
