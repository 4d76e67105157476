//! Scheduler logic with paused time: spread first runs, no overlap, timeouts,
//! concurrency limit, shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coexistd::config::{CheckInstance, Config};
use coexistd::kinds::{FailureReason, Outcome};
use coexistd::run::results::Store;
use coexistd::run::scheduler::{Prober, Scheduler};
use tokio::time::Instant;

#[derive(Default)]
struct Log {
    starts: Vec<(String, Instant)>,
    in_flight: HashMap<String, usize>,
    max_in_flight_per_instance: usize,
    total_in_flight: usize,
    max_total_in_flight: usize,
}

/// A prober that sleeps `delay` (in paused time) and records what ran when.
struct Fake {
    delay: Duration,
    log: Arc<Mutex<Log>>,
}

struct Guard(Arc<Mutex<Log>>, String);
impl Drop for Guard {
    fn drop(&mut self) {
        let mut l = self.0.lock().unwrap();
        *l.in_flight.get_mut(&self.1).unwrap() -= 1;
        l.total_in_flight -= 1;
    }
}

impl Prober for Fake {
    fn probe(&self, instance: Arc<CheckInstance>) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
        let (delay, log) = (self.delay, self.log.clone());
        Box::pin(async move {
            let key = instance.key();
            {
                let mut l = log.lock().unwrap();
                l.starts.push((key.clone(), Instant::now()));
                let n = l.in_flight.entry(key.clone()).or_default();
                *n += 1;
                let n = *n;
                l.max_in_flight_per_instance = l.max_in_flight_per_instance.max(n);
                l.total_in_flight += 1;
                l.max_total_in_flight = l.max_total_in_flight.max(l.total_in_flight);
            }
            let _guard = Guard(log, key);
            tokio::time::sleep(delay).await;
            Outcome::pass(vec![])
        })
    }
}

fn config(n: usize, interval: &str, timeout: &str, concurrency: usize) -> Config {
    let mut t = format!(
        "[agent]\ninterval = \"{interval}\"\ntimeout = \"{timeout}\"\nconcurrency = {concurrency}\n\
         [[pools]]\nname = \"p\"\nrole = \"new\"\nfqdn = \"pool.contoso.test\"\n"
    );
    for i in 0..n {
        t.push_str(&format!("[[checks]]\nname = \"c{i}\"\nkind = \"tcp\"\nport = {}\n", 1000 + i));
    }
    Config::parse(&t, "test").unwrap()
}

fn start(config: Config, delay: Duration) -> (Arc<Store>, Scheduler, Arc<Mutex<Log>>) {
    let concurrency = config.agent.concurrency;
    let store = Arc::new(Store::new(config));
    let log = Arc::new(Mutex::new(Log::default()));
    let prober = Arc::new(Fake { delay, log: log.clone() });
    let s = Scheduler::start(store.current(), store.clone(), prober, concurrency);
    (store, s, log)
}

#[tokio::test(start_paused = true)]
async fn first_runs_are_spread_over_the_interval() {
    let t0 = Instant::now();
    let (store, s, log) = start(config(200, "10s", "1s", 1000), Duration::from_millis(10));
    tokio::time::sleep(Duration::from_secs(10)).await;
    let starts = log.lock().unwrap().starts.clone();
    assert_eq!(starts.len(), 200, "every instance ran exactly once in the first interval");
    let mut per_second = [0usize; 10];
    for (_, t) in &starts {
        per_second[(*t - t0).as_secs() as usize] += 1;
    }
    // 20 per second on average; a herd would put them all in the first bucket.
    assert!(per_second.iter().all(|&n| (5..=40).contains(&n)), "{per_second:?}");
    assert!(store.is_ready());
    s.stop(Duration::from_millis(100)).await;
}

