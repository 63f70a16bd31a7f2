//! A database's pipeline: which extractor made its vectors. Chosen when the database is created,
//! remembered in its metadata, with a copy of the model file inside the database folder so the
//! folder stays self-contained.

use std::path::{Path, PathBuf};

use imgvec_ingest::{default_model_path, Extractor, Pooling, TorchScriptExtractor};
use imgvec_storage::Store;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Named pipelines. Richer ones (`balanced`, `robust`) arrive with the descriptor issues.
pub const PIPELINES: &[&str] = &["fast"];
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
        let extractor = TorchScriptExtractor::load(&path, self.input_size, self.pooling)?;
        if extractor.dims() != self.dims {
            return Err(Error::Invalid(format!(
                "{}: model gives {} dimensions, database stores {}",
                path.display(),
                extractor.dims(),
                self.dims
            )));
        }
        Ok(Box::new(extractor))
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
    let (name, source, size, pooling) = match choice {
        PipelineChoice::Default => ("fast".to_string(), None, PRESET_INPUT_SIZE, Pooling::Gap),
        PipelineChoice::Named(n) if PIPELINES.contains(&n.as_str()) => {
            (n.clone(), None, PRESET_INPUT_SIZE, Pooling::Gap)
        }
        PipelineChoice::Named(n) => {
            return Err(Error::Invalid(format!(
                "unknown pipeline `{n}`; available: {}",
                PIPELINES.join(", ")
            )))
        }
        PipelineChoice::Model {
            path,
            size,
            pooling,
        } => ("custom".into(), Some(path.clone()), *size, *pooling),
    };
    if let Some(existing) = stored(store)? {
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
                 it cannot be changed by ingest",
                store.dir().display(),
                existing.name,
                existing.model_source,
                existing.input_size,
                existing.pooling
            )));
        }
        return Ok((existing, None));
    }
    let source = match source {
        Some(p) => p,
        None => default_model_path()?,
    };
    let extractor = TorchScriptExtractor::load(&source, size, pooling)?;
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
    };
    let json = serde_json::to_string(&config).map_err(|e| Error::Invalid(e.to_string()))?;
    store.put_meta(META_PIPELINE, &json)?;
    Ok((config, Some(Box::new(extractor))))
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
