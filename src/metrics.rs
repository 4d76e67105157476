//! `/metrics`: the current generation's results encoded at scrape time.
//!
//! Nothing is registered ahead of time: each scrape builds the families from the
//! results store, so a removed instance cannot leave a stale series behind, and the
//! constant `agent.labels` always match the running configuration. prometheus-client
//! does the encoding (Prometheus text 0.0.4, or OpenMetrics when asked).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, LabelSetEncoder, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::probe::FailureReason;
use crate::state::{
    Generation, Histogram, InstanceState, ReloadStatus, Store, DURATION_BUCKETS, LAG_BUCKETS,
};

/// Content type of the Prometheus text format.
pub const TEXT_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
/// Content type of OpenMetrics text.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Encodes the store; OpenMetrics when `openmetrics`, else Prometheus text 0.0.4.
pub fn encode(store: &Store, openmetrics: bool) -> Result<String, fmt::Error> {
    let generation = store.current();
    let labels: Vec<(Cow<'static, str>, Cow<'static, str>)> = generation
        .config
        .agent
        .labels
        .iter()
        .map(|(k, v)| (Cow::Owned(k.clone()), Cow::Owned(v.clone())))
        .collect();
    let mut registry = Registry::with_labels(labels.into_iter());
    let states = generation.slots.iter().map(|s| s.state()).collect();
    registry.register_collector(Box::new(Snapshot {
        generation,
        states,
        reload: store.reload_status(),
        lag: store.lag(),
    }));
    let mut out = String::with_capacity(1 << 16);
    if openmetrics {
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    }
    Ok(out)
}

/// Per-instance labels plus at most one extra (`phase`, `reason`).
struct Labels<'a> {
    base: [(&'static str, &'a str); 5],
    extra: Option<(&'static str, &'a str)>,
}

impl EncodeLabelSet for Labels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), fmt::Error> {
        self.base.as_slice().encode(encoder)?;
        if let Some(e) = self.extra {
            [e].as_slice().encode(encoder)?;
        }
        Ok(())
    }
}

struct Snapshot {
    generation: Arc<Generation>,
    states: Vec<InstanceState>,
    reload: ReloadStatus,
    lag: Histogram<{ LAG_BUCKETS.len() + 1 }>,
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("instances", &self.states.len())
            .finish()
    }
}

type NoExemplar = Option<&'static Exemplar<NoLabelSet, f64>>;

fn gauge(e: &mut MetricEncoder<'_>, labels: &Labels<'_>, v: f64) -> fmt::Result {
    e.encode_family(labels)?.encode_gauge(&v)
}

fn counter(e: &mut MetricEncoder<'_>, labels: &Labels<'_>, v: u64) -> fmt::Result {
    e.encode_family(labels)?
        .encode_counter::<NoLabelSet, _, f64>(&v, None as NoExemplar)
}