#[tokio::test(start_paused = true)]
async fn a_long_interval_spreads_first_runs_over_a_minute_only() {
    // A 10-minute check (a sign-in) reports within a minute of a start, still spread.
    let t0 = Instant::now();
    let (store, s, log) = start(config(60, "10m", "5s", 1000), Duration::from_millis(10));
    tokio::time::sleep(Duration::from_secs(60)).await;
    let starts = log.lock().unwrap().starts.clone();
    assert_eq!(starts.len(), 60, "every instance ran within the first minute");
    let mut per_ten_seconds = [0usize; 6];
    for (_, t) in &starts {
        per_ten_seconds[((*t - t0).as_secs() / 10) as usize] += 1;
    }
    assert!(per_ten_seconds.iter().all(|&n| (2..=25).contains(&n)), "{per_ten_seconds:?}");
    assert!(store.is_ready());
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert_eq!(log.lock().unwrap().starts.len(), 60, "and not again before its interval");
    s.stop(Duration::from_millis(100)).await;
}

#[tokio::test(start_paused = true)]
async fn each_instance_runs_once_per_interval_and_never_overlaps_itself() {
    // 3 probes of 4 s each through 1 slot of concurrency: they queue, ticks are skipped,
    // and no instance ever has two runs in flight.
    let (_store, s, log) = start(config(3, "10s", "5s", 1), Duration::from_secs(4));
    tokio::time::sleep(Duration::from_secs(60)).await;
    s.stop(Duration::from_millis(100)).await;
    let l = log.lock().unwrap();
    assert_eq!(l.max_in_flight_per_instance, 1);
    assert_eq!(l.max_total_in_flight, 1, "the concurrency limit holds");
    let mut by_instance: HashMap<&str, Vec<Instant>> = HashMap::new();
    for (k, t) in &l.starts {
        by_instance.entry(k).or_default().push(*t);
    }
    for (k, ts) in by_instance {
        for w in ts.windows(2) {
            assert!(w[1] - w[0] >= Duration::from_secs(4), "{k}: runs {:?} apart", w[1] - w[0]);
        }
        assert!((5..=6).contains(&ts.len()), "{k}: {} runs in 60 s", ts.len());
    }
}

#[tokio::test(start_paused = true)]
async fn a_probe_longer_than_its_timeout_is_cut_and_reported() {
    let (store, s, _log) = start(config(1, "10s", "2s", 10), Duration::from_secs(3600));
    tokio::time::sleep(Duration::from_secs(12)).await;
    let g = store.current();
    let st = g.slots[0].state();
    assert!(st.runs >= 1);
    let last = st.last.clone().unwrap();
    assert_eq!(last.outcome.reason(), Some(FailureReason::Timeout));
    assert_eq!(last.duration, Duration::from_secs(2));
    assert_eq!(st.failures[FailureReason::Timeout.index()], st.runs);
    s.stop(Duration::from_millis(100)).await;
}

#[tokio::test(start_paused = true)]
async fn stop_ends_every_task_promptly_even_with_probes_in_flight() {
    let (_store, s, log) = start(config(50, "10s", "9s", 1000), Duration::from_secs(8));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(log.lock().unwrap().total_in_flight > 0, "probes are in flight when stopping");
    let t = Instant::now();
    s.stop(Duration::from_millis(500)).await;
    assert!(t.elapsed() <= Duration::from_millis(500), "stopped in {:?}", t.elapsed());
    assert_eq!(log.lock().unwrap().total_in_flight, 0, "in-flight probes were dropped");
}

#[tokio::test(start_paused = true)]
async fn a_reload_keeps_counters_of_unchanged_instances_and_drops_removed_ones() {
    let (store, s, _log) = start(config(3, "10s", "1s", 10), Duration::from_millis(5));
    tokio::time::sleep(Duration::from_secs(25)).await;
    s.stop(Duration::from_millis(100)).await;
    let before = store.current().slots[0].state().runs;
    assert!(before >= 2);
    let g = store.swap(config(1, "10s", "1s", 10));
    assert_eq!(g.slots.len(), 1, "removed instances are gone");
    assert_eq!(g.slots[0].state().runs, before, "unchanged instance keeps its counters");
}

