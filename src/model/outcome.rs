//! What one probe run found: pass or a [`Failure`], timed phases, and what the peer
//! showed (TLS chain, where a record points, and the kind's own measurements: a
//! [`Measure`] is a metric family that a kind declares and fills, such as the SIP
//! status or a delivery time).
//!
//! Facts layer: imports only the failure reasons and the TLS facts.

use std::time::Duration;

use serde::Serialize;

use crate::failure::{Failure, FailureReason};

/// A timed step of a probe, the `phase` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Name resolution of the target.
    Resolve,
    /// TCP connect.
    Connect,
    /// TLS handshake and certificate verification.
    Tls,
    /// Request and response (a DNS query and its answer).
    Request,
}

impl Phase {
    /// The `phase` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Resolve => "resolve",
            Phase::Connect => "connect",
            Phase::Tls => "tls",
            Phase::Request => "request",
        }
    }
}

/// The result of one probe run.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// `Ok` when the probe passed.
    pub result: Result<(), Failure>,
    /// Timed phases, in the order they ran.
    pub phases: Vec<(Phase, Duration)>,
    /// TLS-speaking kinds: what the handshake showed (also on failure, when it got that far).
    pub tls: Option<std::sync::Arc<crate::net::tls::TlsInfo>>,
    /// dns: the pool the answer points at (`unknown` when none).
    pub points_to: Option<String>,
    /// The kind's own measurements, at most one per [`Measure`] (see [`Outcome::set`]).
    pub measured: Vec<Measured>,
    /// Kinds between two test users: the pools the two were registered on when the
    /// probe ran (the interop matrix counts the pair there, not where it was planned).
    pub route: Option<PairRoute>,
}

/// Where a probe between two test users really went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PairRoute {
    /// The pool the sender was registered on (`unknown`: none of the configured pools).
    pub from_pool: String,
    /// The pool the recipient was registered on.
    pub to_pool: String,
    /// Whether the exchange itself passed (the outcome also fails, `wrong_home`, when
    /// these are not the planned pools).
    pub passed: bool,
}

impl Outcome {
    /// A passing outcome.
    pub fn pass(phases: Vec<(Phase, Duration)>) -> Outcome {
        Outcome { result: Ok(()), phases, tls: None, points_to: None, measured: Vec::new(), route: None }
    }

    fn with_result(result: Result<(), Failure>, phases: Vec<(Phase, Duration)>) -> Outcome {
        Outcome { result, ..Outcome::pass(phases) }
    }

    /// A failing outcome.
    pub fn fail(reason: FailureReason, detail: impl Into<String>, phases: Vec<(Phase, Duration)>) -> Outcome {
        Outcome::with_result(Err(Failure::new(reason, detail)), phases)
    }

    /// A failed run from a probe step's [`Failure`]; what its TLS handshake showed
    /// becomes the outcome's [`Outcome::tls`].
    pub fn failed(mut f: Failure, phases: Vec<(Phase, Duration)>) -> Outcome {
        let tls = f.tls.take();
        Outcome { tls, ..Outcome::with_result(Err(f), phases) }
    }

    /// The failure reason, if any.
    pub fn reason(&self) -> Option<FailureReason> {
        self.result.as_ref().err().map(|f| f.reason)
    }

    /// Records `value` for `measure` (replacing an earlier one of the same family).
    pub fn set(&mut self, measure: &'static Measure, value: f64) {
        self.set_labelled(measure, None, value);
    }

    /// Records `value` for `measure` with the value of its own label.
    pub fn set_labelled(&mut self, measure: &'static Measure, label: Option<String>, value: f64) {
        self.measured.retain(|m| m.measure.name != measure.name);
        self.measured.push(Measured { measure, label, value });
    }

    /// The value recorded for `measure`, if any.
    pub fn value(&self, measure: &Measure) -> Option<f64> {
        self.measured_of(measure).map(|m| m.value)
    }

    /// What was recorded for `measure`, if anything.
    pub fn measured_of(&self, measure: &Measure) -> Option<&Measured> {
        self.measured.iter().find(|m| m.measure.name == measure.name)
    }
}

/// A measurement beyond pass/fail and timings: one gauge family of the exposition,
/// declared by the kinds that fill it ([`crate::kinds::CheckKind::MEASURES`]) and
/// defined as a `static` next to the code that measures it. The metrics encoder,
/// the reserved label names and the README's family table all follow from the
/// declarations; nothing else names a family.
#[derive(Debug, PartialEq, Eq)]
pub struct Measure {
    /// Family name: `coexist_` prefix, base unit suffix (`_seconds`), no `_total`.
    pub name: &'static str,
    /// The `# HELP` text.
    pub help: &'static str,
    /// The one label of its own the family carries (for example `server`), if any;
    /// its value comes with each sample. Must not be a label coexistd already uses.
    pub label: Option<&'static str>,
}

/// One sample of a [`Measure`] in an [`Outcome`].
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// Its family.
    pub measure: &'static Measure,
    /// The value of the family's own label (present exactly when the family has one).
    pub label: Option<String>,
    /// The sample value.
    pub value: f64,
}

/// Whether `code` passes `expect_status` (empty: any 2xx), and what was expected, for
/// the failure detail.
pub fn status_accepted(expect: &[u16], code: u16) -> Result<(), String> {
    let ok = if expect.is_empty() { (200..300).contains(&code) } else { expect.contains(&code) };
    if ok {
        Ok(())
    } else if expect.is_empty() {
        Err("2xx".to_owned())
    } else {
        Err(format!("{expect:?}"))
    }
}
