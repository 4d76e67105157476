//! `kind = "sip_register"`: a test user registers as a client does, then unregisters.
//!
//! The REGISTER goes to the user's planned pool (its FQDN, port 5061 for TLS and 5060
//! otherwise, or `port`) over the user's transport. A `401`/`407` challenge is answered
//! with the user's credentials ([`crate::sip::auth`]: Digest, RFC 7616); a stale nonce
//! is answered once more; a second challenge otherwise, or a `403`, is `auth_failed`. A
//! `301`/`302` ("Redirect request to Home Server", what Lync and OCS registrars send for
//! a user homed elsewhere) is followed once, as a client follows it, to the host its
//! `Contact` names. After the `200` the binding is removed (`Expires: 0`).
//!
//! The pool whose FQDN or members name the registrar that accepted (or whose addresses
//! it has) is where the user is homed now: `points_to`, exported as
//! `coexist_user_home{user,home_pool}`; when that is not the planned pool the check
//! fails with `wrong_home`.
//!
//! One instance per test user (`users`, default: every `[[users]]` entry); its pool
//! labels are the user's planned pool and its `target` is the user's address of record.

use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use toml::Spanned;

use super::sip::{stream_transaction, udp_transaction, TxError};
use super::{tcp, tls, BuildCx, BuildError, CheckKind, FailureReason, Outcome, Phase, ProbeContext};
use crate::pool::Pool;
use crate::sip::auth::{Challenge, Digest, Request, Scheme};
use crate::sip::message::{self, Message, RegisterParams, Transaction, Transport};
use crate::tls::TlsOptions;
use crate::users::{User, UserAuth};

/// Seconds asked for by the REGISTER (the binding is removed right after).
const EXPIRES: u32 = 60;

/// The keys of `kind = "sip_register"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipRegisterKeys {
    /// The test users (`[[users]]` names) to register; default: every one.
    pub users: Option<Spanned<Vec<Spanned<String>>>>,
    /// The registrar's port (default: the user's `port`).
    pub port: Option<Spanned<u16>>,
    /// Lowest TLS version (overrides the pool's).
    pub tls_min_version: Option<Spanned<String>>,
    /// Record the chain but do not verify it.
    pub tls_skip_verify: Option<Spanned<bool>>,
}

/// A sip_register check of one user.
#[derive(Debug, Clone, PartialEq)]
pub struct SipRegisterSpec {
    /// The test user.
    pub user: User,
    /// The planned pool's FQDN: where the REGISTER goes first.
    pub registrar: String,
    /// Its port.
    pub port: u16,
    /// TLS options (TLS transport).
    pub opts: TlsOptions,
    /// Every pool (to say where the user is homed).
    pub pools: Vec<Pool>,
    /// The instance's timeout.
    pub budget: Duration,
}

impl CheckKind for SipRegisterSpec {
    type Keys = SipRegisterKeys;

    /// The target label is the user's address of record.
    fn build(keys: &SipRegisterKeys, cx: &BuildCx<'_>) -> Result<(SipRegisterSpec, String), BuildError> {
        let user =
            cx.user.ok_or_else(|| cx.err(cx.name_span.clone(), "users: sip_register runs as test users"))?;
        let pool =
            cx.pool.ok_or_else(|| cx.err(cx.name_span.clone(), "users: the user's pool is unknown"))?;
        let port = match &keys.port {
            Some(_) => cx.port(keys.port.as_ref())?,
            None => user.port,
        };
        let opts = cx.tls_options(&super::TlsKeys {
            tls_min_version: keys.tls_min_version.as_ref(),
            tls_skip_verify: keys.tls_skip_verify.as_ref(),
            min_days_valid: None,
        })?;
        let spec = SipRegisterSpec {
            user: user.clone(),
            registrar: pool.fqdn.clone(),
            port,
            opts,
            pools: cx.pools.to_vec(),
            budget: cx.timeout,
        };
        Ok((spec, user.aor.uri()))
    }

    fn probe(&self, cx: &ProbeContext) -> impl std::future::Future<Output = Outcome> + Send {
        probe(self, cx)
    }

