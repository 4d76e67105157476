//! What a test user may follow and answer: the redirect and authentication policy.
//!
//! A test user's credentials are real credentials. Whoever answers its first request —
//! the registrar, or anyone who can spoof it over UDP — must not be able to send it
//! elsewhere and collect an answer to a challenge of their choosing. So:
//!
//! - **Redirects** (`301`/`302`) are followed only to a host that belongs to a
//!   configured pool (its FQDN, a member, or one of their addresses: the caller says
//!   which), and never to a weaker transport than the one in use: TLS stays TLS, and a
//!   `sips:` Contact means TLS.
//! - **Redirects** may also go to a host the user's configuration names
//!   (`redirect_hosts`: a name, case and a final dot aside, or an address, compared as
//!   an address).
//! - **Digest**: of the challenges offered, the topmost one this build speaks (RFC 8760
//!   §2.4) whose algorithm is at least the user's minimum (`min_algorithm`, SHA-256 by
//!   default); MD5 only when nothing stronger is offered and the user's configuration
//!   allows it (`allow_md5`).
//! - **Realm**: the realm the user's first successful answer went to is pinned (or the
//!   one configured); a challenge from another realm is not answered.
//!
//! Every refusal is the reason `policy_refused` with a detail and a log line: never a
//! silent follow, never a silent stop.
//!
//! What it does not do: resolve names (the caller says whether a host belongs to a
//! pool), or compute answers ([`super::auth`] does).

use super::auth::{parse_algorithm, Algorithm, Challenge};
use super::message::Transport;

/// How strong a transport is: TLS above TCP and UDP, which are equal (both clear text).
fn strength(t: Transport) -> u8 {
    match t {
        Transport::Tls => 1,
        Transport::Tcp | Transport::Udp => 0,
    }
}

/// Whether a redirect from `current` to `target` (over `to`) may be followed;
/// `target_in_pool` says whether the caller found the host among the pools' names
/// and addresses. The error says why not.
pub fn redirect(current: Transport, target: &str, to: Transport, target_allowed: bool) -> Result<(), String> {
    if strength(to) < strength(current) {
        return Err(format!(
            "redirect to {target} over {} refused: it would leave {} (a weaker transport)",
            to.as_str().to_ascii_uppercase(),
            current.as_str().to_ascii_uppercase()
        ));
    }
    if !target_allowed {
        return Err(format!(
            "redirect to {target} refused: the host is no FQDN, member or address of a configured pool, \
             nor one of the user's redirect_hosts"
        ));
    }
    Ok(())
}

/// What a user's configuration allows its Digest answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestPolicy {
    /// MD5 may be answered when the registrar offers nothing stronger.
    pub allow_md5: bool,
    /// The weakest algorithm other than MD5 answered (`min_algorithm`; SHA-256).
    pub min_algorithm: Algorithm,
    /// The realm the user's credentials belong to: configured, or learned on the first
    /// success and pinned.
    pub realm: Option<String>,
}

impl Default for DigestPolicy {
    fn default() -> DigestPolicy {
        DigestPolicy { allow_md5: false, min_algorithm: Algorithm::Sha256, realm: None }
    }
}

