//! Answering a SIP server's authentication challenge as a client: the `Digest` scheme of
//! RFC 3261 §22 with the algorithms and fields of RFC 7616 (MD5, SHA-256, SHA-512-256,
//! their `-sess` variants, `qop=auth`, `nc`/`cnonce`, `opaque`, stale nonces), for both
//! `401 WWW-Authenticate` and `407 Proxy-Authenticate`.
//!
//! One small interface, [`Scheme`]: a scheme says whether it can answer a challenge and
//! builds the credentials header, one challenge at a time. NTLM (MS-SIPAE) is not one:
//! it takes two challenges and then signs every message of the association, so it is
//! [`super::ntlm`] and [`super::sipae`], and the user agent's credentials
//! (`ua::credentials`) pick Digest or NTLM per user behind one `answer`/`request`/
//! `check` interface that the registration and the endpoints use.
//!
//! Wire layer: no I/O, imports nothing of the crate. The password is held in a
//! [`Secret`] that never prints.

use std::fmt;

/// A password (or any credential) that is never shown by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `s`.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for computing a response; never for a message.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// One challenge: the scheme and its auth-params, as a server sent them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `Digest`, `NTLM`, `Kerberos`, `TLS-DSK`, … (as sent).
    pub scheme: String,
    /// `name=value` pairs, names lower-cased, values unquoted.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// The value of parameter `name` (case-insensitive).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Parses a `WWW-Authenticate` or `Proxy-Authenticate` value (one challenge).
    pub fn parse(value: &str) -> Result<Challenge, String> {
        let value = value.trim();
        let (scheme, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
        if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(format!("not a challenge: {:?}", value.chars().take(64).collect::<String>()));
        }
        let mut params = Vec::new();
        let mut s = rest.trim_start();
        while !s.is_empty() {
            let eq = s.find('=').ok_or_else(|| format!("auth-param without '=' near {:?}", head(s)))?;
            let name = s[..eq].trim().to_ascii_lowercase();
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(format!("bad auth-param name near {:?}", head(s)));
            }
            s = s[eq + 1..].trim_start();
            let value = if let Some(quoted) = s.strip_prefix('"') {
                let mut out = String::new();
                let mut chars = quoted.char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some((_, e)) => out.push(e),
                            None => break,
                        },
                        '"' => {
                            end = Some(i);
                            break;
                        }
                        c => out.push(c),
                    }
                }
                let end = end.ok_or_else(|| format!("unterminated quoted value for {name}"))?;
                s = &quoted[end + 1..];
                out
            } else {
                let end = s.find(',').unwrap_or(s.len());
                let v = s[..end].trim().to_owned();
                s = &s[end..];
                v
            };
            params.push((name, value));
            s = s.trim_start();
            if let Some(r) = s.strip_prefix(',') {
                s = r.trim_start();
            } else if !s.is_empty() {
                return Err(format!("expected ',' near {:?}", head(s)));
            }
        }
        Ok(Challenge { scheme: scheme.to_owned(), params })
    }
}

fn head(s: &str) -> String {
    s.chars().take(24).collect()
}

/// What a scheme needs to answer: the request it authorizes.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `REGISTER`, `MESSAGE`, `INVITE`, …
    pub method: &'a str,
    /// The Request-URI (the digest-uri).
    pub uri: &'a str,
}

/// Why a challenge could not be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// The scheme or algorithm is not one this build speaks.
    Unsupported(String),
    /// The challenge lacks a field the scheme needs, or has a bad one.
    BadChallenge(String),
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Unsupported(s) => write!(f, "unsupported: {s}"),
            AuthError::BadChallenge(s) => write!(f, "bad challenge: {s}"),
        }
    }
}

/// An authentication scheme a client answers challenges with.
pub trait Scheme: Send {
    /// The scheme's name in challenges (`Digest`).
    fn name(&self) -> &'static str;

    /// The credentials header value answering `challenge` for `request`. `cnonce` is
    /// the client nonce to use (random per answer in production; fixed in tests).
    fn answer(
        &mut self,
        challenge: &Challenge,
        request: Request<'_>,
        cnonce: &str,
    ) -> Result<String, AuthError>;
}

/// Digest algorithms of RFC 7616 §3.4 (and MD5 of RFC 2617/3261), weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Algorithm {
    /// MD5 (the default when the challenge names none).
    Md5,
    /// SHA-256.
    Sha256,
    /// SHA-512/256.
    Sha512_256,
}

