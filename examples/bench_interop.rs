//! Benchmark of the test-user kinds (not a test): the agent binary in its own process
//! against the demo lab's two pools run here (registrars and proxies, in this process),
//! measured from outside through /proc.
//!
//! ```text
//! cargo build --release && cargo run --release --example bench_interop -- [options]
//!   --check register|im|im-invite|presence|call|matrix
//!                                   what runs (default im): sip_register for the users,
//!                                   sip_im (MESSAGE or an INVITE session), sip_presence or
//!                                   sip_call for the pairs, or "matrix": sip_im MESSAGE,
//!                                   sip_presence and sip_call for the pairs
//!   --pairs alice:bob,bob:alice     sip_im pairs (default alice:bob: TLS to TLS through
//!                                   both pools); "all": every ordered pair of the 4 users
//!   --interval 200ms --timeout 150ms
//!   --warmup 10s --window 60s
//!   --users 1000                    1,000 more users (user0001…, TLS, homed alternately on
//!                                   each pool) registered as endpoints: one sip_im check
//!                                   from user0001 to every other at --interval; reports
//!                                   the agent's RSS, file descriptors and registrations
//!   --bin PATH                      the agent binary (default target/release/coexistd)
//! ```
//!
//! Reports the agent's CPU time over the window divided by the probes it ran (the
//! endpoints' refreshes and keep-alives included), its RSS and open descriptors.
//! The lab listens on 127.0.10.1 and 127.0.20.1-2 (as `coexistd demo` does: not both at
//! once).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use coexistd::lab::{Lab, LAB_USERS};

struct Opts {
    check: String,
    pairs: String,
    interval: String,
    timeout: String,
    warmup: Duration,
    window: Duration,
    users: usize,
    bin: String,
}

fn opts() -> Opts {
    let mut o = Opts {
        check: "im".into(),
        pairs: "alice:bob".into(),
        interval: "200ms".into(),
        timeout: "150ms".into(),
        warmup: Duration::from_secs(10),
        window: Duration::from_secs(60),
        users: 0,
        bin: "target/release/coexistd".into(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--check" => o.check = v,
            "--pairs" => o.pairs = v,
            "--interval" => o.interval = v,
            "--timeout" => o.timeout = v,
            "--warmup" => o.warmup = humantime::parse_duration(&v).unwrap(),
            "--window" => o.window = humantime::parse_duration(&v).unwrap(),
            "--users" => o.users = v.parse().unwrap(),
            "--bin" => o.bin = v,
            other => panic!("unknown option {other}"),
        }
        i += 2;
    }
    o
}

fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()
}

