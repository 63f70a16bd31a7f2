//! What the engine hands back: search hits and the description of a database (`imgvec info`),
//! with the per-module parts of it re-exported.

use imgvec_storage::StoreStats;
use serde::Serialize;

use crate::index::IndexInfo;
pub use crate::local::LocalInfo;
use crate::pipeline::PipelineConfig;
pub use crate::reduce::{VladInfo, WhiteningInfo};

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    pub id: u64,
    pub path: String,
    /// Cosine similarity, higher is better.
    pub score: f32,
    /// Spatially verified inliers, when the search verified this result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inliers: Option<usize>,
    /// Dense alignment (normalised cross-correlation, −1…1), when the search aligned this
    /// result (candidates SIFT did not verify).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alignment: Option<f32>,
    /// What verification concluded, when this search verified this result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<crate::search::Verdict>,
    /// The key verification ordered this result by among the candidates it checked
    /// (docs/SEARCH.md, Ranking: the cosine plus the evidence's bonuses); absent for results it
    /// did not check. The answers of several databases of one collection (shards) merge by
    /// (`tier`, `rank_key` else `score`), which is the order one database gives.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rank_key: Option<f32>,
    /// The answer to "is this the same image?" (docs/CALIBRATION.md).
    #[serde(rename = "match")]
    pub matched: crate::search::Match,
    /// Estimated probability that this result shows the same source as the query, from the
    /// pipeline's calibration; comparable across presets (`None` for custom models).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f32>,
    /// Some inlier pairs of a verified result as (query x, y, result x, y), each a fraction of
    /// its image's width or height, when the search was asked for them
    /// ([`SearchOptions::pairs`](crate::SearchOptions::pairs)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pairs: Option<Vec<[f32; 4]>>,
    /// Where dense alignment found the query in an aligned result: (left, top, right, bottom),
    /// fractions of the result's width and height.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<[f32; 4]>,
    /// A result SIFT matched with at least `min_inliers` inliers (verified, or a picture pasted
    /// over too little of the query to verify): the share of the query it covers under the
    /// fitted transform, and the box of that part of the query (left, top, right, bottom,
    /// fractions of the query's width and height).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub footprint: Option<[f32; 4]>,
    /// Its alignment with the query with the matched results' footprints left out, when the
    /// search looked beneath pictures pasted over the query (docs/SEARCH.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beneath: Option<f32>,
    /// The ranking tier verification gave this result: 2 what the query shows beneath pictures
    /// pasted over it, 1 verified, 0 checked otherwise; absent for results it did not check.
    /// With `rank_key`, the order one database gives (shards merge by it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<u8>,
    /// The row's user attributes (from the record the path is read from).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub attributes: std::collections::BTreeMap<String, String>,
}

/// What is stored for one row besides its record (`imgvec show`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredFeatures {
    /// Length of the stored global vector.
    pub vector_dims: usize,
    /// SIFT keypoints stored for spatial verification (pipelines with local features).
    pub keypoints: Option<usize>,
    /// Bytes of those local features.
    pub local_bytes: usize,
    /// Bytes of the stored JPEG thumbnail.
    pub thumbnail_bytes: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatabaseInfo {
    pub path: String,
    pub read_only: bool,
    pub pipeline: Option<PipelineConfig>,
    #[serde(flatten)]
    pub stats: StoreStats,
    pub indexes: IndexInfo,
    /// The learned whitening, for pipelines that have one and once it is learned.
    pub whitening: Option<WhiteningInfo>,
    /// Stored local features, for pipelines that have them.
    pub local: Option<LocalInfo>,
}
