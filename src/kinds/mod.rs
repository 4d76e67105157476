//! The check kinds: one module per kind implementing [`CheckKind`], one line per kind
//! in the `check_kinds!` list (which generates [`Kind`], [`CheckSpec`], [`KindKeys`]
//! and the dispatch).
//!
//! Every probe has the same shape: `async fn probe(spec, &ProbeContext) -> Outcome`.
//! Probes do not enforce their own deadline: the caller wraps them in the instance's
//! timeout and turns an elapsed deadline into [`CheckSpec::timeout_reason`].

pub mod dns;
pub mod http;
pub mod rpc_epm;
pub mod sip;
pub mod sip_call;
pub mod sip_discovery;
pub mod sip_echo;
pub mod sip_group_im;
pub mod sip_im;
pub mod sip_presence;
pub mod sip_register;
pub mod smb;
pub mod sql_browser;
pub mod stun;
pub mod tcp;
pub mod tls;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use toml::Spanned;

pub use crate::failure::{connect_reason, Failure, FailureReason};
pub use crate::model::outcome::{status_accepted, Measure, Outcome, Phase};
use crate::model::pool::Pool;
use crate::net::tls::{TlsOptions, TlsVersion};
pub use crate::ua::ProbeContext;

/// One check kind: its keys, how they become a probe description, and the probe.
///
/// A kind is one module with a type implementing this trait (the validated probe
/// description) and one line in the `check_kinds!` list below, which generates
/// [`Kind`], [`CheckSpec`], [`KindKeys`] and the dispatch. Its keys are a serde struct
/// with `deny_unknown_fields`: a key of another kind, or of none, is rejected when the
/// file is decoded; nobody keeps a list of keys by hand.
pub trait CheckKind: Sized {
    /// The keys of a `[[checks]]` table of this kind besides the common ones (`name`,
    /// `kind`, `pools`, `interval`, `timeout`), in the order error messages list them.
    type Keys: serde::de::DeserializeOwned + std::fmt::Debug;

    /// Validates the keys for one instance (one pool, or none); returns the probe
    /// description and the instance's `target` label.
    fn build(keys: &Self::Keys, cx: &BuildCx<'_>) -> Result<(Self, String), BuildError>;

    /// Runs one probe, without a deadline of its own (the scheduler adds it).
    fn probe(&self, cx: &ProbeContext) -> impl std::future::Future<Output = Outcome> + Send;

    /// Whether the keys ask to probe every address behind the target name
    /// (`each_address`); only kinds with a [`CheckKind::host`] can.
    fn each_address(_keys: &Self::Keys) -> bool {
        false
    }

    /// The host a connecting kind resolves and connects to (`each_address` fans out
    /// over its addresses).
    fn host(&self) -> Option<&str> {
        None
    }

    /// The reason recorded when the probe does not finish within its timeout.
    fn timeout_reason(&self) -> FailureReason {
        FailureReason::Timeout
    }

    /// The pool a record or the sign-in path must point at (`expect_pool`), if planned.
    fn expect_pool(&self) -> Option<&str> {
        None
    }

    /// For kinds that run as test users: which users (one instance each, in the user's
    /// planned pool). `None`: the kind runs once per pool of `pools`.
    fn users(_keys: &Self::Keys) -> Option<UserSelection<'_>> {
        None
    }

    /// For kinds that run between two test users: the senders and the recipients (one
    /// instance per ordered pair of different users, in the sender's planned pool;
    /// [`BuildCx::peer`] is the recipient).
    fn pairs(_keys: &Self::Keys) -> Option<(UserSelection<'_>, UserSelection<'_>)> {
        None
    }

    /// The registered endpoints the instance needs the agent to keep.
    fn endpoints(&self) -> Vec<&crate::ua::endpoint::EndpointSpec> {
        Vec::new()
    }

    /// Labels of the instance's series besides pool, role, check, kind and target.
    /// A kind that runs between two pools labels the far one `to_pool`: the alert
    /// rules tell pair checks from pool checks by that label, never by kind.
    fn extra_labels(&self) -> Vec<(&'static str, &str)> {
        Vec::new()
    }