    fn users(keys: &SipRegisterKeys) -> Option<super::UserSelection<'_>> {
        Some(super::UserSelection(keys.users.as_ref()))
    }

    fn expect_pool(&self) -> Option<&str> {
        Some(&self.user.pool)
    }
}

/// A connection to a registrar: a TLS or TCP stream, or a connected UDP socket.
pub(super) enum Conn {
    Stream(Box<dyn Stream>, String),
    Udp(tokio::net::UdpSocket, String),
}

/// A TLS or TCP stream.
pub(super) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// What REGISTER transactions run over: a connection of the probe's own, or a
/// registered endpoint's shared link.
pub(super) trait Transact: Send {
    /// The Via sent-by and Contact host:port.
    fn sent_by(&self) -> String;

    /// Sends `request` and waits for the final response of `tx` until `deadline`.
    fn transact(
        &mut self,
        request: &[u8],
        tx: &Transaction,
        deadline: Instant,
    ) -> impl std::future::Future<Output = Result<Message, TxError>> + Send;
}

impl Transact for Conn {
    fn sent_by(&self) -> String {
        match self {
            Conn::Stream(_, s) | Conn::Udp(_, s) => s.clone(),
        }
    }

    async fn transact(
        &mut self,
        request: &[u8],
        tx: &Transaction,
        deadline: Instant,
    ) -> Result<Message, TxError> {
        match self {
            Conn::Stream(s, _) => {
                match tokio::time::timeout_at(deadline, stream_transaction(s, request, tx)).await {
                    Ok(r) => r,
                    Err(_) => {
                        Err(TxError(FailureReason::Timeout, "no final response before the deadline".into()))
                    }
                }
            }
            Conn::Udp(sock, _) => udp_transaction(sock, request, tx, deadline).await,
        }
    }
}

/// Opens a connection to `host:port` over `transport`.
pub(super) async fn connect(
    opts: &TlsOptions,
    host: &str,
    port: u16,
    transport: Transport,
    cx: &ProbeContext,
    phases: &mut Vec<(Phase, Duration)>,
) -> Result<Conn, Outcome> {
    let local = |a: Option<std::net::SocketAddr>| a.map_or_else(|| "0.0.0.0:0".to_owned(), |a| a.to_string());
    match transport {
        Transport::Tls => {
            let (stream, _) = tls::open(host, port, opts, cx, phases).await?;
            let sent_by = local(stream.local_addr());
            Ok(Conn::Stream(Box::new(stream), sent_by))
        }
        Transport::Tcp => {
            let s = tcp::connect(host, port, cx, phases)
                .await
                .map_err(|(r, d)| Outcome::fail(r, d, phases.clone()))?;
            let sent_by = local(s.local_addr().ok());
            Ok(Conn::Stream(Box::new(s), sent_by))
        }
        Transport::Udp => {
            let addrs = cx
                .addresses(host, phases)
                .await
                .map_err(|f| Outcome::fail(f.reason, f.detail, phases.clone()))?;
            let target = std::net::SocketAddr::new(addrs[0], port);
            let sock = crate::os::udp_socket_to(target).await.map_err(|e| {
                Outcome::fail(super::connect_reason(&e), format!("UDP {target}: {e}"), phases.clone())
            })?;
            let sent_by = local(sock.local_addr().ok());
            Ok(Conn::Udp(sock, sent_by))
        }
    }
}

/// How one REGISTER exchange ended.
pub(super) enum Registered {
    /// 2xx: the binding exists (the response says for how long).
    Ok(Message),
    /// 301/302 to this Contact.
    Redirect(String),
}

