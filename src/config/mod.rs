//! Typed configuration: TOML in, validated [`Config`] out.
//!
//! Loading happens in two steps. Serde decodes the file into `Raw*` structs that reject
//! unknown keys and keep the byte span of every value that a later rule may need to point
//! at. Validation then turns them into [`Config`], expanding every `[[checks]]` table into
//! one [`CheckInstance`] per pool it names. Every error carries the file, the line and
//! column where one is known, and the key, so an operator can fix the file without
//! guessing; an invalid file never reaches the scheduler.

mod build;
pub mod labels;
pub mod report;
mod users;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::kinds::{CheckSpec, Kind, KindKeys};
pub use crate::model::pool::{check_hostname, Pool, Role};
pub use crate::model::users::{Aor, User, UserAuth};
pub use crate::net::tls::TlsConfig;

/// Why a configuration was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or in-memory source name) the error is about.
    pub origin: String,
    /// 1-based line and column of the offending value, when TOML gives one.
    pub position: Option<(usize, usize)>,
    /// What is wrong, starting with the key it is about.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => write!(f, "{}:{}:{}: {}", self.origin, line, col, self.message),
            None => write!(f, "{}: {}", self.origin, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A validated configuration, ready to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the configuration came from (path or a name such as `<demo>`).
    pub origin: String,
    /// The `[agent]` table.
    pub agent: AgentConfig,
    /// The `[dns]` table.
    pub dns: DnsConfig,
    /// The `[tls]` table.
    pub tls: TlsConfig,
    /// Every pool, in file order.
    pub pools: Vec<Pool>,
    /// Every test user, in file order.
    pub users: Vec<User>,
    /// Every check instance this agent runs (after `agent.shard` is applied), in file order.
    pub instances: Vec<Arc<CheckInstance>>,
    /// The `[report]` table: what `coexistd report` calls GO.
    pub report: report::ReportCriteria,
}

/// The `[agent]` table: how this agent runs and how it is labelled.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Address of the HTTP endpoints (`/metrics`, status, health, reload).
    pub listen: SocketAddr,
    /// Default interval between two runs of a check instance.
    pub interval: Duration,
    /// Default time limit of one probe; always shorter than the interval.
    pub timeout: Duration,
    /// Constant labels on every series, naming the vantage point (e.g. `site`).
    pub labels: BTreeMap<String, String>,
    /// Upper bound of probes in flight at once, so a burst of slow targets cannot
    /// exhaust sockets or memory.
    pub concurrency: usize,
    /// This agent's share of the check instances when several agents split one list.
    pub shard: Option<Shard>,
    /// Bytes that peers can make the registered endpoints hold, all together: stream
    /// buffers and answers kept for retransmissions (`endpoint_memory_mib`, 16 MiB).
    pub endpoint_memory: usize,
}

/// `agent.shard = "K/N"`: run only the instances whose stable hash falls in share K of N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 1-based share index.
    pub index: u32,
    /// Number of shares.
    pub count: u32,
}

/// The `[dns]` table.
#[derive(Debug, Clone, Default)]
pub struct DnsConfig {
    /// Servers for dns checks and for resolving target names. Empty: the system's
    /// `/etc/resolv.conf` servers.
    pub servers: Vec<SocketAddr>,
}

/// One check as it runs: a `[[checks]]` table applied to one pool (or to none).
#[derive(Debug, Clone)]
pub struct CheckInstance {
    /// The pool this instance probes; `None` for checks with `pools = []`.
    pub pool: Option<Pool>,
    /// The check's name, the `check` label.
    pub check: String,
    /// What is probed: `host:port` or a DNS record; the `target` label.
    pub target: String,
    /// Time between two runs.
    pub interval: Duration,
    /// Time limit of one run.
    pub timeout: Duration,
    /// The kind-specific probe description.
    pub spec: CheckSpec,
    /// Probe every address behind the target name, one set of series per address.
    pub each_address: bool,
    /// A service check, or one of the administration path (`purpose = "admin"`).
    pub purpose: Purpose,
}

impl CheckInstance {
    /// The check kind, the `kind` label.
    pub fn kind(&self) -> Kind {
        self.spec.kind()
    }

    /// Pool name, or `""` for a pool-less check.
    pub fn pool_name(&self) -> &str {
        self.pool.as_ref().map_or("", |p| p.name.as_str())
    }

