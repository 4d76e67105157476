//! The facts everything above shares: what one probe found ([`outcome`]), the pools of
//! the migration ([`pool`]) and the test users ([`users`]). Plain data: no I/O, no
//! configuration reading.

pub mod outcome;
pub mod pool;
pub mod users;