/// The Digest challenge to answer among `challenges` (in the order the server sent
/// them), under `policy`; the error says why none may be answered.
pub fn choose_digest<'a>(
    challenges: &'a [Challenge],
    policy: &DigestPolicy,
) -> Result<&'a Challenge, String> {
    let digest: Vec<&Challenge> =
        challenges.iter().filter(|c| c.scheme.eq_ignore_ascii_case("Digest")).collect();
    // Spoken: an algorithm this build has, a realm and a nonce, and `qop` absent or
    // offering `auth` (`auth-int` alone cannot be answered).
    let answerable = |c: &Challenge| {
        c.param("realm").is_some()
            && c.param("nonce").is_some()
            && c.param("qop").is_none_or(|q| q.split(',').any(|q| q.trim().eq_ignore_ascii_case("auth")))
    };
    let spoken: Vec<(&Challenge, Algorithm)> = digest
        .iter()
        .filter(|c| answerable(c))
        .filter_map(|c| parse_algorithm(c.param("algorithm").unwrap_or("MD5")).map(|(a, _)| (*c, a)))
        .collect();
    let in_realm = |c: &&Challenge| match (&policy.realm, c.param("realm")) {
        (Some(pinned), Some(r)) => pinned == r,
        (Some(_), None) => false,
        (None, _) => true,
    };
    let strong = spoken
        .iter()
        .map(|(c, a)| (c, *a))
        .filter(|(_, a)| *a != Algorithm::Md5 && *a >= policy.min_algorithm);
    let md5 = spoken.iter().map(|(c, a)| (c, *a)).filter(|(_, a)| *a == Algorithm::Md5);
    if let Some((c, _)) = strong.clone().find(|(c, _)| in_realm(c)) {
        return Ok(c);
    }
    // MD5 is the fallback of a user whose minimum is the default; one who asks for
    // more than SHA-256 gets no MD5 (the configuration refuses both at once).
    if policy.allow_md5 && policy.min_algorithm <= Algorithm::Sha256 {
        if let Some((c, _)) = md5.clone().find(|(c, _)| in_realm(c)) {
            return Ok(c);
        }
    }
    let realms: Vec<&str> = spoken.iter().filter_map(|(c, _)| c.param("realm")).collect();
    Err(match &policy.realm {
        Some(pinned) if !spoken.is_empty() && !spoken.iter().any(|(c, _)| in_realm(c)) => format!(
            "challenged for realm {:?}, not the user's realm {pinned:?}: not answered",
            realms.join(", ")
        ),
        _ if spoken.is_empty() => "no Digest challenge this agent speaks".to_owned(),
        _ if !policy.allow_md5 && spoken.iter().all(|(_, a)| *a == Algorithm::Md5) => {
            "only MD5 offered, and allow_md5 is not set for this user: not answered".to_owned()
        }
        _ => {
            let offered: Vec<&str> = spoken.iter().map(|(_, a)| a.as_str()).collect();
            format!(
                "offered {}, below this user's min_algorithm {}: not answered",
                offered.join(", "),
                policy.min_algorithm.as_str()
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(s: &str) -> Challenge {
        Challenge::parse(s).unwrap()
    }

    #[test]
    fn redirects_stay_on_tls_and_inside_the_pools() {
        assert!(redirect(Transport::Tls, "fe1.example.com", Transport::Tls, true).is_ok());
        assert!(redirect(Transport::Udp, "fe1.example.com", Transport::Tls, true).is_ok());
        assert!(redirect(Transport::Tcp, "fe1.example.com", Transport::Udp, true).is_ok());
        let e = redirect(Transport::Tls, "127.0.99.3", Transport::Udp, true).unwrap_err();
        assert!(e.contains("weaker transport"), "{e}");
        assert!(redirect(Transport::Tls, "127.0.99.3", Transport::Tcp, true).is_err());
        let e = redirect(Transport::Udp, "evil.example", Transport::Udp, false).unwrap_err();
        assert!(e.contains("no FQDN, member or address"), "{e}");
    }

    #[test]
    fn the_topmost_strong_challenge_is_chosen_and_md5_only_when_allowed() {
        let md5 = ch("Digest realm=\"r\", nonce=\"1\", algorithm=MD5");
        let sha = ch("Digest realm=\"r\", nonce=\"2\", algorithm=SHA-256");
        let sha512 = ch("Digest realm=\"r\", nonce=\"3\", algorithm=SHA-512-256");
        let weird = ch("Digest realm=\"r\", nonce=\"4\", algorithm=SHA-1024");
        let ntlm = ch("NTLM realm=\"SIP Communications Service\", targetname=\"fe\", version=4");
        let p = DigestPolicy::default();
        // RFC 8760 §2.4: the topmost one spoken, skipping unsupported ones.
        let offered = [ntlm.clone(), weird.clone(), sha512.clone(), sha.clone(), md5.clone()];
        assert_eq!(choose_digest(&offered, &p).unwrap(), &sha512);
        // MD5 listed first does not win over SHA-256.
        assert_eq!(choose_digest(&[md5.clone(), sha.clone()], &p).unwrap(), &sha);
        // Only MD5 (or no algorithm: MD5): refused unless allowed.
        let e = choose_digest(std::slice::from_ref(&md5), &p).unwrap_err();
        assert!(e.contains("allow_md5"), "{e}");
        let bare = ch("Digest realm=\"r\", nonce=\"5\"");
        assert!(choose_digest(std::slice::from_ref(&bare), &p).is_err());
        let allow = DigestPolicy { allow_md5: true, ..Default::default() };
        assert_eq!(choose_digest(std::slice::from_ref(&md5), &allow).unwrap(), &md5);
        assert!(choose_digest(&[ntlm, weird], &allow).unwrap_err().contains("speaks"));
        // One it cannot answer (auth-int only, no nonce) is skipped for the next.
        let int_only = ch("Digest realm=\"r\", nonce=\"6\", algorithm=SHA-256, qop=\"auth-int\"");
        let no_nonce = ch("Digest realm=\"r\", algorithm=SHA-256");
        let ok = ch("Digest realm=\"r\", nonce=\"7\", algorithm=SHA-256, qop=\"auth\"");
        assert_eq!(choose_digest(&[int_only, no_nonce, ok.clone()], &p).unwrap(), &ok);
        // A user's minimum above SHA-256: SHA-256 (and MD5, even allowed) is not answered.
        let strict =
            DigestPolicy { allow_md5: true, min_algorithm: Algorithm::Sha512_256, ..Default::default() };
        assert_eq!(choose_digest(&[md5.clone(), sha.clone(), sha512.clone()], &strict).unwrap(), &sha512);
        let e = choose_digest(std::slice::from_ref(&md5), &strict).unwrap_err();
        assert!(e.contains("offered MD5, below this user's min_algorithm SHA-512-256"), "{e}");
        let e = choose_digest(&[sha.clone(), md5.clone()], &strict).unwrap_err();
        assert!(e.contains("offered SHA-256, MD5, below this user's min_algorithm SHA-512-256"), "{e}");
    }

    #[test]
    fn a_pinned_realm_is_the_only_one_answered() {
        let p = DigestPolicy { allow_md5: true, realm: Some("example.com".into()), ..Default::default() };
        let theirs = ch("Digest realm=\"attacker.example\", nonce=\"1\", algorithm=MD5");
        let ours = ch("Digest realm=\"example.com\", nonce=\"2\", algorithm=SHA-256");
        let e = choose_digest(std::slice::from_ref(&theirs), &p).unwrap_err();
        assert!(e.contains("attacker.example") && e.contains("example.com"), "{e}");
        assert_eq!(choose_digest(&[theirs, ours.clone()], &p).unwrap(), &ours);
    }
}