#[tokio::test(start_paused = true)]
async fn reloads_every_100_ms_keep_every_instance_on_its_interval() {
    // The agent's reload: stop the running tasks, install the (identical) file, start
    // again. Ten reloads a second for a minute must not move, skip or repeat a run.
    let (store, mut s, log) = start(config(20, "10s", "1s", 100), Duration::from_millis(30));
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.stop(Duration::from_millis(100)).await;
        let g = store.swap(config(20, "10s", "1s", 100));
        s = Scheduler::start(
            g,
            store.clone(),
            Arc::new(Fake { delay: Duration::from_millis(30), log: log.clone() }),
            100,
        );
    }
    s.stop(Duration::from_millis(100)).await;
    let g = store.current();
    for slot in &g.slots {
        let runs = slot.state().runs;
        assert!(
            (6..=7).contains(&runs),
            "{}: {runs} completed runs in 60 s at a 10 s interval",
            slot.instance.check
        );
    }
    // Every start lies on the instance's grid (first start + k × 10 s), or at most one
    // reload period after a grid point (a run cut by a reload runs again at the next
    // scheduler start); no grid point in the minute is skipped.
    let l = log.lock().unwrap();
    let mut by_instance: HashMap<&str, Vec<Instant>> = HashMap::new();
    for (k, t) in &l.starts {
        by_instance.entry(k).or_default().push(*t);
    }
    assert_eq!(by_instance.len(), 20);
    for (k, ts) in by_instance {
        let first = ts[0];
        let mut points = std::collections::BTreeSet::new();
        for t in &ts {
            let since = *t - first;
            let k10 = since.as_millis() / 10_000;
            let off = since - Duration::from_secs(10 * k10 as u64);
            assert!(off <= Duration::from_millis(250), "{k}: a start {off:?} after its grid point");
            points.insert(k10);
        }
        let n = points.len() as u128;
        assert_eq!(
            points.iter().copied().collect::<Vec<_>>(),
            (0..n).collect::<Vec<_>>(),
            "{k}: a skipped run"
        );
        assert!(n >= 6, "{k}: {n} grid points in a minute");
    }
}

/// A prober whose probe panics, as one reaching an unchecked path would.
struct Panicking;

impl Prober for Panicking {
    fn probe(&self, instance: Arc<CheckInstance>) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            panic!("attempt to add with overflow in {}", instance.check);
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_probe_is_a_failure_with_reason_internal_and_keeps_its_schedule() {
    let c = config(2, "10s", "1s", 10);
    let store = Arc::new(Store::new(c));
    let s = Scheduler::start(store.current(), store.clone(), Arc::new(Panicking), 10);
    tokio::time::sleep(Duration::from_secs(41)).await;
    s.stop(Duration::from_millis(100)).await;
    assert!(store.is_ready(), "a panic still counts as the first run");
    for slot in &store.current().slots {
        let st = slot.state();
        assert!((4..=5).contains(&st.runs), "{} runs in 41 s: the task survived every panic", st.runs);
        assert_eq!(st.failures[FailureReason::Internal.index()], st.runs);
        let f = st.last.clone().unwrap().outcome.result.clone().unwrap_err();
        assert_eq!(f.reason, FailureReason::Internal);
        assert!(f.detail.contains("attempt to add with overflow"), "{}", f.detail);
    }
}

/// A prober whose name resolution panics (an `each_address` round's first step).
struct PanickingResolver;

impl Prober for PanickingResolver {
    fn probe(&self, _instance: Arc<CheckInstance>) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
        Box::pin(async { Outcome::pass(vec![]) })
    }
    fn resolve(
        &self,
        host: String,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<std::net::IpAddr>, coexistd::failure::Failure>> + Send>> {
        Box::pin(async move { panic!("index out of bounds resolving {host}") })
    }
}

#[tokio::test(start_paused = true)]
async fn a_panic_while_resolving_an_each_address_target_is_internal_too() {
    let text = "[agent]\ninterval = \"10s\"\ntimeout = \"1s\"\n\
                [[pools]]\nname = \"p\"\nrole = \"new\"\nfqdn = \"pool.contoso.test\"\n\
                [[checks]]\nname = \"fan\"\nkind = \"tcp\"\nport = 5061\neach_address = true\n";
    let store = Arc::new(Store::new(Config::parse(text, "t").unwrap()));
    let s = Scheduler::start(store.current(), store.clone(), Arc::new(PanickingResolver), 10);
    tokio::time::sleep(Duration::from_secs(31)).await;
    s.stop(Duration::from_millis(100)).await;
    let st = store.current().slots[0].state();
    assert!((3..=4).contains(&st.runs), "{} runs", st.runs);
    assert_eq!(st.failures[FailureReason::Internal.index()], st.runs);
}
