//! What callers pass in: how to open a database, how to search, what to search with. Options
//! are types, not strings: each enum (defined in `imgvec-options`) has one spelling, shared by
//! the CLI (clap `ValueEnum`, feature `clap`), JSON (serde) and `FromStr`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use imgvec_ingest::Pooling;
pub use imgvec_options::{Augment, Preset, SearchMode, VerifyOverrides};
use imgvec_storage::ImageRecord;

use crate::error::{Error, Result};
use crate::index::{AnnMode, IndexOptions};
use crate::local::VerifyParams;

/// How to open a database.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Read-only handles take no lock and see the database as it was when opened; any number of
    /// them may run beside the one writer.
    pub read_only: bool,
    /// A writable handle creates the database when the folder is absent or empty (default);
    /// `false` refuses a folder that is not already a database. A non-empty folder that is not
    /// a database is refused either way, untouched.
    pub create: bool,
    /// Pipeline for a new database (an existing one keeps its own).
    pub pipeline: PipelineChoice,
    /// Threads for decoding and for libtorch; defaults to the number of cores.
    pub threads: usize,
    /// Run a background thread that merges small segments, purges deleted rows and keeps the
    /// approximate indexes (of every search space) trained, current and saved.
    pub background_compaction: bool,
    /// How the approximate indexes are built.
    pub index: IndexOptions,
    /// The file layer every file of the database is written through (tests substitute one that
    /// simulates power cuts); `None` = the real file system.
    #[doc(hidden)]
    pub file_layer: Option<FileLayer>,
}

/// A file layer for [`OpenOptions::file_layer`].
#[derive(Clone)]
pub struct FileLayer(pub std::sync::Arc<dyn imgvec_storage::Vfs>);

impl std::fmt::Debug for FileLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileLayer")
    }
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            read_only: false,
            create: true,
            pipeline: PipelineChoice::Default,
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            background_compaction: true,
            index: IndexOptions::default(),
            file_layer: None,
        }
    }
}

/// What the caller asks for when a database is created (ignored when it already exists,
/// except that a conflicting explicit choice is an error).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum PipelineChoice {
    /// Whatever the database has; `fast` for a new one.
    #[default]
    Default,
    /// A named preset.
    Preset(Preset),
    /// Any TorchScript extractor following the contract, with its square input size and the
    /// pooling for feature-map outputs.
    Model {
        path: PathBuf,
        size: u32,
        pooling: Pooling,
    },
    /// A named preset built on the maps model (`balanced`, `robust`, `robust-vlad`) whose CNN is
    /// another TorchScript model with the same outputs, e.g. one `imgvec train contrastive`
    /// fine-tuned on the collection.
    PresetModel { preset: Preset, path: PathBuf },
}

impl PipelineChoice {
    /// A custom TorchScript model at `path` with square input `size`; without one, the size the
    /// model records (`imgvec_ingest::model_meta`), else 224. A size that contradicts the
    /// model's record is refused, naming the size it expects.
    pub fn model(path: PathBuf, size: Option<u32>, pooling: Pooling) -> Result<PipelineChoice> {
        let size = imgvec_ingest::model_meta::input_size_for(&path, size)?;
        Ok(PipelineChoice::Model {
            path,
            size,
            pooling,
        })
    }

    /// Preset `preset` with its CNN replaced by the model at `path`; only the presets whose
    /// CNN is the maps model take one.
    pub fn preset_model(preset: Preset, path: PathBuf) -> Result<PipelineChoice> {
        if preset == Preset::Fast {
            return Err(Error::Invalid(format!(
                "{}: --model with --pipeline replaces the CNN of balanced, robust or \
                 robust-vlad; `fast` takes a model as --model alone",
                path.display()
            )));
        }
        Ok(PipelineChoice::PresetModel { preset, path })
    }

    /// The preset this choice names (`fast` for the default), `None` for a custom model.
    pub fn preset(&self) -> Option<Preset> {
        match self {
            PipelineChoice::Default => Some(Preset::Fast),
            PipelineChoice::Preset(p) | PipelineChoice::PresetModel { preset: p, .. } => Some(*p),
            PipelineChoice::Model { .. } => None,
        }
    }

    /// The model file this choice names, if it names one (else the preset's own).
    pub fn model_path(&self) -> Option<&Path> {
        match self {
            PipelineChoice::Model { path, .. } | PipelineChoice::PresetModel { path, .. } => {
                Some(path)
            }
            PipelineChoice::Default | PipelineChoice::Preset(_) => None,
        }
    }
}

