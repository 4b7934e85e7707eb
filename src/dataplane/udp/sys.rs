//! The one place with `unsafe` in the UDP data plane: batched receive (`recvmmsg(2)`) on a
//! frontend socket, with the kernel's drop counter (`SO_RXQ_OVFL`) read from each datagram's
//! control data, and batched send (`sendmmsg(2)`) of a flow's replies to its client.
//!
//! Owns: [`RecvBatch`] (the reusable buffers of one frontend, or of one thread's return paths:
//! [`BATCH`] slots of [`MAX_DATAGRAM`] bytes, allocated once, zeroed lazily by the OS),
//! [`RecvBatch::recv`], [`RecvBatch::send_to`] and [`enable_rx_overflow_count`].
//!
//! Why: a frontend receives up to [`BATCH`] datagrams per syscall instead of one, and learns how
//! many datagrams the kernel dropped because the socket's receive queue was full (otherwise
//! invisible to vipd). Memory: the slots are an anonymous mapping (`mmap`), so only the pages
//! datagrams actually touch become resident. With `calloc` they came from malloc's arenas once
//! glibc's dynamic mmap threshold had risen past 512 KiB (after a large document buffer is
//! freed), and vipd at Marathon's ceiling (1,000 UDP frontends) held 280 MB instead of 138 MB
//! (BENCHMARKS.md, `benches/scale/memory_after_shrink.sh`).
//!
//! Must not: know about flows, backends or tokio (the caller wraps [`RecvBatch::recv`] in
//! `UdpSocket::try_io`, which clears readiness on `WouldBlock`).

use super::MAX_DATAGRAM;
use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};

/// Datagrams received per syscall at most.
pub(crate) const BATCH: usize = 8;

/// Control space per message: room for a few cmsgs (`SO_RXQ_OVFL` needs 20 bytes), 8-aligned.
const CONTROL_WORDS: usize = 8;

/// Asks the kernel to attach its drop count to received datagrams (`SO_RXQ_OVFL`).
pub(crate) fn enable_rx_overflow_count(socket: &impl AsRawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `socket` is an open socket for the duration of the call; the option value points to
    // a live c_int and its exact size is passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RXQ_OVFL,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One received datagram of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Received {
    pub from: SocketAddr,
    pub len: usize,
    /// The datagram did not fit its slot (cannot happen with [`MAX_DATAGRAM`] slots; dropped).
    pub truncated: bool,
}

/// The receive buffers of one frontend, reused for every batch.
pub(crate) struct RecvBatch {
    /// [`BATCH`] slots of [`MAX_DATAGRAM`] bytes, resident only where written.
    bufs: SlotMemory,
    addrs: [libc::sockaddr_storage; BATCH],
    controls: [[u64; CONTROL_WORDS]; BATCH],
    received: [Option<Received>; BATCH],
    count: usize,
    /// The kernel's cumulative drop count as last reported (`SO_RXQ_OVFL`, wrapping u32).
    kernel_drops: u32,
}

/// Zeroed memory for the receive slots: an anonymous mapping, or (if the kernel refuses one, e.g.
/// at `vm.max_map_count`) a heap allocation.
enum SlotMemory {
    Mapped(memmap2::MmapMut),
    Heap(Box<[u8]>),
}

impl SlotMemory {
    fn new(len: usize) -> Self {
        match memmap2::MmapMut::map_anon(len) {
            Ok(map) => SlotMemory::Mapped(map),
            Err(_) => SlotMemory::Heap(vec![0u8; len].into_boxed_slice()),
        }
    }
}

impl std::ops::Deref for SlotMemory {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            SlotMemory::Mapped(m) => m,
            SlotMemory::Heap(h) => h,
        }
    }
}

impl std::ops::DerefMut for SlotMemory {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            SlotMemory::Mapped(m) => m,
            SlotMemory::Heap(h) => h,
        }
    }
}

impl RecvBatch {
    pub fn new() -> Self {
        RecvBatch {
            bufs: SlotMemory::new(BATCH * MAX_DATAGRAM),
            // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
            addrs: unsafe { MaybeUninit::zeroed().assume_init() },
            controls: [[0; CONTROL_WORDS]; BATCH],
            received: [None; BATCH],
            count: 0,
            kernel_drops: 0,
        }
    }

