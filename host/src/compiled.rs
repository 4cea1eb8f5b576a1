//! Compiled components kept on disk, so that a restart does not compile again.
//!
//! Compiling a component takes seconds when it is large (a Python or
//! JavaScript processor carries its interpreter: 12-18 MB, 8-11 s to compile
//! here). [`CompileCache::load`] looks for the artifact of the same
//! component bytes (their SHA-256) compiled by the same wasmtime with the same
//! settings (the engine's compatibility hash, which covers wasmtime's version,
//! the target and the compiler flags); on a miss the caller compiles, checks
//! the component, and [`CompileCache::store`]s it (a temporary file, then a
//! rename, so a reader never sees half of one). Every file starts with the SHA-256 of the artifact after it, checked
//! before wasmtime is handed the bytes: a truncated or damaged file is
//! compiled again, never loaded. The [`KEEP`] most recently used artifacts
//! stay; older ones are removed.
//!
//! The directory must be trusted as much as the module file itself: wasmtime
//! runs an artifact's machine code as it is.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Artifacts kept in a cache directory.
pub const KEEP: usize = 8;

const SUFFIX: &str = ".cwasm";

/// Where a component came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Read from the cache.
    Cached,
    /// Compiled, and written to the cache.
    Compiled,
    /// Compiled; the cache could not be used (the reason).
    CompiledUncached(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Cached => write!(f, "from the compile cache"),
            Origin::Compiled => write!(f, "compiled, now in the compile cache"),
            Origin::CompiledUncached(why) => write!(f, "compiled; not cached: {why}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
}

impl CompileCache {
    pub fn new(dir: PathBuf) -> CompileCache {
        CompileCache { dir }
    }

    /// The file of the artifact of the component whose SHA-256 is `digest`.
    pub fn path(&self, engine: &Engine, digest: &str) -> PathBuf {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        self.dir.join(format!("{digest}-{:016x}{SUFFIX}", h.finish()))
    }

    /// The cached component whose SHA-256 is `digest`, if there is a whole
    /// one this engine accepts (a damaged or incompatible one is reported and
    /// ignored: the caller compiles again and [`CompileCache::store`]s).
    pub fn load(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let path = self.path(engine, digest);
        match std::fs::read(&path) {
            Ok(file) => {
                if let Some(component) = deserialize(engine, &file) {
                    touch(&path);
                    return Some(component);
                }
                tracing::warn!("{}: damaged or incompatible compiled component; compiling again", path.display());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("{}: {e}; compiling again", path.display()),
        }
        None
    }

    /// Keeps a component compiled from bytes of SHA-256 `digest` (call it
    /// once the component is known good: a module the host refuses leaves
    /// nothing behind). Returns why it could not.
    pub fn store(&self, engine: &Engine, digest: &str, component: &Component) -> Result<(), String> {
        let artifact = component.serialize().map_err(|e| format!("serializing: {e}"))?;
        let at = |e: std::io::Error| format!("{}: {e}", self.dir.display());
        std::fs::create_dir_all(&self.dir).map_err(at)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir).map_err(at)?;
        use std::io::Write as _;
        tmp.write_all(&Sha256::digest(&artifact)).map_err(at)?;
        tmp.write_all(&artifact).map_err(at)?;
        tmp.persist(self.path(engine, digest)).map_err(|e| at(e.error))?;
        self.evict();
        Ok(())
    }

    /// Removes all but the [`KEEP`] most recently used artifacts.
    fn evict(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        let mut files: Vec<(SystemTime, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(SUFFIX))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        files.sort_by_key(|f| std::cmp::Reverse(f.0));
        for (_, old) in files.into_iter().skip(KEEP) {
            if let Err(e) = std::fs::remove_file(&old) {
                tracing::warn!("{}: cannot remove an old compiled component: {e}", old.display());
            }
        }
    }
}

/// The artifact in `file` if its checksum holds and this engine accepts it.
fn deserialize(engine: &Engine, file: &[u8]) -> Option<Component> {
    let (sum, artifact) = file.split_at_checked(32)?;
    if Sha256::digest(artifact).as_slice() != sum {
        return None;
    }
    // SAFETY: `Component::deserialize` runs the artifact's code as compiled;
    // it must be the output of `Component::serialize`. This file was written
    // by `CompileCache::store` from `serialize` (with the checksum just
    // checked, so it is whole and unchanged), under a name that carries the
    // engine's compatibility hash; wasmtime itself also rejects an artifact
    // of another version or configuration. The directory is trusted as much
    // as the module file (see the module docs).
    #[allow(unsafe_code)]
    let component = unsafe { Component::deserialize(engine, artifact) };
    component.inspect_err(|e| tracing::debug!("compiled component rejected: {e}")).ok()
}

/// Marks an artifact used (eviction removes the least recently used).
fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest component: its preamble.
    const EMPTY: &[u8] = b"\0asm\x0d\0\x01\0";

    fn engine() -> Engine {
        crate::guest::engine().expect("engine")
    }

    /// What `Module::load` does: the cache, or compile and store.
    fn load(cache: &CompileCache, engine: &Engine, digest: &str) -> Origin {
        if cache.load(engine, digest).is_some() {
            return Origin::Cached;
        }
        let component = Component::from_binary(engine, EMPTY).expect("compile");
        match cache.store(engine, digest, &component) {
            Ok(()) => Origin::Compiled,
            Err(why) => Origin::CompiledUncached(why),
        }
    }

    #[test]
    fn a_second_load_reads_the_cache_and_a_damaged_artifact_is_compiled_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = CompileCache::new(dir.path().join("c"));
        let engine = engine();
        assert_eq!(load(&cache, &engine, "d1"), Origin::Compiled);
        assert_eq!(load(&cache, &engine, "d1"), Origin::Cached);
        // A flipped byte in the artifact: its checksum fails.
        let path = cache.path(&engine, "d1");
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).expect("write");
        assert_eq!(load(&cache, &engine, "d1"), Origin::Compiled);
        assert_eq!(load(&cache, &engine, "d1"), Origin::Cached);
        // Truncated to less than its checksum.
        std::fs::write(&path, b"short").expect("write");
        assert_eq!(load(&cache, &engine, "d1"), Origin::Compiled);
    }

    #[test]
    fn only_the_most_recently_used_artifacts_are_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = CompileCache::new(dir.path().to_path_buf());
        let engine = engine();
        let base = SystemTime::now() - std::time::Duration::from_secs(3600);
        for i in 0..KEEP {
            assert_eq!(load(&cache, &engine, &format!("d{i}")), Origin::Compiled);
            // Distinct, increasing times (a filesystem's clock may be coarse).
            let f = std::fs::File::options().append(true).open(cache.path(&engine, &format!("d{i}"))).expect("open");
            f.set_modified(base + std::time::Duration::from_secs(i as u64)).expect("set_modified");
        }
        // d0 is used again: d1 is now the least recently used.
        assert_eq!(load(&cache, &engine, "d0"), Origin::Cached);
        assert_eq!(load(&cache, &engine, "new"), Origin::Compiled);
        let count = std::fs::read_dir(dir.path()).expect("dir").count();
        assert_eq!(count, KEEP);
        assert!(!cache.path(&engine, "d1").exists());
        assert!(cache.path(&engine, "d0").exists());
        assert!(cache.path(&engine, "new").exists());
    }

    #[test]
    fn an_unwritable_cache_still_compiles() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("file");
        std::fs::write(&file, b"").expect("write");
        // The cache's directory would be under a file.
        let cache = CompileCache::new(file.join("c"));
        match load(&cache, &engine(), "d") {
            Origin::CompiledUncached(why) => assert!(why.contains("file/c"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
