//! Files and directories that hold secrets or state: directories 0700, files 0600, created the
//! same way everywhere (the database, the key file, the local KV, the state directory).

use std::fs::{DirBuilder, OpenOptions};
use std::io;
use std::path::Path;

/// Creates `dir` and its missing parents with mode 0700 (existing ones are left as they are).
pub fn create_dir(dir: &Path) -> io::Result<()> {
    let mut builder = DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Options that create a new file with mode 0600, failing if it exists.
pub fn new_file_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Creates `path` empty with mode 0600 unless it exists (SQLite gives its -wal and -shm files the
/// mode of the database file).
pub fn create_file_if_missing(path: &Path) -> io::Result<()> {
    match new_file_options().open(path) {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn modes_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        create_dir(&nested).unwrap();
        assert_eq!(std::fs::metadata(&nested).unwrap().permissions().mode() & 0o777, 0o700);
        let file = nested.join("f");
        create_file_if_missing(&file).unwrap();
        std::fs::write(&file, b"x").unwrap();
        create_file_if_missing(&file).unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"x", "an existing file is kept");
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(new_file_options().open(&file).is_err(), "new files only");
    }
}
