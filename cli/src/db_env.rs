//! `IMGVEC_DB`: the database a command uses when its first operand is not one.
//!
//! The rule: a command's first operand is its database when it is an imgvec database or does not
//! exist yet (`ingest` creates it); otherwise, when `IMGVEC_DB` is set, that database is put in
//! front of the operands. `imgvec search q.jpg`, `imgvec info` and `imgvec ingest photos/` then
//! use `IMGVEC_DB`, while `imgvec search other.imgvec q.jpg` still searches `other.imgvec`.

use std::ffi::{OsStr, OsString};
use std::path::Path;

use clap::Parser;

use crate::args::{BenchCommand, Cli, Command, TrainCommand};

/// The subcommands whose first operand is a database.
const DB_COMMANDS: [&str; 13] = [
    "ingest", "search", "info", "reindex", "compact", "delete", "verify", "backup", "serve",
    "list", "show", "tag", "export",
];

/// `argv` with `env_db` inserted as the database operand where the rule above says so;
/// `is_db_operand` tells whether a path can be the database operand (a database, or absent).
pub fn with_default_db(
    argv: Vec<OsString>,
    env_db: Option<OsString>,
    is_db_operand: &dyn Fn(&Path) -> bool,
) -> Vec<OsString> {
    let Some(env_db) = env_db.filter(|d| !d.is_empty()) else {
        return argv;
    };
    let Some(at) = argv
        .iter()
        .skip(1)
        .position(|a| DB_COMMANDS.iter().any(|c| OsStr::new(c) == a.as_os_str()))
        .map(|i| i + 2)
    else {
        return argv;
    };
    if let Ok(cli) = Cli::try_parse_from(&argv) {
        // `-` (a query read from stdin) is never the database.
        let is_db = |p: &Path| p != Path::new("-") && is_db_operand(p);
        if db_operand(&cli.command).is_none_or(is_db) {
            return argv;
        }
    }
    let mut with_env = argv.clone();
    with_env.insert(at, env_db);
    if Cli::try_parse_from(&with_env).is_ok() {
        with_env
    } else {
        argv
    }
}

/// The database operand of a parsed command, if it has one.
fn db_operand(command: &Command) -> Option<&Path> {
    Some(match command {
        Command::Ingest(a) => &a.db,
        Command::Search(a) => &a.db,
        Command::Info(a) | Command::Compact(a) | Command::Verify(a) => &a.db,
        Command::Reindex(a) => &a.db,
        Command::Delete(a) => &a.db,
        Command::Backup(a) => &a.db,
        Command::Serve(a) => &a.db,
        Command::List(a) => &a.db,
        Command::Show(a) => &a.db,
        Command::Tag(a) => &a.db,
        Command::Export(a) => &a.db,
        Command::Dedupe(a) => &a.db,
        Command::Bench(
            BenchCommand::Ingest(_) | BenchCommand::Retrieval(_) | BenchCommand::Ann(_),
        )
        | Command::Train(
            TrainCommand::Autoencoder(_) | TrainCommand::Sgan(_) | TrainCommand::Contrastive(_),
        )
        | Command::Completions(_)
        | Command::Man => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<OsString> {
        s.split(' ').map(OsString::from).collect()
    }

    #[test]
    fn the_environment_fills_in_the_database_only_where_the_first_operand_is_not_one() {
        // Paths named `*.db` are databases, `new*` do not exist, anything else is a photo.
        let is_db = |p: &Path| {
            let s = p.to_str().unwrap();
            s.ends_with(".db") || s.starts_with("new")
        };
        let env = Some(OsString::from("env.db"));
        let cases = [
            ("imgvec search q.jpg", "imgvec search env.db q.jpg"),
            (
                "imgvec search other.db q.jpg",
                "imgvec search other.db q.jpg",
            ),
            ("imgvec -k 3 search q.jpg", "imgvec -k 3 search q.jpg"),
            (
                "imgvec --threads 2 search -k 3 q.jpg",
                "imgvec --threads 2 search env.db -k 3 q.jpg",
            ),
            ("imgvec search -k 1 -", "imgvec search env.db -k 1 -"),
            ("imgvec info", "imgvec info env.db"),
            ("imgvec info --json", "imgvec info env.db --json"),
            ("imgvec info other.db", "imgvec info other.db"),
            ("imgvec ingest photos", "imgvec ingest env.db photos"),
            (
                "imgvec ingest photos more",
                "imgvec ingest env.db photos more",
            ),
            ("imgvec ingest new photos", "imgvec ingest new photos"),
            ("imgvec backup dest", "imgvec backup env.db dest"),
            ("imgvec delete --id 3", "imgvec delete env.db --id 3"),
            ("imgvec bench ann --n 10", "imgvec bench ann --n 10"),
            ("imgvec completions bash", "imgvec completions bash"),
        ];
        for (given, expected) in cases {
            assert_eq!(
                with_default_db(argv(given), env.clone(), &is_db),
                argv(expected),
                "{given}"
            );
        }
        assert_eq!(
            with_default_db(argv("imgvec search q.jpg"), None, &is_db),
            argv("imgvec search q.jpg")
        );
    }
}
