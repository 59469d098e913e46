//! `berth dev`: rebuild a project whenever its sources change, while
//! `berth serve --watch` swaps each new build in. This module owns the
//! first half: finding the build command, looking at the sources, and
//! running the build off the async runtime with its output kept for the
//! log. The swap itself is [`crate::watch`]'s, so a build that produces a
//! bad component is rejected there and the old version keeps serving.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// How often the sources are looked at.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Most files looked at in one scan; a project past it is scanned no
/// further (and says so once), so a huge tree cannot stall the loop.
pub const MAX_FILES: usize = 20_000;

/// Deepest directory looked into under the project.
const MAX_DEPTH: usize = 32;

/// Most bytes of a build's output kept for the log: its tail, where the
/// compiler's verdict is.
const MAX_OUTPUT: usize = 32 * 1024;

/// Directories never looked into, wherever they are: build outputs and
/// tool caches, which change on every build and would rebuild forever.
const SKIPPED_DIRS: &[&str] = &["target", "node_modules", "__pycache__"];

/// How a project is built.
#[derive(Debug, Clone)]
pub struct Build {
    /// A shell command line, run by `sh -c` in `dir`.
    pub command: String,
    pub dir: PathBuf,
    /// A build running longer is killed and counts as failed.
    pub timeout: Duration,
}

/// A build that did not succeed.
#[derive(Debug)]
pub struct BuildFailed {
    /// Why: the exit status, a timeout or a failure to start.
    pub reason: String,
    /// The tail of what it printed (stdout and stderr together).
    pub output: String,
}

impl Build {
    /// The build of the project in `dir`: `command` when given, otherwise
    /// `cargo build --release` for a Cargo project and `./build.sh` for one
    /// with a build script.
    pub fn detect(dir: &Path, command: Option<String>, timeout: Duration) -> anyhow::Result<Build> {
        let command = match command {
            Some(command) if command.trim().is_empty() => {
                anyhow::bail!("--build is empty: give the command that builds the project")
            }
            Some(command) => command,
            None if dir.join("Cargo.toml").is_file() => "cargo build --release".to_string(),
            None if dir.join("build.sh").is_file() => "./build.sh".to_string(),
            None => anyhow::bail!(
                "{} has no Cargo.toml and no build.sh: pass --build COMMAND to say how it is built",
                dir.display()
            ),
        };
        Ok(Build {
            command,
            dir: dir.to_path_buf(),
            timeout,
        })
    }