    /// Where the instance's result counts: in its pool's UP/DOWN (the default), or in
    /// the matrix cell of the two pools a kind between users runs across.
    fn rollup(&self) -> Rollup<'_> {
        Rollup::Pool
    }

    /// The metric families of its own the kind fills ([`Outcome::set`]), beyond pass/
    /// fail, timings, TLS facts and `points_to`, which every kind has. Declaring one
    /// here is all it takes for `/metrics` to carry it (and for its label to be
    /// reserved); a debug build asserts that a kind fills no family it did not declare.
    const MEASURES: &'static [&'static Measure] = &[];

    /// For a kind whose `points_to` is where a test user is homed (not where a record
    /// points): that user's name. Its `points_to` is then exported as
    /// `coexist_user_home{user,home_pool}` instead of `coexist_dns_points_to`.
    fn homed_user(&self) -> Option<&str> {
        None
    }
}

/// The two test users of a kind between users (`from` acts, `to` is reached), with what
/// such kinds share: the endpoints kept, the labels (`user` = `from`, `to_pool` = the
/// planned pool of `to`), the matrix cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// The acting user's endpoint.
    pub from: Box<crate::ua::endpoint::EndpointSpec>,
    /// The reached user's endpoint.
    pub to: Box<crate::ua::endpoint::EndpointSpec>,
}

impl Pair {
    /// The target label: the reached user's address of record.
    pub fn target(&self) -> String {
        self.to.user.aor.uri()
    }

    /// See [`CheckKind::endpoints`].
    pub fn endpoints(&self) -> Vec<&crate::ua::endpoint::EndpointSpec> {
        vec![&self.from, &self.to]
    }

    /// See [`CheckKind::extra_labels`]: two users of one pool towards one user are two
    /// series.
    pub fn extra_labels(&self) -> Vec<(&'static str, &str)> {
        vec![("user", self.from.user.name.as_str()), ("to_pool", self.to.user.pool.as_str())]
    }

    /// See [`CheckKind::rollup`]: into the matrix of the kind, not into a pool.
    pub fn rollup(&self) -> Rollup<'_> {
        Rollup::PoolPair {
            from: &self.from.user.pool,
            to: &self.to.user.pool,
            between: (&self.from.user.name, &self.to.user.name),
        }
    }
}

/// Where an instance's result counts (see [`CheckKind::rollup`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollup<'a> {
    /// Into its pool's UP/DOWN and counts.
    Pool,
    /// Into the interop matrix cell `from` → `to` (planned pools of the two users).
    PoolPair {
        /// The sender's planned pool.
        from: &'a str,
        /// The recipient's planned pool.
        to: &'a str,
        /// The two users' names, for the cell's list of failing pairs.
        between: (&'a str, &'a str),
    },
}

/// The `users` key of a per-user kind: the names listed, or every user when absent.
#[derive(Debug, Clone, Copy)]
pub struct UserSelection<'a>(pub Option<&'a Spanned<Vec<Spanned<String>>>>);

