//! The featurizer: image → unit global vector, local features, dense query. Ingest and search
//! go through the same functions, so a stored row and a query of the same image are made the
//! same way.

use std::path::Path;
use std::sync::Arc;

use image::RgbImage;
use imgvec_ingest::sift::{self, LocalFeatures, SiftParams};
use imgvec_ingest::{l2_normalize_rows, Extractor, ModelInput};
use imgvec_storage::{OpenMode, Store};
use parking_lot::Mutex;

use super::{resolve, PipelineChoice, PipelineConfig};
use crate::dense::DenseQuery;
use crate::error::{Error, Result};
use crate::reduce::WhiteningSpec;

/// Images per model forward at query time.
const QUERY_BATCH: usize = 16;

/// A query's local features, and the query made ready for dense alignment.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct QueryLocal {
    pub features: LocalFeatures,
    pub dense: Option<DenseQuery>,
}

/// One database handle's pipeline and its extractor (loaded on first use).
pub(crate) struct Featurizer {
    store: Arc<Store>,
    pipeline: Mutex<Option<PipelineConfig>>,
    /// What the caller asked for when opening (fixes the pipeline of a new database).
    requested: PipelineChoice,
    extractor: Mutex<Option<Box<dyn Extractor>>>,
    /// Query images (each variant counted) the model ran on.
    embedded: std::sync::atomic::AtomicU64,
}

impl Featurizer {
    pub fn new(
        store: Arc<Store>,
        pipeline: Option<PipelineConfig>,
        requested: PipelineChoice,
    ) -> Featurizer {
        Featurizer {
            store,
            pipeline: Mutex::new(pipeline),
            requested,
            extractor: Mutex::new(None),
            embedded: Default::default(),
        }
    }

    fn dir(&self) -> &Path {
        self.store.dir()
    }

    pub fn pipeline(&self) -> Option<PipelineConfig> {
        self.pipeline.lock().clone()
    }

    /// The pipeline's whitening, once the pipeline is known (read in place, not cloned: asked
    /// on every search and worker pass).
    pub fn whitening(&self) -> Option<WhiteningSpec> {
        self.pipeline.lock().as_ref().and_then(|p| p.whitening)
    }

    /// The stored pipeline's local features (read in place).
    pub fn local(&self) -> Option<crate::local::LocalSpec> {
        self.pipeline.lock().as_ref().and_then(|p| p.local)
    }

    pub fn requested(&self) -> &PipelineChoice {
        &self.requested
    }

    /// The model input ingest will make: the stored pipeline's, or the one a new database is
    /// about to get. Known without loading the model.
    pub fn planned_input(&self) -> ModelInput {
        match self.pipeline.lock().as_ref() {
            Some(config) => config.model_input(),
            None => ModelInput {
                size: self.requested.input_size(),
                trim_borders: self.requested.trim_borders(),
            },
        }
    }

    /// The local features ingest will extract, known without loading the model.
    pub fn planned_local(&self) -> Option<SiftParams> {
        match self.pipeline.lock().as_ref() {
            Some(config) => config.local.map(|l| l.sift),
            None => self.requested.local(),
        }
    }

    /// Runs `f` with the extractor, loading it first (and, for a new database, fixing its
    /// pipeline). The extractor is behind a mutex; libtorch parallelises inside each call.
    pub fn with_extractor<T>(&self, f: impl FnOnce(&mut dyn Extractor) -> Result<T>) -> Result<T> {
        let mut guard = self.extractor.lock();
        if guard.is_none() {
            let mut pipeline = self.pipeline.lock();
            let read_only = self.store.mode() == OpenMode::ReadOnly;
            let loaded = match pipeline.as_ref() {
                Some(config) if read_only || self.requested == PipelineChoice::Default => {
                    config.load_extractor(self.dir())?
                }
                None if read_only => {
                    return Err(Error::Invalid(format!(
                        "{}: database has no pipeline yet (nothing ingested)",
                        self.dir().display()
                    )))
                }
                _ => {
                    let (config, extractor) = resolve(&self.store, &self.requested)?;
                    let extractor = match extractor {
                        Some(e) => e,
                        None => config.load_extractor(self.dir())?,
                    };
                    *pipeline = Some(config);
                    extractor
                }
            };
            *guard = Some(loaded);
        }
        match guard.as_mut() {
            Some(extractor) => f(extractor.as_mut()),
            None => Err(Error::Invalid("no extractor loaded".into())),
        }
    }

    /// Unit global vectors of `n` images given as model inputs of side `size` (`n × dims`
    /// values, and `dims`). Fails when the model wants another input size.
    pub fn embed(&self, pixels: &[f32], n: usize, size: u32) -> Result<(Vec<f32>, usize)> {
        self.with_extractor(|e| {
            if e.input_size() != size {
                return Err(Error::Invalid(format!(
                    "model input size {} differs from the planned {size}",
                    e.input_size()
                )));
            }
            let mut out = e.extract(pixels, n)?;
            l2_normalize_rows(&mut out, e.dims());
            Ok((out, e.dims()))
        })
    }

    /// Unit global vectors of decoded images, a batch at a time.
    pub fn embed_images(&self, images: &[&RgbImage]) -> Result<Vec<Vec<f32>>> {
        let size = self.with_extractor(|e| Ok(e.input_size()))?;
        // Loaded above: the pipeline is known (a new database's was just fixed).
        let input = self.planned_input();
        let mut out = Vec::with_capacity(images.len());
        self.embedded
            .fetch_add(images.len() as u64, std::sync::atomic::Ordering::Relaxed);
        for chunk in images.chunks(QUERY_BATCH) {
            let mut pixels = Vec::new();
            for img in chunk {
                input.pixels(img, &mut pixels);
            }
            let (v, dims) = self.embed(&pixels, chunk.len(), size)?;
            out.extend(v.chunks_exact(dims).map(|c| c.to_vec()));
        }
        Ok(out)
    }

    /// Query images (each augmentation variant counted) the model ran on so far.
    pub fn embedded(&self) -> u64 {
        self.embedded.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Local features of an image, as ingest stores them (unpacked).
    pub fn local_features(img: &RgbImage, params: &SiftParams) -> LocalFeatures {
        sift::extract(img, params)
    }

    /// A query image's local features and dense-alignment query.
    pub fn query_local(img: &RgbImage, params: &SiftParams) -> QueryLocal {
        QueryLocal {
            features: Self::local_features(img, params),
            dense: Some(DenseQuery::new(img)),
        }
    }
}
