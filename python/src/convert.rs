//! How `Database.search`'s options come in from Python, and hits and records go back out as
//! Python dicts.

use std::collections::BTreeMap;

use imgvec::{Augment, Filter, Hit, ImageRecord, SearchMode, SearchOptions, VerifyOverrides};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::{invalid, parse, to_py};

/// Search options as the Python layer passes them (a dict of `Database.search`'s keywords).
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub(crate) struct SearchArgs {
    k: usize,
    mode: String,
    threshold: Option<f32>,
    matches_only: bool,
    pairs: bool,
    path_prefix: Option<String>,
    attrs: BTreeMap<String, String>,
    verify: Option<usize>,
    qe: Option<usize>,
    augment: Option<String>,
    nprobe: Option<usize>,
    rerank: bool,
    rerank_depth: Option<usize>,
    dense: Option<usize>,
    alignment_floor: Option<f32>,
    min_inliers: Option<usize>,
    inlier_px: Option<f32>,
    min_coverage: Option<f32>,
    expand: Option<usize>,
    upright: Option<bool>,
    expand_with: Option<Vec<f32>>,
    /// `SearchOptions::candidates` as JSON.
    candidates: Option<String>,
    collection_rows: Option<u64>,
}

impl SearchArgs {
    pub(crate) fn options(&self) -> PyResult<SearchOptions> {
        let opts = SearchOptions {
            k: self.k,
            mode: parse::<SearchMode>(&self.mode)?,
            threshold: self.threshold,
            matches_only: self.matches_only,
            pairs: self.pairs,
            filter: Filter {
                path_prefix: self.path_prefix.clone(),
                attributes: self.attrs.clone(),
            },
            nprobe: self.nprobe,
            rerank: self.rerank,
            rerank_depth: self.rerank_depth,
            qe: self.qe,
            augment: self.augment.as_deref().map(parse::<Augment>).transpose()?,
            verify: VerifyOverrides {
                shortlist: self.verify,
                dense: self.dense,
                alignment_floor: self.alignment_floor,
                min_inliers: self.min_inliers,
                inlier_px: self.inlier_px,
                min_coverage: self.min_coverage,
                expand: self.expand,
                upright: self.upright,
            },
            expand_with: self.expand_with.clone(),
            candidates: self
                .candidates
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|e| invalid(format!("candidates: {e}")))?,
            collection_rows: self.collection_rows,
        };
        opts.check().map_err(to_py)?;
        Ok(opts)
    }
}

/// A hit as a dict.
pub(crate) fn hit_dict<'py>(py: Python<'py>, hit: &Hit) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("id", hit.id)?;
    d.set_item("path", &hit.path)?;
    d.set_item("score", hit.score)?;
    d.set_item("inliers", hit.inliers)?;
    d.set_item("alignment", hit.alignment)?;
    d.set_item("verdict", hit.verdict.map(|v| v.name()))?;
    d.set_item("rank_key", hit.rank_key)?;
    d.set_item("match", hit.matched.name())?;
    d.set_item("confidence", hit.confidence)?;
    d.set_item("region", hit.region)?;
    d.set_item("coverage", hit.coverage)?;
    d.set_item("footprint", hit.footprint)?;
    d.set_item("beneath", hit.beneath)?;
    d.set_item("tier", hit.tier)?;
    d.set_item("pairs", &hit.pairs)?;
    d.set_item("attrs", &hit.attributes)?;
    Ok(d)
}

/// A record as a dict.
pub(crate) fn record_dict<'py>(py: Python<'py>, rec: &ImageRecord) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("id", rec.id)?;
    d.set_item("path", &rec.path)?;
    d.set_item("content_hash", rec.content_hash.to_string())?;
    d.set_item("width", rec.width)?;
    d.set_item("height", rec.height)?;
    d.set_item("format", &rec.format)?;
    d.set_item("ingested_at_ms", rec.ingested_at_ms)?;
    d.set_item("attrs", rec.attributes.clone())?;
    d.set_item("duplicate_of", rec.duplicate_of)?;
    Ok(d)
}
