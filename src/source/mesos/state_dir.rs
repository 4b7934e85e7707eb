//! Last-known-good Mesos state on disk (`--state-dir`).
//!
//! Owns: the file `DIR/mesos-state.json`, a `GET_STATE` document of the last published tasks
//! with their frameworks and agents (so `vipd table --mesos-state DIR/mesos-state.json` reads
//! it), its atomic replacement (temp file in the same directory, fsync, rename, fsync the
//! directory), and reading it back at start.
//!
//! Must not: decide when to write (the shell writes after publishes, coalesced), or treat a bad
//! file as fatal: a corrupt or unreadable file is an error the caller reports and ignores.

use crate::model::mesos::{
    join_state, parse_get_state, state_document, MesosModelError, MesosTask,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const STATE_FILE: &str = "mesos-state.json";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a usable GET_STATE document: {source}")]
    Corrupt {
        path: PathBuf,
        source: MesosModelError,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub fn state_file(dir: &Path) -> PathBuf {
    dir.join(STATE_FILE)
}

/// Reads the saved tasks and when they were saved. `Ok(None)` when there is no file yet.
pub fn load(dir: &Path) -> Result<Option<(Vec<MesosTask>, std::time::SystemTime)>, StateError> {
    let path = state_file(dir);
    let body = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateError::Read { path, source }),
    };
    let modified = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or(std::time::UNIX_EPOCH);
    match parse_get_state(&body) {
        Ok(state) => Ok(Some((join_state(state).0, modified))),
        Err(source) => Err(StateError::Corrupt { path, source }),
    }
}

/// Replaces the saved state with `tasks`, atomically and durably.
pub fn save(dir: &Path, tasks: &[Arc<MesosTask>]) -> Result<(), StateError> {
    let path = state_file(dir);
    let werr = |source| StateError::Write {
        path: path.clone(),
        source,
    };
    let body = serde_json::to_vec(&state_document(tasks)).map_err(|e| werr(e.into()))?;
    std::fs::create_dir_all(dir).map_err(werr)?;
    let tmp = dir.join(format!(".{STATE_FILE}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &path)?;
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
    fn saved_tasks_load_back_and_a_corrupt_file_is_an_error() {
        let dir = std::env::temp_dir().join(format!("vipd-mesos-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(load(&dir).unwrap().is_none());
        let task = crate::model::mesos::parse_task(
            r#"{"task_id":{"value":"t1"},"framework_id":{"value":"f1"},"agent_id":{"value":"a1"},
            "state":"TASK_RUNNING","discovery":{"visibility":"FRAMEWORK","ports":{"ports":[
              {"number":80,"protocol":"tcp","labels":{"labels":[{"key":"VIP_0","value":"x:80"}]}}]}}}"#,
        )
        .unwrap();
        let t = MesosTask {
            task,
            framework: "hello".into(),
            agent_host: "10.0.0.1".into(),
        };
        save(&dir, &[Arc::new(t.clone())]).unwrap();
        let (tasks, _) = load(&dir).unwrap().unwrap();
        assert_eq!(tasks, [t]);
        std::fs::write(state_file(&dir), b"{").unwrap();
        assert!(matches!(load(&dir), Err(StateError::Corrupt { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
