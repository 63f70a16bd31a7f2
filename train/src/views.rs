//! Random views of an image made with the edits a search must see through (the hard cases of
//! docs/SEARCH.md): crops and zoom-outs into another picture, rotations and shears, exposure,
//! contrast and colour changes, occluding patches, blur and heavy JPEG. Two views of one image
//! are a positive pair for `imgvec train contrastive`.

use rand::rngs::StdRng;
use rand::Rng;
use tch::{Device, Kind, Tensor};

/// How often each edit is applied to a view (the clean view, index 0, gets none).
const ZOOM_OUT: f64 = 0.15;
const CROP: f64 = 0.7;
const ROTATE: f64 = 0.4;
const SHEAR: f64 = 0.3;
const COLOUR: f64 = 0.8;
const OCCLUDE: f64 = 0.35;
const BLUR: f64 = 0.2;
const JPEG: f64 = 0.5;

/// One random view of each image of `src` (`[B, 3, H, W]` floats in [0, 1]) at `size²`.
pub(crate) fn random_views(src: &Tensor, size: i64, rng: &mut StdRng) -> Tensor {
    let b = src.size()[0];
    let mut theta = Vec::with_capacity(6 * b as usize);
    let mut zoomed_out = Vec::with_capacity(b as usize);
    for _ in 0..b {
        let (t, out) = random_affine(rng);
        theta.extend_from_slice(&t);
        zoomed_out.push(out);
    }
    let theta = Tensor::of_slice(&theta).view([b, 2, 3]);
    let grid = Tensor::affine_grid_generator(&theta, &[b, 3, size, size], false);
    // Bilinear, zero padding; the mask says which pixels came from inside the source.
    let warped = src.grid_sampler(&grid, 0, 0, false);
    let inside = Tensor::ones(
        &[b, 1, src.size()[2], src.size()[3]],
        (Kind::Float, Device::Cpu),
    )
    .grid_sampler(&grid, 0, 0, false);
    // A zoomed-out view sits inside another image of the batch (a reverse crop); a rotated or
    // sheared one keeps black corners, as an edited photo does.
    let other = src
        .roll(&[1], &[0])
        .upsample_bilinear2d(&[size, size], false, None, None);
    let mut views = Vec::with_capacity(b as usize);
    for i in 0..b {
        let v = warped.get(i);
        let mut v = if zoomed_out[i as usize] {
            let m = inside.get(i);
            &v * &m + other.get(i) * (1.0 - &m)
        } else {
            v
        };
        if rng.gen_bool(COLOUR) {
            v = recolour(&v, rng);
        }
        if rng.gen_bool(OCCLUDE) {
            occlude(&v, &other.get((i + 1) % b), rng);
        }
        if rng.gen_bool(BLUR) {
            v = v
                .unsqueeze(0)
                .avg_pool2d(&[3, 3], &[1, 1], &[1, 1], false, false, None)
                .squeeze_dim(0);
        }
        if rng.gen_bool(JPEG) {
            v = jpeg(&v, rng.gen_range(5..=40));
        }
        views.push(v.clamp(0.0, 1.0));
    }
    Tensor::stack(&views, 0)
}

/// Each image of `src` at `size²`, unedited.
pub(crate) fn clean_views(src: &Tensor, size: i64) -> Tensor {
    src.upsample_bilinear2d(&[size, size], false, None, None)
}

/// An affine map from output to source coordinates (`affine_grid`'s θ, row-major 2×3), and
/// whether it zooms out (the source covers part of the view).
fn random_affine(rng: &mut StdRng) -> ([f32; 6], bool) {
    let (mut sx, mut sy) = (1.0f64, 1.0f64);
    let zoom_out = rng.gen_bool(ZOOM_OUT);
    if zoom_out {
        let f = rng.gen_range(1.2..1.8);
        (sx, sy) = (f, f);
    } else if rng.gen_bool(CROP) {
        // Area 30–100% of the image, aspect 0.6–1.7.
        let area: f64 = rng.gen_range(0.3..1.0);
        let aspect = rng.gen_range(0.6f64.ln()..1.7f64.ln()).exp();
        sx = (area.sqrt() * aspect.sqrt()).min(1.0);
        sy = (area.sqrt() / aspect.sqrt()).min(1.0);
    }
    let (tx, ty) = if zoom_out {
        let (mx, my) = (sx - 1.0, sy - 1.0);
        (rng.gen_range(-mx..=mx), rng.gen_range(-my..=my))
    } else {
        let (mx, my) = (1.0 - sx, 1.0 - sy);
        (rng.gen_range(-mx..=mx), rng.gen_range(-my..=my))
    };
    let angle: f64 = if rng.gen_bool(ROTATE) {
        rng.gen_range(-35.0f64..35.0).to_radians()
    } else {
        0.0
    };
    let (hx, hy) = if rng.gen_bool(SHEAR) {
        (rng.gen_range(-0.25..0.25), rng.gen_range(-0.25..0.25))
    } else {
        (0.0, 0.0)
    };
    let (c, s) = (angle.cos(), angle.sin());
    let t = [
        (sx * c) as f32,
        (-sy * s + hx) as f32,
        tx as f32,
        (sx * s + hy) as f32,
        (sy * c) as f32,
        ty as f32,
    ];
    (t, zoom_out)
}

