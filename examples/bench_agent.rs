//! Benchmark of the agent at scale (not a test): N tcp check instances against loopback
//! listeners, the agent binary in its own process, measured from outside.
//!
//! ```text
//! cargo build --release && cargo run --release --example bench_agent -- [options]
//!   --pools 500 --checks-per-pool 20   (10,000 instances)
//!   --interval 10s --warmup 15s --window 60s
//!   --literal                          (target 127.0.0.1 directly: no DNS lookup per probe)
//!   --kind tls                         (tls checks: TLS 1.3, ECDSA P-256 chain from a test CA)
//!   --kind sip-udp | sip-tls           (sip OPTIONS checks against in-process responders)
//!   --members N                        (N A records per pool, 127.0.0.1..N, each_address = true)
//!   --scrapers N --burst 60s           (after the quiet window: N clients scraping without
//!                                       pause, half /metrics, half /api/v1/status, then a
//!                                       minute of rest; see below)
//!   --reference                        (the reference check and the burst window without
//!                                       scrapers: the baseline)
//!   --rest 60s                         (rest after the burst before RSS is read again)
//!   --curl                             (scrape with curl instead of a raw socket)
//!   --tls-auth                         (the agent's port behind TLS and basic auth, a
//!                                       bcrypt cost-10 hash; scrapes with curl)
//!   --bin PATH                         (the agent binary; default target/release/coexistd)
//! ```
//!
//! With `--scrapers`, the agent also runs a reference check: SIP OPTIONS over UDP every
//! second against a peer here that answers after exactly 50 ms. Over the burst the
//! benchmark reports failures of healthy targets (every failure is false: every peer
//! is up), schedule lag, the reference check's measured durations, and RSS before the
//! burst, at its end and a minute later.
//!
//! This process runs the peers: a DNS responder that resolves every pool FQDN to
//! 127.0.0.1, and one listener per check port. It starts `target/release/coexistd run`,
//! waits for the warm-up, then over a window without scrapes reads the agent's CPU time
//! (/proc/PID/stat), its RSS (/proc/PID/status), the probes it ran
//! (`coexist_probe_runs_total`), its schedule lag histogram
//! (`coexist_scheduler_lag_seconds`); then it times ten `/metrics` scrapes.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::Arc;

use coexistd::lab::dns_server::{a, DnsServer};
use coexistd::lab::pki;
use openssl::hash::MessageDigest;
use openssl::ssl::{Ssl, SslAcceptor, SslMethod};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Completes the handshake, then answers SIP (`sip`) or waits for the client to close.
async fn tls_serve(tcp: tokio::net::TcpStream, acceptor: Arc<SslAcceptor>, sip: bool) {
    let Ok(ssl) = Ssl::new(acceptor.context()) else { return };
    let Ok(mut s) = tokio_openssl::SslStream::new(ssl, tcp) else { return };
    if std::pin::Pin::new(&mut s).accept().await.is_err() {
        return;
    }
    if sip {
        return coexistd::lab::sip_stream(s, "bench").await;
    }
    let mut buf = [0u8; 1024];
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
    let _ = s.shutdown().await;
}

struct Opts {
    pools: usize,
    checks: usize,
    interval: String,
    warmup: Duration,
    window: Duration,
    literal: bool,
    kind: String,
    members: u8,
    scrapers: usize,
    burst: Duration,
    rest: Duration,
    reference: bool,
    curl: bool,
    tls_auth: bool,
    bin: String,
}