    /// Receives up to [`BATCH`] datagrams without blocking. Returns how many (at least 1), and
    /// how many datagrams the kernel newly reported dropped. `WouldBlock` when none is queued.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<(usize, u64)> {
        // SAFETY: iovec and mmsghdr are plain C structs; all-zero is valid (null pointers, zero
        // lengths), and every pointer field used is set below.
        let mut iovecs: [libc::iovec; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
        for (i, chunk) in self.bufs.chunks_exact_mut(MAX_DATAGRAM).enumerate() {
            iovecs[i].iov_base = chunk.as_mut_ptr().cast();
            iovecs[i].iov_len = MAX_DATAGRAM;
            let h = &mut hdrs[i].msg_hdr;
            h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut iovecs[i];
            h.msg_iovlen = 1;
            h.msg_control = self.controls[i].as_mut_ptr().cast();
            h.msg_controllen = size_of::<[u64; CONTROL_WORDS]>() as _;
        }
        // SAFETY: every header points into buffers owned by `self` or by this stack frame, which
        // outlive the call; the lengths passed are the true sizes of those buffers; `BATCH`
        // headers are passed and the timeout pointer is null (MSG_DONTWAIT: never blocks).
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            self.count = 0;
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        let mut newly_dropped = 0u64;
        for (i, hdr) in hdrs.iter().enumerate().take(n) {
            let h = &hdr.msg_hdr;
            if let Some(total) = rx_overflow(h) {
                newly_dropped += u64::from(total.wrapping_sub(self.kernel_drops));
                self.kernel_drops = total;
            }
            self.received[i] =
                sockaddr_to_std(&self.addrs[i], h.msg_namelen).map(|from| Received {
                    from,
                    len: hdr.msg_len as usize,
                    truncated: h.msg_flags & libc::MSG_TRUNC != 0,
                });
        }
        self.count = n;
        Ok((n, newly_dropped))
    }

    /// The `i`-th datagram of the last batch (`None` if its sender address was not IP).
    pub fn get(&self, i: usize) -> Option<(Received, &[u8])> {
        if i >= self.count {
            return None;
        }
        let r = self.received[i]?;
        let start = i * MAX_DATAGRAM;
        Some((r, &self.bufs[start..start + r.len.min(MAX_DATAGRAM)]))
    }
}

