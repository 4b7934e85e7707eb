//! splice(2) plumbing of the relay (Linux, cargo feature `splice`): pipes and their pool.
//!
//! Owns: [`Pipe`] (a nonblocking, close-on-exec pipe sized with `F_SETPIPE_SZ`, which knows how
//! many bytes it holds), the per-thread pool of empty pipes, the per-thread [`PipeStats`], and the
//! only `unsafe` code of the relay: the `pipe2`, `fcntl` and `splice` wrappers at the bottom.
//!
//! A pipe is borrowed for one chunk, exactly like a copy buffer: the pump takes one when its
//! reader is readable, splices socket → pipe once, splices pipe → socket until the pipe is empty,
//! and gives it back. So an idle connection holds no pipe (no descriptors beyond its two
//! sockets), and a busy thread reuses a few pipes. A pipe goes back to the pool only when it is
//! empty; one that still holds bytes (the relay ended mid-chunk: writer error, idle, lifetime,
//! cut) is closed, and the bytes in it are dropped uncounted.
//!
//! Must not: decide when to read or write (the relay's pumps do that from tokio readiness), know
//! about connections, or log (the pumps log).

use super::PipeStats;
use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Empty pipes kept per thread (two descriptors each). Pipes are held only while bytes are in
/// flight, so this bounds the descriptors an idle thread keeps, not the pipes in use.
pub(super) const MAX_POOLED: usize = 32;

thread_local! {
    static FREE: RefCell<Vec<RawPipe>> = const { RefCell::new(Vec::new()) };
    static STATS: Cell<PipeStats> = const { Cell::new(PipeStats {
        created: 0,
        reused: 0,
        create_failures: 0,
        discarded: 0,
        spliced_bytes: 0,
        pooled: 0,
    }) };
}

fn count(f: impl FnOnce(&mut PipeStats)) {
    let _ = STATS.try_with(|s| {
        let mut v = s.get();
        f(&mut v);
        s.set(v);
    });
}

/// This thread's pipe counters.
pub(super) fn thread_stats() -> PipeStats {
    let mut s = STATS.try_with(Cell::get).unwrap_or_default();
    s.pooled = FREE.try_with(|f| f.borrow().len()).unwrap_or(0);
    s
}

/// Closes every pooled pipe of this thread; returns how many.
pub(super) fn trim_pool() -> usize {
    FREE.try_with(|f| std::mem::take(&mut *f.borrow_mut()).len())
        .unwrap_or(0)
}

/// The two ends of a pipe and the size it was asked for (the pool key).
struct RawPipe {
    read: OwnedFd,
    write: OwnedFd,
    requested: usize,
}

/// A pipe borrowed from this thread's pool (or newly created) with a count of the bytes it holds.
/// On drop it goes back to the pool when empty, and is closed otherwise.
pub(super) struct Pipe {
    raw: Option<RawPipe>,
    pending: usize,
}

impl Pipe {
    /// An empty pipe for chunks of `size` bytes: a pooled one, or a new one sized with
    /// `F_SETPIPE_SZ` (a refused size is ignored: the pipe keeps the kernel's size). Fails only
    /// when no pipe can be created (EMFILE, ENFILE, ENOMEM).
    pub(super) fn take(size: usize) -> io::Result<Pipe> {
        let pooled = FREE
            .try_with(|f| {
                let mut f = f.borrow_mut();
                // All pipes of one process have one requested size; a stray one is closed.
                while let Some(p) = f.pop() {
                    if p.requested == size {
                        return Some(p);
                    }
                }
                None
            })
            .ok()
            .flatten();
        let raw = match pooled {
            Some(p) => {
                count(|s| s.reused += 1);
                p
            }
            None => match pipe2() {
                Ok((read, write)) => {
                    // Refused (EPERM above pipe-max-size, or the user's pipe page budget): the
                    // pipe works with the size it has.
                    let _ = set_pipe_size(write.as_fd(), size);
                    count(|s| s.created += 1);
                    RawPipe {
                        read,
                        write,
                        requested: size,
                    }
                }
                Err(e) => {
                    count(|s| s.create_failures += 1);
                    return Err(e);
                }
            },
        };
        Ok(Pipe {
            raw: Some(raw),
            pending: 0,
        })
    }

    fn raw(&self) -> &RawPipe {
        self.raw.as_ref().expect("a live pipe has its descriptors")
    }

    /// Bytes in the pipe.
    pub(super) fn pending(&self) -> usize {
        self.pending
    }

