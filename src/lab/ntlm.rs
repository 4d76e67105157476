//! The lab's NTLM sign-in (MS-SIPAE), as its pools' Microsoft originals do: the legacy
//! pool challenges like OCS 2007 R2 (NTLM, protocol version 3), the new one like Lync
//! Server 2013 (Kerberos offered first, which a client without a ticket skips, then NTLM
//! version 4). A user signed in has a security association here: every request of the
//! user's must carry its valid signature (an unsigned or wrongly signed one is refused
//! `403`), and every message the lab sends the user — answers, requests it delivers,
//! responses it relays — is signed with the server's keys.
//!
//! Lab only: associations are kept by name, each tied to the user who signed in, until
//! that user's unregister; past 10,000 one is forgotten for each new one.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::sip::auth::{Challenge, Secret};
use crate::sip::message::{self, Message};
use crate::sip::ntlm::{AuthenticateMsg, ChallengeMsg, SERVER_FLAGS};
use crate::sip::sipae::{Association, Role};

/// The realm of every MS-SIPAE challenge.
pub const REALM: &str = "SIP Communications Service";

/// The lab's NTLM state: the server challenges of handshakes under way and the
/// associations set up, both by the association's name (`opaque`): one user may hold
/// several (its endpoint's, a `sip_register` check's).
#[derive(Debug, Default)]
pub struct NtlmLab {
    challenges: Mutex<HashMap<String, [u8; 8]>>,
    /// By name: the user who signed in, and the association.
    sas: Mutex<HashMap<String, (String, Association)>>,
}

/// Associations and handshakes kept at most (one is forgotten for each new one past
/// it: the lab is no security boundary, but it must not grow without bound).
const MAX_KEPT: usize = 10_000;

/// What a REGISTER of an NTLM user gets.
pub enum Register {
    /// A `401` with these header lines.
    Challenge(String),
    /// Signed in (or a signed refresh) on the association of this name: the
    /// registration goes ahead; the 200 is to be signed with [`NtlmLab::sign_with`].
    Accepted(String),
    /// Refused with this status and reason.
    Refused(u16, &'static str),
}

/// The NTLM credentials of a request, if any.
fn credentials(m: &Message) -> Option<Challenge> {
    m.headers
        .iter()
        .filter(|(n, _)| n == "authorization" || n == "proxy-authorization")
        .filter_map(|(_, v)| Challenge::parse(v).ok())
        .find(|c| c.scheme.eq_ignore_ascii_case("NTLM"))
}

/// The association a request of a signed-in user names (its credentials' `opaque`).
pub fn opaque_of(m: &Message) -> Option<String> {
    credentials(m).and_then(|c| c.param("opaque").map(str::to_owned)).filter(|o| !o.is_empty())
}

fn bounded<V>(map: &mut HashMap<String, V>) {
    if map.len() >= MAX_KEPT {
        if let Some(k) = map.keys().next().cloned() {
            map.remove(&k);
        }
    }
}

/// The user part of a request's `header` (From or To).
fn user_of(m: &Message, header: &str) -> String {
    message::uri_user(message::addr_uri(m.header(header).unwrap_or(""))).unwrap_or("").to_owned()
}

impl NtlmLab {
    /// Handles a REGISTER of a user (password `password`) at a pool whose front end is
    /// `target`, speaking protocol `version` (3: OCS 2007 R2; 4: Lync, which offers
    /// Kerberos first).
    pub fn register(&self, req: &Message, password: &Secret, target: &str, version: u32) -> Register {
        let challenge = |extra: &str| {
            let mut h = String::new();
            if version >= 4 {
                h.push_str(&format!(
                    "WWW-Authenticate: Kerberos realm=\"{REALM}\", targetname=\"sip/{target}\", version={version}\r\n"
                ));
            }
            h.push_str(&format!(
                "WWW-Authenticate: NTLM realm=\"{REALM}\", targetname=\"{target}\", version={version}{extra}\r\n"
            ));
            h.push_str(&format!("Date: {}\r\n", httpdate::fmt_http_date(std::time::SystemTime::now())));
            Register::Challenge(h)
        };
        let Some(creds) = credentials(req) else { return challenge("") };
        let opaque = creds.param("opaque").unwrap_or("").to_owned();
        match creds.param("gssapi-data") {
            // A refresh on the association: its signature decides.
            None => match self.sas.lock().unwrap_or_else(|e| e.into_inner()).get(&opaque) {
                Some((user, sa)) if *user == user_of(req, "to") && sa.verify(req).is_ok() => {
                    Register::Accepted(opaque)
                }
                Some(_) => Register::Refused(403, "Forbidden (signature)"),
                None => challenge(""),
            },
            Some("") => {
                let mut c = [0u8; 8];
                let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut c);
                let opaque = message::token(8).to_ascii_uppercase();
                {
                    let mut challenges = self.challenges.lock().unwrap_or_else(|e| e.into_inner());
                    bounded(&mut challenges);
                    challenges.insert(opaque.clone(), c);
                }
                let msg = ChallengeMsg {
                    flags: SERVER_FLAGS,
                    server_challenge: c,
                    target_info: target_info(target),
                };
                let token = openssl::base64::encode_block(&msg.to_bytes());
                challenge(&format!(", opaque=\"{opaque}\", gssapi-data=\"{token}\""))
            }
            Some(token) => {
                let server_challenge =
                    self.challenges.lock().unwrap_or_else(|e| e.into_inner()).remove(&opaque);
                let (Some(server_challenge), Ok(bytes)) =
                    (server_challenge, openssl::base64::decode_block(token))
                else {
                    return challenge("");
                };
                let Ok(auth) = AuthenticateMsg::parse(&bytes) else {
                    return Register::Refused(400, "Bad Request");
                };
                let Ok(keys) = auth.verify(password.expose(), &server_challenge) else {
                    return challenge("");
                };
                let sa =
                    Association::new(REALM, target, &opaque, version, "Authorization", Role::Server, keys);
                // Version 4 signs the AUTHENTICATE's own request.
                if version >= 4 && sa.verify(req).is_err() {
                    return Register::Refused(403, "Forbidden (signature)");
                }
                let mut sas = self.sas.lock().unwrap_or_else(|e| e.into_inner());
                bounded(&mut sas);
                sas.insert(opaque.clone(), (user_of(req, "to"), sa));
                Register::Accepted(opaque)
            }
        }
    }

