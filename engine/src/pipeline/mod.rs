//! A database's pipeline: which extractor made its vectors. Chosen when the database is created,
//! remembered in its metadata, with a copy of the model file inside the database folder so the
//! folder stays self-contained.

pub(crate) mod featurize;
mod presets;

pub use crate::options::PipelineChoice;
pub(crate) use featurize::{Featurizer, QueryLocal};
pub use presets::PRESET_INPUT_SIZE;

use std::path::{Path, PathBuf};

use imgvec_ingest::sift::SiftParams;
use imgvec_ingest::{
    default_model_path, model_dir, ExtractError, Extractor, FusedExtractor, FusionSpec, ModelInput,
    Pooling, TorchScriptExtractor,
};
use imgvec_storage::Store;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::local::{LocalSpec, VerifyParams};
use crate::options::{Augment, Preset};
use crate::reduce::WhiteningSpec;
use crate::search::calibration::{self, Calibration};
use presets::PresetExt;

const META_PIPELINE: &str = "pipeline";
pub(crate) const MODELS_DIR: &str = "models";

impl PipelineChoice {
    /// The model input side a new database with this choice gets, known without the model.
    pub(crate) fn input_size(&self) -> u32 {
        match self {
            PipelineChoice::Model { size, .. } => *size,
            other => other
                .preset()
                .map_or(PRESET_INPUT_SIZE, |p| p.spec().input_size),
        }
    }

    /// Whether a new database with this choice trims uniform bars before the model (the named
    /// pipelines, `fast` included; a custom model gets exactly the contract's input).
    pub(crate) fn trim_borders(&self) -> bool {
        !matches!(self, PipelineChoice::Model { .. })
    }

    /// The local features a new database with this choice stores (an explicit preset only, as
    /// before: the default is `fast`, which has none).
    pub(crate) fn local(&self) -> Option<SiftParams> {
        match self {
            PipelineChoice::Preset(p) | PipelineChoice::PresetModel { preset: p, .. } => {
                p.spec().local.map(|l| l.sift)
            }
            PipelineChoice::Default | PipelineChoice::Model { .. } => None,
        }
    }
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
    /// Uniform bars around a photo are trimmed before the model (`imgvec_ingest::borders`).
    /// Databases made before it was recorded keep their untrimmed inputs.
    #[serde(default)]
    pub trim_borders: bool,
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
    /// How the preset's scores and verdicts translate into confidence (`None`: custom models).
    /// Databases made before it was recorded get their preset's current one when opened.
    #[serde(default)]
    pub calibration: Option<Calibration>,
}

/// Search-time defaults a preset carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct QueryDefaults {
    /// Query augmentation: also search rotated copies of the query and keep each row's best
    /// score (see `Augment`).
    #[serde(default)]
    pub augment: Augment,
    /// Average query expansion over this many top results (0: off).
    #[serde(default)]
    pub qe: usize,
    /// Spatial verification with local features (pipelines that store them).
    #[serde(default)]
    pub verify: Option<VerifyParams>,
    /// The upright fallback of searches that verify nothing (a verifying search's is
    /// `verify.upright`): an image query whose answer holds no calibrated match is searched
    /// again with its turns (`search::upright`). `None` in databases made before it was
    /// recorded: [`stored`] gives them their preset's current setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upright: Option<bool>,
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
    /// How this pipeline's images become model inputs.
    pub fn model_input(&self) -> ModelInput {
        ModelInput {
            size: self.input_size,
            trim_borders: self.trim_borders,
        }
    }

    pub fn model_path(&self, db_dir: &Path) -> PathBuf {
        db_dir.join(&self.model)
    }

    pub fn load_extractor(&self, db_dir: &Path) -> Result<Box<dyn Extractor>> {
        let path = self.model_path(db_dir);
        if !is_model_file(&self.model) {
            // A record naming a file outside the database's models/ (`../`, an absolute path)
            // is damaged or crafted; TorchScript is code, so nothing else is ever loaded.
            return Err(imgvec_storage::StorageError::corruption(
                db_dir,
                format!(
                    "the pipeline names model `{}`, not a file in models/",
                    self.model
                ),
            )
            .into());
        }
        let (_, fingerprint) = read_stored_model(&path)?;
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
        Some(json) => {
            let mut config: PipelineConfig = serde_json::from_str(&json).map_err(|e| {
                imgvec_storage::StorageError::corruption(
                    store.dir(),
                    format!("pipeline record: {e}"),
                )
            })?;
            if config.calibration.is_none() {
                config.calibration = calibration::for_preset(&config.name);
            }
            if config.query.upright.is_none() {
                config.query.upright = config
                    .name
                    .parse::<Preset>()
                    .ok()
                    .and_then(|p| p.spec().query.upright);
            }
            Ok(Some(config))
        }
    }
}

