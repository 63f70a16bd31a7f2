//! Turning a decoded image into model input and a thumbnail.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{GrayImage, ImageBuffer, RgbImage};

/// Longest side of stored thumbnails.
pub const THUMBNAIL_SIDE: u32 = 256;
const THUMBNAIL_QUALITY: u8 = 80;

/// Resamples with an antialiased bilinear (triangle) filter, like PIL's `resize(BILINEAR)`.
pub fn resize(rgb: &RgbImage, width: u32, height: u32) -> RgbImage {
    resized(rgb, PixelType::U8x3, width, height)
}

/// [`resize`] for a grey image.
pub fn resize_grey(grey: &GrayImage, width: u32, height: u32) -> GrayImage {
    resized(grey, PixelType::U8, width, height)
}

/// `img` (of `kind` pixels) resampled by fast_image_resize. It only refuses buffers whose size
/// disagrees with the dimensions, which an `ImageBuffer` rules out; keep a correct (slower)
/// path rather than a panic all the same.
fn resized<P: image::Pixel<Subpixel = u8> + 'static>(
    img: &ImageBuffer<P, Vec<u8>>,
    kind: PixelType,
    width: u32,
    height: u32,
) -> ImageBuffer<P, Vec<u8>> {
    let (w, h) = img.dimensions();
    if (w, h) == (width, height) {
        return img.clone();
    }
    let fast = || {
        let src = ImageRef::new(w, h, img.as_raw(), kind).ok()?;
        let mut dst = Image::new(width, height, kind);
        let opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
        Resizer::new().resize(&src, &mut dst, &opts).ok()?;
        ImageBuffer::from_raw(width, height, dst.into_vec())
    };
    fast().unwrap_or_else(|| {
        image::imageops::resize(img, width, height, image::imageops::FilterType::Triangle)
    })
}

/// The size of a `w`×`h` image scaled so its long side is `long` px, aspect kept: each side
/// rounded, at least 1.
pub fn scaled_to_long_side((w, h): (u32, u32), long: u32) -> (u32, u32) {
    let scale = long as f32 / w.max(h).max(1) as f32;
    let side = |x: u32| ((x as f32 * scale).round() as u32).max(1);
    (side(w), side(h))
}

/// [`scaled_to_long_side`] for an image longer than `long` px; a smaller one keeps its size.
pub fn within_long_side(dims: (u32, u32), long: u32) -> (u32, u32) {
    match dims.0.max(dims.1) > long {
        true => scaled_to_long_side(dims, long),
        false => dims,
    }
}

/// Luma as the `image` crate's `grayscale` makes it (Rec. 709 weights in integers, rounded
/// down), in one pass the compiler vectorises.
pub fn luma(rgb: &RgbImage) -> GrayImage {
    let (w, h) = rgb.dimensions();
    let grey = rgb
        .as_raw()
        .chunks_exact(3)
        .map(|p| ((2126 * p[0] as u32 + 7152 * p[1] as u32 + 722 * p[2] as u32) / 10_000) as u8)
        .collect();
    GrayImage::from_raw(w, h, grey).expect("one byte per pixel")
}

/// The image stretched to `size`×`size` (aspect not kept, per the extractor contract), as
/// float32 CHW values in [0, 1], appended to `out`.
pub fn model_input(rgb: &RgbImage, size: u32, out: &mut Vec<f32>) {
    let resized = resize(rgb, size, size);
    let plane = (size * size) as usize;
    let start = out.len();
    out.resize(start + 3 * plane, 0.0);
    let dst = &mut out[start..];
    for (i, px) in resized.pixels().enumerate() {
        dst[i] = px[0] as f32 / 255.0;
        dst[plane + i] = px[1] as f32 / 255.0;
        dst[2 * plane + i] = px[2] as f32 / 255.0;
    }
}

/// How an image becomes a model input: its square side and whether uniform bars around the
/// photo are trimmed first (`borders`). A database records both in its pipeline, so its rows
/// and its queries are made alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelInput {
    pub size: u32,
    pub trim_borders: bool,
}

impl ModelInput {
    /// The model input of `rgb` (`3 × size²` floats in [0, 1], CHW), appended to `out`.
    pub fn pixels(&self, rgb: &RgbImage, out: &mut Vec<f32>) {
        let content = self.trim_borders.then(|| crate::borders::content_box(rgb));
        match content.flatten() {
            Some((x, y, w, h)) => {
                let inner = image::imageops::crop_imm(rgb, x, y, w, h).to_image();
                model_input(&inner, self.size, out)
            }
            None => model_input(rgb, self.size, out),
        }
    }
}