fn opts() -> Opts {
    let mut o = Opts {
        pools: 500,
        checks: 20,
        interval: "10s".into(),
        warmup: Duration::from_secs(15),
        window: Duration::from_secs(60),
        literal: false,
        kind: "tcp".into(),
        members: 1,
        scrapers: 0,
        burst: Duration::from_secs(60),
        rest: Duration::from_secs(60),
        reference: false,
        curl: false,
        tls_auth: false,
        bin: concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/coexistd").into(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--pools" => o.pools = v.parse().expect("--pools N"),
            "--checks-per-pool" => o.checks = v.parse().expect("--checks-per-pool N"),
            "--interval" => o.interval = v,
            "--kind" => o.kind = v,
            "--members" => o.members = v.parse().expect("--members N (1-250)"),
            "--scrapers" => o.scrapers = v.parse().expect("--scrapers N"),
            "--burst" => o.burst = humantime::parse_duration(&v).expect("--burst 60s"),
            "--rest" => o.rest = humantime::parse_duration(&v).expect("--rest 60s"),
            "--reference" => {
                o.reference = true;
                i += 1;
                continue;
            }
            "--bin" => o.bin = v,
            "--warmup" => o.warmup = humantime::parse_duration(&v).expect("--warmup 15s"),
            "--window" => o.window = humantime::parse_duration(&v).expect("--window 60s"),
            "--curl" | "--tls-auth" => {
                o.curl = true;
                o.tls_auth |= args[i] == "--tls-auth";
                i += 1;
                continue;
            }
            "--literal" => {
                o.literal = true;
                i += 1;
                continue;
            }
            other => panic!("unknown option {other}"),
        }
        i += 2;
    }
    o
}

/// How scrapes reach the agent: `None` a raw socket; else curl with these arguments
/// and this scheme.
static CURL: std::sync::OnceLock<Option<(Vec<String>, &'static str)>> = std::sync::OnceLock::new();

fn curl_get(addr: SocketAddr, path: &str, out: &str) -> std::process::Output {
    let (args, scheme) = CURL.get().and_then(Option::as_ref).expect("curl mode");
    Command::new("curl")
        .args(["-s", "-o", out, "-w", "%{time_total} %{size_download}"])
        .args(args)
        .arg(format!("{scheme}://{addr}{path}"))
        .output()
        .unwrap()
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    if CURL.get().is_some_and(Option::is_some) {
        let f = std::env::temp_dir().join(format!("bench-{}.txt", std::process::id()));
        curl_get(addr, path, f.to_str().unwrap());
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        let _ = std::fs::remove_file(&f);
        return text;
    }
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Time to fetch `/metrics` completely, as a scraper reading into a preallocated buffer
/// sees it (no text decoding on the client side); returns the body size too.
fn timed_scrape(addr: SocketAddr, buf: &mut Vec<u8>) -> (Duration, usize) {
    if CURL.get().is_some_and(Option::is_some) {
        let out = curl_get(addr, "/metrics", "/dev/null");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut it = text.split_whitespace();
        let secs: f64 = it.next().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
        let size: f64 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        return (Duration::from_secs_f64(secs), size as usize);
    }
    buf.clear();
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    s.read_to_end(buf).unwrap();
    (t.elapsed(), buf.len())
}

fn sum_metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b)
}

fn lag_buckets(text: &str) -> Vec<(f64, f64)> {
    text.lines()
        .filter(|l| l.starts_with("coexist_scheduler_lag_seconds_bucket{"))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, l.rsplit_once(' ')?.1.parse().ok()?))
        })
        .collect()
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0 // USER_HZ is 100 on Linux
}