/// Runs REGISTER transactions on `conn` until a final verdict, answering challenges;
/// `tx` ends as the last transaction sent (the next one follows it).
pub(super) async fn register(
    user: &User,
    conn: &mut impl Transact,
    scheme: &mut Option<Digest>,
    tx: &mut Transaction,
    tag: &str,
    expires: u32,
    deadline: Instant,
) -> Result<Registered, (FailureReason, String)> {
    let mut credentials: Option<(&'static str, String)> = None;
    let mut stale_retried = false;
    for _ in 0..4 {
        let sent_by = conn.sent_by();
        let request = message::register_request(&RegisterParams {
            transport: user.transport,
            user: &user.aor.user,
            domain: &user.aor.domain,
            sent_by: &sent_by,
            tx,
            from_tag: tag,
            expires,
            credentials: credentials.as_ref().map(|(n, v)| (*n, v.as_str())),
        });
        let resp = conn.transact(&request, tx, deadline).await.map_err(|TxError(r, d)| (r, d))?;
        let code = resp.status().unwrap_or(0);
        let reason_phrase = match &resp.start {
            message::StartLine::Response { reason, .. } => reason.clone(),
            message::StartLine::Request { .. } => String::new(),
        };
        match code {
            200..=299 => return Ok(Registered::Ok(resp)),
            301 | 302 => {
                let contact = resp.header("contact").unwrap_or("").to_owned();
                return Ok(Registered::Redirect(contact));
            }
            401 | 407 => {
                let uri = format!("sip:{}", user.aor.domain);
                let (answer, stale) =
                    answer_challenge(&resp, code, &reason_phrase, scheme, "REGISTER", &uri)?;
                if credentials.is_some() && (!stale || stale_retried) {
                    return Err((
                        FailureReason::AuthFailed,
                        format!("credentials refused: {code} {reason_phrase} again"),
                    ));
                }
                stale_retried |= credentials.is_some() && stale;
                credentials = Some(answer);
                *tx = tx.next("REGISTER");
            }
            403 => return Err((FailureReason::AuthFailed, format!("403 {reason_phrase}"))),
            _ => {
                let diag = resp
                    .header("ms-diagnostics")
                    .map(|d| format!(" (ms-diagnostics: {d})"))
                    .unwrap_or_default();
                return Err((
                    FailureReason::SipStatus,
                    format!("REGISTER answered {code} {reason_phrase}{diag}"),
                ));
            }
        }
    }
    Err((FailureReason::AuthFailed, "challenged four times".into()))
}

/// A header name and the credentials in it (`Authorization` or `Proxy-Authorization`).
pub(super) type Credentials = (&'static str, String);

/// The credentials answering the Digest challenge of a `401`/`407` (`code`) to
/// `method` at `uri`: the header to send them in and its value, and whether the
/// challenge says the previous nonce was stale.
pub(super) fn answer_challenge(
    resp: &Message,
    code: u16,
    reason_phrase: &str,
    scheme: &mut Option<Digest>,
    method: &'static str,
    uri: &str,
) -> Result<(Credentials, bool), (FailureReason, String)> {
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
    let Some(digest) = challenges.iter().find(|c| c.scheme.eq_ignore_ascii_case("Digest")) else {
        return Err((
            FailureReason::AuthFailed,
            format!("{code} {reason_phrase}: no Digest challenge (offered: {})", offered.join(", ")),
        ));
    };
    let stale = digest.param("stale").is_some_and(|s| s.eq_ignore_ascii_case("true"));
    let Some(d) = scheme.as_mut() else {
        return Err((
            FailureReason::AuthFailed,
            format!("{code} {reason_phrase}: challenged, but auth = \"none\""),
        ));
    };
    let value = d
        .answer(digest, Request { method, uri }, &message::token(16))
        .map_err(|e| (FailureReason::AuthFailed, format!("{code}: cannot answer: {e}")))?;
    Ok(((answer_header, value), stale))
}

/// The pool `host` belongs to: by name (FQDN or member), else by address.
pub(super) async fn home_of(pools: &[Pool], host: &str, cx: &ProbeContext) -> String {
    if let Some(p) = pools.iter().find(|p| p.owns_name(host)) {
        return p.name.clone();
    }
    let Ok(ips) = cx.resolver.lookup_ip(host).await else { return super::dns::UNKNOWN.to_owned() };
    for p in pools {
        for name in std::iter::once(&p.fqdn).chain(&p.members) {
            if let Ok(pool_ips) = cx.resolver.lookup_ip(name).await {
                if ips.iter().any(|ip| pool_ips.contains(ip)) {
                    return p.name.clone();
                }
            }
        }
    }
    super::dns::UNKNOWN.to_owned()
}

/// Runs a sip_register probe.
pub async fn probe(spec: &SipRegisterSpec, cx: &ProbeContext) -> Outcome {
    let deadline = Instant::now() + spec.budget.saturating_sub(spec.budget / 50 + Duration::from_millis(5));
    let mut phases = Vec::with_capacity(4);
    let mut scheme = match &spec.user.auth {
        UserAuth::Digest { username, password } => Some(Digest::new(username.clone(), password.clone())),
        UserAuth::None => None,
    };
    let (mut host, mut port, mut transport) = (spec.registrar.clone(), spec.port, spec.user.transport);
    let mut redirected: Option<String> = None;
    let t = Instant::now();
    loop {
        let mut conn = match connect(&spec.opts, &host, port, transport, cx, &mut phases).await {
            Ok(c) => c,
            Err(mut o) => {
                if let Some(r) = &redirected {
                    if let Err(f) = &mut o.result {
                        f.detail = format!("after a redirect to {r}: {}", f.detail);
                    }
                }
                return o;
            }
        };
        let mut tx = message::new_transaction();
        tx.method = "REGISTER";
        // One Call-ID and From tag for the registration and its removal (RFC 3261 §10.2).
        let tag = message::token(8);
        let verdict = register(&spec.user, &mut conn, &mut scheme, &mut tx, &tag, EXPIRES, deadline).await;
        match verdict {
            Err((r, d)) => {
                phases.push((Phase::Request, t.elapsed()));
                let d = match &redirected {
                    Some(to) => format!("after a redirect to {to}: {d}"),
                    None => d,
                };
                return Outcome::fail(r, d, phases);
            }
            Ok(Registered::Redirect(contact)) => {
                if redirected.is_some() {
                    phases.push((Phase::Request, t.elapsed()));
                    return Outcome::fail(
                        FailureReason::SipStatus,
                        format!("redirected twice (to {contact})"),
                        phases,
                    );
                }
                let Some((h, p, tr)) = message::uri_target(&contact) else {
                    phases.push((Phase::Request, t.elapsed()));
                    return Outcome::fail(
                        FailureReason::SipMalformed,
                        format!("3xx without a usable Contact: {contact:?}"),
                        phases,
                    );
                };
                crate::trace::step("sip", || format!("redirected to {contact}: following it once"));
                transport = tr.unwrap_or(transport);
                port = p.unwrap_or(transport.default_port());
                host = h;
                redirected = Some(contact);
            }
            Ok(Registered::Ok(_)) => {
                // Remove the binding: the test user must not stay registered here.
                tx = tx.next("REGISTER");
                let unregistered =
                    register(&spec.user, &mut conn, &mut scheme, &mut tx, &tag, 0, deadline).await;
                phases.push((Phase::Request, t.elapsed()));
                let home = home_of(&spec.pools, &host, cx).await;
                let mut o = match unregistered {
                    Err((r, d)) => {
                        Outcome::fail(r, format!("registered, but removing the binding failed: {d}"), phases)
                    }
                    Ok(Registered::Redirect(c)) => Outcome::fail(
                        FailureReason::SipStatus,
                        format!("registered, but the unregister was redirected to {c}"),
                        phases,
                    ),
                    Ok(Registered::Ok(_)) if home != spec.user.pool => Outcome::fail(
                        FailureReason::WrongHome,
                        format!(
                            "{} registered on pool {home} (registrar {host}{}), planned {}",
                            spec.user.name,
                            redirected.as_ref().map(|_| ", after a redirect").unwrap_or(""),
                            spec.user.pool
                        ),
                        phases,
                    ),
                    Ok(Registered::Ok(_)) => Outcome::pass(phases),
                };
                o.points_to = Some(home);
                return o;
            }
        }
    }
}