/// A JPEG at most `THUMBNAIL_SIDE` px on its long side, aspect kept.
pub fn thumbnail_jpeg(rgb: &RgbImage) -> Vec<u8> {
    let (tw, th) = within_long_side(rgb.dimensions(), THUMBNAIL_SIDE);
    let small = resize(rgb, tw, th);
    let mut out = Vec::new();
    // jpeg-encoder (SIMD) rather than the image crate's encoder, which cost as much CPU per
    // ingested image as decoding it. Encoding a valid RGB buffer into a Vec cannot fail; an
    // empty thumbnail is what a failure would leave.
    let encoder = jpeg_encoder::Encoder::new(&mut out, THUMBNAIL_QUALITY);
    if encoder
        .encode(
            small.as_raw(),
            tw as u16,
            th as u16,
            jpeg_encoder::ColorType::Rgb,
        )
        .is_err()
    {
        out.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_side_sizes_keep_the_aspect() {
        for (name, dims, long, scaled, within) in [
            ("landscape shrunk", (1000, 500), 256, (256, 128), (256, 128)),
            ("portrait shrunk", (480, 640), 320, (240, 320), (240, 320)),
            ("odd sides round", (1001, 333), 100, (100, 33), (100, 33)),
            (
                "a thin strip keeps a pixel",
                (4000, 3),
                256,
                (256, 1),
                (256, 1),
            ),
            ("grown to the side", (100, 50), 256, (256, 128), (100, 50)),
            ("already that long", (256, 200), 256, (256, 200), (256, 200)),
        ] {
            assert_eq!(scaled_to_long_side(dims, long), scaled, "{name}");
            assert_eq!(within_long_side(dims, long), within, "{name}");
        }
    }

    /// A deterministic image with every channel value and sharp edges.
    fn varied(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let v = (x * 7 + y * 13) as u8;
            image::Rgb([
                v,
                v.wrapping_mul(3) ^ (y as u8),
                if (x / 5 + y / 3) % 2 == 0 {
                    255
                } else {
                    x as u8
                },
            ])
        })
    }

    #[test]
    fn luma_is_the_image_crates_grayscale() {
        let img = varied(301, 97);
        assert_eq!(luma(&img), image::imageops::grayscale(&img));
    }

    #[test]
    fn grey_resize_agrees_with_a_triangle_filter() {
        let grey = luma(&varied(700, 455));
        let fast = resize_grey(&grey, 640, 416);
        let slow = image::imageops::resize(&grey, 640, 416, image::imageops::FilterType::Triangle);
        assert_eq!(fast.dimensions(), (640, 416));
        let diffs: Vec<i32> = fast
            .as_raw()
            .iter()
            .zip(slow.as_raw())
            .map(|(&a, &b)| (a as i32 - b as i32).abs())
            .collect();
        let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
        assert!(mean < 1.0, "mean difference {mean}");
        assert_eq!(resize_grey(&grey, 700, 455), grey);
    }

    #[test]
    fn input_is_chw_in_unit_range() {
        let mut img = RgbImage::from_pixel(50, 30, image::Rgb([255, 0, 51]));
        img.put_pixel(0, 0, image::Rgb([255, 0, 51]));
        let mut out = vec![];
        model_input(&img, 8, &mut out);
        assert_eq!(out.len(), 3 * 64);
        assert!((out[0] - 1.0).abs() < 1e-6);
        assert!(out[64].abs() < 1e-6);
        assert!((out[128] - 0.2).abs() < 1e-6);
    }

    #[test]
    fn trimming_makes_a_barred_copy_the_same_input_as_the_photo() {
        let photo = RgbImage::from_fn(40, 60, |x, y| {
            image::Rgb([(x * 6) as u8, (y * 4) as u8, 90])
        });
        let mut barred = RgbImage::from_pixel(80, 60, image::Rgb([255, 255, 255]));
        image::imageops::replace(&mut barred, &photo, 20, 0);
        let input = |trim_borders, img: &RgbImage| {
            let mut out = vec![];
            ModelInput {
                size: 16,
                trim_borders,
            }
            .pixels(img, &mut out);
            out
        };
        assert_eq!(input(true, &barred), input(true, &photo));
        assert_eq!(input(false, &photo), input(true, &photo));
        assert_ne!(input(false, &barred), input(false, &photo));
    }

    #[test]
    fn thumbnail_fits_256() {
        let img = RgbImage::from_pixel(1000, 400, image::Rgb([10, 20, 30]));
        let thumb = image::load_from_memory(&thumbnail_jpeg(&img)).unwrap();
        assert_eq!((thumb.width(), thumb.height()), (256, 102));
    }
}
