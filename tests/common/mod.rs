//! Helpers shared by the integration tests: a real Knot DNS server and the agent binary.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod two_pools;

/// A free UDP+TCP port on 127.0.0.1 (taken then released; good enough for tests).
/// Whether the slow real-stack tests run: `COEXISTD_SLOW_TESTS=1` (`scripts/test.sh`
/// and CI set it; `cargo test` alone skips them, saying so).
#[allow(dead_code)]
pub fn slow_tests(name: &str) -> bool {
    let on = std::env::var("COEXISTD_SLOW_TESTS").is_ok_and(|v| v == "1");
    if !on {
        eprintln!("{name}: skipped (a slow test: set COEXISTD_SLOW_TESTS=1, as scripts/test.sh does)");
    }
    on
}

pub fn free_port() -> u16 {
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Panics with an install hint when a required program is missing: these tests are
/// meant to run against real peers, never to skip silently.
pub fn require(program: &str, package: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"] {
        let p = PathBuf::from(dir).join(program);
        if p.exists() {
            return p;
        }
    }
    panic!("{program} not found: install the Debian package {package} (.ci/run does)");
}

/// Knot DNS serving one zone from a temporary directory; killed on drop.
pub struct Knot {
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Child,
    zone: String,
    serial: u32,
}

impl Knot {
    /// Starts knotd authoritative for `zone` with the records in `body` (zone-file
    /// lines relative to the origin; SOA and NS are added).
    pub fn start(zone: &str, body: &str) -> Knot {
        let knotd = require("knotd", "knot");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let d = dir.path().display();
        let conf = format!(
            "server:\n    rundir: \"{d}\"\n    listen: 127.0.0.1@{port}\n\
             control:\n    listen: \"{d}/knot.sock\"\n\
             log:\n  - target: stderr\n    any: info\n\
             database:\n    storage: \"{d}/db\"\n\
             template:\n  - id: default\n    storage: \"{d}\"\n    zonefile-sync: -1\n    zonefile-load: whole\n    journal-content: none\n\
             zone:\n  - domain: {zone}\n    file: \"zone.txt\"\n"
        );
        std::fs::write(dir.path().join("knot.conf"), conf).unwrap();
        let mut k = Knot {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            child: Command::new("/bin/true").spawn().unwrap(),
            zone: zone.to_owned(),
            serial: 0,
        };
        k.write_zone(body);
        k.child = Command::new(knotd)
            .arg("-c")
            .arg(k.dir.path().join("knot.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start knotd");
        // Wait until the zone is loaded (knotd logs it), at most 10 s.
        let stderr = k.child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("loaded, serial") || line.contains("error") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(10)).expect("knotd did not load the zone in 10 s");
        assert!(line.contains("loaded"), "knotd: {line}");
        k
    }

    fn write_zone(&mut self, body: &str) {
        self.serial += 1;
        let text = format!(
            "$ORIGIN {z}.\n$TTL 60\n@ SOA ns1 hostmaster {s} 3600 600 86400 60\n@ NS ns1\nns1 A 127.0.0.1\n{body}\n",
            z = self.zone,
            s = self.serial
        );
        std::fs::write(self.dir.path().join("zone.txt"), text).unwrap();
    }

