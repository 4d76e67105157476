//! One check instance's results between probes ([`Slot`]): its last outcome, counters
//! and histograms, state changes, and for an `each_address` instance one member per
//! address. The store ([`super::results`]) holds one slot per instance of a loaded
//! configuration; the outputs read them at scrape time.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::config::{CheckInstance, Config};
use crate::kinds::{FailureReason, Outcome};

/// What one scheduled run of an instance produced.
#[derive(Debug)]
pub enum Round {
    /// One outcome: a plain instance, or an `each_address` one whose name did not resolve.
    Single(Outcome, Duration),
    /// One outcome per address behind the name.
    Members(Vec<(IpAddr, Outcome, Duration)>),
}

/// Upper bounds of the `coexist_probe_duration_seconds` buckets.
pub const DURATION_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Upper bounds of the `coexist_scheduler_lag_seconds` buckets.
pub const LAG_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// A fixed-bucket histogram (per-bucket counts, not cumulative).
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram<const N: usize> {
    /// Count of observations in each bucket (the last one is +Inf).
    pub counts: [u64; N],
    /// Sum of all observations.
    pub sum: f64,
}

impl<const N: usize> Default for Histogram<N> {
    fn default() -> Self {
        Histogram { counts: [0; N], sum: 0.0 }
    }
}

impl<const N: usize> Histogram<N> {
    /// Adds one observation; `bounds` has N-1 entries.
    pub fn observe(&mut self, bounds: &[f64], v: f64) {
        let i = bounds.iter().position(|b| v <= *b).unwrap_or(N - 1);
        self.counts[i] += 1;
        self.sum += v;
    }

    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// `(upper bound, count in that bucket)` for every bucket, the last one with the
    /// bound `f64::INFINITY`, which prometheus-client's encoder writes as `+Inf` (it
    /// accumulates the counts but does not add that bucket itself).
    pub fn buckets(&self, bounds: &[f64]) -> Vec<(f64, u64)> {
        bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts.iter().copied())
            .collect()
    }
}

/// State changes kept for the status page and `/api/v1/events`: the newest, in
/// arrival order (older ones are dropped; the log keeps every one).
pub const EVENTS_KEPT: usize = 500;

/// One instance (or address) changing between pass and fail, or failing at its first run.
#[derive(Debug, Clone)]
pub struct Transition {
    /// When the run that changed it finished.
    pub at: SystemTime,
    /// The instance.
    pub instance: Arc<CheckInstance>,
    /// The address, for `each_address` checks.
    pub address: Option<IpAddr>,
    /// The reason and detail when it now fails; `None` when it now passes.
    pub failure: Option<(FailureReason, String)>,
    /// When the previous state began (`None` at the first run).
    pub previous_since: Option<SystemTime>,
}

/// The last run of an instance.
#[derive(Debug, Clone, PartialEq)]
pub struct LastRun {
    /// What the probe found.
    pub outcome: Arc<Outcome>,
    /// Wall time of the whole probe.
    pub duration: Duration,
    /// When it finished.
    pub at: SystemTime,
    /// When it finished, on the monotonic clock (staleness must not follow clock steps).
    pub finished: std::time::Instant,
}

/// Everything known about one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceState {
    /// Probes run.
    pub runs: u64,
    /// Failed probes, indexed by [`FailureReason::index`].
    pub failures: [u64; FailureReason::COUNT],
    /// Failures since the last success.
    pub consecutive_failures: u64,
    /// The last run, once there is one.
    pub last: Option<LastRun>,
    /// When pass/fail last flipped (or the first run).
    pub last_change: Option<SystemTime>,
    /// Probe durations.
    pub durations: Histogram<{ DURATION_BUCKETS.len() + 1 }>,
}

impl Default for InstanceState {
    // By hand: arrays longer than 32 have no derived Default.
    fn default() -> InstanceState {
        InstanceState {
            runs: 0,
            failures: [0; FailureReason::COUNT],
            consecutive_failures: 0,
            last: None,
            last_change: None,
            durations: Histogram::default(),
        }
    }
}

impl InstanceState {
    /// Whether the last run passed; `None` before the first run.
    pub fn success(&self) -> Option<bool> {
        self.last.as_ref().map(|l| l.outcome.result.is_ok())
    }
}

impl InstanceState {
    /// Adds one run.
    fn record(&mut self, outcome: Outcome, duration: Duration, at: SystemTime) {
        let passed = outcome.result.is_ok();
        self.runs += 1;
        if let Some(r) = outcome.reason() {
            self.failures[r.index()] += 1;
        }
        self.consecutive_failures = if passed { 0 } else { self.consecutive_failures + 1 };
        if self.success() != Some(passed) {
            self.last_change = Some(at);
        }
        self.durations.observe(&DURATION_BUCKETS, duration.as_secs_f64());
        self.last =
            Some(LastRun { outcome: Arc::new(outcome), duration, at, finished: std::time::Instant::now() });
    }
}

