//! A test user's credentials under the authentication policy: which challenge it
//! answers and how (Digest, RFC 7616; NTLM as OCS and Lync sign users in, MS-SIPAE),
//! and for NTLM the security association that signs every later message of the user's
//! and checks every message of the server's.
//!
//! What it does not do: send anything ([`super::registration`] and [`super::client`]
//! run the transactions; the endpoint's link signs what it sends on an association).

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::registration::reason_phrase;
use crate::failure::{Failure, FailureReason};
use crate::model::outcome::Measure;
use crate::model::users::{User, UserAuth};
use crate::sip::auth::{Challenge, Digest, Request, Scheme, Secret};
use crate::sip::message::{self, Message};
use crate::sip::ntlm::{self, ChallengeMsg, Nonces};
use crate::sip::policy::{self, DigestPolicy};
use crate::sip::sipae::{Association, Role};

/// An NTLM security association shared by a user's registration and its endpoint's
/// link (one counter of signed messages).
pub type SharedAssociation = Arc<Mutex<Association>>;

/// Largest clock difference accepted between the agent and a registrar (the `Date` of
/// its challenge): NTLM fails beyond 15 minutes, Kerberos beyond 5.
pub const MAX_CLOCK_SKEW: f64 = 300.0;

/// A test user's credentials under the authentication policy.
pub struct Credentials {
    digest: Option<Digest>,
    ntlm: Option<NtlmState>,
    /// The credentials header for the next request: the answer to the last challenge.
    next: Option<(&'static str, String)>,
    policy: DigestPolicy,
    /// The realm and algorithm the last answer went to: a stale nonce is answered
    /// again only in the same realm with the same algorithm (no downgrade on a retry).
    answered: Option<(String, String)>,
    /// The user's name, for log lines.
    user: String,
    /// The registrar's clock minus ours at the last challenge with a `Date`.
    skew: Option<f64>,
}

/// A test user's NTLM side (MS-SIPAE).
struct NtlmState {
    domain: String,
    username: String,
    password: Secret,
    /// The association: set up by the AUTHENTICATE, established once a final response
    /// of the server's carries its valid signature.
    sa: Option<SharedAssociation>,
    established: bool,
    /// The AUTHENTICATE was sent: a first-leg challenge now means refused credentials.
    sent_authenticate: bool,
    /// The next request carries the AUTHENTICATE and, for version 4, a signature.
    sign_next: bool,
    /// An association the server dropped was set up again (once only).
    reestablished: bool,
}

impl Credentials {
    /// The credentials of `user`; `pinned`: the realm learned for it earlier.
    pub fn of(user: &User, pinned: Option<String>) -> Credentials {
        let mut c = Credentials {
            digest: None,
            ntlm: None,
            next: None,
            policy: DigestPolicy::default(),
            answered: None,
            user: user.name.clone(),
            skew: None,
        };
        match &user.auth {
            UserAuth::Digest { username, password, realm, allow_md5, min_algorithm } => {
                c.digest = Some(Digest::new(username.clone(), password.clone()));
                c.policy = DigestPolicy {
                    allow_md5: *allow_md5,
                    min_algorithm: *min_algorithm,
                    realm: realm.clone().or(pinned),
                };
            }
            UserAuth::Ntlm { domain, username, password } => {
                c.ntlm = Some(NtlmState {
                    domain: domain.clone(),
                    username: username.clone(),
                    password: password.clone(),
                    sa: None,
                    established: false,
                    sent_authenticate: false,
                    sign_next: false,
                    reestablished: false,
                });
            }
            UserAuth::None => {}
        }
        c
    }

    /// The realm the last answer went to.
    pub fn answered_realm(&self) -> Option<&str> {
        self.answered.as_ref().map(|(r, _)| r.as_str())
    }

    /// The registrar's clock minus ours (seconds) at the last challenge with a `Date`.
    pub fn skew(&self) -> Option<f64> {
        self.skew
    }

    /// Whether the user signs in with NTLM.
    pub fn is_ntlm(&self) -> bool {
        self.ntlm.is_some()
    }

