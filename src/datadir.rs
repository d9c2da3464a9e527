//! The data directory: creation with owner-only permissions, the refusal to run from one that
//! others can read, and owner-only file writes. Paths of everything inside it live here.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error(
        "{what} {path} is accessible by group or others (mode {mode:04o}); it holds private keys. \
         Fix it with `chmod {fix} {path}` and check who else had access"
    )]
    UnsafePermissions {
        what: &'static str,
        path: String,
        mode: u32,
        fix: &'static str,
    },
    #[error("{path} exists but is not a directory")]
    NotADirectory { path: String },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("data directory {path} does not exist; run `citadel init` or `citadel serve` first")]
    Missing { path: String },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError + use<> {
    let path = path.display().to_string();
    move |source| DataDirError::Io { action, path, source }
}

#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Creates the directory (mode 0700) if needed; refuses one that group or others can use.
    pub fn prepare(root: &Path) -> Result<Self, DataDirError> {
        match fs::metadata(root) {
            Ok(_) => Self::open(root),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(root)
                    .map_err(io("create", root))?;
                // `recursive` applies the umask-filtered mode; make sure it is exactly 0700.
                fs::set_permissions(root, fs::Permissions::from_mode(0o700))
                    .map_err(io("set permissions on", root))?;
                Self::open(root)
            }
            Err(e) => Err(io("inspect", root)(e)),
        }
    }

    /// Opens an existing directory, with the same permission checks.
    pub fn open(root: &Path) -> Result<Self, DataDirError> {
        let meta = match fs::metadata(root) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DataDirError::Missing {
                    path: root.display().to_string(),
                });
            }
            Err(e) => return Err(io("inspect", root)(e)),
        };
        if !meta.is_dir() {
            return Err(DataDirError::NotADirectory {
                path: root.display().to_string(),
            });
        }
        check_private(root, "data directory", meta.permissions().mode(), "700")?;
        let dir = Self {
            root: root.to_path_buf(),
        };
        for sub in [dir.pki_dir(), dir.store_dir()] {
            if sub.exists() {
                let mode = fs::metadata(&sub)
                    .map_err(io("inspect", &sub))?
                    .permissions()
                    .mode();
                check_private(&sub, "directory", mode, "700")?;
            }
        }
        Ok(dir)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The storage engine's files.
    pub fn store_dir(&self) -> PathBuf {
        self.root.join("store")
    }

    /// Certificates and the private keys that go with them.
    pub fn pki_dir(&self) -> PathBuf {
        self.root.join("pki")
    }

    /// The owner-only socket of a running server, for CLI commands.
    pub fn admin_socket(&self) -> PathBuf {
        self.root.join("admin.sock")
    }

    pub fn ensure_subdir(&self, dir: &Path) -> Result<(), DataDirError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("create", dir))
    }
}

fn check_private(path: &Path, what: &'static str, mode: u32, fix: &'static str) -> Result<(), DataDirError> {
    if mode & 0o077 != 0 {
        return Err(DataDirError::UnsafePermissions {
            what,
            path: path.display().to_string(),
            mode: mode & 0o7777,
            fix,
        });
    }
    Ok(())
}

/// Refuses a secret file (a private key) that group or others can read or write.
pub fn check_secret_file(path: &Path) -> Result<(), DataDirError> {
    let mode = fs::metadata(path)
        .map_err(io("inspect", path))?
        .permissions()
        .mode();
    check_private(path, "key file", mode, "600")
}

/// Writes a file atomically (temporary file, fsync, rename) with the given mode from the
/// moment it exists, so a key is never briefly readable by others.
pub fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), DataDirError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    file.write_all(contents).map_err(io("write", &tmp))?;
    file.sync_all().map_err(io("sync", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io("replace", path))?;
    // Make the rename itself durable.
    if let Some(parent) = path.parent()
        && let Ok(dir) = fs::File::open(parent)
    {
        let _ = dir.sync_all();
    }
    Ok(())
}

pub fn read_file(path: &Path) -> Result<String, DataDirError> {
    fs::read_to_string(path).map_err(io("read", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_owner_only_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("a/b/data");
        let dir = DataDir::prepare(&root).unwrap();
        assert_eq!(mode(dir.root()), 0o700);
    }

    #[test]
    fn refuses_group_or_world_readable_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("data");
        fs::create_dir(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o750)).unwrap();
        let err = DataDir::prepare(&root).unwrap_err();
        assert!(matches!(err, DataDirError::UnsafePermissions { mode: 0o750, .. }));
        assert!(err.to_string().contains("chmod 700"), "{err}");
    }

    #[test]
    fn writes_keys_owner_only_and_atomically() {
        let tmp = tempfile::tempdir().unwrap();
        let key = tmp.path().join("k.key");
        write_file(&key, b"one", 0o600).unwrap();
        write_file(&key, b"two", 0o600).unwrap();
        assert_eq!(read_file(&key).unwrap(), "two");
        assert_eq!(mode(&key), 0o600);
        check_secret_file(&key).unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            check_secret_file(&key)
                .unwrap_err()
                .to_string()
                .contains("chmod 600")
        );
    }
}
