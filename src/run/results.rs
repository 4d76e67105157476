//! Results of every check instance, kept between probes and read at scrape time.
//!
//! A [`Generation`] is one loaded configuration with one [`Slot`] per instance. The
//! metrics and status endpoints encode the current generation only, so an instance
//! removed by a reload loses its series at the next scrape: stale series cannot exist.
//! A reload carries the state of instances whose key is unchanged, so counters of
//! unchanged checks keep counting.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use crate::config::Config;

pub use super::slot::{
    units, Histogram, InstanceState, LastRun, Round, SeriesState, Slot, Transition, DURATION_BUCKETS,
    EVENTS_KEPT, LAG_BUCKETS,
};

/// One loaded configuration and its slots.
#[derive(Debug)]
pub struct Generation {
    /// The configuration.
    pub config: Arc<Config>,
    /// One slot per instance, in config order.
    pub slots: Vec<Arc<Slot>>,
    /// Instances of this generation that have not run yet.
    pending: AtomicUsize,
}

/// The shared results store.
#[derive(Debug)]
pub struct Store {
    current: RwLock<Arc<Generation>>,
    /// The schedule's anchor: an instance's runs fall on `epoch + offset + k × interval`
    /// for the life of the process, whatever the reloads.
    epoch: tokio::time::Instant,
    ready: AtomicBool,
    reload: Mutex<ReloadStatus>,
    /// Bumped by every reload, taken or rejected: a cached encoding of an older
    /// version is never served.
    version: std::sync::atomic::AtomicU64,
    lag: Mutex<Histogram<{ LAG_BUCKETS.len() + 1 }>>,
    /// The newest state changes, oldest first.
    events: Mutex<std::collections::VecDeque<Transition>>,
    /// What the demo lab announced (`demo --faults`), oldest first.
    announcements: Mutex<std::collections::VecDeque<(SystemTime, String)>>,
    /// The test users' registered endpoints (kept by the agent; their status is shown
    /// with the results).
    pub endpoints: Arc<crate::ua::endpoint::Endpoints>,
}

/// Outcome of the last configuration (re)load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReloadStatus {
    /// False after a rejected reload, until the next successful one.
    pub successful: bool,
    /// Unix time of the last successful load.
    pub success_timestamp: f64,
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

impl Store {
    /// A store for the first configuration.
    pub fn new(config: Config) -> Store {
        let generation = Arc::new(make_generation(Arc::new(config), &HashMap::new()));
        let ready = generation.pending.load(Ordering::Relaxed) == 0;
        Store {
            current: RwLock::new(generation),
            epoch: tokio::time::Instant::now(),
            ready: AtomicBool::new(ready),
            reload: Mutex::new(ReloadStatus { successful: true, success_timestamp: unix_now() }),
            version: std::sync::atomic::AtomicU64::new(0),
            lag: Mutex::new(Histogram::default()),
            events: Mutex::new(std::collections::VecDeque::with_capacity(EVENTS_KEPT)),
            announcements: Mutex::new(std::collections::VecDeque::new()),
            endpoints: Arc::default(),
        }
    }

    /// The schedule's anchor (see [`crate::run::scheduler::first_run`]).
    pub fn epoch(&self) -> tokio::time::Instant {
        self.epoch
    }

    /// The current generation.
    pub fn current(&self) -> Arc<Generation> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Installs a new configuration, carrying over the state of unchanged instances.
    pub fn swap(&self, config: Config) -> Arc<Generation> {
        let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
        let old: HashMap<String, Arc<Slot>> =
            cur.slots.iter().map(|s| (s.instance.key(), s.clone())).collect();
        let generation = Arc::new(make_generation(Arc::new(config), &old));
        *cur = generation.clone();
        *self.reload.lock().unwrap_or_else(|e| e.into_inner()) =
            ReloadStatus { successful: true, success_timestamp: unix_now() };
        self.version.fetch_add(1, Ordering::AcqRel);
        generation
    }

