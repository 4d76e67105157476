//! `kind = "http"`: GET over TLS — Lync web services, `lyncdiscover` and
//! `lyncdiscoverinternal` autodiscover, meet and dial-in URLs.
//!
//! The request runs over the project's own TLS stream (hyper's client connection on
//! it), so the same engines, certificate checks and phase timings apply as for the tls
//! kind: resolve, connect, tls, request.

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use serde::Deserialize;
use toml::Spanned;

use super::{BuildCx, BuildError, CheckKind, Failure, FailureReason, Outcome, Phase, ProbeContext};
use crate::net::tls::TlsOptions;
use crate::ua::conn::{host_port, open};

/// A check that signs in runs at most this often (account lockout policies).
pub const SIGN_IN_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Largest body read for `body_contains`.
pub const BODY_LIMIT: usize = 1 << 20;

/// An http check.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSpec {
    /// Host connected to, sent as SNI and `Host`, checked against the certificate.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Path and query.
    pub path: String,
    /// Accepted status codes; empty: any 2xx.
    pub expect_status: Vec<u16>,
    /// Text the body must contain.
    pub body_contains: Option<String>,
    /// Authentication schemes a `401`/`407` must offer (`WWW-Authenticate`), each.
    pub expect_auth: Vec<String>,
    /// Sign in with NTLM (RFC 4559) as this test user's Windows account, when set.
    pub sign_in: Option<NtlmAccount>,
    /// TLS engine, version floor, verification, expiry margin.
    pub opts: TlsOptions,
}

/// A Windows account an http check signs in with (from a `[[users]]` entry with
/// `auth = "ntlm"`; the password never printed).
#[derive(Debug, Clone, PartialEq)]
pub struct NtlmAccount {
    /// The `[[users]]` name.
    pub name: String,
    /// The Windows domain (NetBIOS), empty with a user principal name.
    pub domain: String,
    /// The account.
    pub username: String,
    /// The password.
    pub password: crate::sip::auth::Secret,
}

/// The keys of `kind = "http"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpKeys {
    /// Target host (with `path`; default: the pool FQDN).
    pub host: Option<Spanned<String>>,
    /// Target port (with `path`; default 443).
    pub port: Option<Spanned<u16>>,
    /// Full URL (`https://host[:port]/path`); `{fqdn}` allowed.
    pub url: Option<Spanned<String>>,
    /// Path on the target host.
    pub path: Option<Spanned<String>>,
    /// Accepted status codes (default: any 2xx).
    pub expect_status: Option<Spanned<Vec<u16>>>,
    /// Text the body must contain.
    pub body_contains: Option<Spanned<String>>,
    /// Authentication schemes a `401`/`407` answer must offer (`["Negotiate", "NTLM"]`).
    pub expect_auth: Option<Spanned<Vec<Spanned<String>>>>,
    /// Sign in with NTLM as this `[[users]]` entry (`auth = "ntlm"`): an administrator
    /// reaching the Control Panel.
    pub sign_in_as: Option<Spanned<String>>,
    /// Lowest TLS version (overrides the pool's).
    pub tls_min_version: Option<Spanned<String>>,
    /// Record the chain but do not verify it.
    pub tls_skip_verify: Option<Spanned<bool>>,
    /// Fail with `cert_expiring` when the leaf expires within this many days.
    pub min_days_valid: Option<Spanned<u32>>,
    /// Probe every address behind the target name.
    pub each_address: Option<Spanned<bool>>,
}

impl CheckKind for HttpSpec {
    type Keys = HttpKeys;

