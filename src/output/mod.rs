//! What the results look like from outside: the Prometheus exposition ([`metrics`]),
//! the per-pool rollups every output reads ([`rollup`]), the status and events JSON and
//! the `check` table ([`views`]), and the HTML status page ([`status_page`]).
//!
//! What it does not do: serve HTTP ([`crate::http`]) or change results.

pub mod metrics;
pub mod rollup;
pub mod status_page;
pub mod views;