    /// Notes a rejected reload: the running configuration stays.
    pub fn reload_failed(&self) {
        self.reload.lock().unwrap_or_else(|e| e.into_inner()).successful = false;
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    /// Changes with every reload, taken or rejected.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The last reload's outcome.
    pub fn reload_status(&self) -> ReloadStatus {
        *self.reload.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a round of `slot` (of generation `generation`).
    pub fn record(&self, generation: &Generation, slot: &Slot, round: Round) {
        let mut changes = Vec::new();
        if slot.record_round_logged(round, SystemTime::now(), Some(&mut changes))
            && generation.pending.fetch_sub(1, Ordering::AcqRel) == 1
        {
            self.ready.store(true, Ordering::Release);
        }
        if !changes.is_empty() {
            let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
            for c in changes {
                if events.len() == EVENTS_KEPT {
                    events.pop_front();
                }
                events.push_back(c);
            }
        }
    }

    /// Keeps an announcement of the demo lab (the newest [`EVENTS_KEPT`]).
    pub fn announce(&self, text: String) {
        let mut a = self.announcements.lock().unwrap_or_else(|e| e.into_inner());
        if a.len() == EVENTS_KEPT {
            a.pop_front();
        }
        a.push_back((SystemTime::now(), text));
    }

    /// The announcements kept, oldest first.
    pub fn announcements(&self) -> Vec<(SystemTime, String)> {
        self.announcements.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }

    /// The state changes kept (at most [`EVENTS_KEPT`]), oldest first.
    pub fn events(&self) -> Vec<Transition> {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }

    /// True once every instance of the first configuration has run; stays true.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Instances (addresses) of the current generation whose results are stale now.
    pub fn stale_instances(&self) -> usize {
        let g = self.current();
        let now = std::time::Instant::now();
        g.slots.iter().map(|s| s.units().iter().filter(|u| s.is_stale(&u.state, now)).count()).sum()
    }

    /// Notes how late a probe started compared with its plan.
    pub fn observe_lag(&self, lag: Duration) {
        self.lag.lock().unwrap_or_else(|e| e.into_inner()).observe(&LAG_BUCKETS, lag.as_secs_f64());
    }

    /// Schedule lag so far.
    pub fn lag(&self) -> Histogram<{ LAG_BUCKETS.len() + 1 }> {
        self.lag.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn make_generation(config: Arc<Config>, old: &HashMap<String, Arc<Slot>>) -> Generation {
    let mut pending = 0;
    let slots = config
        .instances
        .iter()
        .map(|inst| match old.get(&inst.key()) {
            // Same key, possibly a changed interval or expectation: keep the counters,
            // take the new instance.
            Some(s) => {
                if !s.ran() {
                    pending += 1;
                }
                let members = s.members.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let mut slot = Slot::with_state(&config, inst.clone(), s.state(), members);
                slot.since = s.since;
                if s.instance.interval == inst.interval {
                    *slot.due.lock().unwrap_or_else(|e| e.into_inner()) = s.next_due();
                }
                Arc::new(slot)
            }
            None => {
                pending += 1;
                Arc::new(Slot::new(&config, inst.clone()))
            }
        })
        .collect();
    Generation { config, slots, pending: AtomicUsize::new(pending) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::{FailureReason, Outcome};
    use std::net::IpAddr;

    const TEXT: &str = "[agent]\ninterval = \"10s\"\ntimeout = \"1s\"\n\
                    [[pools]]\nname = \"p\"\nrole = \"new\"\nfqdn = \"pool.contoso.test\"\n\
                    [[checks]]\nname = \"c\"\nkind = \"tcp\"\nport = 1\n";

    fn store() -> Store {
        Store::new(Config::parse(TEXT, "t").unwrap())
    }

    #[test]
    fn an_instance_is_stale_after_three_intervals_without_a_run() {
        let store = store();
        let g = store.current();
        let slot = &g.slots[0];
        let now = std::time::Instant::now();
        let st = slot.state();
        assert!(!slot.is_stale(&st, now), "just loaded, not run yet: pending, not stale");
        assert!(slot.is_stale(&st, now + Duration::from_secs(31)), "never ran in 3 intervals");
        slot.record(Outcome::pass(vec![]), Duration::from_millis(1), SystemTime::now());
        let now = std::time::Instant::now();
        let st = slot.state();
        assert!(!slot.is_stale(&st, now + Duration::from_secs(29)));
        assert!(slot.is_stale(&st, now + Duration::from_secs(31)));
        // The reference survives a reload of the same instance.
        let g2 = store.swap(Config::parse(TEXT, "t").unwrap());
        assert_eq!(g2.slots[0].since, slot.since);
        assert_eq!(store.stale_instances(), 0);
    }

    #[test]
    fn a_name_that_resolves_again_ends_its_failure_and_a_later_one_counts_from_one() {
        let store = Store::new(
            Config::parse(&TEXT.replace("port = 1", "port = 1\neach_address = true"), "t").unwrap(),
        );
        let g = store.current();
        let slot = &g.slots[0];
        let fail =
            || Round::Single(Outcome::fail(FailureReason::Resolve, "no such name", vec![]), Duration::ZERO);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let pass = || Round::Members(vec![(ip, Outcome::pass(vec![]), Duration::ZERO)]);
        let mut changes = Vec::new();
        slot.record_round_logged(fail(), SystemTime::now(), Some(&mut changes));
        slot.record_round_logged(fail(), SystemTime::now(), Some(&mut changes));
        assert_eq!(slot.state().consecutive_failures, 2);
        assert_eq!(changes.len(), 1, "one change: failing");
        slot.record_round_logged(pass(), SystemTime::now(), Some(&mut changes));
        assert_eq!(changes.len(), 2, "the name passes again (a first pass is no change): {changes:?}");
        assert!(
            changes[1].address.is_none()
                && changes[1].failure.is_none()
                && changes[1].previous_since.is_some()
        );
        slot.record_round_logged(fail(), SystemTime::now(), Some(&mut changes));
        assert_eq!(slot.state().consecutive_failures, 1, "a new streak");
        assert_eq!(changes.len(), 3, "and a new change: failing");
    }
}
