//! Fused global descriptors: several blocks — pooled CNN feature-map channel groups computed at
//! more than one input scale, and handcrafted colour / LBP / HOG blocks — each L2-normalised,
//! weighted and concatenated into one vector (the `balanced` and `robust` presets' extractor).
//!
//! The engine stores this raw concatenation, so a later PCA-whitening (learned on the collection
//! by the engine) or a re-weighting never needs the original pixels; `FusionSpec::layout` says
//! where each block lives in the vector.

use std::path::{Path, PathBuf};

use image::{GrayImage, Luma};
use imageproc::hog::{hog, HogOptions};
use imageproc::local_binary_patterns::{local_binary_pattern, UNIFORM_REPRESENTATIVE_2};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::extractor::{l2_normalize_rows, pool, ExtractError, Extractor, Pooling};
use crate::precision::Model;

/// A channel range of the model's `[N, C, H, W]` output, pooled into one block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CnnBlock {
    pub name: String,
    /// Channels `start..end` of the feature maps.
    pub channels: (usize, usize),
    pub pooling: Pooling,
    pub weight: f32,
}

/// A handcrafted block, computed from the input pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Handcrafted {
    /// HSV histogram (8 hue × 3 saturation × 3 value bins, square-rooted) + mean, standard
    /// deviation and skewness of each RGB channel: 81 values.
    Colour,
    /// Rotation-invariant uniform LBP (8 neighbours, imageproc's codes mapped to their 10
    /// classes) over the whole image and its central half, at 128 and 64 px: 40 values.
    Lbp,
    /// HOG (imageproc; 9 unsigned orientations, 8 px cells, 2×2-cell blocks) of the image at
    /// 64×64: 1764 values.
    Hog,
}

impl Handcrafted {
    pub const ALL: [Handcrafted; 3] = [Handcrafted::Colour, Handcrafted::Lbp, Handcrafted::Hog];

