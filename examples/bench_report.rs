//! Benchmark of `coexistd report` (not a test): a Prometheus TSDB holding what an agent
//! of `--instances` check instances exports over `--days`, one sample a minute, then the
//! report over the whole period, timed, with its peak RSS.
//!
//! ```text
//! cargo build --release && cargo run --release --example bench_report -- [options]
//!   --instances 10000   check instances (each: coexist_check_interval_seconds and
//!                       coexist_probe_success; one in five a tls check with its
//!                       certificate and version series)
//!   --days 30
//!   --dir PATH          where the TSDB is built (default /var/tmp/coexistd-bench-report;
//!                       kept and reused: delete it to build again)
//!   --bin PATH          the agent binary (default target/release/coexistd)
//! ```
//!
//! The series besides the instances' scale with the pools (one per 20 instances):
//! `coexist_pool_up`, `coexist_pool_site_info`; 100 test users (registered, home),
//! four IM matrix cells with delivery gauges, ten DNS records, one agent. The history
//! is written two hours at a time as OpenMetrics and turned into blocks by `promtool
//! tsdb create-blocks-from openmetrics` (2-hour blocks, 360 for 30 days: more than a
//! compacted TSDB holds, so queries read more index), which Prometheus then serves.
//! `coexist_probe_failures_total` exists for one instance in 20 (the agent exports a
//! reason's counter once that reason occurred).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Opts {
    instances: usize,
    days: i64,
    dir: PathBuf,
    bin: String,
}

fn opts() -> Opts {
    let mut o = Opts {
        instances: 10_000,
        days: 30,
        dir: PathBuf::from("/var/tmp/coexistd-bench-report"),
        bin: "target/release/coexistd".into(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let v = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--instances" => o.instances = v.parse().expect("--instances N"),
            "--days" => o.days = v.parse().expect("--days N"),
            "--dir" => o.dir = PathBuf::from(v),
            "--bin" => o.bin = v,
            other => panic!("unknown option {other}"),
        }
    }
    o
}

/// 2026-10-01T00:00:00Z.
const FROM: i64 = 1_790_812_800;
/// One OpenMetrics file per block (promtool reads its input once per 2-hour block).
const WINDOW: i64 = 7200;

