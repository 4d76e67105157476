//! `/metrics`: the current generation's results, encoded at scrape time.
//!
//! Nothing is registered ahead of time: each scrape encodes the current generation, so an
//! instance removed by a reload cannot leave a stale series behind, and the constant
//! `agent.labels` always match the running configuration.
//!
//! Two encoders share the work:
//!
//! - **Per-instance families** (`coexist_probe_*`, `coexist_dns_answers`) are most of the
//!   output: about twenty samples per instance that all carry the same six or seven
//!   labels. Each slot holds its label block rendered and escaped once, at load
//!   ([`crate::config::labels::render_labels`]); a scrape writes sample lines around it. With 10,000 instances
//!   this is several times faster than encoding every label of every sample through a
//!   generic label-set encoder (see `docs/performance.md`). The `# HELP`/`# TYPE`
//!   headers of these families still come from prometheus-client, per format.
//! - **Everything else** (pools, build, reload, scheduler) is encoded by
//!   prometheus-client's collector interface.
//!
//! The body is produced in chunks so that a scrape of a large agent does not hold the
//! whole exposition in memory at once.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::config::labels::escape_label_value;
use crate::config::CheckInstance;
use crate::kinds::{FailureReason, Measure};
use crate::run::results::{
    Generation, Histogram, InstanceState, ReloadStatus, Store, DURATION_BUCKETS, LAG_BUCKETS,
};

/// Content type of the Prometheus text format.
pub const TEXT_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
/// Content type of OpenMetrics text.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Size at which a chunk of the body is handed on.
const CHUNK: usize = 256 * 1024;

/// A per-instance metric family: one every instance has, or one a kind declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// A family a kind declares ([`crate::kinds::CheckKind::MEASURES`]).
    Measured(&'static Measure),
    Success,
    LastDuration,
    Durations,
    Phases,
    Runs,
    Failures,
    ConsecutiveFailures,
    LastRun,
    TlsVersion,
    CertNotAfter,
    ChainNotAfter,
    CertInfo,
    PointsTo,
    UserHome,
    Interval,
    LastChange,
}

/// The families every instance has, in exposition order: (family, name, help, type).
/// The kinds' own families follow them ([`instance_families`]).
const CORE_FAMILIES: &[(Family, &str, &str, MetricType)] = &[
    (
        Family::Success,
        "coexist_probe_success",
        "1 if the last probe passed, 0 if it failed.",
        MetricType::Gauge,
    ),
    (
        Family::LastDuration,
        "coexist_probe_last_duration_seconds",
        "Duration of the last probe.",
        MetricType::Gauge,
    ),
    (Family::Durations, "coexist_probe_duration_seconds", "Probe durations.", MetricType::Histogram),
    (
        Family::Phases,
        "coexist_probe_phase_seconds",
        "Duration of each phase of the last probe (resolve, connect, tls, request).",
        MetricType::Gauge,
    ),
    (Family::Runs, "coexist_probe_runs", "Probes run.", MetricType::Counter),
    (
        Family::Failures,
        "coexist_probe_failures",
        "Failed probes by reason (a reason appears once it has occurred).",
        MetricType::Counter,
    ),
    (
        Family::ConsecutiveFailures,
        "coexist_probe_consecutive_failures",
        "Failed probes since the last success.",
        MetricType::Gauge,
    ),
    (
        Family::LastRun,
        "coexist_probe_last_run_timestamp_seconds",
        "Unix time at which the last probe finished.",
        MetricType::Gauge,
    ),
    (
        Family::TlsVersion,
        "coexist_tls_version_info",
        "1 for the TLS version the last handshake negotiated.",
        MetricType::Gauge,
    ),
    (
        Family::CertNotAfter,
        "coexist_tls_cert_not_after_timestamp_seconds",
        "NotAfter of the leaf certificate the peer sent last (unix time).",
        MetricType::Gauge,
    ),
    (
        Family::ChainNotAfter,
        "coexist_tls_chain_earliest_not_after_timestamp_seconds",
        "Earliest NotAfter in the chain the peer sent last (unix time).",
        MetricType::Gauge,
    ),
    (
        Family::CertInfo,
        "coexist_tls_cert_info",
        "1, labelled with the leaf certificate the peer sent last (a SHA-1 signature shows here).",
        MetricType::Gauge,
    ),
    (
        Family::PointsTo,
        "coexist_dns_points_to",
        "1 for the pool the record points at now (unknown: none of the configured pools).",
        MetricType::Gauge,
    ),
    (
        Family::UserHome,
        "coexist_user_home",
        "1 for the pool the test user registered on (unknown: none of the configured pools); its planned pool is the pool label.",
        MetricType::Gauge,
    ),
    (
        Family::Interval,
        "coexist_check_interval_seconds",
        "Configured probe interval of the instance (stale: no run finished for 3 intervals).",
        MetricType::Gauge,
    ),
    (
        Family::LastChange,
        "coexist_probe_last_change_timestamp_seconds",
        "Unix time when the instance last changed between passing and failing (or first ran).",
        MetricType::Gauge,
    ),
];

