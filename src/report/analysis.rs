//! From series on the report's grid to figures: states per step, availability with
//! unknown time apart, incidents, timelines of where something pointed, gaps. Pure
//! functions, no I/O.

use serde::Serialize;

/// The report's time grid: `n` steps of `step` seconds from `from`; step `i` is
/// `[from + i × step, from + (i+1) × step)` and holds what `last_over_time(x[step])`
/// saw in it (see [`super::prom::Prometheus::range`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    /// Start of the period (unix seconds).
    pub from: i64,
    /// Step (seconds).
    pub step: i64,
    /// Points.
    pub n: usize,
}

impl Grid {
    /// The start of step `i` (0-based index into a series).
    pub fn start_of(&self, i: usize) -> i64 {
        self.from + self.step * i as i64
    }

    /// The end of step `i`.
    pub fn end_of(&self, i: usize) -> i64 {
        self.from + self.step * (i as i64 + 1)
    }

    /// The step index holding the instant `t`, clamped to the grid.
    pub fn index_at(&self, t: i64) -> usize {
        (((t - self.from).max(0) / self.step) as usize).min(self.n.saturating_sub(1))
    }
}

/// What a step showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Passing (value 1).
    Up,
    /// Failing (value 0).
    Down,
    /// No data: the agent down, the scrape failing, the thing not yet configured.
    Unknown,
}

impl State {
    /// The state a value says: 1 (or more) up, below it down.
    pub fn of(x: f64) -> State {
        if x >= 1.0 {
            State::Up
        } else {
            State::Down
        }
    }
}

/// States from values: ≥ 1 up, below it down, none unknown.
pub fn states(values: &[Option<f64>]) -> Vec<State> {
    values.iter().map(|v| v.map_or(State::Unknown, State::of)).collect()
}

/// Time up, down and unknown, and the availability (up over up and down; `None`
/// without any known step).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Availability {
    /// Seconds up.
    pub up_seconds: i64,
    /// Seconds down.
    pub down_seconds: i64,
    /// Seconds without data: never counted as up or down.
    pub unknown_seconds: i64,
    /// `up / (up + down)`.
    pub availability: Option<f64>,
}

/// The availability of a series of states on `grid`.
pub fn availability(states: &[State], grid: &Grid) -> Availability {
    let count = |s: State| states.iter().filter(|x| **x == s).count() as i64 * grid.step;
    let (up, down) = (count(State::Up), count(State::Down));
    Availability {
        up_seconds: up,
        down_seconds: down,
        unknown_seconds: count(State::Unknown),
        availability: (up + down > 0).then(|| up as f64 / (up + down) as f64),
    }
}

/// A run of steps in one state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// First step (index).
    pub first: usize,
    /// Last step (index).
    pub last: usize,
}

/// The runs of steps in `state`, in order.
pub fn runs(states: &[State], state: State) -> Vec<Run> {
    let mut out = Vec::new();
    let mut open: Option<usize> = None;
    for (i, s) in states.iter().enumerate() {
        match (*s == state, open) {
            (true, None) => open = Some(i),
            (false, Some(f)) => {
                out.push(Run { first: f, last: i - 1 });
                open = None;
            }
            _ => {}
        }
    }
    if let Some(f) = open {
        out.push(Run { first: f, last: states.len() - 1 });
    }
    out
}

/// The longest run of steps in `state`.
pub fn longest(states: &[State], state: State) -> usize {
    runs(states, state).iter().map(|r| r.last - r.first + 1).max().unwrap_or(0)
}

/// A change of what a series pointed at (a record's pool, a user's home pool).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The step where the new value was first seen (index).
    pub at: usize,
    /// The value before (`None` for the first one seen).
    pub from: Option<String>,
    /// The value after.
    pub to: String,
}

/// The value each step pointed at, from one series per value (`values[j]` is the
/// value of `series[j]`, true where it was seen): at a step with several (a change
/// inside the step, or sources that disagree), the one held before while it is still
/// seen, so that disagreeing sources never flap; `None` without any.
pub fn pointing(values: &[String], series: &[Vec<bool>], n: usize) -> Vec<Option<String>> {
    let mut out: Vec<Option<String>> = Vec::with_capacity(n);
    let mut last: Option<String> = None;
    for i in 0..n {
        let present: Vec<&String> = values
            .iter()
            .zip(series)
            .filter(|(_, s)| s.get(i).copied().unwrap_or(false))
            .map(|(v, _)| v)
            .collect();
        let pick = match present.as_slice() {
            [] => None,
            [one] => Some((*one).clone()),
            many => Some(
                many.iter().find(|v| Some(v.as_str()) == last.as_deref()).copied().unwrap_or(many[0]).clone(),
            ),
        };
        if pick.is_some() {
            last.clone_from(&pick);
        }
        out.push(pick);
    }
    out
}

