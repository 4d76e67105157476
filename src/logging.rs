//! Log output: logfmt (the default, as Prometheus and its exporters write) or JSON, on
//! standard error, never with terminal colour codes (journald and files get plain text).
//! `RUST_LOG` sets the level (default `info`).

use std::fmt;
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// `--log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `ts=… level=info msg="…" key=value`.
    Logfmt,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber.
pub fn init(format: LogFormat, level: LogLevel) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.as_str().into());
    let builder =
        tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter).with_ansi(false);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Logfmt => builder.event_format(Logfmt).init(),
    }
}

/// `--log.level`: the least severe level logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    /// Every failed probe with its detail, every Prometheus query of `report`.
    Debug,
    /// Starts, reloads, state changes (the default).
    Info,
    /// Only what needs attention.
    Warn,
    /// Only errors.
    Error,
}

impl LogLevel {
    /// The level's name as `RUST_LOG` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// The logfmt event format.
pub struct Logfmt;

impl<S, N> FormatEvent<S, N> for Logfmt
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        write!(
            w,
            "ts={} level={} target={}",
            humantime::format_rfc3339_millis(SystemTime::now()),
            meta.level().as_str().to_ascii_lowercase(),
            meta.target()
        )?;
        let mut v = Fields { out: String::new() };
        event.record(&mut v);
        w.write_str(&v.out)?;
        writeln!(w)
    }
}

struct Fields {
    out: String,
}

impl Fields {
    fn push(&mut self, key: &str, value: &str) {
        let key = if key == "message" { "msg" } else { key };
        self.out.push(' ');
        self.out.push_str(key);
        self.out.push('=');
        push_value(&mut self.out, value);
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field.name(), value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.push(field.name(), &format!("{value:?}"));
    }
}

/// A logfmt value: bare when it is a plain word, else quoted with `"`, `\` and control
/// characters escaped (a peer's text can reach a log line).
pub fn push_value(out: &mut String, v: &str) {
    let bare = !v.is_empty() && v.chars().all(|c| c.is_ascii_graphic() && c != '"' && c != '=' && c != '\\');
    if bare {
        out.push_str(v);
        return;
    }
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::push_value;

    #[test]
    fn values_are_quoted_and_escaped_when_needed() {
        let cases = [
            ("refused", "refused"),
            ("", "\"\""),
            ("connection refused", "\"connection refused\""),
            ("a=b", "\"a=b\""),
            ("say \"hi\"\n\x1b[31m", "\"say \\\"hi\\\"\\n\\u{1b}[31m\""),
        ];
        for (v, want) in cases {
            let mut s = String::new();
            push_value(&mut s, v);
            assert_eq!(s, want);
        }
    }
}
