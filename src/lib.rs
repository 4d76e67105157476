//! coexistd — a coexistence-testing agent for side-by-side SIP platform migrations.
//!
//! While an old pool (e.g. OCS 2007 R2) and a new one (e.g. Lync Server 2013) run side by
//! side, coexistd probes both on its own schedule and exports pass/fail, reasons and
//! timings as Prometheus metrics, per pool and per site.
//!
//! What it does not do: it does not probe when scraped (results are always the last
//! scheduled run; only an explicit trace request runs a probe out of schedule), it does not store history (Prometheus does), and it does not alert
//! (alert rules in `deploy/` do).
//!
//! # Layout
//!
//! | module | |
//! |---|---|
//! | [`config`] | typed TOML configuration: decode, validate, expand checks into instances |
//! | [`probe`] | one module per check kind (tcp, dns, tls, http, sip, sip_discovery); [`probe::CheckSpec`], [`probe::Outcome`], [`probe::FailureReason`] |
//! | [`probe::sip::message`] | SIP on the wire without sockets: the OPTIONS request, the response parser |
//! | [`tls`] | the two TLS engines (rustls, OpenSSL for TLS 1.0/1.1) behind one interface; certificate summaries |
//! | [`resolve`] | target name resolution through the configured DNS servers, uncached |
//! | [`scheduler`] | one task per instance: spread start, interval, timeout, concurrency, shutdown; `each_address` fan-out |
//! | [`state`] | per-instance results; a generation per loaded configuration; the last 500 state changes |
//! | [`logging`] | logfmt or JSON log lines on standard error, no colour codes |
//! | [`metrics`] | encodes the current generation at scrape time |
//! | [`report`] | status and events JSON, the `check` table |
//! | [`status_page`] | the HTML status page at `/` |
//! | [`trace`] | step-by-step traces of one probe (`check --trace`, `/api/v1/trace`) |
//! | [`server`] | HTTP endpoints |
//! | [`web`] | the HTTP port itself: exporter-toolkit web config (TLS, client certificates, basic auth), connection limits |
//! | [`agent`] | the daemon: load, serve, schedule, reload, stop |
//! | [`lab`] | the built-in demo lab (DNS responder, SIP/TLS/HTTPS pool members on loopback, certificates made at start) |
//!
//! Adding a check kind: a module under `probe/`, a variant of [`probe::Kind`] and
//! [`probe::CheckSpec`], and the match arms the compiler then asks for.

#![warn(missing_docs)]

pub mod agent;
pub mod config;
pub mod lab;
pub mod logging;
pub mod metrics;
pub mod pool;
pub mod probe;
pub mod report;
pub mod resolve;
pub mod scheduler;
pub mod server;
pub mod state;
pub mod status_page;
pub mod tls;
pub mod trace;
pub mod web;