/// The per-instance families in exposition order: the core ones, then every family a
/// kind declares (each once).
fn instance_families() -> &'static [(Family, &'static str, &'static str, MetricType)] {
    static ALL: std::sync::OnceLock<Vec<(Family, &str, &str, MetricType)>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        let measured = crate::kinds::measures()
            .into_iter()
            .map(|m| (Family::Measured(m), m.name, m.help, MetricType::Gauge));
        CORE_FAMILIES.iter().copied().chain(measured).collect()
    })
}

/// Encodes the store into one string (tests, benchmarks, small agents).
pub fn encode(store: &Store, openmetrics: bool) -> Result<String, fmt::Error> {
    let mut out = String::new();
    encode_chunks(store, openmetrics, |chunk| {
        out.push_str(&chunk);
        true
    })?;
    Ok(out)
}

/// Encodes the store, handing the body to `sink` in chunks of about 256 KiB. `sink`
/// returns false to stop early (the client went away).
pub fn encode_chunks(
    store: &Store,
    openmetrics: bool,
    mut sink: impl FnMut(String) -> bool,
) -> Result<(), fmt::Error> {
    let generation = store.current();
    let labels: Vec<(Cow<'static, str>, Cow<'static, str>)> = generation
        .config
        .agent
        .labels
        .iter()
        .map(|(k, v)| (Cow::Owned(k.clone()), Cow::Owned(v.clone())))
        .collect();
    let headers = instance_headers(openmetrics)?;
    let headers = headers.as_slice();
    let units = crate::run::results::units(&generation.slots);
    let mut out = String::with_capacity(CHUNK + 4096);
    let mut w = Writer { out: &mut out };
    let mut flush = |out: &mut String, force: bool| -> bool {
        if out.len() >= CHUNK || (force && !out.is_empty()) {
            let chunk = std::mem::replace(out, String::with_capacity(CHUNK + 4096));
            return sink(chunk);
        }
        true
    };
    // A family a kind declares is walked only when an instance of such a kind is loaded:
    // a configuration of tcp checks does not visit every instance for SIP measurements.
    let kinds: std::collections::HashSet<crate::kinds::Kind> =
        generation.slots.iter().map(|s| s.instance.spec.kind()).collect();
    let declared = |m: &Measure| kinds.iter().any(|k| k.measures().iter().any(|d| d.name == m.name));
    for (f, header) in headers.iter().enumerate() {
        w.out.push_str(header);
        if let (Family::Measured(m), _, _, _) = instance_families()[f] {
            if !declared(m) {
                continue;
            }
        }
        for (i, unit) in &units {
            let labels = unit.labels.as_deref().unwrap_or(&generation.slots[*i].labels);
            write_instance_family(&mut w, f, labels, &generation.slots[*i].instance, &unit.state);
            if !flush(w.out, false) {
                return Ok(());
            }
        }
    }
    let mut registry = Registry::with_labels(labels.into_iter());
    registry.register_collector(Box::new(AgentFamilies {
        generation: generation.clone(),
        units,
        reload: store.reload_status(),
        lag: store.lag(),
        users: store.endpoints.statuses(),
    }));
    if openmetrics {
        prometheus_client::encoding::text::encode(w.out, &registry)?;
    } else {
        prometheus_client::encoding::prometheus_text::encode(w.out, &registry)?;
    }
    flush(w.out, true);
    Ok(())
}

