//! What one probe run found: pass or a [`Failure`], timed phases, and what the peer
//! showed (TLS chain, SIP status and software, where a record points).
//!
//! Layer 2 (facts): imports only the failure reasons and the TLS facts.

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
    /// dns: number of answer records in the last response.
    pub dns_answers: Option<u64>,
    /// TLS-speaking kinds: what the handshake showed (also on failure, when it got that far).
    pub tls: Option<std::sync::Arc<crate::tls::TlsInfo>>,
    /// sip: the final status code received.
    pub sip_status: Option<u16>,
    /// sip: the peer's `Server` (or `User-Agent`) header.
    pub sip_server: Option<String>,
    /// dns: the pool the answer points at (`unknown` when none).
    pub points_to: Option<String>,
    /// sip_im: time from the sender's request leaving to the recipient receiving it.
    pub delivery: Option<Duration>,
}

impl Outcome {
    /// A passing outcome.
    pub fn pass(phases: Vec<(Phase, Duration)>) -> Outcome {
        Outcome {
            result: Ok(()),
            phases,
            dns_answers: None,
            tls: None,
            sip_status: None,
            sip_server: None,
            points_to: None,
            delivery: None,
        }
    }

    fn with_result(result: Result<(), Failure>, phases: Vec<(Phase, Duration)>) -> Outcome {
        Outcome { result, ..Outcome::pass(phases) }
    }

    /// A failing outcome.
    pub fn fail(reason: FailureReason, detail: impl Into<String>, phases: Vec<(Phase, Duration)>) -> Outcome {
        Outcome::with_result(Err(Failure { reason, detail: detail.into() }), phases)
    }

    /// A failed run from a probe step's [`Failure`].
    pub fn failed(f: Failure, phases: Vec<(Phase, Duration)>) -> Outcome {
        Outcome::with_result(Err(f), phases)
    }

    /// The failure reason, if any.
    pub fn reason(&self) -> Option<FailureReason> {
        self.result.as_ref().err().map(|f| f.reason)
    }
}
