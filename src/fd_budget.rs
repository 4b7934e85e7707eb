//! The process's descriptor limit and how it is shared out.
//!
//! Owns: raising the soft `RLIMIT_NOFILE` to the hard limit at start (as HAProxy does), and
//! [`udp_flow_budget`]: how many upstream UDP sockets (one per flow) all UDP frontends together
//! may hold, so that flows can never take the descriptors TCP, the admin server and DNS need.
//!
//! Must not: count descriptors at run time (the UDP budget does that for its own sockets).

/// The descriptor limit before and after [`raise_nofile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimits {
    /// The soft limit at start.
    pub was: u64,
    /// The soft limit now (the hard limit if raising worked).
    pub soft: u64,
    pub hard: u64,
}

/// Descriptors kept for everything that is not a UDP flow, a TCP connection or a listener: the
/// admin server's connection cap (64), DNS over TCP's cap (128), and the rest (files, epoll,
/// eventfds, the source's connections, the checker's probes). A test checks that the two caps
/// fit. Listeners are counted as they open (`udp::FlowBudget::set_listeners`).
pub const FIXED_RESERVE: u64 = 512;

fn get() -> Option<libc::rlimit> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the plain struct we pass by valid pointer.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } == 0).then_some(rl)
}

/// The current soft and hard limits (`u64::MAX` for unlimited).
pub fn current() -> NofileLimits {
    let rl = get().unwrap_or(libc::rlimit {
        rlim_cur: 1024,
        rlim_max: 1024,
    });
    NofileLimits {
        was: rl.rlim_cur,
        soft: rl.rlim_cur,
        hard: rl.rlim_max,
    }
}

/// Raises the soft limit to the hard limit (capped at `nr_open`, the kernel's ceiling).
pub fn raise_nofile() -> NofileLimits {
    let Some(mut rl) = get() else {
        return current();
    };
    let was = rl.rlim_cur;
    let mut target = rl.rlim_max;
    if target == libc::RLIM_INFINITY {
        target = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1_048_576);
    }
    if target > rl.rlim_cur {
        let wanted = libc::rlimit {
            rlim_cur: target,
            rlim_max: rl.rlim_max,
        };
        // SAFETY: setrlimit reads the plain struct we pass by valid pointer; raising the soft
        // limit up to the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } == 0 {
            rl = wanted;
        }
    }
    NofileLimits {
        was,
        soft: rl.rlim_cur,
        hard: rl.rlim_max,
    }
}

/// UDP flows all frontends together may hold under a soft limit of `nofile`: half of what is
/// left after [`FIXED_RESERVE`] (the other half stays for TCP, whose connections take two
/// descriptors each). At least 1.
pub fn udp_flow_budget(nofile: u64) -> usize {
    let budget = nofile.saturating_sub(FIXED_RESERVE) / 2;
    usize::try_from(budget).unwrap_or(usize::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_flow_budget_never_exceeds_the_limit() {
        for nofile in [0, 64, 256, 1024, 20_000, 1 << 20] {
            let b = udp_flow_budget(nofile) as u64;
            assert!(b <= nofile.max(1), "{nofile}: {b}");
        }
        assert_eq!(udp_flow_budget(20_000), 9_744);
        assert_eq!(udp_flow_budget(1024), 256);
    }

    #[test]
    fn raising_keeps_soft_at_most_hard() {
        let l = raise_nofile();
        assert!(l.soft <= l.hard && l.soft >= l.was, "{l:?}");
    }
}