/// `# HELP`/`# TYPE` of each per-instance family, as prometheus-client writes them in
/// the chosen format (counter names differ between the two). They never change, so
/// they are encoded once per format and kept.
fn instance_headers(openmetrics: bool) -> Result<&'static Vec<String>, fmt::Error> {
    static TEXT: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    static OPENMETRICS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let cell = if openmetrics { &OPENMETRICS } else { &TEXT };
    if let Some(h) = cell.get() {
        return Ok(h);
    }
    let headers = encode_headers(openmetrics)?;
    Ok(cell.get_or_init(|| headers))
}

fn encode_headers(openmetrics: bool) -> Result<Vec<String>, fmt::Error> {
    #[derive(Debug)]
    struct Descriptor(&'static str, &'static str, MetricType);
    impl Collector for Descriptor {
        fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
            encoder.encode_descriptor(self.0, self.1, None, self.2).map(|_| ())
        }
    }
    instance_families()
        .iter()
        .map(|(_, name, help, kind)| {
            let mut registry = Registry::default();
            registry.register_collector(Box::new(Descriptor(name, help, *kind)));
            let mut s = String::new();
            if openmetrics {
                prometheus_client::encoding::text::encode_registry(&mut s, &registry)?;
            } else {
                prometheus_client::encoding::prometheus_text::encode(&mut s, &registry)?;
            }
            Ok(s)
        })
        .collect()
}

struct Writer<'a> {
    out: &'a mut String,
}

impl Writer<'_> {
    /// `name{labels[,k="v"]} value\n`; `extra` values are plain label values that
    /// need no escaping (phase, reason, version and bucket names), or with an empty key
    /// a pre-rendered `,k="v",...` run.
    fn sample(&mut self, name: &str, suffix: &str, labels: &str, extra: Option<(&str, &str)>, value: Value) {
        let o = &mut *self.out;
        o.push_str(name);
        o.push_str(suffix);
        o.push('{');
        o.push_str(labels);
        match extra {
            // A pre-rendered, escaped `,k="v",...` run of labels.
            Some(("", raw)) => o.push_str(raw),
            Some((k, v)) => {
                o.push(',');
                o.push_str(k);
                o.push_str("=\"");
                o.push_str(v);
                o.push('"');
            }
            None => {}
        }
        o.push_str("} ");
        match value {
            Value::F(v) => o.push_str(dtoa::Buffer::new().format(v)),
            Value::U(v) => o.push_str(itoa::Buffer::new().format(v)),
        }
        o.push('\n');
    }
}

#[derive(Clone, Copy)]
enum Value {
    F(f64),
    U(u64),
}

