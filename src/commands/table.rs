//! `vipd table --apps FILE|-`: print the table vipd would serve for an apps document (apps and,
//! optionally, `pods` in the shape of `GET /v2/pods/::status`); `--mesos-state FILE|-` for a
//! Mesos `GET_STATE` answer, alone or with `--apps` (service ports from the apps, VIPs from
//! Mesos alone).
//!
//! Owns: reading the document (file or stdin, capped by `--max-document-size`), resolving agent hostnames, calling
//! `table::build`, and writing the JSON (`Built`: frontends + warnings, pretty, trailing newline).
//!
//! Must not: exit the process or print errors (it returns [`TableCommandError`]; `main.rs` prints
//! one line and sets the exit code), or apply routing rules of its own.

use crate::cli::TableArgs;
use crate::control::resolve::{HostResolver, ResolverConfig};
use crate::model::mesos::{join_state, parse_get_state};
use crate::model::{parse_apps_document, AppRejection, AppsSnapshot, ModelError};
use crate::source::{read_document, read_document_file};
use crate::table::build::hosts_to_resolve;
use crate::table::{build, BuildOptions, Built};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

/// Why no table was printed.
#[derive(Debug, thiserror::Error)]
pub enum TableCommandError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {source}")]
    Document {
        path: String,
        #[source]
        source: ModelError,
    },
    #[error("{path}: {source}")]
    MesosState {
        path: String,
        #[source]
        source: crate::model::mesos::MesosModelError,
    },
    #[error("cannot write the table: {0}")]
    Write(#[source] io::Error),
    #[error(transparent)]
    VipPools(#[from] crate::cli::VipPoolsError),
}

/// Reads `path` (`-` = stdin), at most `max` bytes (`--max-document-size`).
fn read_input(path: &Path, max: usize) -> Result<Vec<u8>, TableCommandError> {
    let shown = path.display().to_string();
    let res = if path.as_os_str() == "-" {
        read_document(io::stdin().lock(), max)
    } else {
        read_document_file(path, max)
    };
    res.map_err(|source| TableCommandError::Read {
        path: if shown == "-" { "stdin".into() } else { shown },
        source,
    })
}

/// Parses, resolves and builds; the pure part of the command, reusable by tests.
pub async fn table_for(
    body: &[u8],
    source_name: &str,
    opts: &BuildOptions,
    resolver: &HostResolver,
) -> Result<Built, TableCommandError> {
    let snapshot = parse_apps_document(body).map_err(|source| TableCommandError::Document {
        path: source_name.to_string(),
        source,
    })?;
    let resolved = resolver.resolve_all(hosts_to_resolve(&snapshot)).await;
    Ok(build(&snapshot, &resolved, opts))
}

/// Adds the tasks of a Mesos `GET_STATE` body to `snapshot`; the tasks left out become
/// warnings naming the task.
pub fn add_mesos_state(
    snapshot: &mut AppsSnapshot,
    body: &[u8],
    source_name: &str,
) -> Result<(), TableCommandError> {
    let state = parse_get_state(body).map_err(|source| TableCommandError::MesosState {
        path: source_name.to_string(),
        source,
    })?;
    let (tasks, rejected) = join_state(state);
    snapshot.tasks = tasks.into_iter().map(Arc::new).collect();
    snapshot.rejected_tasks = rejected
        .into_iter()
        .map(|r| AppRejection {
            app: r.task,
            message: format!("Mesos task: {}", r.message),
        })
        .collect();
    Ok(())
}

/// [`table_for`] with an optional apps document and an optional Mesos state; with both,
/// Marathon's VIP labels are not read.
pub async fn table_for_sources(
    apps: Option<(&[u8], &str)>,
    mesos_state: Option<(&[u8], &str)>,
    opts: &BuildOptions,
    resolver: &HostResolver,
) -> Result<Built, TableCommandError> {
    let mut snapshot = match apps {
        Some((body, name)) => {
            parse_apps_document(body).map_err(|source| TableCommandError::Document {
                path: name.to_string(),
                source,
            })?
        }
        None => AppsSnapshot::default(),
    };
    let mut opts = opts.clone();
    if let Some((body, name)) = mesos_state {
        add_mesos_state(&mut snapshot, body, name)?;
        opts.marathon_vips = apps.is_none();
    }
    let resolved = resolver.resolve_all(hosts_to_resolve(&snapshot)).await;
    Ok(build(&snapshot, &resolved, &opts))
}

fn shown(path: &Path) -> String {
    if path.as_os_str() == "-" {
        "stdin".to_string()
    } else {
        path.display().to_string()
    }
}

/// Runs `vipd table`, writing the JSON to `out`.
pub async fn run(args: &TableArgs, out: &mut dyn Write) -> Result<(), TableCommandError> {
    args.table.check_pools()?;
    let max = args.documents.max_document_size;
    let apps = args
        .apps
        .as_deref()
        .map(|p| read_input(p, max).map(|b| (b, shown(p))))
        .transpose()?;
    let mesos = args
        .mesos_state
        .as_deref()
        .map(|p| read_input(p, max).map(|b| (b, shown(p))))
        .transpose()?;
    let resolver = HostResolver::new(ResolverConfig::default());
    let built = table_for_sources(
        apps.as_ref().map(|(b, n)| (&b[..], n.as_str())),
        mesos.as_ref().map(|(b, n)| (&b[..], n.as_str())),
        &BuildOptions::from(&args.table),
        &resolver,
    )
    .await?;
    let mut json = serde_json::to_vec_pretty(&built)
        .map_err(|e| TableCommandError::Write(io::Error::other(e)))?;
    json.push(b'\n');
    out.write_all(&json)
        .and_then(|_| out.flush())
        .map_err(TableCommandError::Write)
}
