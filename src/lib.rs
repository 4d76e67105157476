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
//! # Layers
//!
//! Results flow one way: configuration → instances → scheduler → check kinds →
//! results (with rollups) → outputs (metrics, status JSON and page, the `check` table).
//! A module uses only modules of its own layer or below; `scripts/check-layers.py`
//! checks every `crate::` path against this table (and refuses two modules of one layer that use each other)
//! in CI, and that no check kind uses another (what kinds share lives in
//! [`probe::net`] and [`probe::ua`]).
//!
//! | layer | modules |
//! |---|---|
//! | 0 basics | [`failure`], [`trace`], [`os`], [`logging`] |
//! | 1 wire | [`dns`], [`sip`], [`tls`] |
//! | 2 facts | [`outcome`], [`pool`], [`users`], [`resolve`] |
//! | 3 check kinds | [`probe`] |
//! | 4 configuration | [`config`] |
//! | 5 results | [`labels`], [`results`] |
//! | 6 running | [`scheduler`], [`trace_run`] |
//! | 7 outputs | [`rollup`], [`views`], [`status_page`], [`metrics`] |
//! | 8 serving | [`web`], [`server`] |
//! | 9 daemon | [`agent`], [`lab`] |
//!
//! # Modules
//!
//! | module | what it does | what it does not |
//! |---|---|---|
//! | [`failure`] | the fixed failure reasons (one list, the `reason` label), [`failure::Failure`], the connect-error mapping | know about protocols above TCP |
//! | [`trace`] | the step recorder of `check --trace`: a no-op outside a trace | run probes ([`trace_run`] does) |
//! | [`os`] | thread priority, giving memory back, fresh connected UDP sockets | keep state |
//! | [`logging`] | logfmt or JSON log lines on standard error, no colour codes | decide what is logged |
//! | [`dns`] | the DNS client: queries to the configured servers, RFC 5452 acceptance, TCP on truncation | cache, judge answers |
//! | [`sip`] | the SIP user agent without sockets: messages and the bounded parser ([`sip::message`]), client transaction timers, stream framing, challenge answers (Digest), the redirect and authentication policy, server transactions under one byte budget | I/O |
//! | [`tls`] | the two TLS engines (rustls; OpenSSL for TLS 1.0/1.1), one module each behind one handshake trait; certificate summaries | read the configuration file |
//! | [`users`] | test users: address of record, planned pool, credentials (never printed) | read secrets |
//! | [`outcome`] | what one probe run found: pass/fail, phases, TLS chain, SIP status, where a record points | keep history |
//! | [`pool`] | pools, roles, host-name rules | resolve names |
//! | [`resolve`] | target name resolution through the DNS client, uncached | cache |
//! | [`probe`] | the check kinds: one module each behind [`probe::CheckKind`], one list ([`probe::Kind`], [`probe::CheckSpec`]); below them and shared by them, the connections ([`probe::net`]) and the SIP user agent ([`probe::ua`]: client transactions, the OPTIONS exchange, the one registration routine, the test users' registered endpoints). Kinds never use each other (checked in CI) | schedule; enforce the instance's timeout (the scheduler does; a probe may end earlier with its own reason) |
//! | [`config`] | decode and validate TOML; expand checks into instances; hand each check's keys to its kind | probe |
//! | [`labels`] | an instance's series label block | write samples |
//! | [`results`] | per-instance results of the loaded configuration (with each instance's label block, rendered once by [`labels`]), staleness, the last 500 state changes | write any output |
//! | [`scheduler`] | one task per instance: spread start, interval, timeout, concurrency, reload, shutdown; `each_address` fan-out; a panic becomes `internal`; `check`'s one round | know any kind |
//! | [`trace_run`] | one round of an instance inside the trace recorder | record results |
//! | [`rollup`] | per-pool rollups (UP/DOWN and counts) | render |
//! | [`views`] | status and events JSON, the `check` table | HTML |
//! | [`status_page`] | the HTML status page | read the results store |
//! | [`metrics`] | encodes the current results at scrape time | probe |
//! | [`web`] | the HTTP port: exporter-toolkit web config (TLS, client certificates, basic auth), connection limits | routes |
//! | [`server`] | the HTTP endpoints | TLS, authentication, connection limits ([`web`] does) |
//! | [`agent`] | the daemon: load, serve, schedule, reload, stop; builds the probe context | probe |
//! | [`lab`] | the built-in demo lab (DNS responder, SIP/TLS/HTTPS pool members on loopback, certificates made at start), also the tests' in-process peers (feature `lab`) | fault injection outside tests (feature `lab-faults`) |
//!
//! Adding a check kind: a module under `probe/` with a type implementing
//! [`probe::CheckKind`] (its keys struct, `build`, `probe`), one line in the
//! `check_kinds!` list in `probe/mod.rs`, and its row in the README (tested). A kind
//! that speaks SIP as a test user uses [`probe::ua`] (registration, the endpoints and
//! their links, [`sip::policy`] through the registration's credentials), never another
//! kind. A kind that reports a new measurement also adds a family to [`metrics`]; a
//! kind that runs as test users implements [`probe::CheckKind::users`].

#![warn(missing_docs)]

pub mod agent;
pub mod config;
pub mod dns;
pub mod failure;
#[cfg(feature = "lab")]
pub mod lab;
pub mod labels;
pub mod logging;
pub mod metrics;
pub mod os;
pub mod outcome;
pub mod pool;
pub mod probe;
pub mod resolve;
pub mod results;
pub mod rollup;
pub mod scheduler;
pub mod server;
pub mod sip;
pub mod status_page;
pub mod tls;
pub mod trace;
pub mod trace_run;
pub mod users;
pub mod views;
pub mod web;
