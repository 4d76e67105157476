//! One task per check instance: interval, spread start, timeout, concurrency limit,
//! shutdown.
//!
//! - **Spread.** An instance's first run is at `start + hash(key) mod min(interval,
//!   1 min)`, so a start or a reload with thousands of instances does not fire them all
//!   at once, an unchanged instance keeps its phase across reloads, and a check with a
//!   long interval (a 10-minute sign-in) still reports within a minute of a start.
//! - **No overlap.** Each instance runs in one task that awaits its probe before the
//!   next tick; ticks missed while a probe ran are skipped, not bunched.
//! - **Timeout.** Every probe is bounded by the instance's timeout, which config
//!   validation keeps shorter than the interval.
//! - **Concurrency.** A semaphore bounds probes in flight across all instances.
//! - **Shutdown.** Cancelling the token ends every task at its next await point.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::config::CheckInstance;
use crate::failure::Failure;
use std::net::IpAddr;

use crate::kinds::{self, Outcome, Phase, ProbeContext};
use crate::run::results::{Generation, Round, Store};

/// Runs the probe of an instance. The live implementation is [`LiveProber`]; tests
/// substitute their own to drive the scheduler with paused time.
pub trait Prober: Send + Sync + 'static {
    /// One run of `instance`'s probe, without a deadline (the scheduler adds it).
    fn probe(&self, instance: Arc<CheckInstance>) -> Pin<Box<dyn Future<Output = Outcome> + Send>>;

    /// One run against address `ip` of the target (`each_address`).
    fn probe_at(
        &self,
        instance: Arc<CheckInstance>,
        ip: IpAddr,
    ) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
        let _ = ip;
        self.probe(instance)
    }

    /// Every address of `host` (`each_address`).
    fn resolve(&self, host: String) -> Pin<Box<dyn Future<Output = Result<Vec<IpAddr>, Failure>> + Send>> {
        Box::pin(async move {
            Err(Failure::new(crate::failure::FailureReason::Resolve, format!("{host}: no resolver")))
        })
    }
}

/// Probes for real, over the network.
#[derive(Debug, Clone)]
pub struct LiveProber(pub Arc<ProbeContext>);

impl Prober for LiveProber {
    fn probe(&self, instance: Arc<CheckInstance>) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
        let cx = self.0.clone();
        Box::pin(async move { kinds::run(&instance.spec, &cx).await })
    }

    fn probe_at(
        &self,
        instance: Arc<CheckInstance>,
        ip: IpAddr,
    ) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
        let cx = ProbeContext { address: Some(ip), ..(*self.0).clone() };
        Box::pin(async move { kinds::run(&instance.spec, &cx).await })
    }

    fn resolve(&self, host: String) -> Pin<Box<dyn Future<Output = Result<Vec<IpAddr>, Failure>> + Send>> {
        let cx = self.0.clone();
        Box::pin(async move { cx.resolver.lookup_ip(&host).await })
    }
}

/// One scheduled run: the probe, or for `each_address` one probe per address behind
/// the target name, all within the instance's timeout.
pub async fn run_round(prober: &Arc<dyn Prober>, instance: &Arc<CheckInstance>) -> Round {
    let host = match (instance.each_address, instance.spec.host()) {
        (true, Some(h)) => h.to_owned(),
        _ => {
            let (o, d) = run_once(prober.as_ref(), instance).await;
            return Round::Single(o, d);
        }
    };
    let t = Instant::now();
    let deadline = t + instance.timeout;
    let addrs = match tokio::time::timeout_at(deadline, prober.resolve(host)).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            let o = Outcome::fail(e.reason, e.detail, vec![(Phase::Resolve, t.elapsed())]);
            return Round::Single(o, t.elapsed());
        }
        Err(_) => {
            let o = Outcome::fail(instance.spec.timeout_reason(), "name resolution timed out", Vec::new());
            return Round::Single(o, t.elapsed());
        }
    };
    let resolved = t.elapsed();
    let mut set = JoinSet::new();
    for ip in addrs {
        let (prober, instance) = (prober.clone(), instance.clone());
        set.spawn(crate::trace::inherit(ip, async move {
            let start = Instant::now();
            let probe = Guarded::new(prober.probe_at(instance.clone(), ip), &instance);
            let o = match tokio::time::timeout_at(deadline, probe).await {
                Ok(mut o) => {
                    o.phases.insert(0, (Phase::Resolve, resolved));
                    o
                }
                Err(_) => Outcome::fail(
                    instance.spec.timeout_reason(),
                    format!("no result within {}", humantime::format_duration(instance.timeout)),
                    Vec::new(),
                ),
            };
            (ip, o, resolved + start.elapsed())
        }));
    }
    let mut results = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(r) = r {
            results.push(r);
        }
    }
    results.sort_by_key(|r| r.0);
    Round::Members(results)
}

