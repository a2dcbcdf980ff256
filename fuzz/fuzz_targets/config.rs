//! The configuration loader as `alien-manager serve --config FILE` runs it: `load_from` with the
//! input as the file (and, after a NUL byte, `NAME=value` lines as the environment), so the TOML
//! parse, the layering, extraction, validation and the every-issue report all run; then what
//! `config check` prints (`render_effective`) for a configuration that loads.

#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use alien_config::{CliOverrides, load_from, render_effective};
use libfuzzer_sys::fuzz_target;

/// The file the loader reads: one per fuzzing process, rewritten for each input.
static FILE: LazyLock<PathBuf> = LazyLock::new(|| {
    std::env::temp_dir().join(format!("alien-fuzz-config-{}.toml", std::process::id()))
});

fuzz_target!(|data: &[u8]| {
    let (file, env) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, &[][..]),
    };
    std::fs::write(&*FILE, file).expect("the fuzz config file is writable");
    let env: Vec<(String, String)> = String::from_utf8_lossy(env)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    let cli = CliOverrides { config: Some(FILE.clone()), ..CliOverrides::default() };
    match load_from(&cli, env, &std::env::temp_dir()) {
        Ok(loaded) => {
            let _ = render_effective(&loaded);
        }
        Err(err) => {
            let _ = err.to_string();
        }
    }
});