fn window_file(o: &Opts, start: i64, path: &Path) {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let agent = "job=\"coexistd\",instance=\"agent1:9797\"";
    let minutes = |w: &mut dyn FnMut(i64)| {
        for m in 0..WINDOW / 60 {
            w(start + m * 60);
        }
    };
    let pools = o.instances.div_ceil(20);
    let mut family = |name: &str, kind: &str, series: &mut dyn FnMut(&mut dyn Write)| {
        writeln!(out, "# TYPE {name} {kind}").unwrap();
        series(&mut out);
    };
    family("coexist_check_interval_seconds", "gauge", &mut |w| {
        for i in 0..o.instances {
            minutes(&mut |t| {
                writeln!(
                    w,
                    "coexist_check_interval_seconds{{{agent},pool=\"p{:04}\",check=\"c{:02}\"}} 60 {t}",
                    i / 20,
                    i % 20
                )
                .unwrap()
            });
        }
    });
    family("coexist_probe_success", "gauge", &mut |w| {
        for i in 0..o.instances {
            let kind = if i % 5 == 0 {
                "tls"
            } else if i % 997 == 0 {
                "dns"
            } else {
                "tcp"
            };
            minutes(&mut |t| {
                let v = u8::from((t / 60 + i as i64) % 5000 != 0);
                writeln!(w, "coexist_probe_success{{{agent},pool=\"p{:04}\",check=\"c{:02}\",kind=\"{kind}\"}} {v} {t}", i / 20, i % 20)
                    .unwrap()
            });
        }
    });
    family("coexist_tls_cert_not_after_timestamp_seconds", "gauge", &mut |w| {
        for i in (0..o.instances).step_by(5) {
            minutes(&mut |t| {
                writeln!(
                    w,
                    "coexist_tls_cert_not_after_timestamp_seconds{{{agent},pool=\"p{:04}\",check=\"c{:02}\",target=\"h{i}:5061\"}} {} {t}",
                    i / 20,
                    i % 20,
                    FROM + (40 + i as i64 % 300) * 86_400
                )
                .unwrap()
            });
        }
    });
    family("coexist_tls_cert_info", "gauge", &mut |w| {
        for i in (0..o.instances).step_by(5) {
            minutes(&mut |t| {
                writeln!(
                    w,
                    "coexist_tls_cert_info{{{agent},pool=\"p{:04}\",check=\"c{:02}\",target=\"h{i}:5061\",subject=\"CN=h{i}\",signature_algorithm=\"sha256WithRSAEncryption\"}} 1 {t}",
                    i / 20,
                    i % 20
                )
                .unwrap()
            });
        }
    });
    family("coexist_tls_version_info", "gauge", &mut |w| {
        for i in (0..o.instances).step_by(5) {
            minutes(&mut |t| {
                writeln!(
                    w,
                    "coexist_tls_version_info{{{agent},pool=\"p{:04}\",check=\"c{:02}\",target=\"h{i}:5061\",version=\"TLS 1.2\"}} 1 {t}",
                    i / 20,
                    i % 20
                )
                .unwrap()
            });
        }
    });
    family("coexist_pool_up", "gauge", &mut |w| {
        for p in 0..pools {
            let role = if p % 2 == 0 { "legacy" } else { "new" };
            minutes(&mut |t| {
                let v = u8::from((t / 60 + p as i64 * 7) % 3000 > 10);
                writeln!(w, "coexist_pool_up{{{agent},pool=\"p{p:04}\",role=\"{role}\"}} {v} {t}").unwrap()
            });
        }
    });
    family("coexist_pool_site_info", "gauge", &mut |w| {
        for p in 0..pools {
            minutes(&mut |t| {
                writeln!(
                    w,
                    "coexist_pool_site_info{{{agent},pool=\"p{p:04}\",topology_site=\"s{}\"}} 1 {t}",
                    p / 10
                )
                .unwrap()
            });
        }
    });
    family("coexist_probe_failures", "counter", &mut |w| {
        for i in (0..o.instances).step_by(20) {
            minutes(&mut |t| {
                let n = (t - FROM) / 60 / 5000;
                writeln!(w, "coexist_probe_failures_total{{{agent},pool=\"p{:04}\",check=\"c{:02}\",reason=\"timeout\"}} {n} {t}", i / 20, i % 20)
                    .unwrap()
            });
        }
    });
    family("coexist_interop_up", "gauge", &mut |w| {
        for (a, b) in [("p0000", "p0000"), ("p0000", "p0001"), ("p0001", "p0000"), ("p0001", "p0001")] {
            minutes(&mut |t| {
                writeln!(
                    w,
                    "coexist_interop_up{{{agent},kind=\"sip_im\",from_pool=\"{a}\",to_pool=\"{b}\"}} 1 {t}"
                )
                .unwrap()
            });
        }
    });
    family("coexist_sip_delivery_seconds", "gauge", &mut |w| {
        for u in 0..100 {
            minutes(&mut |t| {
                writeln!(
                    w,
                    "coexist_sip_delivery_seconds{{{agent},kind=\"sip_im\",pool=\"p000{}\",to_pool=\"p000{}\",check=\"im\",user=\"u{u}\"}} 0.0{} {t}",
                    u % 2,
                    (u / 2) % 2,
                    10 + (t / 60) % 7
                )
                .unwrap()
            });
        }
    });
    family("coexist_user_registered", "gauge", &mut |w| {
        for u in 0..100 {
            minutes(&mut |t| {
                writeln!(w, "coexist_user_registered{{{agent},user=\"u{u}\",pool=\"p000{}\"}} 1 {t}", u % 2)
                    .unwrap()
            });
        }
    });
    family("coexist_user_home", "gauge", &mut |w| {
        for u in 0..100 {
            minutes(&mut |t| {
                writeln!(
                    w,
                    "coexist_user_home{{{agent},user=\"u{u}\",pool=\"p000{0}\",home_pool=\"p000{0}\"}} 1 {t}",
                    u % 2
                )
                .unwrap()
            });
        }
    });
    family("coexist_dns_points_to", "gauge", &mut |w| {
        for r in 0..10 {
            minutes(&mut |t| {
                writeln!(w, "coexist_dns_points_to{{{agent},check=\"r{r}\",kind=\"dns\",target=\"_sip{r}._tcp.contoso.test\",points_to=\"p0001\"}} 1 {t}").unwrap()
            });
        }
    });
    family("coexist_build_info", "gauge", &mut |w| {
        minutes(&mut |t| writeln!(w, "coexist_build_info{{{agent},version=\"0.1.0\"}} 1 {t}").unwrap());
    });
    writeln!(out, "# EOF").unwrap();
    out.flush().unwrap();
}

