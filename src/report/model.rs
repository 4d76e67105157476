//! What a report says: the data [`super::build`] gathers, [`super::judge`] decides on,
//! [`super::render`] shows and the JSON carries as it is (schema in `docs/report.md`).

use serde::Serialize;

use super::analysis::{Availability, State};

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// [`super::SCHEMA`].
    pub schema: u32,
    /// Start of the period (RFC 3339).
    pub from: String,
    /// End of the period.
    pub to: String,
    /// The grid's step, seconds.
    pub step_seconds: i64,
    /// Seconds per column of every `strip`.
    pub strip_column_seconds: i64,
    /// Where the data came from.
    pub prometheus: String,
    /// GO / NO-GO and each criterion.
    pub verdict: Verdict,
    /// Topology sites.
    pub sites: Vec<SiteReport>,
    /// Pools.
    pub pools: Vec<PoolReport>,
    /// Matrix cells between users' pools.
    pub interop: Vec<CellReport>,
    /// Test users.
    pub users: Vec<UserReport>,
    /// Where each record pointed.
    pub records: Vec<RecordReport>,
    /// Certificates, soonest expiry first.
    pub certificates: Vec<CertReport>,
    /// Endpoints whose TLS version or signature algorithm changed in the period.
    pub tls_changes: Vec<TlsChange>,
    /// What reported when.
    pub coverage: Coverage,
}

/// The decision and why.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// Every criterion holds.
    pub go: bool,
    /// Each criterion.
    pub criteria: Vec<Criterion>,
}

/// One criterion: what was measured against what.
#[derive(Debug, Clone, Serialize)]
pub struct Criterion {
    /// What it asks.
    pub name: String,
    /// The measured value, as read.
    pub measured: String,
    /// The threshold, as read.
    pub threshold: String,
    /// Whether it holds.
    pub pass: bool,
}

/// A span of time.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Span {
    /// Start (RFC 3339).
    pub start: String,
    /// End.
    pub end: String,
    /// Seconds.
    pub duration_seconds: i64,
}

/// A pool DOWN for a while.
#[derive(Debug, Clone, Serialize)]
pub struct Incident {
    /// When.
    #[serde(flatten)]
    pub span: Span,
    /// The checks that failed in it and their reasons (`check: reason`).
    pub causes: Vec<String>,
}

/// A pool over the period.
#[derive(Debug, Clone, Serialize)]
pub struct PoolReport {
    /// Pool name.
    pub pool: String,
    /// `legacy` or `new`.
    pub role: String,
    /// Its topology site.
    pub topology_site: Option<String>,
    /// Time up / down / unknown.
    #[serde(flatten)]
    pub availability: Availability,
    /// Its DOWN periods.
    pub incidents: Vec<Incident>,
    /// Its longest time without data, seconds.
    pub longest_gap_seconds: i64,
    /// The strip chart's columns.
    pub strip: Vec<State>,
}

/// A topology site: DOWN while any of its pools is.
#[derive(Debug, Clone, Serialize)]
pub struct SiteReport {
    /// The site.
    pub topology_site: String,
    /// Its pools.
    pub pools: Vec<String>,
    /// Time up / down / unknown.
    #[serde(flatten)]
    pub availability: Availability,
    /// Its DOWN periods.
    pub incidents: Vec<Span>,
    /// The strip chart's columns.
    pub strip: Vec<State>,
}

/// A cell of an interoperability matrix.
#[derive(Debug, Clone, Serialize)]
pub struct CellReport {
    /// The pair kind (`sip_im`, `sip_presence`, `sip_call`, `sip_group_im`).
    pub kind: String,
    /// The senders' pool.
    pub from_pool: String,
    /// The receivers' pool.
    pub to_pool: String,
    /// Time up / down / unknown (untested steps are unknown).
    #[serde(flatten)]
    pub availability: Availability,
    /// Its DOWN periods.
    pub incidents: Vec<Span>,
    /// Median delivery (set-up) time over the period of the cell's slowest pair.
    pub p50_seconds: Option<f64>,
    /// 95th percentile, likewise.
    pub p95_seconds: Option<f64>,
    /// The strip chart's columns.
    pub strip: Vec<State>,
}

