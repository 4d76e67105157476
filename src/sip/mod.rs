//! The SIP user agent's socket-free parts, below every kind that speaks SIP:
//!
//! - [`message`]: messages on the wire (building requests and responses, the bounded
//!   parser, URIs and parameters);
//! - [`client_tx`]: the retransmission timers of a client transaction (RFC 3261 §17.1);
//! - [`dialog`]: dialogs a request of ours sets up (route set, tags, CSeq, target);
//! - [`framer`]: incremental stream framing (never rescans what it has seen, bounded);
//! - [`auth`]: answering a challenge (Digest, RFC 7616) behind one scheme interface;
//! - [`policy`]: which redirects and challenges a test user may follow or answer;
//! - [`server_tx`]: server transactions (RFC 3261 §17.2) under one byte budget shared
//!   by every endpoint;
//! - [`budget`]: that byte budget.
//!
//! What it does not do: open sockets or resolve names (the user agent above it,
//! [`crate::ua`], does, through its connections).

pub mod auth;
pub mod budget;
pub mod client_tx;
pub mod dialog;
pub mod framer;
pub mod message;
pub mod msrtc;
pub mod ntlm;
pub mod policy;
pub mod sdp;
pub mod server_tx;
pub mod sipae;
