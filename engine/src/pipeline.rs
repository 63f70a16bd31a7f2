//! A database's pipeline: which extractor made its vectors. Chosen when the database is created,
//! remembered in its metadata, with a copy of the model file inside the database folder so the
//! folder stays self-contained.

use std::path::{Path, PathBuf};

use imgvec_ingest::{
    default_model_path, model_dir, CnnBlock, ExtractError, Extractor, FusedExtractor, FusionSpec,
    HandBlock, Handcrafted, Pooling, TorchScriptExtractor,
};
use imgvec_storage::Store;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::local::{LocalSpec, VerifyParams};
use crate::reduce::WhiteningSpec;
use crate::vlad::VladSpec;

/// Named pipelines (presets):
/// - `fast`: MobileNetV2, global average pooling of the last layer at 224 px (1280 dims);
/// - `balanced`: MobileNetV2 mid-level (160 ch) and top-level (1280 ch) maps, R-MAC pooled at
///   320 and 224 px, + handcrafted colour and HOG blocks, fused and PCA-whitened to 256
///   dimensions on the collection;
/// - `robust`: `balanced`'s vectors plus up to 1000 SIFT keypoints per image (RootSIFT, packed
///   in the segments); searches add the images found by descriptor voting and by dense-window
///   search to the global shortlist, verify them spatially (see `local`) and align the ones
///   SIFT cannot verify (see `dense`);
/// - `robust-vlad`: `robust` with a VLAD of each image's RootSIFT descriptors (64 words,
///   whitened to 128 dimensions) fused into the global vector at weight 0.3 (see `vlad`).
pub const PIPELINES: &[&str] = &["fast", "balanced", "robust", "robust-vlad"];
/// Model file (in the model folder) of the `balanced` and `robust` presets.
pub const MAPS_MODEL_FILE: &str = "mobilenet_v2_maps.pt";
const META_PIPELINE: &str = "pipeline";
/// Input side of the named presets' model.
pub const PRESET_INPUT_SIZE: u32 = 224;
const MODELS_DIR: &str = "models";

/// What the caller asks for when a database is created (ignored when it already exists,
/// except that a conflicting explicit choice is an error).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum PipelineChoice {
    /// Whatever the database has; `fast` for a new one.
    #[default]
    Default,
    /// A named preset.
    Named(String),
    /// Any TorchScript extractor following the contract, with its square input size and the
    /// pooling for feature-map outputs.
    Model {
        path: PathBuf,
        size: u32,
        pooling: Pooling,
    },
}

/// The pipeline as stored in the database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineConfig {
    /// `fast` or `custom`.
    pub name: String,
    /// Model file relative to the database folder.
    pub model: String,
    /// BLAKE3 of the model file.
    pub model_fingerprint: String,
    /// Name of the file the model was copied from.
    pub model_source: String,
    pub input_size: u32,
    /// Pooling of `[N, C, H, W]` outputs (unused for `[N, D]` models).
    #[serde(default)]
    pub pooling: Pooling,
    pub dims: usize,
    /// Fused blocks (presets `balanced`, `robust`); `None`: the model's output is the vector.
    #[serde(default)]
    pub fusion: Option<FusionSpec>,
    /// PCA-whitening learned on the collection (see `reduce`).
    #[serde(default)]
    pub whitening: Option<WhiteningSpec>,
    /// Query-side defaults of the preset (`search` options can override them).
    #[serde(default)]
    pub query: QueryDefaults,
    /// Local features stored per image (preset `robust`).
    #[serde(default)]
    pub local: Option<LocalSpec>,
}

/// Search-time defaults a preset carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct QueryDefaults {
    /// Query augmentation: also search rotated copies of the query and keep each row's best
    /// score (see `Augment`).
    #[serde(default)]
    pub augment: crate::database::Augment,
    /// Average query expansion over this many top results (0: off).
    #[serde(default)]
    pub qe: usize,
    /// Spatial verification with local features (pipelines that store them).
    #[serde(default)]
    pub verify: Option<VerifyParams>,
}

/// What a named preset is made of.
struct Preset {
    model_file: &'static str,
    input_size: u32,
    fusion: Option<FusionSpec>,
    whitening: Option<WhiteningSpec>,
    query: QueryDefaults,
    local: Option<LocalSpec>,
}