/// Sum of a metric's samples whose line contains every `filter`.
fn sum(metrics: &str, name: &str, filters: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split_whitespace().collect();
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

fn main() {
    let o = opts();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let lab = rt.block_on(Lab::start_with_users(o.users)).expect("lab (is `coexistd demo` running?)");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // The lab's configuration, its checks replaced by the one measured.
    let full = lab.config_text(listen);
    let mut config: String = full
        .split("[[checks]]")
        .next()
        .unwrap()
        .replace("interval = \"10s\"", &format!("interval = \"{}\"", o.interval))
        .replace("timeout = \"2s\"", &format!("timeout = \"{}\"", o.timeout));
    let users_part = full.split("# Test users").nth(1).unwrap().split("# Each registers").next().unwrap();
    config.push_str("# Test users");
    config.push_str(users_part);
    for i in 1..=o.users {
        let pool = if i % 2 == 1 { "ocs2007r2" } else { "lync2013" };
        config.push_str(&format!(
            "[[users]]\nname = \"user{i:04}\"\nuri = \"sip:user{i:04}@contoso.test\"\npool = \"{pool}\"\n\
             password_file = \"{}/user{i:04}.pass\"\n",
            lab.users_dir.display()
        ));
    }
    let quoted = |v: Vec<&str>| v.iter().map(|u| format!("\"{u}\"")).collect::<Vec<_>>().join(", ");
    if o.users > 0 {
        let to: Vec<String> = (2..=o.users).map(|i| format!("user{i:04}")).collect();
        config.push_str(&format!(
            "[[checks]]\nname = \"im\"\nkind = \"sip_im\"\nfrom = [\"user0001\"]\nto = [{}]\n",
            quoted(to.iter().map(String::as_str).collect())
        ));
    } else if o.check == "register" {
        config.push_str("[[checks]]\nname = \"register\"\nkind = \"sip_register\"\n");
    } else {
        let method = if o.check == "im-invite" { "INVITE" } else { "MESSAGE" };
        let kinds: Vec<(&str, String)> = match o.check.as_str() {
            "presence" => vec![("presence", "kind = \"sip_presence\"\n".to_owned())],
            "call" => vec![("call", "kind = \"sip_call\"\n".to_owned())],
            "matrix" => vec![
                ("im", "kind = \"sip_im\"\nmethod = \"MESSAGE\"\n".to_owned()),
                ("presence", "kind = \"sip_presence\"\n".to_owned()),
                ("call", "kind = \"sip_call\"\n".to_owned()),
            ],
            _ => vec![("im", format!("kind = \"sip_im\"\nmethod = \"{method}\"\n"))],
        };
        if o.pairs == "all" {
            for (name, kind) in &kinds {
                config.push_str(&format!("[[checks]]\nname = \"{name}\"\n{kind}"));
            }
        } else {
            for (n, pair) in o.pairs.split(',').enumerate() {
                let (a, b) = pair.split_once(':').expect("--pairs from:to,…");
                for (name, kind) in &kinds {
                    config.push_str(&format!(
                        "[[checks]]\nname = \"{name}{n}\"\n{kind}from = [\"{a}\"]\nto = [\"{b}\"]\n"
                    ));
                }
            }
        }
    }
    let _ = LAB_USERS;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.toml");
    std::fs::write(&path, &config).unwrap();
    let mut child = Command::new(&o.bin)
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("agent binary (cargo build --release first)");
    let pid = child.id();
    std::thread::sleep(o.warmup);
    let m0 = get(listen, "/metrics");
    let (runs0, cpu0, t0) = (sum(&m0, "coexist_probe_runs_total", &[]), cpu_seconds(pid), Instant::now());
    std::thread::sleep(o.window);
    let m1 = get(listen, "/metrics");
    let (runs1, cpu1, secs) =
        (sum(&m1, "coexist_probe_runs_total", &[]), cpu_seconds(pid), t0.elapsed().as_secs_f64());
    let runs = runs1 - runs0;
    let failures =
        sum(&m1, "coexist_probe_failures_total", &[]) - sum(&m0, "coexist_probe_failures_total", &[]);
    let registered = sum(&m1, "coexist_user_registered", &[]);
    let delivery: Vec<f64> = m1
        .lines()
        .filter(|l| {
            l.starts_with("coexist_sip_delivery_seconds{")
                || l.starts_with("coexist_presence_delivery_seconds{")
                || l.starts_with("coexist_call_setup_seconds{")
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse().ok())
        .collect();
    let cpu = cpu1 - cpu0;
    println!(
        "check {} pairs {} users +{} interval {} window {:.0} s",
        o.check, o.pairs, o.users, o.interval, secs
    );
    println!("probes run: {runs:.0} ({:.1}/s), failures: {failures:.0}", runs / secs);
    println!("agent CPU: {cpu:.2} s = {:.2} % of one core", cpu / secs * 100.0);
    if runs > 0.0 {
        println!("CPU per probe: {:.3} ms", cpu / runs * 1000.0);
    }
    if !delivery.is_empty() {
        let mean = delivery.iter().sum::<f64>() / delivery.len() as f64;
        println!(
            "last delivery (and call set-up) times: mean {:.2} ms over {} pairs",
            mean * 1000.0,
            delivery.len()
        );
    }
    println!(
        "registered endpoints: {registered:.0}; agent RSS {} KiB, open descriptors {}",
        rss_kib(pid),
        fds(pid)
    );
    let _ = child.kill();
    let _ = child.wait();
    drop(lab);
}
