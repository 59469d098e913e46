//! One serving process per data directory. The embedded store has a single
//! writer, and its in-process group commit assumes no other process commits
//! beside it, so `berth serve` holds an exclusive lock on `DIR/berth.lock`
//! for as long as it runs. The operating system drops the lock when the
//! process exits, however it exits, so a crash never leaves it stale.

use anyhow::Context as _;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

/// The held lock; released when dropped or when the process ends.
#[derive(Debug)]
pub struct DataLock {
    _file: File,
    path: PathBuf,
}

impl DataLock {
    /// Take the lock on `dir` (created if missing) if no other process
    /// holds it. `Ok(None)`: another process does.
    pub fn try_acquire(dir: &Path) -> anyhow::Result<Option<DataLock>> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating data directory {}", dir.display()))?;
        let path = dir.join("berth.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening the lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(DataLock { _file: file, path })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataLock::try_acquire(dir.path()).unwrap().expect("free");
        // flock locks belong to the open file, so a second open in the same
        // process is refused exactly as another process would be.
        assert!(DataLock::try_acquire(dir.path()).unwrap().is_none());
        drop(first);
        assert!(DataLock::try_acquire(dir.path()).unwrap().is_some());
    }
}