impl Algorithm {
    /// The `algorithm` parameter's value (without `-sess`).
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha512_256 => "SHA-512-256",
        }
    }

    fn digest(self, data: &str) -> String {
        use openssl::hash::{hash, MessageDigest};
        let md = match self {
            Algorithm::Md5 => MessageDigest::md5(),
            Algorithm::Sha256 => MessageDigest::sha256(),
            Algorithm::Sha512_256 => {
                MessageDigest::from_name("SHA512-256").unwrap_or_else(MessageDigest::sha256)
            }
        };
        match hash(md, data.as_bytes()) {
            Ok(d) => d.iter().map(|b| format!("{b:02x}")).collect(),
            Err(_) => String::new(),
        }
    }
}

/// The algorithm of a Digest challenge's `algorithm` value and whether it is a
/// `-sess` variant; `None` for one this build does not speak.
pub fn parse_algorithm(text: &str) -> Option<(Algorithm, bool)> {
    Some(match text.to_ascii_uppercase().as_str() {
        "MD5" => (Algorithm::Md5, false),
        "MD5-SESS" => (Algorithm::Md5, true),
        "SHA-256" => (Algorithm::Sha256, false),
        "SHA-256-SESS" => (Algorithm::Sha256, true),
        "SHA-512-256" => (Algorithm::Sha512_256, false),
        "SHA-512-256-SESS" => (Algorithm::Sha512_256, true),
        _ => return None,
    })
}

/// The digest response (RFC 7616 §3.4.1): `(algorithm, -sess)`, `(username, realm,
/// password)`, the request, `(nonce, nc, cnonce, qop)`.
fn compute(
    (algorithm, sess): (Algorithm, bool),
    (username, realm, password): (&str, &str, &str),
    req: Request<'_>,
    (nonce, nc, cnonce, qop): (&str, &str, &str, Option<&str>),
) -> String {
    let h = |s: &str| algorithm.digest(s);
    let mut ha1 = h(&format!("{username}:{realm}:{password}"));
    if sess {
        ha1 = h(&format!("{ha1}:{nonce}:{cnonce}"));
    }
    let ha2 = h(&format!("{}:{}", req.method, req.uri));
    match qop {
        Some(q) => h(&format!("{ha1}:{nonce}:{nc}:{cnonce}:{q}:{ha2}")),
        None => h(&format!("{ha1}:{nonce}:{ha2}")),
    }
}

/// Server side (the demo lab's registrars): whether the `Authorization` value carries
/// the right Digest response for `password` and `method`. The nonce is not checked
/// against the ones issued: a lab registrar, not a security boundary.
pub fn verify(authorization: &str, password: &Secret, method: &str) -> bool {
    let Ok(c) = Challenge::parse(authorization) else { return false };
    if !c.scheme.eq_ignore_ascii_case("Digest") {
        return false;
    }
    let (Some(username), Some(realm), Some(nonce), Some(uri), Some(response)) =
        (c.param("username"), c.param("realm"), c.param("nonce"), c.param("uri"), c.param("response"))
    else {
        return false;
    };
    let Some(alg) = parse_algorithm(c.param("algorithm").unwrap_or("MD5")) else { return false };
    let qop = c.param("qop");
    if alg.1 && c.param("cnonce").is_none() {
        return false;
    }
    let (nc, cnonce) = (c.param("nc").unwrap_or(""), c.param("cnonce").unwrap_or(""));
    let want =
        compute(alg, (username, realm, password.expose()), Request { method, uri }, (nonce, nc, cnonce, qop));
    want.eq_ignore_ascii_case(response)
}

/// The Digest scheme for one user: username, password, and the nonce count per nonce.
pub struct Digest {
    username: String,
    password: Secret,
    nonce: String,
    nc: u32,
}

impl Digest {
    /// Digest credentials of `username`.
    pub fn new(username: impl Into<String>, password: Secret) -> Digest {
        Digest { username: username.into(), password, nonce: String::new(), nc: 0 }
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Digest").field("username", &self.username).finish_non_exhaustive()
    }
}

/// Quotes `s` for a quoted-string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

