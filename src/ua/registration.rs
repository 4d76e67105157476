//! One registration routine, for the `sip_register` kind and the registered endpoints:
//! connect, REGISTER, answer challenges, follow one redirect the policy allows, read
//! what was granted; and the same exchange again to refresh or remove the binding.
//!
//! - A `401`/`407` is answered with the user's credentials ([`Credentials`]: Digest
//!   under [`crate::sip::policy`]); a stale nonce once more; a second challenge
//!   otherwise, or a `403`, is `auth_failed`.
//! - A `301`/`302` ("Redirect request to Home Server", what Lync and OCS registrars
//!   send for a user homed elsewhere) is followed once, to the host its `Contact`
//!   names, only when that host belongs to a configured pool (by name or address) and
//!   the transport is no weaker than the one in use; otherwise `policy_refused`.
//! - The `2xx` must list our Contact (matched exactly: user, host and port) with a
//!   non-zero expiry (its `expires` parameter, else `Expires`): a registrar that keeps
//!   no binding has not registered the user.
//! - The realm of the first success is pinned for the user (unless configured).
//!
//! What it does not do: hold a registration (the endpoint refreshes it), or judge
//! where the user should be homed (the kinds compare with the plan).

use std::time::Duration;

use tokio::time::Instant;

use super::conn::{connect_sip, SipConn};
pub use super::credentials::Credentials;
use super::transaction;
use super::ProbeContext;
use crate::failure::{Failure, FailureReason};
use crate::model::outcome::Phase;
use crate::model::pool::Pool;
use crate::model::users::User;
use crate::net::tls::TlsOptions;
use crate::sip::message::{self, Message, RegisterParams, StartLine, Transaction, Transport};
use crate::sip::policy;

/// What REGISTER transactions run over: a connection of the probe's own, or a
/// registered endpoint's link.
pub trait Transact: Send {
    /// The Via sent-by and Contact host:port.
    fn sent_by(&self) -> String;

    /// Sends `request` and waits for the final response of `tx` until `deadline`.
    fn transact(
        &mut self,
        request: &[u8],
        tx: &Transaction,
        deadline: Instant,
    ) -> impl std::future::Future<Output = Result<Message, Failure>> + Send;
}

impl Transact for SipConn {
    fn sent_by(&self) -> String {
        SipConn::sent_by(self).to_owned()
    }

    async fn transact(
        &mut self,
        request: &[u8],
        tx: &Transaction,
        deadline: Instant,
    ) -> Result<Message, Failure> {
        match self {
            SipConn::Stream(s, _) => transaction::over_stream(s, request, tx, deadline).await,
            SipConn::Udp(sock, _) => transaction::over_udp(sock, request, tx, deadline).await,
        }
    }
}

/// Opens the connections a registration runs over.
pub trait Connector: Send {
    /// The connection.
    type Conn: Transact;

    /// Connects to `host:port` over `transport`.
    fn connect(
        &mut self,
        host: &str,
        port: u16,
        transport: Transport,
        phases: &mut Vec<(Phase, Duration)>,
    ) -> impl std::future::Future<Output = Result<Self::Conn, Failure>> + Send;
}

/// A probe's own connections ([`SipConn`]).
pub struct OwnConnections<'a> {
    /// TLS options of the planned pool.
    pub opts: &'a TlsOptions,
    /// The probe context.
    pub cx: &'a ProbeContext,
}

impl Connector for OwnConnections<'_> {
    type Conn = SipConn;

    fn connect(
        &mut self,
        host: &str,
        port: u16,
        transport: Transport,
        phases: &mut Vec<(Phase, Duration)>,
    ) -> impl std::future::Future<Output = Result<SipConn, Failure>> + Send {
        connect_sip(self.opts, host, port, transport, self.cx, phases)
    }
}

/// The reason phrase of a response.
pub fn reason_phrase(resp: &Message) -> String {
    match &resp.start {
        StartLine::Response { reason, .. } => reason.clone(),
        StartLine::Request { .. } => String::new(),
    }
}

/// How one REGISTER exchange ended.
pub enum Verdict {
    /// 2xx.
    Ok(Message),
    /// 301/302 to this Contact.
    Redirect(String),
}

