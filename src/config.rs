//! Typed configuration: TOML in, validated [`Config`] out.
//!
//! Loading happens in two steps. Serde decodes the file into `Raw*` structs that reject
//! unknown keys and keep the byte span of every value that a later rule may need to point
//! at. Validation then turns them into [`Config`], expanding every `[[checks]]` table into
//! one [`CheckInstance`] per pool it names. Every error carries the file, the line and
//! column where one is known, and the key, so an operator can fix the file without
//! guessing; an invalid file never reaches the scheduler.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::probe::{self, CheckSpec, Kind};
use crate::tls::{TlsOptions, TlsVersion};

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
    /// Every check instance this agent runs (after `agent.shard` is applied), in file order.
    pub instances: Vec<Arc<CheckInstance>>,
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

/// The `[tls]` table: trust anchors and client identity for TLS-speaking checks.
#[derive(Debug, Clone, Default)]
pub struct TlsConfig {
    /// PEM file of enterprise trust anchors (default: system roots).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS.
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
}

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
}

impl Pool {
    /// Whether `name` (any case, trailing dot or not) is the pool FQDN or a member.
    pub fn owns_name(&self, name: &str) -> bool {
        let n = name.trim_end_matches('.');
        n.eq_ignore_ascii_case(&self.fqdn) || self.members.iter().any(|m| n.eq_ignore_ascii_case(m))
    }
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
        format!("{}\u{0}{}\u{0}{}", self.check, self.pool_name(), self.target)
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
    checks: Vec<RawCheck>,
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
}

/// A `[[checks]]` table as written. Keys of every kind live here; the kind's own
/// module takes the ones it understands and [`RawCheck::reject_foreign`] names the rest.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    /// Unique check name.
    pub name: Spanned<String>,
    /// Check kind.
    pub kind: Spanned<Kind>,
    /// Pools this check runs for: absent = every pool, `[]` = once without a pool.
    pub pools: Option<Spanned<Vec<Spanned<String>>>>,
    /// Interval override.
    pub interval: Option<Spanned<HumanDuration>>,
    /// Timeout override.
    pub timeout: Option<Spanned<HumanDuration>>,
    /// Target host (default: the pool FQDN). `{fqdn}` is replaced by the pool FQDN.
    pub host: Option<Spanned<String>>,
    /// Target port.
    pub port: Option<Spanned<u16>>,
    /// dns: the record name to query.
    pub record: Option<Spanned<String>>,
    /// dns: the record type (A, AAAA, CNAME, SRV, TXT).
    #[serde(rename = "type")]
    pub record_type: Option<Spanned<String>>,
    /// dns: the exact answer set expected.
    pub expect: Option<Spanned<Vec<String>>>,
    /// dns: answers that must be among those returned.
    pub expect_contains: Option<Spanned<Vec<String>>>,
    /// TLS kinds: lowest TLS version (overrides the pool's).
    pub tls_min_version: Option<Spanned<String>>,
    /// TLS kinds: record the chain but do not verify it.
    pub tls_skip_verify: Option<Spanned<bool>>,
    /// TLS kinds: fail with `cert_expiring` when the leaf expires within this many days.
    pub min_days_valid: Option<Spanned<u32>>,
    /// http: full URL (`https://host[:port]/path`); `{fqdn}` allowed.
    pub url: Option<Spanned<String>>,
    /// http: path on the target host (with `port`, default 443).
    pub path: Option<Spanned<String>>,
    /// http, sip: accepted status codes (default: any 2xx).
    pub expect_status: Option<Spanned<Vec<u16>>>,
    /// sip: udp, tcp or tls.
    pub transport: Option<Spanned<String>>,
    /// sip: Request-URI user part.
    pub user: Option<Spanned<String>>,
    /// dns: the pool the answer must belong to.
    pub expect_pool: Option<Spanned<String>>,
    /// Connecting kinds: probe every address behind the target name.
    pub each_address: Option<Spanned<bool>>,
    /// http: text the body must contain.
    pub body_contains: Option<Spanned<String>>,
}

