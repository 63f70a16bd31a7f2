//! The upright fallback. Verified pipelines: an image query none of whose results verified is
//! answered as if its turns had been asked for (`--augment rot4`); one that verified is
//! answered upright only, and `upright: false` turns the fallback off. Pipelines that verify
//! nothing (`balanced`): a query with no calibrated match is searched with its turns, and their
//! answer is kept only when it holds a match.

use imgvec_testkit::*;

use std::io::Cursor;

use imgvec::image::{ImageFormat, Rgb, RgbImage};
use imgvec::{
    Augment, Found, Hit, Match, PipelineChoice, Preset, Query, SearchOptions, Verdict,
    VerifyOverrides,
};

fn ranking(hits: &[Hit]) -> Vec<(u64, String)> {
    hits.iter()
        .map(|h| (h.id, format!("{:.5}", h.score)))
        .collect()
}

fn png(img: &RgbImage) -> Query {
    let mut png = Cursor::new(Vec::new());
    img.write_to(&mut png, ImageFormat::Png).unwrap();
    Query::Bytes(png.into_inner())
}

fn upright_only() -> SearchOptions {
    SearchOptions {
        verify: VerifyOverrides {
            upright: Some(false),
            ..VerifyOverrides::default()
        },
        ..SearchOptions::default()
    }
}

/// A smooth, lopsided gradient: no keypoints, nothing verifies or looks like a photo.
fn smooth() -> Query {
    png(&RgbImage::from_fn(240, 160, |x, y| {
        Rgb([(x + y / 4) as u8, (y * 3 / 2) as u8, 90])
    }))
}

fn matched(hits: &[Hit]) -> bool {
    hits.iter().any(|h| h.matched != Match::None)
}

#[test]
fn which_search_runs_the_fallback_and_how_it_tells_a_match() {
    let files = db_images(8);
    let tmp = tempfile::tempdir().unwrap();
    for (preset, want) in [
        (Preset::Fast, None),
        (Preset::Balanced, Some(Found::Likely)),
        (Preset::Robust, Some(Found::Verified)),
    ] {
        let dir = tmp.path().join(preset.name());
        let db = super::database_of(&dir, PipelineChoice::Preset(preset), &files);
        assert_eq!(
            db.upright_fallback(&SearchOptions::default()),
            want,
            "{preset}"
        );
        assert_eq!(db.upright_fallback(&upright_only()), None, "{preset}, off");
    }
}

#[test]
fn unverified_queries_with_no_likely_match_keep_the_turns_only_when_they_find_one() {
    let files = db_images(16);
    let tmp = tempfile::tempdir().unwrap();
    let balanced = PipelineChoice::Preset(Preset::Balanced);
    let db = super::database_of(&tmp.path().join("db"), balanced, &files);
    let search = |query: &Query, opts: &SearchOptions| db.search(query.clone(), opts).unwrap();
    let default = SearchOptions::default();
    let turned = SearchOptions {
        augment: Some(Augment::Rot4),
        ..SearchOptions::default()
    };

    // A stored photo stored sideways: upright it matches nothing likely, its turns find it.
    let photo = imgvec::image::open(&files[5]).unwrap().to_rgb8();
    let sideways = png(&imgvec::image::imageops::rotate90(&photo));
    assert!(!matched(&search(&sideways, &upright_only())));
    let before = db.query_images_embedded();
    let hits = search(&sideways, &default);
    // The model ran on the query once and on its three turns: the retry reuses the upright
    // vector.
    assert_eq!(db.query_images_embedded() - before, 4);
    assert!(matched(&hits));
    assert_eq!(ranking(&hits), ranking(&search(&sideways, &turned)));

    // The gradient matches nothing either way: its answer stays the upright one.
    let hits = search(&smooth(), &default);
    assert!(!matched(&search(&smooth(), &turned)));
    assert_eq!(ranking(&hits), ranking(&search(&smooth(), &upright_only())));
    assert_ne!(ranking(&hits), ranking(&search(&smooth(), &turned)));

    // A stored photo matches upright: its answer is the upright one.
    let stored = Query::Path(files[3].clone());
    let hits = search(&stored, &default);
    assert!(matched(&hits));
    assert_eq!(ranking(&hits), ranking(&search(&stored, &upright_only())));
}

#[test]
fn queries_that_verify_nothing_are_searched_with_their_turns() {
    let files = db_images(16);
    let tmp = tempfile::tempdir().unwrap();
    let robust = PipelineChoice::Preset(Preset::Robust);
    let db = super::database_of(&tmp.path().join("db"), robust, &files);
    let search = |query: &Query, opts: &SearchOptions| db.search(query.clone(), opts).unwrap();
    let default = SearchOptions::default();
    let turned = SearchOptions {
        augment: Some(Augment::Rot4),
        ..SearchOptions::default()
    };
    let upright_only = upright_only();
    let smooth = smooth();
    let before = db.query_images_embedded();
    let hits = search(&smooth, &default);
    assert_eq!(
        db.query_images_embedded() - before,
        4,
        "upright once, then three turns"
    );
    assert!(hits.iter().all(|h| h.verdict != Some(Verdict::Verified)));
    assert_eq!(ranking(&hits), ranking(&search(&smooth, &turned)));
    assert_ne!(ranking(&hits), ranking(&search(&smooth, &upright_only)));

    // A stored photo verifies upright: its answer is the upright one.
    let photo = Query::Path(files[3].clone());
    let hits = search(&photo, &default);
    assert_eq!(hits[0].verdict, Some(Verdict::Verified));
    assert_eq!(ranking(&hits), ranking(&search(&photo, &upright_only)));
}
