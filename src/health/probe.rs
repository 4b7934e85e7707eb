//! One active probe of one backend address: a TCP connect, or a minimal HTTP/1.1 GET.
//!
//! Owns: [`probe`], [`ProbeError`], and what a probe is ([`ProbeKind`], [`ProbeSpec`]). The HTTP probe writes one hand-built request
//! (`Connection: close`), reads only the status line (at most 1 KiB), and accepts 2xx and 3xx,
//! as Marathon's own HTTP health checks do. The whole probe, connect included, is bounded by the
//! timeout.
//!
//! Must not: keep state between probes, retry, or log (the checker logs state flips).

use super::{HealthReason, LocalFault};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What an active probe does.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbeKind {
    /// A TCP connect that succeeds.
    Tcp,
    /// `GET path` over HTTP/1.1 answering 2xx or 3xx.
    Http { path: String },
}

impl fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeKind::Tcp => f.write_str("tcp"),
            ProbeKind::Http { path } => write!(f, "http:{path}"),
        }
    }
}

/// One frontend's probe: what, how often, how long it may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    pub kind: ProbeKind,
    pub interval: Duration,
    pub timeout: Duration,
}

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("connection refused")]
    Refused,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("http status {0}")]
    Status(u16),
    #[error("malformed http response: {0}")]
    Malformed(String),
    #[error("{0}")]
    Io(#[source] std::io::Error),
    /// vipd's own fault (out of descriptors, ...): says nothing about the backend.
    #[error("local: {1}")]
    Local(LocalFault, #[source] std::io::Error),
}

impl ProbeError {
    pub fn reason(&self) -> HealthReason {
        match self {
            ProbeError::Refused => HealthReason::ProbeRefused,
            ProbeError::Timeout(_) => HealthReason::ProbeTimeout,
            ProbeError::Status(_) => HealthReason::ProbeStatus,
            ProbeError::Malformed(_) | ProbeError::Io(_) | ProbeError::Local(..) => {
                HealthReason::ProbeError
            }
        }
    }

    /// The local fault behind this failure, if it is vipd's own (never a verdict input).
    pub fn local(&self) -> Option<LocalFault> {
        match self {
            ProbeError::Local(fault, _) => Some(*fault),
            _ => None,
        }
    }

    fn io(e: std::io::Error) -> Self {
        if let Some(fault) = LocalFault::of(&e) {
            return ProbeError::Local(fault, e);
        }
        match e.kind() {
            std::io::ErrorKind::ConnectionRefused => ProbeError::Refused,
            _ => ProbeError::Io(e),
        }
    }
}

/// Longest status line read from an HTTP probe.
const MAX_STATUS_LINE: usize = 1024;

/// Probes `addr` once.
pub async fn probe(
    addr: SocketAddr,
    kind: &ProbeKind,
    timeout: Duration,
) -> Result<(), ProbeError> {
    let work = async {
        let mut stream = TcpStream::connect(addr).await.map_err(ProbeError::io)?;
        match kind {
            ProbeKind::Tcp => Ok(()),
            ProbeKind::Http { path } => http_get(&mut stream, addr, path).await,
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(ProbeError::Timeout(timeout)),
    }
}

async fn http_get(stream: &mut TcpStream, addr: SocketAddr, path: &str) -> Result<(), ProbeError> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: vipd-health-check\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(ProbeError::io)?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    let line = loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            break &buf[..end];
        }
        if buf.len() >= MAX_STATUS_LINE {
            return Err(ProbeError::Malformed("status line too long".into()));
        }
        let n = stream.read(&mut chunk).await.map_err(ProbeError::io)?;
        if n == 0 {
            return Err(ProbeError::Malformed(
                "connection closed before the status line".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let status = parse_status_line(line)?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(ProbeError::Status(status))
    }
}

/// `HTTP/1.1 200 OK` → 200.
fn parse_status_line(line: &[u8]) -> Result<u16, ProbeError> {
    let text = std::str::from_utf8(line)
        .map_err(|_| ProbeError::Malformed("status line is not UTF-8".into()))?;
    let mut parts = text.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err(ProbeError::Malformed(format!(
            "bad status line {:?}",
            text.chars().take(80).collect::<String>()
        )));
    }
    code.parse::<u16>()
        .map_err(|_| ProbeError::Malformed(format!("bad status code {code:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse_and_garbage_is_named() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK").unwrap(), 200);
        assert_eq!(parse_status_line(b"HTTP/1.0 302").unwrap(), 302);
        for bad in [
            &b"SSH-2.0-OpenSSH"[..],
            b"HTTP/1.1 2000 OK",
            b"HTTP/1.1 abc",
            b"",
            b"\xff\xfe",
        ] {
            assert!(
                matches!(parse_status_line(bad), Err(ProbeError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_probe_that_fails_for_lack_of_descriptors_is_local() {
        let e = ProbeError::io(std::io::Error::from_raw_os_error(libc::EMFILE));
        assert_eq!(e.local(), Some(LocalFault::Emfile));
        let e = ProbeError::io(std::io::Error::from_raw_os_error(libc::ECONNREFUSED));
        assert!(matches!(e, ProbeError::Refused) && e.local().is_none());
    }

    #[test]
    fn reasons_are_stable() {
        assert_eq!(ProbeError::Refused.reason().as_str(), "probe_refused");
        assert_eq!(ProbeError::Status(500).reason().as_str(), "probe_status");
        assert_eq!(
            ProbeError::Timeout(Duration::from_secs(1))
                .reason()
                .as_str(),
            "probe_timeout"
        );
    }
}