/// A probe future that turns a panic into a failed outcome with reason `internal`.
///
/// A panic inside a probe (a bug, or a peer's bytes reaching an unchecked path) must
/// never end the instance's task: that would freeze its last result, green or red,
/// while nothing is checked. The panic is logged at `error` with the instance and the
/// instance keeps its schedule.
pub struct Guarded<'a> {
    probe: Pin<Box<dyn Future<Output = Outcome> + Send>>,
    instance: &'a CheckInstance,
}

impl<'a> Guarded<'a> {
    /// Guards `probe`, a run of `instance`.
    pub fn new(probe: Pin<Box<dyn Future<Output = Outcome> + Send>>, instance: &'a CheckInstance) -> Self {
        Guarded { probe, instance }
    }
}

impl Future for Guarded<'_> {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Outcome> {
        let probe = &mut self.probe;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| probe.as_mut().poll(cx))) {
            Ok(p) => p,
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".into());
                let i = self.instance;
                tracing::error!(check = %i.check, pool = i.pool_name(), target = %i.target, panic = %message,
                    "probe panicked; recorded as a failure with reason internal");
                // The panicked future must not be polled again.
                self.probe = Box::pin(std::future::pending());
                std::task::Poll::Ready(Outcome::fail(
                    crate::kinds::FailureReason::Internal,
                    format!("probe panicked: {message}"),
                    Vec::new(),
                ))
            }
        }
    }
}

/// A future whose panic is caught and returned as its message.
pub struct CatchPanic<F> {
    inner: Pin<Box<F>>,
    done: bool,
}

impl<F: Future> CatchPanic<F> {
    /// Wraps `inner`.
    pub fn new(inner: F) -> Self {
        CatchPanic { inner: Box::pin(inner), done: false }
    }
}

impl<F: Future> Future for CatchPanic<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        if self.done {
            return std::task::Poll::Pending;
        }
        let inner = &mut self.inner;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.as_mut().poll(cx))) {
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(payload) => {
                self.done = true;
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".into());
                std::task::Poll::Ready(Err(message))
            }
        }
    }
}

/// [`run_round`] with every step guarded: a panic anywhere in the round (name
/// resolution for `each_address` included) is one failed outcome with reason
/// `internal`, logged at `error`; the instance keeps its schedule.
pub async fn run_round_guarded(prober: &Arc<dyn Prober>, instance: &Arc<CheckInstance>) -> Round {
    let t = Instant::now();
    match CatchPanic::new(run_round(prober, instance)).await {
        Ok(r) => r,
        Err(message) => {
            tracing::error!(check = %instance.check, pool = instance.pool_name(), target = %instance.target,
                panic = %message, "probe round panicked; recorded as a failure with reason internal");
            let o = Outcome::fail(
                crate::kinds::FailureReason::Internal,
                format!("probe panicked: {message}"),
                Vec::new(),
            );
            Round::Single(o, t.elapsed())
        }
    }
}

/// Runs one probe of `instance` with its timeout; a timeout becomes the kind's reason,
/// a panic the reason `internal`.
pub async fn run_once(prober: &dyn Prober, instance: &Arc<CheckInstance>) -> (Outcome, Duration) {
    let t = Instant::now();
    let probe = Guarded::new(prober.probe(instance.clone()), instance);
    let outcome = match tokio::time::timeout(instance.timeout, probe).await {
        Ok(o) => o,
        Err(_) => Outcome::fail(
            instance.spec.timeout_reason(),
            format!("no result within {}", humantime::format_duration(instance.timeout)),
            Vec::new(),
        ),
    };
    (outcome, t.elapsed())
}

/// The running tasks of one generation.
#[derive(Debug)]
pub struct Scheduler {
    cancel: CancellationToken,
    tasks: JoinSet<()>,
}

