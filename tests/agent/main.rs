//! The agent as an operator meets it: configuration errors, the scheduler, the HTTP
//! port (web configuration, limits, authentication), the running binary end to end
//! with Prometheus, the status page in Chromium, and the README's tables against the
//! code.

#[path = "../common/mod.rs"]
mod common;

mod config;
mod demo_faults;
mod e2e;
mod readme;
mod report;
mod scheduler;
mod sites;
mod status_page;
mod web;