pub(crate) trait SearchModeExt {
    /// The approximate index this mode searches; `None` for exact search.
    fn ann(self) -> Option<AnnMode>;
}

impl SearchModeExt for SearchMode {
    fn ann(self) -> Option<AnnMode> {
        match self {
            SearchMode::Exact => None,
            SearchMode::IvfPq => Some(AnnMode::IvfPq),
            SearchMode::Hamming => Some(AnnMode::Hamming),
            SearchMode::HammingIvf => Some(AnnMode::HammingIvf),
        }
    }
}

pub(crate) trait AugmentExt {
    /// The copies of `img` to search (the image itself first).
    fn variants(self, img: &image::RgbImage) -> Vec<image::RgbImage>;
}

impl AugmentExt for Augment {
    fn variants(self, img: &image::RgbImage) -> Vec<image::RgbImage> {
        match self {
            Augment::None => vec![img.clone()],
            Augment::Rot4 => vec![
                img.clone(),
                image::imageops::rotate90(img),
                image::imageops::rotate180(img),
                image::imageops::rotate270(img),
            ],
        }
    }
}

/// Engine-side behaviour of the option types (`imgvec_options` holds the types themselves, so
/// the `imgvec` launcher can parse a command line without linking the engine).
pub(crate) trait VerifyOverridesExt {
    /// The pipeline's verification `base` with these overrides; `None` when nothing is left to
    /// verify (no shortlist, no voting, no dense search).
    fn apply(&self, base: VerifyParams) -> Option<VerifyParams>;
}

impl VerifyOverridesExt for VerifyOverrides {
    fn apply(&self, base: VerifyParams) -> Option<VerifyParams> {
        let mut p = base;
        if let Some(n) = self.shortlist {
            p.shortlist = n;
            p.voted = n;
            p.dense = n;
        }
        if let Some(n) = self.dense {
            p.dense = n;
        }
        if let Some(a) = self.alignment_floor {
            p.alignment_floor = a;
        }
        if let Some(n) = self.min_inliers {
            p.min_inliers = n;
        }
        if let Some(px) = self.inlier_px {
            p.inlier_px = px;
        }
        if let Some(c) = self.min_coverage {
            p.min_coverage = c;
        }
        if let Some(n) = self.expand {
            p.expand = n;
        }
        if let Some(u) = self.upright {
            p.upright = u;
        }
        (p.shortlist > 0 || p.voted > 0 || p.dense > 0).then_some(p)
    }
}

/// Rows a search may return: every condition must hold. The default allows every row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only rows whose stored path starts with this prefix.
    pub path_prefix: Option<String>,
    /// Only rows carrying all these attributes with these values.
    pub attributes: BTreeMap<String, String>,
}

impl Filter {
    /// Whether the filter allows every row.
    pub fn is_empty(&self) -> bool {
        self.path_prefix.is_none() && self.attributes.is_empty()
    }

    /// Whether one record passes.
    pub fn matches(&self, rec: &ImageRecord) -> bool {
        self.path_prefix
            .as_ref()
            .is_none_or(|p| rec.path.starts_with(p.as_str()))
            && self
                .attributes
                .iter()
                .all(|(k, v)| rec.attributes.get(k) == Some(v))
    }
}

