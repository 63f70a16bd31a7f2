//! `imgvec info`: rows, segments, pipeline, indexes and bytes on disk, as text or JSON.

use std::process::ExitCode;

use crate::output::{count, print_versioned, to_json, CliResult};
use imgvec::{Database, DatabaseInfo, OpenOptions};
use imgvec_cli::args::DbArgs;

pub(crate) fn run(args: DbArgs, mut open: OpenOptions) -> CliResult {
    open.read_only = true;
    let db = Database::open(&args.db, open)?;
    let info = db.info()?;
    if args.json {
        print_versioned(to_json(&info));
    } else {
        println!("database      {}", info.path);
        print_pipeline(&info);
        print_storage(&info, &db);
        print_indexes(&info);
    }
    Ok(ExitCode::SUCCESS)
}

/// The `pipeline`, `blocks` and `whitening` lines.
fn print_pipeline(info: &DatabaseInfo) {
    match &info.pipeline {
        Some(p) => println!(
            "pipeline      {} (model {}, {} px, {} pooling, {} dims, fingerprint {})",
            p.name,
            p.model_source,
            p.input_size,
            if p.fusion.is_some() {
                "per-block".to_string()
            } else {
                p.pooling.to_string()
            },
            p.dims,
            &p.model_fingerprint[..16.min(p.model_fingerprint.len())]
        ),
        None => println!("pipeline      (none yet)"),
    }
    if let Some(f) = info.pipeline.as_ref().and_then(|p| p.fusion.as_ref()) {
        let blocks: Vec<String> = f
            .layout()
            .iter()
            .map(|(name, start, end, w)| format!("{name} [{start}..{end}) ×{w}"))
            .collect();
        println!(
            "blocks        {} (scales {:?})",
            blocks.join(", "),
            f.scales
        );
    }
    if let Some(spec) = info.pipeline.as_ref().and_then(|p| p.whitening) {
        match &info.whitening {
            Some(w) => {
                let vlad = w.vlad.as_ref().map_or(String::new(), |v| {
                    format!(
                        " (incl. VLAD: {} words → {} dims, weight {})",
                        v.words, v.dims, v.weight
                    )
                });
                println!(
                    "whitening     PCA-whitening {} → {} dims{vlad}, generation {}, learned \
                     on {} rows",
                    w.dims_in, w.dims_out, w.generation, w.learned_on
                )
            }
            None => println!(
                "whitening     not learned yet (needs {} live rows; raw fused vectors \
                 compared meanwhile)",
                spec.min_rows.max(spec.dims + 1)
            ),
        }
    }
}

/// The `local`, `rows`, `segments`, `model copy` and `bytes on disk` lines.
fn print_storage(info: &DatabaseInfo, db: &Database) {
    if let Some(l) = &info.local {
        println!(
            "local         SIFT/RootSIFT on {} images: {} keypoints, {} bytes ({:.0} per image)",
            l.images,
            l.keypoints,
            l.bytes,
            l.bytes as f64 / l.images.max(1) as f64
        );
        println!(
            "re-rank       voting index {} bytes, dense-window index {} bytes (on disk)",
            l.indexes.voting.bytes_on_disk, l.indexes.dense.bytes_on_disk
        );
    }
    let s = &info.stats;
    println!(
        "rows          {} live, {} deleted, {} pending (not yet in a segment)",
        s.live_rows, s.deleted_rows, s.pending_rows
    );
    println!(
        "segments      {} ({}, {} bytes)",
        s.segments,
        count(s.segment_rows, "row"),
        s.segment_bytes
    );
    if let Some(p) = &info.pipeline {
        let bytes = std::fs::metadata(p.model_path(db.dir())).map_or(0, |m| m.len());
        println!(
            "model copy    {bytes} bytes ({}: the database keeps its own copy of the model, so it \
             stays self-contained; a small database is mostly this)",
            p.model
        );
    }
    println!("bytes on disk {}", s.bytes_on_disk);
}

/// The `ivfpq`, `hamming` and `index bytes` lines.
fn print_indexes(info: &DatabaseInfo) {
    let ix = &info.indexes;
    match &ix.ivfpq {
        Some(i) => println!(
            "ivfpq         {}, {} (nprobe {} by default), {:.1} bytes/vector",
            count(i.rows as u64, "row"),
            i.factory,
            i.default_nprobe,
            i.bytes_per_vector
        ),
        None => println!(
            "ivfpq         not trained (below {} live rows: exact search answers)",
            ix.min_train_rows
        ),
    }
    match &ix.hamming {
        Some(h) => println!(
            "hamming       {}, {}-bit {} codes, {} kernel, {} bytes/vector{}",
            count(h.rows as u64, "row"),
            h.bits,
            h.encoder,
            h.kernel,
            h.bytes_per_vector,
            h.ivf_nlist
                .map(|n| format!(", binary IVF{n}"))
                .unwrap_or_default()
        ),
        None => println!("hamming       not built yet"),
    }
    println!("index bytes   {}", ix.bytes_on_disk);
}
