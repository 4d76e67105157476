//! Test users: SIP identities homed on a pool, as the migration plan says, that the
//! interop checks register and send requests as (`[[users]]`).
//!
//! Facts layer: plain data; secrets are [`Secret`]s that never print. Reading
//! and validating them is the configuration's job.

use crate::sip::auth::Secret;
use crate::sip::message::Transport;

/// An address of record: `sip:user@domain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aor {
    /// The user part.
    pub user: String,
    /// The domain (host part).
    pub domain: String,
}

impl Aor {
    /// Parses `sip:user@domain` (`sips:` too; no port, no parameters).
    pub fn parse(s: &str) -> Result<Aor, String> {
        let rest = s
            .strip_prefix("sip:")
            .or_else(|| s.strip_prefix("sips:"))
            .ok_or_else(|| format!("{s:?} is not a sip: URI (sip:user@domain)"))?;
        let (user, domain) =
            rest.split_once('@').ok_or_else(|| format!("{s:?} has no user part (sip:user@domain)"))?;
        let user_ok = !user.is_empty()
            && user.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/%".contains(&b));
        if !user_ok {
            return Err(format!("{s:?}: {user:?} is not a SIP user part"));
        }
        crate::model::pool::check_hostname(domain).map_err(|m| format!("{s:?}: domain {m}"))?;
        if domain.contains(':') {
            return Err(format!("{s:?}: an address of record has no port"));
        }
        Ok(Aor { user: user.to_owned(), domain: domain.to_ascii_lowercase() })
    }

    /// `sip:user@domain`.
    pub fn uri(&self) -> String {
        format!("sip:{}@{}", self.user, self.domain)
    }
}

/// How a test user proves who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserAuth {
    /// Digest (RFC 7616) with a user name and password.
    Digest {
        /// The digest user name.
        username: String,
        /// The password, from `password_file` or `password_env`.
        password: Secret,
        /// The realm the credentials belong to (`realm`); none: the first realm a
        /// challenge is answered in successfully is pinned.
        realm: Option<String>,
        /// MD5 may be answered when the registrar offers nothing stronger (`allow_md5`).
        allow_md5: bool,
        /// The weakest algorithm other than MD5 answered (`min_algorithm`, SHA-256).
        min_algorithm: crate::sip::auth::Algorithm,
    },
    /// NTLM as OCS and Lync sign users in (MS-SIPAE): every later message signed.
    Ntlm {
        /// The Windows domain (NetBIOS name), empty with a user principal name.
        domain: String,
        /// The account: `user`, or a user principal name `user@dns.domain`.
        username: String,
        /// The password, from `password_file` or `password_env`.
        password: Secret,
    },
    /// No challenge is answered (a trusted server presents `[tls] client_cert`).
    None,
}

/// One test user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Unique name, the `user` label.
    pub name: String,
    /// The address of record.
    pub aor: Aor,
    /// The pool the migration plan says it is homed on.
    pub pool: String,
    /// Credentials.
    pub auth: UserAuth,
    /// How it reaches its registrar.
    pub transport: Transport,
    /// The registrar's port (`port`; default 5061 for TLS, 5060 otherwise).
    pub port: u16,
    /// Whether SIP kinds run as it when a check names no users (`sip = false`: a
    /// Windows account for `sign_in_as` only, such as a Control Panel administrator).
    pub sip: bool,
    /// Hosts a registrar may redirect it to besides the pools' names, members and
    /// addresses (`redirect_hosts`: a Director outside the pools; matched exactly).
    pub redirect_hosts: Vec<String>,
}
