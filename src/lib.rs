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
//! The folders of `src/` are the layers: a module uses only its own layer or those
//! below. `scripts/check-layers.py` checks every `crate::` path against this table in
//! CI (and refuses two folders of one layer that use each other), and that no check
//! kind uses another: what kinds share lives in [`ua`] below them.
//!
//! | layer | modules |
//! |---|---|
//! | 0 ground | [`failure`], [`trace`], [`os`], [`logging`] |
//! | 1 wire | [`net`], [`sip`] |
//! | 2 facts | [`model`] |
//! | 3 user agent | [`ua`] |
//! | 4 check kinds | [`kinds`] |
//! | 5 configuration | [`config`] |
//! | 6 running | [`run`] |
//! | 7 outputs | [`output`], [`report`] |
//! | 8 serving | [`http`] |
//! | 9 daemon | [`agent`], [`lab`] |
//!
//! # Modules
//!
//! | module | what it does | what it does not |
//! |---|---|---|
//! | [`failure`] | the fixed failure reasons (one list, the `reason` label), [`failure::Failure`] (the one failure type of a probe step; the wire layers' errors convert into it with `From`), what a TLS handshake showed ([`failure::tls`]), the connect-error mapping | know about protocols above TCP |
//! | [`trace`] | the step recorder of `check --trace`: a no-op outside a trace | run probes ([`run::trace_run`] does) |
//! | [`os`] | thread priority, giving memory back, fresh connected UDP sockets | keep state |
//! | [`logging`] | logfmt or JSON log lines on standard error, no colour codes | decide what is logged |
//! | [`net`] | the DNS client ([`net::dns`]: configured servers, RFC 5452 acceptance, TCP on truncation), target resolution through it ([`net::resolve`], uncached), the two TLS engines ([`net::tls`]: rustls; OpenSSL for TLS 1.0/1.1) behind one handshake trait, certificate summaries | cache, judge answers, read the configuration file |
//! | [`sip`] | the SIP user agent without sockets: messages and the bounded parser ([`sip::message`]), client transaction timers, stream framing, dialogs, challenge answers (Digest; NTLM of MS-NLMP in [`sip::ntlm`]), MS-SIPAE message signatures ([`sip::sipae`]), Microsoft's presence documents ([`sip::msrtc`]), session descriptions ([`sip::sdp`]), the redirect and authentication policy, server transactions under one byte budget | I/O |
//! | [`model`] | what one probe run found ([`model::outcome`]: pass/fail, phases, TLS chain, SIP status, where a record points), pools and roles ([`model::pool`]), test users ([`model::users`]: address of record, planned pool, credentials never printed) | keep history, read secrets, resolve names |
//! | [`ua`] | what the kinds stand on: the probe context, connections ([`ua::conn`]), a test user's credentials and NTLM security association ([`ua::credentials`]), one client transaction loop for every connection ([`ua::transaction`]), the OPTIONS exchange, the one registration routine, the test users' registered endpoints ([`ua::endpoint`]: what they answer; [`ua::life`]: registering, refreshing, keep-alives), their links and subscriptions ([`ua::subscription`]), a test user's requests ([`ua::client`]); an in-memory network of streams and datagrams for its tests ([`ua::memory`]) | judge a check, schedule |
//! | [`kinds`] | the check kinds: one module each behind [`kinds::CheckKind`], one list ([`kinds::Kind`], [`kinds::CheckSpec`]). Kinds never use each other (checked in CI) | schedule; enforce the instance's timeout (the scheduler does; a probe may end earlier with its own reason) |
//! | [`config`] | decode TOML (the `Raw*` structs) and validate it section by section ([`config`]'s `build`), test users and their secrets, expand checks into instances and hand each check's keys to its kind; an instance's series label block ([`config::labels`]) | probe |
//! | [`run`] | one task per instance ([`run::scheduler`]: spread start, interval, timeout, concurrency, reload, shutdown, `each_address` fan-out, a panic becomes `internal`), the results store with staleness and the last 500 state changes ([`run::results`]; one instance's results in [`run::slot`]), one round inside the trace recorder ([`run::trace_run`]) | know any kind, write any output |
//! | [`output`] | per-pool rollups ([`output::rollup`]), the metrics encoded at scrape time ([`output::metrics`]), status and events JSON and the `check` table ([`output::views`]), the HTML status page ([`output::status_page`]) | serve, change results |
//! | [`report`] | `coexistd report`: a period's go/no-go evidence read back from Prometheus' HTTP API ([`report::prom`]), figures with time without data kept apart ([`report::analysis`]), the verdict against `[report]`, HTML/Markdown ([`report::render`]) and JSON | read the agent's live state |
//! | [`http`] | the HTTP endpoints ([`http::routes`]); the port ([`http::port`]: accepting, TLS handshakes, connection limits); what every request passes ([`http::auth`]: basic auth, response headers, size caps); the exporter-toolkit web configuration ([`http::web`]) | probe |
//! | [`agent`] | the daemon: load, serve, schedule, reload, stop; builds the probe context | probe |
//! | [`lab`] | the built-in demo lab (DNS responder, SIP/TLS/HTTPS pool members on loopback, certificates made at start), its pools' NTLM sign-in and signing as OCS and Lync do ([`lab::ntlm`]), also the tests' and benchmarks' in-process peers (feature `lab`; [`lab::registrar`]: a fake registrar to attack the endpoints from) | fault injection outside tests (feature `lab-faults`) |
//!
//! Adding a check kind: a module under `kinds/` with a type implementing
//! [`kinds::CheckKind`] (its keys struct, `build`, `probe`), one line in the
//! `check_kinds!` list in `kinds/mod.rs`, and its row in the README (tested). A kind
//! that speaks SIP as a test user uses [`ua`] (registration, the endpoints and
//! their links, [`sip::policy`] through the registration's credentials), never another
//! kind. A kind that reports a new measurement declares it ([`kinds::CheckKind::MEASURES`],
//! a [`model::outcome::Measure`]): nothing else names a family. A kind that runs as
//! test users implements [`kinds::CheckKind::users`].

#![warn(missing_docs)]

pub mod agent;
pub mod config;
pub mod failure;
pub mod http;
pub mod kinds;
#[cfg(feature = "lab")]
pub mod lab;
pub mod logging;
pub mod model;
pub mod net;
pub mod os;
pub mod output;
pub mod report;
pub mod run;
pub mod sip;
pub mod trace;
pub mod ua;
