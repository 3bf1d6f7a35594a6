//! Files and directories only the gateway's user may read: the SQLite database (SQLite gives
//! its `-wal` and `-shm` files the database file's mode), the secret key file, the data
//! directory. Created with their mode from the start, never created open and narrowed later, so
//! there is no moment at which another user could open them.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

/// Mode of files the gateway creates.
pub const FILE_MODE: u32 = 0o600;
/// Mode of directories the gateway creates.
pub const DIR_MODE: u32 = 0o700;

/// Creates `dir` and its missing parents with mode 0700 (directories that exist are left as
/// they are: they are the operator's).
pub fn create_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(DIR_MODE);
    builder.create(dir)
}

/// Creates `path` empty with mode 0600 unless it exists (an existing file is left untouched).
pub fn touch(path: &Path) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    options.mode(FILE_MODE);
    options.open(path).map(drop)
}

/// Writes `contents` to `path` with mode 0600, only if `path` does not exist: written to a
/// temporary file beside it, synced, then linked into place, so a reader never sees a partial
/// file and of two writers racing exactly one wins. Returns false when `path` already existed.
pub fn write_new(path: &Path, contents: &[u8]) -> io::Result<bool> {
    let tmp = path.with_extension(format!(
        "tmp-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = (|| {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        options.mode(FILE_MODE);
        let mut file: File = options.open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

/// Whether users other than the owner may read `path` (always false off Unix).
pub fn readable_by_others(path: &Path) -> io::Result<bool> {
    #[cfg(unix)]
    {
        Ok(std::fs::metadata(path)?.permissions().mode() & 0o077 != 0)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(false)
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn modes_from_the_start() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("a/b");
        create_dir(&dir).unwrap();
        assert_eq!(mode(&dir), DIR_MODE);
        assert_eq!(mode(&base.path().join("a")), DIR_MODE);
        let file = dir.join("db");
        touch(&file).unwrap();
        assert_eq!(mode(&file), FILE_MODE);
        assert!(!readable_by_others(&file).unwrap());

        let key = dir.join("key");
        assert!(write_new(&key, b"one").unwrap());
        assert!(
            !write_new(&key, b"two").unwrap(),
            "an existing file is kept"
        );
        assert_eq!(std::fs::read(&key).unwrap(), b"one");
        assert_eq!(mode(&key), FILE_MODE);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);

        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(readable_by_others(&key).unwrap());
    }
}
