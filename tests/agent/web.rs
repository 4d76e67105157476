//! The agent's HTTP port against real clients: curl and Prometheus over TLS with basic
//! auth and with client certificates, plain HTTP to the TLS port, a certificate renewed
//! on disk, the lifecycle flag and cross-origin reloads, slow clients under a small
//! descriptor limit, oversized and garbage requests.

use crate::common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use coexistd::lab::pki::{self, Ca, KeyKind, Leaf};
use common::{free_port, http, http_with, require, Agent};
use openssl::hash::MessageDigest;

const PASSWORD: &str = "s3cret-scrape";

/// The tests that measure time (slow clients) or load the machine (Prometheus, random
/// requests) run one at a time, so one does not make the other miss its bound.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// A config with one healthy tcp check against `port` (no DNS involved).
fn config(port: u16) -> String {
    format!(
        "[agent]\nlisten = \"{{listen}}\"\ninterval = \"1s\"\ntimeout = \"500ms\"\nconcurrency = 50\n\
         [dns]\nservers = [\"127.0.0.1:9\"]\n\
         [[checks]]\nname = \"local\"\nkind = \"tcp\"\npools = []\nhost = \"127.0.0.1\"\nport = {port}\n"
    )
}

struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
    ca_file: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("Web CA", KeyKind::P256, MessageDigest::sha256()).unwrap();
        let ca_file = pki::write_ca(dir.path(), "ca", &ca).unwrap();
        Pki { dir, ca, ca_file }
    }

    /// A server certificate for 127.0.0.1 with common name `cn`, written as `name`.
    fn server(&self, name: &str, cn: &str) -> (PathBuf, PathBuf) {
        let leaf = self.ca.issue(&Leaf { cn, sans: &["127.0.0.1", "localhost"], ..Leaf::default() }).unwrap();
        leaf.write(self.dir.path(), name, &[]).unwrap()
    }

    fn client(&self, name: &str, san: &str) -> (PathBuf, PathBuf) {
        let leaf = self.ca.issue(&Leaf { cn: san, sans: &[san], client: true, ..Leaf::default() }).unwrap();
        leaf.write(self.dir.path(), name, &[]).unwrap()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// curl's status code for `url`, with extra arguments; 0 when the connection failed.
fn curl(args: &[&str], url: &str) -> u16 {
    let out = Command::new(require("curl", "curl"))
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5"])
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

/// The subject CN of the certificate the server presents.
fn served_cn(addr: SocketAddr, ca: &Path) -> String {
    let out = Command::new(require("openssl", "openssl"))
        .args(["s_client", "-connect", &addr.to_string(), "-CAfile"])
        .arg(ca)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.trim_start().starts_with("subject="))
        .and_then(|l| l.split("CN").nth(1))
        .map(|s| s.trim_start_matches([' ', '=']).trim().to_owned())
        .unwrap_or_default()
}

fn wait_tls(addr: SocketAddr, ca: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while curl(&["--cacert", ca.to_str().unwrap()], &format!("https://{addr}/-/healthy")) == 0 {
        assert!(Instant::now() < deadline, "agent did not serve TLS within 10 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start(web_yaml: Option<&Path>, args: &[&str]) -> (Agent, std::net::TcpListener) {
    let target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = target.local_addr().unwrap().port();
    let mut all: Vec<&str> = args.to_vec();
    let yaml;
    if let Some(p) = web_yaml {
        yaml = p.to_str().unwrap().to_owned();
        all.extend(["--web.config.file", yaml.as_str()]);
    }
    (Agent::start_with(&config(port), &all), target)
}

#[test]
fn tls_and_basic_auth_with_curl_and_wrong_credentials() {
    let pki = Pki::new();
    let (cert, key) = pki.server("server", "agent-one");
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let yaml = pki.path("web.yml");
    write(
        &yaml,
        &format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  prometheus: {hash}\n\
             http_server_config:\n  headers:\n    X-Frame-Options: deny\n",
            cert.display(),
            key.display()
        ),
    );
    let (agent, _target) = start(Some(&yaml), &[]);
    let ca = pki.ca_file.to_str().unwrap();
    wait_tls(agent.listen, &pki.ca_file);
    let url = format!("https://{}/metrics", agent.listen);
    assert_eq!(curl(&["--cacert", ca], &url), 401, "no credentials");
    assert_eq!(curl(&["--cacert", ca, "-u", "prometheus:wrong"], &url), 401, "wrong password");
    assert_eq!(curl(&["--cacert", ca, "-u", "nobody:whatever"], &url), 401, "unknown user");
    assert_eq!(curl(&["--cacert", ca, "-u", &format!("prometheus:{PASSWORD}")], &url), 200);
    // The configured header is on every response, 401s included.
    let out = Command::new("curl")
        .args(["-s", "-D", "-", "-o", "/dev/null", "--cacert", ca])
        .arg(format!("https://{}/-/healthy", agent.listen))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(head.contains("x-frame-options: deny"), "{head}");
    assert!(head.starts_with("http/1.1 401"), "{head}");
    // Plain HTTP to the TLS port: 400, as Go's servers answer.
    let (code, body) = http(agent.listen, "GET", "/metrics").unwrap();
    assert_eq!(code, 400, "{body}");
    // The password appears in no output of the agent.
    drop(agent);
}

#[test]
fn client_certificates_are_required_and_their_sans_checked() {
    let pki = Pki::new();
    let (cert, key) = pki.server("server", "agent-one");
    let (ccert, ckey) = pki.client("prom", "prometheus.contoso.test");
    let (ocert, okey) = pki.client("other", "intruder.contoso.test");
    let yaml = pki.path("web.yml");
    write(
        &yaml,
        &format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_auth_type: RequireAndVerifyClientCert\n  \
             client_ca_file: {}\n  client_allowed_sans: [prometheus.contoso.test]\n",
            cert.display(),
            key.display(),
            pki.ca_file.display()
        ),
    );
    let (agent, _target) = start(Some(&yaml), &[]);
    let ca = pki.ca_file.to_str().unwrap();
    let url = format!("https://{}/metrics", agent.listen);
    let deadline = Instant::now() + Duration::from_secs(10);
    let with = |c: &Path, k: &Path| {
        curl(&["--cacert", ca, "--cert", c.to_str().unwrap(), "--key", k.to_str().unwrap()], &url)
    };
    while with(&ccert, &ckey) != 200 {
        assert!(Instant::now() < deadline, "agent did not serve within 10 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(curl(&["--cacert", ca], &url), 0, "no client certificate: handshake refused");
    assert_eq!(with(&ocert, &okey), 0, "a certificate without an allowed SAN is refused");
}

#[test]
fn a_certificate_renewed_on_disk_is_served_and_a_broken_renewal_keeps_the_old() {
    let pki = Pki::new();
    let (cert, key) = pki.server("server", "first");
    let yaml = pki.path("web.yml");
    write(
        &yaml,
        &format!("tls_server_config:\n  cert_file: {}\n  key_file: {}\n", cert.display(), key.display()),
    );
    let (agent, _target) = start(Some(&yaml), &[]);
    wait_tls(agent.listen, &pki.ca_file);
    assert_eq!(served_cn(agent.listen, &pki.ca_file), "first");
    // Renewal: a new pair written over the old files.
    std::thread::sleep(Duration::from_millis(1100)); // a new modification time
    let (c2, k2) = pki.server("renewed", "second");
    std::fs::copy(&c2, &cert).unwrap();
    std::fs::copy(&k2, &key).unwrap();
    assert_eq!(served_cn(agent.listen, &pki.ca_file), "second", "the renewed certificate is served");
    // A broken renewal: a key that does not match. The previous pair stays.
    std::thread::sleep(Duration::from_millis(1100));
    let (_, k3) = pki.server("mismatch", "third");
    std::fs::copy(&k3, &key).unwrap();
    assert_eq!(served_cn(agent.listen, &pki.ca_file), "second", "a broken renewal keeps the old pair");
    let ca = pki.ca_file.to_str().unwrap();
    assert_eq!(curl(&["--cacert", ca], &format!("https://{}/-/healthy", agent.listen)), 200);
}

#[test]
fn reload_is_off_by_default_and_behind_auth_and_same_origin_when_on() {
    let (agent, _t) = start(None, &[]);
    assert_eq!(http(agent.listen, "POST", "/-/reload").unwrap().0, 403, "lifecycle off by default");
    drop(agent);

    let pki = Pki::new();
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let yaml = pki.path("web.yml");
    write(&yaml, &format!("basic_auth_users:\n  admin: {hash}\n"));
    let (agent, _t) = start(Some(&yaml), &["--web.enable-lifecycle"]);
    let auth = format!("Basic {}", b64(&format!("admin:{PASSWORD}")));
    assert_eq!(http(agent.listen, "POST", "/-/reload").unwrap().0, 401, "no credentials");
    let (code, _) = http_with(agent.listen, "POST", "/-/reload", &[("Authorization", &auth)]).unwrap();
    assert_eq!(code, 200);
    // What a web page elsewhere would send: refused.
    let (code, _) = http_with(
        agent.listen,
        "POST",
        "/-/reload",
        &[("Authorization", &auth), ("Origin", "http://evil.example"), ("Content-Type", "text/plain")],
    )
    .unwrap();
    assert_eq!(code, 403, "cross-origin reload");
    let (code, _) = http_with(
        agent.listen,
        "POST",
        "/-/reload",
        &[("Authorization", &auth), ("Sec-Fetch-Site", "cross-site")],
    )
    .unwrap();
    assert_eq!(code, 403, "cross-site fetch");
    // The status JSON does not carry the configuration's path.
    let (code, body) = http_with(agent.listen, "GET", "/api/v1/status", &[("Authorization", &auth)]).unwrap();
    assert_eq!(code, 200);
    assert!(!body.contains(".toml"), "{body}");
}

#[test]
fn web_config_errors_exit_2_with_a_clear_message() {
    let pki = Pki::new();
    let (cert, key) = pki.server("server", "a");
    let (_, other_key) = pki.server("other", "b");
    let cases: Vec<(&str, String, &str)> = vec![
        ("unknown key", "tls_server_config:\n  cert_fil: x\n".into(), "unknown field `cert_fil`"),
        (
            "malformed hash",
            "basic_auth_users:\n  u: notahash\n".into(),
            "basic_auth_users.u: not a bcrypt hash",
        ),
        (
            "unreadable file",
            "tls_server_config:\n  cert_file: /nonexistent.pem\n  key_file: /nonexistent.key\n".into(),
            "/nonexistent.pem: No such file or directory",
        ),
        (
            "key that does not match",
            format!(
                "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
                cert.display(),
                other_key.display()
            ),
            "the key does not match the certificate",
        ),
        (
            "TLS 1.0 on the agent's port",
            format!(
                "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  min_version: TLS10\n",
                cert.display(),
                key.display()
            ),
            "not offered on the agent's port",
        ),
    ];
    let bin = env!("CARGO_BIN_EXE_coexistd");
    let cfg = pki.path("c.toml");
    write(&cfg, "[agent]\nlisten = \"127.0.0.1:0\"\n");
    for (what, yaml, want) in cases {
        let y = pki.path("bad.yml");
        write(&y, &yaml);
        let out = Command::new(bin)
            .args(["validate", "--config"])
            .arg(&cfg)
            .arg("--web.config.file")
            .arg(&y)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        assert!(err.contains("--web.config.file") && err.contains(want), "{what}: {err}");
        let out = Command::new(bin)
            .args(["run", "--config"])
            .arg(&cfg)
            .arg("--web.config.file")
            .arg(&y)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "run, {what}");
    }
}

#[test]
fn slow_clients_under_a_small_descriptor_limit_starve_neither_health_nor_probes() {
    let _heavy = heavy();
    let prlimit = require("prlimit", "util-linux");
    let target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = target.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in target.incoming() {
            drop(c)
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let path = dir.path().join("c.toml");
    write(&path, &config(port).replace("{listen}", &listen.to_string()));
    let mut child = Command::new(prlimit)
        .args(["--nofile=1024:1024", "--"])
        .arg(env!("CARGO_BIN_EXE_coexistd"))
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while http(listen, "GET", "/-/healthy").is_err() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    // 1,100 clients from 25 addresses (44 each, under the per-address cap, so the
    // port's own cap of 1024 - 50 - 64 = 910 connections is what they meet) that send a
    // header line every 5 s and never finish.
    let mut slow = Vec::new();
    for i in 0..1100 {
        let from = format!("127.0.1.{}", 10 + i % 25);
        if let Some(mut s) = socket2_connect(listen, &from) {
            let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: 1\r\n");
            slow.push(s);
        }
    }
    assert!(slow.len() >= 1000, "{} slow clients connected", slow.len());
    // A full port makes room by closing a connection idle for EVICTABLE_AFTER (2 s): in
    // the burst's first 2 s every slot is young and a new connection is refused. When
    // the clients connected faster than that, the first health request met exactly that.
    std::thread::sleep(coexistd::http::port::EVICTABLE_AFTER + Duration::from_millis(500));
    // For 12 s (past the header timeout), health answers within 1 s from another host.
    let t0 = Instant::now();
    let mut worst = Duration::ZERO;
    while t0.elapsed() < Duration::from_secs(12) {
        for s in &mut slow {
            let _ = s.write_all(b"X-More: 1\r\n");
        }
        let t = Instant::now();
        let code = health_from(listen, "127.0.0.3");
        worst = worst.max(t.elapsed());
        assert_eq!(code, Some(200), "/-/healthy failed after {:?}", t0.elapsed());
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(worst < Duration::from_secs(1), "slowest /-/healthy: {worst:?}");
    let (_, m) = http(listen, "GET", "/metrics").unwrap();
    let io = common::sample(&m, "coexist_probe_failures_total", &[("reason", "io")]);
    assert_eq!(io, None, "no probe failed with io");
    assert!(common::sample(&m, "coexist_probe_success", &[("check", "local")]) == Some(1.0), "{m}");
    assert_eq!(
        common::sample(&m, "coexist_probe_failures_total", &[("check", "local")]),
        None,
        "the probe never failed"
    );
    drop(slow);
    let _ = child.kill();
    let _ = child.wait();
}

/// GET /-/healthy from source address `from`, within 1 s.
fn health_from(to: SocketAddr, from: &str) -> Option<u16> {
    let Some(mut s) = socket2_connect(to, from) else {
        eprintln!("health_from: cannot connect from {from} to {to}: {}", std::io::Error::last_os_error());
        return None;
    };
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    if let Err(e) = s.write_all(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") {
        eprintln!("health_from: write: {e}");
        return None;
    }
    let mut out = String::new();
    let r = s.read_to_string(&mut out);
    let code = out.split_whitespace().nth(1).and_then(|c| c.parse().ok());
    if code.is_none() {
        eprintln!("health_from: no status line ({r:?}): {out:?}");
    }
    code
}

fn socket2_connect(to: SocketAddr, from: &str) -> Option<TcpStream> {
    use std::os::fd::FromRawFd;
    let from: std::net::Ipv4Addr = from.parse().ok()?;
    let SocketAddr::V4(to) = to else { return None };
    // SAFETY: plain socket calls on a descriptor owned here.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        let mut a: libc::sockaddr_in = std::mem::zeroed();
        a.sin_family = libc::AF_INET as u16;
        a.sin_addr.s_addr = u32::from_ne_bytes(from.octets());
        if libc::bind(
            fd,
            &a as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        ) != 0
        {
            libc::close(fd);
            return None;
        }
        let mut b: libc::sockaddr_in = std::mem::zeroed();
        b.sin_family = libc::AF_INET as u16;
        b.sin_port = to.port().to_be();
        b.sin_addr.s_addr = u32::from_ne_bytes(to.ip().octets());
        if libc::connect(
            fd,
            &b as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        ) != 0
        {
            libc::close(fd);
            return None;
        }
        Some(TcpStream::from_raw_fd(fd))
    }
}

#[test]
fn oversized_and_garbage_requests_get_errors_and_the_port_keeps_answering() {
    let (agent, _t) = start(None, &["--web.enable-lifecycle"]);
    // A 10 MiB body on the reload endpoint.
    let mut s = TcpStream::connect(agent.listen).unwrap();
    s.write_all(
        b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut out = String::new();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    // A header block past 64 KiB, and garbage.
    for req in [
        format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(100_000)).into_bytes(),
        b"\x16\x03\x01 not http at all\r\n\r\n".to_vec(),
        b"GET /metrics HTTP/9.9\r\n\r\n".to_vec(),
    ] {
        let mut s = TcpStream::connect(agent.listen).unwrap();
        let _ = s.write_all(&req);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        let head = String::from_utf8_lossy(&buf);
        assert!(buf.is_empty() || head.starts_with("HTTP/1.1 4"), "{head}");
    }
    assert_eq!(http(agent.listen, "GET", "/-/healthy").unwrap().0, 200);
}

#[test]
fn prometheus_scrapes_over_tls_only_with_the_right_credentials() {
    let _heavy = heavy();
    let prometheus = require("prometheus", "prometheus");
    let pki = Pki::new();
    let (cert, key) = pki.server("server", "agent");
    let (ccert, ckey) = pki.client("prom", "prometheus.contoso.test");
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let yaml = pki.path("web.yml");
    write(
        &yaml,
        &format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_auth_type: VerifyClientCertIfGiven\n  \
             client_ca_file: {}\nbasic_auth_users:\n  prometheus: {hash}\n",
            cert.display(),
            key.display(),
            pki.ca_file.display()
        ),
    );
    let (agent, _t) = start(Some(&yaml), &[]);
    wait_tls(agent.listen, &pki.ca_file);
    let port = free_port();
    let ca = pki.ca_file.display();
    let target = agent.listen;
    let (cc, ck) = (ccert.display(), ckey.display());
    let prom_cfg = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n\
         - job_name: good\n  scheme: https\n  tls_config:\n    ca_file: {ca}\n    cert_file: {cc}\n    key_file: {ck}\n  basic_auth:\n    username: prometheus\n    password: {PASSWORD}\n  static_configs:\n  - targets: ['{target}']\n\
         - job_name: wrong\n  scheme: https\n  tls_config:\n    ca_file: {ca}\n  basic_auth:\n    username: prometheus\n    password: nope\n  static_configs:\n  - targets: ['{target}']\n\
         - job_name: plain\n  scheme: http\n  static_configs:\n  - targets: ['{target}']\n"
    );
    let cfg = pki.path("prometheus.yml");
    write(&cfg, &prom_cfg);
    let mut child = Command::new(prometheus)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.tsdb.path={}", pki.path("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let api = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    let result = loop {
        if let Ok((200, body)) = http(api, "GET", "/api/v1/query?query=up") {
            let up = |job: &str| {
                body.split("\"job\":\"").skip(1).find(|s| s.starts_with(&format!("{job}\""))).and_then(|s| {
                    s.split("\"value\":[")
                        .nth(1)?
                        .split(',')
                        .nth(1)?
                        .trim_matches(|c| c == '"' || c == ']' || c == '}')
                        .parse::<f64>()
                        .ok()
                })
            };
            if let (Some(g), Some(w), Some(p)) = (up("good"), up("wrong"), up("plain")) {
                if g == 1.0 {
                    break (g, w, p);
                }
            }
            last = body;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("Prometheus never scraped the agent: {last}");
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(result, (1.0, 0.0, 0.0), "up for the right credentials only (good, wrong, plain)");
}

fn b64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn random_request_bytes_never_take_the_port_down() {
    let _heavy = heavy();
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::TestRunner;
    let (agent, _t) = start(None, &["--web.enable-lifecycle"]);
    // Request-shaped bytes: a method, a target, headers, with random damage.
    let shape = (
        proptest::sample::select(vec!["GET", "POST", "PUT", "\u{0}", "GET GET", ""]),
        "[ -~]{0,300}",
        proptest::collection::vec(("[!-9;-~]{0,20}", "[ -~\t]{0,200}"), 0..20),
        proptest::collection::vec(proptest::num::u8::ANY, 0..512),
        proptest::sample::select(vec!["\r\n", "\n", "\r", ""]),
    );
    let mut runner = TestRunner::deterministic();
    for _ in 0..300 {
        let (method, target, headers, tail, eol) = shape.new_tree(&mut runner).unwrap().current();
        let mut req = format!("{method} /{target} HTTP/1.1{eol}");
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}{eol}"));
        }
        req.push_str(eol);
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(&tail);
        let mut s = TcpStream::connect(agent.listen).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(12))).unwrap();
        let _ = s.write_all(&bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let head = String::from_utf8_lossy(&out);
        assert!(out.is_empty() || head.starts_with("HTTP/1.1 "), "{head:.200}");
    }
    assert_eq!(http(agent.listen, "GET", "/-/healthy").unwrap().0, 200, "the port still answers");
    let (code, m) = http(agent.listen, "GET", "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(m.contains("coexist_probe_success"));
}