/// A registration's identity and state: what its refreshes and its removal reuse.
pub struct Binding {
    /// The last REGISTER transaction (the next one follows it: same Call-ID, next CSeq).
    pub tx: Transaction,
    /// The From tag.
    pub tag: String,
    /// The credentials (nonce counts, the policy).
    pub creds: Credentials,
    /// The registrar host that accepted.
    pub host: String,
    /// The transport in use.
    pub transport: Transport,
    /// Seconds granted.
    pub granted: u32,
    /// The Contact of a redirect that was followed.
    pub redirected: Option<String>,
}

/// A registration made: the connection and the binding.
pub struct Registration<C> {
    /// The connection it was made over.
    pub conn: C,
    /// The binding.
    pub binding: Binding,
}

/// Where a registration starts and what it asks for.
pub struct Plan<'a> {
    /// The test user.
    pub user: &'a User,
    /// The planned pool's FQDN, or the registrar the user is configured with.
    pub host: &'a str,
    /// Its port.
    pub port: u16,
    /// Every pool (a redirect may go only to one of them).
    pub pools: &'a [Pool],
    /// Seconds asked for.
    pub expires: u32,
    /// When the attempt gives up.
    pub deadline: Instant,
}

/// Registers `plan.user`: connects, answers challenges, follows one redirect the
/// policy allows, and checks that the binding was kept. `skew` receives the
/// registrar's clock skew when its challenge showed one, whether or not the
/// registration then succeeds (a clock far off is why an NTLM sign-in fails).
pub async fn register<K: Connector>(
    k: &mut K,
    plan: &Plan<'_>,
    cx: &ProbeContext,
    phases: &mut Vec<(Phase, Duration)>,
    skew: &mut Option<f64>,
) -> Result<Registration<K::Conn>, Failure> {
    let user = plan.user;
    let mut creds = Credentials::of(user, cx.endpoints.realm_of(&user.name));
    let (mut host, mut port, mut transport) = (plan.host.to_owned(), plan.port, user.transport);
    let mut redirected: Option<String> = None;
    let after = |r: &Option<String>, d: String| match r {
        Some(to) => format!("after a redirect to {to}: {d}"),
        None => d,
    };
    let t = Instant::now();
    loop {
        let mut conn =
            match tokio::time::timeout_at(plan.deadline, k.connect(&host, port, transport, phases)).await {
                Ok(Ok(c)) => c,
                Ok(Err(mut f)) => {
                    f.detail = after(&redirected, std::mem::take(&mut f.detail));
                    return Err(f);
                }
                Err(_) => {
                    return Err(Failure::new(FailureReason::Timeout, format!("connecting to {host}:{port}")));
                }
            };
        let mut tx = message::new_transaction();
        tx.method = "REGISTER";
        // One Call-ID and From tag for the registration, its refreshes and its removal
        // (RFC 3261 §10.2).
        let tag = message::token(8);
        let verdict =
            exchange(user, transport, &mut conn, &mut creds, &mut tx, &tag, plan.expires, plan.deadline)
                .await;
        *skew = creds.skew().or(*skew);
        let fail = |f: Failure, phases: &mut Vec<(Phase, Duration)>| {
            phases.push((Phase::Request, t.elapsed()));
            let detail = after(&redirected, format!("{host}:{port}: {}", f.detail));
            Failure { detail, ..f }
        };
        match verdict {
            Err(f) => return Err(fail(f, phases)),
            Ok(Verdict::Redirect(contact)) => {
                if redirected.is_some() {
                    let f =
                        Failure::new(FailureReason::SipStatus, format!("redirected twice (to {contact})"));
                    return Err(fail(f, phases));
                }
                let Some((h, p, tr)) = message::uri_target(&contact) else {
                    let f = Failure::new(
                        FailureReason::SipMalformed,
                        format!("3xx without a usable Contact: {contact:?}"),
                    );
                    return Err(fail(f, phases));
                };
                let to = tr.unwrap_or(transport);
                let listed = redirect_listed(&user.redirect_hosts, &h);
                let allowed = listed
                    || tokio::time::timeout_at(plan.deadline, redirect_in_pool(plan.pools, &h, cx))
                        .await
                        .unwrap_or_default();
                if let Err(why) = policy::redirect(transport, &h, to, allowed) {
                    tracing::warn!(user = %user.name, registrar = %host, contact = ?contact, "{}", why.escape_debug());
                    crate::trace::step("sip", || format!("redirected to {contact}: {why}"));
                    return Err(fail(Failure::new(FailureReason::PolicyRefused, why), phases));
                }
                crate::trace::step("sip", || format!("redirected to {contact}: following it once"));
                // A Lync Director signs the user in, then redirects: the home pool is
                // another server, with its own association.
                creds.forget_association();
                transport = to;
                port = p.unwrap_or(transport.default_port());
                host = h;
                redirected = Some(contact);
            }
            Ok(Verdict::Ok(resp)) => {
                let sent_by = conn.sent_by();
                let granted = match granted(&resp, user, &sent_by, plan.expires) {
                    Ok(g) => g,
                    Err(f) => return Err(fail(f, phases)),
                };
                if let Some(realm) = creds.answered_realm() {
                    cx.endpoints.pin_realm(&user.name, realm);
                }
                let binding = Binding { tx, tag, creds, host, transport, granted, redirected };
                return Ok(Registration { conn, binding });
            }
        }
    }
}

