//! What an extractor file says about itself: `extra/imgvec.json` inside its TorchScript archive,
//! e.g. `{"input_size": 28}`. It is the file `torch.jit.save(module, f, _extra_files={
//! "imgvec.json": ...})` writes, so a model exported from Python can carry it too; `imgvec
//! train` records it in every model it saves. libtorch ignores it; imgvec reads it with a zip
//! reader, so `--model-size` can be left out and a wrong one is one clear line.

use std::io::{Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::extractor::ExtractError;

/// The record's name under the archive's `extra/` folder.
pub const META_FILE: &str = "imgvec.json";

/// Input size when neither `--model-size` nor the model says.
pub const DEFAULT_INPUT_SIZE: u32 = 224;

/// The record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// Side of the square input the model was made for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_size: Option<u32>,
}

/// The record in the TorchScript archive at `path`; an empty one when the archive has none (a
/// file that is not a zip archive at all is left for libtorch to refuse).
pub fn read_meta(path: &Path) -> Result<ModelMeta, ExtractError> {
    let file = std::fs::File::open(path).map_err(|e| {
        let reason = match e.kind() {
            std::io::ErrorKind::NotFound => "file not found".to_string(),
            _ => e.to_string(),
        };
        ExtractError::model(path, reason)
    })?;
    let Ok(mut archive) = zip::ZipArchive::new(file) else {
        return Ok(ModelMeta::default());
    };
    let suffix = format!("/extra/{META_FILE}");
    let Some(name) = archive
        .file_names()
        .find(|n| n.ends_with(&suffix) && n.matches('/').count() == 2)
        .map(str::to_owned)
    else {
        return Ok(ModelMeta::default());
    };
    let entry = archive
        .by_name(&name)
        .map_err(|e| ExtractError::model(path, format!("{name}: {e}")))?;
    serde_json::from_reader(entry.take(64 << 10))
        .map_err(|e| ExtractError::model(path, format!("{name} is not valid: {e}")))
}

/// Adds `meta` to the TorchScript archive at `path` (one written by `CModule::save`, which has
/// no record yet), beside the archive's own records.
pub fn write_meta(path: &Path, meta: &ModelMeta) -> Result<(), ExtractError> {
    let err = |e: &dyn std::fmt::Display| {
        ExtractError::model(path, format!("recording {META_FILE}: {e}"))
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| err(&e))?;
    let root = archive_root(path)?;
    let mut zip = zip::ZipWriter::new_append(file).map_err(|e| err(&e))?;
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file(format!("{root}/extra/{META_FILE}"), options)
        .map_err(|e| err(&e))?;
    let json = serde_json::to_vec(meta).map_err(|e| err(&e))?;
    zip.write_all(&json).map_err(|e| err(&e))?;
    let file = zip.finish().map_err(|e| err(&e))?;
    file.sync_all().map_err(|e| err(&e))
}

/// The folder every record of a TorchScript archive sits in (`archive`, or the module's name).
fn archive_root(path: &Path) -> Result<String, ExtractError> {
    let file = std::fs::File::open(path).map_err(|e| ExtractError::model(path, e.to_string()))?;
    let archive = zip::ZipArchive::new(file)
        .map_err(|e| ExtractError::model(path, format!("not a TorchScript archive: {e}")))?;
    let root = archive
        .file_names()
        .next()
        .and_then(|n| n.split_once('/'))
        .map(|(root, _)| root.to_owned());
    root.ok_or_else(|| ExtractError::model(path, "not a TorchScript archive: no records"))
}

/// The input size to use: the one asked for, else the one the model records, else 224. Asking
/// for another size than the model records is refused, naming both.
pub fn choose_input_size(requested: Option<u32>, recorded: Option<u32>) -> Result<u32, String> {
    match (requested, recorded) {
        (Some(r), Some(m)) if r != m => Err(format!(
            "the model expects {m}×{m} input (it records its size), not {r}×{r}: leave out \
             --model-size or give --model-size {m}"
        )),
        (Some(r), _) => Ok(r),
        (None, Some(m)) => Ok(m),
        (None, None) => Ok(DEFAULT_INPUT_SIZE),
    }
}

/// The input size for the model at `path` (see `choose_input_size`).
pub fn input_size_for(path: &Path, requested: Option<u32>) -> Result<u32, ExtractError> {
    let recorded = read_meta(path)?.input_size;
    choose_input_size(requested, recorded).map_err(|m| ExtractError::model(path, m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_input_size_is_the_one_asked_for_else_the_recorded_one_else_224() {
        // (--model-size, recorded size, the size used or the start of the refusal)
        type Case = (Option<u32>, Option<u32>, Result<u32, &'static str>);
        let cases: [Case; 5] = [
            (None, None, Ok(224)),
            (Some(64), None, Ok(64)),
            (None, Some(28), Ok(28)),
            (Some(28), Some(28), Ok(28)),
            (Some(224), Some(28), Err("the model expects 28×28 input")),
        ];
        for (requested, recorded, expected) in cases {
            let got = choose_input_size(requested, recorded);
            match (got, expected) {
                (Ok(g), Ok(e)) => assert_eq!(g, e),
                (Err(g), Err(e)) => assert!(g.starts_with(e), "{g}"),
                (g, e) => panic!("{requested:?} {recorded:?}: {g:?} vs {e:?}"),
            }
        }
    }
}
