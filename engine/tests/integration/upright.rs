//! The upright fallback of verified pipelines: an image query none of whose results verified
//! is answered as if its turns had been asked for (`--augment rot4`); one that verified is
//! answered upright only, and `upright: false` turns the fallback off.

use imgvec_testkit::*;

use std::io::Cursor;

use imgvec::image::{ImageFormat, Rgb, RgbImage};
use imgvec::{
    Augment, Hit, PipelineChoice, Preset, Query, SearchOptions, Verdict, VerifyOverrides,
};

fn ranking(hits: &[Hit]) -> Vec<(u64, String)> {
    hits.iter()
        .map(|h| (h.id, format!("{:.5}", h.score)))
        .collect()
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
    let upright_only = SearchOptions {
        verify: VerifyOverrides {
            upright: Some(false),
            ..VerifyOverrides::default()
        },
        ..SearchOptions::default()
    };

    // A smooth, lopsided gradient: no keypoints, nothing verifies.
    let mut png = Cursor::new(Vec::new());
    RgbImage::from_fn(240, 160, |x, y| {
        Rgb([(x + y / 4) as u8, (y * 3 / 2) as u8, 90])
    })
    .write_to(&mut png, ImageFormat::Png)
    .unwrap();
    let smooth = Query::Bytes(png.into_inner());
    let hits = search(&smooth, &default);
    assert!(hits.iter().all(|h| h.verdict != Some(Verdict::Verified)));
    assert_eq!(ranking(&hits), ranking(&search(&smooth, &turned)));
    assert_ne!(ranking(&hits), ranking(&search(&smooth, &upright_only)));

    // A stored photo verifies upright: its answer is the upright one.
    let photo = Query::Path(files[3].clone());
    let hits = search(&photo, &default);
    assert_eq!(hits[0].verdict, Some(Verdict::Verified));
    assert_eq!(ranking(&hits), ranking(&search(&photo, &upright_only)));
}