/// Refreshes (`expires` > 0) or removes (0) `binding` on `conn`: the same Call-ID and
/// From tag, the next CSeq. Returns the seconds granted (0 when removed).
pub async fn again(
    user: &User,
    conn: &mut impl Transact,
    binding: &mut Binding,
    expires: u32,
    deadline: Instant,
) -> Result<u32, Failure> {
    binding.tx = binding.tx.next("REGISTER");
    let t = binding.transport;
    match exchange(user, t, conn, &mut binding.creds, &mut binding.tx, &binding.tag, expires, deadline)
        .await?
    {
        Verdict::Ok(resp) if expires == 0 => {
            drop(resp);
            Ok(0)
        }
        Verdict::Ok(resp) => {
            let g = granted(&resp, user, &conn.sent_by(), expires)?;
            binding.granted = g;
            Ok(g)
        }
        Verdict::Redirect(c) => Err(Failure::new(FailureReason::SipStatus, format!("redirected to {c}"))),
    }
}

/// Runs REGISTER transactions on `conn` until a final verdict, answering challenges;
/// `tx` ends as the last transaction sent (the next one follows it).
#[allow(clippy::too_many_arguments)]
async fn exchange(
    user: &User,
    transport: Transport,
    conn: &mut impl Transact,
    creds: &mut Credentials,
    tx: &mut Transaction,
    tag: &str,
    expires: u32,
    deadline: Instant,
) -> Result<Verdict, Failure> {
    creds.begin();
    let mut retried = false;
    for _ in 0..4 {
        let sent_by = conn.sent_by();
        let request = creds.request(|credentials| {
            message::register_request(&RegisterParams {
                // The connection's transport: after a redirect it may not be the user's.
                transport,
                user: &user.aor.user,
                domain: &user.aor.domain,
                sent_by: &sent_by,
                tx,
                from_tag: tag,
                expires,
                credentials,
            })
        })?;
        let resp = conn.transact(&request, tx, deadline).await?;
        let code = resp.status().unwrap_or(0);
        let phrase = reason_phrase(&resp);
        creds.check(&resp)?;
        match code {
            200..=299 => return Ok(Verdict::Ok(resp)),
            301 | 302 => return Ok(Verdict::Redirect(resp.header("contact").unwrap_or("").to_owned())),
            401 | 407 => {
                let uri = format!("sip:{}", user.aor.domain);
                let answered = creds.answering();
                let may_follow = creds.answer(&resp, "REGISTER", &uri)?;
                if answered && (!may_follow || retried) && !creds.is_ntlm() {
                    return Err(Failure::new(
                        FailureReason::AuthFailed,
                        format!("credentials refused: {code} {phrase} again"),
                    ));
                }
                retried |= answered;
                *tx = tx.next("REGISTER");
            }
            403 => return Err(Failure::new(FailureReason::AuthFailed, format!("403 {phrase}"))),
            _ => {
                let diag = resp
                    .header("ms-diagnostics")
                    .map(|d| format!(" (ms-diagnostics: {d})"))
                    .unwrap_or_default();
                return Err(Failure::new(
                    FailureReason::SipStatus,
                    format!("REGISTER answered {code} {phrase}{diag}"),
                ));
            }
        }
    }
    Err(Failure::new(FailureReason::AuthFailed, "challenged four times"))
}