fn unix(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Bucket bounds as label values, as Prometheus' Go client writes them.
const DURATION_LE: [&str; DURATION_BUCKETS.len()] =
    ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10"];

fn write_instance_family(
    w: &mut Writer<'_>,
    family: usize,
    labels: &str,
    instance: &CheckInstance,
    st: &InstanceState,
) {
    let (family, name, _, _) = instance_families()[family];
    let last = st.last.as_ref();
    let tls = last.and_then(|l| l.outcome.tls.as_deref());
    match family {
        Family::Success => {
            if let Some(l) = last {
                w.sample(name, "", labels, None, Value::U(l.outcome.result.is_ok() as u64));
            }
        }
        Family::LastDuration => {
            if let Some(l) = last {
                w.sample(name, "", labels, None, Value::F(l.duration.as_secs_f64()));
            }
        }
        Family::Durations => {
            if st.runs == 0 {
                return;
            }
            let mut acc = 0;
            for (le, n) in DURATION_LE.iter().zip(st.durations.counts.iter()) {
                acc += n;
                w.sample(name, "_bucket", labels, Some(("le", le)), Value::U(acc));
            }
            w.sample(name, "_bucket", labels, Some(("le", "+Inf")), Value::U(st.durations.count()));
            w.sample(name, "_sum", labels, None, Value::F(st.durations.sum));
            w.sample(name, "_count", labels, None, Value::U(st.durations.count()));
        }
        Family::Phases => {
            for (phase, d) in last.map(|l| l.outcome.phases.as_slice()).unwrap_or_default() {
                w.sample(name, "", labels, Some(("phase", phase.as_str())), Value::F(d.as_secs_f64()));
            }
        }
        Family::Runs => w.sample(name, "_total", labels, None, Value::U(st.runs)),
        Family::Failures => {
            for (r, n) in FailureReason::ALL.iter().zip(st.failures.iter()) {
                if *n > 0 {
                    w.sample(name, "_total", labels, Some(("reason", r.as_str())), Value::U(*n));
                }
            }
        }
        Family::ConsecutiveFailures => {
            if last.is_some() {
                w.sample(name, "", labels, None, Value::U(st.consecutive_failures));
            }
        }
        Family::Interval => w.sample(name, "", labels, None, Value::F(instance.interval.as_secs_f64())),
        Family::LastChange => {
            if let Some(t) = st.last_change {
                w.sample(name, "", labels, None, Value::F(unix(t)));
            }
        }
        Family::LastRun => {
            if let Some(l) = last {
                w.sample(name, "", labels, None, Value::F(unix(l.at)));
            }
        }
        Family::TlsVersion => {
            if let Some(v) = tls.and_then(|t| t.version) {
                w.sample(name, "", labels, Some(("version", v.as_str())), Value::U(1));
            }
        }
        Family::CertNotAfter => {
            if let Some(leaf) = tls.and_then(|t| t.leaf()) {
                w.sample(name, "", labels, None, Value::F(leaf.not_after as f64));
            }
        }
        Family::ChainNotAfter => {
            if let Some(t) = tls.and_then(|t| t.earliest_not_after()) {
                w.sample(name, "", labels, None, Value::F(t as f64));
            }
        }
        Family::CertInfo => {
            if let Some(c) = tls.and_then(|t| t.leaf()) {
                let mut extra = String::with_capacity(256);
                for (k, v) in [
                    ("subject", c.subject.as_str()),
                    ("issuer", &c.issuer),
                    ("serial", &c.serial),
                    ("sans", &c.sans),
                    ("signature_algorithm", &c.signature_algorithm),
                    ("fingerprint_sha256", &c.fingerprint_sha256),
                ] {
                    extra.push(',');
                    extra.push_str(k);
                    extra.push_str("=\"");
                    escape_label_value(&mut extra, v);
                    extra.push('"');
                }
                w.sample(name, "", labels, Some(("", &extra)), Value::U(1));
            }
        }
        Family::UserHome => {
            let (Some(user), Some(p)) =
                (instance.spec.homed_user(), last.and_then(|l| l.outcome.points_to.as_deref()))
            else {
                return;
            };
            let mut extra = String::from(",user=\"");
            escape_label_value(&mut extra, user);
            extra.push_str("\",home_pool=\"");
            escape_label_value(&mut extra, p);
            extra.push('"');
            w.sample(name, "", labels, Some(("", &extra)), Value::U(1));
        }
        Family::Measured(m) => {
            let Some(s) = last.and_then(|l| l.outcome.measured_of(m)) else {
                return;
            };
            // Whole numbers (a status code, a count) are written as integers.
            let value = if s.value.fract() == 0.0 && (0.0..9.0e15).contains(&s.value) {
                Value::U(s.value as u64)
            } else {
                Value::F(s.value)
            };
            match (m.label, s.label.as_deref()) {
                (Some(k), Some(v)) => {
                    let mut extra = String::with_capacity(k.len() + v.len() + 4);
                    extra.push(',');
                    extra.push_str(k);
                    extra.push_str("=\"");
                    escape_label_value(&mut extra, v);
                    extra.push('"');
                    w.sample(name, "", labels, Some(("", &extra)), value);
                }
                (None, None) => w.sample(name, "", labels, None, value),
                // A sample without the family's label, or with one it does not declare,
                // would not fit the family: left out (a debug build stops at it).
                _ => debug_assert!(false, "{name}: a sample's label does not match the declaration"),
            }
        }
        Family::PointsTo if instance.spec.homed_user().is_some() => {}
        Family::PointsTo => {
            if let Some(p) = last.and_then(|l| l.outcome.points_to.as_deref()) {
                let mut extra = String::from(",points_to=\"");
                escape_label_value(&mut extra, p);
                extra.push('"');
                w.sample(name, "", labels, Some(("", &extra)), Value::U(1));
            }
        }
    }
}

/// Pool rollups and agent-level families, through prometheus-client.
struct AgentFamilies {
    generation: Arc<Generation>,
    units: Vec<(usize, crate::run::results::SeriesState)>,
    reload: ReloadStatus,
    lag: Histogram<{ LAG_BUCKETS.len() + 1 }>,
    users: Vec<crate::ua::endpoint::EndpointStatus>,
}

impl fmt::Debug for AgentFamilies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentFamilies").field("units", &self.units.len()).finish()
    }
}

