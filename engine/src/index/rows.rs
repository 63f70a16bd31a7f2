//! What the voting and dense-window indexes share: a [`Knn`] whose vectors are keyed by row
//! id, one record per row offered to it (rows without vectors included, so the lifecycle
//! counts them), the watermark and the rows its layout was chosen for; purging, and the
//! persisted layout of that common part.

use std::collections::BTreeMap;

use imgvec_storage::Snapshot;

use super::knn::{knn_lists, Knn, KnnShape};
use crate::derived::artifact::{Body, Reader, HEADER_LEN};
use crate::derived::lifecycle::Derived;
use crate::derived::slot::Kept;
use crate::error::IndexError;

pub struct KnnRows<R> {
    pub(crate) knn: Knn,
    /// One record per row offered, by id.
    pub(crate) rows: BTreeMap<u64, R>,
    /// Rows with ids up to this one have been offered.
    pub watermark: u64,
    /// Rows its layout was chosen for (0: the layout no longer changes with growth).
    trained_on: u64,
}

impl<R> Derived for KnnRows<R> {
    fn watermark(&self) -> u64 {
        self.watermark
    }
    fn rows(&self) -> usize {
        self.rows.len()
    }
    /// Rebuilt at growth while more vectors would change its layout (exact → IVF-PQ, more
    /// lists); once the lists reach the shape's cap, the trained quantisers serve any later
    /// rows (SIFT descriptors and normalised windows are generic).
    fn trained_on(&self) -> u64 {
        self.trained_on
    }
}

impl<R> Kept for KnnRows<R> {
    /// Whether [`Kept::purge`] works (see [`Knn::removes_in_place`]).
    fn purges_in_place(&self) -> bool {
        self.knn.removes_in_place()
    }

    /// Drops the rows `snap` no longer holds (layouts that remove in place).
    fn purge(&mut self, snap: &Snapshot) -> crate::error::Result<()> {
        let dead: Vec<u64> = self
            .rows
            .keys()
            .copied()
            .filter(|&id| !snap.is_live(id))
            .collect();
        self.knn.remove(&dead)?;
        for id in dead {
            self.rows.remove(&id);
        }
        Ok(())
    }

    /// Whether its kNN lists are searched where they lie in the mapped file.
    fn in_place(&self) -> bool {
        self.knn.lists_in_place()
    }

    /// Whether its kNN index was read from FAISS's whole serialisation, which the lists layout
    /// replaced for IVF indexes (see [`Knn::read`]).
    fn outdated(&self) -> bool {
        self.knn.outdated()
    }

    /// Whether a search or catch-up found its file damaged ([`Knn::damaged`]).
    fn damaged(&self) -> bool {
        self.knn.damaged()
    }
}

impl<R> KnnRows<R> {
    /// An empty structure around `knn`, made with `shape` for a collection of `rows` rows.
    pub(crate) fn new(knn: Knn, shape: &KnnShape, rows: usize) -> KnnRows<R> {
        let settled = knn_lists(&knn.factory) >= shape.max_lists;
        KnnRows {
            knn,
            rows: BTreeMap::new(),
            watermark: 0,
            trained_on: if settled { 0 } else { rows.max(1) as u64 },
        }
    }

    /// Watermark, trained-on rows and the row count (u64 each), each row (its id, u64, then
    /// what `write` gives; by id), then the kNN index ([`Knn::write`]; the body starts at file
    /// offset `artifact::HEADER_LEN`).
    pub(crate) fn encode(&self, write: impl Fn(&R, &mut Vec<u8>)) -> Result<Vec<u8>, IndexError> {
        let mut out = Vec::new();
        for w in [self.watermark, self.trained_on, self.rows.len() as u64] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        for (id, r) in &self.rows {
            out.extend_from_slice(&id.to_le_bytes());
            write(r, &mut out);
        }
        self.knn.write(&mut out, HEADER_LEN)?;
        Ok(out)
    }

    /// Reads what [`KnnRows::encode`] wrote; `read` reads one row's record.
    pub(crate) fn decode(
        body: &Body,
        dims: usize,
        read: impl Fn(&mut Reader) -> Result<R, IndexError>,
    ) -> Result<KnnRows<R>, IndexError> {
        let mut r = Reader::new(body.bytes());
        let (watermark, trained_on, n) = (r.u64()?, r.u64()?, r.u64()?);
        let mut rows = BTreeMap::new();
        for _ in 0..n {
            let id = r.u64()?;
            rows.insert(id, read(&mut r)?);
        }
        let knn_at = body.bytes().len() - r.rest().len();
        Ok(KnnRows {
            knn: Knn::read(&body.slice(knn_at..body.bytes().len()), dims)?,
            rows,
            watermark,
            trained_on,
        })
    }
}
