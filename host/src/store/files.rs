//! File modes of the data directory: the store's files are readable by
//! their owner only, and a directory that others may write is reported,
//! since whoever can write there can change the data and the compiled code
//! the server maps into memory.

use anyhow::Context as _;
use std::path::Path;

/// Log a warning if `dir` is writable by its group or by others. A warning,
/// not a refusal: volumes mounted for a container group (Kubernetes'
/// `fsGroup`) are group-writable by design.
pub fn warn_if_shared(dir: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let Ok(meta) = std::fs::metadata(dir) else {
            return;
        };
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o022 != 0 {
            tracing::warn!(
                "the data directory {} is writable by {} (mode {mode:04o}): whoever can write there can change the stored data and the compiled code berth loads; run `chmod go-w {}` unless that is intended",
                dir.display(),
                if mode & 0o002 != 0 {
                    "others"
                } else {
                    "its group"
                },
                dir.display()
            );
        }
    }
}

/// Make the database at `db` and SQLite's `-wal` and `-shm` files beside it
/// readable and writable by their owner only: a new database is created
/// with mode 0600 (SQLite gives the other two the database's mode when it
/// creates them), and existing files with a wider mode are narrowed.
pub fn owner_only(db: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(db)
            .with_context(|| format!("creating the store {}", db.display()))?;
        for suffix in ["", "-wal", "-shm"] {
            let mut path = db.as_os_str().to_owned();
            path.push(suffix);
            let path = std::path::PathBuf::from(path);
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.permissions().mode() & 0o077 != 0 {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .with_context(|| {
                        format!(
                            "making {} readable by its owner only: fix its owner or mode",
                            path.display()
                        )
                    })?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = db;
    Ok(())
}
