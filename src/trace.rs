//! Step-by-step traces of one probe: the recorder (`coexistd check --trace` and
//! `/api/v1/trace` run a round inside it, see [`crate::run::trace_run`]).
//!
//! The probing code notes its steps with [`step`] — the DNS question and answers, each
//! connect, the TLS handshake and the chain as received, the SIP request and response
//! as sent and received, the HTTP status and first bytes. Outside a trace (every
//! scheduled probe) a step is one task-local lookup and nothing is formatted: the text is
//! built by a closure that runs only while tracing. A trace is the probe as scheduled,
//! run once inside [`record`]; it does not change what the probe does.
//!
//! What this does not do: it keeps no history (a trace is made when asked and then
//! dropped), it imports nothing of the crate (ground floor), and it does not mask on its own: callers pass text that is safe to show
//! (credentials masked by [`mask_credentials`]).

use std::fmt::Write;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

/// Steps kept per trace; later ones are counted, not kept.
pub const MAX_STEPS: usize = 200;

/// Bytes of text kept per step (a SIP message or the first bytes of a body).
pub const MAX_TEXT: usize = 8 * 1024;

tokio::task_local! {
    static CURRENT: Recorder;
}

#[derive(Clone)]
struct Recorder {
    shared: Arc<Mutex<Steps>>,
    start: Instant,
    /// The address a fanned-out probe works on.
    address: Option<Arc<str>>,
}

#[derive(Default)]
struct Steps {
    steps: Vec<Step>,
    dropped: usize,
}

/// One step of a probe.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Milliseconds since the trace began.
    pub at_ms: f64,
    /// The address this step belongs to, for `each_address` checks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// What kind of step: `resolve`, `dns`, `connect`, `tls`, `sip`, `http`, `result`.
    pub step: &'static str,
    /// What happened, for a person.
    pub text: String,
}

/// Notes a step of the running trace; does nothing (and does not call `text`) when no
/// trace is running.
pub fn step(kind: &'static str, text: impl FnOnce() -> String) {
    let _ = CURRENT.try_with(|r| {
        let mut s = r.shared.lock().unwrap_or_else(|e| e.into_inner());
        if s.steps.len() >= MAX_STEPS {
            s.dropped += 1;
            return;
        }
        let mut text = text();
        if text.len() > MAX_TEXT {
            let mut cut = MAX_TEXT;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            let total = text.len();
            text.truncate(cut);
            let _ = write!(text, "\n… ({total} bytes, the first {cut} shown)");
        }
        s.steps.push(Step {
            at_ms: r.start.elapsed().as_secs_f64() * 1000.0,
            address: r.address.as_deref().map(str::to_owned),
            step: kind,
            text,
        });
    });
}

/// Whether a trace is running in this task.
pub fn active() -> bool {
    CURRENT.try_with(|_| ()).is_ok()
}

/// Runs `fut` with every step it notes recorded; returns its output, the steps and how
/// many steps were dropped past [`MAX_STEPS`].
pub async fn record<F: Future>(fut: F) -> (F::Output, Vec<Step>, usize) {
    let r = Recorder { shared: Arc::default(), start: Instant::now(), address: None };
    let shared = r.shared.clone();
    let out = CURRENT.scope(r, fut).await;
    let s = std::mem::take(&mut *shared.lock().unwrap_or_else(|e| e.into_inner()));
    (out, s.steps, s.dropped)
}

/// `fut`, carrying the running trace (if any) into a spawned task, its steps marked with
/// `address`.
pub fn inherit<F: Future>(address: std::net::IpAddr, fut: F) -> impl Future<Output = F::Output> {
    let current =
        CURRENT.try_with(|r| Recorder { address: Some(Arc::from(address.to_string())), ..r.clone() }).ok();
    async move {
        match current {
            Some(r) => CURRENT.scope(r, fut).await,
            None => fut.await,
        }
    }
}

/// A SIP or HTTP message as text safe to show: the values of `Authorization` and
/// `Proxy-Authorization` (and their digest responses) are replaced by `***`, other
/// bytes kept, non-UTF-8 shown lossily.
pub fn mask_credentials(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message);
    let mut out = String::with_capacity(text.len());
    // A masked header's folded continuation lines (starting with a blank) are masked too.
    let mut masking = false;
    for line in text.split_inclusive('\n') {
        let end = if line.ends_with("\r\n") {
            "\r\n"
        } else if line.ends_with('\n') {
            "\n"
        } else {
            ""
        };
        if masking && line.starts_with([' ', '\t']) && !line.trim().is_empty() {
            out.push_str(" ***");
            out.push_str(end);
            continue;
        }
        masking = false;
        if let Some((head, value)) = line.split_once(':') {
            let name = head.trim().to_ascii_lowercase();
            if name == "authorization" || name == "proxy-authorization" {
                let scheme: String = value.split_whitespace().next().unwrap_or("").chars().take(16).collect();
                let _ = write!(out, "{head}: {scheme} ***");
                out.push_str(end);
                masking = true;
                continue;
            }
        }
        out.push_str(line);
    }
    out
}

/// `text` with control characters other than newline and tab written as `\x..`, so
/// that a peer's bytes cannot drive the terminal a trace is printed on.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\t' => out.push(c),
            '\r' => {}
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn steps_are_recorded_only_inside_a_trace() {
        let mut called = false;
        step("dns", || {
            called = true;
            String::new()
        });
        assert!(!called, "outside a trace the text is never built");
        let ((), steps, dropped) = record(async {
            step("connect", || "to 127.0.0.1:5061".into());
            let ip: std::net::IpAddr = "127.0.0.2".parse().unwrap();
            tokio::spawn(inherit(ip, async { step("tls", || "TLS 1.3".into()) })).await.unwrap();
            for _ in 0..MAX_STEPS {
                step("sip", || "x".repeat(MAX_TEXT * 2));
            }
        })
        .await;
        assert_eq!(steps.len(), MAX_STEPS);
        assert_eq!(dropped, 2);
        assert_eq!(steps[0].step, "connect");
        assert_eq!(steps[1].address.as_deref(), Some("127.0.0.2"));
        assert!(steps[2].text.len() < MAX_TEXT + 100 && steps[2].text.contains("bytes, the first"));
    }

    #[test]
    fn credentials_are_masked() {
        let m = b"REGISTER sip:contoso.com SIP/2.0\r\nAuthorization: Digest username=\"alice\", response=\"abc\"\r\nproxy-authorization:NTLM qop=\"auth\"\r\nVia: x\r\n\r\n";
        let t = mask_credentials(m);
        assert!(!t.contains("abc") && !t.contains("alice") && !t.contains("qop"), "{t}");
        assert!(t.contains("Authorization: Digest ***\r\n"), "{t}");
        assert!(t.contains("proxy-authorization: NTLM ***\r\n"), "{t}");
        assert!(t.ends_with("Via: x\r\n\r\n"));
        // A colon-less line, a folded value, and no line end at all.
        let t =
            mask_credentials(b"authorization\r\nAuthorization: Digest a=1,\r\n  response=\"secret\"\r\nX: y");
        assert!(!t.contains("secret"), "{t}");
        assert!(t.starts_with("authorization\r\n") && t.ends_with("X: y"), "{t}");
        assert_eq!(mask_credentials(b"Authorization"), "Authorization");
    }

    #[test]
    fn terminal_controls_are_escaped() {
        assert_eq!(printable("a\x1b[31mred\r\n\tb\u{7}"), "a\\x1b[31mred\n\tb\\x07");
    }
}