/// Declares the check kinds from one list: [`Kind`] (the `kind` key and label),
/// [`CheckSpec`], [`KindKeys`] and every dispatch come from it.
macro_rules! check_kinds {
    ($($(#[doc = $doc:literal])+ $variant:ident($spec:ty) => $name:literal,)+) => {
        /// The check kinds this build knows.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
        pub enum Kind {
            $($(#[doc = $doc])+ #[serde(rename = $name)] $variant,)+
        }

        impl Kind {
            /// Every kind, in declaration order.
            pub const ALL: &'static [Kind] = &[$(Kind::$variant,)+];

            /// The `kind` label value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Kind::$variant => $name,)+
                }
            }

            /// What the kind checks, as documented in the list.
            pub fn description(self) -> &'static str {
                match self {
                    $(Kind::$variant => concat!($($doc, " ",)+).trim_ascii(),)+
                }
            }

            /// The metric families the kind declares ([`CheckKind::MEASURES`]).
            pub fn measures(self) -> &'static [&'static Measure] {
                match self {
                    $(Kind::$variant => <$spec as CheckKind>::MEASURES,)+
                }
            }

            /// The kind's own keys, from its keys struct.
            pub fn keys(self) -> &'static [&'static str] {
                match self {
                    $(Kind::$variant => struct_fields::<<$spec as CheckKind>::Keys>(),)+
                }
            }
        }

        /// A validated, kind-specific probe description.
        #[derive(Debug, Clone, PartialEq)]
        pub enum CheckSpec {
            $($(#[doc = $doc])+ $variant($spec),)+
        }

        /// The kind keys of one `[[checks]]` table, decoded.
        #[derive(Debug)]
        pub enum KindKeys {
            $($(#[doc = $doc])+ $variant(<$spec as CheckKind>::Keys),)+
        }

        impl KindKeys {
            /// Decodes the keys of `kind` (unknown keys are errors).
            pub fn decode<'de, D: serde::Deserializer<'de>>(kind: Kind, d: D) -> Result<KindKeys, D::Error> {
                match kind {
                    $(Kind::$variant => {
                        <<$spec as CheckKind>::Keys as Deserialize>::deserialize(d).map(KindKeys::$variant)
                    })+
                }
            }

            /// Builds one instance's probe description and `target` label.
            pub fn build(&self, cx: &BuildCx<'_>) -> Result<(CheckSpec, String), BuildError> {
                match self {
                    $(KindKeys::$variant(k) => {
                        <$spec as CheckKind>::build(k, cx).map(|(s, t)| (CheckSpec::$variant(s), t))
                    })+
                }
            }

            /// See [`CheckKind::users`].
            pub fn users(&self) -> Option<UserSelection<'_>> {
                match self {
                    $(KindKeys::$variant(k) => <$spec as CheckKind>::users(k),)+
                }
            }

            /// See [`CheckKind::pairs`].
            pub fn pairs(&self) -> Option<(UserSelection<'_>, UserSelection<'_>)> {
                match self {
                    $(KindKeys::$variant(k) => <$spec as CheckKind>::pairs(k),)+
                }
            }

            /// Whether the keys ask for `each_address`.
            pub fn each_address(&self) -> bool {
                match self {
                    $(KindKeys::$variant(k) => <$spec as CheckKind>::each_address(k),)+
                }
            }
        }

        impl CheckSpec {
            /// The kind of this spec.
            pub fn kind(&self) -> Kind {
                match self {
                    $(CheckSpec::$variant(_) => Kind::$variant,)+
                }
            }

            /// See [`CheckKind::host`].
            pub fn host(&self) -> Option<&str> {
                match self {
                    $(CheckSpec::$variant(s) => s.host(),)+
                }
            }

            /// See [`CheckKind::timeout_reason`].
            pub fn timeout_reason(&self) -> FailureReason {
                match self {
                    $(CheckSpec::$variant(s) => s.timeout_reason(),)+
                }
            }

            /// See [`CheckKind::expect_pool`].
            pub fn expect_pool(&self) -> Option<&str> {
                match self {
                    $(CheckSpec::$variant(s) => s.expect_pool(),)+
                }
            }

            /// See [`CheckKind::endpoints`].
            pub fn endpoints(&self) -> Vec<&crate::ua::endpoint::EndpointSpec> {
                match self {
                    $(CheckSpec::$variant(s) => s.endpoints(),)+
                }
            }

            /// See [`CheckKind::extra_labels`].
            pub fn extra_labels(&self) -> Vec<(&'static str, &str)> {
                match self {
                    $(CheckSpec::$variant(s) => s.extra_labels(),)+
                }
            }

            /// See [`CheckKind::rollup`].
            pub fn rollup(&self) -> Rollup<'_> {
                match self {
                    $(CheckSpec::$variant(s) => s.rollup(),)+
                }
            }

            /// See [`CheckKind::homed_user`].
            pub fn homed_user(&self) -> Option<&str> {
                match self {
                    $(CheckSpec::$variant(s) => s.homed_user(),)+
                }
            }
        }

        /// Runs one probe, without a deadline of its own.
        pub async fn run(spec: &CheckSpec, cx: &ProbeContext) -> Outcome {
            let outcome = match spec {
                $(CheckSpec::$variant(s) => s.probe(cx).await,)+
            };
            debug_assert!(
                outcome.measured.iter().all(|m| spec.kind().measures().iter().any(|d| d.name == m.measure.name)),
                "kind {} filled a family it does not declare in MEASURES",
                spec.kind().as_str()
            );
            outcome
        }
    };
}

check_kinds! {
    /// TCP connect.
    Tcp(tcp::TcpSpec) => "tcp",
    /// DNS query and answer comparison.
    Dns(dns::DnsSpec) => "dns",
    /// TLS handshake and certificate checks.
    Tls(tls::TlsSpec) => "tls",
    /// HTTPS GET.
    Http(http::HttpSpec) => "http",
    /// SIP OPTIONS over UDP, TCP or TLS.
    Sip(sip::SipSpec) => "sip",
    /// SRV record → host → TLS → OPTIONS, as a client signs in.
    SipDiscovery(sip_discovery::SipDiscoverySpec) => "sip_discovery",
    /// A test user registers with digest authentication (following one redirect), is
    /// found where it is homed, and unregisters.
    SipRegister(sip_register::SipRegisterSpec) => "sip_register",
    /// One test user reaches another through the pools (MESSAGE, an INVITE IM session,
    /// or OPTIONS), both registered endpoints of the agent; one instance per ordered pair.
    SipIm(sip_im::SipImSpec) => "sip_im",
    /// A test user sends a MESSAGE to itself through its home pool (the pool's own IM
    /// delivery, without another pool in the way).
    SipEcho(sip_echo::SipEchoSpec) => "sip_echo",
    /// One test user's presence reaches another through the pools (PUBLISH of a fresh
    /// value, seen in a NOTIFY of the watcher's kept-alive subscription); one instance
    /// per ordered pair.
    SipPresence(sip_presence::SipPresenceSpec) => "sip_presence",
    /// One test user calls another through the pools (INVITE with an audio offer,
    /// ringing, answer, ACK, BYE); one instance per ordered pair.
    SipCall(sip_call::SipCallSpec) => "sip_call",
    /// Two test users meet in an IM conference room and one's message reaches the other
    /// through the conference server; one instance per ordered pair.
    SipGroupIm(sip_group_im::SipGroupImSpec) => "sip_group_im",
    /// A STUN Binding request over UDP or TCP (an A/V Edge, a TURN server) answered with
    /// a mapped address.
    Stun(stun::StunSpec) => "stun",
    /// The SQL Server Browser lists the expected instance (MS-SQLR on UDP 1434): a Lync
    /// Front End's local configuration store.
    SqlBrowser(sql_browser::SqlBrowserSpec) => "sql_browser",
    /// An SMB2 NEGOTIATE answered with a dialect (Central Management Store replication's
    /// path to every server).
    Smb(smb::SmbSpec) => "smb",
    /// A DCE/RPC bind to the endpoint mapper on 135 accepted (DCOM and RPC: user moves,
    /// OCS administration).
    RpcEpm(rpc_epm::RpcEpmSpec) => "rpc_epm",
}

/// The field names of a derived `Deserialize` struct (its `FIELDS`), asked of serde
/// itself so that they cannot drift from the struct.
fn struct_fields<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::value::Error;
    use serde::de::Error as _;
    struct Fields<'a>(&'a std::cell::Cell<&'static [&'static str]>);
    impl<'de> serde::Deserializer<'de> for Fields<'_> {
        type Error = Error;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
            Err(Error::custom("not a struct"))
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Error> {
            self.0.set(fields);
            Err(Error::custom("fields taken"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let cell = std::cell::Cell::new(&[][..]);
    let _ = T::deserialize(Fields(&cell));
    cell.get()
}

/// Why a check's keys are invalid for one instance: the span of the offending value and
/// the message (starting with `checks[N].key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError {
    /// Byte span in the configuration text (`0..0`: no place in the file).
    pub span: std::ops::Range<usize>,
    /// What is wrong.
    pub message: String,
}

/// What a kind's [`CheckKind::build`] may know about the instance it builds.
#[derive(Clone)]
pub struct BuildCx<'a> {
    /// `checks[N]`, the prefix of every key named in an error.
    pub path: String,
    /// The span of the check's `name`, for errors about a missing key.
    pub name_span: std::ops::Range<usize>,
    /// The check's kind.
    pub kind: Kind,
    /// The pool the instance is for.
    pub pool: Option<&'a Pool>,
    /// The instance's timeout.
    pub timeout: Duration,
    /// The instance's interval.
    pub interval: Duration,
    /// Every pool of the configuration (for `expect_pool` and `points_to`).
    pub pools: &'a [Pool],
    /// The test user the instance runs as (per-user kinds).
    pub user: Option<&'a crate::model::users::User>,
    /// The other test user (kinds that run between two users).
    pub peer: Option<&'a crate::model::users::User>,
    /// Every `[[users]]` entry (a kind may take credentials from one by name).
    pub users: &'a [crate::model::users::User],
}