fn unix(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Snapshot {
    fn labels(&self, i: usize) -> Labels<'_> {
        let inst = &self.generation.slots[i].instance;
        Labels {
            base: [
                ("pool", inst.pool_name()),
                ("role", inst.role_name()),
                ("check", inst.check.as_str()),
                ("kind", inst.kind().as_str()),
                ("target", inst.target.as_str()),
            ],
            extra: None,
        }
    }

    /// Encodes one gauge family with a value per instance that has one.
    fn per_instance_gauge(
        &self,
        encoder: &mut DescriptorEncoder<'_>,
        name: &str,
        help: &str,
        value: impl Fn(&InstanceState) -> Option<f64>,
    ) -> fmt::Result {
        let mut e = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (i, st) in self.states.iter().enumerate() {
            if let Some(v) = value(st) {
                gauge(&mut e, &self.labels(i), v)?;
            }
        }
        Ok(())
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        self.per_instance_gauge(
            &mut encoder,
            "coexist_probe_success",
            "1 if the last probe passed, 0 if it failed.",
            |s| s.success().map(|ok| if ok { 1.0 } else { 0.0 }),
        )?;
        self.per_instance_gauge(
            &mut encoder,
            "coexist_probe_last_duration_seconds",
            "Duration of the last probe.",
            |s| s.last.as_ref().map(|l| l.duration.as_secs_f64()),
        )?;
        {
            let mut e = encoder.encode_descriptor(
                "coexist_probe_duration_seconds",
                "Probe durations.",
                None,
                MetricType::Histogram,
            )?;
            for (i, st) in self.states.iter().enumerate() {
                if st.runs == 0 {
                    continue;
                }
                let buckets = st.durations.buckets(&DURATION_BUCKETS);
                e.encode_family(&self.labels(i))?
                    .encode_histogram::<NoLabelSet>(
                        st.durations.sum,
                        st.durations.count(),
                        &buckets,
                        None,
                    )?;
            }
        }
        {
            let mut e = encoder.encode_descriptor(
                "coexist_probe_phase_seconds",
                "Duration of each phase of the last probe (resolve, connect, tls, request).",
                None,
                MetricType::Gauge,
            )?;
            for (i, st) in self.states.iter().enumerate() {
                let Some(last) = &st.last else { continue };
                for (phase, d) in &last.outcome.phases {
                    let mut l = self.labels(i);
                    l.extra = Some(("phase", phase.as_str()));
                    gauge(&mut e, &l, d.as_secs_f64())?;
                }
            }
        }
        {
            let mut e = encoder.encode_descriptor(
                "coexist_probe_runs",
                "Probes run.",
                None,
                MetricType::Counter,
            )?;
            for (i, st) in self.states.iter().enumerate() {
                counter(&mut e, &self.labels(i), st.runs)?;
            }
        }
        {
            let mut e = encoder.encode_descriptor(
                "coexist_probe_failures",
                "Failed probes by reason (a reason appears once it has occurred).",
                None,
                MetricType::Counter,
            )?;
            for (i, st) in self.states.iter().enumerate() {
                for (r, n) in FailureReason::ALL.iter().zip(st.failures.iter()) {
                    if *n > 0 {
                        let mut l = self.labels(i);
                        l.extra = Some(("reason", r.as_str()));
                        counter(&mut e, &l, *n)?;
                    }
                }
            }
        }
        self.per_instance_gauge(
            &mut encoder,
            "coexist_probe_consecutive_failures",
            "Failed probes since the last success.",
            |s| s.last.as_ref().map(|_| s.consecutive_failures as f64),
        )?;
        self.per_instance_gauge(
            &mut encoder,
            "coexist_probe_last_run_timestamp_seconds",
            "Unix time at which the last probe finished.",
            |s| s.last.as_ref().map(|l| unix(l.at)),
        )?;
        self.per_instance_gauge(
            &mut encoder,
            "coexist_dns_answers",
            "Answer records in the last DNS response.",
            |s| {
                s.last
                    .as_ref()
                    .and_then(|l| l.outcome.dns_answers)
                    .map(|n| n as f64)
            },
        )?;
        self.encode_pools(&mut encoder)?;
        self.encode_agent(&mut encoder)
    }
}

#[derive(Default)]
struct PoolTally {
    role: &'static str,
    passing: u64,
    failing: u64,
    pending: u64,
}

impl Snapshot {
    fn encode_pools(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let mut pools: BTreeMap<&str, PoolTally> = BTreeMap::new();
        for p in &self.generation.config.pools {
            pools.insert(
                p.name.as_str(),
                PoolTally {
                    role: p.role.as_str(),
                    ..Default::default()
                },
            );
        }
        for (slot, st) in self.generation.slots.iter().zip(&self.states) {
            let Some(t) = slot
                .instance
                .pool
                .as_ref()
                .and_then(|p| pools.get_mut(p.name.as_str()))
            else {
                continue;
            };
            match st.success() {
                Some(true) => t.passing += 1,
                Some(false) => t.failing += 1,
                None => t.pending += 1,
            }
        }
        {
            let mut e = encoder.encode_descriptor(
                "coexist_pool_up",
                "1 if every check instance of the pool passed its last probe (0 while any is failing or has not run).",
                None,
                MetricType::Gauge,
            )?;
            for (name, t) in &pools {
                let up = t.failing == 0 && t.pending == 0;
                e.encode_family(&[("pool", *name), ("role", t.role)].as_slice())?
                    .encode_gauge(&(up as i64))?;
            }
        }
        let mut e = encoder.encode_descriptor(
            "coexist_pool_checks",
            "Check instances of the pool by state of their last probe (passing, failing, pending = not run yet).",
            None,
            MetricType::Gauge,
        )?;
        for (name, t) in &pools {
            for (state, n) in [
                ("passing", t.passing),
                ("failing", t.failing),
                ("pending", t.pending),
            ] {
                e.encode_family(&[("pool", *name), ("role", t.role), ("state", state)].as_slice())?
                    .encode_gauge(&(n as i64))?;
            }
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
            .encode_family(&[("version", env!("CARGO_PKG_VERSION"))].as_slice())?
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
            .encode_gauge(&(self.states.len() as i64))
    }
}
