//! `imgvec search`: the stored images most like each query image or stored id, as text, JSON
//! lines and optionally an HTML contact sheet.

use std::collections::BTreeMap;
use std::process::ExitCode;

use imgvec::{Database, Filter, OpenOptions, Query, SearchOptions};

use crate::args::SearchArgs;
use crate::html;
use crate::output::{print_hits, print_json, query_label, CliResult};

pub(crate) fn run(args: SearchArgs, mut open: OpenOptions) -> CliResult {
    if args.images.is_empty() && args.ids.is_empty() {
        return Err(
            imgvec::Error::Invalid("give at least one query image or --id N".into()).into(),
        );
    }
    open.read_only = true;
    let mut opts = SearchOptions {
        k: args.k,
        mode: args.mode,
        threshold: args.threshold,
        filter: Filter {
            path_prefix: args.path_prefix,
            attributes: args.attrs.into_iter().collect::<BTreeMap<_, _>>(),
        },
        nprobe: args.nprobe,
        rerank: !args.no_rerank,
        rerank_depth: args.rerank_depth,
        ..SearchOptions::default()
    };
    args.query.apply(&mut opts)?;
    opts.check()?;
    let db = Database::open(&args.db, open)?;
    let mut queries: Vec<Query> = args.images.iter().cloned().map(Query::Path).collect();
    queries.extend(args.ids.iter().map(|&id| Query::Id(id)));
    let labels: Vec<String> = queries.iter().map(query_label).collect();
    let results = db.search_batch(queries.clone(), &opts);
    let mut failed = false;
    let mut sheet = Vec::new();
    for (label, result) in labels.iter().zip(&results) {
        match result {
            Ok(hits) => {
                if args.json {
                    print_json(&serde_json::json!({ "query": label, "results": hits }));
                } else {
                    print_hits(label, hits);
                }
            }
            Err(e) => {
                failed = true;
                if args.json {
                    print_json(&serde_json::json!({ "query": label, "error": e.to_string() }));
                } else {
                    eprintln!("error: {e}");
                }
            }
        }
    }
    if let Some(path) = &args.html {
        for ((label, result), query) in labels.iter().zip(&results).zip(queries) {
            sheet.push(html::QueryRow {
                label: label.clone(),
                query,
                hits: result.as_ref().cloned().map_err(|e| e.to_string()),
            });
        }
        html::write(&db, path, &sheet)?;
        if !args.json {
            println!("contact sheet written to {}", path.display());
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