/// The changes of a pointing series (unknown steps do not break a value).
pub fn changes(points: &[Option<String>]) -> Vec<Change> {
    let mut out = Vec::new();
    let mut last: Option<&String> = None;
    for (i, p) in points.iter().enumerate() {
        if let Some(v) = p {
            if last != Some(v) {
                out.push(Change { at: i, from: last.cloned(), to: v.clone() });
                last = Some(v);
            }
        }
    }
    out
}

/// At most `width` columns summarising `states`, each the worst state of its steps
/// (down over unknown over up), for a strip chart.
pub fn columns(states: &[State], width: usize) -> Vec<State> {
    if states.is_empty() || width == 0 {
        return Vec::new();
    }
    let per = states.len().div_ceil(width);
    states
        .chunks(per)
        .map(|c| {
            if c.contains(&State::Down) {
                State::Down
            } else if c.contains(&State::Unknown) {
                State::Unknown
            } else {
                State::Up
            }
        })
        .collect()
}

/// The last second RFC 3339 can write (9999-12-31T23:59:59Z).
pub const MAX_TIME: i64 = 253_402_300_799;

/// RFC 3339 (UTC, seconds) of a unix time, clamped to years 1970-9999.
pub fn rfc3339(t: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.clamp(0, MAX_TIME) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A duration as a person reads it: `1h 5m`, `15m`, `2d 3h`, `40s`.
pub fn human(seconds: i64) -> String {
    let (d, h, m, s) = (seconds / 86_400, seconds % 86_400 / 3600, seconds % 3600 / 60, seconds % 60);
    let parts: Vec<String> = [(d, "d"), (h, "h"), (m, "m"), (s, "s")]
        .iter()
        .filter(|(v, _)| *v > 0)
        .map(|(v, u)| format!("{v}{u}"))
        .collect();
    if parts.is_empty() {
        "0s".into()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: Grid = Grid { from: 0, step: 60, n: 10 };

    #[test]
    fn unknown_time_is_apart_from_up_and_down() {
        let v = [
            Some(1.0),
            Some(1.0),
            Some(0.0),
            None,
            None,
            Some(1.0),
            Some(0.0),
            Some(0.0),
            Some(1.0),
            Some(1.0),
        ];
        let s = states(&v);
        let a = availability(&s, &G);
        assert_eq!((a.up_seconds, a.down_seconds, a.unknown_seconds), (300, 180, 120));
        assert_eq!(a.availability, Some(5.0 / 8.0));
        assert_eq!(runs(&s, State::Down), [Run { first: 2, last: 2 }, Run { first: 6, last: 7 }]);
        assert_eq!(runs(&s, State::Unknown), [Run { first: 3, last: 4 }]);
        assert_eq!(availability(&[State::Unknown; 3], &G).availability, None);
        assert_eq!(columns(&s, 5), [State::Up, State::Down, State::Unknown, State::Down, State::Up]);
        assert_eq!((G.start_of(2), G.end_of(2), G.index_at(150)), (120, 180, 2));
    }

    #[test]
    fn a_change_is_dated_at_the_step_the_new_value_appears() {
        let values = vec!["new".to_owned(), "old".to_owned()];
        let new = vec![true, true, true, false, false, true, true];
        let old = vec![false, false, true, true, false, true, false];
        let p = pointing(&values, &[new, old], 7);
        assert_eq!(p[2].as_deref(), Some("new"), "while the old value is still seen, it holds");
        assert_eq!(p[3].as_deref(), Some("old"));
        assert_eq!(p[4], None);
        assert_eq!(p[5].as_deref(), Some("old"), "two sources that disagree do not flap");
        let c = changes(&p);
        assert_eq!(c.len(), 3);
        assert_eq!((c[1].at, c[1].from.as_deref(), c[1].to.as_str()), (3, Some("new"), "old"));
        assert_eq!((c[2].at, c[2].to.as_str()), (6, "new"));
        assert_eq!(longest(&states(&[None, Some(1.0), None, None]), State::Unknown), 2);
        assert_eq!(human(3_900), "1h 5m");
        assert_eq!(rfc3339(86_400), "1970-01-02T00:00:00Z");
    }
}