    /// Moves up to `max` bytes from socket `src` into the (empty) pipe. `Ok(0)` is EOF on `src`;
    /// `WouldBlock` means `src` has nothing to read (the pipe is empty, so it cannot be full).
    pub(super) fn fill_from(&mut self, src: BorrowedFd<'_>, max: usize) -> io::Result<usize> {
        debug_assert_eq!(self.pending, 0, "a pipe is filled only when empty");
        let n = splice(src, self.raw().write.as_fd(), max)?;
        self.pending += n;
        Ok(n)
    }

    /// Moves bytes from the pipe to socket `dst`. `WouldBlock` means `dst` is full.
    pub(super) fn drain_to(&mut self, dst: BorrowedFd<'_>) -> io::Result<usize> {
        let n = splice(self.raw().read.as_fd(), dst, self.pending)?;
        self.pending -= n.min(self.pending);
        count(|s| s.spliced_bytes += n as u64);
        Ok(n)
    }

    /// Capacity of the pipe as the kernel reports it (tests).
    #[cfg(test)]
    fn capacity(&self) -> io::Result<usize> {
        pipe_size(self.raw().write.as_fd())
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        let Some(raw) = self.raw.take() else { return };
        if self.pending > 0 {
            // Bytes nobody will read: close the pipe (dropping `raw` closes both ends).
            count(|s| s.discarded += 1);
            return;
        }
        // During thread teardown the pool is gone: the pipe is simply closed.
        let _ = FREE.try_with(|f| {
            let mut f = f.borrow_mut();
            if f.len() < MAX_POOLED {
                f.push(raw);
            }
        });
    }
}

// === syscall wrappers (the only unsafe code of the relay) ===

/// `pipe2(O_NONBLOCK | O_CLOEXEC)`: (read end, write end).
fn pipe2() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the 2-element array we pass by valid pointer.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success both descriptors are new, open, and owned by nobody else; each OwnedFd
    // closes its own exactly once.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `fcntl(F_SETPIPE_SZ)`: asks for `size` bytes (sizes above `c_int::MAX` ask for the most);
/// returns the size the kernel set.
fn set_pipe_size(fd: BorrowedFd<'_>, size: usize) -> io::Result<usize> {
    let arg = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    // SAFETY: F_SETPIPE_SZ takes an int argument and touches no memory of ours; `fd` is borrowed
    // from an open descriptor, so it stays open for the call.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, arg) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as usize)
}

/// `fcntl(F_GETPIPE_SZ)`.
#[cfg(test)]
fn pipe_size(fd: BorrowedFd<'_>) -> io::Result<usize> {
    // SAFETY: F_GETPIPE_SZ takes no argument and touches no memory of ours; `fd` is borrowed
    // from an open descriptor.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETPIPE_SZ) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as usize)
}

