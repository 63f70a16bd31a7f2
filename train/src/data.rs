//! Training data: images prepared as ingest prepares them for a model, and label files.

use std::path::{Path, PathBuf};

use tch::Tensor;

use imgvec_ingest::{collect_files, decode, model_input, resize};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{path}: {reason}")]
    Input { path: String, reason: String },
    #[error("{0}")]
    Invalid(String),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Model(#[from] imgvec_ingest::ExtractError),
}

/// Saves `module` to `path` with the input `size` it takes recorded in it (`model_meta`), so
/// `imgvec ingest --model` needs no `--model-size`.
pub(crate) fn save_extractor(
    module: &tch::CModule,
    path: &std::path::Path,
    size: i64,
) -> Result<(), TrainError> {
    module.save(path)?;
    let meta = imgvec_ingest::model_meta::ModelMeta {
        input_size: u32::try_from(size).ok(),
    };
    imgvec_ingest::model_meta::write_meta(path, &meta)?;
    Ok(())
}

/// Training images as one `[N, 3, size, size]` tensor, with the files they came from.
pub struct TrainingSet {
    pub images: Tensor,
    pub files: Vec<PathBuf>,
    /// Files that could not be read or decoded, with the reason (skipped).
    pub errors: Vec<(PathBuf, String)>,
}

/// Reads every image under `paths` (files or folders, walked), prepared at `size` (floats in
/// [0, 1], as the engine gives them to a model).
pub fn load_images(paths: &[PathBuf], size: u32) -> Result<TrainingSet, TrainError> {
    load(paths, size, |rgb, data: &mut Vec<f32>| {
        model_input(rgb, size, data)
    })
}

/// [`load_images`] keeping bytes (`Uint8`, RGB planes): a quarter of the memory, for sets of
/// thousands of larger images.
pub fn load_image_bytes(paths: &[PathBuf], size: u32) -> Result<TrainingSet, TrainError> {
    load(paths, size, |rgb, data: &mut Vec<u8>| {
        let resized = resize(rgb, size, size);
        let plane = (size * size) as usize;
        let start = data.len();
        data.resize(start + 3 * plane, 0);
        for (i, px) in resized.pixels().enumerate() {
            for c in 0..3 {
                data[start + c * plane + i] = px[c];
            }
        }
    })
}

fn load<T: tch::kind::Element>(
    paths: &[PathBuf],
    size: u32,
    mut prepare: impl FnMut(&image::RgbImage, &mut Vec<T>),
) -> Result<TrainingSet, TrainError> {
    let list = collect_files(paths, false);
    let mut errors: Vec<(PathBuf, String)> = list.errors.clone();
    let mut data = Vec::new();
    let mut files = Vec::new();
    let per = (3 * size * size) as usize;
    for path in list.images {
        let decoded = imgvec_ingest::read_image_file(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| decode(&b).map_err(|e| e.to_string()));
        match decoded {
            Ok(img) => {
                prepare(&img.rgb, &mut data);
                files.push(path);
            }
            Err(reason) => errors.push((path, reason)),
        }
    }
    if files.is_empty() {
        return Err(TrainError::Invalid(format!(
            "no readable images under {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    debug_assert_eq!(data.len(), files.len() * per);
    let images = Tensor::of_slice(&data).view([files.len() as i64, 3, size as i64, size as i64]);
    Ok(TrainingSet {
        images,
        files,
        errors,
    })
}

/// Labels for some of the training images, from a JSON-lines file of
/// `{"path": ..., "label": ...}` (paths absolute or relative to the file's folder).
pub struct Labels {
    /// Row in the training set of each labelled image.
    pub rows: Vec<i64>,
    /// Class index of each labelled image.
    pub class: Vec<i64>,
    /// Class names, index order.
    pub names: Vec<String>,
}

/// Reads `path`, matching each line to an image of `files` (by canonical path). Errors name the
/// file, the line and the reason.
pub fn read_labels(path: &Path, files: &[PathBuf]) -> Result<Labels, TrainError> {
    let bad = |line: usize, reason: String| TrainError::Input {
        path: format!("{}:{line}", path.display()),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::Input {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let index: std::collections::HashMap<PathBuf, usize> = files
        .iter()
        .enumerate()
        .filter_map(|(i, f)| std::fs::canonicalize(f).ok().map(|c| (c, i)))
        .collect();
    let mut names: Vec<String> = Vec::new();
    let (mut rows, mut class) = (Vec::new(), Vec::new());
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(line_no, format!("not JSON: {e}")))?;
        let p = v["path"]
            .as_str()
            .ok_or_else(|| bad(line_no, "missing string field \"path\"".into()))?;
        let label = match &v["label"] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(x) => x.to_string(),
            _ => {
                return Err(bad(
                    line_no,
                    "missing field \"label\" (string or number)".into(),
                ))
            }
        };
        let full = base.join(p);
        let canonical = std::fs::canonicalize(&full)
            .map_err(|e| bad(line_no, format!("{}: {e}", full.display())))?;
        let row = *index.get(&canonical).ok_or_else(|| {
            bad(
                line_no,
                format!("{} is not among the training images", full.display()),
            )
        })?;
        let c = match names.iter().position(|x| *x == label) {
            Some(c) => c,
            None => {
                names.push(label);
                names.len() - 1
            }
        };
        rows.push(row as i64);
        class.push(c as i64);
    }
    if names.len() < 2 {
        return Err(TrainError::Input {
            path: path.display().to_string(),
            reason: format!(
                "needs labelled images of at least 2 classes, found {}",
                names.len()
            ),
        });
    }
    Ok(Labels { rows, class, names })
}