impl RawCheck {
    /// Every optional kind-specific key that is set, with its span.
    fn set_keys(&self) -> Vec<(&'static str, std::ops::Range<usize>)> {
        let mut keys = Vec::new();
        macro_rules! key {
            ($field:ident, $name:literal) => {
                if let Some(v) = &self.$field {
                    keys.push(($name, v.span()));
                }
            };
        }
        key!(host, "host");
        key!(port, "port");
        key!(record, "record");
        key!(record_type, "type");
        key!(expect, "expect");
        key!(expect_contains, "expect_contains");
        key!(tls_min_version, "tls_min_version");
        key!(tls_skip_verify, "tls_skip_verify");
        key!(min_days_valid, "min_days_valid");
        key!(url, "url");
        key!(path, "path");
        key!(expect_status, "expect_status");
        key!(body_contains, "body_contains");
        key!(transport, "transport");
        key!(user, "user");
        key!(expect_pool, "expect_pool");
        key!(each_address, "each_address");
        keys
    }

    /// Rejects every kind-specific key not in `allowed`, naming it and its position.
    pub fn reject_foreign(&self, cx: &CheckCx<'_>, allowed: &[&str]) -> Result<(), ConfigError> {
        for (key, span) in self.set_keys() {
            if !allowed.contains(&key) {
                return Err(cx.err(
                    span,
                    &format!(
                        "{key}: not a key of kind \"{}\" (its keys: {})",
                        self.kind.get_ref().as_str(),
                        allowed.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Context for building one check instance: where errors point, and the pool.
pub struct CheckCx<'a> {
    src: &'a Source<'a>,
    /// `checks[N]`, the prefix of every key named in an error.
    pub path: String,
    /// The pool the instance is for.
    pub pool: Option<&'a Pool>,
    /// The instance's timeout.
    pub timeout: Duration,
    /// Every pool of the configuration (for `expect_pool` and `points_to`).
    pub pools: &'a [Pool],
}

impl CheckCx<'_> {
    /// An error at `span` whose message starts with `checks[N].`.
    pub fn err(&self, span: std::ops::Range<usize>, message: &str) -> ConfigError {
        self.src.err(span, &format!("{}.{message}", self.path))
    }

    /// Replaces `{fqdn}` with the pool FQDN; an error when there is no pool to take it from.
    pub fn expand(&self, value: &Spanned<String>, key: &str) -> Result<String, ConfigError> {
        let s = value.get_ref();
        if !s.contains("{fqdn}") {
            return Ok(s.clone());
        }
        match self.pool {
            Some(p) => Ok(s.replace("{fqdn}", &p.fqdn)),
            None => Err(self.err(
                value.span(),
                &format!("{key}: uses {{fqdn}} but the check runs without a pool (pools = [])"),
            )),
        }
    }

    /// The target host: `host` (expanded) or the pool FQDN.
    pub fn host(&self, raw: &RawCheck) -> Result<String, ConfigError> {
        match (&raw.host, self.pool) {
            (Some(spanned), _) => {
                let h = self.expand(spanned, "host")?;
                check_hostname(&h).map_err(|m| self.err(spanned.span(), &format!("host: {m}")))?;
                Ok(h)
            }
            (None, Some(p)) => Ok(p.fqdn.clone()),
            (None, None) => {
                Err(self
                    .err(raw.name.span(), "host: required when the check runs without a pool (pools = [])"))
            }
        }
    }

    /// The TLS options of the instance: the check's `tls_min_version`, else the pool's,
    /// else 1.2.
    pub fn tls_options(&self, raw: &RawCheck) -> Result<TlsOptions, ConfigError> {
        let min_version = match &raw.tls_min_version {
            Some(v) => parse_tls_version(v).map_err(|m| self.err(v.span(), &m))?,
            None => self.pool.and_then(|p| p.tls_min_version).unwrap_or(TlsVersion::V1_2),
        };
        Ok(TlsOptions {
            min_version,
            skip_verify: raw.tls_skip_verify.as_ref().is_some_and(|v| *v.get_ref()),
            min_days_valid: raw.min_days_valid.as_ref().map(|v| *v.get_ref()),
        })
    }

    /// The target port, required.
    pub fn port(&self, raw: &RawCheck) -> Result<u16, ConfigError> {
        match &raw.port {
            Some(p) if *p.get_ref() == 0 => Err(self.err(p.span(), "port: must be 1-65535")),
            Some(p) => Ok(*p.get_ref()),
            None => Err(self.err(
                raw.name.span(),
                &format!("port: required for kind \"{}\"", raw.kind.get_ref().as_str()),
            )),
        }
    }
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
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let position = e.span().map(|s| src.position(s.start));
            let mut message = e.message().trim().to_owned();
            // The toml crate carries dates through serde as a table with an internal
            // name; an operator should read what is wrong instead.
            let value = e.span().and_then(|s| text.get(s.start..)).unwrap_or("");
            let date = value.len() > 4
                && value.as_bytes()[..4].iter().all(u8::is_ascii_digit)
                && value.as_bytes()[4] == b'-';
            if message.contains("$__toml_private_datetime") || (date && message.contains("invalid type: map"))
            {
                message = "a date or time is not allowed here (quote it if it is meant as text)".into();
            }
            ConfigError { origin: origin.to_owned(), position, message }
        })?;
        build(raw, &src)
    }

    /// The pool named `name`.
    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| p.name == name)
    }
}