    /// The target label is the URL.
    fn build(keys: &HttpKeys, cx: &BuildCx<'_>) -> Result<(HttpSpec, String), BuildError> {
        let (host, port, path) = match (&keys.url, &keys.path) {
            (Some(u), None) => {
                if keys.host.is_some() || keys.port.is_some() {
                    return Err(cx.err(u.span(), "url: give either url, or host/port/path, not both"));
                }
                let text = cx.expand(u, "url")?;
                parse_url(&text).map_err(|m| cx.err(u.span(), &format!("url: {m}")))?
            }
            (None, Some(p)) => {
                let path = cx.expand(p, "path")?;
                if !path.starts_with('/') {
                    return Err(cx.err(p.span(), &format!("path: {path:?} must start with /")));
                }
                check_path(&path).map_err(|m| cx.err(p.span(), &format!("path: {m}")))?;
                let port = if keys.port.is_some() { cx.port(keys.port.as_ref())? } else { 443 };
                (cx.host(keys.host.as_ref())?, port, path)
            }
            (Some(u), Some(_)) => return Err(cx.err(u.span(), "url: give either url or path, not both")),
            (None, None) => {
                return Err(cx.err(cx.name_span.clone(), "url: required for kind \"http\" (or path)"))
            }
        };
        let expect_status = cx.status_codes(keys.expect_status.as_ref(), 100..=599, "an HTTP status code")?;
        let auth_answer_expected = expect_status.iter().any(|c| matches!(c, 401 | 407));
        let target = if port == 443 {
            format!("https://{host}{path}")
        } else {
            format!("https://{}{path}", host_port(&host, port))
        };
        let sign_in = match keys.sign_in_as.as_ref() {
            None => None,
            Some(n) => {
                // Failed sign-ins count towards the account's lockout policy (often 5 in
                // 30 minutes): a wrong password must not lock the administrator out.
                if cx.interval < SIGN_IN_EVERY {
                    return Err(cx.err(
                        n.span(),
                        &format!("sign_in_as: a sign-in check runs at most every {} minutes (interval = \"10m\" or more): failed sign-ins lock Windows accounts out", SIGN_IN_EVERY.as_secs() / 60),
                    ));
                }
                if keys.tls_skip_verify.as_ref().is_some_and(|v| *v.get_ref()) {
                    return Err(cx.err(
                        n.span(),
                        "sign_in_as: not with tls_skip_verify = true (the NTLM sign-in would go to a server nobody verified)",
                    ));
                }
                let user = cx.users.iter().find(|u| &u.name == n.get_ref()).ok_or_else(|| {
                    cx.err(n.span(), &format!("sign_in_as: no [[users]] entry is named {:?}", n.get_ref()))
                })?;
                let crate::model::users::UserAuth::Ntlm { domain, username, password } = &user.auth else {
                    return Err(cx.err(
                        n.span(),
                        &format!(
                            "sign_in_as: {:?} does not sign in with NTLM (auth = \"ntlm\")",
                            n.get_ref()
                        ),
                    ));
                };
                Some(NtlmAccount {
                    name: user.name.clone(),
                    domain: domain.clone(),
                    username: username.clone(),
                    password: password.clone(),
                })
            }
        };
        let spec = HttpSpec {
            sign_in,
            host,
            port,
            path,
            expect_status,
            body_contains: keys.body_contains.as_ref().map(|b| b.get_ref().clone()),
            expect_auth: match keys.expect_auth.as_ref() {
                None => Vec::new(),
                Some(list) if !auth_answer_expected => {
                    return Err(cx.err(
                        list.span(),
                        "expect_auth: only judges a 401 or 407 answer: add 401 (or 407) to expect_status",
                    ));
                }
                Some(list) => {
                    let mut v = Vec::new();
                    for s in list.get_ref() {
                        let scheme = s.get_ref().trim();
                        if scheme.is_empty()
                            || !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        {
                            return Err(cx.err(s.span(), &format!("expect_auth: {scheme:?} is not an authentication scheme (Negotiate, NTLM, Basic, …)")));
                        }
                        v.push(scheme.to_owned());
                    }
                    v
                }
            },
            opts: cx.tls_options(&super::TlsKeys {
                tls_min_version: keys.tls_min_version.as_ref(),
                tls_skip_verify: keys.tls_skip_verify.as_ref(),
                min_days_valid: keys.min_days_valid.as_ref(),
            })?,
        };
        Ok((spec, target))
    }

    fn probe(&self, cx: &ProbeContext) -> impl std::future::Future<Output = Outcome> + Send {
        probe(self, cx)
    }

    fn each_address(keys: &HttpKeys) -> bool {
        keys.each_address.as_ref().is_some_and(|v| *v.get_ref())
    }

    fn host(&self) -> Option<&str> {
        Some(&self.host)
    }
}

/// `https://host[:port]/path` → (host, port, path).
fn parse_url(u: &str) -> Result<(String, u16, String), String> {
    let uri: hyper::Uri = u.parse().map_err(|e| format!("{u:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("https") {
        return Err(format!("{u:?} is not probed: only https:// URLs are"));
    }
    let host = uri.host().ok_or_else(|| format!("{u:?} has no host"))?.trim_matches(['[', ']']).to_owned();
    let path = uri.path_and_query().map_or("/".to_owned(), |p| p.as_str().to_owned());
    // hyper keeps a port it cannot use as 0 or drops it (99999): name it instead.
    let authority = uri.authority().map_or("", |a| a.as_str());
    let after_host = authority.rsplit_once(']').map_or(authority, |(_, rest)| rest);
    let port = match after_host.rsplit_once(':') {
        None => 443,
        Some((_, p)) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("{u:?}: port {p} is not 1-65535")),
        },
    };
    check_path(&path)?;
    Ok((host, port, path))
}

/// A request target that goes on the wire as written: printable ASCII without blanks.
fn check_path(path: &str) -> Result<(), String> {
    match path.bytes().find(|b| !b.is_ascii_graphic()) {
        Some(b) => Err(format!("{path:?} contains {:?}: encode it (e.g. %20 for a space)", b as char)),
        None => Ok(()),
    }
}

