//! imgvec's SIFT against OpenCV's as an oracle (issue #6): real photos warped by known
//! homographies (scripts/sift_oracle.py makes the pairs and runs OpenCV on them, from the
//! project venv that setup.sh makes); on the same pairs, the share of ratio-test matches that
//! reproject within 3 px must reach at least 0.8× OpenCV's, and so must the number of such
//! correct matches.

use std::path::PathBuf;
use std::process::Command;

use imgvec_ingest::sift::{self, LocalFeatures, SiftParams};
use serde_json::Value;

use imgvec_testkit::datasets;

fn ratio_matches(a: &LocalFeatures, b: &LocalFeatures, ratio: f32) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    if b.len() < 2 {
        return out;
    }
    for i in 0..a.len() {
        let (mut best, mut second, mut arg) = (f32::MIN, f32::MIN, 0);
        for j in 0..b.len() {
            let s: f32 = a
                .descriptor(i)
                .iter()
                .zip(b.descriptor(j))
                .map(|(p, q)| p * q)
                .sum();
            if s > best {
                (second, best, arg) = (best, s, j);
            } else if s > second {
                second = s;
            }
        }
        let d1 = (2.0 - 2.0 * best).max(0.0).sqrt();
        let d2 = (2.0 - 2.0 * second).max(0.0).sqrt();
        if d1 < ratio * d2 {
            out.push((i, arg));
        }
    }
    out
}

fn project(h: &[[f64; 3]; 3], x: f32, y: f32) -> (f64, f64) {
    let (x, y) = (x as f64, y as f64);
    let w = h[2][0] * x + h[2][1] * y + h[2][2];
    (
        (h[0][0] * x + h[0][1] * y + h[0][2]) / w,
        (h[1][0] * x + h[1][1] * y + h[1][2]) / w,
    )
}

#[test]
fn matches_at_least_four_fifths_as_well_as_opencv_on_warped_photos() {
    let python = imgvec_testkit::repo_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run ./scripts/setup.sh (it installs opencv-python for this oracle)",
        python.display()
    );
    let db = datasets().join("instances-dev/db");
    // Distinct source photos (the `gNNNN.jpg` originals, not their siblings), every third one.
    let mut photos: Vec<PathBuf> = std::fs::read_dir(&db)
        .expect("instances-dev/db")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with('g') && !name.contains("_sib")
        })
        .collect();
    photos.sort();
    let photos: Vec<PathBuf> = photos.into_iter().step_by(3).take(20).collect();
    assert!(photos.len() >= 10, "too few photos in {}", db.display());

    let out = tempfile::tempdir().expect("tempdir");
    let script = imgvec_testkit::repo_root().join("scripts/sift_oracle.py");
    let status = Command::new(&python)
        .arg(&script)
        .arg(out.path())
        .args(&photos)
        .status()
        .expect("run the OpenCV oracle");
    assert!(status.success(), "{} failed", script.display());
    let oracle: Value = serde_json::from_slice(
        &std::fs::read(out.path().join("oracle.json")).expect("oracle.json"),
    )
    .expect("oracle json");
    let ratio = oracle["ratio"].as_f64().expect("ratio") as f32;
    let tolerance = oracle["tolerance_px"].as_f64().expect("tolerance");

    let params = SiftParams::default();
    let (mut ours_matches, mut ours_correct) = (0usize, 0usize);
    let (mut cv_matches, mut cv_correct) = (0u64, 0u64);
    for pair in oracle["pairs"].as_array().expect("pairs") {
        let load = |key: &str| {
            let path = pair[key].as_str().expect("path");
            image::open(path).expect("decode pair image").to_rgb8()
        };
        let (a, b) = (load("a"), load("b"));
        let mut h = [[0f64; 3]; 3];
        for (r, row) in pair["h"].as_array().expect("h").iter().enumerate() {
            for (c, v) in row.as_array().expect("row").iter().enumerate() {
                h[r][c] = v.as_f64().expect("h value");
            }
        }
        let fa = sift::extract(&a, &params);
        let fb = sift::extract(&b, &params);
        assert_eq!(
            (fa.width, fa.height),
            a.dimensions(),
            "pairs are written at SIFT's frame size"
        );
        let m = ratio_matches(&fa, &fb, ratio);
        let correct = m
            .iter()
            .filter(|&&(i, j)| {
                let (ka, kb) = (fa.keypoints[i], fb.keypoints[j]);
                let (px, py) = project(&h, ka.x, ka.y);
                (px - kb.x as f64).hypot(py - kb.y as f64) < tolerance
            })
            .count();
        let cv = &pair["opencv"];
        eprintln!(
            "{}: ours {} kp, {correct}/{} correct; opencv {} kp, {}/{} correct",
            pair["source"].as_str().unwrap_or("?"),
            fa.len(),
            m.len(),
            cv["keypoints_a"],
            cv["correct"],
            cv["matches"]
        );
        ours_matches += m.len();
        ours_correct += correct;
        cv_matches += cv["matches"].as_u64().expect("matches");
        cv_correct += cv["correct"].as_u64().expect("correct");
    }
    let ours_share = ours_correct as f64 / ours_matches.max(1) as f64;
    let cv_share = cv_correct as f64 / cv_matches.max(1) as f64;
    eprintln!(
        "correct-match share: ours {ours_share:.3} ({ours_correct}/{ours_matches}), \
         OpenCV {cv_share:.3} ({cv_correct}/{cv_matches})"
    );
    assert!(
        cv_correct > 100,
        "the oracle found too little to compare against"
    );
    assert!(
        ours_share >= 0.8 * cv_share,
        "share of correct matches {ours_share:.3} < 0.8 × OpenCV's {cv_share:.3}"
    );
    assert!(
        ours_correct as f64 >= 0.8 * cv_correct as f64,
        "correct matches {ours_correct} < 0.8 × OpenCV's {cv_correct}"
    );
}
