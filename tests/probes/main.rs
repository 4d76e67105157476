//! The probes against real peers started by the tests (Knot, Kamailio, `openssl
//! s_server`, an HTTPS server) and, for faults a real peer cannot produce, in-process
//! hostile ones: one test binary, one module per kind of peer.

#[path = "../common/mod.rs"]
mod common;

mod dns;
mod http;
mod rpc_epm;
mod sip;
mod sip_hostile;
mod sip_numbers;
mod smb;
mod sql_browser;
mod stun;
mod tcp;
mod tls;
mod trace;
