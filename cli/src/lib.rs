//! What the `imgvec` launcher and `imgvec-engine` share: the command line (`args`) and how
//! `IMGVEC_DB` fills in the database operand (`db_env`). The launcher links nothing of the
//! engine's native libraries, so `--help`, `--version`, usage errors, completions and the man page
//! answer in milliseconds; every other command runs in `imgvec-engine`.

pub mod args;
pub mod db_env;

/// The binary the launcher hands real commands to, found in the launcher's own folder.
pub const ENGINE_BIN: &str = "imgvec-engine";

/// Rust ignores SIGPIPE, so a write to a closed pipe (`imgvec search … | head -1`) fails and
/// `println!` panics. Like other Unix tools, `imgvec` instead ends quietly when its reader goes
/// away: the default action of SIGPIPE. Everything acknowledged is durable by then.
pub fn quiet_broken_pipe() {
    // SAFETY: setting a signal's disposition to its default has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Parses the command line as both binaries do: `IMGVEC_DB` applied, then clap, which prints
/// help, version and usage errors itself and exits (0 for help and version, 2 for usage errors).
pub fn parse() -> (args::Cli, Vec<std::ffi::OsString>) {
    use clap::Parser;
    let argv = db_env::with_default_db(
        std::env::args_os().collect(),
        std::env::var_os("IMGVEC_DB"),
        &|p| p.join("meta/CURRENT").is_file() || !p.exists(),
    );
    (args::Cli::parse_from(&argv), argv)
}

/// Answers the commands that need no database and no engine (`completions`, `man`): the exit
/// status when `command` is one of them, `None` otherwise.
pub fn answer_builtin(command: &args::Command) -> Option<std::process::ExitCode> {
    use clap::CommandFactory;
    use std::process::ExitCode;
    let mut out = std::io::stdout().lock();
    match command {
        args::Command::Completions(a) => {
            clap_complete::generate(a.shell, &mut args::Cli::command(), "imgvec", &mut out);
            Some(ExitCode::SUCCESS)
        }
        args::Command::Man => Some(
            match clap_mangen::Man::new(args::Cli::command()).render(&mut out) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: writing the man page: {e}");
                    ExitCode::FAILURE
                }
            },
        ),
        _ => None,
    }
}
