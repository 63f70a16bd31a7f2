//! The `Extractor` seam and its TorchScript implementation (the extractor contract in
//! DESIGN.md: float32 RGB NCHW in [0,1] in; `[N, D]` or `[N, C, H, W]` out).

use std::path::{Path, PathBuf};

use tch::{CModule, Kind, Tensor};

use crate::precision::{Model, Setting};

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("model {path}: {message}")]
    Model { path: PathBuf, message: String },
    #[error("default model not found at {path}: run ./scripts/setup.sh (it builds the MobileNetV2 TorchScript file), or pass --model FILE.pt")]
    MissingDefaultModel { path: PathBuf },
}

impl ExtractError {
    /// What went wrong with the model file at `path`.
    pub fn model(path: &Path, message: impl Into<String>) -> ExtractError {
        ExtractError::Model {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// Turns batches of preprocessed images into one global descriptor each.
pub trait Extractor: Send {
    /// Identifies what produced a vector; stored with the database's pipeline.
    fn name(&self) -> &str;
    /// Side of the square input the engine resizes images to.
    fn input_size(&self) -> u32;
    /// Length of each descriptor.
    fn dims(&self) -> usize;
    /// `pixels` holds `n` images as float32 CHW in [0,1], `3 * size * size` values each.
    /// Returns `n * dims` values, row-major, not yet normalised.
    fn extract(&mut self, pixels: &[f32], n: usize) -> Result<Vec<f32>, ExtractError>;
}

pub use imgvec_options::Pooling;

/// R-MAC regions for an `h`×`w` map: squares of side `2·min(h,w)/(l+1)` at level `l`, spread
/// evenly over each axis with at least 40% overlap. Returns (y, x, side) triples.
pub fn rmac_regions(h: i64, w: i64, levels: u32) -> Vec<(i64, i64, i64)> {
    let mut out = Vec::new();
    let short = h.min(w);
    for l in 1..=levels as i64 {
        let side = (2 * short / (l + 1)).max(1);
        let positions = |len: i64| -> Vec<i64> {
            if len <= side {
                return vec![0];
            }
            // Enough regions that neighbours overlap by at least 40% of a side.
            let step_max = (side as f64 * 0.6).max(1.0);
            let n = (((len - side) as f64 / step_max).ceil() as i64 + 1).max(l);
            (0..n).map(|i| i * (len - side) / (n - 1).max(1)).collect()
        };
        for &y in &positions(h) {
            for &x in &positions(w) {
                out.push((y, x, side));
            }
        }
    }
    out
}

pub(crate) fn pool(maps: &Tensor, pooling: Pooling) -> Result<Tensor, tch::TchError> {
    let spatial = [2i64, 3];
    match pooling {
        Pooling::Gap => maps.f_mean_dim(Some(spatial.as_slice()), false, Kind::Float),
        Pooling::Gem { p } => maps
            .f_clamp_min(1e-6)?
            .f_pow_tensor_scalar(p as f64)?
            .f_mean_dim(Some(spatial.as_slice()), false, Kind::Float)?
            .f_pow_tensor_scalar(1.0 / p as f64),
        Pooling::Rmac { levels } => {
            let size = maps.size();
            let mut sum: Option<Tensor> = None;
            for (y, x, side) in rmac_regions(size[2], size[3], levels) {
                let region = maps
                    .f_narrow(2, y, side.min(size[2] - y))?
                    .f_narrow(3, x, side.min(size[3] - x))?
                    .f_amax(&spatial, false)?;
                let norm = region
                    .f_norm_scalaropt_dim(2, [1i64].as_slice(), true)?
                    .f_clamp_min(1e-12)?;
                let region = region.f_div(&norm)?;
                sum = Some(match sum {
                    None => region,
                    Some(acc) => acc.f_add(&region)?,
                });
            }
            sum.ok_or_else(|| tch::TchError::Shape("feature map has no R-MAC regions".into()))
        }
    }
}

/// Any TorchScript module that follows the extractor contract, run through libtorch on the CPU.
pub struct TorchScriptExtractor {
    path: PathBuf,
    name: String,
    module: Model,
    size: u32,
    pooling: Pooling,
    dims: usize,
}

/// Loads a TorchScript module for inference. The first call turns libtorch's profiling graph
/// executor off for the process: it runs a module's first calls unoptimised while it records
/// shapes, and records again whenever a batch size changes; the legacy executor optimises on the
/// first call. Measured alternately in one run (fast, this 2-core machine type): one `imgvec
/// search` process 0.80–0.86 → 0.71–0.73 s; ingest of 160 images unchanged within noise
/// (59–72 vs 65–67 images/s). The forward it runs is chosen by [`crate::precision`] under
/// `IMGVEC_PRECISION`.
pub fn load_module(path: &Path) -> Result<Model, ExtractError> {
    let setting = Setting::from_env().map_err(|message| ExtractError::model(path, message))?;
    load_module_as(path, setting)
}

/// [`load_module`] under an explicit precision setting.
pub fn load_module_as(path: &Path, setting: Setting) -> Result<Model, ExtractError> {
    static LEGACY_EXECUTOR: std::sync::Once = std::sync::Once::new();
    LEGACY_EXECUTOR.call_once(|| tch::jit::set_profiling_mode(false));
    let err = |message: String| ExtractError::model(path, message);
    let mut module = CModule::load(path).map_err(|e| {
        err(format!(
            "not a loadable TorchScript module: {}",
            torch_message(&e)
        ))
    })?;
    module.set_eval();
    Ok(Model::new(module, path, setting))
}

/// A libtorch error as one line: the C++ exception's message without the stack trace and
/// frame list that follow it (logged in full at debug level, `IMGVEC_LOG=debug`).
pub fn torch_message(e: &tch::TchError) -> String {
    let full = e.to_string();
    tracing::debug!("libtorch: {full}");
    one_line(&full)
}

fn one_line(full: &str) -> String {
    // An error inside a TorchScript module comes with the module's traceback; the cause is on
    // the last `RuntimeError: ` line.
    if let Some((_, cause)) = full.rsplit_once("RuntimeError: ") {
        return cause.lines().next().unwrap_or(cause).trim().to_string();
    }
    let head = full.split("Exception raised from").next().unwrap_or(full);
    let lines: Vec<&str> = head
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("frame #"))
        .collect();
    lines.join(" ")
}

impl TorchScriptExtractor {
    /// Loads the module and runs one probe image through it to learn and check its output shape.
    /// `pooling` applies when the module returns feature maps.
    pub fn load(path: &Path, size: u32, pooling: Pooling) -> Result<Self, ExtractError> {
        let err = |message: String| ExtractError::model(path, message);
        if !path.is_file() {
            return Err(err("file not found".into()));
        }
        if !(4..=4096).contains(&size) {
            return Err(err(format!("input size {size} is outside 4..=4096")));
        }
        let module = load_module(path)?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        let mut me = TorchScriptExtractor {
            path: path.to_path_buf(),
            name,
            module,
            size,
            pooling,
            dims: 0,
        };
        let probe = vec![0.5f32; (3 * size * size) as usize];
        let out = me.forward(&probe, 1).map_err(|e| match e {
            ExtractError::Model { message, .. } => err(format!(
                "does not take {size}×{size} input (give the size it was made for with \
                 --model-size): {message}"
            )),
            other => other,
        })?;
        me.dims = out.len();
        if me.dims == 0 {
            return Err(err("model produced an empty descriptor".into()));
        }
        Ok(me)
    }

    fn forward(&mut self, pixels: &[f32], n: usize) -> Result<Vec<f32>, ExtractError> {
        let err = |message: String| ExtractError::model(&self.path, message);
        let s = self.size as i64;
        if pixels.len() != n * 3 * (s * s) as usize {
            return Err(err(format!(
                "batch of {n} images got {} values",
                pixels.len()
            )));
        }
        let pooling = self.pooling;
        let out = tch::no_grad(|| -> Result<Tensor, tch::TchError> {
            let input = Tensor::f_of_slice(pixels)?.f_view([n as i64, 3, s, s])?;
            let out = self.module.forward(&input)?;
            let out = match out.dim() {
                2 => out,
                4 => pool(&out.f_to_kind(Kind::Float)?, pooling)?,
                d => {
                    return Err(tch::TchError::Shape(format!(
                        "output has {d} dimensions {:?}; the contract wants [N, D] or [N, C, H, W]",
                        out.size()
                    )))
                }
            };
            out.f_to_kind(Kind::Float)?.f_contiguous()
        })
        .map_err(|e| err(torch_message(&e)))?;
        let size = out.size();
        if size.first() != Some(&(n as i64)) {
            return Err(err(format!("output shape {size:?} for a batch of {n}")));
        }
        let mut values = vec![0f32; out.numel()];
        out.f_copy_data(&mut values, out.numel())
            .map_err(|e| err(torch_message(&e)))?;
        if self.dims != 0 && values.len() != n * self.dims {
            return Err(err(format!(
                "output shape {size:?} changed between batches"
            )));
        }
        Ok(values)
    }
}

impl Extractor for TorchScriptExtractor {
    fn name(&self) -> &str {
        &self.name
    }

    fn input_size(&self) -> u32 {
        self.size
    }

    fn dims(&self) -> usize {
        self.dims
    }

    fn extract(&mut self, pixels: &[f32], n: usize) -> Result<Vec<f32>, ExtractError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        self.forward(pixels, n)
    }
}

/// Sets libtorch's intra-op thread count (Debian's build defaults to one thread).
pub fn set_torch_threads(n: usize) {
    tch::set_num_threads(n.max(1) as i32);
}

/// Scales each `dims`-long row of `values` to unit L2 norm (zero rows stay zero).
pub fn l2_normalize_rows(values: &mut [f32], dims: usize) {
    for row in values.chunks_exact_mut(dims) {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 && norm.is_finite() {
            row.iter_mut().for_each(|x| *x /= norm);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torch_errors_become_one_line() {
        let cases = [
            (
                "The following operation failed in the TorchScript interpreter.\nTraceback of \
                 TorchScript, serialized code (most recent call last):\n  File \"code/x.py\", \
                 line 10, in forward\n    input = torch.linear(x, w)\n    ~~~ <--- HERE\n\
                 \nTraceback of TorchScript, original code:\nRuntimeError: mat1 and mat2 shapes \
                 cannot be multiplied (1x200704 and 3136x32)\n",
                "mat1 and mat2 shapes cannot be multiplied (1x200704 and 3136x32)",
            ),
            (
                "Internal torch error: PytorchStreamReader failed reading zip archive: failed \
                 finding central directory\nException raised from valid at \
                 ../caffe2/serialize/inline_container.cc:184 (most recent call first):\nframe #0: \
                 c10::Error::Error(...) + 0x9c (0x7f in libc10.so)\nframe #1: ...",
                "Internal torch error: PytorchStreamReader failed reading zip archive: failed \
                 finding central directory",
            ),
            ("shape mismatch", "shape mismatch"),
            ("first\n  second\n", "first second"),
        ];
        for (full, short) in cases {
            assert_eq!(one_line(full), short);
        }
    }

    /// A file that is not TorchScript gives one line naming the file, no C++ trace.
    #[test]
    fn a_bad_model_file_is_one_line() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("bad.pt");
        std::fs::write(&path, b"this is not a model").unwrap();
        let err = TorchScriptExtractor::load(&path, 32, Pooling::Gap)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with(&format!("model {}", path.display())),
            "{err}"
        );
        assert!(!err.contains('\n') && !err.contains("frame #"), "{err}");
    }
}
