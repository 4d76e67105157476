//! The agent's HTTP port: the endpoints ([`routes`]) and the port itself ([`web`]: the
//! exporter-toolkit web configuration, TLS, client certificates, basic auth, and the
//! limits that keep scrapers from taking what the probes need).

pub mod routes;
pub mod web;
