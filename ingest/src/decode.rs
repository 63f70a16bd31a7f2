//! Reading image files as a person sees them: EXIF orientation applied, every pixel format
//! converted to 8-bit RGB (alpha composited over white), with limits that refuse decompression
//! bombs before any pixel buffer is allocated.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};

/// Extensions walked folders pick up; anything else is counted as skipped.
pub const IMAGE_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "jpe", "jfif", "png", "webp", "bmp", "tif", "tiff", "gif",
];

/// Largest accepted side, in pixels.
pub const MAX_SIDE: u32 = 20_000;
/// Largest pixel buffer the decoder may allocate.
pub const MAX_DECODE_BYTES: u64 = 512 * 1024 * 1024;
/// Most memory decoding one image may take end to end: the decoder's buffer, the 8-bit RGB
/// copy and the turned copy an EXIF orientation makes (see [`decode_cost`]). An ingest holds
/// at most one such image per worker.
pub const MAX_IMAGE_BYTES: u64 = 768 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("empty file (0 bytes)")]
    Empty,
    #[error("not a supported image (jpeg, png, webp, bmp, tiff, gif)")]
    UnknownFormat,
    #[error("image of {width}x{height} pixels exceeds the limit of {MAX_SIDE} px per side")]
    TooLarge { width: u32, height: u32 },
    #[error(
        "image of {width}x{height} pixels needs about {} MiB to decode, over the {} MiB \
         per-image budget", cost >> 20, MAX_IMAGE_BYTES >> 20
    )]
    OverBudget { width: u32, height: u32, cost: u64 },
    #[error("cannot decode {format}: {message}")]
    Corrupt { format: String, message: String },
}

/// A decoded image in the orientation a viewer shows it.
#[derive(Debug, Clone)]
pub struct DecodedImage {
    pub rgb: RgbImage,
    /// Container format, lower case (`jpeg`, `png`, ...).
    pub format: String,
}

pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        .unwrap_or(false)
}

fn format_name(format: ImageFormat) -> String {
    format!("{format:?}").to_ascii_lowercase()
}

/// Decodes `bytes` (the whole file). The format is sniffed from the content, not the name.
pub fn decode(bytes: &[u8]) -> Result<DecodedImage, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|_| DecodeError::UnknownFormat)?;
    let format = reader.format().ok_or(DecodeError::UnknownFormat)?;
    let name = format_name(format);
    let corrupt = |e: image::ImageError| match e {
        image::ImageError::Limits(_) => DecodeError::Corrupt {
            format: name.clone(),
            message: format!(
                "needs more than the {} MiB decode limit",
                MAX_DECODE_BYTES >> 20
            ),
        },
        other => DecodeError::Corrupt {
            format: name.clone(),
            message: other.to_string(),
        },
    };
    if format == ImageFormat::Jpeg {
        // The JPEG decoder is lenient and paints missing data grey; a cut-off file is an error.
        jpeg_structure(bytes).map_err(|message| DecodeError::Corrupt {
            format: name.clone(),
            message,
        })?;
    }
    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
        return Err(DecodeError::TooLarge { width, height });
    }
    let cost = decode_cost(width, height, decoder.color_type().bytes_per_pixel());
    if cost > MAX_IMAGE_BYTES {
        return Err(DecodeError::OverBudget {
            width,
            height,
            cost,
        });
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    decoder.set_limits(limits).map_err(corrupt)?;
    let orientation = decoder.orientation().ok();
    let mut img = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    Ok(DecodedImage {
        rgb: to_rgb8_over_white(img),
        format: name,
    })
}

/// Peak bytes decoding a `width`×`height` image whose decoder gives `bytes_per_pixel` takes:
/// the decoder's buffer, the 8-bit RGB conversion and an orientation's turned copy, alive
/// together at worst.
pub fn decode_cost(width: u32, height: u32, bytes_per_pixel: u8) -> u64 {
    width as u64 * height as u64 * (bytes_per_pixel as u64 + 3 + 3)
}