/// Runs an http probe.
pub async fn probe(spec: &HttpSpec, cx: &ProbeContext) -> Outcome {
    let mut phases = Vec::with_capacity(4);
    let (stream, info) = match open(&spec.host, spec.port, &spec.opts, cx, &mut phases).await {
        Ok(v) => v,
        Err(f) => return Outcome::failed(f, phases),
    };
    let t = Instant::now();
    let result = request(spec, stream).await;
    phases.push((Phase::Request, t.elapsed()));
    let mut o = match result {
        Ok(()) => Outcome::pass(phases),
        Err(f) => Outcome::failed(f, phases),
    };
    o.tls = Some(info);
    o
}

async fn request(spec: &HttpSpec, stream: crate::net::tls::TlsStream) -> Result<(), Failure> {
    let io_err = |e: hyper::Error| Failure::new(FailureReason::Io, format!("HTTP: {e}"));
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(io_err)?;
    // The connection task ends when the sender is dropped at the end of this probe.
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let result = exchange(spec, &mut sender).await;
    drop(sender);
    conn.abort();
    result
}

/// One GET on the connection, with an `Authorization` header when given.
async fn get(
    spec: &HttpSpec,
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    authorization: Option<&str>,
) -> Result<hyper::Response<hyper::body::Incoming>, Failure> {
    let host = if spec.port == 443 { spec.host.clone() } else { host_port(&spec.host, spec.port) };
    let mut req = Request::get(spec.path.as_str())
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, concat!("coexistd/", env!("CARGO_PKG_VERSION")));
    if let Some(a) = authorization {
        req = req.header(hyper::header::AUTHORIZATION, a);
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| Failure::new(FailureReason::Io, format!("HTTP request: {e}")))?;
    crate::trace::step("http", || {
        let mut s = format!("{} {} {:?}", req.method(), req.uri(), req.version());
        for (k, v) in req.headers() {
            // What a sign-in sends can be attacked offline: never shown.
            let v = if k == hyper::header::AUTHORIZATION {
                let scheme = v.to_str().unwrap_or("").split_whitespace().next().unwrap_or("").to_owned();
                format!("{scheme} ***")
            } else {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            };
            s.push_str(&format!("\n{k}: {v}"));
        }
        s
    });
    // The connection may still be finishing the previous answer (a sign-in's 401).
    sender.ready().await.map_err(|e| Failure::new(FailureReason::Io, format!("HTTP: {e}")))?;
    let resp =
        sender.send_request(req).await.map_err(|e| Failure::new(FailureReason::Io, format!("HTTP: {e}")))?;
    crate::trace::step("http", || {
        let mut s = format!("{:?} {}", resp.version(), resp.status());
        for (k, v) in resp.headers() {
            s.push_str(&format!("\n{k}: {}", String::from_utf8_lossy(v.as_bytes())));
        }
        s
    });
    Ok(resp)
}

/// The NTLM token of a `401`'s `WWW-Authenticate: NTLM <token>` (or `Negotiate <token>`).
fn ntlm_token(resp: &hyper::Response<hyper::body::Incoming>) -> Option<Vec<u8>> {
    resp.headers().get_all(hyper::header::WWW_AUTHENTICATE).iter().filter_map(|v| v.to_str().ok()).find_map(
        |v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            if !(scheme.eq_ignore_ascii_case("NTLM") || scheme.eq_ignore_ascii_case("Negotiate")) {
                return None;
            }
            let bytes = openssl::base64::decode_block(token.trim()).ok()?;
            bytes.starts_with(b"NTLMSSP\0").then_some(bytes)
        },
    )
}

