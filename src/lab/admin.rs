//! The lab's administration path — what an administrator of each topology site reaches
//! and what `purpose = "admin"` checks probe:
//!
//! - the SQL Server Browser (MS-SQLR) of each server, naming its SQL instances: `RTC` on
//!   the OCS 2007 R2 Standard Edition server (its back end), `RTCLOCAL` and `LYNCLOCAL`
//!   on the Lync 2013 Front Ends (their local configuration store);
//! - the endpoint mapper (DCE/RPC on 135) through which OCS 2007 R2 is administered
//!   over WMI/DCOM, accepting a `bind`;
//! - SMB2 (445) on the Front Ends, which Central Management Store replication writes to,
//!   negotiating dialect 3.0.2 with signing enabled as Windows Server 2012 R2 does;
//! - the Lync Server Control Panel (`/Cscp`), signing a Windows account in with NTLM
//!   (RFC 4559) and answering `200` to it.
//!
//! Responders speak only the first exchange of each protocol (the part the probes
//! check); every read is bounded in size and time.

use std::sync::Mutex;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::sip::auth::Secret;
use crate::sip::ntlm::{AuthenticateMsg, ChallengeMsg, SERVER_FLAGS};

/// How long a responder waits for a request on a connection.
const IDLE: Duration = Duration::from_secs(10);

/// A SQL Server Browser (MS-SQLR) on `sock` for the server `server`, naming
/// `instances` (name, version, TCP port): every `CLNT_UCAST_EX` is answered with its
/// `SVR_RESP`; anything else is ignored.
pub async fn ssrp_responder(sock: UdpSocket, server: &'static str, instances: &'static [(&str, &str, u16)]) {
    let answer = crate::net::ssrp::svr_resp(server, instances);
    let mut buf = [0u8; 64];
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf).await else { continue };
        if n >= 1 && buf[0] == crate::net::ssrp::CLNT_UCAST_EX {
            let _ = sock.send_to(&answer, peer).await;
        }
    }
}

/// The instances of a Lync 2013 Front End: its local configuration store and its
/// Lync local database.
pub const LYNC_FRONT_END: &[(&str, &str, u16)] =
    &[("RTCLOCAL", "11.0.2100.60", 49152), ("LYNCLOCAL", "11.0.2100.60", 49153)];
/// The instance of an OCS 2007 R2 Standard Edition server: its SQL Express back end.
pub const OCS_STANDARD_EDITION: &[(&str, &str, u16)] = &[("RTC", "9.00.4035.00", 49152)];

/// Reads one length-framed message (`len` says the whole length from the first bytes)
/// of at most `max` bytes; `None` at the end of the stream, on a timeout or past `max`.
async fn read_framed(
    tcp: &mut TcpStream,
    buf: &mut Vec<u8>,
    max: usize,
    len: fn(&[u8]) -> Option<usize>,
) -> Option<Vec<u8>> {
    loop {
        if let Some(n) = len(buf) {
            if n > max {
                return None;
            }
            if buf.len() >= n {
                let rest = buf.split_off(n);
                return Some(std::mem::replace(buf, rest));
            }
        }
        let mut chunk = [0u8; 2048];
        let n = tokio::time::timeout(IDLE, tcp.read(&mut chunk)).await.ok()?.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Accepts connections on `listener`, each served by `serve`.
async fn accept_each<F, Fut>(listener: TcpListener, serve: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        if let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(serve(tcp));
        }
    }
}

/// An endpoint mapper that accepts every `bind` (its `bind_ack`) and closes the
/// connection on anything else.
pub async fn epm_responder(listener: TcpListener) {
    accept_each(listener, |mut tcp| async move {
        let mut buf = Vec::new();
        while let Some(pdu) = read_framed(&mut tcp, &mut buf, 8 * 1024, crate::net::dcerpc::pdu_len).await {
            let Some(call_id) = crate::net::dcerpc::bind_call_id(&pdu) else { return };
            if tcp.write_all(&crate::net::dcerpc::bind_ack(call_id, 0)).await.is_err() {
                return;
            }
        }
    })
    .await
}

/// An SMB2 server that answers NEGOTIATE with the highest dialect offered up to 3.0.2
/// (signing enabled, not required) and closes the connection on anything else.
pub async fn smb_responder(listener: TcpListener) {
    accept_each(listener, |mut tcp| async move {
        let mut buf = Vec::new();
        while let Some(msg) = read_framed(&mut tcp, &mut buf, 64 * 1024, crate::net::smb::message_len).await {
            let Some(offered) = crate::net::smb::offered_dialects(&msg) else { return };
            let answer = match offered.iter().copied().filter(|d| (0x0202..=0x0302).contains(d)).max() {
                Some(d) => crate::net::smb::negotiate_response(0, 1, d),
                // STATUS_NOT_SUPPORTED: no dialect in common.
                None => crate::net::smb::negotiate_response(0xC000_00BB, 1, 0),
            };
            if tcp.write_all(&answer).await.is_err() {
                return;
            }
        }
    })
    .await
}

/// The Control Panel's Windows account: `DOMAIN\user` and password.
#[derive(Debug)]
pub struct ControlPanel {
    /// The account's domain (NetBIOS name).
    pub domain: String,
    /// The account's user name.
    pub user: String,
    /// Its password.
    pub password: Secret,
}

/// One HTTP connection's NTLM state: the challenge it was sent (RFC 4559 binds the
/// handshake to its connection).
#[derive(Debug, Default)]
pub struct Session(Mutex<Option<[u8; 8]>>);

fn unauthorized(offers: &[&str]) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(b"401 - Unauthorized\n")));
    *r.status_mut() = StatusCode::UNAUTHORIZED;
    for o in offers {
        if let Ok(v) = hyper::header::HeaderValue::from_str(o) {
            r.headers_mut().append(hyper::header::WWW_AUTHENTICATE, v);
        }
    }
    r
}