    pub fn name(self) -> &'static str {
        match self {
            Handcrafted::Colour => "colour",
            Handcrafted::Lbp => "lbp",
            Handcrafted::Hog => "hog",
        }
    }

    pub fn dims(self) -> usize {
        match self {
            Handcrafted::Colour => 72 + 9,
            Handcrafted::Lbp => 40,
            Handcrafted::Hog => 7 * 7 * 2 * 2 * 9,
        }
    }

    /// One image, float32 CHW in [0, 1], `size`×`size`; the block's values, not normalised.
    pub fn compute(self, chw: &[f32], size: u32) -> Vec<f32> {
        match self {
            Handcrafted::Colour => colour(chw, size),
            Handcrafted::Lbp => {
                let mut out = lbp(&grey(chw, size, 128));
                out.extend(lbp(&grey(chw, size, 64)));
                out
            }
            Handcrafted::Hog => {
                let g = grey(chw, size, 64);
                // 64 is a multiple of the cell side, so imageproc accepts it.
                hog(&g, HogOptions::new(9, false, 8, 2, 1)).unwrap_or_else(|_| vec![0.0; 1764])
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HandBlock {
    pub kind: Handcrafted,
    pub weight: f32,
}

/// What a fused extractor computes. Stored in the database's pipeline record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FusionSpec {
    /// Side of the square input (the largest scale).
    pub input_size: u32,
    /// Sides at which the CNN runs (each ≤ `input_size`); pooled blocks are summed over scales.
    pub scales: Vec<u32>,
    pub cnn: Vec<CnnBlock>,
    pub handcrafted: Vec<HandBlock>,
}

impl FusionSpec {
    /// (name, start, end, weight) of every block in the fused vector, in order.
    pub fn layout(&self) -> Vec<(String, usize, usize, f32)> {
        let mut out = Vec::new();
        let mut at = 0;
        for b in &self.cnn {
            let d = b.channels.1 - b.channels.0;
            out.push((b.name.clone(), at, at + d, b.weight));
            at += d;
        }
        for h in &self.handcrafted {
            out.push((h.kind.name().to_string(), at, at + h.kind.dims(), h.weight));
            at += h.kind.dims();
        }
        out
    }

    pub fn dims(&self) -> usize {
        self.layout().last().map_or(0, |b| b.2)
    }
}

/// Runs a feature-map TorchScript model at several scales and the handcrafted blocks.
pub struct FusedExtractor {
    path: Option<PathBuf>,
    module: Option<Model>,
    spec: FusionSpec,
    dims: usize,
}

impl FusedExtractor {
    /// `model` is required when the spec has CNN blocks; it must return `[N, C, H, W]` maps with
    /// at least as many channels as the blocks name.
    pub fn load(model: Option<&Path>, spec: FusionSpec) -> Result<Self, ExtractError> {
        let path = model.map(Path::to_path_buf);
        let err = |message: String| {
            ExtractError::model(path.as_deref().unwrap_or(Path::new("")), message)
        };
        if spec.scales.iter().any(|&s| s < 32 || s > spec.input_size) {
            return Err(err(format!(
                "scales {:?} must lie in 32..={}",
                spec.scales, spec.input_size
            )));
        }
        let module = match (&path, spec.cnn.is_empty()) {
            (_, true) => None,
            (None, false) => return Err(err("CNN blocks need a model file".into())),
            (Some(p), false) => {
                if !p.is_file() {
                    return Err(err("file not found".into()));
                }
                Some(crate::extractor::load_module(p)?)
            }
        };
        let dims = spec.dims();
        let mut me = FusedExtractor {
            path: path.clone(),
            module,
            spec,
            dims,
        };
        let probe = vec![0.5f32; (3 * me.spec.input_size * me.spec.input_size) as usize];
        let out = me.extract(&probe, 1)?;
        if out.len() != dims || dims == 0 {
            return Err(err(format!(
                "probe gave {} values, expected {dims}",
                out.len()
            )));
        }
        Ok(me)
    }

    pub fn spec(&self) -> &FusionSpec {
        &self.spec
    }

    fn model_err(&self, message: String) -> ExtractError {
        ExtractError::model(self.path.as_deref().unwrap_or(Path::new("")), message)
    }

    /// The CNN blocks of `n` images, `n × Σ block dims`, each block L2-normalised after summing
    /// its per-scale pooled (and L2-normalised) vectors.
    fn cnn_blocks(&self, pixels: &[f32], n: usize) -> Result<Vec<Vec<f32>>, ExtractError> {
        let Some(module) = &self.module else {
            return Ok(Vec::new());
        };
        let s = self.spec.input_size as i64;
        let blocks = &self.spec.cnn;
        let result = tch::no_grad(|| -> Result<Vec<Vec<f32>>, tch::TchError> {
            let input = Tensor::f_of_slice(pixels)?.f_view([n as i64, 3, s, s])?;
            let mut sums: Vec<Option<Tensor>> = blocks.iter().map(|_| None).collect();
            for &scale in &self.spec.scales {
                let x = if scale as i64 == s {
                    input.shallow_clone()
                } else {
                    input.f_upsample_bilinear2d(
                        [scale as i64, scale as i64].as_slice(),
                        false,
                        None,
                        None,
                    )?
                };
                let maps = module.forward(&x)?.f_to_kind(Kind::Float)?;
                if maps.dim() != 4 {
                    return Err(tch::TchError::Shape(format!(
                        "fused blocks need [N, C, H, W] maps, the model gave {:?}",
                        maps.size()
                    )));
                }
                let c = maps.size()[1] as usize;
                for (b, sum) in blocks.iter().zip(sums.iter_mut()) {
                    if b.channels.1 > c || b.channels.0 >= b.channels.1 {
                        return Err(tch::TchError::Shape(format!(
                            "block `{}` wants channels {:?}, the model has {c}",
                            b.name, b.channels
                        )));
                    }
                    let group = maps.f_narrow(
                        1,
                        b.channels.0 as i64,
                        (b.channels.1 - b.channels.0) as i64,
                    )?;
                    let pooled = pool(&group, b.pooling)?;
                    let norm = pooled
                        .f_norm_scalaropt_dim(2, [1i64].as_slice(), true)?
                        .f_clamp_min(1e-12)?;
                    let pooled = pooled.f_div(&norm)?;
                    *sum = Some(match sum.take() {
                        None => pooled,
                        Some(acc) => acc.f_add(&pooled)?,
                    });
                }
            }
            let mut out = Vec::with_capacity(blocks.len());
            for sum in sums.into_iter().flatten() {
                let sum = sum.f_contiguous()?;
                let mut v = vec![0f32; sum.numel()];
                sum.f_copy_data(&mut v, sum.numel())?;
                out.push(v);
            }
            Ok(out)
        });
        result.map_err(|e| self.model_err(e.to_string()))
    }
}

impl Extractor for FusedExtractor {
    fn name(&self) -> &str {
        "fused"
    }

    fn input_size(&self) -> u32 {
        self.spec.input_size
    }

    fn dims(&self) -> usize {
        self.dims
    }

    fn extract(&mut self, pixels: &[f32], n: usize) -> Result<Vec<f32>, ExtractError> {
        let size = self.spec.input_size;
        let plane = 3 * (size * size) as usize;
        if pixels.len() != n * plane {
            return Err(self.model_err(format!("batch of {n} images got {} values", pixels.len())));
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        let cnn = self.cnn_blocks(pixels, n)?;
        let mut out = Vec::with_capacity(n * self.dims);
        for i in 0..n {
            let image = &pixels[i * plane..(i + 1) * plane];
            for (b, values) in self.spec.cnn.iter().zip(&cnn) {
                let d = b.channels.1 - b.channels.0;
                push_block(&mut out, &values[i * d..(i + 1) * d], b.weight);
            }
            for h in &self.spec.handcrafted {
                push_block(&mut out, &h.kind.compute(image, size), h.weight);
            }
        }
        Ok(out)
    }
}

/// Appends `values` L2-normalised and scaled by `weight`.
fn push_block(out: &mut Vec<f32>, values: &[f32], weight: f32) {
    let start = out.len();
    out.extend_from_slice(values);
    let block = &mut out[start..];
    l2_normalize_rows(block, block.len().max(1));
    block.iter_mut().for_each(|x| *x *= weight);
}

/// Grey (Rec. 601 luma) of a CHW image, resized to `side`×`side` by box averaging.
fn grey(chw: &[f32], size: u32, side: u32) -> GrayImage {
    let plane = (size * size) as usize;
    let (s, t) = (size as usize, side as usize);
    let mut sums = vec![0f32; t * t];
    let mut counts = vec![0u32; t * t];
    for y in 0..s {
        let ty = y * t / s;
        for x in 0..s {
            let i = y * s + x;
            let v = 0.299 * chw[i] + 0.587 * chw[plane + i] + 0.114 * chw[2 * plane + i];
            let j = ty * t + x * t / s;
            sums[j] += v;
            counts[j] += 1;
        }
    }
    GrayImage::from_fn(side, side, |x, y| {
        let j = y as usize * t + x as usize;
        Luma([(sums[j] / counts[j].max(1) as f32 * 255.0)
            .round()
            .clamp(0.0, 255.0) as u8])
    })
}

fn lbp(img: &GrayImage) -> Vec<f32> {
    // The 10 classes of rotation-invariant uniform patterns (riu2): 9 uniform + the rest.
    let class = |code: u8| -> usize {
        let rep = UNIFORM_REPRESENTATIVE_2[code as usize];
        if rep == 0b1010_1010 {
            9
        } else {
            rep.count_ones() as usize
        }
    };
    let (w, h) = img.dimensions();
    let mut whole = [0f32; 10];
    let mut centre = [0f32; 10];
    for y in 1..h.saturating_sub(1) {
        for x in 1..w.saturating_sub(1) {
            if let Some(code) = local_binary_pattern(img, x, y) {
                let c = class(code);
                whole[c] += 1.0;
                if (w / 4..3 * w / 4).contains(&x) && (h / 4..3 * h / 4).contains(&y) {
                    centre[c] += 1.0;
                }
            }
        }
    }
    let norm = |hist: [f32; 10]| {
        let total: f32 = hist.iter().sum::<f32>().max(1.0);
        hist.map(|v| (v / total).sqrt())
    };
    let mut out = norm(whole).to_vec();
    out.extend(norm(centre));
    out
}

fn colour(chw: &[f32], size: u32) -> Vec<f32> {
    let plane = (size * size) as usize;
    let mut hist = [0f32; 72];
    let mut moments = [[0f64; 3]; 3]; // per channel: sum, sum², sum³
    for i in 0..plane {
        let (r, g, b) = (chw[i], chw[plane + i], chw[2 * plane + i]);
        for (c, v) in [r, g, b].into_iter().enumerate() {
            let v = v as f64;
            moments[c][0] += v;
            moments[c][1] += v * v;
            moments[c][2] += v * v * v;
        }
        let max = r.max(g).max(b);
        let min = r.min(g).min(b);
        let delta = max - min;
        let hue = if delta <= 1e-6 {
            0.0
        } else if max == r {
            ((g - b) / delta).rem_euclid(6.0)
        } else if max == g {
            (b - r) / delta + 2.0
        } else {
            (r - g) / delta + 4.0
        } / 6.0;
        let sat = if max > 0.0 { delta / max } else { 0.0 };
        let bin = |v: f32, n: usize| ((v * n as f32) as usize).min(n - 1);
        hist[bin(hue, 8) * 9 + bin(sat, 3) * 3 + bin(max, 3)] += 1.0;
    }
    let n = plane as f64;
    let mut out: Vec<f32> = hist.iter().map(|v| (v / plane as f32).sqrt()).collect();
    for m in moments {
        let mean = m[0] / n;
        let var = (m[1] / n - mean * mean).max(0.0);
        let sd = var.sqrt();
        let third = m[2] / n - 3.0 * mean * m[1] / n + 2.0 * mean.powi(3);
        let skew = if sd > 1e-6 { third / sd.powi(3) } else { 0.0 };
        out.extend([mean as f32, sd as f32, (skew / 4.0).clamp(-1.0, 1.0) as f32]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checker(size: u32, a: [f32; 3], b: [f32; 3], cell: u32) -> Vec<f32> {
        let plane = (size * size) as usize;
        let mut out = vec![0f32; 3 * plane];
        for y in 0..size {
            for x in 0..size {
                let c = if (x / cell + y / cell).is_multiple_of(2) {
                    a
                } else {
                    b
                };
                for ch in 0..3 {
                    out[ch * plane + (y * size + x) as usize] = c[ch];
                }
            }
        }
        out
    }

    #[test]
    fn handcrafted_blocks_have_their_declared_sizes_and_see_differences() {
        let red = checker(96, [0.9, 0.1, 0.1], [0.5, 0.0, 0.0], 8);
        let blue = checker(96, [0.1, 0.1, 0.9], [0.0, 0.0, 0.5], 8);
        let fine = checker(96, [0.9, 0.1, 0.1], [0.5, 0.0, 0.0], 2);
        for kind in Handcrafted::ALL {
            let v = kind.compute(&red, 96);
            assert_eq!(v.len(), kind.dims(), "{}", kind.name());
            assert!(v.iter().all(|x| x.is_finite()));
        }
        let dist = |k: Handcrafted, a: &[f32], b: &[f32]| {
            let (mut x, mut y) = (k.compute(a, 96), k.compute(b, 96));
            l2_normalize_rows(&mut x, k.dims());
            l2_normalize_rows(&mut y, k.dims());
            x.iter().zip(&y).map(|(p, q)| (p - q).powi(2)).sum::<f32>()
        };
        // Colour tells red from blue, texture blocks tell coarse from fine.
        assert!(dist(Handcrafted::Colour, &red, &blue) > 0.5);
        assert!(dist(Handcrafted::Colour, &red, &fine) < 0.05);
        assert!(dist(Handcrafted::Lbp, &red, &fine) > 0.05);
        assert!(dist(Handcrafted::Hog, &red, &fine) > 0.05);
    }

    #[test]
    fn lbp_is_rotation_invariant_on_a_quarter_turn() {
        let size = 64u32;
        let plane = (size * size) as usize;
        let mut img = vec![0f32; 3 * plane];
        for y in 0..size {
            for x in 0..size {
                let v = ((x * 7 + y * y * 3) % 17) as f32 / 17.0;
                for ch in 0..3 {
                    img[ch * plane + (y * size + x) as usize] = v;
                }
            }
        }
        let mut turned = vec![0f32; 3 * plane];
        for y in 0..size {
            for x in 0..size {
                for ch in 0..3 {
                    turned[ch * plane + (x * size + (size - 1 - y)) as usize] =
                        img[ch * plane + (y * size + x) as usize];
                }
            }
        }
        let a = Handcrafted::Lbp.compute(&img, size);
        let b = Handcrafted::Lbp.compute(&turned, size);
        let diff: f32 = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).sum();
        assert!(diff < 0.05, "LBP changed by {diff} under a quarter turn");
    }

    #[test]
    fn fused_without_cnn_needs_no_model_and_weights_blocks() {
        let spec = FusionSpec {
            input_size: 64,
            scales: vec![64],
            cnn: vec![],
            handcrafted: vec![
                HandBlock {
                    kind: Handcrafted::Colour,
                    weight: 1.0,
                },
                HandBlock {
                    kind: Handcrafted::Lbp,
                    weight: 0.5,
                },
            ],
        };
        let mut ex = FusedExtractor::load(None, spec).unwrap();
        assert_eq!(ex.dims(), 81 + 40);
        let img = checker(64, [0.2, 0.7, 0.3], [0.1, 0.1, 0.1], 4);
        let v = ex.extract(&img, 1).unwrap();
        let norm = |s: &[f32]| s.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm(&v[..81]) - 1.0).abs() < 1e-4);
        assert!((norm(&v[81..]) - 0.5).abs() < 1e-4);
    }
}