    /// Pool role, or `""` for a pool-less check.
    pub fn role_name(&self) -> &'static str {
        self.pool.as_ref().map_or("", |p| p.role.as_str())
    }

    /// Identity across reloads: an instance with the same key keeps its counters.
    pub fn key(&self) -> String {
        let mut k = format!("{}\u{0}{}\u{0}{}", self.check, self.pool_name(), self.target);
        // Per-pair kinds: the sender is a label too (two senders of one pool to one user).
        for (name, value) in self.spec.extra_labels() {
            k.push('\u{0}');
            k.push_str(name);
            k.push('=');
            k.push_str(value);
        }
        k
    }

    /// A stable 64-bit hash of [`CheckInstance::key`] (FNV-1a), used to spread first
    /// runs over the interval and to assign shards identically on every agent.
    pub fn stable_hash(&self) -> u64 {
        stable_hash(&self.key())
    }
}

/// FNV-1a: stable across processes and Rust versions, unlike `DefaultHasher`.
pub fn stable_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The default configuration path (`coexistd run` without `--config`).
pub const DEFAULT_PATH: &str = "config/coexistd.toml";

fn default_listen() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:9797".to_owned())
}
fn default_interval() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration(Duration::from_secs(30)))
}
fn default_timeout() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration(Duration::from_secs(5)))
}
fn default_concurrency() -> Spanned<usize> {
    Spanned::new(0..0, 1000)
}

fn default_endpoint_memory() -> Spanned<u64> {
    Spanned::new(0..0, (crate::sip::budget::DEFAULT_BYTES >> 20) as u64)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    agent: Option<RawAgent>,
    #[serde(default)]
    dns: Option<RawDns>,
    #[serde(default)]
    tls: Option<RawTls>,
    #[serde(default)]
    pools: Vec<RawPool>,
    #[serde(default)]
    users: Vec<RawUser>,
    #[serde(default)]
    report: Option<report::RawReport>,
    /// Decoded apart (see [`decode_check`]); named here so that an unknown top-level
    /// key's message lists it.
    #[serde(default)]
    #[allow(dead_code)]
    checks: serde::de::IgnoredAny,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    #[serde(default = "default_listen")]
    listen: Spanned<String>,
    #[serde(default = "default_interval")]
    interval: Spanned<HumanDuration>,
    #[serde(default = "default_timeout")]
    timeout: Spanned<HumanDuration>,
    #[serde(default)]
    labels: BTreeMap<Spanned<String>, LabelValue>,
    #[serde(default = "default_concurrency")]
    concurrency: Spanned<usize>,
    #[serde(default)]
    shard: Option<Spanned<String>>,
    #[serde(default = "default_endpoint_memory")]
    endpoint_memory_mib: Spanned<u64>,
}

