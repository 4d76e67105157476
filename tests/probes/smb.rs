//! smb probes against Debian's Samba (`smbd`, a standalone server on a loopback port,
//! its state in a temporary directory; needs root, as smbd does), a closed port, and a
//! fake that answers in SMB1.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use coexistd::kinds::FailureReason;

struct Samba {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Samba {
    /// `None` when not root (smbd will not run otherwise): the test says so and passes.
    fn start(min_protocol: &str) -> Option<Samba> {
        if !is_root() {
            eprintln!("smb tests skipped: smbd needs root");
            return None;
        }
        let bin = common::require("smbd", "samba");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        for sub in ["private", "lock", "state", "cache", "ncalrpc"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let port = common::free_port();
        let conf = format!(
            "[global]\n  smb ports = {port}\n  interfaces = 127.0.0.1\n  bind interfaces only = yes\n\
             server role = standalone server\n  private dir = {d}/private\n  lock directory = {d}/lock\n\
             state directory = {d}/state\n  cache directory = {d}/cache\n  pid directory = {d}\n\
             log file = {d}/log\n  ncalrpc dir = {d}/ncalrpc\n  server min protocol = {min_protocol}\n\
             load printers = no\n  disable spoolss = yes\n"
        );
        std::fs::write(dir.path().join("smb.conf"), conf).unwrap();
        let child = Command::new(bin)
            .args(["--foreground", "--no-process-group", "-s"])
            .arg(dir.path().join("smb.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start smbd");
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "smbd did not listen within 15 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Samba { child, port, _dir: dir })
    }
}

impl Drop for Samba {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the effective user is root (`/proc/self/status`, `Uid:` real effective …).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").ok().is_some_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
            .unwrap_or(false)
    })
}

async fn run(port: u16, min_dialect: &str) -> coexistd::kinds::Outcome {
    let min =
        if min_dialect.is_empty() { String::new() } else { format!("min_dialect = \"{min_dialect}\"\n") };
    let text = format!(
        "[agent]\ntimeout = \"3s\"\n[[checks]]\nname = \"m\"\nkind = \"smb\"\npools = []\n\
         host = \"127.0.0.1\"\nport = {port}\n{min}"
    );
    common::probe_once(&text).await
}

#[tokio::test]
async fn samba_negotiates_smb3_and_a_higher_minimum_fails_with_the_dialect() {
    let Some(samba) = Samba::start("SMB2_02") else { return };
    let o = run(samba.port, "3.0").await;
    assert!(o.result.is_ok(), "{:?}", o.result);
    let d = o.measured_of(&coexistd::kinds::smb::SMB_DIALECT).expect("the dialect");
    assert_eq!(d.label.as_deref(), Some("3.0.2"));
    drop(samba);
    // A server capped at SMB 2.1 (max protocol), against min_dialect 3.0.
    let Some(old) = Samba::start("SMB2_02\n  server max protocol = SMB2_10") else { return };
    let o = run(old.port, "3.0").await;
    assert_eq!(o.reason(), Some(FailureReason::SmbDialect), "{:?}", o.result);
    assert!(o.result.unwrap_err().detail.contains("SMB 2.1, below min_dialect 3.0"));
}

#[tokio::test]
async fn a_closed_port_is_refused_and_an_smb1_answer_is_malformed() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    assert_eq!(run(port, "").await.reason(), Some(FailureReason::Refused));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf).await;
            let mut m = b"\xffSMBr".to_vec();
            m.resize(80, 0);
            let mut out = (m.len() as u32).to_be_bytes().to_vec();
            out.extend_from_slice(&m);
            let _ = s.write_all(&out).await;
        }
    });
    let o = run(port, "").await;
    assert_eq!(o.reason(), Some(FailureReason::SmbMalformed), "{:?}", o.result);
    assert!(o.result.unwrap_err().detail.contains("an SMB1 answer"));
}
