//! `berth serve --watch`: poll each component's wasm file and, once a
//! change has settled, swap the new version in through [`App::replace`].
//! A file that is rejected leaves the old version serving; the log says why.

use crate::app::App;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How often each file is looked at.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How long a file must stay unchanged before it is read. Editors and
/// `cargo build` write in bursts; a file still being written keeps changing.
pub const QUIET: Duration = Duration::from_millis(250);

/// Watch every file-backed component of `app` until `shutdown` resolves.
pub async fn watch(app: Arc<App>, shutdown: impl Future<Output = ()>) {
    let mut files: Vec<Watched> = app
        .files()
        .into_iter()
        .map(|(name, path)| Watched::new(name, path))
        .collect();
    if files.is_empty() {
        tracing::warn!("--watch: no component is loaded from a file, so there is nothing to watch");
        return;
    }
    for file in &files {
        tracing::info!(component = %file.name, "watching {}", file.path.display());
    }
    tokio::pin!(shutdown);
    let mut ticks = tokio::time::interval(POLL_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = &mut shutdown => return,
        }
        for file in &mut files {
            if let Some(wasm) = file.poll() {
                install(&app, &file.name, &file.path, wasm).await;
            }
        }
    }
}

async fn install(app: &App, name: &str, path: &Path, wasm: Vec<u8>) {
    let started = Instant::now();
    match app.replace(name, wasm).await {
        Ok(replaced) if replaced.swapped => tracing::info!(
            component = name,
            version = %replaced.version.sha256,
            "swapped in a new version from {} in {} ms",
            path.display(),
            started.elapsed().as_millis()
        ),
        Ok(_) => tracing::debug!(
            component = name,
            "{} is the live version already",
            path.display()
        ),
        Err(e) => tracing::warn!(
            component = name,
            "rejected the new version in {}; the old version keeps serving: {e}",
            path.display()
        ),
    }
}

/// What identifies one state of a file without reading it. The inode and
/// change time catch a rename-replace by a file of the same size and mtime.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    inode: (u64, i64, i64),
}

impl Stamp {
    fn of(path: &Path) -> Option<Stamp> {
        let meta = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt as _;
        Some(Stamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            #[cfg(unix)]
            inode: (meta.ino(), meta.ctime(), meta.ctime_nsec()),
        })
    }
}

/// One watched file and how far its latest change has settled.
struct Watched {
    name: String,
    path: PathBuf,
    /// The state last read (or found unreadable); nothing to do while the
    /// file stays in it. `None` at start, so the first poll checks the file
    /// against the loaded version and catches a change made during start-up.
    settled: Option<Stamp>,
    /// A newer state and when it was first seen.
    pending: Option<(Stamp, Instant)>,
}

impl Watched {
    fn new(name: String, path: PathBuf) -> Watched {
        Watched {
            name,
            path,
            settled: None,
            pending: None,
        }
    }

    /// The file's contents once a change has been quiet for [`QUIET`].
    fn poll(&mut self) -> Option<Vec<u8>> {
        // Missing: mid rename-replace, or deleted. Wait for it to come back.
        let stamp = Stamp::of(&self.path)?;
        if self.settled.as_ref() == Some(&stamp) {
            self.pending = None;
            return None;
        }
        match &self.pending {
            Some((seen, since)) if *seen == stamp => {
                if since.elapsed() < QUIET {
                    return None;
                }
            }
            _ => {
                self.pending = Some((stamp, Instant::now()));
                return None;
            }
        }
        let read = std::fs::read(&self.path);
        // A write that landed while reading restarts the wait.
        if Stamp::of(&self.path).as_ref() != Some(&stamp) {
            self.pending = None;
            return None;
        }
        self.pending = None;
        self.settled = Some(stamp);
        match read {
            Ok(wasm) => Some(wasm),
            Err(e) => {
                tracing::warn!(component = %self.name, "cannot read {}: {e}", self.path.display());
                None
            }
        }
    }
}