impl Scheme for Digest {
    fn name(&self) -> &'static str {
        "Digest"
    }

    fn answer(&mut self, ch: &Challenge, req: Request<'_>, cnonce: &str) -> Result<String, AuthError> {
        if !ch.scheme.eq_ignore_ascii_case("Digest") {
            return Err(AuthError::Unsupported(format!("scheme {}", ch.scheme)));
        }
        let realm = ch.param("realm").ok_or_else(|| AuthError::BadChallenge("no realm".into()))?;
        let nonce = ch.param("nonce").ok_or_else(|| AuthError::BadChallenge("no nonce".into()))?;
        let algorithm_text = ch.param("algorithm").unwrap_or("MD5");
        let (algorithm, sess) = parse_algorithm(algorithm_text)
            .ok_or_else(|| AuthError::Unsupported(format!("algorithm {algorithm_text}")))?;
        // qop: `auth` when offered; `auth-int` alone is not supported; none: RFC 2069 form.
        let qop = match ch.param("qop") {
            None => None,
            Some(list) if list.split(',').any(|q| q.trim().eq_ignore_ascii_case("auth")) => Some("auth"),
            Some(list) => return Err(AuthError::Unsupported(format!("qop {list}"))),
        };
        if nonce != self.nonce {
            self.nonce = nonce.to_owned();
            self.nc = 0;
        }
        self.nc = self.nc.wrapping_add(1);
        let nc = format!("{:08x}", self.nc);
        let response = compute(
            (algorithm, sess),
            (&self.username, realm, self.password.expose()),
            req,
            (nonce, &nc, cnonce, qop),
        );
        let mut v = format!(
            "Digest username={}, realm={}, nonce={}, uri={}, response={}, algorithm={algorithm_text}",
            quote(&self.username),
            quote(realm),
            quote(nonce),
            quote(req.uri),
            quote(&response)
        );
        match qop {
            Some(q) => v.push_str(&format!(", cnonce={}, qop={q}, nc={nc}", quote(cnonce))),
            // `-sess` hashes the cnonce into HA1: the server needs it even without qop
            // (RFC 2617 §3.2.2.2).
            None if sess => v.push_str(&format!(", cnonce={}", quote(cnonce))),
            None => {}
        }
        if let Some(opaque) = ch.param("opaque") {
            v.push_str(&format!(", opaque={}", quote(opaque)));
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7616 §3.9.1: the challenge, then the answers with MD5 and SHA-256.
    const CHALLENGE: &str = "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", \
        algorithm=SHA-256, nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", \
        opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"";
    const CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";

    fn response_of(header: &str) -> String {
        let c = Challenge::parse(header).unwrap();
        c.param("response").unwrap().to_owned()
    }

    #[test]
    fn rfc7616_examples_sha256_and_md5() {
        let req = Request { method: "GET", uri: "/dir/index.html" };
        let mut d = Digest::new("Mufasa", Secret::new("Circle of Life"));
        let ch = Challenge::parse(CHALLENGE).unwrap();
        let a = d.answer(&ch, req, CNONCE).unwrap();
        assert_eq!(response_of(&a), "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1");
        assert!(
            a.contains("nc=00000001") && a.contains("qop=auth,") && a.contains("algorithm=SHA-256"),
            "{a}"
        );
        assert!(a.contains("opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""), "{a}");
        let md5 = CHALLENGE.replace("algorithm=SHA-256", "algorithm=MD5");
        let mut d = Digest::new("Mufasa", Secret::new("Circle of Life"));
        let a = d.answer(&Challenge::parse(&md5).unwrap(), req, CNONCE).unwrap();
        assert_eq!(response_of(&a), "8ca523f5e9506fed4657c9700eebdbec");
    }

    #[test]
    fn the_server_side_verifies_what_the_client_side_answers() {
        let req = Request { method: "REGISTER", uri: "sip:contoso.test" };
        for alg in ["MD5", "SHA-256", "SHA-256-sess", "SHA-512-256"] {
            let ch = Challenge::parse(&format!(
                "Digest realm=\"contoso.test\", nonce=\"n\", qop=\"auth\", algorithm={alg}"
            ))
            .unwrap();
            let a = Digest::new("alice", Secret::new("pw")).answer(&ch, req, "c").unwrap();
            assert!(verify(&a, &Secret::new("pw"), "REGISTER"), "{alg}: {a}");
            assert!(!verify(&a, &Secret::new("other"), "REGISTER"), "{alg}");
            assert!(!verify(&a, &Secret::new("pw"), "INVITE"), "{alg}");
        }
        assert!(!verify("garbage", &Secret::new("pw"), "REGISTER"));
    }

    #[test]
    fn the_nonce_count_grows_per_nonce_and_restarts_with_a_new_one() {
        let req = Request { method: "REGISTER", uri: "sip:contoso.com" };
        let mut d = Digest::new("alice", Secret::new("pw"));
        let ch = Challenge::parse("Digest realm=\"contoso.com\", nonce=\"n1\", qop=\"auth\"").unwrap();
        assert!(d.answer(&ch, req, "c").unwrap().contains("nc=00000001"));
        assert!(d.answer(&ch, req, "c").unwrap().contains("nc=00000002"));
        let ch2 =
            Challenge::parse("Digest realm=\"contoso.com\", nonce=\"n2\", qop=\"auth\", stale=TRUE").unwrap();
        assert!(d.answer(&ch2, req, "c").unwrap().contains("nc=00000001"));
    }

    #[test]
    fn sess_without_qop_sends_the_cnonce_it_hashed() {
        let c = Challenge::parse("Digest realm=\"r\", nonce=\"n\", algorithm=SHA-256-sess").unwrap();
        let mut d = Digest::new("bob", Secret::new("pw"));
        let v = d.answer(&c, Request { method: "REGISTER", uri: "sip:x" }, "cn0").unwrap();
        assert!(v.contains("cnonce=\"cn0\""), "{v}");
        assert!(!v.contains("qop="), "{v}");
        assert!(verify(&v, &Secret::new("pw"), "REGISTER"), "the server side can check it: {v}");
        assert!(!verify(&v, &Secret::new("other"), "REGISTER"));
    }

    #[test]
    fn without_qop_the_rfc2069_form_is_sent() {
        let req = Request { method: "REGISTER", uri: "sip:contoso.com" };
        let mut d = Digest::new("alice", Secret::new("pw"));
        let a = d.answer(&Challenge::parse("Digest realm=\"r\", nonce=\"n\"").unwrap(), req, "c").unwrap();
        assert!(!a.contains("qop") && !a.contains("cnonce") && !a.contains("nc="), "{a}");
        let ha1 = Algorithm::Md5.digest("alice:r:pw");
        let ha2 = Algorithm::Md5.digest("REGISTER:sip:contoso.com");
        assert_eq!(response_of(&a), Algorithm::Md5.digest(&format!("{ha1}:n:{ha2}")));
    }

    #[test]
    fn unsupported_and_broken_challenges_are_errors_not_panics() {
        let req = Request { method: "REGISTER", uri: "sip:x" };
        let mut d = Digest::new("a", Secret::new("p"));
        for bad in ["NTLM realm=\"SIP Communications Service\"", "Digest nonce=\"n\"", "Digest realm=\"r\""] {
            let ch = Challenge::parse(bad).unwrap();
            assert!(d.answer(&ch, req, "c").is_err(), "{bad}");
        }
        let ch = Challenge::parse("Digest realm=\"r\", nonce=\"n\", algorithm=SHA-1").unwrap();
        assert!(matches!(d.answer(&ch, req, "c"), Err(AuthError::Unsupported(_))));
        let ch = Challenge::parse("Digest realm=\"r\", nonce=\"n\", qop=\"auth-int\"").unwrap();
        assert!(matches!(d.answer(&ch, req, "c"), Err(AuthError::Unsupported(_))));
        for garbage in
            ["", "Digest realm=\"unterminated", "Digest =x", "Digest a=b c=d", "\u{0}\u{1}", "Digest a=\"\\"]
        {
            let _ = Challenge::parse(garbage);
        }
        assert!(Challenge::parse("Digest realm=\"unterminated").is_err());
    }

    #[test]
    fn quoted_values_unescape_and_the_password_never_prints() {
        let c = Challenge::parse(r#"Digest realm="a \"b\" c", nonce=n1 , opaque="""#).unwrap();
        assert_eq!(c.param("realm"), Some("a \"b\" c"));
        assert_eq!(c.param("nonce"), Some("n1"));
        assert_eq!(c.param("opaque"), Some(""));
        let d = Digest::new("alice", Secret::new("hunter2"));
        assert!(!format!("{d:?} {:?}", Secret::new("hunter2")).contains("hunter2"));
    }
}