fn check_hostname(h: &str) -> Result<(), String> {
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

fn build(raw: RawFile, src: &Source<'_>) -> Result<Config, ConfigError> {
    let ra = raw.agent.unwrap_or_default();
    let listen: SocketAddr = ra.listen.get_ref().parse().map_err(|_| {
        src.err(
            ra.listen.span(),
            &format!(
                "agent.listen: {:?} is not an address:port (e.g. \"127.0.0.1:9797\")",
                ra.listen.get_ref()
            ),
        )
    })?;
    let interval = ra.interval.get_ref().0;
    let timeout = ra.timeout.get_ref().0;
    if interval.is_zero() {
        return Err(src.err(ra.interval.span(), "agent.interval: must be greater than zero"));
    }
    if timeout.is_zero() {
        return Err(src.err(ra.timeout.span(), "agent.timeout: must be greater than zero"));
    }
    if timeout >= interval {
        return Err(src.err(
            ra.timeout.span(),
            &format!(
                "agent.timeout: must be shorter than agent.interval ({} >= {})",
                humantime::format_duration(timeout),
                humantime::format_duration(interval)
            ),
        ));
    }
    let mut labels = BTreeMap::new();
    for (k, v) in ra.labels {
        if !is_label_name(k.get_ref()) || RESERVED_LABELS.contains(&k.get_ref().as_str()) {
            let why = if is_label_name(k.get_ref()) {
                "is used by coexistd itself"
            } else {
                "is not a valid Prometheus label name"
            };
            return Err(src.err(k.span(), &format!("agent.labels: {:?} {why}", k.get_ref())));
        }
        check_name(&v.0)
            .map_err(|m| src.err(k.span(), &format!("agent.labels: the value of {:?} {m}", k.get_ref())))?;
        labels.insert(k.into_inner(), v.0);
    }
    if *ra.concurrency.get_ref() == 0 {
        return Err(src.err(ra.concurrency.span(), "agent.concurrency: must be at least 1"));
    }
    let shard = match &ra.shard {
        None => None,
        Some(s) => Some(parse_shard(s.get_ref()).ok_or_else(|| {
            src.err(s.span(), &format!("agent.shard: {:?} is not \"K/N\" with 1 <= K <= N", s.get_ref()))
        })?),
    };
    let agent =
        AgentConfig { listen, interval, timeout, labels, concurrency: *ra.concurrency.get_ref(), shard };

    let rd = raw.dns.unwrap_or_default();
    let mut servers = Vec::new();
    for s in &rd.servers {
        let addr = parse_server(s.get_ref())
            .map_err(|why| src.err(s.span(), &format!("dns.servers: {:?} {why}", s.get_ref())))?;
        servers.push(addr);
    }
    let dns = DnsConfig { servers };

    let rt = raw.tls.unwrap_or_default();
    if rt.client_cert.is_some() != rt.client_key.is_some() {
        let span = rt.client_cert.as_ref().or(rt.client_key.as_ref()).map(|s| s.span()).unwrap_or(0..0);
        return Err(src.err(span, "tls: client_cert and client_key must be given together"));
    }
    for (key, file) in
        [("ca_file", &rt.ca_file), ("client_cert", &rt.client_cert), ("client_key", &rt.client_key)]
    {
        if let Some(f) = file {
            check_file(f.get_ref())
                .map_err(|m| src.err(f.span(), &format!("tls.{key}: {}: {m}", f.get_ref().display())))?;
        }
    }
    let tls = TlsConfig {
        ca_file: rt.ca_file.map(Spanned::into_inner),
        client_cert: rt.client_cert.map(Spanned::into_inner),
        client_key: rt.client_key.map(Spanned::into_inner),
    };

    let mut pools: Vec<Pool> = Vec::new();
    for (i, rp) in raw.pools.iter().enumerate() {
        let name = rp.name.get_ref();
        check_name(name).map_err(|m| src.err(rp.name.span(), &format!("pools[{i}].name: {m}")))?;
        if pools.iter().any(|p| &p.name == name) {
            return Err(src.err(rp.name.span(), &format!("pools[{i}].name: duplicate pool name {name:?}")));
        }
        check_hostname(rp.fqdn.get_ref())
            .map_err(|m| src.err(rp.fqdn.span(), &format!("pools[{i}].fqdn: {m}")))?;
        let tls_min_version = match &rp.tls_min_version {
            None => None,
            Some(v) => Some(parse_tls_version(v).map_err(|m| src.err(v.span(), &format!("pools[{i}].{m}")))?),
        };
        let mut members = Vec::new();
        for m in &rp.members {
            check_hostname(m.get_ref())
                .map_err(|e| src.err(m.span(), &format!("pools[{i}].members: {e}")))?;
            members.push(m.get_ref().trim_end_matches('.').to_owned());
        }
        pools.push(Pool {
            name: name.clone(),
            role: rp.role,
            fqdn: rp.fqdn.get_ref().trim_end_matches('.').to_owned(),
            tls_min_version,
            members,
        });
    }

    let mut names = HashSet::new();
    let mut instances = Vec::new();
    for (i, rc) in raw.checks.iter().enumerate() {
        let path = format!("checks[{i}]");
        let name = rc.name.get_ref();
        check_name(name).map_err(|m| src.err(rc.name.span(), &format!("{path}.name: {m}")))?;
        if !names.insert(name.clone()) {
            return Err(src.err(rc.name.span(), &format!("{path}.name: duplicate check name {name:?}")));
        }
        let check_interval = rc.interval.as_ref().map_or(interval, |d| d.get_ref().0);
        let check_timeout = rc.timeout.as_ref().map_or(timeout, |d| d.get_ref().0);
        if let Some(d) = rc.interval.as_ref().filter(|d| d.get_ref().0.is_zero()) {
            return Err(src.err(d.span(), &format!("{path}.interval: must be greater than zero")));
        }
        if let Some(d) = rc.timeout.as_ref().filter(|d| d.get_ref().0.is_zero()) {
            return Err(src.err(d.span(), &format!("{path}.timeout: must be greater than zero")));
        }
        if check_timeout >= check_interval {
            let span =
                rc.timeout.as_ref().or(rc.interval.as_ref()).map_or_else(|| rc.name.span(), |d| d.span());
            return Err(src.err(
                span,
                &format!(
                    "{path}.timeout: must be shorter than the interval ({} >= {})",
                    humantime::format_duration(check_timeout),
                    humantime::format_duration(check_interval)
                ),
            ));
        }
        let targets: Vec<Option<&Pool>> = match &rc.pools {
            None => pools.iter().map(Some).collect(),
            Some(list) if list.get_ref().is_empty() => vec![None],
            Some(list) => {
                let mut v: Vec<Option<&Pool>> = Vec::new();
                for pname in list.get_ref() {
                    if v.iter().any(|p| p.is_some_and(|p| &p.name == pname.get_ref())) {
                        return Err(src.err(
                            pname.span(),
                            &format!("{path}.pools: {:?} is listed twice", pname.get_ref()),
                        ));
                    }
                    let p = pools.iter().find(|p| &p.name == pname.get_ref()).ok_or_else(|| {
                        src.err(pname.span(), &format!("{path}.pools: unknown pool {:?}", pname.get_ref()))
                    })?;
                    v.push(Some(p));
                }
                v
            }
        };
        for pool in targets {
            let cx = CheckCx { src, path: path.clone(), pool, timeout: check_timeout, pools: &pools };
            let (spec, target) = probe::build_spec(rc, &cx)?;
            instances.push(Arc::new(CheckInstance {
                pool: pool.cloned(),
                check: name.clone(),
                target,
                interval: check_interval,
                timeout: check_timeout,
                spec,
                each_address: rc.each_address.as_ref().is_some_and(|v| *v.get_ref()),
            }));
        }
    }
    if let Some(shard) = shard {
        instances.retain(|i| (i.stable_hash() % u64::from(shard.count)) as u32 == shard.index - 1);
    }
    Ok(Config { origin: src.origin.to_owned(), agent, dns, tls, pools, instances })
}

fn parse_tls_version(v: &Spanned<String>) -> Result<TlsVersion, String> {
    TlsVersion::parse(v.get_ref()).ok_or_else(|| {
        format!("tls_min_version: {:?} is not one of \"1.0\", \"1.1\", \"1.2\", \"1.3\"", v.get_ref())
    })
}

/// Label names the agent sets itself; `agent.labels` may not reuse them.
/// Every label name of every family belongs here (a constant label of the same name
/// would make a sample carry it twice, and Prometheus rejects the whole scrape); the
/// e2e test checks the scraped output against this list.
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
    "le",
    "server",
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
];

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("__")
}

