//! `alien serve ARGS...`: runs `alien-manager serve ARGS...`, found beside this executable first,
//! then on `PATH`. On Unix the manager replaces this process (signals and the exit status are
//! its own).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const MANAGER: &str = "alien-manager";

/// The manager binary beside `exe`, else the first on `path`.
fn find_manager(exe: Option<&Path>, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    let name = format!("{MANAGER}{}", std::env::consts::EXE_SUFFIX);
    let beside = exe.and_then(Path::parent).map(|dir| dir.join(&name));
    if let Some(beside) = beside.filter(|p| p.is_file()) {
        return Some(beside);
    }
    std::env::split_paths(path?).map(|dir| dir.join(&name)).find(|p| p.is_file())
}

/// Runs the manager; returns only when it could not be started (or, off Unix, when it ended).
pub fn serve(args: &[String]) -> ExitCode {
    let exe = std::env::current_exe().ok();
    let path = std::env::var_os("PATH");
    let Some(manager) = find_manager(exe.as_deref(), path.as_deref()) else {
        eprintln!(
            "error: {MANAGER} was not found beside alien or on PATH; install it (cargo install --path bins/alien-manager) or put it on PATH"
        );
        return ExitCode::from(1);
    };
    let mut command = Command::new(&manager);
    command.arg("serve").args(args);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let error = command.exec();
        eprintln!("error: cannot run {}: {error}", manager.display());
        ExitCode::from(1)
    }
    #[cfg(not(unix))]
    match command.status() {
        Ok(status) => ExitCode::from(status.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(1)),
        Err(error) => {
            eprintln!("error: cannot run {}: {error}", manager.display());
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manager_beside_the_cli_comes_before_path() {
        let beside = tempfile::tempdir().ok();
        let on_path = tempfile::tempdir().ok();
        let (Some(beside), Some(on_path)) = (beside, on_path) else {
            panic!("no temporary directories");
        };
        let manager = |dir: &Path| dir.join(MANAGER);
        let exe = beside.path().join("alien");
        let path = std::env::join_paths([on_path.path()]).ok();
        assert_eq!(find_manager(Some(&exe), path.as_deref()), None);
        std::fs::write(manager(on_path.path()), b"").ok();
        assert_eq!(find_manager(Some(&exe), path.as_deref()), Some(manager(on_path.path())));
        std::fs::write(manager(beside.path()), b"").ok();
        assert_eq!(find_manager(Some(&exe), path.as_deref()), Some(manager(beside.path())));
    }
}
