//! The agent's HTTP port: the endpoints ([`routes`]), the port itself ([`port`]:
//! accepting, TLS handshakes, connection limits), what every request passes
//! ([`auth`]: basic auth, response headers, size caps) and the exporter-toolkit web
//! configuration that sets them up ([`web`]).

pub mod auth;
pub mod port;
pub mod routes;
pub mod web;