/// `splice(from, NULL, to, NULL, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK)`, retried on EINTR.
/// One of the two descriptors must be a pipe. EAGAIN comes back as `WouldBlock`.
///
/// A socket end that is shut down or reset gives EPIPE, not a signal death: the Rust runtime sets
/// SIGPIPE to ignored before `main` (splice to a socket does not pass MSG_NOSIGNAL).
fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: both offsets are NULL, so splice reads and writes no memory of ours; it only
        // moves bytes between the two descriptors, which are borrowed from open descriptors and
        // so stay open (and keep their numbers) for the duration of the call.
        let n = unsafe {
            libc::splice(
                from.as_raw_fd(),
                std::ptr::null_mut(),
                to.as_raw_fd(),
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    fn before() -> PipeStats {
        thread_stats()
    }

    /// Writes `bytes` into the pipe as if a socket had filled it.
    fn fill(pipe: &mut Pipe, bytes: &[u8]) {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(bytes).unwrap();
        let mut moved = 0;
        while moved < bytes.len() {
            moved += pipe.fill_from(b.as_fd(), bytes.len() - moved).unwrap();
        }
    }

    // Every test runs on its own thread, so the per-thread pool and counters are its own.

    #[test]
    fn a_new_pipe_is_nonblocking_cloexec_and_sized() {
        trim_pool();
        let s0 = before();
        let pipe = Pipe::take(16 * 1024).unwrap();
        assert_eq!(thread_stats().created, s0.created + 1);
        assert_eq!(pipe.capacity().unwrap(), 16 * 1024);
        for fd in [&pipe.raw().read, &pipe.raw().write] {
            // SAFETY: F_GETFL/F_GETFD read flags of an open descriptor; no memory is touched.
            let (fl, fdfl) = unsafe {
                (
                    libc::fcntl(fd.as_raw_fd(), libc::F_GETFL),
                    libc::fcntl(fd.as_raw_fd(), libc::F_GETFD),
                )
            };
            assert_ne!(fl & libc::O_NONBLOCK, 0, "O_NONBLOCK");
            assert_ne!(fdfl & libc::FD_CLOEXEC, 0, "FD_CLOEXEC");
        }
    }

    #[test]
    fn an_empty_pipe_is_reused() {
        trim_pool();
        let pipe = Pipe::take(16 * 1024).unwrap();
        let fds = (pipe.raw().read.as_raw_fd(), pipe.raw().write.as_raw_fd());
        drop(pipe);
        assert_eq!(thread_stats().pooled, 1);
        let s0 = before();
        let again = Pipe::take(16 * 1024).unwrap();
        assert_eq!(
            (again.raw().read.as_raw_fd(), again.raw().write.as_raw_fd()),
            fds,
            "the same pipe came back"
        );
        let s1 = thread_stats();
        assert_eq!((s1.reused, s1.created), (s0.reused + 1, s0.created));
        assert_eq!(s1.pooled, 0);
    }

    #[test]
    fn a_drained_pipe_is_reused_and_its_bytes_arrive() {
        trim_pool();
        let mut pipe = Pipe::take(4096).unwrap();
        fill(&mut pipe, b"through the pipe");
        assert_eq!(pipe.pending(), 16);
        let (out, mut sink) = UnixStream::pair().unwrap();
        while pipe.pending() > 0 {
            pipe.drain_to(out.as_fd()).unwrap();
        }
        let mut got = [0u8; 16];
        sink.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"through the pipe");
        let s0 = before();
        drop(pipe);
        assert_eq!(thread_stats().pooled, s0.pooled + 1, "empty again: pooled");
        assert_eq!(thread_stats().discarded, s0.discarded);
    }

    #[test]
    fn a_pipe_with_leftover_bytes_is_closed_not_pooled() {
        trim_pool();
        let mut pipe = Pipe::take(4096).unwrap();
        fill(&mut pipe, b"left behind");
        let s0 = before();
        drop(pipe);
        let s1 = thread_stats();
        assert_eq!(s1.pooled, 0, "not pooled");
        assert_eq!(s1.discarded, s0.discarded + 1, "closed");
        // The next take cannot see those bytes: it gets a new, empty pipe.
        let next = Pipe::take(4096).unwrap();
        assert_eq!(next.pending(), 0);
        assert_eq!(thread_stats().created, s0.created + 1);
    }

    #[test]
    fn the_pool_keeps_at_most_max_pooled_pipes() {
        trim_pool();
        let pipes: Vec<Pipe> = (0..MAX_POOLED + 3)
            .map(|_| Pipe::take(4096).unwrap())
            .collect();
        drop(pipes);
        assert_eq!(thread_stats().pooled, MAX_POOLED);
        assert_eq!(trim_pool(), MAX_POOLED);
        assert_eq!(thread_stats().pooled, 0);
    }

    #[test]
    fn a_pipe_of_another_size_is_not_reused() {
        trim_pool();
        drop(Pipe::take(4096).unwrap());
        let s0 = before();
        let p = Pipe::take(8192).unwrap();
        assert_eq!(p.capacity().unwrap(), 8192);
        let s1 = thread_stats();
        assert_eq!((s1.created, s1.reused), (s0.created + 1, s0.reused));
        assert_eq!(s1.pooled, 0, "the stray 4 KiB pipe was closed");
    }

    #[test]
    fn a_refused_size_still_gives_a_working_pipe() {
        trim_pool();
        // Far above pipe-max-size (and c_int): EPERM without CAP_SYS_RESOURCE, EINVAL/ENOMEM
        // with it. The pipe keeps the kernel's size.
        let huge = usize::MAX;
        let mut pipe = Pipe::take(huge).unwrap();
        let capacity = pipe.capacity().unwrap();
        assert!(capacity < libc::c_int::MAX as usize, "{capacity}");
        fill(&mut pipe, b"still works");
        let (out, mut sink) = UnixStream::pair().unwrap();
        while pipe.pending() > 0 {
            pipe.drain_to(out.as_fd()).unwrap();
        }
        let mut got = [0u8; 11];
        sink.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"still works");
    }

    #[test]
    fn fill_from_an_empty_socket_would_block_and_eof_is_zero() {
        trim_pool();
        let mut pipe = Pipe::take(4096).unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let e = pipe.fill_from(b.as_fd(), 4096).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        drop(a);
        assert_eq!(pipe.fill_from(b.as_fd(), 4096).unwrap(), 0, "EOF");
        assert_eq!(pipe.pending(), 0);
    }
}