    /// Run the build to its end (or its timeout, or until `stop` is set),
    /// returning how long it took. Blocking: call it off the async runtime.
    pub fn run(&self, stop: &AtomicBool) -> Result<Duration, BuildFailed> {
        let started = Instant::now();
        let failed = |reason: String, output: String| BuildFailed { reason, output };
        // One pipe for both streams, so the output reads in the order it
        // was written, as it would in a terminal.
        let (reader, writer) = std::io::pipe().map_err(|e| {
            failed(
                format!("cannot make a pipe for its output: {e}"),
                String::new(),
            )
        })?;
        let writer_err = writer.try_clone().map_err(|e| {
            failed(
                format!("cannot make a pipe for its output: {e}"),
                String::new(),
            )
        })?;
        let mut command = Command::new("sh");
        command.arg("-c").arg(&self.command).current_dir(&self.dir);
        // Its own process group, so a kill reaches what it started too
        // (cargo's rustc, a script's compiler).
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(writer_err)
            .spawn()
            .map_err(|e| {
                failed(
                    format!("cannot start `sh -c {}`: {e}", self.command),
                    String::new(),
                )
            })?;
        // The command holds our copies of the pipe's write end: drop them, or
        // the reader never sees the end of the output.
        drop(command);
        // Read on a thread, or a build printing more than a pipe holds
        // would block forever waiting for us.
        let collector = std::thread::spawn(move || tail(reader, MAX_OUTPUT));
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) => {}
                Err(e) => break Err(format!("cannot wait for it: {e}")),
            }
            if stop.load(Ordering::Relaxed) {
                kill_group(&mut child);
                break Err("stopped: berth is shutting down".to_string());
            }
            if started.elapsed() > self.timeout {
                kill_group(&mut child);
                break Err(format!(
                    "it ran past {:.1} s and was killed",
                    self.timeout.as_secs_f64()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The pipe ends when every holder has exited; a grandchild left
        // running in the background would hold it open, so do not wait on
        // the reader past the build itself by much.
        let output = join_for(collector, Duration::from_secs(2));
        match status {
            Ok(status) if status.success() => Ok(started.elapsed()),
            Ok(status) => Err(failed(status.to_string(), output)),
            Err(reason) => Err(failed(reason, output)),
        }
    }
}

/// Kill the build and everything in its process group, then reap it.
fn kill_group(child: &mut std::process::Child) {
    #[cfg(unix)]
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// The last `max` bytes `reader` yields before its end, as text.
fn tail(mut reader: impl std::io::Read, max: usize) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut dropped = false;
    loop {
        match reader.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&chunk[..n]);
                if kept.len() > max {
                    kept.drain(..kept.len() - max);
                    dropped = true;
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&kept).into_owned();
    if dropped {
        format!("[… earlier output cut …]\n{text}")
    } else {
        text
    }
}

/// The thread's result if it ends within `limit`; otherwise what is known.
fn join_for(thread: std::thread::JoinHandle<String>, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    while !thread.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if thread.is_finished() {
        thread.join().unwrap_or_default()
    } else {
        "[its output is still open: a process it started in the background holds it]".to_string()
    }
}

/// What the sources looked like at one moment: each file's size and time.
pub type Snapshot = BTreeMap<PathBuf, (u64, Option<SystemTime>)>;

/// The files of a project that are its sources: everything under `root`
/// but hidden entries (`.git`, `.cargo`), [`SKIPPED_DIRS`] and the paths
/// in `ignored` (the data directory, the compile cache, the build's output
/// directories). Symbolic links are not followed.
#[derive(Debug, Clone)]
pub struct Sources {
    root: PathBuf,
    ignored: Vec<PathBuf>,
}

impl Sources {
    pub fn new(root: &Path, ignored: impl IntoIterator<Item = PathBuf>) -> Sources {
        let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
        Sources {
            root: absolute(root.to_path_buf()),
            ignored: ignored.into_iter().map(absolute).collect(),
        }
    }

    /// Look at every source file. `true` in the result's second place when
    /// the scan stopped at [`MAX_FILES`].
    pub fn scan(&self) -> (Snapshot, bool) {
        let mut seen = Snapshot::new();
        let mut truncated = false;
        let mut pending = vec![(self.root.clone(), 0usize)];
        while let Some((dir, depth)) = pending.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') || self.ignored.contains(&path) {
                    continue;
                }
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_dir() {
                    if depth < MAX_DEPTH && !SKIPPED_DIRS.contains(&name.as_ref()) {
                        pending.push((path, depth + 1));
                    }
                } else if kind.is_file() {
                    if seen.len() >= MAX_FILES {
                        truncated = true;
                        return (seen, truncated);
                    }
                    if let Ok(meta) = entry.metadata() {
                        seen.insert(path, (meta.len(), meta.modified().ok()));
                    }
                }
            }
        }
        (seen, truncated)
    }
}

/// The files that differ between two snapshots, for the log: at most a few.
fn changed(before: &Snapshot, after: &Snapshot, root: &Path) -> String {
    let mut names: Vec<String> = after
        .iter()
        .filter(|(path, stamp)| before.get(*path) != Some(stamp))
        .map(|(path, _)| path.clone())
        .chain(before.keys().filter(|p| !after.contains_key(*p)).cloned())
        .map(|path| {
            path.strip_prefix(root)
                .unwrap_or(&path)
                .display()
                .to_string()
        })
        .collect();
    names.sort();
    names.dedup();
    let more = names.len().saturating_sub(3);
    names.truncate(3);
    let mut text = names.join(", ");
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}