/// Exposure, contrast and saturation changed at random (`v`: `[3, H, W]`).
fn recolour(v: &Tensor, rng: &mut StdRng) -> Tensor {
    let bright = rng.gen_range(0.5..1.6);
    let contrast = rng.gen_range(0.6..1.4);
    let saturation = rng.gen_range(0.6..1.4);
    let v = v * bright;
    let grey = v.mean_dim(Some([0i64].as_slice()), true, Kind::Float);
    let v = &grey + (&v - &grey) * saturation;
    let mean = v.mean(Kind::Float);
    (&v - &mean) * contrast + mean
}

/// Covers a random rectangle of 25–60% of each side of `v` (in place) with the same part of
/// `other`, or with one colour.
fn occlude(v: &Tensor, other: &Tensor, rng: &mut StdRng) {
    let (h, w) = (v.size()[1], v.size()[2]);
    let ph = (h as f64 * rng.gen_range(0.25..0.6)) as i64;
    let pw = (w as f64 * rng.gen_range(0.25..0.6)) as i64;
    let y = rng.gen_range(0..=h - ph);
    let x = rng.gen_range(0..=w - pw);
    let mut patch = v.narrow(1, y, ph).narrow(2, x, pw);
    if rng.gen_bool(0.6) {
        patch.copy_(&other.narrow(1, y, ph).narrow(2, x, pw));
    } else {
        let colour: Vec<f32> = (0..3).map(|_| rng.gen_range(0.0..1.0)).collect();
        patch.copy_(&Tensor::of_slice(&colour).view([3, 1, 1]).expand_as(&patch));
    }
}

/// `v` (`[3, H, W]` in [0, 1]) saved as a JPEG of `quality` and decoded again.
fn jpeg(v: &Tensor, quality: u8) -> Tensor {
    let (h, w) = (v.size()[1], v.size()[2]);
    let hwc = (v.clamp(0.0, 1.0) * 255.0)
        .round()
        .to_kind(Kind::Uint8)
        .permute(&[1, 2, 0])
        .contiguous();
    let mut pixels = vec![0u8; (3 * h * w) as usize];
    let len = pixels.len();
    hwc.copy_data(&mut pixels, len);
    let mut bytes = Vec::new();
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality);
    let encoded = image::ImageEncoder::write_image(
        encoder,
        &pixels,
        w as u32,
        h as u32,
        image::ExtendedColorType::Rgb8,
    );
    let decoded = encoded
        .ok()
        .and_then(|_| image::load_from_memory(&bytes).ok())
        .map(|img| img.to_rgb8());
    match decoded {
        Some(img) if img.width() as i64 == w && img.height() as i64 == h => {
            Tensor::of_slice(img.as_raw())
                .view([h, w, 3])
                .permute(&[2, 0, 1])
                .to_kind(Kind::Float)
                / 255.0
        }
        // An encoder failure on a well-formed buffer is not expected; keep the view unedited.
        _ => v.shallow_clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// A deterministic test image batch in [0, 1] (libtorch's global generator is left alone:
    /// the seeded training tests share it).
    fn pattern(shape: [i64; 4]) -> Tensor {
        let n: i64 = shape.iter().product();
        (Tensor::arange(n, (Kind::Float, Device::Cpu)) * 0.37)
            .sin()
            .abs()
            .view(shape)
    }

    #[test]
    fn views_have_the_asked_size_and_stay_in_range() {
        let src = pattern([4, 3, 64, 48]);
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..5 {
            let v = random_views(&src, 32, &mut rng);
            assert_eq!(v.size(), [4, 3, 32, 32]);
            assert!(v.min().double_value(&[]) >= 0.0 && v.max().double_value(&[]) <= 1.0);
        }
        assert_eq!(clean_views(&src, 32).size(), [4, 3, 32, 32]);
    }

    #[test]
    fn views_differ_from_the_clean_image_and_from_each_other() {
        let src = pattern([8, 3, 64, 64]);
        let mut rng = StdRng::seed_from_u64(2);
        let clean = clean_views(&src, 64);
        let (a, b) = (
            random_views(&src, 64, &mut rng),
            random_views(&src, 64, &mut rng),
        );
        let diff = |x: &Tensor, y: &Tensor| (x - y).abs().mean(Kind::Float).double_value(&[]);
        assert!(diff(&a, &clean) > 0.01 && diff(&a, &b) > 0.01);
    }

    #[test]
    fn jpeg_round_trip_keeps_a_flat_colour() {
        let v = Tensor::full(&[3, 16, 16], 0.5, (Kind::Float, Device::Cpu));
        let back = jpeg(&v, 10);
        assert_eq!(back.size(), [3, 16, 16]);
        assert!((back - 0.5).abs().max().double_value(&[]) < 0.02);
    }
}
