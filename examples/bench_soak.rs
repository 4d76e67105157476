//! Soak benchmark (not a test): 10,000 check instances for a long time, a fifth of them
//! failing in mixed ways, a reload every minute and a scrape every 5 s; the agent's RSS,
//! open descriptors and threads every 30 s, and whether any healthy instance ever failed.
//!
//! ```text
//! cargo build --release && cargo run --release --example bench_soak -- [--duration 30m] [--interval 10s]
//! ```
//!
//! 500 pools × 20 checks. Checks 0-15 are tcp checks against listeners here (healthy).
//! The other four fail, each its own way: 16 a port nobody listens on (`refused`),
//! 17 a name that does not exist (`resolve`), 18 a listener whose accept queue is full
//! (`timeout`), 19 SIP over UDP against a peer that answers garbage (`sip_malformed`).
//! Every failure of checks 0-15 is a false failure.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use coexistd::lab::dns_server::{a, DnsServer};

fn http_get(addr: SocketAddr, path: &str) -> String {
    let Ok(mut s) = TcpStream::connect(addr) else { return String::new() };
    let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn status_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Failures of healthy checks (check0-check15) and of all, and runs, from a scrape.
fn counts(text: &str) -> (f64, f64, f64) {
    let (mut healthy_failures, mut failures, mut runs) = (0.0, 0.0, 0.0);
    for l in text.lines() {
        let v = l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()).unwrap_or(0.0);
        if l.starts_with("coexist_probe_failures_total{") {
            failures += v;
            let check = l.split("check=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("");
            let n: usize = check.trim_start_matches("check").parse().unwrap_or(99);
            if n < 16 {
                healthy_failures += v;
            }
        } else if l.starts_with("coexist_probe_runs_total{") {
            runs += v;
        }
    }
    (healthy_failures, failures, runs)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str, default: &str| {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned()).unwrap_or(default.into())
    };
    let duration = humantime::parse_duration(&arg("--duration", "30m")).expect("--duration 30m");
    let interval = arg("--interval", "10s");
    let pools = 500;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let records = (0..pools).map(|p| a(&format!("pool{p}.bench.test"), "127.0.0.1")).collect();
    let dns = rt.block_on(DnsServer::start("127.0.0.1:0".parse().unwrap(), records)).unwrap();
    let mut ports = Vec::new();
    for _ in 0..16 {
        let l = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        ports.push(l.local_addr().unwrap().port());
        rt.spawn(async move {
            loop {
                let _ = l.accept().await;
            }
        });
    }
    // 16: refused (bound then closed).
    let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // 18: a listener that never accepts, its queue filled first, so connects time out.
    let full = socket2_listener();
    let full_port = full.local_addr().unwrap().port();
    let mut fillers = Vec::new();
    for _ in 0..64 {
        if let Ok(s) = TcpStream::connect_timeout(&full.local_addr().unwrap(), Duration::from_millis(100)) {
            fillers.push(s);
        } else {
            break;
        }
    }
    // 19: SIP over UDP answered with garbage.
    let garbage = rt.block_on(tokio::net::UdpSocket::bind("127.0.0.1:0")).unwrap();
    let garbage_port = garbage.local_addr().unwrap().port();
    rt.spawn(async move {
        let mut buf = vec![0u8; 65536];
        loop {
            if let Ok((_, peer)) = garbage.recv_from(&mut buf).await {
                let _ = garbage.send_to(b"\x00\x01 not SIP\r\n\r\n", peer).await;
            }
        }
    });
    let listen: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = format!(
        "[agent]\nlisten = \"{listen}\"\ninterval = \"{interval}\"\ntimeout = \"5s\"\nlabels = {{ site = \"soak\" }}\n[dns]\nservers = [\"{}\"]\n",
        dns.addr
    );
    for p in 0..pools {
        cfg.push_str(&format!(
            "[[pools]]\nname = \"pool{p}\"\nrole = \"{}\"\nfqdn = \"pool{p}.bench.test\"\n",
            if p % 2 == 0 { "legacy" } else { "new" }
        ));
    }
    for (c, port) in ports.iter().enumerate() {
        cfg.push_str(&format!("[[checks]]\nname = \"check{c}\"\nkind = \"tcp\"\nport = {port}\n"));
    }
    cfg.push_str(&format!("[[checks]]\nname = \"check16\"\nkind = \"tcp\"\nport = {refused}\n"));
    cfg.push_str("[[checks]]\nname = \"check17\"\nkind = \"tcp\"\nhost = \"nx-{fqdn}\"\nport = 1\n");
    cfg.push_str(&format!("[[checks]]\nname = \"check18\"\nkind = \"tcp\"\nport = {full_port}\n"));
    cfg.push_str(&format!(
        "[[checks]]\nname = \"check19\"\nkind = \"sip\"\ntransport = \"udp\"\nport = {garbage_port}\n"
    ));
    let path = dir.path().join("soak.toml");
    std::fs::write(&path, cfg).unwrap();
    let bin = concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/coexistd");
    let mut child = Command::new(bin)
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("build the release binary first: cargo build --release");
    let pid = child.id();
    println!(
        "10000 instances (8000 healthy), interval {interval}, reload every 60 s, scrape every 5 s, {} s",
        duration.as_secs()
    );
    println!(
        "{:>6} {:>9} {:>6} {:>8} {:>10} {:>14} {:>9}",
        "t (s)", "RSS MiB", "fds", "threads", "runs", "failures", "false"
    );
    let t0 = Instant::now();
    let (mut next_scrape, mut next_reload, mut next_sample) =
        (Duration::from_secs(5), Duration::from_secs(60), Duration::ZERO);
    let mut last = (0.0, 0.0, 0.0);
    let mut rss_at_5min = None;
    let mut max_rss_after_5 = 0u64;
    while t0.elapsed() < duration {
        std::thread::sleep(Duration::from_millis(200));
        let now = t0.elapsed();
        if now >= next_scrape {
            next_scrape += Duration::from_secs(5);
            let m = http_get(listen, "/metrics");
            if !m.is_empty() {
                last = counts(&m);
            }
        }
        if now >= next_reload {
            next_reload += Duration::from_secs(60);
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(pid as i32, libc::SIGHUP);
            }
        }
        if now >= next_sample {
            next_sample += Duration::from_secs(30);
            let rss = status_kib(pid, "VmRSS:");
            if now >= Duration::from_secs(300) {
                rss_at_5min.get_or_insert(rss);
                max_rss_after_5 = max_rss_after_5.max(rss);
            }
            println!(
                "{:>6} {:>9.1} {:>6} {:>8} {:>10.0} {:>14.0} {:>9.0}",
                now.as_secs(),
                rss as f64 / 1024.0,
                fds(pid),
                status_kib(pid, "Threads:"),
                last.2,
                last.1,
                last.0
            );
        }
    }
    if let Some(r5) = rss_at_5min {
        println!(
            "RSS at minute 5: {:.1} MiB, highest after: {:.1} MiB (+{:.1} %); false failures: {:.0}",
            r5 as f64 / 1024.0,
            max_rss_after_5 as f64 / 1024.0,
            100.0 * (max_rss_after_5 as f64 - r5 as f64) / r5 as f64,
            last.0
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    drop(fillers);
    drop(dns);
}

/// A listener with a backlog of 1 that never accepts.
fn socket2_listener() -> std::net::TcpListener {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor this function owns.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as u16;
        addr.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        libc::bind(
            fd,
            &addr as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        );
        libc::listen(fd, 1);
        std::net::TcpListener::from_raw_fd(fd)
    }
}