fn status_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let mut o = opts();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let records = (0..o.pools)
        .flat_map(|p| {
            (1..=o.members).map(move |m| a(&format!("pool{p}.bench.test"), &format!("127.0.0.{m}")))
        })
        .collect();
    let dns = rt.block_on(DnsServer::start("127.0.0.1:0".parse().unwrap(), records)).unwrap();
    // TLS: a P-256 CA and a P-256 leaf covering every pool name, served by OpenSSL here.
    let dir = tempfile::tempdir().unwrap();
    let ca = pki::Ca::new("Bench Root", pki::KeyKind::P256, MessageDigest::sha256()).unwrap();
    let ca_file = pki::write_ca(dir.path(), "ca", &ca).unwrap();
    let leaf = ca
        .issue(&pki::Leaf { cn: "*.bench.test", sans: &["*.bench.test", "127.0.0.1"], ..Default::default() })
        .unwrap();
    let acceptor = {
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).unwrap();
        b.set_private_key(&leaf.key).unwrap();
        b.set_certificate(&leaf.cert).unwrap();
        Arc::new(b.build())
    };
    let mut ports = Vec::new();
    for _ in 0..o.checks {
        if o.kind == "sip-udp" {
            let u = rt.block_on(tokio::net::UdpSocket::bind("127.0.0.1:0")).unwrap();
            ports.push(u.local_addr().unwrap().port());
            rt.spawn(coexistd::lab::sip_udp(u, "bench"));
            continue;
        }
        let first = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let port = first.local_addr().unwrap().port();
        ports.push(port);
        let mut listeners = vec![first];
        for m in 2..=o.members {
            listeners.push(
                rt.block_on(tokio::net::TcpListener::bind(("127.0.0.".to_owned() + &m.to_string(), port)))
                    .unwrap(),
            );
        }
        for l in listeners {
            let (acceptor, kind) = (acceptor.clone(), o.kind.clone());
            rt.spawn(async move {
                loop {
                    let Ok((tcp, _)) = l.accept().await else { continue };
                    match kind.as_str() {
                        "tls" => drop(tokio::spawn(tls_serve(tcp, acceptor.clone(), false))),
                        "sip-tls" => drop(tokio::spawn(tls_serve(tcp, acceptor.clone(), true))),
                        _ => {}
                    }
                }
            });
        }
    }
    let listen: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut cfg = format!(
        "[agent]\nlisten = \"{listen}\"\ninterval = \"{}\"\ntimeout = \"5s\"\nlabels = {{ site = \"bench\" }}\n[dns]\nservers = [\"{}\"]\n[tls]\nca_file = \"{}\"\n",
        o.interval,
        dns.addr,
        ca_file.display()
    );
    for p in 0..o.pools {
        cfg.push_str(&format!(
            "[[pools]]\nname = \"pool{p}\"\nrole = \"{}\"\nfqdn = \"pool{p}.bench.test\"\n",
            if p % 2 == 0 { "legacy" } else { "new" }
        ));
    }
    for (c, port) in ports.iter().enumerate() {
        let host = if o.literal {
            "host = \"127.0.0.1\"\n"
        } else if o.members > 1 {
            "each_address = true\n"
        } else {
            ""
        };
        let kind = match o.kind.as_str() {
            "sip-udp" => "sip\"\ntransport = \"udp",
            "sip-tls" => "sip\"\ntransport = \"tls",
            k => k,
        };
        cfg.push_str(&format!("[[checks]]\nname = \"check{c}\"\nkind = \"{kind}\"\nport = {port}\n{host}"));
    }
    o.reference |= o.scrapers > 0;
    if o.reference {
        // The reference: a peer that answers OPTIONS after exactly 50 ms.
        // Its own thread and runtime: the peers of the 10,000 instances must not delay it.
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        u.set_nonblocking(true).unwrap();
        let port = u.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let u = tokio::net::UdpSocket::from_std(u).unwrap();
                delayed_sip_udp(Arc::new(u), Duration::from_millis(50)).await
            });
        });
        cfg.push_str(&format!(
            "[[checks]]\nname = \"reference\"\nkind = \"sip\"\ntransport = \"udp\"\npools = []\nhost = \"127.0.0.1\"\nport = {port}\ninterval = \"1s\"\ntimeout = \"900ms\"\n"
        ));
    }
    let path = dir.path().join("bench.toml");
    std::fs::write(&path, cfg).unwrap();
    let mut web_args: Vec<String> = Vec::new();
    if o.tls_auth {
        let (cert, key) = leaf.write(dir.path(), "web", &[]).unwrap();
        let hash = bcrypt::hash("bench-password", 10).unwrap();
        let yaml = dir.path().join("web.yml");
        std::fs::write(
            &yaml,
            format!(
                "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  bench: {hash}\n",
                cert.display(),
                key.display()
            ),
        )
        .unwrap();
        web_args = vec!["--web.config.file".into(), yaml.display().to_string()];
        let _ = CURL.set(Some((
            vec![
                "--cacert".into(),
                ca_file.display().to_string(),
                "-u".into(),
                "bench:bench-password".into(),
            ],
            "https",
        )));
    } else if o.curl {
        let _ = CURL.set(Some((Vec::new(), "http")));
    } else {
        let _ = CURL.set(None);
    }
    let mut child = Command::new(&o.bin)
        .args(["run", "--config"])
        .arg(&path)
        .args(&web_args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("build the release binary first: cargo build --release");
    let pid = child.id();
    let instances = o.pools * o.checks * usize::from(o.members);
    eprintln!("{instances} {} instances, interval {}, DNS per probe: {}", o.kind, o.interval, !o.literal);
    std::thread::sleep(o.warmup);

    // Window 1: probes only, no scrape, for CPU per probe and schedule lag.
    let m0 = http_get(listen, "/metrics");
    let (runs0, lag0, cpu0, t0) =
        (sum_metric(&m0, "coexist_probe_runs_total"), lag_buckets(&m0), cpu_seconds(pid), Instant::now());
    std::thread::sleep(o.window);
    let cpu1 = cpu_seconds(pid);
    let elapsed = t0.elapsed().as_secs_f64();
    let m1 = http_get(listen, "/metrics");
    let runs1 = sum_metric(&m1, "coexist_probe_runs_total");
    let failures = sum_metric(&m1, "coexist_probe_failures_total");
    let lag1 = lag_buckets(&m1);
    // Window 2: one scrape every 2 s (Prometheus scrapes every 15-60 s), timed.
    let mut scrape_times = Vec::new();
    let mut body_len = 0;
    let cpu_s0 = cpu_seconds(pid);
    let mut buf = Vec::with_capacity(64 << 20);
    for _ in 0..10 {
        std::thread::sleep(Duration::from_secs(2));
        let (took, len) = timed_scrape(listen, &mut buf);
        body_len = len;
        scrape_times.push(took);
    }
    let scrape_cpu = (cpu_seconds(pid) - cpu_s0 - 20.0 * (cpu1 - cpu0) / elapsed) / 10.0;
    let rss = status_kib(pid, "VmRSS:");
    let hwm = status_kib(pid, "VmHWM:");
    let burst = o.reference.then(|| burst(listen, pid, &o));
    let _ = child.kill();
    let _ = child.wait();

    let probes = runs1 - runs0;
    let cpu = cpu1 - cpu0;
    // Lag percentiles from the histogram delta: the upper bound of the bucket that holds p.
    let prev: HashMap<String, f64> = lag0.iter().map(|(le, c)| (le.to_string(), *c)).collect();
    let delta: Vec<(f64, f64)> =
        lag1.iter().map(|(le, c)| (*le, c - prev.get(&le.to_string()).copied().unwrap_or(0.0))).collect();
    let total = delta.last().map_or(0.0, |d| d.1);
    let pct = |p: f64| delta.iter().find(|(_, c)| *c >= p * total).map_or(f64::NAN, |d| d.0);
    scrape_times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("instances                 {instances}");
    println!("window                    {elapsed:.1} s");
    println!(
        "probes run                {probes:.0} ({:.0}/s), failures in total {failures:.0}",
        probes / elapsed
    );
    println!("agent CPU                 {cpu:.2} s ({:.1}% of one core)", 100.0 * cpu / elapsed);
    println!("CPU per probe             {:.3} ms", 1000.0 * cpu / probes);
    println!(
        "RSS                       {:.1} MiB (peak {:.1} MiB)",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    println!("schedule lag p50 / p99    <= {} s / <= {} s (histogram bucket bounds)", pct(0.5), pct(0.99));
    println!(
        "/metrics                  median {:.1} ms, max {:.1} ms over {} scrapes ({:.1} MiB)",
        ms(scrape_times[scrape_times.len() / 2]),
        ms(*scrape_times.last().unwrap()),
        scrape_times.len(),
        body_len as f64 / (1024.0 * 1024.0)
    );
    println!(
        "CPU per scrape            {:.1} ms (agent CPU during scrapes minus the probing rate)",
        scrape_cpu * 1000.0
    );
    if let Some(b) = burst {
        println!("--- burst: {} clients scraping for {} s", o.scrapers, o.burst.as_secs());
        println!(
            "requests                  {} /metrics, {} /api/v1/status, {} answered 503",
            b.scrapes, b.statuses, b.busy
        );
        println!("/metrics under burst      p50 {:.0} ms, p99 {:.0} ms", b.scrape_p50_ms, b.scrape_p99_ms);
        println!("false failures            {:.0} (every target is healthy) {:?}", b.failures, b.reasons);
        println!("probes run during burst   {:.0}", b.probes);
        println!("schedule lag p99          <= {} s (histogram bucket bound)", b.lag_p99);
        println!(
            "reference (50 ms peer)    {} runs seen, p1 {:.1} ms, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            b.reference.len(),
            pct_of(&b.reference, 0.01),
            pct_of(&b.reference, 0.5),
            pct_of(&b.reference, 0.99),
            b.reference.last().copied().unwrap_or(f64::NAN)
        );
        println!(
            "RSS                       {:.1} MiB before, {:.1} MiB at the end, {:.1} MiB a minute later",
            b.rss_before as f64 / 1024.0,
            b.rss_end as f64 / 1024.0,
            b.rss_after as f64 / 1024.0
        );
    }
    drop(dns);
}

/// Answers SIP OPTIONS over UDP after `delay`.
async fn delayed_sip_udp(sock: Arc<tokio::net::UdpSocket>, delay: Duration) {
    use coexistd::sip::message::{self, Parsed};
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf).await else { continue };
        let Ok(Parsed::Complete(req, _)) = message::parse(&buf[..n], false) else { continue };
        let resp = message::response_to(&req, 200, "OK", "reference");
        let sock = sock.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = sock.send_to(&resp, peer).await;
        });
    }
}