/// The fused descriptor of `balanced` and `robust` (1440 CNN + 81 colour + 1764 HOG values).
/// Weights chosen on instances-dev (docs/RESULTS.md): colour 0.5 lifted recall@1 from 0.871 to
/// 0.917 (occlusion, crop, rotate), HOG 0.3 on top to 0.924 (near-duplicates); LBP at 0.3 changed
/// nothing (0.921) and is left out.
pub fn balanced_fusion() -> FusionSpec {
    let rmac = Pooling::Rmac { levels: 3 };
    FusionSpec {
        input_size: 320,
        scales: vec![320, 224],
        cnn: vec![
            CnnBlock {
                name: "mobilenet_v2.features16.rmac".into(),
                channels: (0, 160),
                pooling: rmac,
                weight: 1.0,
            },
            CnnBlock {
                name: "mobilenet_v2.features18.rmac".into(),
                channels: (160, 1440),
                pooling: rmac,
                weight: 1.0,
            },
        ],
        handcrafted: vec![
            HandBlock {
                kind: Handcrafted::Colour,
                weight: 0.5,
            },
            HandBlock {
                kind: Handcrafted::Hog,
                weight: 0.3,
            },
        ],
    }
}

fn preset(name: &str) -> Option<Preset> {
    let whitening = Some(WhiteningSpec {
        dims: 256,
        min_rows: 512,
        vlad: None,
    });
    match name {
        "fast" => Some(Preset {
            model_file: imgvec_ingest::files::DEFAULT_MODEL_FILE,
            input_size: PRESET_INPUT_SIZE,
            fusion: None,
            whitening: None,
            query: QueryDefaults::default(),
            local: None,
        }),
        "balanced" => Some(Preset {
            model_file: MAPS_MODEL_FILE,
            input_size: 320,
            fusion: Some(balanced_fusion()),
            whitening,
            query: QueryDefaults::default(),
            local: None,
        }),
        "robust" => Some(Preset {
            model_file: MAPS_MODEL_FILE,
            input_size: 320,
            fusion: Some(balanced_fusion()),
            whitening,
            query: QueryDefaults {
                augment: crate::database::Augment::None,
                qe: 0,
                verify: Some(VerifyParams::default()),
            },
            local: Some(LocalSpec {
                sift: imgvec_ingest::sift::SiftParams::default(),
            }),
        }),
        // Measured on instances-dev (docs/RESULTS.md): VLAD lifts the unverified global
        // ranking (recall@1 0.924 → 0.928) but costs near-duplicates once verification runs, so
        // it is not `robust`'s default.
        "robust-vlad" => preset("robust").map(|p| Preset {
            whitening: whitening.map(|w| WhiteningSpec {
                vlad: Some(VladSpec {
                    words: 64,
                    dims: 128,
                    weight: 0.3,
                }),
                ..w
            }),
            ..p
        }),
        _ => None,
    }
}

/// Local features of a named preset (none for unknown names, which fail later).
pub fn preset_local(name: &str) -> Option<LocalSpec> {
    preset(name).and_then(|p| p.local)
}

/// Input side of a named preset (the default size for unknown names, which fail later).
pub fn preset_input_size(name: &str) -> u32 {
    preset(name).map_or(PRESET_INPUT_SIZE, |p| p.input_size)
}

/// A preset's model file in the model folder, or an error naming the setup command.
fn preset_model(file: &str) -> Result<PathBuf> {
    if file == imgvec_ingest::files::DEFAULT_MODEL_FILE {
        return Ok(default_model_path()?);
    }
    let path = model_dir().join(file);
    if path.is_file() {
        Ok(path)
    } else {
        Err(ExtractError::MissingDefaultModel { path }.into())
    }
}

/// Loads the extractor a configuration describes from `model`.
fn extractor_for(
    model: &Path,
    size: u32,
    pooling: Pooling,
    fusion: Option<&FusionSpec>,
) -> Result<Box<dyn Extractor>> {
    Ok(match fusion {
        Some(spec) => Box::new(FusedExtractor::load(Some(model), spec.clone())?),
        None => Box::new(TorchScriptExtractor::load(model, size, pooling)?),
    })
}

impl PipelineConfig {
    pub fn model_path(&self, db_dir: &Path) -> PathBuf {
        db_dir.join(&self.model)
    }

    pub fn load_extractor(&self, db_dir: &Path) -> Result<Box<dyn Extractor>> {
        let path = self.model_path(db_dir);
        let (_, fingerprint) = read_model(&path)?;
        if fingerprint != self.model_fingerprint {
            return Err(imgvec_storage::StorageError::corruption(
                &path,
                "model file does not match the fingerprint the database recorded",
            )
            .into());
        }
        let extractor = extractor_for(&path, self.input_size, self.pooling, self.fusion.as_ref())?;
        if extractor.dims() != self.dims {
            return Err(Error::Invalid(format!(
                "{}: model gives {} dimensions, database stores {}",
                path.display(),
                extractor.dims(),
                self.dims
            )));
        }
        Ok(extractor)
    }
}

