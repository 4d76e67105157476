//! rpc_epm probes against Samba's endpoint mapper (`samba-dcerpcd` from Debian's
//! `samba`, on 127.0.0.1:135 — the port is fixed, so one test binds it; as root, as
//! Samba needs), a closed port and fakes for a `bind_nak` and an answer that is not
//! DCE/RPC.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use coexistd::kinds::FailureReason;

struct Dcerpcd {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Dcerpcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Samba's RPC server with its endpoint mapper on 127.0.0.1:135; `None` (the test says
/// so) when not root or when something else holds the port.
fn dcerpcd() -> Option<Dcerpcd> {
    let root = std::fs::read_to_string("/proc/self/status").ok().is_some_and(|s| {
        s.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|v| v.split_whitespace().nth(1)) == Some("0")
    });
    if !root {
        eprintln!("rpc_epm test against Samba skipped: samba-dcerpcd needs root");
        return None;
    }
    if std::net::TcpStream::connect(("127.0.0.1", 135)).is_ok() {
        eprintln!("rpc_epm test against Samba skipped: 127.0.0.1:135 is taken");
        return None;
    }
    let bin = std::path::Path::new("/usr/libexec/samba/samba-dcerpcd");
    assert!(bin.exists(), "samba-dcerpcd is missing: apt-get install samba");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    for sub in ["private", "lock", "state", "cache", "ncalrpc"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let conf = format!(
        "[global]\n  interfaces = 127.0.0.1\n  bind interfaces only = yes\n  server role = standalone server\n\
         private dir = {d}/private\n  lock directory = {d}/lock\n  state directory = {d}/state\n\
         cache directory = {d}/cache\n  pid directory = {d}\n  log file = {d}/log\n  ncalrpc dir = {d}/ncalrpc\n\
         rpc start on demand helpers = no\n  load printers = no\n  disable spoolss = yes\n"
    );
    std::fs::write(dir.path().join("smb.conf"), conf).unwrap();
    let child = Command::new(bin)
        .args(["--foreground", "--no-process-group", "--libexec-rpcds", "-s"])
        .arg(dir.path().join("smb.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start samba-dcerpcd");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", 135)).is_err() {
        assert!(std::time::Instant::now() < deadline, "samba-dcerpcd did not listen within 15 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(Dcerpcd { child, _dir: dir })
}

async fn run(port: u16) -> coexistd::kinds::Outcome {
    let text = format!(
        "[agent]\ntimeout = \"3s\"\n[[checks]]\nname = \"r\"\nkind = \"rpc_epm\"\npools = []\n\
         host = \"127.0.0.1\"\nport = {port}\n"
    );
    common::probe_once(&text).await
}

#[tokio::test]
async fn samba_s_endpoint_mapper_accepts_the_bind() {
    let Some(_samba) = dcerpcd() else { return };
    let o = run(135).await;
    assert!(o.result.is_ok(), "{:?}", o.result);
}

/// A fake that answers every bind with `answer`.
async fn fake(answer: Vec<u8>) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(&answer).await;
        }
    });
    port
}

#[tokio::test]
async fn a_nak_is_rejected_and_strangers_are_malformed_or_refused() {
    let mut nak = vec![5, 0, 13, 3, 0x10, 0, 0, 0, 18, 0, 0, 0, 1, 0, 0, 0];
    nak.extend_from_slice(&[4, 0]);
    let o = run(fake(nak).await).await;
    assert_eq!(o.reason(), Some(FailureReason::RpcRejected), "{:?}", o.result);
    assert!(o.result.unwrap_err().detail.contains("bind_nak, reject reason 4"));
    let o = run(fake(b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec()).await).await;
    assert_eq!(o.reason(), Some(FailureReason::RpcMalformed), "{:?}", o.result);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    assert_eq!(run(port).await.reason(), Some(FailureReason::Refused));
}