    /// The established NTLM security association, if any.
    pub fn association(&self) -> Option<SharedAssociation> {
        self.ntlm.as_ref().filter(|n| n.established).and_then(|n| n.sa.clone())
    }

    /// Forgets the NTLM association and handshake (a redirect: the next registrar is
    /// another server, with associations of its own).
    pub fn forget_association(&mut self) {
        if let Some(n) = self.ntlm.as_mut() {
            n.sa = None;
            n.established = false;
            n.sent_authenticate = false;
            n.sign_next = false;
        }
        self.next = None;
    }

    /// Starts a new exchange: no answer to a challenge is pending.
    pub fn begin(&mut self) {
        self.next = None;
    }

    /// The answer to the last challenge, for a request built outside
    /// [`Credentials::request`] (the endpoint's link signs NTLM on its own).
    pub fn pending(&self) -> Option<(&str, &str)> {
        self.next.as_ref().map(|(n, v)| (*n, v.as_str()))
    }

    /// Whether the next request answers a challenge.
    pub fn answering(&self) -> bool {
        self.next.is_some()
    }

    /// The request `build` makes (given the credentials header to carry, if any): with
    /// the answer to the last challenge, or signed on an established NTLM association.
    pub fn request(&mut self, build: impl Fn(Option<(&str, &str)>) -> Vec<u8>) -> Result<Vec<u8>, Failure> {
        let signing = self.ntlm.as_ref().and_then(|n| {
            let sa = n.sa.as_ref()?;
            (n.sign_next || (n.established && self.next.is_none())).then(|| sa.clone())
        });
        let Some(sa) = signing else {
            return Ok(build(self.next.as_ref().map(|(n, v)| (*n, v.as_str()))));
        };
        let plain = build(None);
        let m = match message::parse(&plain, false) {
            Ok(message::Parsed::Complete(m, _)) => m,
            _ => return Err(Failure::new(FailureReason::Internal, "a request of ours does not parse")),
        };
        let mut sa = sa.lock().unwrap_or_else(|e| e.into_inner());
        let value = match &self.next {
            // The AUTHENTICATE's request: its header, then the signature's fields.
            Some((_, prefix)) => {
                let (crand, cnum, response) = sa.signature(&m);
                format!("{prefix}, crand=\"{crand}\", cnum=\"{cnum}\", response=\"{response}\"")
            }
            None => sa.sign(&m).1,
        };
        Ok(build(Some((sa.header, &value))))
    }

    /// Checks a final response (not a challenge) on an NTLM association: it must carry
    /// the server's valid signature; the first one that does establishes the
    /// association.
    pub fn check(&mut self, resp: &Message) -> Result<(), Failure> {
        let Some(n) = self.ntlm.as_mut() else { return Ok(()) };
        let code = resp.status().unwrap_or(0);
        if code < 200 || code == 401 || code == 407 {
            return Ok(());
        }
        let Some(sa) = n.sa.as_ref() else {
            // An NTLM user is never accepted without signing in: a 2xx before the
            // handshake would turn every later signature off.
            if (200..300).contains(&code) {
                return Err(Failure::new(
                    FailureReason::AuthSignature,
                    format!(
                        "{code} {}: accepted without an NTLM sign-in (nothing signed)",
                        reason_phrase(resp)
                    ),
                ));
            }
            return Ok(());
        };
        let verdict = sa.lock().unwrap_or_else(|e| e.into_inner()).verify(resp);
        match verdict {
            Ok(()) => {
                // A signed exchange on an association already established: a later drop
                // may be answered by signing in again once more.
                if n.established {
                    n.reestablished = false;
                }
                n.established = true;
                n.sign_next = false;
                Ok(())
            }
            Err(e) => {
                tracing::warn!(user = %self.user, code, "{e}");
                Err(Failure::new(
                    FailureReason::AuthSignature,
                    format!("{code} {}: {e}", reason_phrase(resp)),
                ))
            }
        }
    }