/// When an instance without a completed run is first due: the first point of its
/// phase grid `epoch + offset + k × interval` at or after `now`, with
/// `offset = hash(instance) mod min(interval, MAX_SPREAD)`.
///
/// The grid is anchored at the process's start, not at the last reload, so a reload
/// never moves an instance's runs. Offsets are whole multiples of [`SLOT`] so that
/// instances due within the same few milliseconds start together and share the
/// runtime's wake-ups, instead of waking an idle thread a thousand times a second.
pub fn first_run(instance: &CheckInstance, epoch: Instant, now: Instant) -> Instant {
    let slot = SLOT.as_nanos() as u64;
    let nanos = instance.interval.as_nanos().clamp(1, u64::MAX as u128) as u64;
    let spread = nanos.min(MAX_SPREAD.as_nanos() as u64);
    let offset = instance.stable_hash() % spread;
    let offset = if spread > slot { offset - offset % slot } else { offset };
    let first = epoch + Duration::from_nanos(offset);
    if first >= now {
        return first;
    }
    let behind = (now - first).as_nanos();
    let periods = behind.div_ceil(u128::from(nanos));
    let skip = u64::try_from(periods.saturating_mul(u128::from(nanos))).unwrap_or(u64::MAX);
    first + Duration::from_nanos(skip)
}

/// Runs every slot's instance once — the same guarded round, timeout and fan-out as a
/// scheduled run, at most `concurrency` at a time — and records each result in its
/// slot: `coexistd check`.
pub async fn run_each_once(
    slots: &[Arc<crate::run::results::Slot>],
    prober: Arc<dyn Prober>,
    concurrency: usize,
) {
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for slot in slots {
        let (slot, prober, sem) = (slot.clone(), prober.clone(), sem.clone());
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let round = run_round_guarded(&prober, &slot.instance).await;
            slot.record_round(round, std::time::SystemTime::now());
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// First runs are spread over the interval, but over no more than this.
pub const MAX_SPREAD: Duration = Duration::from_secs(60);

/// Granularity of first-run offsets.
pub const SLOT: Duration = Duration::from_millis(25);

impl Scheduler {
    /// Starts one task per slot of `generation` on the current runtime.
    pub fn start(
        generation: Arc<Generation>,
        store: Arc<Store>,
        prober: Arc<dyn Prober>,
        concurrency: usize,
    ) -> Scheduler {
        Scheduler::start_on(&tokio::runtime::Handle::current(), generation, store, prober, concurrency)
    }

    /// Starts one task per slot of `generation` on `runtime` (the agent gives probes a
    /// runtime of their own, so serving HTTP never delays a probe or its timing).
    pub fn start_on(
        runtime: &tokio::runtime::Handle,
        generation: Arc<Generation>,
        store: Arc<Store>,
        prober: Arc<dyn Prober>,
        concurrency: usize,
    ) -> Scheduler {
        let cancel = CancellationToken::new();
        let sem = Arc::new(Semaphore::new(concurrency));
        let (epoch, now) = (store.epoch(), Instant::now());
        let mut tasks = JoinSet::new();
        for index in 0..generation.slots.len() {
            let (generation, store, prober, sem, cancel) =
                (generation.clone(), store.clone(), prober.clone(), sem.clone(), cancel.clone());
            tasks.spawn_on(async move {
                let slot = generation.slots[index].clone();
                let instance = slot.instance.clone();
                // Unchanged instances carry their due time across reloads: a reload
                // neither delays nor repeats a run (a run cancelled by it runs now).
                let due = slot.next_due().unwrap_or_else(|| first_run(&instance, epoch, now));
                let mut ticker = tokio::time::interval_at(due, instance.interval);
                ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
                // One registration with the token for the task's life, not one per await.
                let mut cancelled = std::pin::pin!(cancel.cancelled());
                loop {
                    let planned = tokio::select! {
                        _ = &mut cancelled => return,
                        t = ticker.tick() => t,
                    };
                    let permit = tokio::select! {
                        _ = &mut cancelled => return,
                        p = sem.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                    };
                    store.observe_lag(Instant::now().saturating_duration_since(planned));
                    slot.started(planned);
                    let round = tokio::select! {
                        _ = &mut cancelled => return,
                        r = run_round_guarded(&prober, &instance) => r,
                    };
                    drop(permit);
                    if let Round::Single(Outcome { result: Err(f), .. }, _) = &round {
                        tracing::debug!(check = %instance.check, pool = instance.pool_name(), target = %instance.target,
                            reason = f.reason.as_str(), detail = %f.detail, "probe failed");
                    }
                    store.record(&generation, &slot, round);
                    slot.completed(planned);
                }
            }, runtime);
        }
        Scheduler { cancel, tasks }
    }

    /// Stops every task; waits at most `grace`, then aborts what is left.
    pub async fn stop(mut self, grace: Duration) {
        self.cancel.cancel();
        let drained =
            tokio::time::timeout(grace, async { while self.tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
    }

    /// A scheduler with no task (a placeholder while a reload swaps generations).
    pub fn start_empty() -> Scheduler {
        Scheduler { cancel: CancellationToken::new(), tasks: JoinSet::new() }
    }
}