/// The answer of an administration URL that asks for Windows credentials (`401` with
/// `Negotiate` and `NTLM`), as a live Front End's does.
pub fn asks_for_credentials() -> Response<Full<Bytes>> {
    unauthorized(&["Negotiate", "NTLM"])
}

impl ControlPanel {
    /// Answers a request to the Control Panel on the connection `session`:
    /// `Authorization: NTLM|Negotiate <NEGOTIATE>` gets the CHALLENGE, the AUTHENTICATE
    /// that proves this account's password gets `200`; anything else `401`.
    pub fn answer(&self, session: &Session, authorization: Option<&str>) -> Response<Full<Bytes>> {
        let token = authorization.and_then(|a| {
            let (scheme, token) = a.trim().split_once(' ')?;
            (scheme.eq_ignore_ascii_case("NTLM") || scheme.eq_ignore_ascii_case("Negotiate"))
                .then(|| openssl::base64::decode_block(token.trim()).ok())
                .flatten()
        });
        let Some(token) = token.filter(|t| t.len() > 12 && t.starts_with(b"NTLMSSP\0")) else {
            return asks_for_credentials();
        };
        let mut challenge = session.0.lock().unwrap_or_else(|e| e.into_inner());
        match token[8] {
            1 => {
                let mut c = [0u8; 8];
                let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut c);
                *challenge = Some(c);
                let msg = ChallengeMsg {
                    flags: SERVER_FLAGS,
                    server_challenge: c,
                    target_info: super::ntlm::target_info("lyncpool.contoso.test"),
                };
                unauthorized(&[&format!("NTLM {}", openssl::base64::encode_block(&msg.to_bytes()))])
            }
            3 => {
                let proved = challenge.take().is_some_and(|c| {
                    AuthenticateMsg::parse(&token).is_ok_and(|a| {
                        a.user.eq_ignore_ascii_case(&self.user)
                            && a.domain.eq_ignore_ascii_case(&self.domain)
                            && a.verify(self.password.expose(), &c).is_ok()
                    })
                });
                if !proved {
                    return asks_for_credentials();
                }
                let body = format!(
                    "<!DOCTYPE html><title>Lync Server 2013 Control Panel</title><p>Welcome, {}\\{}\n",
                    self.domain, self.user
                );
                Response::new(Full::new(Bytes::from(body)))
            }
            _ => asks_for_credentials(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::ntlm;

    fn panel() -> ControlPanel {
        ControlPanel {
            domain: "CONTOSO".into(),
            user: "csadmin".into(),
            password: Secret::new(String::from("s3cret")),
        }
    }

    fn header(r: &Response<Full<Bytes>>) -> Vec<String> {
        r.headers()
            .get_all(hyper::header::WWW_AUTHENTICATE)
            .iter()
            .map(|v| v.to_str().unwrap_or("").to_owned())
            .collect()
    }

    /// NEGOTIATE, then the AUTHENTICATE for `password`, on one connection.
    fn sign_in(p: &ControlPanel, session: &Session, password: &str) -> StatusCode {
        let negotiate = format!("NTLM {}", openssl::base64::encode_block(&ntlm::negotiate_message()));
        let r = p.answer(session, Some(&negotiate));
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let offer = header(&r).pop().unwrap_or_default();
        let token = openssl::base64::decode_block(offer.trim_start_matches("NTLM ")).unwrap_or_default();
        let challenge = ChallengeMsg::parse(&token).unwrap_or_else(|e| panic!("{offer}: {e}"));
        let nonces = ntlm::Nonces::fresh().unwrap_or_else(|| panic!("no randomness"));
        let a = ntlm::authenticate_connection(&challenge, "csadmin", "CONTOSO", password, "WS", &nonces)
            .unwrap_or_else(|e| panic!("{e}"));
        let answer = format!("Negotiate {}", openssl::base64::encode_block(&a.message));
        p.answer(session, Some(&answer)).status()
    }

    #[test]
    fn the_control_panel_signs_its_administrator_in_and_no_one_else() {
        let p = panel();
        let first = p.answer(&Session::default(), None);
        assert_eq!(first.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(header(&first), ["Negotiate", "NTLM"]);
        assert_eq!(sign_in(&p, &Session::default(), "s3cret"), StatusCode::OK);
        assert_eq!(sign_in(&p, &Session::default(), "guess"), StatusCode::UNAUTHORIZED);
        // The challenge is the connection's, used once: a replayed AUTHENTICATE fails.
        let session = Session::default();
        assert_eq!(sign_in(&p, &session, "s3cret"), StatusCode::OK);
        assert!(session.0.lock().unwrap_or_else(|e| e.into_inner()).is_none());
        // Garbage and other schemes are asked for credentials again.
        for a in ["Basic Y3NhZG1pbjpzM2NyZXQ=", "NTLM !!!", "NTLM TlRMTVNTUAAEAAAA"] {
            assert_eq!(p.answer(&Session::default(), Some(a)).status(), StatusCode::UNAUTHORIZED, "{a}");
        }
    }

    #[test]
    fn responders_answer_the_probes_first_exchange() {
        let ack = crate::net::dcerpc::bind_ack(9, 0);
        assert_eq!(
            crate::net::dcerpc::parse_bind_answer(&ack, 9),
            Ok(crate::net::dcerpc::Bound::Accepted("135".into()))
        );
        let r = crate::net::smb::negotiate_response(0, 1, 0x0302);
        let n = crate::net::smb::parse_negotiate_response(&r).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((n.dialect, n.signing_required), (0x0302, false));
    }
}