impl RecvBatch {
    /// Sends datagrams `from..count` of the last batch to `to` with one `sendmmsg(2)`, without
    /// blocking. Returns how many the kernel took (at least 1; fewer than asked when it stopped
    /// early), or the error of the first one (`WouldBlock` when the send buffer is full).
    pub fn send_to(&self, fd: RawFd, from: usize, to: &socket2::SockAddr) -> io::Result<usize> {
        let count = self.count.saturating_sub(from);
        if count == 0 {
            return Ok(0);
        }
        // SAFETY: plain C structs; all-zero is valid, and every pointer used is set below.
        let mut iovecs: [libc::iovec; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
        for k in 0..count {
            let i = from + k;
            let len = self.received[i].map_or(0, |r| r.len.min(MAX_DATAGRAM));
            // The kernel only reads through these pointers (sendmmsg), never writes.
            iovecs[k].iov_base = self.bufs[i * MAX_DATAGRAM..].as_ptr() as *mut libc::c_void;
            iovecs[k].iov_len = len;
            let h = &mut hdrs[k].msg_hdr;
            h.msg_name = to.as_ptr() as *mut libc::c_void;
            h.msg_namelen = to.len();
            h.msg_iov = &mut iovecs[k];
            h.msg_iovlen = 1;
        }
        // SAFETY: `count` headers are passed, each pointing to the destination (borrowed for the
        // call) and to one iovec over a slot of `self.bufs` of the datagram's received length,
        // all alive until the call returns; MSG_DONTWAIT: never blocks.
        let n = unsafe {
            libc::sendmmsg(
                fd,
                hdrs.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

/// The `SO_RXQ_OVFL` counter attached to a received message, if any.
fn rx_overflow(h: &libc::msghdr) -> Option<u32> {
    let mut found = None;
    // SAFETY: `h` was filled by a successful recvmmsg: msg_control/msg_controllen describe the
    // control buffer the kernel wrote, and CMSG_FIRSTHDR/CMSG_NXTHDR stay within it. The data
    // of an SO_RXQ_OVFL cmsg is a u32, read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(h);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if c.cmsg_level == libc::SOL_SOCKET
                && c.cmsg_type == libc::SO_RXQ_OVFL
                && c.cmsg_len as usize >= libc::CMSG_LEN(size_of::<u32>() as u32) as usize
            {
                found = Some(std::ptr::read_unaligned(
                    libc::CMSG_DATA(cmsg).cast::<u32>(),
                ));
            }
            cmsg = libc::CMSG_NXTHDR(h, cmsg);
        }
    }
    found
}

fn sockaddr_to_std(ss: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match libc::c_int::from(ss.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, the kernel wrote at least
            // its size, and sockaddr_storage is large enough and suitably aligned for it.
            let sin =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                u32::from_be(sin6.sin6_flowinfo),
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn a_batch_carries_sources_payloads_and_kernel_drops() {
        let rx = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        rx.set_recv_buffer_size(4096).unwrap();
        enable_rx_overflow_count(&rx).unwrap();
        rx.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        let to = rx.local_addr().unwrap().as_socket().unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let from = tx.local_addr().unwrap();
        let mut batch = RecvBatch::new();
        assert_eq!(
            batch.recv(rx.as_raw_fd()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        // Far more than a 4 KiB receive buffer holds: the kernel drops most of them.
        let sent = 200;
        for i in 0..sent {
            tx.send_to(&[i as u8; 1000], to).unwrap();
        }
        let (mut got, mut dropped) = (0u64, 0u64);
        loop {
            match batch.recv(rx.as_raw_fd()) {
                Ok((n, d)) => {
                    dropped += d;
                    for i in 0..n {
                        let (r, payload) = batch.get(i).unwrap();
                        assert_eq!((r.from, r.len, r.truncated), (from, 1000, false));
                        assert!(payload.iter().all(|b| *b == payload[0]));
                        got += 1;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        // The last datagram queued carries the full count, so everything is accounted for.
        tx.send_to(b"last", to).unwrap();
        let (n, d) = batch.recv(rx.as_raw_fd()).unwrap();
        assert_eq!(n, 1);
        dropped += d;
        assert!(got >= 1 && dropped >= 1, "got {got}, dropped {dropped}");
        assert_eq!(got + dropped, sent, "got {got}, dropped {dropped}");
        assert_eq!(batch.get(0).unwrap().1, b"last");
        assert!(batch.get(1).is_none());
    }

    #[test]
    fn a_batch_is_sent_on_in_order_with_one_call() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
        relay.set_nonblocking(true).unwrap();
        let out = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..5u8 {
            tx.send_to(&vec![i; 10 + usize::from(i)], relay.local_addr().unwrap())
                .unwrap();
        }
        let mut batch = RecvBatch::new();
        let mut n = 0;
        while n < 5 {
            match batch.recv(relay.as_raw_fd()) {
                Ok((got, _)) => n = got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        let to = socket2::SockAddr::from(rx.local_addr().unwrap());
        // From the third on, then the first two: the order and lengths are the batch's.
        assert_eq!(batch.send_to(out.as_raw_fd(), 2, &to).unwrap(), 3);
        assert_eq!(batch.send_to(out.as_raw_fd(), 0, &to).unwrap(), 5);
        assert_eq!(batch.send_to(out.as_raw_fd(), 5, &to).unwrap(), 0);
        let mut buf = [0u8; 64];
        for want in [2u8, 3, 4, 0, 1, 2, 3, 4] {
            let (len, from) = rx.recv_from(&mut buf).unwrap();
            assert_eq!(from, out.local_addr().unwrap());
            assert_eq!(&buf[..len], &vec![want; 10 + usize::from(want)][..]);
        }
    }
}
