//! The label block that names an instance's series (constant `agent.labels`, then pool,
//! role, check, kind, target), rendered once per instance when a configuration is
//! loaded and kept with the instance's results; metrics writes it as is.
//!
//! Its own module so that the results store (which keeps the rendered block) and the
//! metrics encoder (which writes it) both build on it without importing each other.

use crate::config::{CheckInstance, Config};

/// The label block of an instance's series, without braces: the constant
/// `agent.labels` first, then pool, role, check, kind, target; values escaped.
pub fn render_labels(config: &Config, instance: &CheckInstance) -> String {
    let mut s = String::with_capacity(128);
    let mut push = |k: &str, v: &str| {
        if !s.is_empty() {
            s.push(',');
        }
        s.push_str(k);
        s.push_str("=\"");
        escape_label_value(&mut s, v);
        s.push('"');
    };
    for (k, v) in &config.agent.labels {
        push(k, v);
    }
    push("pool", instance.pool_name());
    push("role", instance.role_name());
    push("check", &instance.check);
    push("kind", instance.kind().as_str());
    push("target", &instance.target);
    for (k, v) in instance.spec.extra_labels() {
        push(k, v);
    }
    if instance.purpose == crate::config::Purpose::Admin {
        push("purpose", "admin");
    }
    s
}

/// Escapes a label value as both text formats require: `\`, `"` and newline.
pub fn escape_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}