/// One address of an `each_address` instance: its series labels and state.
#[derive(Debug, Clone)]
pub(super) struct Member {
    labels: String,
    state: Arc<InstanceState>,
}

/// One set of series: an instance, or one address of an `each_address` instance.
#[derive(Debug, Clone)]
pub struct SeriesState {
    /// The address, for a fanned-out instance.
    pub address: Option<IpAddr>,
    /// The series labels when they differ from the slot's (with `address`).
    pub labels: Option<String>,
    /// Its results.
    pub state: Arc<InstanceState>,
    /// No run finished for [`STALE_INTERVALS`] intervals: its last result is no longer
    /// current (a frozen task, a starved scheduler).
    pub stale: bool,
}

/// An instance (or address) is stale when its last run finished more than this many
/// intervals ago (or, before its first run, when it was loaded that long ago).
pub const STALE_INTERVALS: u32 = 3;

/// One instance and its state.
#[derive(Debug)]
pub struct Slot {
    /// The instance as configured.
    pub instance: Arc<CheckInstance>,
    /// The instance's series labels, rendered once (see [`crate::config::labels::render_labels`]).
    pub labels: String,
    /// Results of the instance itself (for `each_address`: of the resolution step, shown
    /// only while no address is known).
    state: Mutex<Arc<InstanceState>>,
    /// `each_address`: results per address seen in the last round.
    pub(super) members: Mutex<BTreeMap<IpAddr, Member>>,
    /// When the next run that has not completed is due: the plan of a run in flight, else
    /// one interval after the last completed run's plan. Carried by a reload while the
    /// interval is unchanged, so a reload neither moves nor skips a run.
    pub(super) due: Mutex<Option<tokio::time::Instant>>,
    /// When an instance with this key was first loaded (carried by reloads): the
    /// reference for staleness before the first run.
    pub(super) since: std::time::Instant,
}

impl Slot {
    /// A slot with no run yet.
    pub fn new(config: &Config, instance: Arc<CheckInstance>) -> Slot {
        Slot::with_state(config, instance, Arc::default(), BTreeMap::new())
    }

    pub(super) fn with_state(
        config: &Config,
        instance: Arc<CheckInstance>,
        state: Arc<InstanceState>,
        members: BTreeMap<IpAddr, Member>,
    ) -> Slot {
        let labels = crate::config::labels::render_labels(config, &instance);
        let mut members = members;
        for (ip, m) in members.iter_mut() {
            // Constant labels may have changed with a reload.
            m.labels = format!("{labels},address=\"{ip}\"");
        }
        Slot {
            instance,
            labels,
            state: Mutex::new(state),
            members: Mutex::new(members),
            due: Mutex::new(None),
            since: std::time::Instant::now(),
        }
    }

    /// Notes that the run planned for `at` has started: until it completes, it is what
    /// is due (a run cut by a reload runs again at once).
    pub fn started(&self, at: tokio::time::Instant) {
        *self.due.lock().unwrap_or_else(|e| e.into_inner()) = Some(at);
    }

    /// Notes that the run planned for `at` has completed: the next is due one interval on.
    pub fn completed(&self, at: tokio::time::Instant) {
        *self.due.lock().unwrap_or_else(|e| e.into_inner()) = Some(at + self.instance.interval);
    }

    /// When the next run is due; `None` before the first run started.
    pub fn next_due(&self) -> Option<tokio::time::Instant> {
        *self.due.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn ran(&self) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).runs > 0
            || !self.members.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    /// Records one run; returns true when it was the instance's first. Clears the
    /// per-address results (the name did not resolve, or the instance has no fan-out).
    pub fn record(&self, outcome: Outcome, duration: Duration, at: SystemTime) -> bool {
        self.record_logged(outcome, duration, at, None)
    }

    fn record_logged(
        &self,
        outcome: Outcome,
        duration: Duration,
        at: SystemTime,
        changes: Option<&mut Vec<Transition>>,
    ) -> bool {
        let first = !self.ran();
        self.members.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let mut held = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // Copied only while a scrape still reads the previous state.
        let st = Arc::make_mut(&mut held);
        let before = (st.success(), st.last_change);
        st.record(outcome, duration, at);
        if let Some(changes) = changes {
            changes.extend(self.log_change(None, before, st, at));
        }
        first
    }

    /// One log line when pass/fail changes (and for a first run that fails): what
    /// broke and why, or how long it had failed.
    fn log_change(
        &self,
        address: Option<IpAddr>,
        (before, since): (Option<bool>, Option<SystemTime>),
        st: &InstanceState,
        at: SystemTime,
    ) -> Option<Transition> {
        let last = st.last.as_ref()?;
        let i = &self.instance;
        let address_ip = address;
        let address = address.map(|a| a.to_string()).unwrap_or_default();
        let failure = match (&last.outcome.result, before) {
            (Err(f), Some(true) | None) => {
                tracing::info!(
                    check = %i.check, pool = i.pool_name(), target = %i.target, address = %address,
                    reason = f.reason.as_str(), detail = %f.detail, "check failing"
                );
                Some((f.reason, f.detail.clone()))
            }
            (Ok(()), Some(false)) => {
                let failed_for = since.and_then(|s| at.duration_since(s).ok()).unwrap_or_default();
                tracing::info!(
                    check = %i.check, pool = i.pool_name(), target = %i.target, address = %address,
                    failed_for = %humantime::format_duration(Duration::from_secs(failed_for.as_secs())),
                    "check passing again"
                );
                None
            }
            _ => return None,
        };
        Some(Transition {
            at,
            instance: i.clone(),
            address: address_ip,
            failure,
            previous_since: if before.is_some() { since } else { None },
        })
    }

