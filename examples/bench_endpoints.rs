//! Benchmark of the registered endpoints' memory under attack (not a test): the agent
//! binary in its own process, N test users registered at a fake registrar run here
//! (every REGISTER accepted, no authentication), then everything a registrar — or
//! anyone who can spoof it over UDP — can push down the endpoints' connections.
//!
//! ```text
//! cargo build --release && cargo run --release --example bench_endpoints -- [options]
//!   --users 1000          test users (endpoints)
//!   --transport udp|tcp   udp (default): per endpoint, --requests OPTIONS with distinct
//!                         branches and a 60 KB Via (echoed in every answer, which the
//!                         endpoint keeps for retransmissions);
//!                         tcp: per endpoint, a 60 KB message head that never ends
//!                         (held in the endpoint's stream buffer)
//!   --requests 40         requests per endpoint (udp)
//!   --bin PATH            the agent binary (default target/release/coexistd)
//! ```
//!
//! Reports the agent's RSS once every user is registered, its peak RSS (VmHWM) after
//! the attack, and the registrations the endpoints made (a connection the budget
//! refuses is closed and registered again). The registrar listens on 127.0.54.1.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use coexistd::lab::dns_server::{a, DnsServer};
use coexistd::lab::registrar::FakeRegistrar;

const IP: &str = "127.0.54.1";

struct Opts {
    users: usize,
    tcp: bool,
    requests: usize,
    bin: String,
}

fn opts() -> Opts {
    let mut o = Opts {
        users: 1000,
        tcp: false,
        requests: 40,
        bin: concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/coexistd").into(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let v = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--users" => o.users = v.parse().expect("--users N"),
            "--transport" => o.tcp = v == "tcp",
            "--requests" => o.requests = v.parse().expect("--requests N"),
            "--bin" => o.bin = v,
            other => panic!("unknown option {other}"),
        }
    }
    o
}

fn kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let o = opts();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let dns = rt
        .block_on(DnsServer::start("127.0.0.1:0".parse().unwrap(), vec![a("pool.contoso.test", IP)]))
        .unwrap();
    let fake = FakeRegistrar::start(IP, 3600, false).unwrap();
    let (port, seen, attacker) = (fake.port, fake.seen.clone(), fake.udp.try_clone().unwrap());
    let transport = if o.tcp { "tcp" } else { "udp" };
    let mut config = format!(
        "[agent]\nlisten = \"127.0.0.1:0\"\ninterval = \"1h\"\ntimeout = \"5s\"\n[dns]\nservers = [\"{}\"]\n\
         [[pools]]\nname = \"p\"\nrole = \"new\"\nfqdn = \"pool.contoso.test\"\n",
        dns.addr
    );
    for i in 0..o.users {
        config.push_str(&format!(
            "[[users]]\nname = \"u{i:04}\"\nuri = \"sip:u{i:04}@contoso.test\"\npool = \"p\"\nauth = \"none\"\n\
             transport = \"{transport}\"\nport = {port}\n"
        ));
    }
    // A sip_im check from one user to every other keeps an endpoint per user; at a 1 h
    // interval it is the endpoints alone (and it runs on builds before sip_echo).
    config.push_str("[[checks]]\nname = \"im\"\nkind = \"sip_im\"\nfrom = [\"u0000\"]\n");
    let dir = std::env::temp_dir().join(format!("bench-endpoints-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("coexistd.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(&o.bin)
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .expect("start the agent (cargo build --release first)");
    let pid = child.id();
    let t = Instant::now();
    loop {
        let n = {
            if o.tcp {
                seen.lock().unwrap().tcp.len()
            } else {
                seen.lock().unwrap().udp.len()
            }
        };
        if n >= o.users {
            break;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("the agent exited: {st}");
        }
        assert!(t.elapsed() < Duration::from_secs(120), "only {n} of {} users registered", o.users);
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    let registered_rss = kib(pid, "VmRSS:");
    let registers_before = seen.lock().unwrap().registers;
    let t = Instant::now();
    let pad = "a".repeat(60_000);
    if o.tcp {
        // A head that never ends, on every connection at once.
        let mut conns: Vec<TcpStream> =
            seen.lock().unwrap().tcp.iter().filter_map(|(_, c)| c.try_clone().ok()).collect();
        for (i, c) in conns.iter_mut().enumerate() {
            let head = format!("OPTIONS sip:u{i:04}@127.0.0.1 SIP/2.0\r\nX-Pad: {pad}");
            let _ = c.write_all(head.as_bytes());
        }
        std::thread::sleep(Duration::from_secs(5));
    } else {
        let targets: Vec<(String, SocketAddr)> = seen.lock().unwrap().udp.clone();
        let mut sent = 0usize;
        for r in 0..o.requests {
            for (user, addr) in &targets {
                let req = format!(
                    "OPTIONS sip:{user}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {IP}:{port};branch=z9hG4bKflood{r};x={pad}\r\n\
                     From: <sip:mallory@contoso.test>;tag=m\r\nTo: <sip:{user}@contoso.test>\r\nCall-ID: flood-{r}-{user}\r\n\
                     CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
                );
                let _ = attacker.send_to(req.as_bytes(), addr);
                sent += 1;
                // Paced so that the socket buffers drop nothing: the answers are counted.
                let deadline = Instant::now() + Duration::from_millis(200);
                while seen.lock().unwrap().answers < sent && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
        }
        println!("answers {} of {sent} requests", seen.lock().unwrap().answers);
    }
    let attack = t.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let peak = kib(pid, "VmHWM:");
    let after = kib(pid, "VmRSS:");
    let registers = seen.lock().unwrap().registers - registers_before;
    println!(
        "users {} over {transport}: RSS registered {:.1} MiB, peak {:.1} MiB (+{:.1} MiB), after {:.1} MiB; \
         attack {:.1} s; registrations during it {registers}",
        o.users,
        registered_rss as f64 / 1024.0,
        peak as f64 / 1024.0,
        peak.saturating_sub(registered_rss) as f64 / 1024.0,
        after as f64 / 1024.0,
        attack.as_secs_f64()
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