impl Collector for AgentFamilies {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        self.encode_pools(&mut encoder)?;
        self.encode_interop(&mut encoder)?;
        self.encode_agent(&mut encoder)
    }
}

impl AgentFamilies {
    fn encode_pools(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let g = &self.generation;
        let mut pools = crate::output::rollup::pool_rollups(&g.config, &g.slots, &self.units);
        let sites = crate::output::rollup::site_rollups(&g.config, &pools, &g.slots, &self.units);
        pools.sort_by(|a, b| a.name.cmp(&b.name));
        if !sites.is_empty() {
            {
                let mut e = encoder.encode_descriptor(
                    "coexist_site_up",
                    "1 if every pool of the topology site is up (topology_site: the site of the pools, not the agent's own site label).",
                    None,
                    MetricType::Gauge,
                )?;
                for s in &sites {
                    e.encode_family(&[("topology_site", s.name.as_str())].as_slice())?
                        .encode_gauge(&(s.up as i64))?;
                }
            }
            {
                let mut e = encoder.encode_descriptor(
                    "coexist_pool_site_info",
                    "1 for each pool with its topology site: joins the pool label of instance series to topology_site.",
                    None,
                    MetricType::Gauge,
                )?;
                for p in g.config.pools.iter().filter(|p| p.site.is_some()) {
                    let site = p.site.as_deref().unwrap_or_default();
                    e.encode_family(&[("pool", p.name.as_str()), ("topology_site", site)].as_slice())?
                        .encode_gauge(&1)?;
                }
            }
        }
        if sites.iter().any(|s| s.administrable.is_some()) {
            let mut e = encoder.encode_descriptor(
                "coexist_site_administrable",
                "1 if every administration check (purpose = \"admin\") of the topology site passed its last probe; absent for a site without any.",
                None,
                MetricType::Gauge,
            )?;
            for s in &sites {
                if let Some(a) = s.administrable {
                    e.encode_family(&[("topology_site", s.name.as_str())].as_slice())?
                        .encode_gauge(&(a as i64))?;
                }
            }
        }
        {
            let mut e = encoder.encode_descriptor(
                "coexist_pool_up",
                "1 if every check instance of the pool passed its last probe (0 while any is failing or has not run).",
                None,
                MetricType::Gauge,
            )?;
            for p in &pools {
                e.encode_family(&[("pool", p.name.as_str()), ("role", p.role.as_str())].as_slice())?
                    .encode_gauge(&(p.up as i64))?;
            }
        }
        let mut e = encoder.encode_descriptor(
            "coexist_pool_checks",
            "Check instances of the pool by state of their last probe (passing, failing, pending = not run yet, stale = no run for 3 intervals).",
            None,
            MetricType::Gauge,
        )?;
        for p in &pools {
            for (state, n) in
                [("passing", p.passing), ("failing", p.failing), ("pending", p.pending), ("stale", p.stale)]
            {
                e.encode_family(
                    &[("pool", p.name.as_str()), ("role", p.role.as_str()), ("state", state)].as_slice(),
                )?
                .encode_gauge(&(n as i64))?;
            }
        }
        Ok(())
    }

    fn encode_interop(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let g = &self.generation;
        let cells = crate::output::rollup::interop(&g.config, &g.slots, &self.units);
        if !cells.is_empty() {
            for (name, help, value) in [
                (
                    "coexist_interop_up",
                    "1 if pairs of test users ran from users registered on from_pool to users registered on to_pool (kind: the check kind) and every one passed its last run.",
                    (|c: &crate::output::rollup::InteropCell| c.state == crate::output::rollup::CellState::Up)
                        as fn(&crate::output::rollup::InteropCell) -> bool,
                ),
                (
                    "coexist_interop_untested",
                    "1 if no fresh pair result proves or disproves the cell (its planned users are registered elsewhere or not at all, or its pairs have not run); 0 when it is up or down.",
                    |c| c.state == crate::output::rollup::CellState::Untested,
                ),
            ] {
                let mut e = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
                for c in &cells {
                    e.encode_family(
                        &[("kind", c.kind.as_str()), ("from_pool", c.from_pool.as_str()), ("to_pool", c.to_pool.as_str())]
                            .as_slice(),
                    )?
                    .encode_gauge(&(value(c) as i64))?;
                }
            }
        }
        if self.users.is_empty() {
            return Ok(());
        }
        let mut e = encoder.encode_descriptor(
            "coexist_user_registered",
            "1 while the test user's endpoint is registered (kept for the checks that need it); the last failure is in /api/v1/status.",
            None,
            MetricType::Gauge,
        )?;
        for u in &self.users {
            e.encode_family(&[("user", u.user.as_str()), ("pool", u.pool.as_str())].as_slice())?
                .encode_gauge(&(u.registered as i64))?;
        }
        Ok(())
    }