impl BuildCx<'_> {
    /// An error at `span` whose message starts with `checks[N].`.
    pub fn err(&self, span: std::ops::Range<usize>, message: &str) -> BuildError {
        BuildError { span, message: format!("{}.{message}", self.path) }
    }

    /// Replaces `{fqdn}` with the pool FQDN; an error when there is no pool to take it from.
    pub fn expand(&self, value: &Spanned<String>, key: &str) -> Result<String, BuildError> {
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
    pub fn host(&self, host: Option<&Spanned<String>>) -> Result<String, BuildError> {
        match (host, self.pool) {
            (Some(spanned), _) => {
                let h = self.expand(spanned, "host")?;
                crate::model::pool::check_hostname(&h)
                    .map_err(|m| self.err(spanned.span(), &format!("host: {m}")))?;
                Ok(h)
            }
            (None, Some(p)) => Ok(p.fqdn.clone()),
            (None, None) => Err(self.err(
                self.name_span.clone(),
                "host: required when the check runs without a pool (pools = [])",
            )),
        }
    }

    /// The endpoints of the two users a kind between users (`kind`) runs between, and
    /// the target label (the second user's address of record).
    pub fn pair(&self, kind: &str) -> Result<Pair, BuildError> {
        let (Some(from), Some(to)) = (self.user, self.peer) else {
            return Err(
                self.err(self.name_span.clone(), &format!("from: {kind} runs between two test users"))
            );
        };
        Ok(Pair { from: Box::new(self.endpoint_of(from)?), to: Box::new(self.endpoint_of(to)?) })
    }

    /// The registered endpoint `user` needs (its planned pool's FQDN and TLS options).
    pub fn endpoint_of(
        &self,
        user: &crate::model::users::User,
    ) -> Result<crate::ua::endpoint::EndpointSpec, BuildError> {
        let pool = self
            .pools
            .iter()
            .find(|p| p.name == user.pool)
            .ok_or_else(|| self.err(self.name_span.clone(), "users: a user's pool is unknown"))?;
        let pool_cx = BuildCx { pool: Some(pool), ..self.clone() };
        Ok(crate::ua::endpoint::EndpointSpec {
            user: user.clone(),
            registrar: pool.fqdn.clone(),
            opts: pool_cx.tls_options(&TlsKeys::default())?,
            pools: self.pools.to_vec(),
        })
    }

    /// The endpoint of the user a per-user kind runs as.
    pub fn endpoint_spec(&self) -> Result<crate::ua::endpoint::EndpointSpec, BuildError> {
        let user = self
            .user
            .ok_or_else(|| self.err(self.name_span.clone(), "users: the kind runs as test users"))?;
        self.endpoint_of(user)
    }

    /// `transport`: udp, tcp or tls (any case).
    pub fn transport(&self, t: &Spanned<String>) -> Result<crate::sip::message::Transport, BuildError> {
        crate::sip::message::Transport::parse(t.get_ref()).ok_or_else(|| {
            self.err(
                t.span(),
                &format!("transport: {:?} is not one of udp, tcp, tls", t.get_ref().to_ascii_lowercase()),
            )
        })
    }

    /// The target port, required.
    pub fn port(&self, port: Option<&Spanned<u16>>) -> Result<u16, BuildError> {
        match port {
            Some(p) if *p.get_ref() == 0 => Err(self.err(p.span(), "port: must be 1-65535")),
            Some(p) => Ok(*p.get_ref()),
            None => Err(self
                .err(self.name_span.clone(), &format!("port: required for kind \"{}\"", self.kind.as_str()))),
        }
    }

    /// The TLS options of the instance: the check's `tls_min_version`, else the pool's,
    /// else 1.2.
    pub fn tls_options(&self, keys: &TlsKeys) -> Result<TlsOptions, BuildError> {
        let min_version = match &keys.tls_min_version {
            Some(v) => parse_tls_version(v).map_err(|m| self.err(v.span(), &m))?,
            None => self.pool.and_then(|p| p.tls_min_version).unwrap_or(TlsVersion::V1_2),
        };
        Ok(TlsOptions {
            min_version,
            skip_verify: keys.tls_skip_verify.as_ref().is_some_and(|v| *v.get_ref()),
            min_days_valid: keys.min_days_valid.as_ref().map(|v| *v.get_ref()),
        })
    }

    /// `expect_status`: codes within `range`; empty when not given (any 2xx).
    pub fn status_codes(
        &self,
        v: Option<&Spanned<Vec<u16>>>,
        range: std::ops::RangeInclusive<u16>,
        what: &str,
    ) -> Result<Vec<u16>, BuildError> {
        let Some(v) = v else { return Ok(Vec::new()) };
        if let Some(bad) = v.get_ref().iter().find(|c| !range.contains(*c)) {
            return Err(self.err(v.span(), &format!("expect_status: {bad} is not {what}")));
        }
        Ok(v.get_ref().clone())
    }

    /// A record name (`{fqdn}` expanded, trailing dot optional): the absolute name and
    /// its text without the dot (the `target` label).
    pub fn record_name(
        &self,
        record: &Spanned<String>,
    ) -> Result<(hickory_proto::rr::Name, String), BuildError> {
        let text = self.expand(record, "record")?.trim_end_matches('.').to_owned();
        let name = hickory_proto::rr::Name::from_ascii(format!("{text}."))
            .map_err(|e| self.err(record.span(), &format!("record: {text:?} is not a DNS name: {e}")))?;
        Ok((name, text))
    }

    /// `expect_pool`, which must name a pool of the configuration.
    pub fn expect_pool(&self, pool: Option<&Spanned<String>>) -> Result<Option<String>, BuildError> {
        match pool {
            Some(p) if !self.pools.iter().any(|x| &x.name == p.get_ref()) => {
                Err(self.err(p.span(), &format!("expect_pool: unknown pool {:?}", p.get_ref())))
            }
            p => Ok(p.map(|p| p.get_ref().clone())),
        }
    }
}

