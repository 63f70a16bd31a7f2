//! `imgvec`, the launcher. It parses the command line itself (help, version and usage errors,
//! exit status 2), prints completions and the man page, and execs `imgvec-engine` from its own
//! folder for every other command. It links none of the engine's native libraries (libtorch alone
//! pulls in over 200 shared objects), so those answers take milliseconds, and the one exec it
//! does also sets `OMP_WAIT_POLICY` (see `imgvec-engine`'s `passive_openmp`), which the engine
//! would otherwise re-exec itself for.

use std::os::unix::process::CommandExt;
use std::process::ExitCode;

fn main() -> ExitCode {
    imgvec_cli::quiet_broken_pipe();
    let (cli, argv) = imgvec_cli::parse();
    if let Some(code) = imgvec_cli::answer_builtin(&cli.command) {
        return code;
    }
    let engine = match std::env::current_exe() {
        Ok(exe) => exe.with_file_name(imgvec_cli::ENGINE_BIN),
        Err(e) => {
            eprintln!("error: cannot locate the imgvec binary: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut command = std::process::Command::new(&engine);
    command.arg0(&argv[0]).args(&argv[1..]);
    if std::env::var_os("OMP_WAIT_POLICY").is_none() {
        command.env("OMP_WAIT_POLICY", "passive");
    }
    // `exec` returns only when it failed.
    let e = command.exec();
    eprintln!(
        "error: {}: {e} (it is installed beside imgvec; reinstall imgvec)",
        engine.display()
    );
    ExitCode::FAILURE
}