/// Rebuild on every settled change of `sources` until `shutdown` resolves.
/// A change settles once a scan finds the same files as the one before, so
/// an editor's burst of writes makes one build. A change made while a
/// build runs makes another after it. Each build's result is logged; a
/// successful one writes new wasm, which `--watch` swaps in.
pub async fn rebuild_on_change(
    build: Build,
    sources: Sources,
    mut built: Snapshot,
    shutdown: impl Future<Output = ()>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    tokio::pin!(shutdown);
    let mut ticks = tokio::time::interval(POLL_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut previous: Option<Snapshot> = None;
    let mut warned_truncated = false;
    tracing::info!(
        "dev: watching {} for changes; building with `{}`",
        sources.root.display(),
        build.command
    );
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = &mut shutdown => return,
        }
        let scanning = sources.clone();
        let (now, truncated) = match tokio::task::spawn_blocking(move || scanning.scan()).await {
            Ok(scanned) => scanned,
            Err(e) => {
                tracing::error!("dev: watching stopped: scanning the sources panicked: {e}");
                return;
            }
        };
        if truncated && !warned_truncated {
            warned_truncated = true;
            tracing::warn!(
                "dev: {} holds more than {MAX_FILES} files; only the first {MAX_FILES} are watched",
                sources.root.display()
            );
        }
        if now == built {
            previous = None;
            continue;
        }
        // Changed since the last build: wait until a scan repeats.
        if previous.as_ref() != Some(&now) {
            previous = Some(now);
            continue;
        }
        let what = changed(&built, &now, &sources.root);
        built = now;
        previous = None;
        tracing::info!("dev: {what} changed; building");
        let running = build.clone();
        let stopping = stop.clone();
        let mut job = tokio::task::spawn_blocking(move || running.run(&stopping));
        let outcome = tokio::select! {
            outcome = &mut job => outcome,
            () = &mut shutdown => {
                stop.store(true, Ordering::Relaxed);
                let _ = job.await;
                return;
            }
        };
        match outcome {
            Ok(Ok(took)) => tracing::info!(
                "dev: built in {:.1} s; the new version is swapped in once it loads",
                took.as_secs_f64()
            ),
            Ok(Err(failed)) => tracing::warn!(
                "dev: the build failed ({}); the running version keeps serving. Its output:\n{}",
                failed.reason,
                failed.output.trim_end()
            ),
            Err(e) => tracing::error!("dev: the build task panicked: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::create_dir_all(dir.path().join("target/release")).unwrap();
        std::fs::create_dir_all(dir.path().join(".git")).unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        std::fs::write(dir.path().join("src/lib.rs"), "fn main() {}").unwrap();
        std::fs::write(dir.path().join("target/release/out.wasm"), "x").unwrap();
        std::fs::write(dir.path().join(".git/HEAD"), "x").unwrap();
        std::fs::write(dir.path().join("data/berth.db"), "x").unwrap();
        dir
    }

    #[test]
    fn sources_leave_out_outputs_hidden_entries_and_ignored_paths() {
        let dir = project();
        let sources = Sources::new(dir.path(), [dir.path().join("data")]);
        let (seen, truncated) = sources.scan();
        let names: Vec<_> = seen
            .keys()
            .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["src/lib.rs"]);
        assert!(!truncated);
    }

    #[test]
    fn an_edit_shows_in_the_next_scan_and_is_named() {
        let dir = project();
        let sources = Sources::new(dir.path(), []);
        let (before, _) = sources.scan();
        std::fs::write(dir.path().join("src/lib.rs"), "fn main() { changed() }").unwrap();
        std::fs::write(dir.path().join("src/new.rs"), "").unwrap();
        let (after, _) = sources.scan();
        assert_ne!(before, after);
        assert_eq!(
            changed(&before, &after, &sources.root),
            "src/lib.rs, src/new.rs"
        );
    }

    #[test]
    fn the_build_is_found_or_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let minute = Duration::from_secs(60);
        let err = Build::detect(dir.path(), None, minute).unwrap_err();
        assert!(err.to_string().contains("pass --build COMMAND"), "{err}");
        std::fs::write(dir.path().join("build.sh"), "").unwrap();
        assert_eq!(
            Build::detect(dir.path(), None, minute).unwrap().command,
            "./build.sh"
        );
        std::fs::write(dir.path().join("Cargo.toml"), "").unwrap();
        let cargo = Build::detect(dir.path(), None, minute).unwrap();
        assert_eq!(cargo.command, "cargo build --release");
        let given = Build::detect(dir.path(), Some("make".into()), minute).unwrap();
        assert_eq!(given.command, "make");
        assert!(Build::detect(dir.path(), Some(" ".into()), minute).is_err());
    }

    #[test]
    fn a_failed_build_reports_its_status_and_output() {
        let dir = tempfile::tempdir().unwrap();
        let stop = AtomicBool::new(false);
        let build = Build {
            command: "echo compiling; echo 'error: expected `;`' >&2; exit 3".into(),
            dir: dir.path().to_path_buf(),
            timeout: Duration::from_secs(60),
        };
        let failed = build.run(&stop).unwrap_err();
        assert!(
            failed.reason.contains("exit status: 3"),
            "{}",
            failed.reason
        );
        assert_eq!(failed.output, "compiling\nerror: expected `;`\n");
        let ok = Build {
            command: "touch built".into(),
            ..build
        };
        ok.run(&stop).unwrap();
        assert!(dir.path().join("built").exists());
    }

    #[test]
    fn a_build_past_its_timeout_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let build = Build {
            command: "sleep 30".into(),
            dir: dir.path().to_path_buf(),
            timeout: Duration::from_millis(200),
        };
        let started = Instant::now();
        let failed = build.run(&AtomicBool::new(false)).unwrap_err();
        assert!(failed.reason.contains("was killed"), "{}", failed.reason);
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn only_the_tail_of_a_long_output_is_kept() {
        let text = "x".repeat(100) + "the end";
        let kept = tail(text.as_bytes(), 10);
        assert_eq!(kept, "[… earlier output cut …]\nxxxthe end");
    }
}
