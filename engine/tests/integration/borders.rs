//! Uniform bars around a photo (pillarbox, letterbox) are trimmed before the model in the named
//! pipelines, so a barred copy of a stored photo is found as the photo itself; a custom model's
//! database gets exactly the extractor contract's input (no trimming).

use imgvec_testkit::*;

use std::io::Cursor;

use imgvec::image::{ImageFormat, Rgb, RgbImage};
use imgvec::{PipelineChoice, Query, SearchOptions};

/// `photo` in the middle of a white canvas twice as wide (a pillarbox), as PNG bytes.
fn pillarboxed(photo: &RgbImage) -> Vec<u8> {
    let (w, h) = photo.dimensions();
    let mut canvas = RgbImage::from_pixel(2 * w, h, Rgb([255, 255, 255]));
    imgvec::image::imageops::replace(&mut canvas, photo, i64::from(w / 2), 0);
    let mut out = Cursor::new(Vec::new());
    canvas.write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

/// The best hit's path and score for the barred copy of `files[target]` in a database of
/// `files` made with `pipeline`, and whether that database records trimming.
fn barred_query(
    pipeline: PipelineChoice,
    files: &[std::path::PathBuf],
    target: usize,
) -> (String, f32, bool) {
    let tmp = tempfile::tempdir().unwrap();
    let db = super::database_of(&tmp.path().join("db"), pipeline, files);
    let photo = imgvec::image::open(&files[target]).unwrap().to_rgb8();
    let hits = db
        .search(Query::Bytes(pillarboxed(&photo)), &SearchOptions::default())
        .unwrap();
    let trims = db.info().unwrap().pipeline.unwrap().trim_borders;
    (hits[0].path.clone(), hits[0].score, trims)
}

#[test]
fn a_pillarboxed_copy_is_the_photo_itself_for_the_presets_but_not_for_a_custom_model() {
    let files = db_images(12);
    let target = 5;
    let want = stem(files[target].to_str().unwrap());

    let (path, score, trims) = barred_query(PipelineChoice::Default, &files, target);
    assert!(trims, "the default pipeline records trimming");
    assert_eq!(stem(&path), want);
    assert!(
        score > 0.999,
        "trimmed: the same model input as the photo, score {score}"
    );

    // The same model as a custom pipeline: the bars reach the model and the score drops.
    let model = imgvec_ingest::default_model_path().unwrap();
    let custom = PipelineChoice::model(model, None, imgvec::Pooling::Gap).unwrap();
    let (_, untrimmed, trims) = barred_query(custom, &files, target);
    assert!(!trims, "a custom model's pipeline does not trim");
    assert!(untrimmed < 0.98, "untrimmed score {untrimmed}");
}