struct Burst {
    scrapes: usize,
    statuses: usize,
    busy: usize,
    scrape_p50_ms: f64,
    scrape_p99_ms: f64,
    failures: f64,
    reasons: Vec<(String, f64)>,
    probes: f64,
    lag_p99: f64,
    /// The reference check's durations (ms), sorted.
    reference: Vec<f64>,
    rss_before: u64,
    rss_end: u64,
    rss_after: u64,
}

/// `coexist_probe_failures_total` summed by reason.
fn by_reason(text: &str) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = Vec::new();
    for l in text.lines().filter(|l| l.starts_with("coexist_probe_failures_total{")) {
        let Some(r) = l.split("reason=\"").nth(1).and_then(|r| r.split('"').next()) else { continue };
        let Some(v) = l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()) else { continue };
        match out.iter_mut().find(|(x, _)| x == r) {
            Some(e) => e.1 += v,
            None => out.push((r.to_owned(), v)),
        }
    }
    out
}

fn pct_of(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// One sample line's value for `name` with `check="reference"`.
fn reference_sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| {
            l.starts_with(name) && l[name.len()..].starts_with('{') && l.contains("check=\"reference\"")
        })
        .and_then(|l| l.rsplit_once(' ')?.1.parse().ok())
}

fn burst(listen: SocketAddr, pid: u32, o: &Opts) -> Burst {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let m0 = http_get(listen, "/metrics");
    let (runs0, fail0, lag0) = (
        sum_metric(&m0, "coexist_probe_runs_total"),
        sum_metric(&m0, "coexist_probe_failures_total"),
        lag_buckets(&m0),
    );
    let rss_before = status_kib(pid, "VmRSS:");
    let stop = Arc::new(AtomicBool::new(false));
    let (scrapes, statuses, busy) =
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let times = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for i in 0..o.scrapers {
        let (stop, scrapes, statuses, busy, times) =
            (stop.clone(), scrapes.clone(), statuses.clone(), busy.clone(), times.clone());
        threads.push(std::thread::spawn(move || {
            // In production the scrapers are other machines. Here they share two cores
            // with the agent and the peers, so they run at the lowest priority: the
            // measurement is of the agent's isolation, not of this machine's scheduler.
            // SAFETY: setpriority has no memory-safety preconditions.
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, 0, 19);
            }
            let path = if i % 2 == 0 { "/metrics" } else { "/api/v1/status" };
            // Prometheus asks for gzip; a status client does not.
            let encoding = if i % 2 == 0 { "Accept-Encoding: gzip\r\n" } else { "" };
            let mut buf = Vec::with_capacity(8 << 20);
            while !stop.load(Ordering::Relaxed) {
                buf.clear();
                let t = Instant::now();
                let Ok(mut s) = TcpStream::connect(listen) else { continue };
                let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n{encoding}Connection: close\r\n\r\n");
                let _ = s.read_to_end(&mut buf);
                if buf.starts_with(b"HTTP/1.1 503") {
                    busy.fetch_add(1, Ordering::Relaxed);
                } else if i % 2 == 0 {
                    scrapes.fetch_add(1, Ordering::Relaxed);
                    times.lock().unwrap().push(t.elapsed().as_secs_f64() * 1000.0);
                } else {
                    statuses.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // The reference check's last duration, once per run (deduplicated by its timestamp).
    let mut reference = Vec::new();
    let mut last_ts = 0.0;
    let t0 = Instant::now();
    while t0.elapsed() < o.burst {
        std::thread::sleep(Duration::from_millis(300));
        let m = http_get(listen, "/metrics");
        let (Some(ts), Some(d)) = (
            reference_sample(&m, "coexist_probe_last_run_timestamp_seconds"),
            reference_sample(&m, "coexist_probe_last_duration_seconds"),
        ) else {
            continue;
        };
        if ts != last_ts {
            last_ts = ts;
            reference.push(d * 1000.0);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let m1 = http_get(listen, "/metrics");
    let rss_end = status_kib(pid, "VmRSS:");
    let prev: HashMap<String, f64> = lag0.iter().map(|(le, c)| (le.to_string(), *c)).collect();
    let delta: Vec<(f64, f64)> = lag_buckets(&m1)
        .iter()
        .map(|(le, c)| (*le, c - prev.get(&le.to_string()).copied().unwrap_or(0.0)))
        .collect();
    let total = delta.last().map_or(0.0, |d| d.1);
    let lag_p99 = delta.iter().find(|(_, c)| *c >= 0.99 * total).map_or(f64::NAN, |d| d.0);
    std::thread::sleep(o.rest);
    let rss_after = status_kib(pid, "VmRSS:");
    reference.sort_by(f64::total_cmp);
    let mut times = times.lock().unwrap().clone();
    times.sort_by(f64::total_cmp);
    Burst {
        scrapes: scrapes.load(Ordering::Relaxed),
        statuses: statuses.load(Ordering::Relaxed),
        busy: busy.load(Ordering::Relaxed),
        scrape_p50_ms: pct_of(&times, 0.5),
        scrape_p99_ms: pct_of(&times, 0.99),
        failures: sum_metric(&m1, "coexist_probe_failures_total") - fail0,
        reasons: {
            let (r0, r1) = (by_reason(&m0), by_reason(&m1));
            r1.into_iter()
                .map(|(r, n)| {
                    let before = r0.iter().find(|(x, _)| *x == r).map_or(0.0, |x| x.1);
                    (r, n - before)
                })
                .filter(|(_, n)| *n > 0.0)
                .collect()
        },
        probes: sum_metric(&m1, "coexist_probe_runs_total") - runs0,
        lag_p99,
        reference,
        rss_before,
        rss_end,
        rss_after,
    }
}
