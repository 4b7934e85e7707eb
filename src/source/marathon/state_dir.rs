//! Last-known-good Marathon state on disk (`--state-dir`).
//!
//! Owns: the file `DIR/marathon-apps.json` holding the raw body of the last good full fetch, its
//! atomic replacement (write a temp file in the same directory, fsync it, rename over the old
//! one, fsync the directory), and reading it back at start.
//!
//! Must not: decide when to write (the source does: only after full fetches, rate-limited, and
//! only when the body changed), or treat a bad file as fatal: a corrupt or unreadable file is an
//! error value the caller reports and ignores.

use crate::model::{parse_apps_document, AppsSnapshot, ModelError};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const STATE_FILE: &str = "marathon-apps.json";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a usable apps document: {source}")]
    Corrupt { path: PathBuf, source: ModelError },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub fn state_file(dir: &Path) -> PathBuf {
    dir.join(STATE_FILE)
}

/// Reads the saved snapshot. `Ok(None)` when there is none yet.
pub fn load(dir: &Path) -> Result<Option<(AppsSnapshot, std::time::SystemTime)>, StateError> {
    let path = state_file(dir);
    let body = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateError::Read { path, source }),
    };
    let modified = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or(std::time::UNIX_EPOCH);
    match parse_apps_document(&body) {
        Ok(s) => Ok(Some((s, modified))),
        Err(source) => Err(StateError::Corrupt { path, source }),
    }
}

/// Removes temp files a crashed vipd left behind (`.marathon-apps.json.tmp-<pid>`; never this
/// process's own). Returns how many were removed. A missing directory is not an error.
pub fn remove_stale_temp_files(dir: &Path) -> usize {
    let prefix = format!(".{STATE_FILE}.tmp-");
    let own = format!("{prefix}{}", std::process::id());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with(&prefix) && name != own
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

/// Replaces the saved snapshot with `body`, atomically and durably.
pub fn store(dir: &Path, body: &[u8]) -> Result<(), StateError> {
    let path = state_file(dir);
    let werr = |source| StateError::Write {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(werr)?;
    let tmp = dir.join(format!(".{STATE_FILE}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &path)?;
        // The rename is durable only once the directory entry is.
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(werr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_then_load_round_trips_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        store(dir.path(), br#"{"apps":[{"id":"/a"}]}"#).unwrap();
        store(dir.path(), br#"{"apps":[{"id":"/b"}]}"#).unwrap();
        let (s, _) = load(dir.path()).unwrap().unwrap();
        assert_eq!(s.apps[0].id, "/b");
        // No temp file left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(STATE_FILE)]);
    }

    #[test]
    fn store_creates_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("x/y");
        store(&sub, br#"{"apps":[]}"#).unwrap();
        assert!(load(&sub).unwrap().is_some());
    }

    #[test]
    fn corrupt_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(state_file(dir.path()), b"{\"apps\": [tru").unwrap();
        assert!(matches!(load(dir.path()), Err(StateError::Corrupt { .. })));
        std::fs::write(state_file(dir.path()), b"[]").unwrap();
        assert!(matches!(load(dir.path()), Err(StateError::Corrupt { .. })));
    }

    #[test]
    fn unreadable_state_is_a_read_error() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be cannot be read as a file.
        std::fs::create_dir(state_file(dir.path())).unwrap();
        assert!(matches!(load(dir.path()), Err(StateError::Read { .. })));
    }
}