/// Signs in with NTLM (RFC 4559: NEGOTIATE, the server's CHALLENGE in a `401`, the
/// AUTHENTICATE on the same connection); the answer to the AUTHENTICATE.
async fn signed_in(
    spec: &HttpSpec,
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    account: &NtlmAccount,
) -> Result<hyper::Response<hyper::body::Incoming>, Failure> {
    let negotiate = format!("NTLM {}", openssl::base64::encode_block(&crate::sip::ntlm::negotiate_message()));
    let first = get(spec, sender, Some(&negotiate)).await?;
    if first.status().as_u16() != 401 {
        // Let in without signing in: judged as any answer.
        return Ok(first);
    }
    let Some(token) = ntlm_token(&first) else {
        return Err(Failure::new(
            FailureReason::HttpAuth,
            format!("GET {} answered the NTLM NEGOTIATE with 401 and no NTLM challenge", spec.path),
        ));
    };
    // The connection is reused: the 401's body is read first.
    let _ = Limited::new(first.into_body(), BODY_LIMIT).collect().await;
    let challenge = crate::sip::ntlm::ChallengeMsg::parse(&token)
        .map_err(|e| Failure::new(FailureReason::HttpAuth, format!("the server's NTLM challenge: {e}")))?;
    let nonces = crate::sip::ntlm::Nonces::fresh()
        .ok_or_else(|| Failure::new(FailureReason::Internal, "the system's random source failed"))?;
    let a = crate::sip::ntlm::authenticate_connection(
        &challenge,
        &account.username,
        &account.domain,
        account.password.expose(),
        "COEXISTD",
        &nonces,
    )
    .map_err(|e| Failure::new(FailureReason::AuthFailed, format!("NTLM: {e}")))?;
    let answer = format!("NTLM {}", openssl::base64::encode_block(&a.message));
    let resp = get(spec, sender, Some(&answer)).await?;
    if resp.status().as_u16() == 401 {
        return Err(Failure::new(
            FailureReason::AuthFailed,
            format!(
                "GET {}: {}'s Windows credentials refused (401 after the NTLM AUTHENTICATE)",
                spec.path, account.name
            ),
        ));
    }
    Ok(resp)
}

async fn exchange(
    spec: &HttpSpec,
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
) -> Result<(), Failure> {
    let resp = match &spec.sign_in {
        Some(account) => signed_in(spec, sender, account).await?,
        None => get(spec, sender, None).await?,
    };
    let status = resp.status().as_u16();
    let offered: Vec<String> = resp
        .headers()
        .get_all(if status == 407 {
            hyper::header::PROXY_AUTHENTICATE
        } else {
            hyper::header::WWW_AUTHENTICATE
        })
        .iter()
        .filter_map(|v| v.to_str().ok())
        // Quoted parameter values may hold commas: left out before splitting.
        .map(|v| v.split('"').step_by(2).collect::<Vec<_>>().join(""))
        .flat_map(|v| v.split(',').map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|c| c.split_whitespace().next().map(str::to_owned))
        .filter(|t| !t.contains('='))
        .collect();
    let missing: Vec<&str> = spec
        .expect_auth
        .iter()
        .filter(|want| !offered.iter().any(|o| o.eq_ignore_ascii_case(want)))
        .map(String::as_str)
        .collect();
    let result = if let Err(want) = super::status_accepted(&spec.expect_status, status) {
        Err(Failure::new(
            FailureReason::HttpStatus,
            format!("GET {} answered {status}, expected {want}", spec.path),
        ))
    } else if matches!(status, 401 | 407) && !missing.is_empty() {
        Err(Failure::new(
            FailureReason::HttpAuth,
            format!(
                "GET {} answered {status} offering {}, not {}",
                spec.path,
                if offered.is_empty() { "no scheme".to_owned() } else { offered.join(", ") },
                missing.join(", ")
            ),
        ))
    } else if let Some(needle) = &spec.body_contains {
        match Limited::new(resp.into_body(), BODY_LIMIT).collect().await {
            Ok(body) => {
                let body = body.to_bytes();
                crate::trace::step("http", || first_bytes(&body));
                if String::from_utf8_lossy(&body).contains(needle.as_str()) {
                    Ok(())
                } else {
                    Err(Failure::new(
                        FailureReason::HttpBody,
                        format!("body ({} bytes) does not contain {needle:?}", body.len()),
                    ))
                }
            }
            Err(e) => Err(Failure::new(
                FailureReason::HttpBody,
                format!("body not read: {e} (limit {BODY_LIMIT} bytes)"),
            )),
        }
    } else {
        if crate::trace::active() {
            // Only a trace reads the body here: the first frame, briefly.
            let mut body = resp.into_body();
            if let Ok(Some(Ok(frame))) =
                tokio::time::timeout(std::time::Duration::from_millis(500), body.frame()).await
            {
                if let Some(data) = frame.data_ref() {
                    crate::trace::step("http", || first_bytes(data));
                }
            }
        }
        Ok(())
    };
    result
}

/// The first bytes of a body, for traces.
fn first_bytes(body: &[u8]) -> String {
    const SHOWN: usize = 512;
    let n = body.len().min(SHOWN);
    format!(
        "body: first {n} of {}{} bytes:\n{}",
        body.len(),
        if body.len() >= SHOWN { "+" } else { "" },
        String::from_utf8_lossy(&body[..n])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("https://lyncdiscoverinternal.contoso.com/?sipuri=a@b").unwrap(),
            ("lyncdiscoverinternal.contoso.com".into(), 443, "/?sipuri=a@b".into())
        );
        assert_eq!(parse_url("https://h:4443").unwrap(), ("h".into(), 4443, "/".into()));
        assert!(parse_url("http://h/").is_err());
        assert!(parse_url("not a url").is_err());
    }
}
