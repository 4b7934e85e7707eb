//! Where a connect or probe failure came from: vipd itself (local) or the backend and the path
//! to it (remote).
//!
//! Owns: [`LocalFault`] and its classification of an `io::Error` ([`LocalFault::of`]). Local:
//! out of descriptors (EMFILE, ENFILE), kernel buffers or memory (ENOBUFS, ENOMEM), ephemeral
//! ports (EADDRNOTAVAIL), or a local bind failure. Remote: everything else (refused, reset,
//! unreachable, timed out, an ICMP error on UDP).
//!
//! The rule this serves: a local fault never counts toward passive ejection or an active-check
//! verdict. A burst that exhausts vipd's descriptors must not eject healthy backends.
//!
//! Must not: do I/O or decide what to do about a fault (callers retry, close or count).

use std::io;

/// A failure caused by vipd's own resources, not by the backend. Stable label strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LocalFault {
    /// EMFILE: the process is out of file descriptors.
    Emfile,
    /// ENFILE: the system is out of file descriptors.
    Enfile,
    /// ENOBUFS: no kernel buffer space.
    Enobufs,
    /// ENOMEM: no kernel memory.
    Enomem,
    /// EADDRNOTAVAIL: no local address/port to connect from (ephemeral ports exhausted).
    Eaddrnotavail,
    /// A local socket could not be bound for another reason.
    Bind,
}

impl LocalFault {
    /// Every fault, in label order (metrics export one series per fault).
    pub const ALL: [LocalFault; 6] = [
        LocalFault::Emfile,
        LocalFault::Enfile,
        LocalFault::Enobufs,
        LocalFault::Enomem,
        LocalFault::Eaddrnotavail,
        LocalFault::Bind,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LocalFault::Emfile => "emfile",
            LocalFault::Enfile => "enfile",
            LocalFault::Enobufs => "enobufs",
            LocalFault::Enomem => "enomem",
            LocalFault::Eaddrnotavail => "eaddrnotavail",
            LocalFault::Bind => "bind",
        }
    }

    /// Position in [`LocalFault::ALL`].
    pub fn index(self) -> usize {
        match self {
            LocalFault::Emfile => 0,
            LocalFault::Enfile => 1,
            LocalFault::Enobufs => 2,
            LocalFault::Enomem => 3,
            LocalFault::Eaddrnotavail => 4,
            LocalFault::Bind => 5,
        }
    }

    /// The local fault behind `err`, or `None` when it is the backend's (or the path's).
    pub fn of(err: &io::Error) -> Option<LocalFault> {
        match err.raw_os_error()? {
            libc::EMFILE => Some(LocalFault::Emfile),
            libc::ENFILE => Some(LocalFault::Enfile),
            libc::ENOBUFS => Some(LocalFault::Enobufs),
            libc::ENOMEM => Some(LocalFault::Enomem),
            libc::EADDRNOTAVAIL => Some(LocalFault::Eaddrnotavail),
            _ => None,
        }
    }

    /// The fault of a failure to create or bind a local socket: always local.
    pub fn of_local_socket(err: &io::Error) -> LocalFault {
        Self::of(err).unwrap_or(LocalFault::Bind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_errors_are_local_and_backend_errors_are_not() {
        let e = io::Error::from_raw_os_error;
        for (code, fault) in [
            (libc::EMFILE, LocalFault::Emfile),
            (libc::ENFILE, LocalFault::Enfile),
            (libc::ENOBUFS, LocalFault::Enobufs),
            (libc::ENOMEM, LocalFault::Enomem),
            (libc::EADDRNOTAVAIL, LocalFault::Eaddrnotavail),
        ] {
            assert_eq!(LocalFault::of(&e(code)), Some(fault));
            assert_eq!(LocalFault::ALL[fault.index()], fault);
        }
        for remote in [
            libc::ECONNREFUSED,
            libc::ECONNRESET,
            libc::EHOSTUNREACH,
            libc::ENETUNREACH,
            libc::ETIMEDOUT,
        ] {
            assert_eq!(LocalFault::of(&e(remote)), None, "{remote}");
        }
        assert_eq!(LocalFault::of(&io::Error::other("x")), None);
        assert_eq!(
            LocalFault::of_local_socket(&e(libc::EACCES)),
            LocalFault::Bind
        );
        assert_eq!(
            LocalFault::of_local_socket(&e(libc::EMFILE)),
            LocalFault::Emfile
        );
    }
}
