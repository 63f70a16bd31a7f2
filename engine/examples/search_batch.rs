//! Times one batch of searches through the Rust API, as `python/benches/overhead.py` times the
//! same batch through `import imgvec` (the Python binding's overhead, measured in one run).
//!
//!   cargo run --release -p imgvec --example search_batch -- DB K REPEATS QUERY...
//!
//! Prints one JSON line: `{"k", "queries", "repeats", "ms_per_batch": [...]}` (the first batch,
//! which loads the model and the derived files, is a warm-up and not counted).

use std::time::Instant;

use imgvec::{Database, OpenOptions, Query, SearchOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // As the CLI and the Python module do before anything else.
    imgvec::tune_allocator();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [db, k, repeats, queries @ ..] = args.as_slice() else {
        return Err("usage: search_batch DB K REPEATS QUERY...".into());
    };
    let (k, repeats): (usize, usize) = (k.parse()?, repeats.parse()?);
    let db = Database::open(
        db,
        OpenOptions {
            read_only: true,
            ..OpenOptions::default()
        },
    )?;
    let opts = SearchOptions {
        k,
        ..SearchOptions::default()
    };
    let batch = || {
        queries
            .iter()
            .map(|q| Query::Path(q.into()))
            .collect::<Vec<_>>()
    };
    let mut ms = Vec::with_capacity(repeats);
    for i in 0..=repeats {
        let t = Instant::now();
        let results = db.search_batch(batch(), &opts);
        let elapsed = t.elapsed().as_secs_f64() * 1000.0;
        if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
            return Err(e.into());
        }
        if i > 0 {
            ms.push(elapsed);
        }
    }
    let out = serde_json::json!({ "k": k, "queries": queries.len(), "repeats": repeats, "ms_per_batch": ms });
    println!("{out}");
    Ok(())
}