    fn encode_agent(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        encoder
            .encode_descriptor(
                "coexist_build_info",
                "Build of the running agent; always 1.",
                None,
                MetricType::Gauge,
            )?
            .encode_family(
                &[
                    ("version", env!("CARGO_PKG_VERSION")),
                    ("revision", env!("COEXISTD_REVISION")),
                    ("branch", env!("COEXISTD_BRANCH")),
                    ("rustversion", env!("COEXISTD_RUSTVERSION")),
                ]
                .as_slice(),
            )?
            .encode_gauge(&1i64)?;
        encoder
            .encode_descriptor(
                "coexist_config_last_reload_successful",
                "1 if the last configuration (re)load succeeded, 0 after a rejected reload.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&(self.reload.successful as i64))?;
        encoder
            .encode_descriptor(
                "coexist_config_last_reload_success_timestamp_seconds",
                "Unix time of the last successful configuration load.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&self.reload.success_timestamp)?;
        let buckets = self.lag.buckets(&LAG_BUCKETS);
        encoder
            .encode_descriptor(
                "coexist_scheduler_lag_seconds",
                "How late probes started compared with their schedule (waiting for the concurrency limit included).",
                None,
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabelSet>(self.lag.sum, self.lag.count(), &buckets, None)?;
        encoder
            .encode_descriptor(
                "coexist_check_instances",
                "Check instances this agent runs under the current configuration.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&(self.generation.slots.len() as i64))?;
        let stale = self.units.iter().filter(|(_, u)| u.stale).count();
        encoder
            .encode_descriptor(
                "coexist_stale_instances",
                "Check instances (addresses of each_address ones) whose last run finished more than 3 intervals ago.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&(stale as i64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::labels::render_labels;
    use crate::config::Config;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;

    #[test]
    fn duration_le_labels_match_the_bounds() {
        for (le, b) in DURATION_LE.iter().zip(DURATION_BUCKETS.iter()) {
            assert_eq!(le.parse::<f64>().unwrap(), *b);
        }
    }

    /// The hand-rendered label block must escape exactly as prometheus-client does.
    #[test]
    fn label_escaping_matches_prometheus_client() {
        let tricky = ["plain", "quo\"te", "back\\slash", "new\nline", "ünïcödé", "a=\"b\",c", ""];
        for v in tricky {
            let mut registry = Registry::default();
            let fam: Family<Vec<(String, String)>, Gauge> = Family::default();
            fam.get_or_create(&vec![("target".to_owned(), v.to_owned())]).set(1);
            registry.register("x", "x", fam);
            let mut theirs = String::new();
            prometheus_client::encoding::prometheus_text::encode(&mut theirs, &registry).unwrap();
            let mut ours = String::from("target=\"");
            escape_label_value(&mut ours, v);
            ours.push('"');
            assert!(theirs.contains(&format!("x{{{ours}}} 1\n")), "{v:?}: ours {ours} / theirs {theirs}");
        }
    }

    #[test]
    fn label_block_has_constant_labels_first() {
        let c = Config::parse(
            "[agent]\nlabels = { site = \"hq\", dc = \"a\\\"b\" }\n[[pools]]\nname = \"p\"\nrole = \"new\"\nfqdn = \"p.test\"\n\
             [[checks]]\nname = \"c\"\nkind = \"tcp\"\nport = 1\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            render_labels(&c, &c.instances[0]),
            "dc=\"a\\\"b\",site=\"hq\",pool=\"p\",role=\"new\",check=\"c\",kind=\"tcp\",target=\"p.test:1\""
        );
    }
}
