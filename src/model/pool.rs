//! The pools of a migration: the old one being retired and the new one taking over.
//!
//! Facts layer: plain data, used by the check kinds, the configuration and the
//! outputs; imports nothing of the crate but the TLS version type.

use serde::Deserialize;

use crate::net::tls::TlsVersion;

/// Whether a pool is the one being retired or the one taking over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The pool being migrated away from (and rolled back to).
    Legacy,
    /// The pool being migrated to.
    New,
}

impl Role {
    /// The `role` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Legacy => "legacy",
            Role::New => "new",
        }
    }
}

/// One pool of the platform (old or new).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// Unique name, the `pool` label.
    pub name: String,
    /// legacy or new, the `role` label.
    pub role: Role,
    /// The pool FQDN clients use; the default target of every check of the pool.
    pub fqdn: String,
    /// Lowest TLS version the pool speaks; below 1.2 its TLS checks use OpenSSL.
    pub tls_min_version: Option<TlsVersion>,
    /// Host names of the pool's members (Front Ends): DNS answers naming one of them
    /// point at this pool, as answers naming the FQDN do.
    pub members: Vec<String>,
    /// The presence dialect its users' clients speak.
    pub presence: PresenceDialect,
    /// The topology site the pool belongs to ("Moscow"), when the configuration says:
    /// the `topology_site` label of the site rollups (not the agent's own `site`).
    pub site: Option<String>,
}

/// How a pool's clients publish and watch presence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceDialect {
    /// Standard SIMPLE: PUBLISH of PIDF (RFC 3903, 3863), SUBSCRIBE per contact (RFC 3856).
    #[default]
    Simple,
    /// Microsoft's (OCS 2007 and later, Lync, Skype for Business): SERVICE with a
    /// category publication, batched SUBSCRIBE with a category list, NOTIFY of
    /// categories, `resubscribe` to another pool.
    Msrtc,
}

impl Pool {
    /// Whether `name` (any case, trailing dot or not) is the pool FQDN or a member.
    pub fn owns_name(&self, name: &str) -> bool {
        let n = name.trim_end_matches('.');
        n.eq_ignore_ascii_case(&self.fqdn) || self.members.iter().any(|m| n.eq_ignore_ascii_case(m))
    }
}

/// A host name or address literal as a target: non-empty, at most 253 characters,
/// labels of letters, digits, `-` and `_`.
pub fn check_hostname(h: &str) -> Result<(), String> {
    if h.is_empty() {
        return Err("must not be empty".into());
    }
    if h.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let name = h.strip_suffix('.').unwrap_or(h);
    if name.len() > 253 {
        return Err(format!("{h:?} is longer than 253 characters"));
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(format!("{h:?} is not a valid host name"));
        }
    }
    Ok(())
}

/// The `points_to` (and home pool) value of a name or answer that belongs to no
/// configured pool.
pub const UNKNOWN: &str = "unknown";