/// How one search (or batch of searches) runs.
#[derive(Debug, Clone)]
pub struct SearchOptions {
    pub k: usize,
    pub mode: SearchMode,
    /// Only results with at least this cosine score.
    pub threshold: Option<f32>,
    /// Only results whose calibrated `match` is `verified` or `likely`.
    pub matches_only: bool,
    /// Return some inlier pairs of each verified result ([`Hit::pairs`](crate::Hit::pairs)),
    /// for drawing the matches.
    pub pairs: bool,
    /// Only rows whose path and attributes match (evaluated once per batch).
    pub filter: Filter,
    /// Inverted lists probed by `IvfPq` and `HammingIvf`; `None` = the index's default.
    pub nprobe: Option<usize>,
    /// Re-rank approximate candidates by exact cosine on the raw vectors (default on). Off,
    /// scores are the index's own: `1 - d²/2` for IVF-PQ, `1 - hamming/bits` for codes.
    pub rerank: bool,
    /// Candidates fetched from an approximate index per query; `None` = `index::default_depth`.
    pub rerank_depth: Option<usize>,
    /// Query augmentation; `None` = the pipeline's default.
    pub augment: Option<Augment>,
    /// Average query expansion (αQE with α = 3): the query vector plus its top `qe` results
    /// weighted by similarity³ is searched again. `None` = the pipeline's default; 0 = off.
    pub qe: Option<usize>,
    /// Spatial verification and dense alignment, adjusted from the pipeline's defaults.
    pub verify: VerifyOverrides,
    /// Verified query expansion with these results instead of the query's own verified ones:
    /// the sum of their vectors in the search space ([`Database::space_vectors`]), for every
    /// query of the batch, which is expanded even where it verified nothing here. The shards of
    /// one collection expand with what verified anywhere in it (docs/RAY.md); needs `expand`.
    ///
    /// [`Database::space_vectors`]: crate::Database::space_vectors
    pub expand_with: Option<Vec<f32>>,
    /// Verification examines only these candidates (of every query of the batch) instead of
    /// gathering its own: a shard's rows of its collection's candidates, merged from every
    /// shard's [`Database::candidates`] (docs/RAY.md). Rows that are not live here are skipped.
    /// Verified expansion examines only the new rows of `expanded` (the collection's top of the
    /// expanded ranking, from every shard's candidates with `expand_with`).
    ///
    /// [`Database::candidates`]: crate::Database::candidates
    pub candidates: Option<crate::Candidates>,
    /// Set by the shards of one collection: the live rows of the whole collection. A stage
    /// that spends a fixed budget per query on the rows it rates best (dense-window search
    /// measures 512) spends this database's share of it instead, with a margin
    /// (`search::context::shard_budget`), so the shards together measure about what one
    /// database would, not each the whole budget (docs/RAY.md).
    pub collection_rows: Option<u64>,
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions {
            k: 10,
            mode: SearchMode::Exact,
            threshold: None,
            matches_only: false,
            pairs: false,
            filter: Filter::default(),
            nprobe: None,
            rerank: true,
            rerank_depth: None,
            augment: None,
            qe: None,
            verify: VerifyOverrides::default(),
            expand_with: None,
            candidates: None,
            collection_rows: None,
        }
    }
}

/// The largest `k` a search answers (a larger one is refused, not allocated).
pub const MAX_K: usize = 10_000;
/// The largest candidate depth, probe count or shortlist a search accepts.
pub const MAX_DEPTH: usize = 100_000;
/// The largest verification shortlist and query-expansion depth.
pub const MAX_SHORTLIST: usize = 1_000;

impl SearchOptions {
    /// Refuses values no search can answer (`k` of 0 or above [`MAX_K`], depths above
    /// [`MAX_DEPTH`], ...) with an error naming the option, instead of trying to allocate them.
    pub fn check(&self) -> Result<()> {
        let given = self.candidates.as_ref();
        let listed = given.map(|c| {
            let lists = [&c.shortlist, &c.voted, &c.dense, &c.expanded];
            lists.iter().map(|l| l.len()).max().unwrap_or(0)
        });
        let limits: [(&str, Option<usize>, usize, usize); 8] = [
            ("k", Some(self.k), 1, MAX_K),
            ("a candidate list's length", listed, 0, MAX_SHORTLIST),
            (
                "candidate turns",
                given.map(|c| c.turns.len()),
                0,
                3 * MAX_SHORTLIST,
            ),
            ("nprobe", self.nprobe, 1, MAX_DEPTH),
            ("rerank depth", self.rerank_depth, 1, MAX_DEPTH),
            ("qe", self.qe, 0, MAX_SHORTLIST),
            ("verify", self.verify.shortlist, 0, MAX_SHORTLIST),
            ("dense", self.verify.dense, 0, MAX_SHORTLIST),
        ];
        for (name, value, min, max) in limits {
            if let Some(v) = value.filter(|v| !(min..=max).contains(v)) {
                return Err(Error::Invalid(format!(
                    "{name} {v} is out of range: give {min} to {max}"
                )));
            }
        }
        if self.collection_rows == Some(0) {
            return Err(Error::Invalid(
                "collection_rows 0 is out of range: give 1 or more".into(),
            ));
        }
        if let Some(t) = self.threshold.filter(|t| !t.is_finite()) {
            return Err(Error::Invalid(format!(
                "threshold {t}: give a finite score"
            )));
        }
        Ok(self.verify.check()?)
    }
}