impl Default for RawAgent {
    fn default() -> Self {
        RawAgent {
            listen: default_listen(),
            interval: default_interval(),
            timeout: default_timeout(),
            labels: BTreeMap::new(),
            concurrency: default_concurrency(),
            shard: None,
            endpoint_memory_mib: default_endpoint_memory(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDns {
    #[serde(default)]
    servers: Vec<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca_file: Option<Spanned<PathBuf>>,
    client_cert: Option<Spanned<PathBuf>>,
    client_key: Option<Spanned<PathBuf>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    name: Spanned<String>,
    role: Role,
    fqdn: Spanned<String>,
    tls_min_version: Option<Spanned<String>>,
    #[serde(default)]
    members: Vec<Spanned<String>>,
    #[serde(default)]
    presence: crate::model::pool::PresenceDialect,
    site: Option<Spanned<String>>,
}

/// A `[[users]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    name: Spanned<String>,
    uri: Spanned<String>,
    pool: Spanned<String>,
    auth: Option<Spanned<String>>,
    username: Option<Spanned<String>>,
    password_file: Option<Spanned<PathBuf>>,
    password_env: Option<Spanned<String>>,
    transport: Option<Spanned<String>>,
    port: Option<Spanned<u16>>,
    realm: Option<Spanned<String>>,
    allow_md5: Option<Spanned<bool>>,
    min_algorithm: Option<Spanned<String>>,
    redirect_hosts: Option<Vec<Spanned<String>>>,
    domain: Option<Spanned<String>>,
    sip: Option<Spanned<bool>>,
    /// Accepted by the decoder only to be refused with a message that says where a
    /// password goes instead.
    password: Option<Spanned<serde::de::IgnoredAny>>,
}

/// The keys every `[[checks]]` table has, whatever its kind. The rest of the table
/// belongs to the kind and is decoded into its own keys struct ([`KindKeys`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheckCommon {
    name: Spanned<String>,
    kind: Spanned<Kind>,
    pools: Option<Spanned<Vec<Spanned<String>>>>,
    interval: Option<Spanned<HumanDuration>>,
    timeout: Option<Spanned<HumanDuration>>,
    purpose: Option<Spanned<String>>,
}

/// The keys of [`RawCheckCommon`], split off a `[[checks]]` table before the rest goes
/// to its kind.
const COMMON_CHECK_KEYS: &[&str] = &["name", "kind", "pools", "interval", "timeout", "purpose"];

/// What a check stands for in its pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    /// A service users need (the default): counts in its pool's UP/DOWN.
    #[default]
    Service,
    /// The path an administrator takes to manage the pool's site (a Control Panel, remote
    /// PowerShell, replication): counts in the site's `administrable`, not in its pool's
    /// UP/DOWN; its series carry `purpose="admin"`.
    Admin,
}

/// A `[[checks]]` table as written: the common keys, and the kind's keys decoded by the
/// kind's own struct.
#[derive(Debug)]
struct RawCheck {
    common: RawCheckCommon,
    keys: KindKeys,
}

/// A constant label value: a string and nothing else (TOML dates, numbers and tables
/// are refused with a message that says so, not with the TOML library's internals).
#[derive(Debug, Clone, PartialEq, Eq)]
struct LabelValue(String);

impl<'de> Deserialize<'de> for LabelValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const WANT: &str = "a string (quote dates and numbers: site = \"2024-05-01\")";
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = LabelValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(WANT)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<LabelValue, E> {
                Ok(LabelValue(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<LabelValue, A::Error> {
                Err(serde::de::Error::custom(format!(
                    "agent.labels: a value must be {WANT}, not a table or date"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration written the humantime way (`30s`, `2m`, `1h 30m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map(HumanDuration).map_err(|e| {
            serde::de::Error::custom(format!("invalid duration {s:?}: {e} (write e.g. \"30s\" or \"2m\")"))
        })
    }
}

struct Source<'a> {
    origin: &'a str,
    text: &'a str,
}

impl Source<'_> {
    fn position(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rfind('\n').map_or(before.chars().count(), |i| before[i + 1..].chars().count()) + 1;
        (line, col)
    }

    /// A TOML or serde error, at its place in the file.
    fn toml_err(&self, e: &toml::de::Error) -> ConfigError {
        let position = e.span().map(|s| self.position(s.start));
        let mut message = e.message().trim().to_owned();
        // The toml crate carries dates through serde as a table with an internal
        // name; an operator should read what is wrong instead.
        let value = e.span().and_then(|s| self.text.get(s.start..)).unwrap_or("");
        let date = value.len() > 4
            && value.as_bytes()[..4].iter().all(u8::is_ascii_digit)
            && value.as_bytes()[4] == b'-';
        if message.contains("$__toml_private_datetime") || (date && message.contains("invalid type: map")) {
            message = "a date or time is not allowed here (quote it if it is meant as text)".into();
        }
        ConfigError { origin: self.origin.to_owned(), position, message }
    }

    fn err(&self, span: std::ops::Range<usize>, message: &str) -> ConfigError {
        // Defaults carry the empty span 0..0: they have no place in the file.
        let position = (span != (0..0)).then(|| self.position(span.start));
        ConfigError { origin: self.origin.to_owned(), position, message: message.to_owned() }
    }
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            position: None,
            message: if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "cannot read the configuration: {e} (start from config/coexistd.example.toml, \
                     or run `coexistd demo` to see the agent against a built-in lab)"
                )
            } else {
                format!("cannot read the configuration: {e}")
            },
        })?;
        Config::parse(&text, &origin)
    }

    /// Validates configuration text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let src = Source { origin, text };
        let toml_err = |e: toml::de::Error| src.toml_err(&e);
        let mut root = toml::de::DeTable::parse(text).map_err(toml_err)?;
        let checks = root.get_mut().remove("checks");
        let raw: RawFile = RawFile::deserialize(toml::de::Deserializer::from(root)).map_err(toml_err)?;
        let checks = match checks {
            None => Vec::new(),
            Some(value) => decode_checks(value, &src)?,
        };
        build::build(raw, checks, &src)
    }

    /// The pool named `name`.
    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| p.name == name)
    }
}

/// Decodes `[[checks]]`: the common keys, then the kind's keys with the kind's own
/// struct. A key that belongs to another kind is named as such; a key of no kind is
/// refused by serde.
fn decode_checks(
    value: Spanned<toml::de::DeValue<'_>>,
    src: &Source<'_>,
) -> Result<Vec<RawCheck>, ConfigError> {
    let toml_err = |e: toml::de::Error| src.toml_err(&e);
    let span = value.span();
    let items = match value.into_inner() {
        toml::de::DeValue::Array(items) => items,
        other => {
            // Let serde say what it expected.
            let e = Vec::<serde::de::IgnoredAny>::deserialize(toml::de::ValueDeserializer::from(
                Spanned::new(span, other),
            ))
            .err();
            return Err(e.map_or_else(|| src.err(0..0, "checks: must be [[checks]] tables"), &toml_err));
        }
    };
    let mut checks = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let span = item.span();
        let toml::de::DeValue::Table(table) = item.get_ref() else {
            let e = RawCheckCommon::deserialize(toml::de::ValueDeserializer::from(item.clone())).err();
            return Err(e.map_or_else(|| src.err(span, "checks: must be [[checks]] tables"), &toml_err));
        };
        let mut common = toml::de::DeTable::new();
        let mut rest = toml::de::DeTable::new();
        for (k, v) in table.iter() {
            if COMMON_CHECK_KEYS.contains(&k.get_ref().as_ref()) {
                common.insert(k.clone(), v.clone());
            } else {
                rest.insert(k.clone(), v.clone());
            }
        }
        let common_de =
            toml::de::ValueDeserializer::from(Spanned::new(span.clone(), toml::de::DeValue::Table(common)));
        let common = RawCheckCommon::deserialize(common_de).map_err(toml_err)?;
        let kind = *common.kind.get_ref();
        for (k, v) in rest.iter() {
            let key: &str = k.get_ref();
            if !Kind::ALL.iter().any(|other| other.keys().contains(&key)) {
                // A key of no kind (a typo of a common key, too): every key a check
                // table may have, as before the kinds had structs of their own.
                let mut all: Vec<&str> = COMMON_CHECK_KEYS.to_vec();
                for k in Kind::ALL.iter().flat_map(|k| k.keys()) {
                    if !all.contains(k) {
                        all.push(k);
                    }
                }
                let expected: Vec<String> = all.iter().map(|k| format!("`{k}`")).collect();
                return Err(src.err(
                    k.span(),
                    &format!("unknown field `{key}`, expected one of {}", expected.join(", ")),
                ));
            }
            if !kind.keys().contains(&key) {
                return Err(src.err(
                    v.span(),
                    &format!(
                        "checks[{i}].{key}: not a key of kind \"{}\" (its keys: {})",
                        kind.as_str(),
                        kind.keys().join(", ")
                    ),
                ));
            }
        }
        let rest_de = toml::de::ValueDeserializer::from(Spanned::new(span, toml::de::DeValue::Table(rest)));
        let keys = KindKeys::decode(kind, rest_de).map_err(toml_err)?;
        checks.push(RawCheck { common, keys });
    }
    Ok(checks)
}

/// Label names the agent sets itself, besides those of the families the kinds declare
/// ([`is_reserved_label`] asks both); `agent.labels` may not reuse them.
/// Every label name of every core family belongs here (a constant label of the same name
/// would make a sample carry it twice, and Prometheus rejects the whole scrape); the
/// e2e test checks the scraped output against [`is_reserved_label`].
pub const RESERVED_LABELS: &[&str] = &[
    "pool",
    "role",
    "check",
    "kind",
    "target",
    "address",
    "reason",
    "phase",
    "state",
    "version",
    "revision",
    "branch",
    "rustversion",
    "le",
    "points_to",
    "subject",
    "issuer",
    "serial",
    "sans",
    "signature_algorithm",
    "fingerprint_sha256",
    "quantile",
    "user",
    "home_pool",
    "from_pool",
    "to_pool",
    "purpose",
    "topology_site",
];

/// Whether a label name is the agent's own: in [`RESERVED_LABELS`] or the label of a
/// family a kind declares.
pub fn is_reserved_label(name: &str) -> bool {
    RESERVED_LABELS.contains(&name) || crate::kinds::measures().iter().any(|m| m.label == Some(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_counts_lines_and_columns() {
        let src = Source { origin: "x", text: "a\nbc\nd" };
        assert_eq!(src.position(0), (1, 1));
        assert_eq!(src.position(3), (2, 2));
        assert_eq!(src.position(5), (3, 1));
    }

    #[test]
    fn the_endpoint_memory_is_in_mib_and_16_by_default() {
        let c = Config::parse("[agent]\nendpoint_memory_mib = 64\n", "t").unwrap();
        assert_eq!(c.agent.endpoint_memory, 64 << 20);
        assert_eq!(Config::parse("", "t").unwrap().agent.endpoint_memory, 16 << 20);
        assert!(Config::parse("[agent]\nendpoint_memory_mib = 4097\n", "t").is_err());
    }

    #[test]
    fn stable_hash_is_fnv1a() {
        assert_eq!(stable_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