pub fn stored(store: &Store) -> Result<Option<PipelineConfig>> {
    match store.get_meta(META_PIPELINE)? {
        None => Ok(None),
        Some(json) => serde_json::from_str(&json).map(Some).map_err(|e| {
            imgvec_storage::StorageError::corruption(store.dir(), format!("pipeline record: {e}"))
                .into()
        }),
    }
}

/// Resolves `choice` against what the database already has; creates the pipeline (copying the
/// model into the database) when it has none. Returns the extractor it loaded, if it loaded one.
pub fn resolve(
    store: &Store,
    choice: &PipelineChoice,
) -> Result<(PipelineConfig, Option<Box<dyn Extractor>>)> {
    let named = match choice {
        PipelineChoice::Default => Some("fast"),
        PipelineChoice::Named(n) => Some(n.as_str()),
        PipelineChoice::Model { .. } => None,
    };
    let (name, source, size, pooling, fusion, whitening, query, local) = match named {
        Some(n) => {
            let p = preset(n).ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown pipeline `{n}`; available: {}",
                    PIPELINES.join(", ")
                ))
            })?;
            (
                n.to_string(),
                None,
                p.input_size,
                Pooling::Gap,
                p.fusion,
                p.whitening,
                p.query,
                p.local,
            )
        }
        None => {
            let PipelineChoice::Model {
                path,
                size,
                pooling,
            } = choice
            else {
                unreachable!("named choices handled above")
            };
            let q = QueryDefaults::default();
            (
                "custom".into(),
                Some(path.clone()),
                *size,
                *pooling,
                None,
                None,
                q,
                None,
            )
        }
    };
    if let Some(existing) = stored(store)? {
        check_choice(store.dir(), &existing, choice)?;
        return Ok((existing, None));
    }
    let source = match source {
        Some(p) => p,
        None => preset_model(preset(&name).map_or("", |p| p.model_file))?,
    };
    let extractor = extractor_for(&source, size, pooling, fusion.as_ref())?;
    let (bytes, fingerprint) = read_model(&source)?;
    let models_dir = store.dir().join(MODELS_DIR);
    std::fs::create_dir_all(&models_dir)
        .map_err(|e| imgvec_storage::StorageError::io(&models_dir, e))?;
    let rel = format!("{MODELS_DIR}/{}.pt", &fingerprint[..16]);
    let dest = store.dir().join(&rel);
    write_synced(&dest, &bytes)?;
    imgvec_storage::store::sync_dir(&models_dir)?;
    let config = PipelineConfig {
        name,
        model: rel,
        model_fingerprint: fingerprint,
        model_source: source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        input_size: size,
        pooling,
        dims: extractor.dims(),
        fusion,
        whitening,
        query,
        local,
    };
    let json = serde_json::to_string(&config).map_err(|e| Error::Invalid(e.to_string()))?;
    store.put_meta(META_PIPELINE, &json)?;
    Ok((config, Some(extractor)))
}

/// Fails when `choice` asks for another pipeline than the database's `existing` one.
pub fn check_choice(dir: &Path, existing: &PipelineConfig, choice: &PipelineChoice) -> Result<()> {
    let conflict = match choice {
        PipelineChoice::Default => false,
        PipelineChoice::Named(n) => *n != existing.name,
        PipelineChoice::Model {
            path,
            size,
            pooling,
        } => {
            read_model(path)?.1 != existing.model_fingerprint
                || *size != existing.input_size
                || *pooling != existing.pooling
        }
    };
    if conflict {
        return Err(Error::Invalid(format!(
            "{}: the database was created with pipeline `{}` (model {}, {}px, {:?} pooling); \
             it cannot be changed by ingest (use `imgvec reindex DB --pipeline NAME`)",
            dir.display(),
            existing.name,
            existing.model_source,
            existing.input_size,
            existing.pooling
        )));
    }
    Ok(())
}

/// A model file's bytes and fingerprint (BLAKE3, lower-case hex).
fn read_model(path: &Path) -> Result<(Vec<u8>, String)> {
    let bytes = std::fs::read(path).map_err(|e| Error::Image {
        path: path.display().to_string(),
        reason: format!("cannot read model file: {e}"),
    })?;
    let fingerprint = blake3::hash(&bytes).to_hex().to_string();
    Ok((bytes, fingerprint))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let io = |e| imgvec_storage::StorageError::io(path, e);
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}