    /// Whether a request carries a valid signature on the association it names, which
    /// must be its sender's.
    pub fn verify(&self, req: &Message) -> bool {
        let Some(opaque) = opaque_of(req) else { return false };
        let sas = self.sas.lock().unwrap_or_else(|e| e.into_inner());
        sas.get(&opaque).is_some_and(|(user, sa)| *user == user_of(req, "from") && sa.verify(req).is_ok())
    }

    /// Forgets the association named `opaque` (its user unregistered).
    pub fn forget(&self, opaque: &str) {
        self.sas.lock().unwrap_or_else(|e| e.into_inner()).remove(opaque);
    }

    /// `bytes` (a message to a user) signed on the association named `opaque`; as they
    /// are without one.
    pub fn sign_with(&self, opaque: Option<&str>, bytes: Vec<u8>) -> Vec<u8> {
        let Some(opaque) = opaque else { return bytes };
        let mut sas = self.sas.lock().unwrap_or_else(|e| e.into_inner());
        let Some((_, sa)) = sas.get_mut(opaque) else { return bytes };
        let (Some(end), Ok(message::Parsed::Complete(m, _))) =
            (bytes.windows(4).position(|w| w == b"\r\n\r\n"), message::parse(&bytes, false))
        else {
            return bytes;
        };
        let (name, value) = sa.sign(&m);
        [&bytes[..end], format!("\r\n{name}: {value}").as_bytes(), &bytes[end..]].concat()
    }
}

/// The target information of a pool's CHALLENGE: domain and computer names.
pub(super) fn target_info(target: &str) -> Vec<u8> {
    let host = target.split('.').next().unwrap_or(target).to_ascii_uppercase();
    let mut t = Vec::new();
    for (id, v) in [(2u16, "CONTOSO"), (1, host.as_str()), (4, super::DOMAIN), (3, target)] {
        let v = crate::sip::ntlm::unicode(v);
        t.extend_from_slice(&id.to_le_bytes());
        t.extend_from_slice(&(v.len() as u16).to_le_bytes());
        t.extend_from_slice(&v);
    }
    t.extend_from_slice(&[0, 0, 0, 0]);
    t
}
