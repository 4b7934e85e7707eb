//! Process signals of `vipd run`: holding SIGHUP/SIGINT/SIGTERM/SIGUSR2 from the first
//! instruction of `main` until the daemon's handlers exist, and the handlers themselves. (SIGUSR2,
//! the upgrade signal, would otherwise kill a vipd that is just starting: its default action.)
//!
//! Owns: [`block_shutdown_signals`] / [`unblock_shutdown_signals`] (the calling thread's signal
//! mask; threads started in between inherit the blocked mask, so once the main thread unblocks,
//! it is the one that receives them), and [`ShutdownSignals`] (tokio's handlers).
//!
//! Must not: decide what a signal does (the daemon does).

use tokio::signal::unix::{signal, Signal, SignalKind};

const HELD: [libc::c_int; 4] = [libc::SIGHUP, libc::SIGINT, libc::SIGTERM, libc::SIGUSR2];

fn set_mask(how: libc::c_int) {
    // SAFETY: sigemptyset/sigaddset initialise a local sigset_t we own; pthread_sigmask only
    // changes the calling thread's mask and reads the set through a valid pointer.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in HELD {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

/// Holds SIGHUP, SIGINT, SIGTERM and SIGUSR2 pending on this thread (and on threads it starts).
pub fn block_shutdown_signals() {
    set_mask(libc::SIG_BLOCK);
}

/// Lets this thread receive them again (pending ones are delivered now).
pub fn unblock_shutdown_signals() {
    set_mask(libc::SIG_UNBLOCK);
}

/// The daemon's signal streams. Installing them replaces the default actions (SIGHUP and SIGUSR2
/// no longer terminate the process).
#[derive(Debug)]
pub struct ShutdownSignals {
    pub term: Signal,
    pub int: Signal,
    pub hup: Signal,
    pub usr2: Signal,
}

impl ShutdownSignals {
    /// Must be called inside a tokio runtime.
    pub fn install() -> std::io::Result<ShutdownSignals> {
        Ok(ShutdownSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }
}