/// The seconds a `2xx` grants our binding: our Contact's `expires` (the Contact matched
/// exactly: user, host and port), else `Expires`, else what was asked; never more than
/// asked. Zero, or a list of Contacts without ours, is a failure: the registrar kept
/// no binding.
pub fn granted(resp: &Message, user: &User, sent_by: &str, asked: u32) -> Result<u32, Failure> {
    let contacts: Vec<&str> = resp.header_values("contact").collect();
    let ours = contacts.iter().find(|c| is_our_contact(c, user, sent_by));
    let from_contact = ours.and_then(|c| {
        message::param(contact_params(c), "expires")
            .and_then(|v| message::bounded_decimal(v, u64::from(u32::MAX)))
    });
    // RFC 3261 §10.3: the 2xx lists every binding of the address of record; a registrar
    // that lists none of ours has kept none (or is no registrar at all).
    if asked > 0 && ours.is_none() {
        return Err(Failure::new(
            FailureReason::SipStatus,
            format!("the registrar's 2xx lists {} Contact(s), none of them ours ({sent_by})", contacts.len()),
        ));
    }
    let from_header =
        || resp.header("expires").and_then(|v| message::bounded_decimal(v.trim(), u64::from(u32::MAX)));
    let g = from_contact.or_else(from_header).map_or(asked, |v| v.min(u64::from(asked)) as u32);
    if g == 0 && asked > 0 {
        return Err(Failure::new(
            FailureReason::SipStatus,
            "the registrar granted 0 seconds: no binding kept",
        ));
    }
    Ok(g)
}

/// The header parameters of a Contact value: after the `>` that closes its first `<`
/// (a later parameter may hold a `>` of its own), or after the addr-spec.
fn contact_params(value: &str) -> &str {
    let v = value.trim();
    match v.find('<').and_then(|a| v[a..].find('>').map(|b| a + b)) {
        Some(end) => &v[end + 1..],
        None => v,
    }
}

/// Whether a Contact value is ours: `sip:<user>@<sent_by>`, exactly.
fn is_our_contact(value: &str, user: &User, sent_by: &str) -> bool {
    let uri = message::addr_uri(value);
    if message::uri_user(uri) != Some(user.aor.user.as_str()) {
        return false;
    }
    let Some((host, port, _)) = message::uri_target(uri) else { return false };
    let Some((want_host, want_port)) = sent_by.rsplit_once(':') else { return false };
    let want_host = want_host.trim_matches(['[', ']']);
    host.eq_ignore_ascii_case(want_host) && port.map(|p| p.to_string()).as_deref() == Some(want_port)
}

/// Whether a redirect may go to `host`: a pool's FQDN or member by name, or an address
/// literal that one of them resolves to now. A name is never judged by what it
/// resolves to: its addresses could be a pool's at the check and the attacker's at the
/// connect (DNS rebinding), or the pool's and the attacker's at once.
/// Whether `host` (a Contact's host) is one of the user's `redirect_hosts`: a name,
/// case and a final dot aside, or an address compared as an address.
fn redirect_listed(listed: &[String], host: &str) -> bool {
    let host = host.trim_matches(['[', ']']);
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => listed.iter().any(|a| a.parse::<std::net::IpAddr>() == Ok(ip)),
        Err(_) => {
            let name = host.trim_end_matches('.');
            listed.iter().any(|a| a.eq_ignore_ascii_case(name))
        }
    }
}

async fn redirect_in_pool(pools: &[Pool], host: &str, cx: &ProbeContext) -> bool {
    if pools.iter().any(|p| p.owns_name(host)) {
        return true;
    }
    let Ok(ip) = host.trim_matches(['[', ']']).parse::<std::net::IpAddr>() else { return false };
    for p in pools {
        for name in std::iter::once(&p.fqdn).chain(&p.members) {
            if cx.resolver.lookup_ip(name).await.is_ok_and(|ips| ips.contains(&ip)) {
                return true;
            }
        }
    }
    false
}

