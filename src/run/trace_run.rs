//! Runs one scheduled round of an instance inside the trace recorder
//! ([`crate::trace`]): `coexistd check --trace` and `GET /api/v1/trace`.

use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::trace::{record, Step};

/// The trace of one probe, as printed and served.
#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    /// Check name.
    pub check: String,
    /// Pool name (empty for pool-less checks).
    pub pool: String,
    /// Check kind.
    pub kind: String,
    /// `host:port` or record.
    pub target: String,
    /// Every step, in order.
    pub steps: Vec<Step>,
    /// Steps past [`crate::trace::MAX_STEPS`], not kept.
    pub steps_dropped: usize,
    /// The results: one, or one per address for `each_address`.
    pub results: Vec<TraceResult>,
    /// The whole round's wall time, in milliseconds.
    pub duration_ms: f64,
}

/// The result a traced probe would have recorded.
#[derive(Debug, Clone, Serialize)]
pub struct TraceResult {
    /// The address, for `each_address` checks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Passed or not.
    pub success: bool,
    /// The failure reason.
    pub reason: Option<String>,
    /// The failure detail.
    pub detail: Option<String>,
}

impl Trace {
    /// The text `coexistd check --trace` prints.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let pool = if self.pool.is_empty() { "-" } else { &self.pool };
        let _ =
            writeln!(s, "== trace: check {} ({}) pool {pool} target {}", self.check, self.kind, self.target);
        for st in &self.steps {
            let addr = st.address.as_deref().map(|a| format!(" @{a}")).unwrap_or_default();
            let text = crate::trace::printable(&st.text);
            let mut lines = text.lines();
            let _ = writeln!(s, "{:>9.3} ms  {:<8}{addr}  {}", st.at_ms, st.step, lines.next().unwrap_or(""));
            for l in lines {
                let _ = writeln!(s, "{:>24}| {}", "", l.trim_end_matches('\r'));
            }
        }
        if self.steps_dropped > 0 {
            let _ = writeln!(s, "({} more steps not shown)", self.steps_dropped);
        }
        for r in &self.results {
            let addr = r.address.as_deref().map(|a| format!(" @{a}")).unwrap_or_default();
            if r.success {
                let _ = writeln!(s, "result{addr}: PASS");
            } else {
                let _ = writeln!(
                    s,
                    "result{addr}: FAIL {}: {}",
                    r.reason.as_deref().unwrap_or(""),
                    crate::trace::printable(r.detail.as_deref().unwrap_or(""))
                );
            }
        }
        let _ = writeln!(s, "round took {:.1} ms", self.duration_ms);
        s
    }
}

/// Traces one scheduled round of `instance` through `prober` (the same code the
/// scheduler runs, timeout and `each_address` fan-out included).
pub async fn trace_round(
    prober: &Arc<dyn crate::run::scheduler::Prober>,
    instance: &Arc<crate::config::CheckInstance>,
) -> Trace {
    let t = Instant::now();
    let (round, steps, dropped) = record(crate::run::scheduler::run_round_guarded(prober, instance)).await;
    let duration: Duration = t.elapsed();
    let result = |address: Option<String>, o: &crate::kinds::Outcome| match &o.result {
        Ok(()) => TraceResult { address, success: true, reason: None, detail: None },
        Err(f) => TraceResult {
            address,
            success: false,
            reason: Some(f.reason.as_str().to_owned()),
            detail: Some(f.detail.clone()),
        },
    };
    let results = match &round {
        crate::run::results::Round::Single(o, _) => vec![result(None, o)],
        crate::run::results::Round::Members(m) => {
            m.iter().map(|(ip, o, _)| result(Some(ip.to_string()), o)).collect()
        }
    };
    Trace {
        check: instance.check.clone(),
        pool: instance.pool_name().to_owned(),
        kind: instance.kind().as_str().to_owned(),
        target: instance.target.clone(),
        steps,
        steps_dropped: dropped,
        results,
        duration_ms: duration.as_secs_f64() * 1000.0,
    }
}

/// Instances one trace request may run (an `each_address` instance counts once).
pub const MAX_TRACED: usize = 16;

/// Runs traces for `/api/v1/trace`: on the probes' runtime, with the running
/// configuration's probe context, one request at a time.
pub struct Tracer {
    prober: Mutex<Arc<dyn crate::run::scheduler::Prober>>,
    probes: tokio::runtime::Handle,
    one: Arc<tokio::sync::Semaphore>,
}

/// Why a trace request was not run.
#[derive(Debug, PartialEq, Eq)]
pub enum TraceRefused {
    /// Another trace is running.
    Busy,
    /// The trace task ended without a result (a panic outside the guarded probe).
    Failed,
}

impl Tracer {
    /// A tracer using `prober` on `probes`.
    pub fn new(prober: Arc<dyn crate::run::scheduler::Prober>, probes: tokio::runtime::Handle) -> Tracer {
        Tracer { prober: Mutex::new(prober), probes, one: Arc::new(tokio::sync::Semaphore::new(1)) }
    }

    /// Takes the probe context of a reloaded configuration.
    pub fn set_prober(&self, prober: Arc<dyn crate::run::scheduler::Prober>) {
        *self.prober.lock().unwrap_or_else(|e| e.into_inner()) = prober;
    }

    /// Traces `instances` one after the other (at most [`MAX_TRACED`]).
    pub async fn trace(
        &self,
        instances: Vec<Arc<crate::config::CheckInstance>>,
    ) -> Result<Vec<Trace>, TraceRefused> {
        // The permit goes with the task: a client that goes away does not free it
        // while the trace still runs.
        let permit = self.one.clone().try_acquire_owned().map_err(|_| TraceRefused::Busy)?;
        let prober = self.prober.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let run = self.probes.spawn(async move {
            let _permit = permit;
            let mut traces = Vec::new();
            for i in instances.iter().take(MAX_TRACED) {
                traces.push(trace_round(&prober, i).await);
            }
            traces
        });
        run.await.map_err(|_| TraceRefused::Failed)
    }
}