/// Resolves `choice` against what the database already has; creates the pipeline (copying the
/// model into the database) when it has none. Returns the extractor it loaded, if it loaded one.
pub fn resolve(
    store: &Store,
    choice: &PipelineChoice,
) -> Result<(PipelineConfig, Option<Box<dyn Extractor>>)> {
    let (name, source, size, pooling, fusion, whitening, query, local) = match choice.preset() {
        Some(p) => {
            let spec = p.spec();
            (
                p.name().to_string(),
                choice.model_path().map(Path::to_path_buf),
                spec.input_size,
                Pooling::Gap,
                spec.fusion,
                spec.whitening,
                spec.query,
                spec.local,
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
        None => preset_model(choice.preset().map_or("", |p| p.spec().model_file))?,
    };
    let extractor = extractor_for(&source, size, pooling, fusion.as_ref())?;
    let (bytes, fingerprint) = read_model(&source)?;
    let config = PipelineConfig {
        name,
        model: format!("{MODELS_DIR}/{}.pt", &fingerprint[..16]),
        model_fingerprint: fingerprint,
        model_source: source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        input_size: size,
        trim_borders: choice.trim_borders(),
        pooling,
        dims: extractor.dims(),
        fusion,
        whitening,
        query,
        local,
        calibration: choice
            .preset()
            .and_then(|p| calibration::for_preset(p.name())),
    };
    install(store, &config, &bytes)?;
    Ok((config, Some(extractor)))
}

/// Gives a database without a pipeline `config`: its copy of the model (`model`, the bytes of
/// the file `config.model` names), then the record.
pub(crate) fn install(store: &Store, config: &PipelineConfig, model: &[u8]) -> Result<()> {
    // The folder's own entry is durable only once the database folder is synced.
    imgvec_storage::create_dirs(store.vfs().as_ref(), &store.dir().join(MODELS_DIR))?;
    let dest = store.dir().join(&config.model);
    imgvec_storage::write_atomic(store.vfs().as_ref(), &dest, &[model])?;
    let json = serde_json::to_string(config).map_err(|e| Error::Invalid(e.to_string()))?;
    store.put_meta(META_PIPELINE, &json)?;
    Ok(())
}

/// The database's own copy of its model, read (and checked against the fingerprint recorded).
pub(crate) fn stored_model(dir: &Path, config: &PipelineConfig) -> Result<Vec<u8>> {
    let (bytes, fingerprint) = read_stored_model(&config.model_path(dir))?;
    if fingerprint != config.model_fingerprint {
        let why = "the model file does not match the fingerprint the database recorded";
        return Err(imgvec_storage::StorageError::corruption(config.model_path(dir), why).into());
    }
    Ok(bytes)
}

/// Fails when `choice` asks for another pipeline than the database's `existing` one.
pub fn check_choice(dir: &Path, existing: &PipelineConfig, choice: &PipelineChoice) -> Result<()> {
    let conflict = match choice {
        PipelineChoice::Default => false,
        PipelineChoice::Preset(p) => p.name() != existing.name,
        PipelineChoice::PresetModel { preset, path } => {
            preset.name() != existing.name || read_model(path)?.1 != existing.model_fingerprint
        }
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

/// Whether `rel` names a file directly in the database's `models/` folder.
pub(crate) fn is_model_file(rel: &str) -> bool {
    let mut parts = Path::new(rel).components();
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some(std::path::Component::Normal(dir)), Some(std::path::Component::Normal(_)), None)
            if dir == MODELS_DIR
    )
}

/// A model file's bytes and fingerprint (BLAKE3, lower-case hex). Only a regular file is read
/// (a FIFO or device named as a model would hang or fill memory).
fn read_model(path: &Path) -> Result<(Vec<u8>, String)> {
    let refuse = |reason: String| Error::Image {
        path: path.display().to_string(),
        reason,
    };
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(refuse("not a regular file".into())),
        Err(e) => return Err(refuse(format!("cannot read model file: {e}"))),
    }
    let bytes = std::fs::read(path).map_err(|e| refuse(format!("cannot read model file: {e}")))?;
    let fingerprint = blake3::hash(&bytes).to_hex().to_string();
    Ok((bytes, fingerprint))
}

/// The database's own copy of its model, read: a regular file in `models/` itself, never
/// through a link (a crafted database could point one anywhere).
fn read_stored_model(path: &Path) -> Result<(Vec<u8>, String)> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(imgvec_storage::StorageError::corruption(
            path,
            "the database's model is a symbolic link",
        )
        .into()),
        _ => read_model(path),
    }
}

/// The fingerprint of the database's copy of its model (`verify` checks it against the
/// pipeline's).
pub(crate) fn model_fingerprint(path: &Path) -> Result<String> {
    read_stored_model(path).map(|(_, fingerprint)| fingerprint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_made_before_trimming_keep_untrimmed_inputs() {
        let old = r#"{"name":"fast","model":"models/0123456789abcdef.pt","model_fingerprint":"ab",
            "model_source":"mobilenet_v2.pt","input_size":224,"dims":1280}"#;
        let config: PipelineConfig = serde_json::from_str(old).unwrap();
        let untrimmed = ModelInput {
            size: 224,
            trim_borders: false,
        };
        assert_eq!(config.model_input(), untrimmed);
        for (choice, trims) in [
            (PipelineChoice::Default, true),
            (PipelineChoice::Preset(crate::Preset::Robust), true),
            (
                PipelineChoice::Model {
                    path: "m.pt".into(),
                    size: 224,
                    pooling: Pooling::Gap,
                },
                false,
            ),
        ] {
            assert_eq!(choice.trim_borders(), trims, "{choice:?}");
        }
    }

    #[test]
    fn model_files_stay_inside_models() {
        for (rel, ok) in [
            ("models/0123456789abcdef.pt", true),
            ("models/../../etc/passwd", false),
            ("/etc/passwd", false),
            ("models", false),
            ("other/x.pt", false),
            ("models/sub/x.pt", false),
            ("../models/x.pt", false),
        ] {
            assert_eq!(is_model_file(rel), ok, "{rel}");
        }
    }
}
