//! `berth serve --watch`: poll each component's wasm file and, once a
//! change has settled, swap the new version in through [`App::replace`];
//! poll the manifest too, and reload it when it changes (`reload.rs`).
//! A file that is rejected leaves the old version serving; the log says why,
//! once per change. Only regular files up to the admin upload's size cap
//! are read, and every look at the filesystem happens off the async runtime.

use crate::app::App;
use std::future::Future;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How often each file is looked at.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How long a file must stay unchanged before it is read. Editors and
/// `cargo build` write in bursts; a file still being written keeps changing.
pub const QUIET: Duration = Duration::from_millis(250);

/// Watch every file-backed component of `app`, and the `manifest` file if
/// it was given, until `shutdown` resolves, reading no file larger than
/// `max_bytes`. The files watched follow the manifest as it is reloaded.
pub async fn watch(
    app: Arc<App>,
    max_bytes: usize,
    manifest: Option<PathBuf>,
    shutdown: impl Future<Output = ()>,
) {
    let mut files: Vec<Watched> = Vec::new();
    follow_manifest(&app, &mut files);
    // Settled as it is now: the manifest was read just before serving.
    let mut manifest = manifest.map(|path| {
        tracing::info!("watching the manifest {}", path.display());
        let mut watched = Watched::new("manifest".to_string(), path);
        watched.settled = Stamp::of(&watched.path);
        watched
    });
    if files.is_empty() && manifest.is_none() {
        tracing::warn!("--watch: no component is loaded from a file, so there is nothing to watch");
        return;
    }
    tokio::pin!(shutdown);
    let mut ticks = tokio::time::interval(POLL_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = &mut shutdown => return,
        }
        follow_manifest(&app, &mut files);
        // On a blocking thread: a stat or read that stalls (a hung network
        // mount, say) must not stall the workers that serve requests.
        let polled = tokio::task::spawn_blocking(move || {
            let changes: Vec<_> = files.iter_mut().map(|f| f.poll(max_bytes)).collect();
            let edited = manifest.as_mut().and_then(|m| m.poll(max_bytes)).is_some();
            (files, manifest, changes, edited)
        });
        let (changes, edited);
        (files, manifest, changes, edited) = tokio::select! {
            polled = polled => match polled {
                Ok(polled) => polled,
                Err(e) => {
                    tracing::error!("--watch stopped: polling the files panicked: {e}");
                    return;
                }
            },
            () = &mut shutdown => return,
        };
        if let (true, Some(manifest)) = (edited, &manifest) {
            crate::reload::reload_from(&app, &manifest.path, "--watch").await;
        }
        for (file, wasm) in files.iter().zip(changes) {
            if let Some(wasm) = wasm {
                install(&app, &file.name, &file.path, wasm).await;
            }
        }
    }
}

/// Make `files` the file-backed components of the live manifest, keeping
/// the state of those that stay.
fn follow_manifest(app: &App, files: &mut Vec<Watched>) {
    let wanted = app.files();
    files.retain(|f| {
        wanted
            .iter()
            .any(|(name, path)| *name == f.name && *path == f.path)
    });
    for (name, path) in wanted {
        if !files.iter().any(|f| f.name == name && f.path == path) {
            tracing::info!(component = %name, "watching {}", path.display());
            files.push(Watched::new(name, path));
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
    fn poll(&mut self, max_bytes: usize) -> Option<Vec<u8>> {
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
        let read = read_regular(&self.path, max_bytes);
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
                tracing::warn!(
                    component = %self.name,
                    "not loading {}; the old version keeps serving: {e}",
                    self.path.display()
                );
                None
            }
        }
    }
}

/// The contents of `path` if it is a regular file of at most `max_bytes`.
/// A FIFO would block the read until a writer comes (forever, maybe), and a
/// device such as `/dev/zero` never ends: both are refused, and so is a
/// file past the cap, before any of it is read.
fn read_regular(path: &Path, max_bytes: usize) -> Result<Vec<u8>, String> {
    let not_regular = || {
        "it is not a regular file (a FIFO, device or directory); point the manifest at a wasm file"
            .to_string()
    };
    let too_large = |len: u64| {
        format!(
            "it is {len} bytes; the limit is {max_bytes} (raise it with --admin-max-wasm-bytes)"
        )
    };
    let max = u64::try_from(max_bytes).unwrap_or(u64::MAX);
    // Checked before opening, so a device is never opened at all...
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read it: {e}"))?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    // ...and again on what was opened, in case the path changed in between.
    // Non-blocking, so a FIFO swapped in meanwhile cannot block the open.
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = options
        .open(path)
        .map_err(|e| format!("cannot open it: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read it: {e}"))?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    if meta.len() > max {
        return Err(too_large(meta.len()));
    }
    // A file still growing is read no further than one byte past the cap.
    let mut wasm = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(max.saturating_add(1))
        .read_to_end(&mut wasm)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if wasm.len() > max_bytes {
        return Err(too_large(wasm.len() as u64));
    }
    Ok(wasm)
}
