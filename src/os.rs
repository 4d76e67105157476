//! Calls to the operating system that the agent makes for its own sake: thread
//! priority for the serving threads, giving freed memory back. Ground floor.

/// Lowers the calling thread's scheduling priority (nice +10): for the threads that
/// serve HTTP and encode scrapes, so that under load the probe threads get the CPU
/// first. Failure (EPERM from a seccomp filter with `SystemCallErrorNumber=EPERM`, as the
/// shipped unit sets) leaves the threads at normal priority. A filter whose action is
/// to kill would end the process: the shipped unit allows this call.
pub fn lower_thread_priority() {
    // On Linux, PRIO_PROCESS with who = 0 applies to the calling thread only.
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority has no memory-safety preconditions.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}

/// Gives freed heap memory back to the operating system (glibc keeps it otherwise):
/// called after a burst of scrapes has released its buffers.
pub fn release_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A UDP socket from a fresh port the kernel picks, of `peer`'s address family,
/// connected to `peer` (so the kernel drops datagrams from anyone else). One per DNS
/// query and per SIP-over-UDP probe: a reused port would hide firewall faults.
pub async fn udp_socket_to(peer: std::net::SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    let bind: std::net::SocketAddr = if peer.is_ipv4() {
        std::net::SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        std::net::SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
    };
    let sock = tokio::net::UdpSocket::bind(bind).await?;
    sock.connect(peer).await?;
    Ok(sock)
}
