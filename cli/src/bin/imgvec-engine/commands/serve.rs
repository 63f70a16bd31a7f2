//! `imgvec serve`: the web page and JSON API of `imgvec-serve` over one database, until Ctrl-C.

use std::process::ExitCode;

use imgvec::{Database, OpenOptions};
use imgvec_cli::args::ServeArgs;

use crate::output::{CliError, CliResult};

pub(crate) fn run(args: ServeArgs, mut open: OpenOptions) -> CliResult {
    let token = args
        .token
        .or_else(|| std::env::var("IMGVEC_TOKEN").ok().filter(|t| !t.is_empty()));
    imgvec_serve::check_bind(&args.bind, token.as_deref()).map_err(CliError::Usage)?;
    open.read_only = !args.allow_writes;
    open.create = false;
    let db = Database::open(&args.db, open)?;
    // The first search from the page should not wait for the indexes' load.
    db.preload();
    let opts = imgvec_serve::ServeOptions {
        bind: args.bind,
        allow_writes: args.allow_writes,
        token,
        max_upload_bytes: args.max_upload_mib << 20,
    };
    let writes = if opts.allow_writes {
        "writes allowed"
    } else {
        "read-only"
    };
    let db_name = args.db.display().to_string();
    imgvec_serve::run(db, opts, |addr| {
        // The first line on stdout, for people and for scripts that start it on port 0.
        println!("serving {db_name} at http://{addr}/ ({writes}; Ctrl-C stops)");
    })
    .map_err(|e| imgvec::Error::Invalid(format!("serve: {e}")))?;
    Ok(ExitCode::SUCCESS)
}
