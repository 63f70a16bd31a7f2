//! Reader processes beside a writer process: `imgvec search` and `imgvec info` never fail
//! because a writer ingests, deletes, compacts and retrains under them. `scripts/soak.sh`
//! runs the same test for minutes (`IMGVEC_READER_SOAK_SECS`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::*;

fn soak_secs() -> u64 {
    std::env::var("IMGVEC_READER_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

#[test]
fn readers_never_fail_beside_a_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = copy_db_images(&tmp.path().join("imgs"), 24);
    let db = tmp.path().join("db");
    // Small enough that every round retrains the approximate indexes and republishes them.
    let writer = |args: &[&str]| run_with(&["--index-min-rows", "8"], args);
    let first = tmp.path().join("first");
    std::fs::create_dir(&first).unwrap();
    for img in &imgs[..8] {
        std::fs::copy(img, first.join(img.file_name().unwrap())).unwrap();
    }
    assert!(writer(&["ingest", s(&db), s(&first)]).status.success());
    let deadline = Instant::now() + Duration::from_secs(soak_secs());
    let writing = AtomicBool::new(true);
    // Readers log their retried opens (a race with the writer met and survived).
    let reader = |kind: usize| {
        let (mut reads, mut retried) = (0, 0);
        let mut failures = Vec::new();
        while writing.load(Ordering::SeqCst) {
            let mode = ["exact", "ivfpq", "hamming"][reads % 3];
            let args = if kind == 0 {
                vec!["search", s(&db), s(&imgs[0]), "--json", "--mode", mode]
            } else {
                vec!["info", s(&db), "--json"]
            };
            let out = imgvec()
                .args(&args)
                .env("IMGVEC_LOG", "imgvec_storage=debug")
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            retried += stderr.matches("read-only open failed").count();
            if !out.status.success() {
                failures.push(stderr);
            }
            reads += 1;
        }
        (reads, retried, failures)
    };
    let (rounds, (reads, retried, failures)) = std::thread::scope(|scope| {
        let writer_thread = scope.spawn(|| {
            let mut rounds = 0;
            let mut previous: Option<PathBuf> = None;
            while Instant::now() < deadline || rounds < 2 {
                let round = tmp.path().join(format!("round{rounds}"));
                std::fs::create_dir(&round).unwrap();
                for k in 0..4 {
                    let img = &imgs[(rounds * 4 + k) % imgs.len()];
                    std::fs::copy(img, round.join(format!("r{rounds}-{k}.jpg"))).unwrap();
                }
                let mut steps = vec![writer(&["ingest", s(&db), s(&round)])];
                if let Some(prev) = &previous {
                    let gone = prev.join(format!("r{}-0.jpg", rounds - 1));
                    steps.push(writer(&["delete", s(&db), "--path", s(&gone)]));
                }
                steps.push(writer(&["compact", s(&db)]));
                for out in steps {
                    assert!(
                        out.status.success(),
                        "writer round {rounds}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                previous = Some(round);
                rounds += 1;
            }
            writing.store(false, Ordering::SeqCst);
            rounds
        });
        let searches = scope.spawn(|| reader(0));
        let infos = scope.spawn(|| reader(1));
        let rounds = writer_thread.join().unwrap();
        let (a, ra, mut fa) = searches.join().unwrap();
        let (b, rb, fb) = infos.join().unwrap();
        fa.extend(fb);
        (rounds, (a + b, ra + rb, fa))
    });
    eprintln!(
        "writer rounds {rounds}, reader processes {reads}, opens retried {retried}, failures {}",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {reads} readers failed: {failures:#?}",
        failures.len()
    );
    assert!(reads >= 4 && rounds >= 2, "reads {reads}, rounds {rounds}");
}
