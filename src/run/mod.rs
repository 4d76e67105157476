//! Running the loaded configuration: one task per instance ([`scheduler`]), the results
//! store read at scrape time ([`results`], one [`slot`] per instance), and one round inside the trace recorder
//! ([`trace_run`]; the recorder itself is [`crate::trace`], below the wire layers that
//! record into it).
//!
//! What it does not do: know any check kind by name, or render any output.

pub mod results;
pub mod scheduler;
pub mod slot;
pub mod trace_run;