fn build_tsdb(o: &Opts, tsdb: &Path) {
    let text = o.dir.join("window.om");
    for w in 0..o.days * 86_400 / WINDOW {
        let t = Instant::now();
        window_file(o, FROM + w * WINDOW, &text);
        let size = std::fs::metadata(&text).unwrap().len();
        let out = Command::new("promtool")
            .args(["tsdb", "create-blocks-from", "openmetrics", "-q"])
            .arg(&text)
            .arg(tsdb)
            .output()
            .expect("promtool (apt-get install prometheus)");
        assert!(out.status.success(), "promtool: {}", String::from_utf8_lossy(&out.stderr));
        eprintln!("block {w}: {} MiB of OpenMetrics, {:.1} s", size >> 20, t.elapsed().as_secs_f64());
    }
    let _ = std::fs::remove_file(text);
    std::fs::write(o.dir.join("complete"), format!("{} instances, {} days\n", o.instances, o.days)).unwrap();
}

fn vm_hwm(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let o = opts();
    std::fs::create_dir_all(&o.dir).unwrap();
    let tsdb = o.dir.join("tsdb");
    if !o.dir.join("complete").exists() {
        let _ = std::fs::remove_dir_all(&tsdb);
        build_tsdb(&o, &tsdb);
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = o.dir.join("prometheus.yml");
    std::fs::write(&cfg, "global:\n  scrape_interval: 1m\n").unwrap();
    let mut prom = Command::new("prometheus")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.tsdb.path={}", tsdb.display()))
        .arg("--storage.tsdb.retention.time=10y")
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let ready = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok_and(|mut s| {
            let _ = s.write_all(b"GET /-/ready HTTP/1.0\r\n\r\n");
            let mut b = [0u8; 12];
            std::io::Read::read(&mut s, &mut b).is_ok_and(|n| n == 12 && &b[9..12] == b"200")
        });
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "Prometheus not ready in 10 minutes");
        std::thread::sleep(Duration::from_millis(500));
    }
    let blocks = std::fs::read_dir(&tsdb)
        .unwrap()
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().join("meta.json").exists()))
        .count();
    let from = FROM.to_string();
    let to = (FROM + o.days * 86_400).to_string();
    for run in 1..=2 {
        let t = Instant::now();
        let child = Command::new(&o.bin)
            .args([
                "report",
                "--prometheus",
                &format!("http://127.0.0.1:{port}"),
                "--from",
                &from,
                "--to",
                &to,
            ])
            .args(["--format", "json", "--out", "/dev/null"])
            .stderr(Stdio::inherit())
            .spawn()
            .expect("coexistd");
        let pid = child.id();
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let watcher = {
            let peak = peak.clone();
            std::thread::spawn(move || loop {
                let h = vm_hwm(pid);
                if h == 0 {
                    break;
                }
                peak.fetch_max(h, std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            })
        };
        let out = child.wait_with_output().unwrap();
        let _ = watcher.join();
        println!(
            "run {run}: {} instances × {} days ({blocks} blocks): report in {:.1} s, exit {:?}, peak RSS {:.1} MiB (report), Prometheus peak RSS {:.0} MiB",
            o.instances,
            o.days,
            t.elapsed().as_secs_f64(),
            out.status.code(),
            peak.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1024.0,
            vm_hwm(prom.id()) as f64 / 1024.0
        );
    }
    let _ = prom.kill();
    let _ = prom.wait();
}