/// Every metric family the kinds declare, each once, in the order of the kind list.
pub fn measures() -> Vec<&'static Measure> {
    let mut all: Vec<&'static Measure> = Vec::new();
    for m in Kind::ALL.iter().flat_map(|k| k.measures()) {
        if !all.iter().any(|a| a.name == m.name) {
            all.push(m);
        }
    }
    all
}

/// Whether a DNS answer answers at all: NOERROR with at least one record of the type
/// asked; otherwise the reason (`dns_nxdomain`, `dns_servfail`, `dns_refused`,
/// `dns_error`, `dns_no_answer`) and a detail naming the server.
pub fn answered(answer: &crate::net::dns::Answer) -> Result<(), Failure> {
    use hickory_proto::op::ResponseCode;
    let rcode_reason = match answer.rcode {
        ResponseCode::NoError => None,
        ResponseCode::NXDomain => Some(FailureReason::DnsNxdomain),
        ResponseCode::ServFail => Some(FailureReason::DnsServfail),
        ResponseCode::Refused => Some(FailureReason::DnsRefused),
        _ => Some(FailureReason::DnsError),
    };
    if let Some(r) = rcode_reason {
        return Err(Failure::new(r, format!("{} answered {}", answer.server, answer.rcode)));
    }
    if answer.records.is_empty() {
        return Err(Failure::new(
            FailureReason::DnsNoAnswer,
            format!("{} answered NOERROR with no record of the type asked", answer.server),
        ));
    }
    Ok(())
}

/// The TLS keys of the kinds that speak TLS, as [`BuildCx::tls_options`] reads them.
#[derive(Debug, Default)]
pub struct TlsKeys<'a> {
    /// Lowest TLS version (overrides the pool's).
    pub tls_min_version: Option<&'a Spanned<String>>,
    /// Record the chain but do not verify it.
    pub tls_skip_verify: Option<&'a Spanned<bool>>,
    /// Fail with `cert_expiring` when the leaf expires within this many days.
    pub min_days_valid: Option<&'a Spanned<u32>>,
}

/// `tls_min_version` of a check or a pool.
pub fn parse_tls_version(v: &Spanned<String>) -> Result<TlsVersion, String> {
    TlsVersion::parse(v.get_ref()).ok_or_else(|| {
        format!("tls_min_version: {:?} is not one of \"1.0\", \"1.1\", \"1.2\", \"1.3\"", v.get_ref())
    })
}