/// Walks a JPEG's marker segments (skipping each by its length, so an embedded EXIF thumbnail
/// cannot stand in for the real end) and its entropy-coded scans, up to the end-of-image marker.
fn jpeg_structure(b: &[u8]) -> Result<(), String> {
    let truncated = || Err("truncated: the file ends before the JPEG end-of-image marker".into());
    let mut i = 2; // after SOI
    loop {
        // Skip anything up to the next marker prefix, then fill bytes.
        while i < b.len() && b[i] != 0xFF {
            i += 1;
        }
        while i < b.len() && b[i] == 0xFF {
            i += 1;
        }
        let Some(&marker) = b.get(i) else {
            return truncated();
        };
        i += 1;
        match marker {
            0xD9 => return Ok(()),
            0x01 | 0xD0..=0xD8 => continue,
            _ => {}
        }
        let Some(len) = b
            .get(i..i + 2)
            .map(|l| u16::from_be_bytes([l[0], l[1]]) as usize)
        else {
            return truncated();
        };
        if len < 2 || i + len > b.len() {
            return truncated();
        }
        i += len;
        if marker == 0xDA {
            // Entropy-coded data runs to the next marker that is not a stuffed 0xFF00 or a
            // restart marker.
            loop {
                match b.get(i..i + 2) {
                    None => return truncated(),
                    Some([0xFF, next]) if *next != 0 && !(0xD0..=0xD7).contains(next) => break,
                    _ => i += 1,
                }
            }
        }
    }
}