fn parse_shard(s: &str) -> Option<Shard> {
    let (k, n) = s.split_once('/')?;
    let index: u32 = k.trim().parse().ok()?;
    let count: u32 = n.trim().parse().ok()?;
    (index >= 1 && index <= count).then_some(Shard { index, count })
}

/// `10.0.0.10`, `10.0.0.10:53`, `::1`, `[::1]:5353`.
fn parse_server(s: &str) -> Result<SocketAddr, &'static str> {
    let addr = match s.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => match s.parse::<std::net::IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, 53),
            Err(_) => return Err("is not an IP address or address:port"),
        },
    };
    let ip = addr.ip();
    let broadcast = matches!(ip, std::net::IpAddr::V4(v4) if v4.is_broadcast());
    if addr.port() == 0 {
        Err("has port 0")
    } else if ip.is_unspecified() || ip.is_multicast() || broadcast {
        Err("is not a unicast address (unspecified, multicast or broadcast)")
    } else {
        Ok(addr)
    }
}

/// A file the configuration names: a regular file within the size limit (read later,
/// once, by its user; see [`crate::tls::read_config_file`]).
fn check_file(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > crate::tls::MAX_FILE {
        return Err(format!("{} bytes: larger than the {}-byte limit", meta.len(), crate::tls::MAX_FILE));
    }
    Ok(())
}

/// A name an operator chose (check, pool, label value): shown in labels, logs and pages,
/// so it must be visible text.
fn check_name(s: &str) -> Result<(), &'static str> {
    if s.trim().is_empty() {
        Err("must not be empty or blank")
    } else if s.chars().any(char::is_control) {
        Err("must not contain control characters")
    } else if s.trim() != s {
        Err("must not start or end with blanks")
    } else {
        Ok(())
    }
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
    fn shard_parsing() {
        assert_eq!(parse_shard("1/3"), Some(Shard { index: 1, count: 3 }));
        assert_eq!(parse_shard("0/3"), None);
        assert_eq!(parse_shard("4/3"), None);
        assert_eq!(parse_shard("x"), None);
    }

    #[test]
    fn stable_hash_is_fnv1a() {
        assert_eq!(stable_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
