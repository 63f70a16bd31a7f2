//! The `Extractor` seam and its TorchScript implementation (the extractor contract in
//! DESIGN.md: float32 RGB NCHW in [0,1] in; `[N, D]` or `[N, C, H, W]` out).

use std::path::{Path, PathBuf};

use tch::{CModule, Kind, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("model {path}: {message}")]
    Model { path: PathBuf, message: String },
    #[error("default model not found at {path}: run ./scripts/setup.sh (it builds the MobileNetV2 TorchScript file), or pass --model FILE.pt")]
    MissingDefaultModel { path: PathBuf },
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

/// Any TorchScript module that follows the extractor contract, run through libtorch on the CPU.
pub struct TorchScriptExtractor {
    path: PathBuf,
    name: String,
    module: CModule,
    size: u32,
    dims: usize,
}

impl TorchScriptExtractor {
    /// Loads the module and runs one probe image through it to learn and check its output shape.
    pub fn load(path: &Path, size: u32) -> Result<Self, ExtractError> {
        let err = |message: String| ExtractError::Model {
            path: path.to_path_buf(),
            message,
        };
        if !path.is_file() {
            return Err(err("file not found".into()));
        }
        if !(16..=2048).contains(&size) {
            return Err(err(format!("input size {size} is outside 16..=2048")));
        }
        let mut module = CModule::load(path)
            .map_err(|e| err(format!("not a loadable TorchScript module: {e}")))?;
        module.set_eval();
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        let mut me = TorchScriptExtractor {
            path: path.to_path_buf(),
            name,
            module,
            size,
            dims: 0,
        };
        let probe = vec![0.5f32; (3 * size * size) as usize];
        let out = me.forward(&probe, 1)?;
        me.dims = out.len();
        if me.dims == 0 {
            return Err(err("model produced an empty descriptor".into()));
        }
        Ok(me)
    }

    fn forward(&mut self, pixels: &[f32], n: usize) -> Result<Vec<f32>, ExtractError> {
        let err = |message: String| ExtractError::Model {
            path: self.path.clone(),
            message,
        };
        let s = self.size as i64;
        if pixels.len() != n * 3 * (s * s) as usize {
            return Err(err(format!(
                "batch of {n} images got {} values",
                pixels.len()
            )));
        }
        let out = tch::no_grad(|| -> Result<Tensor, tch::TchError> {
            let input = Tensor::f_of_slice(pixels)?.f_view([n as i64, 3, s, s])?;
            let out = self.module.forward_ts(&[input])?;
            let out = match out.dim() {
                2 => out,
                // Feature maps: global average pooling (GeM / R-MAC come with richer pipelines).
                4 => out.f_mean_dim(Some([2i64, 3].as_slice()), false, Kind::Float)?,
                d => {
                    return Err(tch::TchError::Shape(format!(
                        "output has {d} dimensions {:?}; the contract wants [N, D] or [N, C, H, W]",
                        out.size()
                    )))
                }
            };
            out.f_to_kind(Kind::Float)?.f_contiguous()
        })
        .map_err(|e| err(e.to_string()))?;
        let size = out.size();
        if size.first() != Some(&(n as i64)) {
            return Err(err(format!("output shape {size:?} for a batch of {n}")));
        }
        let mut values = vec![0f32; out.numel()];
        out.f_copy_data(&mut values, out.numel())
            .map_err(|e| err(e.to_string()))?;
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
