//! `vipd table --apps FILE|-`: print the table vipd would serve for an apps document.
//!
//! Owns: reading the document (file or stdin), resolving agent hostnames, calling
//! `table::build`, and writing the JSON (`Built`: frontends + warnings, pretty, trailing newline).
//!
//! Must not: exit the process or print errors (it returns [`TableCommandError`]; `main.rs` prints
//! one line and sets the exit code), or apply routing rules of its own.

use crate::cli::{TableArgs, TableOptionArgs};
use crate::control::resolve::{HostResolver, ResolverConfig};
use crate::model::{parse_apps_document, ModelError};
use crate::table::build::hosts_to_resolve;
use crate::table::vip::IpVipScope;
use crate::table::{build, BuildOptions, Built};
use std::io::{self, Read, Write};
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

impl From<&TableOptionArgs> for BuildOptions {
    fn from(a: &TableOptionArgs) -> Self {
        BuildOptions {
            bind_address: a.bind_address,
            vip_cidr: a.vip_cidr,
            zone: a.zone.clone(),
            ip_vip_scope: if a.ip_vip_cidr.is_empty() {
                IpVipScope::AnyUnicast
            } else {
                IpVipScope::Within(
                    std::iter::once(a.vip_cidr)
                        .chain(a.ip_vip_cidr.iter().copied())
                        .collect(),
                )
            },
        }
    }
}

/// Reads `path` (`-` = stdin).
fn read_input(path: &Path) -> Result<Vec<u8>, TableCommandError> {
    let shown = path.display().to_string();
    let mut buf = Vec::new();
    let res = if path.as_os_str() == "-" {
        io::stdin().lock().read_to_end(&mut buf).map(|_| ())
    } else {
        std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut buf).map(|_| ()))
    };
    res.map_err(|source| TableCommandError::Read {
        path: if shown == "-" { "stdin".into() } else { shown },
        source,
    })?;
    Ok(buf)
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
    let body = read_input(&args.apps)?;
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
