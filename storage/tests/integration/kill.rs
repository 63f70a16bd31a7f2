//! SIGKILL at random moments: a child process (this test binary, re-run as the ignored
//! `child_workload` test) commits rows, deletes some and compacts, printing each operation once it
//! is acknowledged; the parent kills it after a random delay, reopens the database, and checks
//! that every acknowledged row and delete survived and nothing half-written is visible.
//!
//! 50 cycles run in the normal test suite; `IMGVEC_KILL_CYCLES=1000` runs the long soak
//! (`scripts/soak.sh`).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{check, row, Model};
use imgvec_storage::{CompactionPolicy, OpenMode, Store, StoreOptions};
use rand::{Rng, SeedableRng};

fn options(mode: OpenMode) -> StoreOptions {
    StoreOptions {
        flush_rows: 5,
        merge_at: 3,
        ..StoreOptions::new(mode)
    }
}

/// The child: runs until killed. Not a test of its own (ignored; the parent runs it).
#[test]
#[ignore = "run by kill_at_random_moments_loses_nothing_acknowledged as its child process"]
fn child_workload() {
    let db = std::env::var("IMGVEC_KILL_DB").expect("IMGVEC_KILL_DB");
    let cycle: u64 = std::env::var("IMGVEC_KILL_CYCLE").unwrap().parse().unwrap();
    let store = Store::open_with(Path::new(&db), options(OpenMode::ReadWrite)).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(cycle);
    let mut out = std::io::stdout().lock();
    let mut mine: Vec<u64> = Vec::new();
    let mut n = 0u64;
    loop {
        let dice = rng.gen_range(0..100);
        if dice < 70 {
            let count = rng.gen_range(1..=4);
            let rows: Vec<_> = (0..count)
                .map(|i| row(&format!("/c{cycle}-{}", n + i)))
                .collect();
            n += count;
            let paths: Vec<String> = rows.iter().map(|r| r.path.clone()).collect();
            let committed = store.commit(rows).unwrap();
            for (p, c) in paths.iter().zip(committed) {
                writeln!(out, "ack {p} {}", c.id).unwrap();
                mine.push(c.id);
            }
        } else if dice < 88 && !mine.is_empty() {
            let id = mine.swap_remove(rng.gen_range(0..mine.len()));
            writeln!(out, "deleting {id}").unwrap();
            out.flush().unwrap();
            store.delete(&[id]).unwrap();
            writeln!(out, "del {id}").unwrap();
        } else if dice < 95 {
            store.compact(CompactionPolicy::Background).unwrap();
        } else {
            store.compact(CompactionPolicy::Full).unwrap();
        }
        out.flush().unwrap();
    }
}

#[test]
fn kill_at_random_moments_loses_nothing_acknowledged() {
    let cycles: u64 = std::env::var("IMGVEC_KILL_CYCLES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(50);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let mut model = Model::default();
    let (mut acked_total, mut deletes_total) = (0usize, 0usize);
    for cycle in 0..cycles {
        let mut child = Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "kill::child_workload",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("IMGVEC_KILL_DB", &db)
            .env("IMGVEC_KILL_CYCLE", cycle.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => lines.push(l),
                    Err(_) => break,
                }
            }
            lines
        });
        std::thread::sleep(Duration::from_millis(rng.gen_range(20..250)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for line in reader.join().unwrap() {
            let parts: Vec<&str> = line.split(' ').collect();
            match parts.as_slice() {
                ["ack", path, id] => {
                    model.live.insert(path.to_string(), id.parse().unwrap());
                    acked_total += 1;
                }
                ["deleting", id] => {
                    model.maybe_deleted.insert(id.parse().unwrap());
                }
                ["del", id] => {
                    let id: u64 = id.parse().unwrap();
                    model.live.retain(|_, v| *v != id);
                    model.deleted.insert(id);
                    deletes_total += 1;
                }
                _ => {} // the test harness's own output, or a line cut by the kill
            }
        }
        let store = Store::open_with(&db, options(OpenMode::ReadWrite))
            .unwrap_or_else(|e| panic!("cycle {cycle}: reopen failed: {e}"));
        if let Err(e) = check(&store, &model) {
            panic!("cycle {cycle}: {e}");
        }
        // Unacknowledged deletes are now settled one way or the other.
        for id in std::mem::take(&mut model.maybe_deleted) {
            if store.get(id).unwrap().is_none() {
                model.live.retain(|_, v| *v != id);
                model.deleted.insert(id);
            }
        }
    }
    assert!(
        acked_total > cycles as usize,
        "children acknowledged too little: {acked_total}"
    );
    assert!(deletes_total > 0);
    println!("{cycles} kill cycles: {acked_total} rows and {deletes_total} deletes acknowledged, all survived");
}