/// What to search with.
#[derive(Debug, Clone)]
pub enum Query {
    /// An image file.
    Path(PathBuf),
    /// Encoded image bytes (any supported format).
    Bytes(Vec<u8>),
    /// A stored image ("more like this"); the image itself is left out of its results.
    Id(u64),
    /// An image featurized already ([`Database::featurize_query`]), by this database or one
    /// made like it: the shards of one collection are sent the query's features, made once.
    ///
    /// [`Database::featurize_query`]: crate::Database::featurize_query
    Features(std::sync::Arc<crate::search::QueryFeatures>),
}

impl Query {
    /// The stored row a query by id is (left out of its results).
    pub fn own_row(&self) -> Option<u64> {
        match self {
            Query::Id(id) => Some(*id),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_overrides_table() {
        let base = VerifyParams::default();
        // (overrides, expected shortlist/voted/dense, or None = verification off)
        type Expected = Option<(usize, usize, usize)>;
        let cases: [(VerifyOverrides, Expected); 5] = [
            (VerifyOverrides::default(), Some((30, 30, 30))),
            (
                VerifyOverrides {
                    shortlist: Some(5),
                    ..Default::default()
                },
                Some((5, 5, 5)),
            ),
            (
                VerifyOverrides {
                    shortlist: Some(5),
                    dense: Some(0),
                    ..Default::default()
                },
                Some((5, 5, 0)),
            ),
            (
                VerifyOverrides {
                    shortlist: Some(0),
                    ..Default::default()
                },
                None,
            ),
            (
                VerifyOverrides {
                    shortlist: Some(0),
                    dense: Some(3),
                    ..Default::default()
                },
                Some((0, 0, 3)),
            ),
        ];
        for (o, want) in cases {
            let got = o.apply(base).map(|p| (p.shortlist, p.voted, p.dense));
            assert_eq!(got, want, "{o:?}");
        }
        let tuned = VerifyOverrides {
            min_inliers: Some(12),
            inlier_px: Some(4.0),
            min_coverage: Some(0.3),
            alignment_floor: Some(0.8),
            expand: Some(3),
            ..Default::default()
        }
        .apply(base)
        .unwrap();
        assert_eq!(
            (
                tuned.min_inliers,
                tuned.inlier_px,
                tuned.min_coverage,
                tuned.alignment_floor,
                tuned.expand
            ),
            (12, 4.0, 0.3, 0.8, 3)
        );
        assert!(VerifyOverrides {
            alignment_floor: Some(1.5),
            ..Default::default()
        }
        .check()
        .is_err());
        assert!(VerifyOverrides {
            inlier_px: Some(0.0),
            ..Default::default()
        }
        .check()
        .is_err());
        assert!(VerifyOverrides {
            min_coverage: Some(1.5),
            ..Default::default()
        }
        .check()
        .is_err());
    }

    #[test]
    fn search_options_limits_table() {
        let ok = SearchOptions::default();
        type Change = fn(&mut SearchOptions);
        // (change, accepted)
        let cases: [(Change, bool); 13] = [
            (|_| {}, true),
            (|o| o.k = 0, false),
            (|o| o.k = MAX_K, true),
            (|o| o.k = 100_000_000_000, false),
            (|o| o.nprobe = Some(0), false),
            (|o| o.rerank_depth = Some(MAX_DEPTH + 1), false),
            (|o| o.qe = Some(0), true),
            (|o| o.verify.shortlist = Some(MAX_SHORTLIST + 1), false),
            (|o| o.threshold = Some(f32::NAN), false),
            (|o| o.candidates = Some(crate::Candidates::default()), true),
            (|o| o.collection_rows = Some(0), false),
            (|o| o.collection_rows = Some(1), true),
            (
                |o| {
                    let many = vec![(1, 0.5); MAX_SHORTLIST + 1];
                    o.candidates = Some(crate::Candidates {
                        voted: many,
                        ..Default::default()
                    })
                },
                false,
            ),
        ];
        for (i, (change, accepted)) in cases.into_iter().enumerate() {
            let mut o = ok.clone();
            change(&mut o);
            assert_eq!(o.check().is_ok(), accepted, "case {i}: {:?}", o.check());
        }
        let err = SearchOptions {
            k: 100_000_000_000,
            ..ok
        }
        .check()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("k 100000000000") && err.contains("10000"),
            "{err}"
        );
    }
}
