//! Last-known-good Marathon state on disk (`--state-dir`).
//!
//! Owns: the file `DIR/marathon-apps.json` holding the raw apps body of the last good full fetch
//! and `DIR/marathon-pods.json` holding its raw `GET /v2/pods/::status` body (absent when the
//! server has no pods), their atomic replacement (write a temp file in the same directory, fsync
//! it, rename over the old one, fsync the directory; the pods file first, so that the apps file,
//! which marks a complete state, is the last to change), and reading them back at start.
//!
//! Must not: decide when to write (the source does: only after full fetches, rate-limited, and
//! only when the body changed), or treat a bad file as fatal: a corrupt or unreadable file is an
//! error value the caller reports and ignores.

use crate::model::pod::parse_pods_status;
use crate::model::{parse_apps_document, AppsSnapshot, ModelError};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const STATE_FILE: &str = "marathon-apps.json";
/// The pods part of the state.
pub const PODS_FILE: &str = "marathon-pods.json";

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
    let mut snapshot = match parse_apps_document(&body) {
        Ok(s) => s,
        Err(source) => return Err(StateError::Corrupt { path, source }),
    };
    let pods_path = dir.join(PODS_FILE);
    match std::fs::read(&pods_path) {
        Ok(body) => match parse_pods_status(&body) {
            Ok(pods) => {
                snapshot.pods = pods.pods;
                snapshot.rejected_pods = pods.rejected;
            }
            Err(source) => {
                return Err(StateError::Corrupt {
                    path: pods_path,
                    source,
                })
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(StateError::Read {
                path: pods_path,
                source,
            })
        }
    }
    Ok(Some((snapshot, modified)))
}

/// Removes temp files a crashed vipd left behind (`.marathon-apps.json.tmp-<pid>`,
/// `.marathon-pods.json.tmp-<pid>`; never this process's own). Returns how many were removed. A
/// missing directory is not an error.
pub fn remove_stale_temp_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let pid = std::process::id();
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            [STATE_FILE, PODS_FILE].iter().any(|file| {
                let prefix = format!(".{file}.tmp-");
                name.starts_with(&prefix) && *name != format!("{prefix}{pid}")
            })
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

/// Replaces the saved state with `body` (apps) and `pods` (the pods body; `None`: no pods, the
/// pods file is removed), atomically and durably, pods first.
pub fn store_with_pods(dir: &Path, body: &[u8], pods: Option<&[u8]>) -> Result<(), StateError> {
    let pods_path = dir.join(PODS_FILE);
    match pods {
        Some(pods) => store_file(dir, PODS_FILE, pods)?,
        None => match std::fs::remove_file(&pods_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(StateError::Write {
                    path: pods_path,
                    source,
                })
            }
        },
    }
    store_file(dir, STATE_FILE, body)
}

/// Replaces the saved apps with `body` (no pods), atomically and durably.
pub fn store(dir: &Path, body: &[u8]) -> Result<(), StateError> {
    store_with_pods(dir, body, None)
}

fn store_file(dir: &Path, file: &str, body: &[u8]) -> Result<(), StateError> {
    let path = dir.join(file);
    let werr = |source| StateError::Write {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(werr)?;
    let tmp = dir.join(format!(".{file}.tmp-{}", std::process::id()));
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
    fn pods_are_stored_beside_the_apps_and_read_back_and_no_pods_removes_them() {
        let dir = tempfile::tempdir().unwrap();
        store_with_pods(
            dir.path(),
            br#"{"apps":[{"id":"/a"}]}"#,
            Some(br#"[{"id":"/p"},{"id":"/bad","instances":{}}]"#),
        )
        .unwrap();
        let (s, _) = load(dir.path()).unwrap().unwrap();
        assert_eq!(s.apps[0].id, "/a");
        assert_eq!(s.pods[0].id, "/p");
        assert_eq!(s.rejected_pods[0].app.as_deref(), Some("/bad"));
        store_with_pods(dir.path(), br#"{"apps":[]}"#, None).unwrap();
        let (s, _) = load(dir.path()).unwrap().unwrap();
        assert!(s.pods.is_empty());
        assert!(!dir.path().join(PODS_FILE).exists());
        // A corrupt pods file makes the state unusable, like a corrupt apps file.
        std::fs::write(dir.path().join(PODS_FILE), b"{").unwrap();
        assert!(matches!(load(dir.path()), Err(StateError::Corrupt { .. })));
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
