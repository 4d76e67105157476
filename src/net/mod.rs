//! The network clients below everything that probes: the DNS client ([`dns`]), target
//! name resolution through it ([`resolve`]) and the two TLS engines ([`tls`]).
//!
//! What it does not do: judge what a peer answered (the check kinds do), or speak SIP
//! (the socket-free SIP layer is [`crate::sip`], its users are in [`crate::ua`]).

pub mod dcerpc;
pub mod dns;
pub mod resolve;
pub mod smb;
pub mod ssrp;
pub mod stun;
pub mod tls;