/// A test user over the period.
#[derive(Debug, Clone, Serialize)]
pub struct UserReport {
    /// The user.
    pub user: String,
    /// Registered (its endpoint's registration) up / down / unknown.
    pub registered: Availability,
    /// Where it was homed and when that changed.
    pub moves: Vec<Move>,
}

/// A change of a user's home pool.
#[derive(Debug, Clone, Serialize)]
pub struct Move {
    /// When it was first seen on the new pool.
    pub at: String,
    /// The pool before.
    pub from: String,
    /// The pool after.
    pub to: String,
    /// The plan homed it there at that time.
    pub planned: bool,
}

/// Where one record pointed.
#[derive(Debug, Clone, Serialize)]
pub struct RecordReport {
    /// The check.
    pub check: String,
    /// The record (the check's target).
    pub record: String,
    /// The agent that resolved it (Prometheus' `instance`): agents may be answered
    /// differently.
    pub agent: String,
    /// What it pointed at, when.
    pub segments: Vec<Segment>,
    /// Its changes.
    pub events: Vec<RecordEvent>,
}

/// A period a record pointed at one pool.
#[derive(Debug, Clone, Serialize)]
pub struct Segment {
    /// When.
    #[serde(flatten)]
    pub span: Span,
    /// The pool (`unknown`: none of the configured pools).
    pub points_to: String,
}

/// A record moving.
#[derive(Debug, Clone, Serialize)]
pub struct RecordEvent {
    /// When the new target was first seen.
    pub at: String,
    /// Before.
    pub from: String,
    /// After.
    pub to: String,
    /// `cutover` (to a new pool), `rollback` (to a legacy pool), `change`.
    pub kind: String,
    /// The record's check passed after it (its `expect_pool`, `expect` held).
    pub planned: bool,
}

/// A certificate seen.
#[derive(Debug, Clone, Serialize)]
pub struct CertReport {
    /// Pool.
    pub pool: String,
    /// Check.
    pub check: String,
    /// Target.
    pub target: String,
    /// Address (`each_address`), empty otherwise.
    pub address: String,
    /// Subjects seen for it in the period, the one seen last first.
    pub subjects: Vec<String>,
    /// NotAfter of the last certificate (RFC 3339).
    pub not_after: String,
    /// Days from the period's end to NotAfter.
    pub days_left: f64,
}

/// An endpoint whose TLS changed.
#[derive(Debug, Clone, Serialize)]
pub struct TlsChange {
    /// Pool.
    pub pool: String,
    /// Check.
    pub check: String,
    /// Target.
    pub target: String,
    /// Address.
    pub address: String,
    /// Versions seen.
    pub versions: Vec<String>,
    /// Signature algorithms seen.
    pub signature_algorithms: Vec<String>,
}

/// What reported when.
#[derive(Debug, Clone, Serialize)]
pub struct Coverage {
    /// Each agent (Prometheus' job and instance) and when it had data.
    pub agents: Vec<AgentCoverage>,
    /// When no agent had data.
    pub no_data: Vec<Span>,
    /// Each check: first and last seen.
    pub checks: Vec<CheckSpan>,
    /// Successful configuration loads in the period.
    pub reloads: Vec<String>,
}

/// One agent's reporting.
#[derive(Debug, Clone, Serialize)]
pub struct AgentCoverage {
    /// Prometheus' `job`.
    pub job: String,
    /// Prometheus' `instance`.
    pub instance: String,
    /// Seconds with data.
    pub reporting_seconds: i64,
    /// Its gaps.
    pub gaps: Vec<Span>,
}

/// When a check existed.
#[derive(Debug, Clone, Serialize)]
pub struct CheckSpan {
    /// The check.
    pub check: String,
    /// First step it was seen.
    pub first_seen: String,
    /// Last step.
    pub last_seen: String,
}