    /// Replaces the zone's records and makes knotd serve them (blocking reload).
    pub fn set_records(&mut self, body: &str) {
        self.write_zone(body);
        let out = Command::new(require("knotc", "knot"))
            .arg("-c")
            .arg(self.dir.path().join("knot.conf"))
            .args(["-b", "zone-reload", &self.zone])
            .output()
            .unwrap();
        assert!(out.status.success(), "knotc: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The agent binary, started with a config file; killed on drop unless stopped.
pub struct Agent {
    pub child: Child,
    pub listen: SocketAddr,
    pub config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// Writes `config` (with `{listen}` replaced) and runs `coexistd run` on it.
    pub fn start(config: &str) -> Agent {
        Agent::start_with(config, &[])
    }

    /// Like [`Agent::start`] with extra arguments to `coexistd run`.
    pub fn start_with(config: &str, args: &[&str]) -> Agent {
        Agent::start_env(config, args, &[])
    }

    /// Like [`Agent::start_with`] with environment variables, logging at `info`.
    pub fn start_env(config: &str, args: &[&str], env: &[(&str, &str)]) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let path = dir.path().join("coexistd.toml");
        std::fs::write(&path, config.replace("{listen}", &listen.to_string())).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_coexistd"))
            .args(["run", "--config"])
            .arg(&path)
            .args(args)
            .env("RUST_LOG", if env.is_empty() { "warn" } else { "info" })
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut a = Agent { child, listen, config: path, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while http(a.listen, "GET", "/-/healthy").is_err() {
            if let Ok(Some(st)) = a.child.try_wait() {
                panic!("agent exited ({st}) before serving:\n{}", a.stderr());
            }
            assert!(Instant::now() < deadline, "agent did not serve within 10 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        a
    }

    /// Everything it wrote on standard error (once it has been killed).
    pub fn stderr(&mut self) -> String {
        let _ = self.child.wait();
        let mut s = String::new();
        if let Some(e) = self.child.stderr.as_mut() {
            let _ = std::io::Read::read_to_string(e, &mut s);
        }
        s
    }

    /// GET a path; (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        http(self.listen, "GET", path).unwrap()
    }

    /// Polls `/metrics` until `pred` holds, at most `within`; returns the last scrape.
    pub fn wait_metrics(&self, within: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let (_, body) = self.get("/metrics");
            if pred(&body) {
                return body;
            }
            assert!(Instant::now() < deadline, "condition not met within {within:?}; last scrape:\n{body}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 client (tests only): one request, `Connection: close`.
pub fn http(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    http_with(addr, method, path, &[])
}

/// Same, with extra request headers.
pub fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status: u16 = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = match text.find("\r\n\r\n") {
        Some(i) => dechunk(&text[..i], &text[i + 4..]),
        None => String::new(),
    };
    Ok((status, body))
}

fn dechunk(head: &str, body: &str) -> String {
    if !head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return body.to_owned();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some(i) = rest.find("\r\n") {
        let n = usize::from_str_radix(rest[..i].trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[i + 2..i + 2 + n]);
        rest = &rest[i + 2 + n + 2..];
    }
    out
}

/// The value of the first sample whose line starts with `series` (name and labels as
/// written in the exposition, up to the closing brace).
pub fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, ""));
        if n != name {
            return None;
        }
        labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))).then(|| value.parse().ok())?
    })
}

/// `openssl s_server` on 127.0.0.1, started with `args`; killed on drop.
pub struct SServer {
    pub port: u16,
    child: Child,
}

impl SServer {
    /// Starts `openssl s_server -accept 127.0.0.1:PORT ARGS...` in `dir` and waits for
    /// it to accept.
    pub fn start(dir: &std::path::Path, args: &[&str]) -> SServer {
        let openssl = require("openssl", "openssl");
        let port = free_port();
        let mut child = Command::new(openssl)
            .arg("s_server")
            .arg("-accept")
            .arg(format!("127.0.0.1:{port}"))
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start openssl s_server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("ACCEPT") {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(10)).is_err() {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("s_server {args:?} did not start: {}", String::from_utf8_lossy(&out.stderr));
        }
        SServer { port, child }
    }
}

impl Drop for SServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a test Kamailio does with OPTIONS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KamailioMode {
    /// 200 OK.
    Ok,
    /// 403 Forbidden.
    Forbidden,
    /// 200 OK after 3 s.
    Slow,
    /// Never answers.
    Drop,
}

/// TLS settings of a test Kamailio.
pub struct KamailioTls<'a> {
    pub cert: &'a std::path::Path,
    pub key: &'a std::path::Path,
    pub ca: &'a std::path::Path,
    /// `TLSv1.2+`, or `TLSv1` for a legacy (TLS 1.0-only, security level 0) server.
    pub method: &'a str,
    /// Require a client certificate signed by `ca`.
    pub require_client_cert: bool,
}