/// 8-bit RGB; transparent pixels are composited over white, as a viewer on a page shows them.
fn to_rgb8_over_white(img: DynamicImage) -> RgbImage {
    if !img.color().has_alpha() {
        return img.into_rgb8();
    }
    let rgba = img.into_rgba8();
    let (w, h) = rgba.dimensions();
    let mut out = RgbImage::new(w, h);
    for (dst, src) in out.pixels_mut().zip(rgba.pixels()) {
        let a = src[3] as u32;
        for c in 0..3 {
            dst[c] = ((src[c] as u32 * a + 255 * (255 - a) + 127) / 255) as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Luma, Rgba};

    fn encode(img: DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    #[test]
    fn grey16_and_alpha_become_rgb8() {
        let grey: ImageBuffer<Luma<u16>, Vec<u16>> = ImageBuffer::from_pixel(4, 3, Luma([65535]));
        let d = decode(&encode(DynamicImage::ImageLuma16(grey), ImageFormat::Png)).unwrap();
        assert_eq!(d.rgb.dimensions(), (4, 3));
        assert_eq!(d.rgb.get_pixel(0, 0).0, [255, 255, 255]);
        let clear: ImageBuffer<Rgba<u8>, Vec<u8>> =
            ImageBuffer::from_pixel(2, 2, Rgba([0, 0, 0, 0]));
        let d = decode(&encode(DynamicImage::ImageRgba8(clear), ImageFormat::Png)).unwrap();
        assert_eq!(d.rgb.get_pixel(1, 1).0, [255, 255, 255]);
        assert_eq!(d.format, "png");
    }

    #[test]
    fn truncated_jpeg_is_an_error_and_trailing_bytes_are_not() {
        let img = RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 4, y as u8 * 5, 7]));
        let jpeg = encode(DynamicImage::ImageRgb8(img), ImageFormat::Jpeg);
        assert!(decode(&jpeg).is_ok());
        let mut trailing = jpeg.clone();
        trailing.extend_from_slice(b"extra bytes some cameras append");
        assert!(decode(&trailing).is_ok());
        for cut in [jpeg.len() - 2, jpeg.len() * 2 / 3, 200, 3] {
            match decode(&jpeg[..cut]) {
                Err(DecodeError::Corrupt { message, .. }) => assert!(message.contains("truncated")),
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }

    /// A PNG header that declares 12,000×12,000 RGBA pixels (a few hundred bytes on disk): the
    /// decode is refused from the header, before any pixel buffer exists.
    #[test]
    fn a_decompression_bomb_is_refused_from_its_header() {
        fn chunk(kind: &[u8], data: &[u8]) -> Vec<u8> {
            let mut out = (data.len() as u32).to_be_bytes().to_vec();
            out.extend(kind);
            out.extend(data);
            let mut crc = crc32fast::Hasher::new();
            crc.update(kind);
            crc.update(data);
            out.extend(crc.finalize().to_be_bytes());
            out
        }
        let mut ihdr = 12_000u32.to_be_bytes().to_vec();
        ihdr.extend(12_000u32.to_be_bytes());
        ihdr.extend([8, 6, 0, 0, 0]);
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend(chunk(b"IHDR", &ihdr));
        png.extend(chunk(
            b"IDAT",
            &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
        ));
        png.extend(chunk(b"IEND", &[]));
        match decode(&png) {
            Err(e @ DecodeError::OverBudget { .. }) => {
                assert!(e.to_string().contains("12000x12000"), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn decode_cost_table() {
        // (width, height, decoder bytes per pixel, within the budget)
        let cases = [
            (6000, 4000, 3, true),    // a 24 MP JPEG: 216 MB
            (10_000, 8_000, 3, true), // 80 MP RGB: 720 MB
            (10_000, 10_000, 4, false),
            (8_000, 8_000, 8, false), // 16-bit RGBA
            (20_000, 20_000, 1, false),
        ];
        for (w, h, bpp, fits) in cases {
            assert_eq!(
                decode_cost(w, h, bpp) <= MAX_IMAGE_BYTES,
                fits,
                "{w}x{h}x{bpp}"
            );
        }
    }

    /// A JPEG whose EXIF says "rotate 90° clockwise" (orientation 6) comes out portrait.
    #[test]
    fn exif_orientation_is_applied() {
        let img = RgbImage::from_fn(40, 20, |x, _| {
            if x < 20 {
                image::Rgb([255, 0, 0])
            } else {
                image::Rgb([0, 0, 255])
            }
        });
        let jpeg = encode(DynamicImage::ImageRgb8(img), ImageFormat::Jpeg);
        let tiff: &[u8] = &[
            b'I', b'I', 42, 0, 8, 0, 0, 0, // little-endian TIFF header, IFD at 8
            1, 0, // one entry
            0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0, // Orientation (SHORT) = 6
            0, 0, 0, 0, // no next IFD
        ];
        let mut app1 = vec![0xFF, 0xE1];
        app1.extend(((2 + 6 + tiff.len()) as u16).to_be_bytes());
        app1.extend(b"Exif\0\0");
        app1.extend(tiff);
        let mut with_exif = jpeg[..2].to_vec();
        with_exif.extend(app1);
        with_exif.extend(&jpeg[2..]);
        let d = decode(&with_exif).unwrap();
        assert_eq!(d.rgb.dimensions(), (20, 40));
        // The left (red) half is now on top.
        let top = d.rgb.get_pixel(10, 5);
        assert!(top[0] > 200 && top[2] < 60, "{top:?}");
    }

    /// Adobe CMYK JPEG (made by Pillow from a red | blue RGB image).
    #[test]
    fn cmyk_jpeg_becomes_rgb() {
        let d = decode(include_bytes!("../tests/fixtures/cmyk.jpg")).unwrap();
        assert_eq!(d.rgb.dimensions(), (32, 24));
        let (left, right) = (d.rgb.get_pixel(4, 12), d.rgb.get_pixel(28, 12));
        assert!(left[0] > 180 && left[2] < 80, "{left:?}");
        assert!(right[2] > 180 && right[0] < 80, "{right:?}");
    }

    #[test]
    fn animated_gif_gives_its_first_frame() {
        use image::codecs::gif::GifEncoder;
        use image::{Delay, Frame};
        let frame = |c: u8| {
            Frame::from_parts(
                image::RgbaImage::from_pixel(8, 8, Rgba([c, c, c, 255])),
                0,
                0,
                Delay::from_numer_denom_ms(100, 1),
            )
        };
        let mut bytes = Vec::new();
        {
            let mut enc = GifEncoder::new(&mut bytes);
            enc.encode_frames([frame(250), frame(5)]).unwrap();
        }
        let d = decode(&bytes).unwrap();
        assert!(d.rgb.get_pixel(3, 3)[0] > 240);
    }

    #[test]
    fn every_container_format_decodes() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(9, 7, image::Rgb([30, 120, 200])));
        for format in [
            ImageFormat::Png,
            ImageFormat::Jpeg,
            ImageFormat::WebP,
            ImageFormat::Bmp,
            ImageFormat::Tiff,
            ImageFormat::Gif,
        ] {
            let d = decode(&encode(img.clone(), format)).unwrap();
            assert_eq!(d.rgb.dimensions(), (9, 7), "{format:?}");
            let px = d.rgb.get_pixel(4, 3);
            assert!((px[2] as i32 - 200).abs() < 20, "{format:?}: {px:?}");
        }
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        assert!(matches!(decode(b""), Err(DecodeError::Empty)));
        assert!(matches!(
            decode(b"hello, world"),
            Err(DecodeError::UnknownFormat)
        ));
        let png = encode(
            DynamicImage::ImageRgb8(RgbImage::from_pixel(64, 64, image::Rgb([9, 9, 9]))),
            ImageFormat::Png,
        );
        assert!(matches!(
            decode(&png[..png.len() / 2]),
            Err(DecodeError::Corrupt { .. })
        ));
        // A PNG header claiming 50000 x 50000 pixels is refused before allocation.
        let mut huge = png.clone();
        huge[16..20].copy_from_slice(&50_000u32.to_be_bytes());
        huge[20..24].copy_from_slice(&50_000u32.to_be_bytes());
        let crc = crc32fast::hash(&huge[12..29]);
        huge[29..33].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            decode(&huge),
            Err(DecodeError::TooLarge {
                width: 50_000,
                height: 50_000
            })
        ));
    }
}