    /// Records one `each_address` round: one result per address now behind the name.
    /// Addresses that are gone lose their series; new ones get theirs.
    pub fn record_members(&self, results: Vec<(IpAddr, Outcome, Duration)>, at: SystemTime) -> bool {
        self.record_members_logged(results, at, None)
    }

    fn record_members_logged(
        &self,
        results: Vec<(IpAddr, Outcome, Duration)>,
        at: SystemTime,
        mut changes: Option<&mut Vec<Transition>>,
    ) -> bool {
        let first = !self.ran();
        // The name resolves (again): the name-level result (a resolution failure) ends.
        // Its counters stay; its streak and state start over, so that a later resolution
        // failure counts from one and is logged as a change.
        {
            let mut held = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let own = Arc::make_mut(&mut held);
            if own.success() == Some(false) {
                let failed_for = own.last_change.and_then(|s| at.duration_since(s).ok()).unwrap_or_default();
                let i = &self.instance;
                if let Some(changes) = changes.as_deref_mut() {
                    tracing::info!(
                        check = %i.check, pool = i.pool_name(), target = %i.target, address = "",
                        failed_for = %humantime::format_duration(Duration::from_secs(failed_for.as_secs())),
                        "check passing again"
                    );
                    changes.push(Transition {
                        at,
                        instance: i.clone(),
                        address: None,
                        failure: None,
                        previous_since: own.last_change,
                    });
                }
            }
            own.last = None;
            own.last_change = None;
            own.consecutive_failures = 0;
        }
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        members.retain(|ip, _| results.iter().any(|(r, _, _)| r == ip));
        for (ip, outcome, duration) in results {
            let m = members.entry(ip).or_insert_with(|| Member {
                labels: format!("{},address=\"{ip}\"", self.labels),
                state: Arc::default(),
            });
            let before = (m.state.success(), m.state.last_change);
            Arc::make_mut(&mut m.state).record(outcome, duration, at);
            if let Some(changes) = changes.as_deref_mut() {
                changes.extend(self.log_change(Some(ip), before, &m.state, at));
            }
        }
        first
    }

    /// Records a round; returns true when it was the instance's first.
    pub fn record_round(&self, round: Round, at: SystemTime) -> bool {
        self.record_round_logged(round, at, None)
    }

    /// Like [`Slot::record_round`]; with `changes`, each change of state is logged at
    /// `info` and added to it (the daemon).
    pub fn record_round_logged(
        &self,
        round: Round,
        at: SystemTime,
        changes: Option<&mut Vec<Transition>>,
    ) -> bool {
        match round {
            Round::Single(outcome, duration) => self.record_logged(outcome, duration, at, changes),
            Round::Members(results) => self.record_members_logged(results, at, changes),
        }
    }

    /// The instance's own state as it is now, for encoding without holding the lock (a
    /// later run writes a copy while this one is read).
    pub fn state(&self) -> Arc<InstanceState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether results in `state` are stale at `now` (see [`SeriesState::stale`]).
    pub fn is_stale(&self, state: &InstanceState, now: std::time::Instant) -> bool {
        let reference = state.last.as_ref().map_or(self.since, |l| l.finished);
        now.saturating_duration_since(reference) > self.instance.interval * STALE_INTERVALS
    }

    /// The slot's series sets: one per address while addresses are known, else one.
    pub fn units(&self) -> Vec<SeriesState> {
        self.units_at(std::time::Instant::now())
    }

    /// [`Slot::units`], with staleness judged at `now`.
    fn units_at(&self, now: std::time::Instant) -> Vec<SeriesState> {
        let members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        if members.is_empty() {
            let state = self.state();
            return vec![SeriesState {
                address: None,
                labels: None,
                stale: self.is_stale(&state, now),
                state,
            }];
        }
        members
            .iter()
            .map(|(ip, m)| SeriesState {
                address: Some(*ip),
                labels: Some(m.labels.clone()),
                stale: self.is_stale(&m.state, now),
                state: m.state.clone(),
            })
            .collect()
    }
}

/// Every unit of `slots`, with the index of its slot.
pub fn units(slots: &[Arc<Slot>]) -> Vec<(usize, SeriesState)> {
    let now = std::time::Instant::now();
    slots.iter().enumerate().flat_map(|(i, s)| s.units_at(now).into_iter().map(move |u| (i, u))).collect()
}