    /// Answers the challenge of `resp` (a `401`/`407`) to `method` at `uri`: the answer
    /// goes with the next request ([`Credentials::request`]). Returns whether this
    /// challenge may follow an answer of ours (a stale nonce; the NTLM handshake's
    /// second leg; an association the server dropped, once) rather than refuse it.
    pub fn answer(&mut self, resp: &Message, method: &'static str, uri: &str) -> Result<bool, Failure> {
        let code = resp.status().unwrap_or(0);
        let phrase = reason_phrase(resp);
        if let Some(s) = clock_skew(resp) {
            self.skew = Some(s);
        }
        let (challenge_header, answer_header) = if code == 401 {
            ("www-authenticate", "Authorization")
        } else {
            ("proxy-authenticate", "Proxy-Authorization")
        };
        let challenges: Vec<Challenge> = resp
            .headers
            .iter()
            .filter(|(n, _)| n == challenge_header)
            .filter_map(|(_, v)| Challenge::parse(v).ok())
            .collect();
        let offered: Vec<&str> = challenges.iter().map(|c| c.scheme.as_str()).collect();
        let wanted = if self.ntlm.is_some() { "NTLM" } else { "Digest" };
        let Some(chosen) = challenges.iter().find(|c| c.scheme.eq_ignore_ascii_case(wanted)) else {
            let ours =
                if self.digest.is_none() && self.ntlm.is_none() { ", and auth = \"none\"" } else { "" };
            return Err(Failure::new(
                FailureReason::AuthFailed,
                format!(
                    "{code} {phrase}: scheme not supported: no {wanted} challenge (offered: {}){ours}",
                    offered.join(", ")
                ),
            ));
        };
        if self.ntlm.is_some() {
            let (user, chosen) = (self.user.clone(), chosen.clone());
            return self.answer_ntlm(resp, &chosen, answer_header, &user);
        }
        let Some(d) = self.digest.as_mut() else {
            return Err(Failure::new(
                FailureReason::AuthFailed,
                format!("{code} {phrase}: challenged, but auth = \"none\""),
            ));
        };
        let refuse = |why: String| {
            tracing::warn!(user = %self.user, "challenge not answered: {why}");
            Failure::new(FailureReason::PolicyRefused, format!("{code} {phrase}: {why}"))
        };
        let chosen = policy::choose_digest(&challenges, &self.policy).map_err(refuse)?;
        let stale = chosen.param("stale").is_some_and(|s| s.eq_ignore_ascii_case("true"));
        let realm = chosen.param("realm").unwrap_or("").to_owned();
        let algorithm = chosen.param("algorithm").unwrap_or("MD5").to_ascii_uppercase();
        if let Some((r, a)) = self.answered.as_ref().filter(|_| stale) {
            if *r != realm || *a != algorithm {
                return Err(refuse(format!(
                    "a stale-nonce challenge for realm {realm:?} with {algorithm}, after an answer for {r:?} with {a}"
                )));
            }
        }
        let value = d
            .answer(chosen, Request { method, uri }, &message::token(16))
            .map_err(|e| Failure::new(FailureReason::AuthFailed, format!("{code}: cannot answer: {e}")))?;
        self.answered = Some((realm, algorithm));
        self.next = Some((answer_header, value));
        Ok(stale)
    }

