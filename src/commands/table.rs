//! `vipd table --apps FILE|-`: print the table vipd would serve for an apps document (apps and,
//! optionally, `pods` in the shape of `GET /v2/pods/::status`).
//!
//! Owns: reading the document (file or stdin, capped by `--max-document-size`), resolving agent hostnames, calling
//! `table::build`, and writing the JSON (`Built`: frontends + warnings, pretty, trailing newline).
//!
//! Must not: exit the process or print errors (it returns [`TableCommandError`]; `main.rs` prints
//! one line and sets the exit code), or apply routing rules of its own.

use crate::cli::TableArgs;
use crate::control::resolve::{HostResolver, ResolverConfig};
use crate::model::{parse_apps_document, ModelError};
use crate::source::{read_document, read_document_file};
use crate::table::build::hosts_to_resolve;
use crate::table::{build, BuildOptions, Built};
use std::io::{self, Write};
use std::path::Path;

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
    #[error("cannot write the table: {0}")]
    Write(#[source] io::Error),
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

/// Runs `vipd table`, writing the JSON to `out`.
pub async fn run(args: &TableArgs, out: &mut dyn Write) -> Result<(), TableCommandError> {
    let body = read_input(&args.apps, args.documents.max_document_size)?;
    let name = if args.apps.as_os_str() == "-" {
        "stdin".to_string()
    } else {
        args.apps.display().to_string()
    };
    let resolver = HostResolver::new(ResolverConfig::default());
    let built = table_for(&body, &name, &BuildOptions::from(&args.table), &resolver).await?;
    let mut json = serde_json::to_vec_pretty(&built)
        .map_err(|e| TableCommandError::Write(io::Error::other(e)))?;
    json.push(b'\n');
    out.write_all(&json)
        .and_then(|_| out.flush())
        .map_err(TableCommandError::Write)
}
