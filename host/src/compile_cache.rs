//! Compiled components cached on disk, so a restart skips Cranelift. An
//! entry is keyed by the SHA-256 of the wasm and by the engine's
//! compatibility hash (wasmtime version, target, settings), so a changed
//! component or a new Berth build never picks up stale code: it just misses.
//!
//! Loading an entry maps native code into the process, so the file is
//! checked first: it starts with the SHA-256 of the rest, and any mismatch
//! (a torn write, a flipped bit) counts as a miss. The rest opens with the
//! entry's own key, so a whole entry copied or swapped under another name
//! (its checksum intact) is refused too, instead of running one
//! component's code in another's place. The cache lives in the data
//! directory, which only Berth should be able to write.

use sha2::{Digest as _, Sha256};
use std::collections::HashSet;
use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};
use wasmtime::Engine;
use wasmtime::component::Component;

/// How long an entry no process has used since it was written stays on
/// disk: a week.
const UNUSED_ENTRY_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long a partial write (a compile that died mid-save, or one another
/// process is saving now) stays on disk.
const PARTIAL_GRACE: Duration = Duration::from_secs(3600);

/// A folder of `<wasm sha256>-<engine hash>.cwasm` files, each holding the
/// SHA-256 of the rest, the key and a newline, then the compiled code.
pub struct CompileCache {
    dir: PathBuf,
    engine_key: String,
    /// Entries this process loaded or wrote; [`CompileCache::prune`] keeps only these.
    used: Mutex<HashSet<PathBuf>>,
}

impl CompileCache {
    pub fn new(dir: &Path, engine: &Engine) -> CompileCache {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        CompileCache {
            dir: dir.to_path_buf(),
            engine_key: format!("{:016x}", hasher.finish()),
            used: Mutex::new(HashSet::new()),
        }
    }

    /// The entry's key: the wasm's hash and the engine's. It names the
    /// file and heads its contents.
    fn key(&self, wasm_sha256: &str) -> String {
        format!("{wasm_sha256}-{}", self.engine_key)
    }

    fn path_for(&self, wasm_sha256: &str) -> PathBuf {
        self.dir.join(format!("{}.cwasm", self.key(wasm_sha256)))
    }

    /// The cached compilation of the wasm whose hash is `wasm_sha256`.
    pub fn load(&self, engine: &Engine, wasm_sha256: &str) -> Option<Component> {
        let path = self.path_for(wasm_sha256);
        let bytes = std::fs::read(&path).ok()?;
        let (checksum, keyed) = bytes.split_at_checked(32)?;
        if Sha256::digest(keyed).as_slice() != checksum {
            tracing::warn!(path = %path.display(), "ignoring a damaged compile-cache entry");
            return None;
        }
        let header = format!("{}\n", self.key(wasm_sha256));
        let Some(code) = keyed.strip_prefix(header.as_bytes()) else {
            tracing::warn!(
                path = %path.display(),
                "ignoring a compile-cache entry made for another wasm or engine (a copied or swapped file); compiling again"
            );
            return None;
        };
        // SAFETY: `code` is what `Component::serialize` wrote for this wasm
        // and an engine with this compatibility hash (the entry's header
        // says so), and the checksum shows it is unchanged since.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine, code) }.ok()?;
        self.used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path);
        Some(component)
    }

    /// Save `component`, compiled from the wasm whose hash is `wasm_sha256`.
    /// A failure only costs the next start a compile, so it is logged, not returned.
    pub fn store(&self, wasm_sha256: &str, component: &Component) {
        let path = self.path_for(wasm_sha256);
        let saved = (|| -> anyhow::Result<()> {
            let code = component
                .serialize()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            std::fs::create_dir_all(&self.dir)?;
            let mut keyed = format!("{}\n", self.key(wasm_sha256)).into_bytes();
            keyed.extend_from_slice(&code);
            let mut bytes = Sha256::digest(&keyed).to_vec();
            bytes.extend_from_slice(&keyed);
            // Write aside, then rename: a reader never sees half a file.
            let partial = path.with_extension("partial");
            std::fs::write(&partial, &bytes)?;
            std::fs::rename(&partial, &path)?;
            Ok(())
        })();
        match saved {
            Ok(()) => {
                self.used
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(path);
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "could not save a compiled component")
            }
        }
    }

    /// Delete what this process has not used and nobody has written for a
    /// while: entries older than [`UNUSED_ENTRY_GRACE`] (versions no longer
    /// deployed, builds of older engines), and partial writes older than
    /// [`PARTIAL_GRACE`]. The grace lets several manifests share one cache
    /// directory (`berth compile` for each, then serving either) without
    /// one's start deleting what the other just compiled.
    pub fn prune(&self) {
        self.prune_older_than(UNUSED_ENTRY_GRACE, PARTIAL_GRACE);
    }

    fn prune_older_than(&self, entry_grace: Duration, partial_grace: Duration) {
        let used = self.used.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let path = entry.path();
            let grace = match path.extension().and_then(|e| e.to_str()) {
                Some("cwasm") => entry_grace,
                Some("partial") => partial_grace,
                _ => continue,
            };
            let age = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|written| now.duration_since(written).ok())
                .unwrap_or_default();
            if age > grace && !used.contains(&path) {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry written a moment ago by another manifest's compile stays;
    /// one nobody used for longer than the grace goes, and so does an old
    /// partial write; an entry this process used stays however old.
    #[test]
    fn prune_keeps_recent_and_used_entries() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::new(dir.path(), &Engine::default());
        let file = |name: &str, age: Duration| {
            let path = dir.path().join(name);
            std::fs::write(&path, b"x").unwrap();
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(SystemTime::now() - age).unwrap();
            path
        };
        let hour = Duration::from_secs(3600);
        let fresh = file("fresh.cwasm", hour);
        let old = file("old.cwasm", 200 * hour);
        let used = file("used.cwasm", 200 * hour);
        let old_partial = file("old.partial", 2 * hour);
        let new_partial = file("new.partial", Duration::from_secs(60));
        let other = file("notes.txt", 200 * hour);
        cache.used.lock().unwrap().insert(used.clone());
        cache.prune();
        for (path, kept) in [
            (fresh, true),
            (old, false),
            (used, true),
            (old_partial, false),
            (new_partial, true),
            (other, true),
        ] {
            assert_eq!(path.exists(), kept, "{}", path.display());
        }
    }
}
