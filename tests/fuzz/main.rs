//! Structure-aware fuzzing ([`fuzz`]: the SIP parser and matcher, DNS reply matching,
//! certificate summaries, the configuration loader) and the SIP parser's properties
//! ([`sip_fuzz`]).

mod fuzz;
mod sip_fuzz;