    /// The NTLM handshake (MS-SIPAE §3.2.5.1.2): the first leg names the realm, target
    /// and version and is answered with an empty token; the second carries the
    /// CHALLENGE message and is answered with the AUTHENTICATE.
    fn answer_ntlm(
        &mut self,
        resp: &Message,
        c: &Challenge,
        header: &'static str,
        user: &str,
    ) -> Result<bool, Failure> {
        let code = resp.status().unwrap_or(0);
        let phrase = reason_phrase(resp);
        let fail = |reason, why: String| Failure::new(reason, format!("{code} {phrase}: {why}"));
        let realm = c.param("realm").unwrap_or("").to_owned();
        let target = c.param("targetname").unwrap_or("").to_owned();
        let version: u32 = c.param("version").and_then(|v| v.trim().parse().ok()).unwrap_or(2);
        if realm.contains(['"', '\\']) || target.contains(['"', '\\']) {
            return Err(fail(FailureReason::SipMalformed, "a realm or targetname with quotes".into()));
        }
        if let Some(skew) = clock_skew(resp) {
            if skew.abs() > MAX_CLOCK_SKEW {
                let way = if skew > 0.0 { "ahead of" } else { "behind" };
                return Err(fail(
                    FailureReason::ClockSkew,
                    format!(
                        "the registrar's clock (Date) is {:.0} s {way} the agent's; NTLM fails beyond 900 s",
                        skew.abs()
                    ),
                ));
            }
        }
        // invariant: answer_ntlm is called only for a user with NTLM credentials.
        let n = self.ntlm.as_mut().expect("NTLM credentials");
        let Some(token) = c.param("gssapi-data").filter(|g| !g.is_empty()) else {
            // First leg. After an AUTHENTICATE it means the password was refused; on an
            // established association, that the server dropped it (set up again once).
            if n.sent_authenticate && !n.established {
                return Err(fail(FailureReason::AuthFailed, format!("{user}'s NTLM credentials refused")));
            }
            if n.established {
                if n.reestablished {
                    return Err(fail(
                        FailureReason::AuthFailed,
                        "the server dropped the security association again".into(),
                    ));
                }
                tracing::warn!(user = %user, "the server dropped the NTLM security association; signing in again");
                n.reestablished = true;
            }
            n.sa = None;
            n.established = false;
            n.sent_authenticate = false;
            n.sign_next = false;
            let version_param = if version > 2 { format!(", version={version}") } else { String::new() };
            self.next = Some((
                header,
                format!("NTLM qop=\"auth\", realm=\"{realm}\", targetname=\"{target}\", gssapi-data=\"\"{version_param}"),
            ));
            return Ok(true);
        };
        let opaque = c.param("opaque").unwrap_or("").to_owned();
        if opaque.contains(['"', '\\']) {
            return Err(fail(FailureReason::SipMalformed, "an opaque with quotes".into()));
        }
        let bytes = openssl::base64::decode_block(token)
            .map_err(|_| fail(FailureReason::SipMalformed, "gssapi-data is not base64".into()))?;
        let challenge =
            ChallengeMsg::parse(&bytes).map_err(|e| fail(FailureReason::SipMalformed, e.to_string()))?;
        let workstation = "COEXISTD";
        let a = ntlm::authenticate(
            &challenge,
            &n.username,
            &n.domain,
            n.password.expose(),
            workstation,
            &Nonces::fresh()
                .ok_or_else(|| fail(FailureReason::Internal, "the system's random source failed".into()))?,
        )
        .map_err(|e| fail(FailureReason::AuthFailed, e.to_string()))?;
        let sa = Association::new(&realm, &target, &opaque, version, header, Role::Client, a.keys);
        n.sa = Some(Arc::new(Mutex::new(sa)));
        n.sent_authenticate = true;
        n.sign_next = version >= 4;
        let version_param = if version > 2 { format!(", version={version}") } else { String::new() };
        self.next = Some((
            header,
            format!(
                "NTLM qop=\"auth\", opaque=\"{opaque}\", realm=\"{realm}\", targetname=\"{target}\", gssapi-data=\"{}\"{version_param}",
                openssl::base64::encode_block(&a.message)
            ),
        ));
        Ok(true)
    }
}

/// `coexist_clock_skew_seconds`: the registrar's clock minus the agent's.
pub static CLOCK_SKEW: Measure = Measure {
    name: "coexist_clock_skew_seconds",
    help: "The registrar's clock minus the agent's, from the Date of its last challenge (NTLM fails beyond 900 s, Kerberos beyond 300 s).",
    label: None,
};

/// The registrar's clock minus ours, in seconds, from the `Date` of `resp`.
pub fn clock_skew(resp: &Message) -> Option<f64> {
    let date = httpdate::parse_http_date(resp.header("date")?.trim()).ok()?;
    let now = SystemTime::now();
    Some(match date.duration_since(now) {
        Ok(ahead) => ahead.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    })
}