/// A real Kamailio (Debian's package, with its TLS module) listening on UDP and TCP
/// `port` and TLS `tls_port` on 127.0.0.1; killed on drop.
pub struct Kamailio {
    pub port: u16,
    pub tls_port: u16,
    child: Child,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Kamailio {
    pub fn start(mode: KamailioMode, tls: Option<KamailioTls<'_>>) -> Kamailio {
        Kamailio::start_at("127.0.0.1", free_port(), mode, tls)
    }

    /// Listens on `ip` (a loopback address) and `port` for UDP and TCP.
    pub fn start_at(ip: &str, port: u16, mode: KamailioMode, tls: Option<KamailioTls<'_>>) -> Kamailio {
        let tls_port = loop {
            let p = free_port();
            if p != port {
                break p;
            }
        };
        let reply = match mode {
            KamailioMode::Ok => "sl_send_reply(\"200\", \"OK\");",
            KamailioMode::Forbidden => "sl_send_reply(\"403\", \"Forbidden\");",
            KamailioMode::Slow => "usleep(\"3000000\"); sl_send_reply(\"200\", \"OK\");",
            KamailioMode::Drop => "drop;",
        };
        let routes = format!(
            "request_route {{\n  if (method == \"OPTIONS\") {{\n    {reply}\n    exit;\n  }}\n  sl_send_reply(\"405\", \"Method Not Allowed\");\n}}\n"
        );
        Kamailio::start_custom(ip, port, tls_port, tls, &format!("kamailio-test ({mode:?})"), "", &routes)
    }

    /// A Kamailio on `ip`: UDP and TCP on `port`, TLS on `tls_port` (with `tls`), the
    /// `Server` header `server`, extra module lines `prelude` (`{dir}` is its own
    /// directory) and the routing logic `routes`.
    pub fn start_custom(
        ip: &str,
        port: u16,
        tls_port: u16,
        tls: Option<KamailioTls<'_>>,
        server: &str,
        prelude: &str,
        routes: &str,
    ) -> Kamailio {
        let kamailio = require("kamailio", "kamailio and kamailio-tls-modules");
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = format!(
            "#!KAMAILIO\ndebug=2\nlog_stderror=yes\nchildren=2\ntcp_children=2\nauto_aliases=no\n\
             server_header=\"Server: {server}\"\n\
             listen=udp:{ip}:{port}\nlisten=tcp:{ip}:{port}\n\
             mpath=\"/usr/lib/x86_64-linux-gnu/kamailio/modules/\"\n\
             loadmodule \"sl.so\"\nloadmodule \"cfgutils.so\"\n"
        );
        if let Some(t) = &tls {
            let verify = if t.require_client_cert { "yes" } else { "no" };
            let legacy = if t.method == "TLSv1" { "cipher_list = ALL:@SECLEVEL=0\n" } else { "" };
            let tls_cfg = format!(
                "[server:default]\nmethod = {}\nverify_certificate = {verify}\nrequire_certificate = {verify}\n\
                 private_key = {}\ncertificate = {}\nca_list = {}\n{legacy}\n\
                 [client:default]\nverify_certificate = no\nrequire_certificate = no\n",
                t.method,
                t.key.display(),
                t.cert.display(),
                t.ca.display()
            );
            std::fs::write(dir.path().join("tls.cfg"), tls_cfg).unwrap();
            cfg.push_str(&format!(
                "enable_tls=yes\nlisten=tls:{ip}:{tls_port}\nloadmodule \"tls.so\"\n\
                 modparam(\"tls\", \"config\", \"{}\")\n",
                dir.path().join("tls.cfg").display()
            ));
        }
        cfg.push_str(&prelude.replace("{dir}", &dir.path().display().to_string()));
        cfg.push_str(routes);
        let path = dir.path().join("kamailio.cfg");
        std::fs::write(&path, cfg).unwrap();
        // A legacy server: Debian's OpenSSL refuses TLS 1.0 and SHA-1 signatures by
        // default, and Kamailio loads its certificate before applying cipher_list, so
        // the process-wide default goes to security level 0.
        let openssl_conf = dir.path().join("openssl.cnf");
        std::fs::write(
            &openssl_conf,
            "openssl_conf = default_conf\n[default_conf]\nssl_conf = ssl_sect\n[ssl_sect]\n\
             system_default = system_default_sect\n[system_default_sect]\nMinProtocol = TLSv1\n\
             CipherString = DEFAULT@SECLEVEL=0\n",
        )
        .unwrap();
        let legacy = tls.as_ref().is_some_and(|t| t.method == "TLSv1");
        let mut command = Command::new(kamailio);
        if legacy {
            command.env("OPENSSL_CONF", &openssl_conf);
        }
        // Its own process group: Kamailio forks workers, and all of them must go on drop.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command
            .arg("-f")
            .arg(&path)
            // At the default shared memory its TLS module corrupts memory under load.
            .args(["-m", "512", "-M", "32", "-DD", "-E", "-Y"])
            .arg(dir.path())
            .arg("-w")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kamailio");
        let mut k = Kamailio { port, tls_port, child, log: Default::default(), _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        let ready = |p: u16| std::net::TcpStream::connect((ip, p)).is_ok();
        while !(ready(port) && (tls.is_none() || ready(tls_port))) {
            if let Ok(Some(status)) = k.child.try_wait() {
                let mut err = String::new();
                let _ = std::io::Read::read_to_string(k.child.stderr.as_mut().unwrap(), &mut err);
                panic!("kamailio exited ({status}): {err}");
            }
            assert!(Instant::now() < deadline, "kamailio did not listen within 10 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        // Keep its log (and drain the pipe so that it never blocks).
        let stderr = k.child.stderr.take().unwrap();
        let log = k.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        });
        k
    }

    /// Its working directory (its control socket, when it has one).
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// `kamcmd` against the control socket of a Kamailio whose configuration loads
    /// `ctl.so` with `unix:{dir}/ctl.sock` (as an operator changes a running pool).
    pub fn kamcmd(&self, args: &[&str]) -> String {
        let sock = self.dir().join("ctl.sock");
        let out = Command::new(require("kamcmd", "kamailio"))
            .arg("-s")
            .arg(format!("unix:{}", sock.display()))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "kamcmd {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Its log so far (errors and warnings), for assertion messages.
    pub fn log(&self) -> String {
        let lines = self.log.lock().unwrap();
        lines
            .iter()
            .filter(|l| l.contains("ERROR") || l.contains("WARN") || l.contains("CRIT"))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops it and its workers (as a member failure would).
    pub fn stop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A client certificate from `ca` written into `dir`, as the `[tls]` keys that present it.
pub fn client_identity_toml(ca: &coexistd::lab::pki::Ca, dir: &std::path::Path) -> String {
    use coexistd::lab::pki::Leaf;
    let c = ca
        .issue(&Leaf {
            cn: "probe.contoso.test",
            sans: &["probe.contoso.test"],
            client: true,
            ..Leaf::default()
        })
        .unwrap();
    let (cert, key) = c.write(dir, "client", &[]).unwrap();
    format!("client_cert = \"{}\"\nclient_key = \"{}\"", cert.display(), key.display())
}

/// Parses `config` and runs its first check instance once, as the scheduler would.
pub async fn probe_once(config: &str) -> coexistd::kinds::Outcome {
    let config = coexistd::config::Config::parse(config, "t").unwrap();
    let cx = coexistd::agent::probe_context(&config).unwrap();
    let prober = coexistd::run::scheduler::LiveProber(std::sync::Arc::new(cx));
    coexistd::run::scheduler::run_once(&prober, &config.instances[0]).await.0
}

/// `/metrics` as OpenMetrics.
pub fn openmetrics(addr: SocketAddr) -> String {
    let (code, body) =
        http_with(addr, "GET", "/metrics", &[("Accept", "application/openmetrics-text; version=1.0.0")])
            .unwrap();
    assert_eq!(code, 200);
    body
}

/// Held by every test that runs `coexistd demo`: the demo's lab listens on fixed
/// loopback addresses, so two demos in one test binary cannot run at once.
pub static DEMO_LAB: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A `coexistd demo` child, killed on drop (also when an assertion fails first).
pub struct Demo(pub Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