/// The pool `host` belongs to: by name (FQDN or member), else by address.
pub async fn home_of(pools: &[Pool], host: &str, cx: &ProbeContext) -> String {
    if let Some(p) = pools.iter().find(|p| p.owns_name(host)) {
        return p.name.clone();
    }
    let unknown = || crate::model::pool::UNKNOWN.to_owned();
    let Ok(ips) = cx.resolver.lookup_ip(host).await else { return unknown() };
    for p in pools {
        for name in std::iter::once(&p.fqdn).chain(&p.members) {
            if let Ok(pool_ips) = cx.resolver.lookup_ip(name).await {
                if ips.iter().any(|ip| pool_ips.contains(ip)) {
                    return p.name.clone();
                }
            }
        }
    }
    unknown()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::users::{Aor, UserAuth};
    use crate::sip::message::{parse, Parsed};

    fn user() -> User {
        User {
            name: "bob".into(),
            aor: Aor::parse("sip:bob@example.com").unwrap(),
            pool: "p".into(),
            auth: UserAuth::None,
            transport: Transport::Udp,
            port: 5060,
            sip: true,
            redirect_hosts: Vec::new(),
        }
    }

    fn ok(contacts: &str) -> Message {
        let text = format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n\
             {contacts}Content-Length: 0\r\n\r\n"
        );
        match parse(text.as_bytes(), false).unwrap() {
            Parsed::Complete(m, _) => m,
            Parsed::Incomplete => unreachable!(),
        }
    }

    #[test]
    fn redirect_hosts_match_names_without_case_or_final_dot_and_addresses_as_addresses() {
        let listed = ["director.contoso.com".to_owned(), "2001:db8::1".to_owned(), "192.0.2.7".to_owned()];
        for host in
            ["director.contoso.com", "Director.Contoso.COM.", "[2001:DB8:0::1]", "2001:db8::0:1", "192.0.2.7"]
        {
            assert!(redirect_listed(&listed, host), "{host}");
        }
        for host in
            ["director.contoso.com.evil", "evil-director.contoso.com", "2001:db8::2", "192.0.2.70", ""]
        {
            assert!(!redirect_listed(&listed, host), "{host}");
        }
    }

    #[test]
    fn the_contact_is_matched_exactly_and_zero_is_no_binding() {
        let u = user();
        let sent_by = "127.0.0.1:4321";
        let r = ok("Contact: <sip:bob@127.0.0.1:43210>;expires=300\r\nContact: <sip:bob@127.0.0.1:4321>;expires=90\r\n");
        assert_eq!(granted(&r, &u, sent_by, 600).unwrap(), 90, "port 4321 is not 43210");
        let r = ok("Contact: <sip:bob@127.0.0.1:43210>;expires=300\r\n");
        let e = granted(&r, &u, sent_by, 600).unwrap_err();
        assert!(e.detail.contains("none of them ours"), "{e}");
        let r = ok("Contact: <sip:bob@127.0.0.1:4321>;expires=0\r\n");
        assert!(granted(&r, &u, sent_by, 600).unwrap_err().detail.contains("0 seconds"));
        let r = ok("Expires: 0\r\n");
        assert!(granted(&r, &u, sent_by, 600).is_err());
        let r = ok("Contact: <sip:alice@127.0.0.1:4321>;expires=30\r\n");
        assert!(granted(&r, &u, sent_by, 600).is_err(), "another user's binding is not ours");
        // Removing: no Contact left is what was asked.
        assert_eq!(granted(&ok(""), &u, sent_by, 0).unwrap(), 0);
        // No Contact at all: no binding listed, none kept.
        assert!(granted(&ok("Expires: 120\r\n"), &u, sent_by, 600).is_err());
        assert!(granted(&ok(""), &u, sent_by, 600).is_err());
        // Our Contact without its own expires: Expires, else what was asked.
        let mine = "Contact: <sip:bob@127.0.0.1:4321>\r\n";
        assert_eq!(granted(&ok(&format!("{mine}Expires: 120\r\n")), &u, sent_by, 600).unwrap(), 120);
        assert_eq!(granted(&ok(mine), &u, sent_by, 600).unwrap(), 600);
        // A later parameter holding a '>' does not hide expires=0.
        let r = ok("Contact: <sip:bob@127.0.0.1:4321>;expires=0;+sip.instance=\"<urn:uuid:1>\"\r\n");
        assert!(granted(&r, &u, sent_by, 600).is_err());
        // Never more than asked.
        let r = ok("Contact: <sip:bob@127.0.0.1:4321;transport=udp>;expires=99999\r\n");
        assert_eq!(granted(&r, &u, sent_by, 600).unwrap(), 600);
        let r = ok("Contact: <sip:bob@[::1]:4321>;expires=60\r\n");
        assert_eq!(granted(&r, &u, "[::1]:4321", 600).unwrap(), 60);
    }
}
